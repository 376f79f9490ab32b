"""Typed records passed between stages (see DESIGN.md).

Voxel order is canonical RAS+: array index 0, 1, 2 grow toward the
patient's right, anterior and superior. Affines map voxel indices to world
millimetres in RAS (nibabel convention, not DICOM's LPS).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from volvqa.errors import VolvqaInputError

#: A case id names files and folders (``cases/<id>/``, ``<id>_seg.nii.gz``), so it
#: may hold only what is safe in a file name on every system: no separator, no
#: ``..``, no leading dot or dash, at most 128 characters.
CASE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_case_id(case_id: object, where=None) -> str:
    """Return ``case_id`` if it is a safe file name (:data:`CASE_ID_PATTERN`), else raise
    ``VolvqaInputError`` naming ``where``."""
    s = case_id if isinstance(case_id, str) else ""
    if not CASE_ID_PATTERN.match(s) or ".." in s:
        shown = repr(case_id) if len(repr(case_id)) <= 60 else repr(case_id)[:57] + "..."
        raise VolvqaInputError(where, f"invalid case id {shown}: use letters, digits, '.', '_' and '-' "
                               "(at most 128, starting with a letter or digit, no '..')")
    return s


@dataclass(frozen=True)
class Source:
    """Where a volume came from."""

    path: str
    series_uid: str | None = None


@dataclass
class Volume:
    """A CT volume in HU.

    array: int16 HU, canonical RAS+ voxel order, shape (x, y, z).
    affine: 4x4 voxel -> world (mm, RAS).
    spacing_mm: voxel size along the array axes (mm), from the affine.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]
    source: Source
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        sx, sy, sz = self.spacing_mm
        return sx * sy * sz / 1000.0


@dataclass
class LabelMap:
    """Integer labels on the grid of a Volume.

    array: uint8/uint16, same shape and voxel order as the Volume; 0 is
        background. Organs and lesions are mutually exclusive here: a lesion
        voxel carries the lesion's label, not its organ's.
    labels: id -> canonical name (see ``volvqa.labels``).
    parts: optional second layer with sub-segments (``liver_segment_1..8``,
        ``pancreas_head|body|tail``) that overlap organs and lesions; same
        grid, its own ids in ``part_labels``.
    annotates: the canonical structures the source annotates (organs,
        lesion classes, sub-segments). A structure is *present* (voxels),
        *absent* (annotated, no voxel: a splenectomy, a segmenter that finds
        no gallbladder) or *unknown* (not annotated: nothing may be said
        about it). None means "what the map holds", so nothing is absent.
    """

    array: np.ndarray
    labels: dict[int, str]
    affine: np.ndarray
    parts: np.ndarray | None = None
    part_labels: dict[int, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    annotates: frozenset[str] | None = None
    #: (the array they were computed on, label id -> box): set by mask quality control, which
    #: computes every label's box, so that the findings do not compute them again
    #: (``known_boxes``). Only used while ``array`` is that same object.
    box_cache: tuple[Any, dict] | None = field(default=None, repr=False, compare=False)

    def known_boxes(self) -> dict | None:
        """Every label's box if already computed on this ``array``, else None."""
        if self.box_cache is not None and self.box_cache[0]() is self.array:
            return self.box_cache[1]
        return None

    def with_boxes(self, boxes: dict) -> LabelMap:
        """A copy (sharing the arrays) that carries the boxes of its labels."""
        import dataclasses
        import weakref
        return dataclasses.replace(self, box_cache=(weakref.ref(self.array), boxes))

    def id_of(self, name: str) -> int | None:
        for i, n in self.labels.items():
            if n == name:
                return i
        return None

    @property
    def names(self) -> list[str]:
        return [self.labels[i] for i in sorted(self.labels)]

    @property
    def present(self) -> frozenset[str]:
        """Structures with voxels, in either layer."""
        return frozenset(self.labels.values()) | frozenset(self.part_labels.values())

    @property
    def scope(self) -> frozenset[str]:
        """What the source annotates: ``annotates`` plus whatever is present."""
        return self.present | (self.annotates or frozenset())
