"""Segmenters: ``segment(volume) -> LabelMap`` in canonical names.

Backends: ``reference`` (a dataset's own masks), ``monai`` (a trained
MONAI network, ``volvqa.segment.monai_seg``) and ``totalsegmentator``
(``volvqa.segment.totalseg``: the ``total`` task plus lesion tasks, merged).
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
    """``monai:runs/NAME`` or ``totalsegmentator[:fast][+task...]`` -> a segmenter."""
    if backend.startswith("monai:"):
        from volvqa.segment.monai_seg import MonaiSegmenter
        return MonaiSegmenter.load(Path(backend.split(":", 1)[1]), device=device)
    if backend.startswith("totalsegmentator"):
        from volvqa.segment.totalseg import TotalSegmentatorSegmenter
        return TotalSegmentatorSegmenter.from_spec(backend, device=device)
    raise VolvqaInputError(None, f"unknown segmenter backend {backend!r}: use monai:runs/NAME "
                           "or totalsegmentator[:fast][+liver_lesions+kidney_cysts+...]")
