"""Findings records: JSON-serialisable, one per case.

Voxel boxes are inclusive index ranges ``[x0, y0, z0, x1, y1, z1]`` on the
canonical RAS+ grid; mm boxes are ``[xmin, ymin, zmin, xmax, ymax, zmax]``
in world RAS mm and span the voxels' outer faces. Centroids are world RAS mm.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class OrganFindings:
    name: str
    voxels: int                      # whole organ: its own label plus its lesions
    volume_ml: float
    parenchyma_voxels: int           # the organ's label alone (lesions excluded)
    hu_mean: float                   # parenchyma, no erosion (see findings/extract.py)
    hu_std: float
    hu_median: float
    bbox_voxel: list[int]
    bbox_mm: list[float]
    extent_mm: list[float]
    centroid_mm: list[float]
    touches_border: bool
    length_mm: float | None = None   # longest 3D diameter, for paired organs (kidneys)
    lesion_ids: list[int] = field(default_factory=list)


@dataclass
class LesionFindings:
    lesion_id: int                   # 1-based, in the order of extraction
    label: str                       # canonical lesion class, e.g. liver_lesion, kidney_cyst
    kind: str                        # tumor | cyst | lesion
    organ: str                       # owning organ (kidney side resolved), e.g. kidney_left
    voxels: int
    volume_ml: float
    hu_mean: float
    hu_std: float
    long_axis_mm: float              # longest axial (in-plane) diameter
    short_axis_mm: float             # longest diameter perpendicular to it, same slice
    axial_slice: int                 # z index of that slice
    max_diameter_3d_mm: float
    bbox_voxel: list[int]
    bbox_mm: list[float]
    centroid_mm: list[float]
    centroid_voxel: list[float]
    location: dict[str, Any]         # segments / part / side / pole
    attenuation: str                 # hypo | iso | hyper (vs the organ's parenchyma)
    hu_difference: float             # lesion mean - parenchyma mean (HU)
    touches: list[str]               # organs in contact after a 1-voxel (26-neighbour) dilation
    density: str | None = None       # lung lesions: solid | part-solid | ground-glass (knowledge.lung_density)
    vessel_contact: dict[str, float] = field(default_factory=dict)  # pancreatic lesions: vessel -> contact angle (deg)


@dataclass
class Findings:
    case_id: str
    shape: list[int]
    spacing_mm: list[float]
    affine_ras_mm: list[list[float]]
    organs: dict[str, OrganFindings]
    lesions: list[LesionFindings]
    contacts: list[list[str]]                 # organ pairs sharing a face
    dropped_lesion_components: dict[str, int]
    params: dict[str, Any]
    source: str = ""
    #: Structures the masks annotate (organs, lesion classes, sub-segments);
    #: None in findings written before annotation scopes existed.
    annotated: list[str] | None = None
    #: Sub-segments with voxels (liver_segment_N, pancreas_head ...).
    parts: list[str] = field(default_factory=list)
    #: Structures taken out by mask quality control: name -> reason.
    excluded: dict[str, str] = field(default_factory=dict)
    #: Derived measurements that span structures: ``caudate`` (Couinaud segment
    #: widths and volumes for the caudate-to-right-lobe ratio).
    measures: dict[str, Any] = field(default_factory=dict)
    #: Contrast phase (``volvqa.phase``): rules on unenhanced attenuation need non-contrast or unknown.
    phase: str = "unknown"

    def status(self, name: str) -> str:
        """``present`` | ``absent`` (annotated, no voxel) | ``unknown`` (not
        annotated, or excluded by quality control) for a canonical name."""
        if name in self.excluded:
            return "unknown"
        if name in self.organs or name in self.parts or any(x.label == name for x in self.lesions) \
                or self.dropped_lesion_components.get(name):
            return "present"
        if self.annotated is not None and name in self.annotated:
            return "absent"
        return "unknown"

    def lesions_of(self, organ_prefix: str) -> list[LesionFindings]:
        return [les for les in self.lesions if les.organ.startswith(organ_prefix)]

    def to_dict(self) -> dict:
        return _rounded(asdict(self), 6)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    def canonical(self) -> Findings:
        """The findings as ``findings.json`` holds them (floats to 6 decimals), so that answers
        computed in memory, from the file and through the agent tools are the same."""
        return Findings.from_dict(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> Findings:
        d = dict(d)
        d["organs"] = {k: OrganFindings(**_nan_back(OrganFindings, v)) for k, v in d["organs"].items()}
        d["lesions"] = [LesionFindings(**_nan_back(LesionFindings, v)) for v in d["lesions"]]
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _nan_back(record_type, d: dict) -> dict:
    """JSON's null back to NaN in the record's plain float fields (``to_dict`` writes NaN as null)."""
    floats = {f.name for f in fields(record_type) if f.type == "float"}
    return {k: (math.nan if v is None and k in floats else v) for k, v in d.items()}


def _rounded(x, nd: int = 4):
    """Round floats so JSON is short and stable; NaN becomes None."""
    if isinstance(x, float):
        return None if math.isnan(x) else round(x, nd)
    if isinstance(x, dict):
        return {k: _rounded(v, nd) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v, nd) for v in x]
    return x
