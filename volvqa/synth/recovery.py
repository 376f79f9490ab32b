"""Does ``findings.extract`` recover the truth of inserted lesions?

Matches each inserted lesion to the extracted lesion nearest its centroid
and scores: count per organ, volume (relative error vs the requested
volume), centroid distance to the requested centre (voxels), attenuation
class and location (the requested Couinaud segment among those named, the
requested pancreas part, the requested kidney pole).
"""
from __future__ import annotations

import numpy as np

from volvqa.findings.records import Findings


def score_case(findings: Findings, truths: list[dict]) -> list[dict]:
    rows = []
    used: set[int] = set()
    for t in truths:
        best, dist = None, np.inf
        for les in findings.lesions:
            if les.lesion_id in used:
                continue
            d = float(np.linalg.norm(np.asarray(les.centroid_voxel) - np.asarray(t["centroid_voxel"])))
            if d < dist:
                best, dist = les, d
        row = {"organ": t["organ"], "kind": t["kind"], "found": best is not None and dist <= 2.0}
        if row["found"]:
            used.add(best.lesion_id)
            # A lesion the drawn vessels cut (or wrapped round one) is no longer the requested ellipsoid:
            # its re-measured truth is the reference.
            reshaped = bool(t.get("cut_by_vessels"))
            ref_ml = t["volume_ml"] if reshaped else t["target_volume_ml"]
            row["volume_rel_error"] = abs(best.volume_ml - ref_ml) / ref_ml
            row["centroid_vs_centre_voxels"] = float(np.linalg.norm(
                np.asarray(best.centroid_voxel) - np.asarray(t["centroid_voxel" if reshaped else "center_voxel"])))
            row["attenuation_ok"] = best.attenuation == t["attenuation"]
            row["location_ok"] = _location_ok(best.location, t.get("location") or {}, best.organ, t["organ"])
        rows.append(row)
    organs = sorted({t["organ"] for t in truths} | {les.organ for les in findings.lesions})
    count_ok = all(sum(t["organ"] == o for t in truths) == sum(les.organ == o for les in findings.lesions)
                   for o in organs)
    for r in rows:
        r["case_count_ok"] = count_ok
    return rows


def _location_ok(found: dict, requested: dict, found_organ: str, organ: str) -> bool:
    if found_organ != organ:
        return False
    if "segment" in requested:
        return int(requested["segment"]) in (found.get("segments") or [])
    if "part" in requested:
        return found.get("part") == requested["part"]
    if "pole" in requested:
        return found.get("pole") == requested["pole"]
    return True


def summarise(rows: list[dict]) -> dict:
    found = [r for r in rows if r["found"]]
    vol = np.array([r["volume_rel_error"] for r in found]) if found else np.zeros(0)
    cen = np.array([r["centroid_vs_centre_voxels"] for r in found]) if found else np.zeros(0)
    return {
        "lesions": len(rows),
        "found": len(found),
        "count_exact_cases": None,
        "volume_within_10pct": float((vol <= 0.10).mean()) if len(vol) else 0.0,
        "volume_rel_error_max": float(vol.max()) if len(vol) else 0.0,
        "centroid_within_2_voxels": float((cen <= 2.0).mean()) if len(cen) else 0.0,
        "centroid_max_voxels": float(cen.max()) if len(cen) else 0.0,
        "attenuation_right": float(np.mean([r["attenuation_ok"] for r in found])) if found else 0.0,
        "location_right": float(np.mean([r["location_ok"] for r in found])) if found else 0.0,
    }


def table(rows_by_source: dict[str, list[dict]]) -> str:
    head = ("| source | lesions | found | count exact (cases) | volume within 10% | max vol. error | "
            "centroid within 2 vox | max centroid (vox) | attenuation right | location right |")
    lines = [head, "|" + "---|" * 10]
    for src, rows in rows_by_source.items():
        s = summarise(rows)
        lines.append(f"| {src} | {s['lesions']} | {s['found']} | "
                     f"{np.mean([r['case_count_ok'] for r in rows]) * 100:.0f}% | {s['volume_within_10pct'] * 100:.0f}% | "
                     f"{s['volume_rel_error_max'] * 100:.1f}% | {s['centroid_within_2_voxels'] * 100:.0f}% | "
                     f"{s['centroid_max_voxels']:.2f} | {s['attenuation_right'] * 100:.0f}% | "
                     f"{s['location_right'] * 100:.0f}% |")
    return "\n".join(lines)
