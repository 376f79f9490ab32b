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


#: Canonical structures each extra TotalSegmentator task outputs (merged by ``volvqa.segment.totalseg``).
TOTALSEG_TASK_OUTPUTS: dict[str, tuple[str, ...]] = {
    "liver_segments": tuple(f"liver_segment_{i}" for i in range(1, 9)),
    "kidney_cysts": ("kidney_cyst",),
    "liver_vessels": ("liver_vessels", "liver_tumor"),
    "liver_lesions": ("liver_lesion",),
    "lung_nodules": ("lung_nodule", "lung"),
}


def segmenter_annotates(backend: str) -> frozenset[str]:
    """The structures a segmenter outputs: its annotation scope. A structure
    it outputs and does not find is absent; one it never outputs is unknown
    (an organ-only network cannot say "no lesion")."""
    from volvqa import labels as L
    if backend.startswith("totalsegmentator"):
        from volvqa.segment.totalseg import parse_backend
        _fast, tasks = parse_backend(backend)
        names = {L.canonical_name(n) for n in L.TOTALSEG_TOTAL.values()}
        for t in tasks:
            names.update(TOTALSEG_TASK_OUTPUTS[t])
        return frozenset(n for n in names if n)
    if backend.startswith("monai:"):
        import json
        cfg = Path(backend.split(":", 1)[1]) / "config.json"
        if not cfg.is_file():
            raise VolvqaInputError(cfg.parent, "not a MONAI segmentation run (needs config.json and model.safetensors)")
        return frozenset(x for n in json.loads(cfg.read_text())["model"]["labels"] for x in L.expand_names(n))
    raise VolvqaInputError(None, f"unknown segmenter backend {backend!r}: use monai:runs/NAME "
                           "or totalsegmentator[:fast][+liver_lesions+kidney_cysts+...]")


_LOADED: dict[tuple[str, str], object] = {}


def cached_segmenter(backend: str, device: str = "auto"):
    """One segmenter per (backend, device) per process: a worker loads its network once."""
    key = (backend, device)
    if key not in _LOADED:
        seg = make_segmenter(backend, device=device)
        if hasattr(seg, "prepare"):
            seg.prepare()
        _LOADED[key] = seg
    return _LOADED[key]


def segmenter_masks(backend: str, device: str = "auto"):
    """``labelmap_for`` for the grounded answerer's predicted mode."""
    seg = cached_segmenter(backend, device)

    def labelmap_for(volume: Volume, item: dict) -> LabelMap:
        return seg.segment(volume)
    return labelmap_for
