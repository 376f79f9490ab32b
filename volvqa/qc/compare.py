"""Pairwise quality control: two label sources for the same scan (a
dataset's masks and a segmenter's prediction, say), compared per
structure by Dice, volume difference and centroid distance. Thresholds:
``volvqa.knowledge`` (``QC_AGREE_*``, rule ``qc_agreement``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from volvqa import knowledge as K
from volvqa.arrays import memory_order
from volvqa.records import LabelMap, Volume


@dataclass
class Agreement:
    structure: str
    state_a: str            # present | absent | unknown
    state_b: str
    agree: bool | None      # None: not compared (unknown in one source)
    dice: float | None = None
    volume_a_ml: float | None = None
    volume_b_ml: float | None = None
    volume_diff: float | None = None      # |A - B| / mean(A, B)
    centroid_mm: float | None = None
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _state(lm: LabelMap, name: str) -> str:
    if name in lm.present:
        return "present"
    return "absent" if name in lm.scope else "unknown"


def _layer(lm: LabelMap, name: str) -> tuple[np.ndarray | None, int | None]:
    for i, n in lm.labels.items():
        if n == name:
            return lm.array, i
    for i, n in lm.part_labels.items():
        if n == name:
            return lm.parts, i
    return None, None


def _box(arr: np.ndarray, i: int):
    mo = memory_order(arr)
    b = ndimage.find_objects((mo == i).view(np.uint8))
    if not b or b[0] is None:
        return None
    return b[0][::-1] if mo is not arr else b[0]


def compare(volume: Volume, a: LabelMap, b: LabelMap, names=None) -> list[Agreement]:
    """Agreement per structure that either source annotates (or ``names``)."""
    voxel_ml = float(np.prod(volume.spacing_mm)) / 1000.0
    names = sorted(a.scope | b.scope) if names is None else sorted(names)
    rows = []
    for name in names:
        sa, sb = _state(a, name), _state(b, name)
        if "unknown" in (sa, sb):
            rows.append(Agreement(name, sa, sb, None, reason="not annotated by " + ("A" if sa == "unknown" else "B")))
            continue
        if sa == sb == "absent":
            rows.append(Agreement(name, sa, sb, True, reason="absent in both"))
            continue
        if sa != sb:
            rows.append(Agreement(name, sa, sb, False, reason=f"{sa} in A, {sb} in B"))
            continue
        arr_a, ia = _layer(a, name)
        arr_b, ib = _layer(b, name)
        ba, bb = _box(arr_a, ia), _box(arr_b, ib)
        sl = tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(ba, bb, strict=False))
        ma, mb = arr_a[sl] == ia, arr_b[sl] == ib
        na, nb, nab = int(ma.sum()), int(mb.sum()), int(np.count_nonzero(ma & mb))
        dice = 2.0 * nab / (na + nb)
        va, vb = na * voxel_ml, nb * voxel_ml
        vdiff = abs(va - vb) / ((va + vb) / 2)
        off = np.array([s.start for s in sl], float)
        ca = np.array(ndimage.center_of_mass(ma)) + off
        cb = np.array(ndimage.center_of_mass(mb)) + off
        dist = float(np.linalg.norm(volume.affine[:3, :3] @ (ca - cb)))
        bad = []
        if dice < K.QC_AGREE_MIN_DICE:
            bad.append(f"Dice {dice:.2f} < {K.QC_AGREE_MIN_DICE}")
        if vdiff > K.QC_AGREE_MAX_VOLUME_DIFF:
            bad.append(f"volume differs by {vdiff:.0%}")
        if dist > K.QC_AGREE_MAX_CENTROID_MM:
            bad.append(f"centroids {dist:.0f} mm apart")
        rows.append(Agreement(name, sa, sb, not bad, round(dice, 4), round(va, 3), round(vb, 3), round(vdiff, 4),
                              round(dist, 2), "; ".join(bad)))
    return rows


def disagreements(rows: list[Agreement]) -> dict[str, str]:
    """Structures to exclude when two sources must agree: name -> reason
    (disagreeing, or annotated by one source only)."""
    return {r.structure: ("sources disagree: " + r.reason) if r.agree is False else
            f"agreement not checked: {r.reason}" for r in rows if not r.agree}
