"""Lesion synthesis: insert lesions with known truth into a CT and its label map.

Works on a phantom or on a real CT with organ masks. Each lesion is a
smoothly deformed, randomly rotated ellipsoid grown to an exact voxel count
inside the organ's parenchyma (a margin from the organ's edge and a gap to
other lesions), so it stays inside its organ, does not touch another lesion
and has the requested volume to the voxel. Intensity: the organ's
low-frequency image is replaced by the requested mean plus an internal
texture, while the scan's own high-frequency noise is kept (no flat pasted
blobs); a blurred margin blends lesion and organ over ``blur_mm`` with the
label boundary at the 50% point. The mean over the lesion's labelled voxels
is solved for exactly, so it equals the request up to int16 rounding.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from volvqa import labels as L
from volvqa.arrays import label_counts
from volvqa.errors import VolvqaInputError
from volvqa.records import LabelMap, Volume
from volvqa.synth.shapes import smooth_noise

#: (organ family, kind) -> canonical lesion label.
LESION_LABELS = {
    ("liver", "tumor"): "liver_tumor", ("liver", "cyst"): "liver_cyst",
    ("kidney", "tumor"): "kidney_tumor", ("kidney", "cyst"): "kidney_cyst",
    ("pancreas", "tumor"): "pancreatic_pdac", ("pancreas", "cyst"): "pancreatic_cyst",
    ("spleen", "tumor"): "spleen_lesion", ("spleen", "cyst"): "spleen_lesion",
    ("colon", "tumor"): "colon_lesion",
}
#: Distance kept between a lesion and its organ's edge, and between lesions (mm).
EDGE_MARGIN_MM = 2.0
LESION_GAP_VOXELS = 2
#: Scale (voxels) that separates the scan's noise, kept, from the organ's low-frequency image, replaced.
NOISE_SIGMA_VOXELS = 1.5
ISO_STD_FRACTION = 0.1  # same rule as findings


class LesionDoesNotFit(VolvqaInputError):
    pass


@dataclass
class LesionRequest:
    organ: str                       # liver | kidney | kidney_left | kidney_right | pancreas | spleen | colon
    kind: str = "tumor"              # tumor | cyst
    diameter_mm: float | None = None  # equivalent-sphere diameter
    volume_ml: float | None = None
    hu: float | None = None          # absolute mean HU ...
    hu_delta: float | None = None    # ... or relative to the organ's parenchyma mean
    texture_std: float = 6.0         # internal heterogeneity (HU), on top of the scan's noise
    margin: str = "sharp"            # sharp | blurred
    blur_mm: float = 2.0
    irregularity: float = 0.15       # amplitude of the smooth radial deformation
    elongation: float = 1.3          # largest / smallest axis
    location: dict = field(default_factory=dict)  # {segment: 7} | {part: head} | {pole: upper}
    count: int = 1
    label: str | None = None         # a canonical lesion class of the organ's family (e.g. pancreatic_pnet)

    @classmethod
    def from_dict(cls, d: dict) -> LesionRequest:
        known = set(cls.__dataclass_fields__)
        bad = set(d) - known
        if bad:
            raise VolvqaInputError(None, f"unknown lesion request keys: {sorted(bad)}")
        r = cls(**d)
        if r.kind not in ("tumor", "cyst"):
            raise VolvqaInputError(None, f"lesion kind must be tumor or cyst, got {r.kind!r}")
        if (r.diameter_mm is None) == (r.volume_ml is None):
            raise VolvqaInputError(None, "give exactly one of diameter_mm and volume_ml")
        if r.margin not in ("sharp", "blurred"):
            raise VolvqaInputError(None, f"margin must be sharp or blurred, got {r.margin!r}")
        if r.label is not None and L.LESION_ORGAN.get(r.label) != r.family():
            raise VolvqaInputError(None, f"label {r.label!r} is not a lesion class of the {r.family()}")
        return r

    def target_volume_ml(self) -> float:
        if self.volume_ml is not None:
            return float(self.volume_ml)
        return float(np.pi / 6 * self.diameter_mm ** 3 / 1000.0)

    def family(self) -> str:
        return "kidney" if self.organ.startswith("kidney") else self.organ


def _organ_choices(req: LesionRequest, labelmap: LabelMap) -> list[str]:
    if req.organ == "kidney":
        return [s for s in ("kidney_left", "kidney_right") if labelmap.id_of(s) is not None]
    return [req.organ] if labelmap.id_of(req.organ) is not None else []


def _random_rotation(rng) -> np.ndarray:
    return Rotation.random(random_state=rng).as_matrix()


def insert_lesions(volume: Volume, labelmap: LabelMap, requests: list[LesionRequest], *, seed: int = 0
                   ) -> tuple[Volume, LabelMap, list[dict]]:
    """Insert the requested lesions; returns new records and one truth dict per lesion."""
    rng = np.random.default_rng(seed)
    hu = volume.array.astype(np.float32)
    lab = labelmap.array.copy()
    labels = dict(labelmap.labels)
    truth = []
    for req in requests:
        for _ in range(int(req.count)):
            organs = _organ_choices(req, LabelMap(lab, labels, labelmap.affine))
            if not organs:
                raise LesionDoesNotFit(volume.source.path, f"no {req.organ} mask to put a lesion in")
            organ = organs[int(rng.integers(len(organs)))]
            t = _insert_one(hu, lab, labels, labelmap, volume, req, organ, rng)
            t["lesion_index"] = len(truth) + 1
            truth.append(t)
    out_v = Volume(np.clip(np.rint(hu), -32768, 32767).astype(np.int16), volume.affine.copy(), volume.spacing_mm,
                   volume.source, dict(volume.meta, synthetic_lesions=len(truth)))
    counts = label_counts(lab)
    out_l = LabelMap(lab, {i: n for i, n in sorted(labels.items()) if counts[i]}, labelmap.affine.copy(),
                     parts=None if labelmap.parts is None else labelmap.parts.copy(),
                     part_labels=dict(labelmap.part_labels), meta=dict(labelmap.meta),
                     annotates=None if labelmap.annotates is None else
                     labelmap.annotates | {t["label"] for t in truth})
    return out_v, out_l, truth


@dataclass
class _Placement:
    """Where one lesion goes: its organ's box (2 voxels padded) and free organ voxels there, the chosen
    centre (voxel), and its size."""
    box: tuple[slice, ...]
    organ_m: np.ndarray
    centre: np.ndarray
    volume_ml: float
    n_voxels: int
    r_mm: float
    stretch: float
    blur_mm: float


def _insert_one(hu, lab, labels, labelmap: LabelMap, volume: Volume, req: LesionRequest, organ: str, rng) -> dict:
    sp = np.asarray(volume.spacing_mm, float)
    voxel_ml = float(sp.prod()) / 1000.0
    oid = L.CANONICAL_IDS[organ]
    lesion_label = req.label or LESION_LABELS[(req.family(), req.kind)]
    lid = L.CANONICAL_IDS[lesion_label]
    labels[lid] = lesion_label
    pl = _place(lab, labels, labelmap, volume, req, organ, rng, sp, voxel_ml)
    sbox, mask, w = _grow_shape(pl, lab.shape, req, organ, volume, rng, sp)
    target, organ_mean, organ_std = _paint_lesion(hu, lab[pl.box] == oid, pl.box, sbox, mask, w, req, rng)
    lab[sbox][mask] = lid

    final = hu[sbox][mask]
    core = mask & (w > 0.99)
    cen = np.argwhere(mask).mean(axis=0) + np.array([s.start for s in sbox])
    aff = volume.affine
    delta = target - organ_mean
    att = "iso" if abs(delta) < ISO_STD_FRACTION * organ_std else ("hypo" if delta < 0 else "hyper")
    return {
        "organ": organ, "label": lesion_label, "kind": req.kind,
        "request": {k: v for k, v in asdict(req).items() if k != "count"},
        "center_voxel": pl.centre.tolist(), "centroid_voxel": cen.tolist(),
        "centroid_mm": (aff[:3, :3] @ cen + aff[:3, 3]).tolist(),
        "voxels": int(mask.sum()), "volume_ml": float(mask.sum() * voxel_ml),
        "target_volume_ml": pl.volume_ml, "target_hu": target, "hu_mean": float(final.mean()),
        "hu_std_core": float(hu[sbox][core].std()) if core.any() else None,
        "organ_hu_mean": organ_mean, "organ_hu_std": organ_std, "attenuation": att,
        "location": dict(req.location),
    }


def _place(lab, labels, labelmap: LabelMap, volume: Volume, req: LesionRequest, organ: str, rng, sp,
           voxel_ml: float) -> _Placement:
    """A centre deep enough in the organ (and away from its other lesions) for the lesion to fit."""
    oid = L.CANONICAL_IDS[organ]
    box = ndimage.find_objects((lab == oid).astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 2, 0), min(s.stop + 2, n)) for s, n in zip(box, lab.shape, strict=False))
    sub_lab = lab[box]
    organ_m = sub_lab == oid
    lesions_here = np.isin(sub_lab, [i for i, n in labels.items() if L.is_lesion(n)])
    if lesions_here.any():
        organ_m &= ~ndimage.binary_dilation(lesions_here, iterations=LESION_GAP_VOXELS)
    vol_ml = req.target_volume_ml()
    n_target = max(int(round(vol_ml / voxel_ml)), 1)
    r_mm = (3 * vol_ml * 1000 / (4 * np.pi)) ** (1 / 3)
    stretch = req.elongation ** (2 / 3) * (1 + req.irregularity)
    blur = req.blur_mm if req.margin == "blurred" else 0.0
    need = r_mm * stretch + blur / 2 + EDGE_MARGIN_MM
    edt = ndimage.distance_transform_edt(organ_m, sampling=sp)
    cand = edt >= need
    cand &= _location_mask(req, box, organ_m, labelmap, organ, volume, lab, r_mm)
    if not cand.any():
        raise LesionDoesNotFit(volume.source.path, f"a {req.kind} of {vol_ml:.2f} ml ({2 * r_mm:.1f} mm) "
                               f"does not fit in {organ}{' at ' + str(req.location) if req.location else ''}: "
                               f"the deepest point is {edt.max():.1f} mm from the edge, {need:.1f} mm needed")
    idx = np.argwhere(cand)
    c_local = idx[int(rng.integers(len(idx)))]
    c = c_local + np.array([s.start for s in box])
    return _Placement(box, organ_m, c, vol_ml, n_target, r_mm, stretch, blur)


def _grow_shape(pl: _Placement, vol_shape, req: LesionRequest, organ: str, volume: Volume, rng, sp
                ) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """A deformed, rotated ellipsoid (mm) of exactly ``n_voxels`` organ voxels around the centre; returns
    its box, mask and weights (1 inside; a ramp across a blurred margin, 0.5 at the label's edge)."""
    c, box, organ_m, r_mm, blur = pl.centre, pl.box, pl.organ_m, pl.r_mm, pl.blur_mm
    n_target = pl.n_voxels
    half = np.ceil((r_mm * pl.stretch * 1.6 + blur * 2 + 4) / sp).astype(int)
    sbox = tuple(slice(max(c[i] - half[i], 0), min(c[i] + half[i] + 1, vol_shape[i])) for i in range(3))
    axes = np.exp(rng.uniform(0, np.log(max(req.elongation, 1.0)), 3))
    axes /= axes.prod() ** (1 / 3)
    R = _random_rotation(rng)
    shape = tuple(s.stop - s.start for s in sbox)
    wobble = smooth_noise(rng, shape, waves=8, max_cycles=2.0) if req.irregularity else None
    allowed = np.zeros(shape, bool)
    lo = [sbox[i].start - box[i].start for i in range(3)]
    inter = tuple(slice(max(lo[i], 0), min(lo[i] + shape[i], organ_m.shape[i])) for i in range(3))
    dest = tuple(slice(inter[i].start - lo[i], inter[i].stop - lo[i]) for i in range(3))
    allowed[dest] = organ_m[inter]
    # Grow the shape to exactly n_target voxels; the deformation moves its
    # centroid, so shift the shape back onto the chosen centre (twice).
    shift = np.zeros(3)
    for _ in range(3):
        grids = np.meshgrid(*[(np.arange(s.start, s.stop) - c[i] - shift[i]) * sp[i] for i, s in enumerate(sbox)],
                            indexing="ij", sparse=True)
        q = [sum(R[k, j] * grids[j] for j in range(3)) / axes[k] for k in range(3)]
        f = (q[0] ** 2 + q[1] ** 2 + q[2] ** 2) / r_mm ** 2
        if wobble is not None:
            f = f / (1.0 + req.irregularity * wobble) ** 2
        flat = np.where(allowed, f, np.inf).ravel()
        if n_target > np.isfinite(flat).sum():
            raise LesionDoesNotFit(volume.source.path, f"not enough room in {organ} for {n_target} voxels")
        order = np.argpartition(flat, n_target - 1)[:n_target]
        f_t = float(flat[order].max())
        mask = np.zeros(flat.size, bool)
        mask[order] = True
        mask = mask.reshape(shape)
        off = np.argwhere(mask).mean(axis=0) + np.array([s.start for s in sbox]) - c
        if np.linalg.norm(off) < 0.5:
            break
        shift -= off
    if blur > 0:
        s = np.sqrt(np.maximum(f, 0) / max(f_t, 1e-9))
        w = 1.0 / (1.0 + np.exp((s - 1.0) * r_mm / (blur / 4.0)))
        w = np.where(mask, np.maximum(w, 0.5), np.minimum(w, 0.5)) * allowed
    else:
        w = mask.astype(np.float32)
    return sbox, mask, w


def _paint_lesion(hu, organ_in_box: np.ndarray, box, sbox, mask, w, req: LesionRequest, rng
                  ) -> tuple[float, float, float]:
    """Blend the lesion's level and texture into ``hu`` keeping the scan's own noise; returns its target
    HU and the organ's mean and std (HU)."""
    shape = mask.shape
    sub_hu = hu[sbox]
    organ_vals = hu[box][organ_in_box]  # the organ's box holds all of it: no full-volume mask
    organ_mean = float(organ_vals.mean())
    organ_std = float(organ_vals.std())
    residual = sub_hu - ndimage.gaussian_filter(sub_hu, NOISE_SIGMA_VOXELS, mode="nearest")
    tex = rng.normal(0.0, 1.0, size=shape).astype(np.float32)
    tex = ndimage.gaussian_filter(tex, 1.0)
    tex *= req.texture_std / max(float(tex.std()), 1e-6)
    if req.hu is not None:
        target = float(req.hu)
    else:
        target = organ_mean + float(req.hu_delta if req.hu_delta is not None else
                                    (-35.0 if req.kind == "tumor" else 0.0))
        if req.hu_delta is None and req.kind == "cyst":
            target = 5.0
    wm = w[mask]
    a = float(((1 - wm) * sub_hu[mask] + wm * (tex[mask] + residual[mask])).mean())
    level = (target - a) / float(wm.mean())
    hu[sbox] = (1 - w) * sub_hu + w * (level + tex + residual)
    return target, organ_mean, organ_std


def _location_mask(req: LesionRequest, box, organ_m, labelmap: LabelMap, organ: str, volume: Volume, lab,
                   r_mm: float) -> np.ndarray:
    """Where the lesion's centre may go for the requested location.

    For a sub-segment the centre lies deep enough inside it (0.75 of the
    lesion's radius for a pancreas part, 0.3 for a Couinaud segment) that the
    lesion's main share, or more than the 10% that names a segment, is there.
    """
    loc = req.location or {}
    if not loc:
        return np.ones_like(organ_m)
    if "segment" in loc or "part" in loc:
        name = f"liver_segment_{int(loc['segment'])}" if "segment" in loc else f"pancreas_{loc['part']}"
        if labelmap.parts is not None and L.PART_IDS[name] in labelmap.part_labels:
            region = labelmap.parts[box] == L.PART_IDS[name]
            depth = ndimage.distance_transform_edt(region, sampling=volume.spacing_mm)
            return depth >= (0.75 if "part" in loc else 0.3) * r_mm
        if "part" in loc and organ == "pancreas":
            return _pancreas_third(loc["part"], box, organ_m, volume)
        raise LesionDoesNotFit(volume.source.path, f"location {loc} needs a {name} mask")
    if "pole" in loc:
        zs = np.nonzero((lab == L.CANONICAL_IDS[organ]).any(axis=(0, 1)))[0]
        z0, z1 = zs.min(), zs.max()
        band = {"lower": (0.0, 1 / 3), "interpolar": (1 / 3, 2 / 3), "upper": (2 / 3, 1.0)}[loc["pole"]]
        lo = z0 + (band[0] + 0.06) * (z1 - z0)
        hi = z0 + (band[1] - 0.06) * (z1 - z0)
        z = np.arange(box[2].start, box[2].stop)
        return np.broadcast_to(((z >= lo) & (z <= hi))[None, None, :], organ_m.shape).copy()
    raise LesionDoesNotFit(volume.source.path, f"unknown location {loc}")


def _pancreas_third(part: str, box, organ_m, volume: Volume) -> np.ndarray:
    """Head/body/tail thirds along the pancreas's principal axis (as findings approximates them)."""
    idx = np.argwhere(organ_m).astype(float) + np.array([s.start for s in box])
    aff = volume.affine
    pts = idx @ aff[:3, :3].T + aff[:3, 3]
    mean = pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts - mean, full_matrices=False)
    axis = vt[0] if vt[0][0] < 0 else -vt[0]
    proj = (pts - mean) @ axis
    t = (proj - proj.min()) / max(proj.max() - proj.min(), 1e-6)
    lo, hi = {"head": (0.0, 1 / 3), "body": (1 / 3, 2 / 3), "tail": (2 / 3, 1.0)}[part]
    keep = (t >= lo + 0.05) & (t <= hi - 0.05)
    out = np.zeros_like(organ_m)
    loc = (idx[keep] - np.array([s.start for s in box])).astype(int)
    out[tuple(loc.T)] = True
    return out
