"""Segmenters: ``segment(volume) -> LabelMap`` in canonical names.

Backends: ``reference`` (a dataset's own masks) and ``monai`` (a trained
MONAI network, ``volvqa.segment.monai_seg``). The TotalSegmentator backend
is not built yet (see the issue note).
"""
from __future__ import annotations

from pathlib import Path

from volvqa.errors import VolvqaInputError
from volvqa.records import LabelMap, Volume


class ReferenceSegmenter:
    """The dataset's masks, loaded onto the volume's grid."""

    name = "reference"

    def __init__(self, masks, label_spec="auto"):
        self.masks, self.label_spec = masks, label_spec

    def segment(self, volume: Volume) -> LabelMap:
        from volvqa.io import load_labelmap
        return load_labelmap(self.masks, self.label_spec, reference=volume)


def make_segmenter(backend: str, device: str = "auto"):
    """``monai:runs/NAME`` -> a segmenter."""
    if backend.startswith("monai:"):
        from volvqa.segment.monai_seg import MonaiSegmenter
        return MonaiSegmenter.load(Path(backend.split(":", 1)[1]), device=device)
    if backend.startswith("totalsegmentator"):
        raise VolvqaInputError(None, "the TotalSegmentator backend is not available in this version")
    raise VolvqaInputError(None, f"unknown segmenter backend {backend!r}: use monai:runs/NAME")
