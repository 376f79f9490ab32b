"""Tumour-vessel contact for pancreatic resectability and T-staging: the angle
of a vessel's circumference that a tumour touches.

On every axial slice holding both, the vessel's cross-section boundary
(pixels of the vessel with a 4-neighbour outside it) is split into 5-degree
sectors around the cross-section's centroid (in mm); the contact angle is
360 degrees times the share of occupied sectors whose boundary pixels touch
the tumour (8-neighbours in the slice). The largest angle over the slices
counts. Exact for vessels that cross the axial plane (SMA, SMV, portal vein
near the pancreas); an approximation for the obliquely running celiac trunk
and common hepatic artery. The thresholds are NCCN's: abutment <= 180
degrees, encasement > 180 degrees.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Canonical vessel -> artery | vein (the ones NCCN resectability and AJCC T4 name).
PANCREATIC_VESSELS = {"superior_mesenteric_artery": "artery", "celiac_trunk": "artery",
                      "common_hepatic_artery": "artery", "superior_mesenteric_vein": "vein",
                      "portal_vein": "vein"}
SECTOR_DEG = 5.0
_SQUARE = np.ones((3, 3), bool)


def slice_contact_deg(vessel: np.ndarray, tumour: np.ndarray, spacing_xy) -> float:
    """Contact angle (degrees) on one axial slice: ``vessel`` and ``tumour`` are 2D masks (x, y).

    The vessel's outline is the set of midpoints between a vessel pixel and
    a 4-neighbour outside it; the share of 5-degree sectors (around the
    cross-section's centroid, in mm) holding outline points whose outside
    neighbour is tumour, times 360."""
    if not vessel.any() or not tumour.any():
        return 0.0
    sx, sy = spacing_xy
    cx, cy = np.argwhere(vessel).mean(axis=0)
    all_s: set[int] = set()
    hit_s: set[int] = set()
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        # vessel pixels whose neighbour at (dx, dy) is outside the vessel
        nb_out = ~np.roll(vessel, (-dx, -dy), axis=(0, 1))
        nb_tum = np.roll(tumour, (-dx, -dy), axis=(0, 1))
        edge = vessel & nb_out
        if dx == 1:
            edge[-1, :] = False
        elif dx == -1:
            edge[0, :] = False
        elif dy == 1:
            edge[:, -1] = False
        else:
            edge[:, 0] = False
        pts = np.argwhere(edge).astype(float)
        if not len(pts):
            continue
        ang = np.degrees(np.arctan2((pts[:, 1] + dy / 2 - cy) * sy, (pts[:, 0] + dx / 2 - cx) * sx)) % 360.0
        sec = (ang // SECTOR_DEG).astype(int)
        all_s.update(sec.tolist())
        t = nb_tum[edge]
        hit_s.update(sec[t].tolist())
    return 360.0 * len(hit_s) / max(len(all_s), 1)


def contact_angles(lab: np.ndarray, tumour_box, tumour_mask: np.ndarray, vessel_ids: dict[str, int],
                   spacing_mm) -> dict[str, float]:
    """{vessel: largest contact angle over the tumour's slices} for the vessels present;
    ``tumour_mask`` is the tumour inside ``tumour_box`` (global slices)."""
    out = {}
    pad = 2
    sl = tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(tumour_box[:2], lab.shape[:2], strict=False))
    zs = range(tumour_box[2].start, tumour_box[2].stop)
    full = np.zeros((sl[0].stop - sl[0].start, sl[1].stop - sl[1].start, len(zs)), bool)
    full[tumour_box[0].start - sl[0].start: tumour_box[0].stop - sl[0].start,
         tumour_box[1].start - sl[1].start: tumour_box[1].stop - sl[1].start, :] = tumour_mask
    for name, vid in vessel_ids.items():
        best = 0.0
        for k, z in enumerate(zs):
            t2 = full[:, :, k]
            if not t2.any():
                continue
            v_plane = lab[:, :, z] == vid
            if not v_plane.any():
                continue
            # The vessel's whole cross-section on the slice (its centroid must not be cut by the box).
            lbl, _ = ndimage.label(v_plane, _SQUARE)
            near = np.zeros_like(v_plane)
            near[sl[0], sl[1]] = ndimage.binary_dilation(t2, _SQUARE)
            for comp in set(np.unique(lbl[near & v_plane]).tolist()) - {0}:
                best = max(best, slice_contact_deg(lbl == comp, _embed(t2, sl, v_plane.shape), spacing_mm[:2]))
        if best > 0 or name in vessel_ids:
            out[name] = round(best, 1)
    return out


def _embed(t2, sl, shape):
    out = np.zeros(shape, bool)
    out[sl[0], sl[1]] = t2
    return out
