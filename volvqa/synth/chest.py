"""Procedural chest CT phantoms with lung nodules of known size and density.

A thorax on a canonical RAS grid (default 224 x 176 x 96 voxels at
1.5 x 1.5 x 3 mm): body wall (skin, fat, muscle), thoracic spine (T1-T12
with the cord), ribs 1-12 on both sides, sternum, two lungs (aerated
parenchyma at about -860 HU with a faint vessel tree) split into
TotalSegmentator's five lobes, trachea and main bronchi, heart and aorta
(ascending, arch, descending).

Lobes (approximate fissure planes in each lung's own box): the oblique
fissure runs from posterior-superior to anterior-inferior (the lower lobe
lies below and behind it); on the right, the horizontal fissure at the
hilum's height separates the middle lobe (anterior, below it) from the
upper lobe.

Nodules are painted after the image blur, with sharp edges, so that their
mean HU is what was asked for: solid 20-45 HU, ground-glass -700 to -640
HU, part-solid a ground-glass shell (-650 HU) around a solid core (30 HU)
of 55-65% of the diameter (mean about -460 HU); these fall inside the
density bands of ``volvqa.knowledge`` (rule ``lung_nodule_density``).
Sizes (equivalent-sphere diameters) are drawn across the Fleischner,
Lung-RADS and T-category thresholds; masses above 30 mm are labelled
``lung_tumor``. Attenuation of the other tissues: as the abdominal
phantom (``volvqa.synth.phantom``); aerated lung -860 HU (Lamba et al.
report abdominal tissues; lung parenchyma of healthy adults averages about
-850 to -870 HU at full inspiration: Hoffman EA et al., Acad Radiol 2006;13:
1014-1024).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from volvqa import labels as L
from volvqa.synth.phantom import HU, Phantom
from volvqa.synth.shapes import Grid, Painter, ellipsoid, tube

LUNG_HU = -860.0
SOLID_HU = (20.0, 45.0)
GGN_HU = (-700.0, -640.0)
PART_SOLID_SHELL_HU = -650.0
PART_SOLID_CORE_HU = 30.0
PART_SOLID_CORE_FRACTION = (0.55, 0.65)     # core diameter / nodule diameter
CHEST_SHAPE = (224, 176, 96)
CHEST_SPACING = (1.5, 1.5, 3.0)
#: What a chest phantom delineates (its annotation scope).
CHEST_ORGANS = (*L.LUNG_LOBES, "trachea", "heart", "aorta", "spinal_cord", "sternum",
                *(f"vertebrae_T{k}" for k in range(1, 13)),
                *(f"rib_{side}_{k}" for side in ("left", "right") for k in range(1, 13)))
CHEST_ANNOTATES = frozenset(CHEST_ORGANS) | {"lung_nodule", "lung_tumor"}


@dataclass
class NoduleSpec:
    lobe: str                       # one of volvqa.labels.LUNG_LOBES
    diameter_mm: float              # equivalent-sphere diameter
    density: str = "solid"          # solid | part-solid | ground-glass
    label: str = "lung_nodule"      # lung_nodule | lung_tumor


@dataclass
class ChestConfig:
    seed: int = 0
    shape: tuple[int, int, int] = CHEST_SHAPE
    spacing_mm: tuple[float, float, float] = CHEST_SPACING
    nodules: list[NoduleSpec] = field(default_factory=list)
    noise_std_hu: float = 12.0


def random_nodules(rng: np.random.Generator) -> list[NoduleSpec]:
    """0-5 nodules (sizes across 5-28 mm, log-uniform) and, in one case in four, a 12-80 mm tumour."""
    out = []
    for _ in range(int(rng.choice(6, p=[0.12, 0.3, 0.25, 0.15, 0.1, 0.08]))):
        d = float(np.exp(rng.uniform(np.log(5.0), np.log(28.0))))
        dens = str(rng.choice(["solid", "part-solid", "ground-glass"], p=[0.6, 0.2, 0.2])) if d >= 7 else "solid"
        out.append(NoduleSpec(str(rng.choice(L.LUNG_LOBES)), round(d, 1), dens))
    if rng.random() < 0.25:
        out.append(NoduleSpec(str(rng.choice(L.LUNG_LOBES)), round(float(rng.uniform(12, 80)), 1), "solid",
                              "lung_tumor"))
    return out


def generate_chest(cfg: ChestConfig) -> Phantom:
    rng = np.random.default_rng(cfg.seed)
    sx, sy, sz = cfg.spacing_mm
    nx, ny, nz = cfg.shape
    origin = (-(nx - 1) * sx / 2, -(ny - 1) * sy / 2, -(nz - 1) * sz / 2)
    grid = Grid(tuple(cfg.shape), tuple(cfg.spacing_mm), origin)
    P = Painter(grid)
    truth: dict = {"config": {k: v for k, v in asdict(cfg).items() if k != "nodules"}, "kind": "chest"}
    # Anchors (mm) the steps place for the later ones; the steps draw from one stream in a fixed order.
    geo = {"z_top": origin[2] + (nz - 1) * sz, "z_bot": origin[2]}
    _paint_thoracic_wall(P, grid, rng, geo)
    airway = _paint_mediastinum(P, grid, rng, geo)
    _paint_lungs(P, grid, rng, geo, airway)
    _paint_thoracic_ribs(P, grid, geo)

    hu = ndimage.gaussian_filter(P.hu, sigma=(0.6, 0.6, 0.35), mode="nearest")
    nods = cfg.nodules
    truth["nodules"] = _paint_nodules(grid, P.lab, hu, nods, rng)
    noise = rng.normal(0.0, 1.0, size=cfg.shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=(0.7, 0.7, 0.4), mode="wrap")
    noise *= cfg.noise_std_hu / float(noise.std())
    hu += np.where(P.body, noise, noise * 0.3)
    ct = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    counts = np.bincount(P.lab.ravel(), minlength=256)
    vox_ml = sx * sy * sz / 1000.0
    truth["labels"] = {L.CANONICAL_NAMES[i]: {"voxels": int(counts[i]), "volume_ml": counts[i] * vox_ml}
                       for i in np.nonzero(counts)[0] if i}
    return Phantom(ct=ct, labels=P.lab, parts=None, affine=grid.affine, truth=truth)


def _paint_thoracic_wall(P: Painter, grid: Grid, rng, geo: dict) -> None:
    """Body wall (an ellipse per slice, wider at the bottom: fat, then muscle), spine T1-T12 with the
    cord in its canal, sternum."""
    u, shape = rng.uniform, grid.shape
    z_top, z_bot = geo["z_top"], geo["z_bot"]
    a_body, b_body = u(145, 160), u(100, 115)
    x, y, z = grid.coords(tuple(slice(0, n) for n in shape))
    zn = (z - z_bot) / max(z_top - z_bot, 1)
    a_z, b_z = a_body * (0.9 + 0.1 * zn), b_body * (0.92 + 0.08 * zn)
    y_c = -5.0
    rr = np.sqrt((x / a_z) ** 2 + ((y - y_c) / b_z) ** 2)
    P.body = np.broadcast_to(rr <= 1.0, shape).copy()
    P.hu[P.body] = HU["fat"]
    depth = (1.0 - rr) * (a_body + b_body) / 2
    fat_mm, muscle_mm = u(8, 20), u(10, 16)
    P.hu[P.body & (depth < 2.5)] = HU["skin"]
    wall = P.body & (depth >= fat_mm) & (depth < fat_mm + muscle_mm)
    P.hu[wall] = HU["muscle"]
    cav_a, cav_b = a_body - fat_mm - muscle_mm - 6, b_body - fat_mm - muscle_mm - 6   # thoracic cavity

    spine_y = y_c - b_body + fat_mm + muscle_mm + 38.0
    vb_r = u(13, 16)
    level = (z_top - z_bot + 30) / 12
    for k in range(1, 13):
        z1 = z_top + 10 - (k - 1) * level
        z0 = z1 - level + 5
        for box, m, _, _ in tube(grid, [(0, spine_y, z0), (0, spine_y, z1)], vb_r, flat_ends=True):
            bx, by, _bz = grid.coords(box)
            rin = np.sqrt(bx ** 2 + (by - spine_y) ** 2)
            P.paint(box, m, f"vertebrae_T{k}", np.where(rin > vb_r - 2.5, HU["cortical_bone"], HU["cancellous_bone"]))
    canal_y = spine_y - vb_r - 8
    for box, m, _, _ in tube(grid, [(0, canal_y, z_bot - 5), (0, canal_y, z_top + 5)], 4.5):
        P.paint(box, m, "spinal_cord", HU["cord"])
    for box, m, _, _ in tube(grid, [(0, canal_y, z_bot - 5), (0, canal_y, z_top + 5)], 7.5):
        P.paint(box, m, None, HU["csf"], label=False)

    st_y = y_c + b_body - fat_mm - muscle_mm + 2      # sternum, anterior midline
    for box, m, _, _ in tube(grid, [(0, st_y, z_top - 10), (0, st_y - 5, z_bot + 40)], 7.0):
        P.paint(box, m, "sternum", HU["cortical_bone"] - 300)
    geo.update(y_c=y_c, cav_a=cav_a, cav_b=cav_b, spine_y=spine_y, vb_r=vb_r, level=level)


def _paint_mediastinum(P: Painter, grid: Grid, rng, geo: dict) -> np.ndarray:
    """Heart (anterior, left of midline), aorta (ascending, arch, descending left of the spine), trachea
    to the carina and main bronchi to each hilum (air inside a thin wall); returns the airway mask."""
    u = rng.uniform
    z_top, z_bot, y_c, spine_y, vb_r = geo["z_top"], geo["z_bot"], geo["y_c"], geo["spine_y"], geo["vb_r"]
    hz = z_bot + (z_top - z_bot) * u(0.22, 0.32)
    heart_c = (-u(15, 30), y_c + u(15, 30), hz)
    heart_ax = (u(50, 60), u(45, 52), u(50, 60))
    box, f = ellipsoid(grid, heart_c, heart_ax, rotation_z_deg=float(u(20, 40)))
    P.paint(box, f <= 1, "heart", HU["blood"])
    arch_z = z_top - u(25, 40)
    aorta_r = u(11, 14)
    desc = (-u(18, 26), spine_y + vb_r + aorta_r)
    path = [(heart_c[0] + 20, heart_c[1] + 5, hz + 30), (10, y_c + 20, arch_z - 15), (-5, y_c + 5, arch_z),
            (desc[0], desc[1] + 10, arch_z - 10), (desc[0], desc[1], z_bot - 5)]
    for box, m, _, _ in tube(grid, path, aorta_r):
        P.paint(box, m, "aorta", HU["blood"])

    carina_z = arch_z - u(10, 20)
    tr_y = spine_y + vb_r + 22
    hila = {"left": (-55.0, tr_y - 8, carina_z - 25), "right": (50.0, tr_y - 6, carina_z - 18)}
    airway = np.zeros(grid.shape, bool)
    for box, m, _, inner in tube(grid, [(0, tr_y, z_top + 5), (0, tr_y, carina_z)], 9.0, inner_mm=2.0):
        P.paint(box, m, "trachea", np.where(inner, HU["air"], HU["muscle"]))
        airway[box] |= m
    for side in ("left", "right"):
        for box, m, _, inner in tube(grid, [(0, tr_y, carina_z), hila[side]], 6.0, inner_mm=1.5):
            P.paint(box, m, None, np.where(inner, HU["air"], HU["muscle"]), label=False)
            airway[box] |= m
    geo["hila"] = hila
    return airway


def _paint_lungs(P: Painter, grid: Grid, rng, geo: dict, airway: np.ndarray) -> None:
    """The cavity minus the mediastinum and everything already painted, split at the midline, above a
    domed diaphragm (higher on the right); lobes split at oblique (and the right horizontal) fissures;
    a vessel tree from each hilum."""
    u, shape = rng.uniform, grid.shape
    z_top, z_bot, y_c, cav_a, cav_b = geo["z_top"], geo["z_bot"], geo["y_c"], geo["cav_a"], geo["cav_b"]
    origin, (_sx, sy, sz) = grid.origin_mm, grid.spacing_mm
    x, y, z = grid.coords(tuple(slice(0, n) for n in shape))
    lungs = {}
    apex = z_top - u(2, 10)
    taper = np.clip(0.3 + (apex - z) / 80.0, 0.0, 1.0) ** 0.5     # the lungs narrow to their apices
    for side, sgn in (("left", -1), ("right", 1)):
        dome = z_bot + (z_top - z_bot) * (0.12 if side == "right" else 0.06)
        cx = sgn * cav_a * 0.5
        inside = (((x - cx) / (cav_a * 0.5)) ** 2 + ((y - y_c) / cav_b) ** 2 <= taper ** 2) \
            & (z > dome + 30 * (((x - cx) / (cav_a * 0.5)) ** 2)) & (z < apex) & (sgn * x > 12)
        lungs[side] = np.broadcast_to(inside, shape) & (P.lab == 0) & ~airway
    for side, m in lungs.items():
        idx = np.argwhere(m)
        lo, hi = idx.min(axis=0), idx.max(axis=0)
        _x, yy, zz = grid.coords(tuple(slice(0, n) for n in shape))
        y_h = origin[1] + (lo[1] + 0.45 * (hi[1] - lo[1])) * sy       # hilum, a bit posterior
        z_h = origin[2] + (lo[2] + 0.55 * (hi[2] - lo[2])) * sz
        slope = u(0.9, 1.3)
        upper_side = zz > z_h - slope * (yy - y_h)        # above / in front of the oblique fissure
        if side == "left":
            parts = {"lung_upper_lobe_left": upper_side, "lung_lower_lobe_left": ~upper_side}
        else:
            middle = upper_side & (zz < z_h) & (yy > y_h)
            parts = {"lung_upper_lobe_right": upper_side & ~middle, "lung_middle_lobe_right": middle,
                     "lung_lower_lobe_right": ~upper_side}
        for name, part in parts.items():
            lobe = m & part
            P.lab[lobe] = L.CANONICAL_IDS[name]
            P.hu[lobe] = LUNG_HU
        # Branching tubes thinning toward the periphery (they keep the lobe's label, as
        # TotalSegmentator's lobes include their vessels).
        for _branch in range(7):
            p = np.array(geo["hila"][side], float)
            d = np.array([(-1 if side == "left" else 1) * u(0.3, 1.0), u(-0.6, 0.6), u(-1.0, 1.0)])
            pts, rad = [p.copy()], [4.0]
            for step in range(5):
                d = d / np.linalg.norm(d) + rng.normal(0, 0.25, 3)
                p = p + 28.0 * d / np.linalg.norm(d)
                pts.append(p.copy())
                rad.append(max(4.0 - 0.7 * (step + 1), 1.2))
            for box, vm, _, _ in tube(grid, pts, rad):
                P.hu[box][vm & m[box]] = HU["blood"] - 10


def _paint_thoracic_ribs(P: Painter, grid: Grid, geo: dict) -> None:
    """Ribs 1-12: arcs from the spine around the cavity, descending anteriorly."""
    for side, sgn in (("left", -1), ("right", 1)):
        for k in range(1, 13):
            z0 = geo["z_top"] + 5 - (k - 1) * geo["level"]
            if z0 < geo["z_bot"]:
                break
            th = np.linspace(np.deg2rad(-80), np.deg2rad(60), 9)
            ra, rb = geo["cav_a"] + 8, geo["cav_b"] + 8
            pts = [(sgn * ra * np.cos(t), geo["y_c"] + rb * np.sin(t), z0 - (t + np.deg2rad(80)) * 18) for t in th]
            for box, m, _, _ in tube(grid, pts, 4.0):
                P.paint(box, m, f"rib_{side}_{k}", HU["cortical_bone"] - 250)


def _paint_nodules(grid: Grid, lab: np.ndarray, hu: np.ndarray, nodules: list[NoduleSpec], rng) -> list[dict]:
    """Paint each nodule inside its lobe (sharp edges, after the blur), 2 voxels apart from the others.
    A nodule that does not fit its lobe is skipped and recorded as such."""
    sp = np.asarray(grid.spacing_mm, float)
    out = []
    taken = np.zeros(lab.shape, bool)
    lesion_ids = {L.CANONICAL_IDS["lung_nodule"], L.CANONICAL_IDS["lung_tumor"]}
    for k, n in enumerate(nodules):
        r = n.diameter_mm / 2
        lobe_id = L.CANONICAL_IDS[n.lobe]
        lobe = lab == lobe_id
        # Centre: a lobe voxel at least r (masses: r/2) from the lobe's edge and clear of other nodules.
        need = r if n.label == "lung_nodule" else r * 0.5
        lb = ndimage.find_objects(lobe.astype(np.uint8))
        if not lb or lb[0] is None:
            out.append({"index": k, **asdict(n), "skipped": "its lobe is empty"})
            continue
        lb = tuple(slice(max(b.start - 1, 0), min(b.stop + 1, d)) for b, d in zip(lb[0], lab.shape, strict=False))
        free = lobe[lb] & ~ndimage.binary_dilation(taken[lb], iterations=2)
        dist = ndimage.distance_transform_edt(free, sampling=sp)
        cand = np.argwhere(dist >= need)
        if len(cand) == 0:
            out.append({"index": k, **asdict(n), "skipped": "does not fit its lobe"})
            continue
        c_idx = cand[int(rng.integers(len(cand)))] + np.array([b.start for b in lb])
        c = np.asarray(grid.origin_mm) + c_idx * sp
        semi = np.array([r, r, r]) * np.array([1.0, rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15)])
        semi *= r / np.prod(semi) ** (1 / 3)      # keep the equivalent-sphere diameter
        box, f = ellipsoid(grid, c, semi, rotation_z_deg=float(rng.uniform(0, 180)))
        m = (f <= 1) & ~np.isin(lab[box], list(lesion_ids)) & (lab[box] != 0)
        if n.label == "lung_nodule":
            m &= lab[box] == lobe_id
        if n.density == "solid":
            val = np.full(m.shape, rng.uniform(*SOLID_HU), np.float32)
        elif n.density == "ground-glass":
            val = np.full(m.shape, rng.uniform(*GGN_HU), np.float32)
        else:
            core = rng.uniform(*PART_SOLID_CORE_FRACTION)
            val = np.where(f <= core ** 2, PART_SOLID_CORE_HU, PART_SOLID_SHELL_HU).astype(np.float32)
        before = lab[box][m]
        lobe_hit = np.bincount(before, minlength=256)
        lab[box][m] = L.CANONICAL_IDS[n.label]
        hu[box][m] = val[m]
        taken[box] |= m
        main_lobe = L.CANONICAL_NAMES[int(np.argmax(lobe_hit))]
        out.append({"index": k, **asdict(n), "lobe_painted": main_lobe, "voxels": int(m.sum()),
                    "centre_mm": c.round(2).tolist(), "mean_hu": float(val[m].mean())})
    return out


def chest_case(index: int, seed: int, *, lesions: bool = True):
    """(case_id, Volume, LabelMap, truth) for chest phantom ``index`` of a dataset seeded ``seed``."""
    from volvqa.arrays import present_ids
    from volvqa.records import LabelMap, Source, Volume
    case_seed = int(np.random.default_rng([seed, index, 7]).integers(0, 2**31 - 1))
    nods = random_nodules(np.random.default_rng([seed, index, 8])) if lesions else []
    ph = generate_chest(ChestConfig(seed=case_seed, nodules=nods))
    case_id = f"chest_{index:04d}"
    v = Volume(ph.ct, ph.affine, CHEST_SPACING, Source(case_id))
    lm = LabelMap(ph.labels, {i: L.CANONICAL_NAMES[i] for i in present_ids(ph.labels)}, ph.affine,
                  annotates=CHEST_ANNOTATES)
    truth = dict(ph.truth, case_id=case_id)
    return case_id, v, lm, truth
