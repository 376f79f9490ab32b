"""The mesenteric vessels a phantom draws behind the pancreas (celiac trunk,
common hepatic artery, SMA, SMV, portal vein): their paths (world mm) and
their painting into a CT and label map, for the vessel-contact questions."""
from __future__ import annotations

import numpy as np

from volvqa import labels as L
from volvqa.synth.phantom import HU
from volvqa.synth.shapes import Grid, tube

#: Radii (mm) of the mesenteric vessels the phantoms draw.
VESSEL_RADII = {"celiac_trunk": 3.5, "common_hepatic_artery": 2.5, "superior_mesenteric_artery": 3.5,
                "superior_mesenteric_vein": 5.0, "portal_vein": 6.0}


def vessel_paths(anchors: dict, shift: dict | None = None) -> dict[str, list]:
    """World-mm polylines of the celiac trunk, common hepatic artery, SMA, SMV and portal vein behind the
    pancreatic neck (simplified anatomy: the SMA and SMV descend in front of the aorta, the SMV to the
    right of the SMA, the portal vein runs from their confluence up and right toward the liver hilum).
    ``shift``: {vessel: (x, y)} moves the SMA or SMV (and the portal vein's start) to pass through there."""
    ax, ay = anchors["aorta_xy"]
    ar = anchors["aorta_r"]
    ivx = anchors["ivc_xy"][0]
    pz, zb = anchors["pancreas_z"], anchors["z_bot"]
    zc = pz + 24.0
    front = ay + ar + 6.0
    sma = (ax + 2.0, front)
    smv = (ax + 16.0, front + 2.0)
    shift = shift or {}
    sma = shift.get("superior_mesenteric_artery", sma)
    smv = shift.get("superior_mesenteric_vein", smv)
    celiac_end = (ax, ay + ar + 16.0, zc + 2.0)
    return {
        "celiac_trunk": [(ax, ay + ar - 1.0, zc), celiac_end],
        "common_hepatic_artery": [celiac_end, (ax + 22.0, ay + ar + 20.0, zc + 3.0), (ivx + 12.0, ay + ar + 26.0, zc + 6.0)],
        "superior_mesenteric_artery": [(ax, ay + ar - 1.0, pz + 14.0), (sma[0], sma[1], pz + 8.0),
                                       (sma[0], sma[1], zb - 5.0)],
        "superior_mesenteric_vein": [(smv[0], smv[1], zb - 5.0), (smv[0], smv[1], pz + 3.0)],
        "portal_vein": [(smv[0], smv[1], pz + 3.0), (ivx + 2.0, front + 10.0, pz + 38.0)],
    }


def paint_pancreatic_vessels(ct: np.ndarray, lab: np.ndarray, affine: np.ndarray, anchors: dict, rng,
                             shift: dict | None = None, cuff: dict | None = None,
                             cut_mask: np.ndarray | None = None) -> dict:
    """Paint the five vessels (blood, 42 HU with noise) over background and pancreas, and over
    pancreatic lesion voxels only inside ``cut_mask`` (the tumour made to involve a vessel: other lesions
    are never carved up); never over another organ. Returns the paths drawn. ``cuff`` ({vessel, label,
    hu, z_mm: (lo, hi)}) wraps that vessel in a 4 mm sleeve of tumour over the z range: an encased vessel."""
    spacing = tuple(float(affine[i, i]) for i in range(3))
    grid = Grid(lab.shape, spacing, tuple(float(affine[i, 3]) for i in range(3)))
    may = np.zeros(256, bool)
    may[0] = may[L.CANONICAL_IDS["pancreas"]] = True
    lesion = np.zeros(256, bool)
    for n in ("pancreatic_pdac", "pancreatic_pnet", "pancreatic_cyst", "pancreatic_lesion"):
        lesion[L.CANONICAL_IDS[n]] = True
    if cut_mask is None:
        cut_mask = np.zeros(lab.shape, bool)
    paths = vessel_paths(anchors, shift)
    for name, pts in paths.items():
        for box, m, _, _ in tube(grid, pts, VESSEL_RADII[name]):
            sub = lab[box]
            paint = m & (may[sub] | (lesion[sub] & cut_mask[box]))
            sub[paint] = L.CANONICAL_IDS[name]
            blood = HU["blood"] + float((anchors.get("enhancement_hu") or {}).get(
                "portal" if name in ("superior_mesenteric_vein", "portal_vein") else "artery", 0.0))
            ct[box][paint] = np.clip(np.rint(blood + rng.normal(0, 10, int(paint.sum()))), -1024, 3071)
    if cuff:
        lid, vid = L.CANONICAL_IDS[cuff["label"]], L.CANONICAL_IDS[cuff["vessel"]]
        for box, m, _, _ in tube(grid, paths[cuff["vessel"]], VESSEL_RADII[cuff["vessel"]] + 4.0):
            _x, _y, zz = grid.coords(box)
            within = (zz >= cuff["z_mm"][0]) & (zz <= cuff["z_mm"][1])
            sub = lab[box]
            paint = m & within & (may[sub] | lesion[sub]) & (sub != vid)
            sub[paint] = lid
            ct[box][paint] = np.clip(np.rint(cuff["hu"] + rng.normal(0, 8, int(paint.sum()))), -1024, 3071)
    return {k: [list(map(float, p)) for p in v] for k, v in paths.items()}
