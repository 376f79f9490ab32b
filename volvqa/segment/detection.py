"""Lesion detection of a segmenter against reference masks.

A reference lesion is a 26-connected component of its organ family's lesion
labels (every kind: tumor, cyst, PDAC, ...), as ``volvqa.findings`` counts
them; it is detected when a predicted lesion component of the same family
overlaps it by at least one voxel. A predicted component that overlaps no
reference lesion is a false positive. Components below the findings'
minimum lesion volume are ignored on both sides (findings never report
them). Sizes are the reference lesion's equivalent-sphere diameter (mm).
"""
from __future__ import annotations

import numpy as np

from volvqa import labels as L
from volvqa.records import LabelMap

#: Size bins (mm, equivalent-sphere diameter) of the detection table.
SIZE_BINS_MM = ((0.0, 10.0), (10.0, 20.0), (20.0, 40.0), (40.0, float("inf")))
FAMILIES = ("liver", "kidney", "pancreas")


def bin_name(lo: float, hi: float) -> str:
    return f"< {hi:g} mm" if lo == 0 else f">= {lo:g} mm" if not np.isfinite(hi) else f"{lo:g}-{hi:g} mm"


def _family_mask(lm: LabelMap, family: str) -> np.ndarray:
    ids = [L.CANONICAL_IDS[n] for n, organ in L.LESION_ORGAN.items()
           if organ == family and n in L.CANONICAL_IDS]
    return np.isin(lm.array, ids)


def case_detection(pred: LabelMap, ref: LabelMap, voxel_mm3: float, min_lesion_mm3: float | None = None,
                   families: tuple[str, ...] = FAMILIES) -> dict:
    """Per family: reference lesions with (diameter_mm, detected) and the false-positive count."""
    import cc3d

    from volvqa.findings import DEFAULT_MIN_LESION_MM3
    min_vox = (DEFAULT_MIN_LESION_MM3 if min_lesion_mm3 is None else min_lesion_mm3) / voxel_mm3
    out = {}
    for fam in families:
        r_cc, nr = cc3d.connected_components(_family_mask(ref, fam), connectivity=26, return_N=True)
        p_cc, np_ = cc3d.connected_components(_family_mask(pred, fam), connectivity=26, return_N=True)
        r_size = np.bincount(r_cc.ravel(), minlength=nr + 1)
        p_size = np.bincount(p_cc.ravel(), minlength=np_ + 1)
        both = (r_cc > 0) & (p_cc > 0)
        pairs = np.unique(np.stack([r_cc[both], p_cc[both]]), axis=1) if both.any() else np.zeros((2, 0), int)
        hit_ref = set(pairs[0].tolist())
        hit_pred = set(pairs[1].tolist())
        lesions = []
        for k in range(1, nr + 1):
            if r_size[k] < min_vox:
                continue
            d = float((6.0 * r_size[k] * voxel_mm3 / np.pi) ** (1 / 3))
            lesions.append({"diameter_mm": round(d, 1), "detected": k in hit_ref})
        fp = sum(1 for k in range(1, np_ + 1) if p_size[k] >= min_vox and k not in hit_pred)
        out[fam] = {"lesions": lesions, "false_positives": fp}
    return out


def detection_table(per_case: dict[str, dict]) -> dict:
    """Sensitivity and false positives per case by family and size bin over cases."""
    n_cases = len(per_case)
    table = {}
    for fam in FAMILIES:
        rows = {}
        all_les = [les for c in per_case.values() for les in c.get(fam, {}).get("lesions", [])]
        for lo, hi in SIZE_BINS_MM:
            les = [x for x in all_les if lo <= x["diameter_mm"] < hi]
            rows[bin_name(lo, hi)] = {"lesions": len(les), "detected": sum(x["detected"] for x in les),
                                      "sensitivity": round(sum(x["detected"] for x in les) / len(les), 3)
                                      if les else None}
        fp = sum(c.get(fam, {}).get("false_positives", 0) for c in per_case.values())
        table[fam] = {"by_size": rows, "lesions": len(all_les), "detected": sum(x["detected"] for x in all_les),
                      "sensitivity": round(sum(x["detected"] for x in all_les) / len(all_les), 3) if all_les else None,
                      "false_positives_per_case": round(fp / n_cases, 2) if n_cases else None}
    return {"cases": n_cases, "families": table}


def render_detection(table: dict) -> str:
    bins = [bin_name(lo, hi) for lo, hi in SIZE_BINS_MM]
    lines = [f"Lesion detection over {table['cases']} cases (sensitivity, detected/reference):",
             "| family | " + " | ".join(bins) + " | all | FP per case |",
             "|---|" + "---|" * (len(bins) + 2)]
    for fam, t in table["families"].items():
        cells = []
        for b in bins:
            r = t["by_size"][b]
            cells.append("–" if not r["lesions"] else f"{r['sensitivity']:.2f} ({r['detected']}/{r['lesions']})")
        allc = "–" if not t["lesions"] else f"{t['sensitivity']:.2f} ({t['detected']}/{t['lesions']})"
        lines.append(f"| {fam} | " + " | ".join(cells) + f" | {allc} | {t['false_positives_per_case']} |")
    return "\n".join(lines)
