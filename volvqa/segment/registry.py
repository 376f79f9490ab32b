"""The one registry of segmenters, shared by build-qa, qc, segment, answer and predict.

A segmenter spec is ``NAME`` followed by its own arguments after ``:`` or
``+`` (``monai:runs/NAME``, ``totalsegmentator:fast+liver_lesions``). A
registered kind is an object (a module will do) with

- ``make(spec, device) -> segmenter`` whose ``segment(volume) -> LabelMap``
  gives canonical names (and optionally ``prepare()``, called once per process);
- ``annotates(spec) -> iterable of canonical names``: the structures it
  outputs, its annotation scope (one it outputs and does not find is absent;
  one it never outputs is unknown).

Installed packages add kinds through the ``volvqa.segmenters`` entry point group.
"""
from __future__ import annotations

import re

from volvqa.errors import VolvqaInputError
from volvqa.plugins import entry_points, load_object

GROUP = "volvqa.segmenters"

BUILTIN_SEGMENTERS: dict[str, str] = {
    "monai": "volvqa.segment.monai_seg",
    "totalsegmentator": "volvqa.segment.totalseg",
}


def registered_segmenters() -> dict[str, str]:
    """name -> kind reference: installed packages' entry points, then the built-ins (which win)."""
    return {**entry_points(GROUP), **BUILTIN_SEGMENTERS}


def kind_of(spec: str):
    """The registered kind a spec names."""
    name = re.split(r"[:+]", str(spec), maxsplit=1)[0]
    table = registered_segmenters()
    if name not in table:
        raise VolvqaInputError(None, "unknown segmenter: use monai:runs/NAME, "
                               "totalsegmentator[:fast][+liver_lesions+kidney_cysts+...]"
                               + "".join(f", {n}" for n in sorted(set(table) - set(BUILTIN_SEGMENTERS))),
                               param="segmenter", value=spec)
    kind = load_object(table[name], what=f"segmenter {name}")
    if not callable(getattr(kind, "make", None)) or not callable(getattr(kind, "annotates", None)):
        raise VolvqaInputError(None, f"{table[name]} is not a segmenter kind (needs make(spec, device) and "
                               "annotates(spec))", param="segmenter", value=spec)
    return kind
