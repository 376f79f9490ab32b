"""Segmenters: ``segment(volume) -> LabelMap`` in canonical names.

Kinds (``volvqa.segment.registry``): ``monai`` (a trained MONAI network,
``volvqa.segment.monai_seg``), ``totalsegmentator`` (``volvqa.segment.totalseg``:
the ``total`` task plus lesion tasks, merged), and those installed packages
register in the ``volvqa.segmenters`` entry point group.
"""
from __future__ import annotations

from volvqa.records import LabelMap, Volume
from volvqa.segment.registry import kind_of


def make_segmenter(backend: str, device: str = "auto"):
    """A segmenter spec (``monai:runs/NAME``, ``totalsegmentator[:fast][+task...]``, or a kind an
    installed package registers) -> a segmenter (``volvqa.segment.registry``)."""
    return kind_of(backend).make(backend, device)


def segmenter_annotates(backend: str) -> frozenset[str]:
    """The structures a segmenter outputs: its annotation scope. A structure
    it outputs and does not find is absent; one it never outputs is unknown
    (an organ-only network cannot say "no lesion")."""
    return frozenset(kind_of(backend).annotates(backend))


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
