"""Sub-segment layers of a phantom: Couinaud liver segments approximated by planes in the liver's
own box (``volvqa.synth.phantom``'s module doc gives the planes)."""
from __future__ import annotations

import numpy as np

from volvqa import labels as L
from volvqa.synth.shapes import Grid


def couinaud_parts(parts: np.ndarray, lab: np.ndarray, box, grid: Grid, wide_caudate: bool = False) -> None:
    """Approximate Couinaud segments by planes in the liver's own box (see module doc)."""
    if box is None:
        return
    liver = lab[box] == L.CANONICAL_IDS["liver"]
    if not liver.any():
        return
    idx = np.argwhere(liver)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    n = np.maximum(hi - lo, 1)
    i = (np.arange(liver.shape[0]) - lo[0]) / n[0]  # 0 = patient's left edge of the liver, 1 = right
    j = (np.arange(liver.shape[1]) - lo[1]) / n[1]  # 0 = posterior, 1 = anterior
    k = (np.arange(liver.shape[2]) - lo[2]) / n[2]  # 0 = inferior, 1 = superior
    u_, v_, w_ = i[:, None, None], j[None, :, None], k[None, None, :]
    seg = np.zeros(liver.shape, np.uint8)
    left = u_ < 0.45
    lateral = u_ < 0.20
    sup = w_ >= 0.5
    ant = v_ >= 0.45
    seg = np.where(left & lateral & sup, 2, seg)
    seg = np.where(left & lateral & ~sup, 3, seg)
    seg = np.where(left & ~lateral, 4, seg)
    seg = np.where(~left & ant & ~sup, 5, seg)
    seg = np.where(~left & ~ant & ~sup, 6, seg)
    seg = np.where(~left & ~ant & sup, 7, seg)
    seg = np.where(~left & ant & sup, 8, seg)
    if wide_caudate:   # hypertrophy: the caudate spreads across the hilum and the right lobe shrinks
        caudate = (u_ >= 0.22) & (u_ < 0.74) & (v_ < 0.55) & (w_ >= 0.30) & (w_ < 0.80)
    else:
        caudate = (u_ >= 0.32) & (u_ < 0.56) & (v_ < 0.42) & (w_ >= 0.30) & (w_ < 0.80)
    seg = np.where(caudate, 1, seg)
    sub = parts[box]
    sub[liver] = np.broadcast_to(seg, liver.shape)[liver]
