"""Procedural abdominal CT phantoms with known truth.

A phantom is drawn on a canonical RAS grid (default 256 x 256 x 96 voxels
at 1.5 x 1.5 x 3 mm): body outline with skin, subcutaneous fat and muscle;
spine (vertebral bodies, discs, canal and cord, posterior elements),
paraspinal and psoas muscles, ribs; liver (with darker vessels), spleen,
left and right kidneys (on the correct side: RAS x grows toward the
patient's right, so the left kidney has the smaller x), pancreas,
gallbladder, stomach with gas, colon and small bowel with gas, aorta and
inferior vena cava. Sizes and positions are drawn from anatomical ranges
with a seed; structures are painted in a fixed order and a voxel keeps its
first structure, so nothing overlaps.

Attenuation (unenhanced CT, mean HU): liver 58, spleen 48, pancreas 42,
kidney 32, muscle 50, blood 42, fat -100, bile 8, bone: cortex 800,
cancellous 230, disc 85, cord 30, air -1000 — within the ranges measured by
Lamba R et al., "CT Hounsfield numbers of soft tissues on unenhanced
abdominal CT scans", AJR 2014;203:1013-1020, and Kodama Y et al., AJR
2007;188:1307-1312 (liver and spleen). Image noise: Gaussian noise smoothed
to a realistic grain, scaled to ~12 HU std in soft tissue (typical of
3 mm abdominal CT), after a slight blur of the noiseless image for partial
volume at edges.

Organ sizes: liver 1.2-1.9 l, spleen by grade (normal 120-290 ml; mild,
moderate, severe splenomegaly 340-480, 540-760, 850-1100 ml after Bezerra
et al. AJR 2005), kidneys 10-12 cm long (enlarged variant 13.8-15 cm; Emamian
et al. AJR 1993), pancreas ~60-90 ml.

Sub-segments (optional ``parts`` layer): Couinaud segments approximated by
planes in the liver's own box — segment 1 (caudate) posterior-medial next
to the IVC; a Cantlie line at 45% of the liver's left-right width (left
lobe medial to it); the falciform plane at 20% separates 2/3 (lateral) from
4 (medial); in the right lobe a coronal plane at 45% of the anterior-
posterior depth separates anterior 5/8 from posterior 6/7; an axial plane
at 50% of the height separates superior (2, 4 above, 7, 8) from inferior
(3, 5, 6). Pancreas head/body/tail: first 30%, next 35% and last 35% of its
centre line from the head (right) to the tail (left).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from volvqa import labels as L
from volvqa.synth.shapes import Grid, ellipsoid, tube

HU = {"liver": 58.0, "spleen": 48.0, "pancreas": 42.0, "kidney": 32.0, "muscle": 50.0, "blood": 42.0,
      "fat": -100.0, "bile": 8.0, "cortical_bone": 800.0, "cancellous_bone": 230.0, "disc": 85.0,
      "cord": 30.0, "csf": 8.0, "air": -1000.0, "skin": 30.0, "bowel_wall": 40.0, "stomach_wall": 45.0,
      "bowel_content": 10.0, "liver_vessel": 42.0}
NOISE_STD_HU = 12.0
SPLEEN_GRADES_ML = {"normal": (120.0, 290.0), "mild": (340.0, 480.0), "moderate": (540.0, 760.0),
                    "severe": (850.0, 1100.0)}
DEFAULT_SHAPE = (256, 256, 96)
#: Every structure a phantom delineates (its annotation scope): an organ of
#: this list with no voxel is absent (removed by a surgery variant, or a
#: vertebra or rib outside the field of view), never unknown. Lesion
#: classes and sub-segments are added by ``volvqa.synth.dataset``.
PHANTOM_ORGANS = ("liver", "spleen", "kidney_left", "kidney_right", "pancreas", "gallbladder", "stomach",
                  "aorta", "inferior_vena_cava", "colon", "small_bowel", "spinal_cord", *L.PANCREATIC_VESSELS,
                  "autochthon_left", "autochthon_right", "iliopsoas_left", "iliopsoas_right",
                  *(f"vertebrae_{v}" for v in ("L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "T8")),
                  *(f"rib_{side}_{k}" for side in ("left", "right") for k in range(7, 13)))
DEFAULT_SPACING = (1.5, 1.5, 3.0)


@dataclass
class PhantomConfig:
    seed: int = 0
    shape: tuple[int, int, int] = DEFAULT_SHAPE
    spacing_mm: tuple[float, float, float] = DEFAULT_SPACING
    spleen_grade: str = "normal"           # normal | mild | moderate | severe
    fatty_liver: bool = False              # liver HU 18-38 (L/S < 1)
    enlarged_kidneys: bool = False
    fatty_pancreas: bool = False           # pancreas HU 5-28 (P/S < 0.7)
    absent: tuple[str, ...] = ()           # removed organs: gallbladder, kidney_left, kidney_right, spleen
    caudate_hypertrophy: bool = False      # a wide caudate (segment 1): caudate/right-lobe width ratio > 0.65
    parts: bool = True                     # Couinaud segments and pancreas parts
    noise_std_hu: float = NOISE_STD_HU
    #: A drawn adult (``volvqa.synth.population.draw_case``): organ volumes, unenhanced HU, contrast phase and
    #: enhancement, body and field of view. None: the fixed ranges above (unenhanced CT).
    population: dict | None = None

    @property
    def phase(self) -> str:
        return (self.population or {}).get("phase", "non-contrast")


@dataclass
class Phantom:
    ct: np.ndarray            # int16 HU, canonical RAS
    labels: np.ndarray        # uint8 canonical ids
    parts: np.ndarray | None  # uint8 part ids (volvqa.labels.PART_IDS)
    affine: np.ndarray
    truth: dict = field(default_factory=dict)


def _volume_semi_axes(volume_ml: float, ratios) -> np.ndarray:
    """Semi-axes (mm) of an ellipsoid of the given volume and axis ratios."""
    r = np.asarray(ratios, float)
    k = (volume_ml * 1000.0 * 3 / (4 * np.pi) / r.prod()) ** (1 / 3)
    return r * k


class _Painter:
    def __init__(self, grid: Grid):
        self.grid = grid
        self.hu = np.full(grid.shape, HU["air"], np.float32)
        self.lab = np.zeros(grid.shape, np.uint8)
        self.body = np.zeros(grid.shape, bool)

    def paint(self, box, mask, name: str | None, hu: float | np.ndarray, *, only_free=True,
              label: bool = True) -> np.ndarray:
        """Paint ``mask`` (within ``box``); returns the voxels actually painted."""
        if box is None:
            return np.zeros((0, 0, 0), bool)
        sub_lab = self.lab[box]
        m = mask & self.body[box]
        if only_free:
            m = m & (sub_lab == 0)
        if label and name is not None:
            sub_lab[m] = L.CANONICAL_IDS[name]
        sub_hu = self.hu[box]
        sub_hu[m] = hu if np.isscalar(hu) else np.broadcast_to(hu, m.shape)[m]
        return m


def generate_phantom(cfg: PhantomConfig) -> Phantom:
    rng = np.random.default_rng(cfg.seed)
    sx, sy, sz = cfg.spacing_mm
    nx, ny, nz = cfg.shape
    origin = (-(nx - 1) * sx / 2, -(ny - 1) * sy / 2, -(nz - 1) * sz / 2)
    grid = Grid(tuple(cfg.shape), tuple(cfg.spacing_mm), origin)
    P = _Painter(grid)
    u = rng.uniform
    z_top, z_bot = origin[2] + (nz - 1) * sz, origin[2]
    pop = cfg.population or {}
    enh_hu = pop.get("enhancement_hu") or {}

    def enh(tissue: str) -> float:
        return float(enh_hu.get(tissue, 0.0))

    def drawn(key: str, fallback):
        return pop[key] if key in pop else fallback

    # The field of view: a shifted scan places the organs higher or lower against the grid (cut at its edges).
    dz = float(pop.get("z_shift_mm", 0.0))
    truth: dict = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
                   "organs": {}, "hu_means": {}}

    # Body: an ellipse per slice, skin, subcutaneous fat, muscle wall, visceral fat.
    a_body, b_body = u(140, 165), u(105, 125)
    fat_mm, muscle_mm = u(10, 28), u(8, 13)
    a_body, b_body = a_body * pop.get("body_scale", 1.0), b_body * pop.get("body_scale", 1.0)
    fat_mm = drawn("subcutaneous_fat_mm", fat_mm)
    full = tuple(slice(0, n) for n in cfg.shape)
    x, y, z = grid.coords(full)
    zn = (z - origin[2]) / max(z_top - origin[2], 1)
    a_z = a_body * (1 + 0.05 * np.sin(np.pi * zn))
    b_z = b_body * (1 + 0.04 * np.cos(np.pi * zn))
    y_c = -5.0
    rr = np.sqrt((x / a_z) ** 2 + ((y - y_c) / b_z) ** 2)  # 1 at the skin
    mean_ab = (a_body + b_body) / 2
    P.body = rr <= 1.0
    P.hu[P.body] = HU["fat"]
    depth = (1.0 - rr) * mean_ab  # approximate depth below the skin (mm)
    P.hu[P.body & (depth < 2.5)] = HU["skin"]
    wall = P.body & (depth >= 2.5 + fat_mm) & (depth < 2.5 + fat_mm + muscle_mm)
    P.hu[wall] = HU["muscle"] + enh("muscle")
    # Inner (peritoneal) semi-axes, the narrowest over z: organs stay inside them.
    ia = float(np.min(a_z)) - (2.5 + fat_mm + muscle_mm)
    ib = float(np.min(b_z)) - (2.5 + fat_mm + muscle_mm)
    truth["body"] = {"semi_axes_mm": [a_body, b_body], "subcutaneous_fat_mm": fat_mm, "muscle_wall_mm": muscle_mm}

    # Spine: vertebral bodies with discs, canal with cord, posterior elements.
    spine_y = y_c - b_body + 2.5 + fat_mm + muscle_mm + 52.0
    vb_r = u(17, 21)
    level_mm = u(28, 33)
    names = ["vertebrae_L5", "vertebrae_L4", "vertebrae_L3", "vertebrae_L2", "vertebrae_L1",
             "vertebrae_T12", "vertebrae_T11", "vertebrae_T10", "vertebrae_T9", "vertebrae_T8"]
    zc = z_bot + dz + u(0, level_mm)
    for k, name in enumerate(names):
        z0, z1 = zc + k * level_mm, zc + (k + 1) * level_mm - 6.0
        if z0 > z_top:
            break
        for box, m, _, _ in tube(grid, [(0, spine_y, z0), (0, spine_y, z1)], vb_r, flat_ends=True):
            bx, by, bz = grid.coords(box)
            rin = np.sqrt(bx ** 2 + (by - spine_y) ** 2)
            P.paint(box, m, name, np.where(rin > vb_r - 2.5, HU["cortical_bone"], HU["cancellous_bone"]))
        for box, m, _, _ in tube(grid, [(0, spine_y - vb_r - 14, z0 + 3), (0, spine_y - vb_r - 38, z1 - 6)], 6.0):
            P.paint(box, m, name, HU["cortical_bone"] - 150)
        for box, m, _, _ in tube(grid, [(0, spine_y, z1), (0, spine_y, z1 + 6.0)], vb_r - 1, flat_ends=True):
            P.paint(box, m, None, HU["disc"], label=False)
    canal_y = spine_y - vb_r - 9
    for box, m, _, _ in tube(grid, [(0, canal_y, z_bot - 5), (0, canal_y, z_top + 5)], 4.5):
        P.paint(box, m, "spinal_cord", HU["cord"])
    for box, m, _, _ in tube(grid, [(0, canal_y, z_bot - 5), (0, canal_y, z_top + 5)], 8.0):
        P.paint(box, m, None, HU["csf"], label=False)
    for side, sgn in (("left", -1), ("right", 1)):
        box, f = ellipsoid(grid, (sgn * 36, spine_y - 45, 0), (20, 24, 400))
        P.paint(box, f <= 1, f"autochthon_{side}", HU["muscle"] + enh("muscle"))
        for box, m, _, _ in tube(grid, [(sgn * (vb_r + 10), spine_y - 2, z_bot + 90),
                                        (sgn * (vb_r + 30), spine_y + 4, z_bot - 5)], [8, 18], flat_ends=True):
            P.paint(box, m, f"iliopsoas_{side}", HU["muscle"] + enh("muscle"))

    # Vessels: aorta (left of midline), IVC (right).
    aorta_r = u(10, 13)
    aorta = (-u(12, 18), spine_y + vb_r + aorta_r + 2)
    for box, m, _, _ in tube(grid, [(aorta[0], aorta[1], z_bot + 20), (aorta[0], aorta[1], z_top + 5)], aorta_r):
        P.paint(box, m, "aorta", HU["blood"] + enh("artery"))
    ivc = (u(18, 26), spine_y + vb_r + 10)
    ivc_top = z_top + dz - u(30, 50)
    for box, m, _, _ in tube(grid, [(ivc[0], ivc[1], z_bot + 20), (ivc[0], ivc[1], ivc_top)], u(9, 12)):
        P.paint(box, m, "inferior_vena_cava", HU["blood"] + enh("ivc"))

    kid_z = z_bot + (z_top - z_bot) * 0.45 + dz
    # Spleen: left upper quadrant, posterior; volume by grade. Painted early so
    # little carves it, and rescaled until the painted volume is in its grade.
    lo, hi = SPLEEN_GRADES_ML[cfg.spleen_grade]
    spleen_ml = u(lo, hi)
    if "spleen_ml" in pop:
        # A drawn volume: kept in its own Bezerra grade (contiguous grades, 1% inside their limits).
        spleen_ml = pop["spleen_ml"]
        edges = [0.0, 314.5, 500.0, 800.0, float("inf")]
        k = int(np.searchsorted(edges, spleen_ml)) - 1
        lo, hi = edges[k] * 1.01, edges[k + 1] * 0.99
        spleen_ml = float(np.clip(spleen_ml, lo * 1.02, hi * 0.98 if np.isfinite(hi) else spleen_ml))
    ratios, rot = (0.85, 1.2, 1.5), u(-40, -20)
    voxel_ml = sx * sy * sz / 1000.0
    # The pancreas is painted before the spleen, towards the hilum of the spleen as first sized: a large
    # spleen then grows round it instead of filling the pancreatic bed (a 980 ml spleen left a 5 ml body).
    semi_s0 = _volume_semi_axes(spleen_ml, ratios)
    s_c0 = (-(ia - semi_s0[0] * 1.1), spine_y + semi_s0[1] * 0.55 + 5, z_top + dz - semi_s0[2] - 18)
    # Pancreas: a tapering tube from the head (right, by the duodenum) to the tail (spleen hilum).
    pz = kid_z + u(20, 35)
    head = np.array([ivc[0] + u(8, 15), ivc[1] + 22, pz - 12])
    neck = np.array([aorta[0] + 10, aorta[1] + 22, pz])
    body = np.array([aorta[0] - 35, aorta[1] + 18, pz + 5])
    tail = np.array([s_c0[0] + semi_s0[0] * 0.9, s_c0[1] + semi_s0[1] * 0.6, pz + 12])
    centre = [head, (head + neck) / 2, neck, (neck + body) / 2, body, (body + tail) / 2, tail]
    scale = u(0.8, 1.2)
    # A drawn scale is relative to the adult mean volume (about 65-90 ml; the fixed range gave 45-65 ml).
    scale = pop["pancreas_scale"] * 1.2 if "pancreas_scale" in pop else scale
    radii = [r * scale for r in (u(14, 18), u(12, 14), u(10, 12), u(9, 11), u(8, 10), u(7, 9), u(6, 8))]
    panc_hu = u(5, 28) if cfg.fatty_pancreas else HU["pancreas"] + u(-3, 3)
    panc_hu = drawn("unenhanced_hu", {}).get("pancreas", panc_hu) + enh("pancreas")
    panc_t = np.full(cfg.shape, np.nan, np.float32)
    seg_len = np.r_[0, np.cumsum(np.linalg.norm(np.diff(centre, axis=0), axis=1))]
    seg_len /= seg_len[-1]
    for k, (box, m, t, _) in enumerate(tube(grid, centre, radii)):
        painted = P.paint(box, m, "pancreas", panc_hu)
        tt = seg_len[k] + t * (seg_len[k + 1] - seg_len[k])
        sub = panc_t[box]
        sub[painted] = np.broadcast_to(tt, painted.shape)[painted]
    truth["organs"]["pancreas"] = {"centre_line_mm": [list(map(float, p)) for p in centre]}
    # Where the mesenteric vessels run (painted after the lesions, ``volvqa.synth.vessels``).
    truth["anchors"] = {"enhancement_hu": dict(enh_hu),
                        "aorta_xy": [float(aorta[0]), float(aorta[1])], "aorta_r": float(aorta_r),
                        "ivc_xy": [float(ivc[0]), float(ivc[1])], "pancreas_z": float(pz), "z_bot": float(z_bot),
                        "neck": [float(v) for v in neck]}

    # Kidneys: retroperitoneal, either side of the spine; the right one lower.
    klen = u(138, 150) if cfg.enlarged_kidneys else u(92, 124)
    klen = drawn("kidney_length_mm", klen)
    for side, sgn, kdz in (("left", -1, 8.0), ("right", 1, -10.0)):
        length = klen * u(0.97, 1.03)
        semi = (u(26, 32), u(22, 27), length / 2)
        if pop.get("enlarged_kidneys"):      # an enlarged kidney is wider and thicker too (volume > 260 ml)
            semi = (semi[0] * 1.12, semi[1] * 1.12, semi[2])
        c = (sgn * u(62, 72), spine_y + u(-5, 8), kid_z + kdz + u(-8, 8))
        box, f = ellipsoid(grid, c, semi, rotation_z_deg=sgn * u(15, 30), deform=0.06, rng=rng)
        k_hu = HU["kidney"] + u(-3, 3)
        if "unenhanced_hu" in pop:
            k_hu = pop["unenhanced_hu"]["kidney"] + (k_hu - HU["kidney"]) / 2 + enh("kidney")
        if f"kidney_{side}" not in cfg.absent:  # nephrectomy: the draws above still happen (same seed stream)
            P.paint(box, f <= 1, f"kidney_{side}", k_hu)
        truth["organs"][f"kidney_{side}"] = {"center_mm": list(c), "target_length_mm": length}

    # Gallbladder (before the liver, which then wraps around it).
    gb_c = (u(30, 45), y_c + ib * 0.35, z_top + dz - u(95, 115))
    gb_ml = drawn("gallbladder_ml", u(12, 70))
    box, f = ellipsoid(grid, gb_c, _volume_semi_axes(gb_ml, (1.0, 0.9, 1.9)), rotation_z_deg=u(-30, 30))
    if "gallbladder" not in cfg.absent:  # cholecystectomy
        P.paint(box, f <= 1, "gallbladder", HU["bile"])

    # Liver: right upper quadrant, with darker vessels inside.
    # A drawn volume is scaled up by 1/0.88: the organs painted before the liver and the body wall take
    # 5-25% of its ellipsoids (measured over phantoms), so the painted liver lands near the draw.
    liver_ml = pop["liver_ml"] / 0.88 if "liver_ml" in pop else u(950, 2300)
    liver_hu = u(18, 38) if cfg.fatty_liver else HU["liver"] + u(-4, 4)
    liver_hu = drawn("unenhanced_hu", {}).get("liver", liver_hu) + enh("liver")
    # Right lobe (about 70%) against the right wall, a flatter left lobe reaching
    # across the midline anteriorly: together a wedge rather than a ball.
    semi = _volume_semi_axes(liver_ml * 0.70, (1.0, 1.15, 1.05))
    l_c = (ia - semi[0] * 0.9, y_c + u(-5, 5), z_top + dz - semi[2] * 1.3 - 9.0)
    box, f = ellipsoid(grid, l_c, semi, rotation_z_deg=u(-10, 10), deform=0.10, rng=rng)
    P.paint(box, f <= 1, "liver", liver_hu)
    semi_l = _volume_semi_axes(liver_ml * 0.32, (1.9, 0.85, 0.55))
    ll_c = (l_c[0] - semi[0] * 0.55 - semi_l[0] * 0.6, l_c[1] + semi[1] * 0.35, l_c[2] + semi[2] * 0.1)
    box2, f2 = ellipsoid(grid, ll_c, semi_l, rotation_z_deg=u(-15, 5), deform=0.08, rng=rng)
    P.paint(box2, f2 <= 1, "liver", liver_hu)
    liver_box = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(box, box2, strict=False)) \
        if box2 is not None else box
    for _ in range(4):
        a = np.array(l_c) + rng.normal(0, 1, 3) * semi * 0.3
        b = a + rng.normal(0, 1, 3) * semi * 0.6
        for vbox, m, _, _ in tube(grid, [a, b], u(2.5, 4.5)):
            vm = m & (P.lab[vbox] == L.CANONICAL_IDS["liver"])
            if pop:     # blood in the hepatic and portal veins, enhanced with the portal system
                P.hu[vbox][vm] = HU["blood"] + enh("portal")
            else:
                P.hu[vbox][vm] = liver_hu - 12.0 if not cfg.fatty_liver else liver_hu + 15.0
    truth["organs"]["liver"] = {"center_mm": list(l_c), "target_volume_ml": liver_ml}
    truth["hu_means"]["liver"] = liver_hu

    # Spleen painted after the liver: a large one then grows round the left lobe (and is rescaled to its
    # volume) instead of carving the left lobe away (a 1,080 ml spleen left segment 4 with 0.1 ml).
    target = spleen_ml
    for _ in range(6):
        semi_s = _volume_semi_axes(target, ratios)
        s_c = (-(ia - semi_s[0] * 1.1), spine_y + semi_s[1] * 0.55 + 5, z_top + dz - semi_s[2] - 18)
        box, f = ellipsoid(grid, s_c, semi_s, rotation_z_deg=rot, deform=0.05, rng=np.random.default_rng(cfg.seed + 17))
        if "spleen" in cfg.absent:  # splenectomy
            painted = np.zeros(f.shape, bool)
            break
        painted = P.paint(box, f <= 1, "spleen", HU["spleen"])
        got = painted.sum() * voxel_ml
        if lo <= got <= hi and (not pop or abs(got - spleen_ml) <= 0.08 * spleen_ml):
            break
        P.lab[box][painted] = 0
        P.hu[box][painted] = HU["fat"]
        target *= spleen_ml / max(got, 1.0)
    P.hu[box][painted] = drawn("unenhanced_hu", {}).get("spleen", HU["spleen"] + u(-3, 3)) + enh("spleen")
    truth["organs"]["spleen"] = {"center_mm": list(s_c), "target_volume_ml": spleen_ml, "grade": cfg.spleen_grade}

    # Stomach: left upper, anterior; gas in its anterior (upper, supine) part.
    st_semi = _volume_semi_axes(u(250, 450), (1.0, 0.8, 1.3))
    st_c = (-u(30, 50), y_c + ib * 0.45, z_top + dz - st_semi[2] - u(5, 25))
    box, f = ellipsoid(grid, st_c, st_semi, rotation_z_deg=u(-20, 20), deform=0.08, rng=rng)
    if box is not None:
        _, yy, _ = grid.coords(box)
        content = np.where(yy > st_c[1] + st_semi[1] * u(0.2, 0.5), HU["air"], HU["bowel_content"])
        inside = np.where(f <= 0.8, content, HU["stomach_wall"] + enh("bowel_wall"))
        P.paint(box, f <= 1, "stomach", np.broadcast_to(inside, f.shape))

    # Colon (frame) and small bowel (central loops), walls with fluid and gas.
    cx = ia * 0.72
    cy = y_c + u(-5, 10)
    zt = kid_z + u(-5, 15)
    colon_path = [(cx, cy, z_bot + dz + 25), (cx, cy + 10, zt), (cx * 0.3, cy + 45, zt + 15), (-cx * 0.3, cy + 45, zt + 15),
                  (-cx, cy + 10, zt + 20), (-cx, cy, z_bot + dz + 25)]
    _bowel(P, grid, colon_path, u(16, 22), "colon", rng, wall_hu=HU["bowel_wall"] + enh("bowel_wall"))
    for _ in range(3):
        p0 = np.array([u(-50, 50), y_c + u(10, 45), z_bot + dz + u(20, 80)])
        path = [p0]
        for _ in range(4):
            path.append(path[-1] + rng.normal(0, 1, 3) * np.array([30, 12, 15]))
        _bowel(P, grid, path, u(10, 13), "small_bowel", rng, wall_hu=HU["bowel_wall"] + enh("bowel_wall"))

    # Ribs 7-12 on each side: arcs from the spine around the body wall, descending anteriorly.
    for side, sgn in (("left", -1), ("right", 1)):
        for k, rib in enumerate(range(7, 13)):
            z0 = z_top + dz - 10 - k * u(20, 26)
            if z0 < z_bot + 40:
                break
            th = np.linspace(np.deg2rad(-80), np.deg2rad(35 - 10 * k), 9)
            ra, rb = ia + 5, ib + 5
            pts = [(sgn * ra * np.cos(t), y_c + rb * np.sin(t), z0 - (t + np.deg2rad(80)) * u(18, 24))
                   for t in th]
            for box, m, _, _ in tube(grid, pts, 4.5):
                P.paint(box, m, f"rib_{side}_{rib}", HU["cortical_bone"] - 250)

    # Intra-abdominal muscles and organs keep their HU; blur for partial volume, add noise.
    hu = ndimage.gaussian_filter(P.hu, sigma=(0.6, 0.6, 0.35), mode="nearest")
    noise = rng.normal(0.0, 1.0, size=cfg.shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=(0.7, 0.7, 0.4), mode="wrap")
    noise *= cfg.noise_std_hu / float(noise.std())
    hu += np.where(P.body, noise, noise * 0.3)
    ct = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    parts = None
    if cfg.parts:
        parts = np.zeros(cfg.shape, np.uint8)
        _couinaud(parts, P.lab, liver_box, grid, wide_caudate=cfg.caudate_hypertrophy)
        pan = P.lab == L.CANONICAL_IDS["pancreas"]
        tt = panc_t
        parts[pan & (tt < 0.30)] = L.PART_IDS["pancreas_head"]
        parts[pan & (tt >= 0.30) & (tt < 0.65)] = L.PART_IDS["pancreas_body"]
        parts[pan & (tt >= 0.65)] = L.PART_IDS["pancreas_tail"]

    voxel_ml = sx * sy * sz / 1000.0
    counts = np.bincount(P.lab.ravel(), minlength=256)
    truth["labels"] = {L.CANONICAL_NAMES[i]: {"voxels": int(counts[i]), "volume_ml": counts[i] * voxel_ml}
                       for i in np.nonzero(counts)[0] if i}
    truth["variants"] = {"spleen_grade": cfg.spleen_grade, "fatty_liver": cfg.fatty_liver,
                         "enlarged_kidneys": cfg.enlarged_kidneys, "fatty_pancreas": cfg.fatty_pancreas,
                         "absent": list(cfg.absent), "caudate_hypertrophy": cfg.caudate_hypertrophy}
    truth["phase"] = cfg.phase
    truth["hu_means"].update({"spleen": None, "noise_std_hu": cfg.noise_std_hu})
    spleen_m = P.lab == L.CANONICAL_IDS["spleen"]
    truth["hu_means"]["spleen"] = float(P.hu[spleen_m].mean()) if spleen_m.any() else None
    return Phantom(ct=ct, labels=P.lab, parts=parts, affine=grid.affine, truth=truth)


def _bowel(P: _Painter, grid: Grid, path, radius: float, name: str, rng, wall_hu: float = HU["bowel_wall"]) -> None:
    """A bowel loop: 3 mm wall, lumen of mottled stool/fluid with gas anteriorly."""
    gas_level = rng.uniform(0.0, 0.7)  # share of the radius above the centre line filled with gas
    for box, m, _, inner in tube(grid, path, radius, inner_mm=3.0):
        _, yy, _ = grid.coords(box)
        centre_y = 0.5 * (yy.min() + yy.max())
        # Mottled stool: voxel-scale variation (the final blur gives it grain) and small bubbles.
        stool = HU["bowel_content"] + rng.normal(0.0, 45.0, size=m.shape)
        lumen = np.where(yy > centre_y + radius * (1 - gas_level), HU["air"], stool)
        lumen = np.where(rng.random(m.shape) < 0.03, HU["air"], lumen)
        P.paint(box, m, name, np.where(inner, lumen, wall_hu))


def _couinaud(parts: np.ndarray, lab: np.ndarray, box, grid: Grid, wide_caudate: bool = False) -> None:
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
