"""``extract(volume, labelmap) -> Findings``: every measured value the
benchmark's answers rest on.

Cost model: one pass over the label map (``cc3d.statistics``: voxel counts,
bounding boxes and centroids of every label), then all per-structure work
inside that structure's bounding box, plus one ``cc3d.region_graph`` pass
over the labelled region for organ contacts. No full-volume boolean mask is
made per label.

Parenchyma HU statistics are over the organ's own label, which excludes
its lesions (a lesion voxel carries the lesion's label). No erosion is
applied: the numbers then equal those of SimpleITK's label statistics and
TotalSegmentator's ``--statistics`` (which does not erode either), and an
erosion would remove most of a small organ (adrenal, pancreas) at 3 mm.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cc3d
import numpy as np
from scipy import ndimage

from volvqa import knowledge as K
from volvqa import labels as L
from volvqa.arrays import gather, int16_stats, label_boxes, memory_order
from volvqa.errors import VolvqaInputError
from volvqa.findings.diameters import axial_diameters, max_diameter_3d
from volvqa.findings.lung import lung_field, lung_lobe, lung_side_third
from volvqa.findings.records import Findings, LesionFindings, OrganFindings
from volvqa.phase import normalise_phase
from volvqa.records import LabelMap, Volume

#: Lesion components smaller than this are dropped (and counted): about a
#: 4.6 mm sphere, below what radiologists measure and where one-voxel
#: segmentation noise lives.
DEFAULT_MIN_LESION_MM3 = 50.0
#: Iso-attenuation band: |lesion - parenchyma| < ISO_STD_FRACTION * parenchyma HU std
#: (the rule RadGPT used).
ISO_STD_FRACTION = 0.1
#: Couinaud segment / pancreas part named in a lesion's location when it
#: holds more than this share of the lesion's voxels (RadGPT's rule).
PART_SHARE = 0.10
#: Organs whose length (longest 3D diameter) is measured: the kidneys, for
#: the enlarged-kidney rule (bipolar length).
LENGTH_ORGANS = ("kidney_left", "kidney_right")

_NEIGHBOURS_26 = np.ones((3, 3, 3), dtype=bool)


def _lesion_kind(label: str) -> str:
    if label.endswith("_cyst"):
        return "cyst"
    if label.endswith(("_tumor", "_pdac", "_pnet")):
        return "tumor"
    return "lesion"


def _pad(sl: tuple[slice, ...], shape, n: int = 1) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - n, 0), min(s.stop + n, dim)) for s, dim in zip(sl, shape, strict=False))


def _bbox_from_slices(sl) -> list[int]:
    return [sl[0].start, sl[1].start, sl[2].start, sl[0].stop - 1, sl[1].stop - 1, sl[2].stop - 1]


def _bbox_mm(affine: np.ndarray, bbox: list[int]) -> list[float]:
    lo = np.array(bbox[:3], float) - 0.5
    hi = np.array(bbox[3:], float) + 0.5
    corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    w = (affine @ corners.T)[:3]
    return [*w.min(axis=1).tolist(), *w.max(axis=1).tolist()]


def _world(affine: np.ndarray, idx) -> list[float]:
    return (affine[:3, :3] @ np.asarray(idx, float) + affine[:3, 3]).tolist()


def _box_mask(lab: np.ndarray, sl, cid: int) -> np.ndarray:
    """``lab[sl] == cid``, computed in memory order (3x faster on Fortran arrays)."""
    sub = lab[sl]
    mo = memory_order(sub)
    return (mo == cid).T if mo is not sub else sub == cid


def _index_sums(mask: np.ndarray) -> np.ndarray:
    """Sum of voxel indices along each axis (local to the mask's box).

    Two reductions in memory order: one over the slowest axis to a plane,
    one over the plane's axes; the third projection comes from the plane.
    """
    mo = memory_order(mask)
    plane = mo.sum(axis=0, dtype=np.int64)            # axes (1, 2) of mo
    slow = mo.sum(axis=(1, 2), dtype=np.int64)        # axis 0 of mo
    per_axis = [slow, plane.sum(axis=1), plane.sum(axis=0)]
    if mo is not mask:
        per_axis = per_axis[::-1]
    return np.array([float(c @ np.arange(c.size)) for c in per_axis])


def _union_bbox(a: list[int], b: list[int]) -> list[int]:
    return [min(a[0], b[0]), min(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]), max(a[4], b[4]), max(a[5], b[5])]


def _touches_border(bbox: list[int], shape) -> bool:
    return any(bbox[i] == 0 or bbox[i + 3] == shape[i] - 1 for i in range(3))


def contacts(labels: np.ndarray, ids: set[int], region: tuple[slice, ...] | None = None
             ) -> set[tuple[int, int]]:
    """Pairs of label ids (among ``ids``) that share a voxel face (6-connectivity).

    ``region``: a box holding every labelled voxel. Uses
    ``cc3d.region_graph`` (one C++ pass).
    """
    sub = labels if region is None else labels[region]
    # cc3d's loops are fastest on Fortran-ordered data: copy the crop in the
    # parent's memory order (a block copy) and pass a Fortran-ordered view;
    # face pairs do not depend on the axis order.
    sub = np.asfortranarray(sub) if labels.flags.f_contiguous else np.ascontiguousarray(sub).T
    pairs = set()
    for p, q in cc3d.region_graph(sub, connectivity=6):
        if p in ids and q in ids:
            pairs.add((min(int(p), int(q)), max(int(p), int(q))))
    return pairs


@dataclass
class _Case:
    """One case's arrays and geometry, shared by the measuring steps."""
    volume: Volume
    labelmap: LabelMap
    lab: np.ndarray
    hu: np.ndarray
    aff: np.ndarray
    sp: np.ndarray
    voxel_ml: float
    boxes: dict
    organs: dict[str, OrganFindings] = field(default_factory=dict)
    organ_ids: dict[str, int] = field(default_factory=dict)
    idx_sums: dict[str, np.ndarray] = field(default_factory=dict)   # voxel index sums, for centroids


def extract(volume: Volume, labelmap: LabelMap, *, case_id: str = "",
            min_lesion_mm3: float = DEFAULT_MIN_LESION_MM3,
            iso_std_fraction: float = ISO_STD_FRACTION, phase: str | None = None) -> Findings:
    """Measure organs, lesions and relations of one case (units: mm, ml, HU; RAS). ``phase``: the
    contrast phase (default: the volume's ``meta["phase"]``, else unknown)."""
    lab, hu = labelmap.array, volume.array
    if lab.shape != hu.shape:
        raise VolvqaInputError(volume.source.path, f"label map shape {lab.shape} differs from the "
                               f"volume's {hu.shape}")
    shape = lab.shape
    sp = np.asarray(volume.spacing_mm, float)
    # One pass for every label's box (find_objects on the memory-order view),
    # one chunked count; then work inside boxes only.
    boxes = labelmap.known_boxes() or label_boxes(lab)
    c = _Case(volume, labelmap, lab, hu, volume.affine, sp, float(sp.prod()) / 1000.0, boxes)
    present = [i for i in sorted(boxes) if i in labelmap.labels]
    lesion_classes = _measure_organs(c, present)
    lesions: list[LesionFindings] = []
    dropped: dict[str, int] = {}
    lesion_masks = []  # (lesion, global slices, local mask) for location work
    for cid in lesion_classes:
        _measure_lesion_class(c, cid, min_lesion_mm3, lesions, lesion_masks, dropped)
    _finish_organs(c, lesion_masks)
    _locate_lesions(c, lesion_masks, iso_std_fraction)

    measures = {}
    cr = _caudate_ratio(labelmap, c.aff, sp) if "liver" in c.organs else None
    if cr is not None:
        measures["caudate"] = cr
    organ_id_set = {c.organ_ids[n] for n in c.organs}
    used = [boxes[i] for i in present]
    region = tuple(slice(min(b[a].start for b in used), max(b[a].stop for b in used)) for a in range(3)) \
        if used else None
    pairs = contacts(lab, organ_id_set, region) if used else set()
    contact_names = sorted([sorted([labelmap.labels[p], labelmap.labels[q]]) for p, q in pairs])
    return Findings(
        case_id=case_id, shape=list(shape), spacing_mm=sp.tolist(), affine_ras_mm=c.aff.tolist(),
        organs=dict(sorted(c.organs.items())), lesions=lesions, contacts=contact_names,
        dropped_lesion_components=dropped,
        annotated=sorted(labelmap.scope - set(labelmap.meta.get("qc_excluded", {}))),
        parts=sorted(set(labelmap.part_labels.values())),
        excluded=dict(sorted(labelmap.meta.get("qc_excluded", {}).items())),
        measures=measures,
        phase=normalise_phase(phase if phase is not None else volume.meta.get("phase"), volume.source.path),
        params={"min_lesion_mm3": min_lesion_mm3, "iso_rule": f"|dHU| < {iso_std_fraction} x parenchyma HU std",
                "part_share": PART_SHARE, "lesion_connectivity": 26, "contact": "shared voxel face",
                "erosion": "none"},
        source=volume.source.path).canonical()


def _measure_organs(c: _Case, present: list[int]) -> list[int]:
    """Volume and parenchyma HU of every non-lesion label (into ``c.organs``); returns the lesion ids."""
    lesion_classes = []
    for cid in present:
        name = c.labelmap.labels[cid]
        if L.is_lesion(name):
            lesion_classes.append(cid)
            continue
        sl = c.boxes[cid]
        m = _box_mask(c.lab, sl, cid)
        n, mean, std, median = int16_stats(gather(c.hu[sl], m))
        bbox = _bbox_from_slices(sl)
        c.idx_sums[name] = _index_sums(m) + n * np.array([s.start for s in sl], float)
        c.organ_ids[name] = cid
        c.organs[name] = OrganFindings(
            name=name, voxels=n, volume_ml=n * c.voxel_ml, parenchyma_voxels=n,
            hu_mean=mean, hu_std=std, hu_median=median,
            bbox_voxel=bbox, bbox_mm=[], extent_mm=[], centroid_mm=[], touches_border=False)
    return lesion_classes


def _measure_lesion_class(c: _Case, cid: int, min_lesion_mm3: float, lesions: list, lesion_masks: list,
                          dropped: dict) -> None:
    """Each 26-connected component of one lesion label is a lesion (those under ``min_lesion_mm3``
    are counted in ``dropped``); its voxels join its owning organ's volume."""
    name = c.labelmap.labels[cid]
    sl = c.boxes[cid]
    cc = cc3d.connected_components(_box_mask(c.lab, sl, cid), connectivity=26)
    st = cc3d.statistics(cc)
    for k in range(1, len(st["voxel_counts"])):
        nvox = int(st["voxel_counts"][k])
        if nvox == 0:
            continue
        if nvox * c.voxel_ml * 1000.0 < min_lesion_mm3:
            dropped[name] = dropped.get(name, 0) + 1
            continue
        bb = st["bounding_boxes"][k]
        gsl = tuple(slice(s.start + o.start, s.stop + o.start) for s, o in zip(bb, sl, strict=False))
        m = cc[bb] == k
        cen_idx = np.asarray(st["centroids"][k], float) + np.array([s.start for s in sl], float)
        les = _lesion(c, name, len(lesions) + 1, gsl, m, nvox, cen_idx)
        lesions.append(les)
        lesion_masks.append((les, gsl, m))
        if les.organ in c.organs:
            o = c.organs[les.organ]
            o.voxels += nvox
            o.volume_ml = o.voxels * c.voxel_ml
            o.bbox_voxel = _union_bbox(o.bbox_voxel, les.bbox_voxel)
            o.lesion_ids.append(les.lesion_id)
            c.idx_sums[les.organ] = c.idx_sums[les.organ] + cen_idx * nvox


def _lesion(c: _Case, name: str, lesion_id: int, gsl, m: np.ndarray, nvox: int, cen_idx: np.ndarray
            ) -> LesionFindings:
    """One lesion's size, attenuation, touching structures and owning organ (location comes later)."""
    lab, labelmap, sp, aff = c.lab, c.labelmap, c.sp, c.aff
    vals = gather(c.hu[gsl], m).astype(np.float64)
    long_mm, short_mm, z = axial_diameters(m, sp, z_offset=gsl[2].start)
    # Organs touching the lesion: labels in its 26-neighbour dilation.
    psl = _pad(gsl, lab.shape)
    pm = np.zeros(tuple(s.stop - s.start for s in psl), bool)
    inner = tuple(slice(g.start - p.start, g.stop - p.start) for g, p in zip(gsl, psl, strict=False))
    pm[inner] = m
    ring = ndimage.binary_dilation(pm, _NEIGHBOURS_26) & ~pm
    near = lab[psl][ring]
    touch_counts = np.bincount(near, minlength=256) if near.size else np.zeros(256, int)
    touches = sorted({labelmap.labels[int(i)] for i in np.nonzero(touch_counts)[0]
                      if i != 0 and int(i) in labelmap.labels
                      and not L.is_lesion(labelmap.labels[int(i)])})
    organ = _owning_organ(name, touch_counts, labelmap, c.organs, cen_idx, aff, lab.shape)
    bbox = _bbox_from_slices(gsl)
    les = LesionFindings(
        lesion_id=lesion_id, label=name, kind=_lesion_kind(name), organ=organ,
        voxels=nvox, volume_ml=nvox * c.voxel_ml, hu_mean=float(vals.mean()),
        hu_std=float(vals.std()), long_axis_mm=long_mm, short_axis_mm=short_mm, axial_slice=z,
        max_diameter_3d_mm=max_diameter_3d(m, sp), bbox_voxel=bbox, bbox_mm=_bbox_mm(aff, bbox),
        centroid_mm=_world(aff, cen_idx), centroid_voxel=cen_idx.tolist(), location={},
        attenuation="unknown", hu_difference=float("nan"), touches=touches)
    if L.LESION_ORGAN[name] == "pancreas":
        vids = {v: labelmap.id_of(v) for v in L.PANCREATIC_VESSELS if labelmap.id_of(v) is not None}
        if vids:
            from volvqa.findings.vessels import contact_angles
            les.vessel_contact = contact_angles(lab, gsl, m, vids, sp)
    if L.LESION_ORGAN[name] == "lung":
        les.density = K.lung_density(les.hu_mean)
        les.attenuation = "n/a"   # against aerated lung, hypo/iso/hyper says nothing
        les.location = lung_lobe(touch_counts, labelmap)
    return les


def _finish_organs(c: _Case, lesion_masks: list) -> None:
    """Centroids, boxes in mm, extents, border contact and (kidneys) lengths, lesions included."""
    shape = c.lab.shape
    for name, o in c.organs.items():
        o.centroid_mm = _world(c.aff, c.idx_sums[name] / o.voxels)
        o.bbox_mm = _bbox_mm(c.aff, o.bbox_voxel)
        o.extent_mm = [o.bbox_mm[i + 3] - o.bbox_mm[i] for i in range(3)]
        o.touches_border = _touches_border(o.bbox_voxel, shape)
        if name in LENGTH_ORGANS:
            o.length_mm = max_diameter_3d(_whole_organ_mask(c.lab, c.labelmap, o, lesion_masks), c.sp)


def _locate_lesions(c: _Case, lesion_masks: list, iso_std_fraction: float) -> None:
    """Each lesion's location (segment, part, lobe or side and third) and attenuation against its organ."""
    lungs = None
    for les, gsl, m in lesion_masks:
        if les.organ == "lung":
            if "lobe" not in les.location:
                lungs = lung_field(c.volume, c.labelmap) if lungs is None else lungs
                les.location = lung_side_third(les, lungs, c.aff)
            continue
        les.location = _location(les, gsl, m, c.lab, c.labelmap, c.organs, c.organ_ids, c.aff)
        o = c.organs.get(les.organ)
        if o is not None:
            les.hu_difference = les.hu_mean - o.hu_mean
            thr = iso_std_fraction * o.hu_std
            les.attenuation = "iso" if abs(les.hu_difference) < thr else \
                ("hypo" if les.hu_difference < 0 else "hyper")


def _whole_organ_mask(lab, labelmap: LabelMap, o: OrganFindings, lesion_masks) -> np.ndarray:
    """The organ's label plus its own lesions' voxels, inside its box."""
    b = o.bbox_voxel
    sl = tuple(slice(b[i], b[i + 3] + 1) for i in range(3))
    own = lab[sl] == labelmap.id_of(o.name)
    for les, gsl, m in lesion_masks:
        if les.lesion_id in o.lesion_ids:
            lsl = tuple(slice(g.start - b[i], g.stop - b[i]) for i, g in enumerate(gsl))
            own[lsl] |= m
    return own


def _owning_organ(lesion_label, touch_counts, labelmap, organs, cen_idx, aff, shape) -> str:
    parent = L.LESION_ORGAN[lesion_label]
    if parent != "kidney":
        return parent
    # Kidney lesions: the side whose kidney it touches most, else the nearer kidney.
    best, n_best = None, 0
    for side in ("kidney_left", "kidney_right"):
        kid = labelmap.id_of(side)
        if kid is not None and touch_counts[kid] > n_best:
            best, n_best = side, int(touch_counts[kid])
    if best:
        return best
    x = _world(aff, cen_idx)[0]
    cands = [(abs(organs[s].centroid_mm[0] - x) if organs[s].centroid_mm else
              abs(_world(aff, [(organs[s].bbox_voxel[0] + organs[s].bbox_voxel[3]) / 2, 0, 0])[0] - x), s)
             for s in ("kidney_left", "kidney_right") if s in organs]
    if cands:
        return min(cands)[1]
    mid_x = _world(aff, (np.array(shape) - 1) / 2)[0]
    return "kidney_left" if x < mid_x else "kidney_right"


def _location(les: LesionFindings, gsl, m, lab, labelmap: LabelMap, organs, organ_ids, aff) -> dict:
    loc: dict = {}
    organ = les.organ
    if organ == "liver":
        shares = _part_shares(labelmap, gsl, m, prefix="liver_segment_")
        if shares:
            segs = [int(n.rsplit("_", 1)[1]) for n, f in shares if f > PART_SHARE]
            loc["segments"] = sorted(segs)
            loc["segment_shares"] = {n.rsplit("_", 1)[1]: round(f, 4) for n, f in shares}
            loc["method"] = "masks"
    elif organ == "pancreas":
        shares = _part_shares(labelmap, gsl, m, prefix="pancreas_")
        if shares:
            loc["part"] = shares[0][0].split("_", 1)[1]
            loc["parts"] = [n.split("_", 1)[1] for n, f in shares if f > PART_SHARE]
            loc["method"] = "masks"
        elif "pancreas" in organs:
            loc["part"] = _pancreas_part_by_axis(lab, labelmap, organs["pancreas"], les, aff)
            loc["method"] = "principal_axis"
    elif organ in ("kidney_left", "kidney_right"):
        loc["side"] = organ.split("_")[1]
        o = organs.get(organ)
        if o is not None:
            z0, z1 = o.bbox_mm[2], o.bbox_mm[5]
            t = (les.centroid_mm[2] - z0) / max(z1 - z0, 1e-6)
            loc["pole"] = "upper" if t > 2 / 3 else ("lower" if t < 1 / 3 else "interpolar")
    return loc


def _part_shares(labelmap: LabelMap, gsl, m, prefix: str) -> list[tuple[str, float]]:
    if labelmap.parts is None:
        return []
    vals = labelmap.parts[gsl][m]
    counts = np.bincount(vals, minlength=32)
    out = [(labelmap.part_labels[i], counts[i] / m.sum()) for i in np.nonzero(counts)[0]
           if i != 0 and labelmap.part_labels.get(int(i), "").startswith(prefix)]
    return sorted(out, key=lambda t: (-t[1], t[0]))


def _pancreas_part_by_axis(lab, labelmap, pancreas: OrganFindings, les: LesionFindings, aff) -> str:
    """Head / body / tail by thirds along the pancreas's first principal axis.

    An approximation for when no part masks exist: the axis (in world mm)
    is oriented so that the head lies toward the patient's right (larger RAS
    x); the lesion centroid's position along it from head (0) to tail (1)
    picks the third.
    """
    b = pancreas.bbox_voxel
    sl = tuple(slice(b[i], b[i + 3] + 1) for i in range(3))
    ids = [labelmap.id_of("pancreas")] + [i for i, n in labelmap.labels.items() if L.LESION_ORGAN.get(n) == "pancreas"]
    idx = np.argwhere(np.isin(lab[sl], ids)).astype(float) + np.array([b[0], b[1], b[2]], float)
    pts = idx @ aff[:3, :3].T + aff[:3, 3]
    mean = pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts - mean, full_matrices=False)
    axis = vt[0] if vt[0][0] < 0 else -vt[0]  # from head (right, +x) toward tail (left)
    proj = (pts - mean) @ axis
    t = (float((np.asarray(les.centroid_mm) - mean) @ axis) - proj.min()) / max(proj.max() - proj.min(), 1e-6)
    return "head" if t < 1 / 3 else ("body" if t < 2 / 3 else "tail")


def _caudate_ratio(labelmap: LabelMap, aff, sp) -> dict | None:
    """Caudate-to-right-lobe ratio from Couinaud masks (Harbin 1980, by widths):
    on the axial slice where segment 1 is largest, the transverse (x) extent of
    segment 1 over that of the right lobe (segments 5-8); with the segments'
    volumes for reference. None without the liver's segments."""
    if labelmap.parts is None:
        return None
    ids = {n: i for i, n in labelmap.part_labels.items()}
    if "liver_segment_1" not in ids or not any(f"liver_segment_{k}" in ids for k in (5, 6, 7, 8)):
        return None
    parts = labelmap.parts
    box = ndimage.find_objects((parts == ids["liver_segment_1"]).astype(np.uint8))[0]
    caud = parts[:, :, box[2]] == ids["liver_segment_1"]
    z_local = int(np.argmax(caud.sum(axis=(0, 1))))
    z = box[2].start + z_local
    plane = parts[:, :, z]
    right = np.isin(plane, [ids[f"liver_segment_{k}"] for k in (5, 6, 7, 8) if f"liver_segment_{k}" in ids])
    c_cols = np.nonzero((plane == ids["liver_segment_1"]).any(axis=1))[0]
    r_cols = np.nonzero(right.any(axis=1))[0]
    if not len(c_cols) or not len(r_cols):
        return None
    cw = (c_cols.max() - c_cols.min() + 1) * sp[0]
    rw = (r_cols.max() - r_cols.min() + 1) * sp[0]
    counts = np.bincount(parts.ravel(), minlength=32)
    vox_ml = float(np.prod(sp)) / 1000.0
    vols = {str(k): float(counts[ids[f"liver_segment_{k}"]] * vox_ml) for k in range(1, 9)
            if f"liver_segment_{k}" in ids}
    return {"slice": z, "caudate_width_mm": float(cw), "right_lobe_width_mm": float(rw), "ratio": float(cw / rw),
            "segment_volumes_ml": vols, "method": "Harbin 1980 transverse widths on the caudate's largest slice"}
