"""Mask quality control: which structures' masks can be trusted.

``qc_labelmap(volume, labelmap, mode)`` runs the plausibility checks of
``volvqa.qc.checks`` (and, given a second label source, the pairwise
comparison of ``volvqa.qc.compare``) and, in ``exclude`` mode, returns the
label map with the failing structures turned unknown, so that no question
rests on them. Modes: ``exclude`` (default), ``warn`` (report only),
``off``.
"""
from __future__ import annotations

from volvqa.errors import VolvqaInputError
from volvqa.qc.checks import QCFinding, check_case, exclude, excluded_structures
from volvqa.qc.compare import Agreement, compare, disagreements
from volvqa.records import LabelMap, Volume

QC_MODES = ("exclude", "warn", "off")


def check_mode(mode: str, where=None) -> str:
    if mode not in QC_MODES:
        raise VolvqaInputError(where, f"qc mode must be one of {', '.join(QC_MODES)}, got {mode!r}")
    return mode


def qc_labelmap(volume: Volume, labelmap: LabelMap, mode: str = "exclude", *, case_id: str = "",
                other: LabelMap | None = None, require_agreement: bool = False) -> tuple[LabelMap, dict]:
    """(label map to use, report). The report is JSON-ready: ``findings``
    (one per failed check), ``excluded`` (name -> reason; in ``warn`` mode
    what would be excluded) and, with ``other``, ``agreement`` per structure."""
    check_mode(mode)
    report: dict = {"case_id": case_id, "mode": mode, "findings": [], "excluded": {}}
    if mode == "off" and not require_agreement:
        return labelmap, report
    from volvqa.arrays import label_boxes
    boxes = labelmap.known_boxes() or label_boxes(labelmap.array)
    found = check_case(volume, labelmap, case_id, boxes=boxes) if mode != "off" else []
    report["findings"] = [f.to_dict() for f in found]
    excluded = excluded_structures(found, labelmap) if mode != "off" else {}
    if other is not None:
        rows = compare(volume, labelmap, other)
        report["agreement"] = [r.to_dict() for r in rows]
        if require_agreement:
            for name, why in disagreements(rows).items():
                if name in labelmap.scope:
                    excluded.setdefault(name, why)
    report["excluded"] = dict(sorted(excluded.items()))
    if mode == "warn" and not require_agreement:
        return labelmap, report
    if mode == "warn":  # only the agreement requirement excludes
        excluded = {k: v for k, v in excluded.items() if v.startswith(("sources disagree", "agreement not"))}
        report["excluded"] = dict(sorted(excluded.items()))
    # The label map to use carries every label's box, for the findings.
    return exclude(labelmap, excluded, boxes), report


__all__ = ["QC_MODES", "Agreement", "QCFinding", "check_case", "check_mode", "compare", "disagreements",
           "exclude", "excluded_structures", "qc_labelmap"]
