"""Plausibility checks of one case's masks (in the spirit of Label Critic).

Each check looks at one structure and says whether its mask can be trusted;
thresholds and their sources live in ``volvqa.knowledge`` (``QC_*`` and the
``qc_*`` rules). A failing structure is excluded from the benchmark (it
becomes *unknown*: no question rests on it), together with what depends on
it: an organ takes its lesion classes and sub-segments with it, and one
failing lesion class takes its whole family (a "no kidney lesion" answer
needs every kidney lesion class).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cc3d
import numpy as np
from scipy import ndimage

from volvqa import knowledge as K
from volvqa import labels as L
from volvqa.arrays import gather, int16_stats, label_boxes, label_counts
from volvqa.records import LabelMap, Volume

#: Lesion components below this are ignored by the outside-organ check (as by findings).
MIN_LESION_MM3 = 50.0


@dataclass
class QCFinding:
    case_id: str
    structure: str
    check: str          # volume | hu | side | pieces | lesion_outside | overlap | empty
    message: str
    value: float | None = None
    limit: list[float] | float | None = None
    rule: str = ""

    def line(self) -> str:
        return f"{self.case_id}\t{self.structure}\t{self.check}\t{self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


def _boxes(lab: np.ndarray) -> dict[int, tuple[slice, ...]]:
    return label_boxes(lab)


def _world_x(affine: np.ndarray, idx) -> float:
    return float(affine[0, :3] @ np.asarray(idx, float) + affine[0, 3])


def midline_x(volume: Volume, labelmap: LabelMap, boxes=None) -> tuple[float, str]:
    """World x (mm) of the patient's midline and what gave it: the spine's
    centroid (vertebrae, spinal cord, sacrum) when the masks hold it, else
    the body's (voxels above -500 HU)."""
    from volvqa.io.labelmap import body_midline_x
    lab = labelmap.array
    boxes = _boxes(lab) if boxes is None else boxes
    spine = [i for i, n in labelmap.labels.items() if n.startswith("vertebrae_") or n in ("spinal_cord", "sacrum")]
    xs, ws = [], []
    for i in spine:
        if i not in boxes:
            continue
        sl = boxes[i]
        m = lab[sl] == i
        n = int(m.sum())
        if n:
            cx = float((np.arange(m.shape[0]) * m.sum(axis=(1, 2))).sum()) / n + sl[0].start
            cy = float((np.arange(m.shape[1]) * m.sum(axis=(0, 2))).sum()) / n + sl[1].start
            cz = float((np.arange(m.shape[2]) * m.sum(axis=(0, 1))).sum()) / n + sl[2].start
            xs.append(_world_x(volume.affine, (cx, cy, cz)))
            ws.append(n)
    if ws:
        return float(np.average(xs, weights=ws)), "spine"
    return body_midline_x(volume), "body"


def _sided(name: str) -> str | None:
    """'left' / 'right' for a structure the side check covers, else None."""
    for stem in K.QC_SIDED:
        for side in ("left", "right"):
            if name == f"{stem}_{side}" or (stem == "rib" and name.startswith(f"rib_{side}_")):
                return side
    return None


def check_case(volume: Volume, labelmap: LabelMap, case_id: str = "",
               boxes: dict[int, tuple[slice, ...]] | None = None) -> list[QCFinding]:
    """Every check on every structure of one case; an empty list means clean. ``boxes``: every
    label's box (``volvqa.arrays.label_boxes``), when the caller has them."""
    lab = labelmap.array
    voxel_ml = float(np.prod(volume.spacing_mm)) / 1000.0
    boxes = boxes if boxes is not None else (labelmap.known_boxes() or _boxes(lab))
    counts = _BoxCounts(lab, boxes)
    ids = {n: i for i, n in labelmap.labels.items()}
    out: list[QCFinding] = []
    for name, plausible in K.QC_PLAUSIBLE.items():
        i = ids.get(name)
        if i is not None and i in boxes:
            out += _check_organ(volume, labelmap, case_id, name, i, plausible, boxes, counts, ids, voxel_ml)
    out += _check_sides(volume, labelmap, case_id, boxes)
    out += _lesions_outside(volume, labelmap, boxes, counts, case_id, voxel_ml)
    out += _check_overlaps(labelmap, case_id)
    out += _check_not_removable(labelmap, case_id)
    return out


def _finding(case_id, structure, check, message, value=None, limit=None, rule="") -> QCFinding:
    return QCFinding(case_id, structure, check, message, None if value is None else round(float(value), 3),
                     limit, rule)


def _check_organ(volume, labelmap, case_id, name, i, plausible, boxes, counts, ids, voxel_ml) -> list[QCFinding]:
    """Volume (lesions included), attenuation and number of sizeable pieces against the ``plausible`` ranges."""
    lab, hu, shape = labelmap.array, volume.array, labelmap.array.shape
    out = []
    sl = boxes[i]
    n_own = int(counts[i])
    whole = n_own + sum(int(counts[ids[x]]) for x in _family_lesions(name) if x in ids
                        and _lesion_belongs(x, name))
    complete = not any(s.start == 0 or s.stop == dim for s, dim in zip(sl, shape, strict=False))
    if plausible.volume_ml is not None:
        ml = whole * voxel_ml
        lo, hi = plausible.volume_ml
        if ml > hi or (complete and ml < lo):
            out.append(_finding(case_id, name, "volume", f"volume {ml:.1f} ml outside the plausible {lo:g}-{hi:g} ml"
                                + ("" if complete else " (cut by the scan's edge: upper limit only)"), ml, [lo, hi],
                                "qc_volume"))
    if plausible.median_hu is not None:
        out += _check_organ_hu(gather(hu[sl], lab[sl] == i), case_id, name, plausible)
    if plausible.single:
        pieces = _sizeable_pieces(lab, sl, i, [ids[x] for x in _family_lesions(name) if x in ids], shape)
        if pieces > K.QC_MAX_SIZEABLE_PIECES:
            out.append(_finding(case_id, name, "pieces", f"{pieces} pieces each holding >= "
                                f"{K.QC_SIZEABLE_PIECE:.0%} of the organ", pieces, K.QC_MAX_SIZEABLE_PIECES,
                                "qc_pieces"))
    return out


def _check_organ_hu(vals: np.ndarray, case_id: str, name: str, plausible) -> list[QCFinding]:
    """Median HU in range, enough voxels in the band, not a mask spilling over fat."""
    _n, _mean, _std, med = int16_stats(vals)
    lo, hi = plausible.median_hu
    share = float(np.count_nonzero((vals >= lo) & (vals <= hi))) / max(vals.size, 1)
    if not lo <= med <= hi:
        return [_finding(case_id, name, "hu", f"median {med:.0f} HU outside the plausible {lo:g}..{hi:g} HU", med,
                         [lo, hi], "qc_hu")]
    if share < K.QC_MIN_BAND_SHARE:
        return [_finding(case_id, name, "hu", f"only {share:.0%} of its voxels lie within {lo:g}..{hi:g} HU", share,
                         K.QC_MIN_BAND_SHARE, "qc_hu")]
    if plausible.max_fat_share is not None and med >= 0:
        flo, fhi = K.QC_FAT_HU
        fat = float(np.count_nonzero((vals >= flo) & (vals <= fhi))) / max(vals.size, 1)
        if fat > plausible.max_fat_share:
            return [_finding(case_id, name, "hu", f"{fat:.0%} of its voxels at fat attenuation ({flo:g}..{fhi:g} "
                             f"HU) around a median of {med:.0f} HU: the mask covers fat beside the organ", fat,
                             plausible.max_fat_share, "qc_hu")]
    return []


def _check_sides(volume: Volume, labelmap: LabelMap, case_id: str, boxes) -> list[QCFinding]:
    """Left/right structures on their side of the midline."""
    lab, out = labelmap.array, []
    mid, how = midline_x(volume, labelmap, boxes)
    for i, name in labelmap.labels.items():
        side = _sided(name)
        if side is None or i not in boxes:
            continue
        sl = boxes[i]
        m = lab[sl] == i
        n = int(m.sum())
        cx = float((np.arange(m.shape[0]) * m.sum(axis=(1, 2))).sum()) / n + sl[0].start
        cy = float((np.arange(m.shape[1]) * m.sum(axis=(0, 2))).sum()) / n + sl[1].start
        cz = float((np.arange(m.shape[2]) * m.sum(axis=(0, 1))).sum()) / n + sl[2].start
        x = _world_x(volume.affine, (cx, cy, cz))
        # RAS: the patient's right has the larger x.
        beyond = (mid - x) if side == "right" else (x - mid)
        if beyond > K.QC_SIDE_MARGIN_MM:
            other = "left" if side == "right" else "right"
            out.append(_finding(case_id, name, "side", f"centroid {beyond:.0f} mm to the patient's {other} of the "
                                f"midline ({how})", beyond, K.QC_SIDE_MARGIN_MM, "qc_side"))
    return out


def _check_overlaps(labelmap: LabelMap, case_id: str) -> list[QCFinding]:
    """Overlaps between per-structure masks (recorded while loading a folder)."""
    out = []
    src = labelmap.meta.get("source_voxels") or {}
    for pair, n in sorted((labelmap.meta.get("overlap_voxels") or {}).items()):
        a, b = pair.split("|")
        smaller = min(src.get(a, 0), src.get(b, 0))
        if smaller and n / smaller > K.QC_MAX_OVERLAP_SHARE:
            for s, o in ((a, b), (b, a)):
                out.append(_finding(case_id, s, "overlap", f"shares {n} voxels ({n / smaller:.0%} of the smaller "
                                    f"mask) with {o}", n / smaller, K.QC_MAX_OVERLAP_SHARE, "qc_overlap"))
    return out


def _check_not_removable(labelmap: LabelMap, case_id: str) -> list[QCFinding]:
    """Empty masks of organs that cannot be missing at a level the scan shows."""
    out = []
    scope = labelmap.scope
    present = set(labelmap.labels.values())
    for name, landmarks in K.QC_NOT_REMOVABLE.items():
        if name in scope and name not in present:
            seen = [x for x in landmarks if x in present]
            if seen:
                out.append(_finding(case_id, name, "empty", f"annotated but empty while {', '.join(seen)} at its "
                                    "level is present", 0, None, "qc_empty"))
    return out


class _BoxCounts(dict):
    """Voxel count of a label, counted inside its box when first asked (a few labels are asked;
    a count of every label would read the whole volume)."""

    def __init__(self, lab: np.ndarray, boxes: dict):
        super().__init__()
        self._lab, self._boxes = lab, boxes

    def __missing__(self, i: int) -> int:
        n = int(np.count_nonzero(self._lab[self._boxes[i]] == i)) if i in self._boxes else 0
        self[i] = n
        return n


def _family_lesions(organ: str) -> list[str]:
    fam = "kidney" if organ.startswith("kidney") else organ
    return [n for n, o in L.LESION_ORGAN.items() if o == fam]


def _lesion_belongs(lesion: str, organ: str) -> bool:
    # A kidney lesion class spans both sides: leave it out of one kidney's volume.
    return not organ.startswith("kidney")


def _sizeable_pieces(lab, sl, oid: int, lesion_ids: list[int], shape) -> int:
    """Pieces (26-connected, lesions included) holding >= QC_SIZEABLE_PIECE of the organ's own voxels."""
    pad = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, d)) for s, d in zip(sl, shape, strict=False))
    sub = lab[pad]
    own = sub == oid
    if lesion_ids:
        member = np.zeros(max(int(sub.max()), oid, *lesion_ids) + 1, bool)   # a lookup table beats np.isin
        member[[oid, *lesion_ids]] = True
        union = member[sub]
    else:
        union = own
    cc, n = cc3d.connected_components(union, connectivity=26, return_N=True)
    total = int(np.count_nonzero(own))
    if n <= 1:   # the usual case: one piece, no per-piece count needed
        return int(n == 1 and total > 0)
    per = label_counts(gather(cc, own), minlength=n + 1)
    return int(np.count_nonzero(per[1:] >= K.QC_SIZEABLE_PIECE * total))


def _lesions_outside(volume, labelmap, boxes, counts, case_id, voxel_ml) -> list[QCFinding]:
    lab = labelmap.array
    out = []
    ids = {n: i for i, n in labelmap.labels.items()}
    fams: dict[str, list[int]] = {}
    for n, i in ids.items():
        if L.is_lesion(n) and i in boxes:
            fams.setdefault(L.LESION_ORGAN[n], []).append(i)
    for fam, les_ids in sorted(fams.items()):
        if fam == "kidney":
            organ_names = ["kidney_left", "kidney_right"]
        elif fam == "lung":
            organ_names = [n for n in ids if n.startswith("lung_") and not L.is_lesion(n)] + ["lung"]
        else:
            organ_names = [fam]
        organ_ids = [ids[n] for n in organ_names if n in ids]
        if not organ_ids:
            # Lesions of an organ annotated as absent: the lesion mask is wrong.
            if fam != "lung" and all(n in labelmap.scope for n in organ_names):
                out.append(QCFinding(case_id, f"{fam}_lesions", "lesion_outside",
                                     f"{fam} lesions are annotated but the {fam} mask is empty", None, None,
                                     "qc_lesion_outside"))
            continue
        bx = [boxes[i] for i in les_ids]
        sl = tuple(slice(max(min(b[a].start for b in bx) - 1, 0), min(max(b[a].stop for b in bx) + 1, lab.shape[a]))
                   for a in range(3))
        sub = lab[sl]
        cc = cc3d.connected_components(np.isin(sub, les_ids), connectivity=26)
        n_cc = int(cc.max())
        if n_cc == 0:
            continue
        sizes = np.bincount(cc.ravel(), minlength=n_cc + 1)
        near = ndimage.grey_dilation(cc, size=(3, 3, 3))
        touching = set(np.unique(near[np.isin(sub, organ_ids)]).tolist())
        big = [k for k in range(1, n_cc + 1) if sizes[k] * voxel_ml * 1000.0 >= MIN_LESION_MM3]
        outside = [k for k in big if k not in touching]
        if outside:
            organ = "kidneys" if fam == "kidney" else fam
            out.append(QCFinding(case_id, f"{fam}_lesions", "lesion_outside",
                                 f"{len(outside)} of {len(big)} {fam} lesion components do not touch the {organ}",
                                 len(outside), 0, "qc_lesion_outside"))
    return out


def excluded_structures(findings: list[QCFinding], labelmap: LabelMap) -> dict[str, str]:
    """Structures to exclude, name -> reason, with what depends on them:
    an organ's lesion classes and sub-segments; a lesion class's whole family."""
    out: dict[str, str] = {}
    scope = labelmap.scope
    for f in findings:
        reason = f"{f.check}: {f.message}"
        s = f.structure
        names: list[str]
        if s.endswith("_lesions") and s[: -len("_lesions")] in set(L.LESION_ORGAN.values()):
            names = _family_lesions(s[: -len("_lesions")])
        elif L.is_lesion(s):
            names = _family_lesions(L.LESION_ORGAN[s])
        else:
            names = [s] + _family_lesions(s) + [p for p, par in L.PART_PARENT.items() if par == s]
            if s.startswith("kidney_"):
                names += _family_lesions("kidney")
        for n in names:
            if n in scope:
                out.setdefault(n, reason if n == s else f"{s.replace('_', ' ')} failed ({reason})")
    return dict(sorted(out.items()))


def exclude(labelmap: LabelMap, excluded: dict[str, str],
            boxes: dict[int, tuple[slice, ...]] | None = None) -> LabelMap:
    """A copy of ``labelmap`` with the excluded structures' voxels cleared
    and the structures recorded as unknown (``meta['qc_excluded']``).
    With ``boxes`` (every label's box) only those boxes are searched, and the
    copy carries the boxes of what is left."""
    if not excluded:
        return labelmap if boxes is None else labelmap.with_boxes(boxes)
    arr = labelmap.array.copy()
    ids = [i for i, n in labelmap.labels.items() if n in excluded]
    if ids and boxes is not None:
        for i in ids:
            if i in boxes:
                sub = arr[boxes[i]]
                sub[sub == i] = 0
    elif ids:
        arr[np.isin(arr, ids)] = 0
    parts = labelmap.parts
    pids = [i for i, n in labelmap.part_labels.items() if n in excluded]
    if parts is not None and pids:
        parts = parts.copy()
        parts[np.isin(parts, pids)] = 0
    meta = dict(labelmap.meta)
    meta["qc_excluded"] = dict(sorted({**meta.get("qc_excluded", {}), **excluded}.items()))
    out = LabelMap(arr, {i: n for i, n in labelmap.labels.items() if n not in excluded}, labelmap.affine,
                   parts=parts, part_labels={i: n for i, n in labelmap.part_labels.items() if n not in excluded},
                   meta=meta, annotates=None if labelmap.annotates is None else labelmap.annotates - set(excluded))
    # Clearing a label removes its box and changes no other label's.
    return out if boxes is None else out.with_boxes({i: b for i, b in boxes.items() if i not in set(ids)})
