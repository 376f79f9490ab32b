"""Where a lung lesion is: its lobe from lobe masks, else its side and craniocaudal third of that lung
(from lung masks, a lung mask split at the midline, or the aerated lung field)."""
from __future__ import annotations

import cc3d
import numpy as np

from volvqa import labels as L
from volvqa.findings.records import LesionFindings
from volvqa.records import LabelMap, Volume


def lung_lobe(touch_counts, labelmap: LabelMap) -> dict:
    """A lung lesion's lobe: the lobe mask its 26-neighbour ring touches most
    (the lesion's own voxels carry its label, not the lobe's); {} without lobes."""
    best, n_best = None, 0
    for lobe in L.LUNG_LOBES:
        i = labelmap.id_of(lobe)
        if i is not None and touch_counts[i] > n_best:
            best, n_best = lobe, int(touch_counts[i])
    if best is None:
        return {}
    side = best.rsplit("_", 1)[1]
    return {"lobe": best, "side": side, "method": "lobe masks"}


def lung_field(volume: Volume, labelmap: LabelMap) -> dict:
    """Each lung's craniocaudal extent (world z, mm) and the midline (world x):
    from ``lung_left`` / ``lung_right`` masks, else a ``lung`` mask split at the
    midline, else the aerated lung field (voxels below -400 HU not connected to
    the air around the body, in components of at least a tenth of the
    largest), split at the midline. Lobe masks, when present, are used per
    lesion instead (``lung_lobe``)."""
    from volvqa.qc.checks import midline_x
    mid, _how = midline_x(volume, labelmap)
    aff = volume.affine
    lab = labelmap.array
    ids = {n: labelmap.id_of(n) for n in ("lung_left", "lung_right", "lung", *L.LUNG_LOBES)}
    if ids["lung_left"] is not None or ids["lung_right"] is not None:
        sides = {s: lab == ids[f"lung_{s}"] for s in ("left", "right") if ids[f"lung_{s}"] is not None}
        method = "lung masks"
    else:
        lobes = [ids[n] for n in ("lung", *L.LUNG_LOBES) if ids[n] is not None]
        if lobes:
            field = np.isin(lab, lobes)
            method = "lung mask, split at the midline"
        else:
            air = volume.array < -400
            cc = cc3d.connected_components(air, connectivity=6)
            edge = np.unique(np.concatenate([cc[0].ravel(), cc[-1].ravel(), cc[:, 0].ravel(), cc[:, -1].ravel()]))
            sizes = np.bincount(cc.ravel())
            sizes[0] = 0
            sizes[edge] = 0
            keep = np.nonzero(sizes >= 0.1 * sizes.max())[0] if sizes.max() > 0 else []
            field = np.isin(cc, keep)
            method = "aerated lung field (HU < -400), split at the midline"
        xs = aff[0, 0] * np.arange(lab.shape[0]) + aff[0, 3]
        left_cols = xs < mid  # RAS: the patient's left has the smaller x
        sides = {"left": field & left_cols[:, None, None], "right": field & ~left_cols[:, None, None]}
    out = {"midline_x_mm": mid, "method": method, "z_mm": {}}
    for side, m in sides.items():
        zs = np.nonzero(m.any(axis=(0, 1)))[0]
        if zs.size:
            z = aff[2, 2] * zs + aff[2, 3]
            out["z_mm"][side] = (float(z.min()), float(z.max()))
    return out


def lung_side_third(les: LesionFindings, field: dict, aff) -> dict:
    """Side by the lesion centroid against the midline; upper / middle / lower
    third of that lung's craniocaudal extent in the scan."""
    x, _y, z = les.centroid_mm
    side = "left" if x < field["midline_x_mm"] else "right"
    loc = {"side": side, "method": field["method"]}
    if side in field["z_mm"]:
        z0, z1 = field["z_mm"][side]
        t = (z - z0) / max(z1 - z0, 1e-6)
        loc["third"] = "upper" if t > 2 / 3 else ("lower" if t < 1 / 3 else "middle")
    return loc
