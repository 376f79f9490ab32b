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
from volvqa.synth.parts import couinaud_parts
from volvqa.synth.shapes import Grid, Painter, ellipsoid, tube

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


@dataclass
class _Scene:
    """What the painting steps of one phantom share: the grid and painter, the one random stream (drawn
    in a fixed order, so a seed gives the same phantom) and the anchors earlier steps placed."""
    cfg: PhantomConfig
    grid: Grid
    P: Painter
    rng: np.random.Generator
    pop: dict
    truth: dict
    origin: tuple[float, float, float]
    z_top: float
    z_bot: float
    dz: float                      # field-of-view shift (mm): the organs sit higher or lower against the grid
    voxel_ml: float
    anchors_mm: dict = field(default_factory=dict)

    def u(self, lo: float, hi: float) -> float:
        return self.rng.uniform(lo, hi)

    def enh(self, tissue: str) -> float:
        return float((self.pop.get("enhancement_hu") or {}).get(tissue, 0.0))

    def drawn(self, key: str, fallback):
        return self.pop[key] if key in self.pop else fallback


def generate_phantom(cfg: PhantomConfig) -> Phantom:
    rng = np.random.default_rng(cfg.seed)
    sx, sy, sz = cfg.spacing_mm
    nx, ny, nz = cfg.shape
    origin = (-(nx - 1) * sx / 2, -(ny - 1) * sy / 2, -(nz - 1) * sz / 2)
    grid = Grid(tuple(cfg.shape), tuple(cfg.spacing_mm), origin)
    pop = cfg.population or {}
    truth: dict = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
                   "organs": {}, "hu_means": {}}
    s = _Scene(cfg, grid, Painter(grid), rng, pop, truth, origin, z_top=origin[2] + (nz - 1) * sz,
               z_bot=origin[2], dz=float(pop.get("z_shift_mm", 0.0)), voxel_ml=sx * sy * sz / 1000.0)
    _paint_body(s)
    _paint_spine(s)
    _paint_great_vessels(s)
    spleen = _draw_spleen_size(s)
    panc_t = _paint_pancreas(s, spleen)
    _paint_kidneys(s)
    _paint_gallbladder(s)
    liver_box = _paint_liver(s)
    _paint_spleen(s, spleen)
    _paint_gut(s)
    _paint_ribs(s)
    return _finish(s, liver_box, panc_t)


def _paint_body(s: _Scene) -> None:
    """Body: an ellipse per slice, skin, subcutaneous fat, muscle wall, visceral fat."""
    P, grid, u, cfg, origin = s.P, s.grid, s.u, s.cfg, s.origin
    a_body, b_body = u(140, 165), u(105, 125)
    fat_mm, muscle_mm = u(10, 28), u(8, 13)
    a_body, b_body = a_body * s.pop.get("body_scale", 1.0), b_body * s.pop.get("body_scale", 1.0)
    fat_mm = s.drawn("subcutaneous_fat_mm", fat_mm)
    full = tuple(slice(0, n) for n in cfg.shape)
    x, y, z = grid.coords(full)
    zn = (z - origin[2]) / max(s.z_top - origin[2], 1)
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
    P.hu[wall] = HU["muscle"] + s.enh("muscle")
    # Inner (peritoneal) semi-axes, the narrowest over z: organs stay inside them.
    s.anchors_mm.update(y_c=y_c, b_body=b_body, fat_mm=fat_mm, muscle_mm=muscle_mm,
                        ia=float(np.min(a_z)) - (2.5 + fat_mm + muscle_mm),
                        ib=float(np.min(b_z)) - (2.5 + fat_mm + muscle_mm))
    s.truth["body"] = {"semi_axes_mm": [a_body, b_body], "subcutaneous_fat_mm": fat_mm, "muscle_wall_mm": muscle_mm}


def _paint_spine(s: _Scene) -> None:
    """Spine: vertebral bodies with discs, canal with cord, posterior elements; paraspinal and psoas muscles."""
    P, grid, u, a = s.P, s.grid, s.u, s.anchors_mm
    z_top, z_bot = s.z_top, s.z_bot
    spine_y = a["y_c"] - a["b_body"] + 2.5 + a["fat_mm"] + a["muscle_mm"] + 52.0
    vb_r = u(17, 21)
    level_mm = u(28, 33)
    names = ["vertebrae_L5", "vertebrae_L4", "vertebrae_L3", "vertebrae_L2", "vertebrae_L1",
             "vertebrae_T12", "vertebrae_T11", "vertebrae_T10", "vertebrae_T9", "vertebrae_T8"]
    zc = z_bot + s.dz + u(0, level_mm)
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
        P.paint(box, f <= 1, f"autochthon_{side}", HU["muscle"] + s.enh("muscle"))
        for box, m, _, _ in tube(grid, [(sgn * (vb_r + 10), spine_y - 2, z_bot + 90),
                                        (sgn * (vb_r + 30), spine_y + 4, z_bot - 5)], [8, 18], flat_ends=True):
            P.paint(box, m, f"iliopsoas_{side}", HU["muscle"] + s.enh("muscle"))
    a.update(spine_y=spine_y, vb_r=vb_r)


def _paint_great_vessels(s: _Scene) -> None:
    """Aorta (left of midline), IVC (right)."""
    P, grid, u, a = s.P, s.grid, s.u, s.anchors_mm
    spine_y, vb_r, z_bot = a["spine_y"], a["vb_r"], s.z_bot
    aorta_r = u(10, 13)
    aorta = (-u(12, 18), spine_y + vb_r + aorta_r + 2)
    for box, m, _, _ in tube(grid, [(aorta[0], aorta[1], z_bot + 20), (aorta[0], aorta[1], s.z_top + 5)], aorta_r):
        P.paint(box, m, "aorta", HU["blood"] + s.enh("artery"))
    ivc = (u(18, 26), spine_y + vb_r + 10)
    ivc_top = s.z_top + s.dz - u(30, 50)
    for box, m, _, _ in tube(grid, [(ivc[0], ivc[1], z_bot + 20), (ivc[0], ivc[1], ivc_top)], u(9, 12)):
        P.paint(box, m, "inferior_vena_cava", HU["blood"] + s.enh("ivc"))
    a.update(aorta=aorta, aorta_r=aorta_r, ivc=ivc, kid_z=z_bot + (s.z_top - z_bot) * 0.45 + s.dz)


@dataclass
class _SpleenSize:
    volume_ml: float
    lo_ml: float              # the grade's limits the painted volume must land in
    hi_ml: float
    ratios: tuple[float, float, float]
    rotation_deg: float


def _draw_spleen_size(s: _Scene) -> _SpleenSize:
    """Spleen volume by grade; painted after the liver, but drawn here (the pancreas points at its hilum)."""
    lo, hi = SPLEEN_GRADES_ML[s.cfg.spleen_grade]
    spleen_ml = s.u(lo, hi)
    if "spleen_ml" in s.pop:
        # A drawn volume: kept in its own Bezerra grade (contiguous grades, 1% inside their limits).
        spleen_ml = s.pop["spleen_ml"]
        edges = [0.0, 314.5, 500.0, 800.0, float("inf")]
        k = int(np.searchsorted(edges, spleen_ml)) - 1
        lo, hi = edges[k] * 1.01, edges[k + 1] * 0.99
        spleen_ml = float(np.clip(spleen_ml, lo * 1.02, hi * 0.98 if np.isfinite(hi) else spleen_ml))
    return _SpleenSize(spleen_ml, lo, hi, (0.85, 1.2, 1.5), s.u(-40, -20))


def _paint_pancreas(s: _Scene, spleen: _SpleenSize) -> np.ndarray:
    """A tapering tube from the head (right, by the duodenum) to the tail (spleen hilum); returns each
    pancreas voxel's position along its centre line (0 head .. 1 tail, NaN elsewhere)."""
    P, grid, u, a, cfg = s.P, s.grid, s.u, s.anchors_mm, s.cfg
    aorta, ivc = a["aorta"], a["ivc"]
    # The pancreas is painted before the spleen, towards the hilum of the spleen as first sized: a large
    # spleen then grows round it instead of filling the pancreatic bed (a 980 ml spleen left a 5 ml body).
    semi_s0 = _volume_semi_axes(spleen.volume_ml, spleen.ratios)
    s_c0 = (-(a["ia"] - semi_s0[0] * 1.1), a["spine_y"] + semi_s0[1] * 0.55 + 5, s.z_top + s.dz - semi_s0[2] - 18)
    pz = a["kid_z"] + u(20, 35)
    head = np.array([ivc[0] + u(8, 15), ivc[1] + 22, pz - 12])
    neck = np.array([aorta[0] + 10, aorta[1] + 22, pz])
    body = np.array([aorta[0] - 35, aorta[1] + 18, pz + 5])
    tail = np.array([s_c0[0] + semi_s0[0] * 0.9, s_c0[1] + semi_s0[1] * 0.6, pz + 12])
    centre = [head, (head + neck) / 2, neck, (neck + body) / 2, body, (body + tail) / 2, tail]
    scale = u(0.8, 1.2)
    # A drawn scale is relative to the adult mean volume (about 65-90 ml; the fixed range gave 45-65 ml).
    scale = s.pop["pancreas_scale"] * 1.2 if "pancreas_scale" in s.pop else scale
    radii = [r * scale for r in (u(14, 18), u(12, 14), u(10, 12), u(9, 11), u(8, 10), u(7, 9), u(6, 8))]
    panc_hu = u(5, 28) if cfg.fatty_pancreas else HU["pancreas"] + u(-3, 3)
    panc_hu = s.drawn("unenhanced_hu", {}).get("pancreas", panc_hu) + s.enh("pancreas")
    panc_t = np.full(cfg.shape, np.nan, np.float32)
    seg_len = np.r_[0, np.cumsum(np.linalg.norm(np.diff(centre, axis=0), axis=1))]
    seg_len /= seg_len[-1]
    for k, (box, m, t, _) in enumerate(tube(grid, centre, radii)):
        painted = P.paint(box, m, "pancreas", panc_hu)
        tt = seg_len[k] + t * (seg_len[k + 1] - seg_len[k])
        sub = panc_t[box]
        sub[painted] = np.broadcast_to(tt, painted.shape)[painted]
    s.truth["organs"]["pancreas"] = {"centre_line_mm": [list(map(float, p)) for p in centre]}
    # Where the mesenteric vessels run (painted after the lesions, ``volvqa.synth.vessels``).
    s.truth["anchors"] = {"enhancement_hu": dict(s.pop.get("enhancement_hu") or {}),
                          "aorta_xy": [float(aorta[0]), float(aorta[1])], "aorta_r": float(a["aorta_r"]),
                          "ivc_xy": [float(ivc[0]), float(ivc[1])], "pancreas_z": float(pz),
                          "z_bot": float(s.z_bot), "neck": [float(v) for v in neck]}
    return panc_t


def _paint_kidneys(s: _Scene) -> None:
    """Retroperitoneal, either side of the spine; the right one lower."""
    P, grid, u, cfg, pop, rng = s.P, s.grid, s.u, s.cfg, s.pop, s.rng
    klen = u(138, 150) if cfg.enlarged_kidneys else u(92, 124)
    klen = s.drawn("kidney_length_mm", klen)
    for side, sgn, kdz in (("left", -1, 8.0), ("right", 1, -10.0)):
        length = klen * u(0.97, 1.03)
        semi = (u(26, 32), u(22, 27), length / 2)
        if pop.get("enlarged_kidneys"):      # an enlarged kidney is wider and thicker too (volume > 260 ml)
            semi = (semi[0] * 1.12, semi[1] * 1.12, semi[2])
        c = (sgn * u(62, 72), s.anchors_mm["spine_y"] + u(-5, 8), s.anchors_mm["kid_z"] + kdz + u(-8, 8))
        box, f = ellipsoid(grid, c, semi, rotation_z_deg=sgn * u(15, 30), deform=0.06, rng=rng)
        k_hu = HU["kidney"] + u(-3, 3)
        if "unenhanced_hu" in pop:
            k_hu = pop["unenhanced_hu"]["kidney"] + (k_hu - HU["kidney"]) / 2 + s.enh("kidney")
        if f"kidney_{side}" not in cfg.absent:  # nephrectomy: the draws above still happen (same seed stream)
            P.paint(box, f <= 1, f"kidney_{side}", k_hu)
        s.truth["organs"][f"kidney_{side}"] = {"center_mm": list(c), "target_length_mm": length}


def _paint_gallbladder(s: _Scene) -> None:
    """Painted before the liver, which then wraps around it."""
    u, a = s.u, s.anchors_mm
    gb_c = (u(30, 45), a["y_c"] + a["ib"] * 0.35, s.z_top + s.dz - u(95, 115))
    gb_ml = s.drawn("gallbladder_ml", u(12, 70))
    box, f = ellipsoid(s.grid, gb_c, _volume_semi_axes(gb_ml, (1.0, 0.9, 1.9)), rotation_z_deg=u(-30, 30))
    if "gallbladder" not in s.cfg.absent:  # cholecystectomy
        s.P.paint(box, f <= 1, "gallbladder", HU["bile"])


def _paint_liver(s: _Scene) -> tuple[slice, ...]:
    """Right upper quadrant, with darker vessels inside; returns the liver's box."""
    P, grid, u, cfg, pop, rng, a = s.P, s.grid, s.u, s.cfg, s.pop, s.rng, s.anchors_mm
    # A drawn volume is scaled up by 1/0.88: the organs painted before the liver and the body wall take
    # 5-25% of its ellipsoids (measured over phantoms), so the painted liver lands near the draw.
    liver_ml = pop["liver_ml"] / 0.88 if "liver_ml" in pop else u(950, 2300)
    liver_hu = u(18, 38) if cfg.fatty_liver else HU["liver"] + u(-4, 4)
    liver_hu = s.drawn("unenhanced_hu", {}).get("liver", liver_hu) + s.enh("liver")
    # Right lobe (about 70%) against the right wall, a flatter left lobe reaching
    # across the midline anteriorly: together a wedge rather than a ball.
    semi = _volume_semi_axes(liver_ml * 0.70, (1.0, 1.15, 1.05))
    l_c = (a["ia"] - semi[0] * 0.9, a["y_c"] + u(-5, 5), s.z_top + s.dz - semi[2] * 1.3 - 9.0)
    box, f = ellipsoid(grid, l_c, semi, rotation_z_deg=u(-10, 10), deform=0.10, rng=rng)
    P.paint(box, f <= 1, "liver", liver_hu)
    semi_l = _volume_semi_axes(liver_ml * 0.32, (1.9, 0.85, 0.55))
    ll_c = (l_c[0] - semi[0] * 0.55 - semi_l[0] * 0.6, l_c[1] + semi[1] * 0.35, l_c[2] + semi[2] * 0.1)
    box2, f2 = ellipsoid(grid, ll_c, semi_l, rotation_z_deg=u(-15, 5), deform=0.08, rng=rng)
    P.paint(box2, f2 <= 1, "liver", liver_hu)
    liver_box = tuple(slice(min(s1.start, s2.start), max(s1.stop, s2.stop)) for s1, s2 in zip(box, box2, strict=False)) \
        if box2 is not None else box
    for _ in range(4):
        p = np.array(l_c) + rng.normal(0, 1, 3) * semi * 0.3
        q = p + rng.normal(0, 1, 3) * semi * 0.6
        for vbox, m, _, _ in tube(grid, [p, q], u(2.5, 4.5)):
            vm = m & (P.lab[vbox] == L.CANONICAL_IDS["liver"])
            if pop:     # blood in the hepatic and portal veins, enhanced with the portal system
                P.hu[vbox][vm] = HU["blood"] + s.enh("portal")
            else:
                P.hu[vbox][vm] = liver_hu - 12.0 if not cfg.fatty_liver else liver_hu + 15.0
    s.truth["organs"]["liver"] = {"center_mm": list(l_c), "target_volume_ml": liver_ml}
    s.truth["hu_means"]["liver"] = liver_hu
    return liver_box


def _paint_spleen(s: _Scene, spleen: _SpleenSize) -> None:
    """Painted after the liver: a large one then grows round the left lobe (and is rescaled to its
    volume) instead of carving the left lobe away (a 1,080 ml spleen left segment 4 with 0.1 ml)."""
    P, a, pop, cfg = s.P, s.anchors_mm, s.pop, s.cfg
    spleen_ml, lo, hi = spleen.volume_ml, spleen.lo_ml, spleen.hi_ml
    target = spleen_ml
    for _ in range(6):
        semi_s = _volume_semi_axes(target, spleen.ratios)
        s_c = (-(a["ia"] - semi_s[0] * 1.1), a["spine_y"] + semi_s[1] * 0.55 + 5, s.z_top + s.dz - semi_s[2] - 18)
        box, f = ellipsoid(s.grid, s_c, semi_s, rotation_z_deg=spleen.rotation_deg, deform=0.05,
                           rng=np.random.default_rng(cfg.seed + 17))
        if "spleen" in cfg.absent:  # splenectomy
            painted = np.zeros(f.shape, bool)
            break
        painted = P.paint(box, f <= 1, "spleen", HU["spleen"])
        got = painted.sum() * s.voxel_ml
        if lo <= got <= hi and (not pop or abs(got - spleen_ml) <= 0.08 * spleen_ml):
            break
        P.lab[box][painted] = 0
        P.hu[box][painted] = HU["fat"]
        target *= spleen_ml / max(got, 1.0)
    P.hu[box][painted] = s.drawn("unenhanced_hu", {}).get("spleen", HU["spleen"] + s.u(-3, 3)) + s.enh("spleen")
    s.truth["organs"]["spleen"] = {"center_mm": list(s_c), "target_volume_ml": spleen_ml, "grade": cfg.spleen_grade}


def _paint_gut(s: _Scene) -> None:
    """Stomach (left upper, anterior; gas in its anterior part, supine), colon (a frame) and small bowel
    (central loops), walls with fluid and gas."""
    P, grid, u, rng, a = s.P, s.grid, s.u, s.rng, s.anchors_mm
    y_c, ia, ib = a["y_c"], a["ia"], a["ib"]
    st_semi = _volume_semi_axes(u(250, 450), (1.0, 0.8, 1.3))
    st_c = (-u(30, 50), y_c + ib * 0.45, s.z_top + s.dz - st_semi[2] - u(5, 25))
    box, f = ellipsoid(grid, st_c, st_semi, rotation_z_deg=u(-20, 20), deform=0.08, rng=rng)
    if box is not None:
        _, yy, _ = grid.coords(box)
        content = np.where(yy > st_c[1] + st_semi[1] * u(0.2, 0.5), HU["air"], HU["bowel_content"])
        inside = np.where(f <= 0.8, content, HU["stomach_wall"] + s.enh("bowel_wall"))
        P.paint(box, f <= 1, "stomach", np.broadcast_to(inside, f.shape))
    z_bot, dz = s.z_bot, s.dz
    cx = ia * 0.72
    cy = y_c + u(-5, 10)
    zt = a["kid_z"] + u(-5, 15)
    colon_path = [(cx, cy, z_bot + dz + 25), (cx, cy + 10, zt), (cx * 0.3, cy + 45, zt + 15), (-cx * 0.3, cy + 45, zt + 15),
                  (-cx, cy + 10, zt + 20), (-cx, cy, z_bot + dz + 25)]
    _bowel(P, grid, colon_path, u(16, 22), "colon", rng, wall_hu=HU["bowel_wall"] + s.enh("bowel_wall"))
    for _ in range(3):
        p0 = np.array([u(-50, 50), y_c + u(10, 45), z_bot + dz + u(20, 80)])
        path = [p0]
        for _ in range(4):
            path.append(path[-1] + rng.normal(0, 1, 3) * np.array([30, 12, 15]))
        _bowel(P, grid, path, u(10, 13), "small_bowel", rng, wall_hu=HU["bowel_wall"] + s.enh("bowel_wall"))


def _paint_ribs(s: _Scene) -> None:
    """Ribs 7-12 on each side: arcs from the spine around the body wall, descending anteriorly."""
    u, a = s.u, s.anchors_mm
    for side, sgn in (("left", -1), ("right", 1)):
        for k, rib in enumerate(range(7, 13)):
            z0 = s.z_top + s.dz - 10 - k * u(20, 26)
            if z0 < s.z_bot + 40:
                break
            th = np.linspace(np.deg2rad(-80), np.deg2rad(35 - 10 * k), 9)
            ra, rb = a["ia"] + 5, a["ib"] + 5
            pts = [(sgn * ra * np.cos(t), a["y_c"] + rb * np.sin(t), z0 - (t + np.deg2rad(80)) * u(18, 24))
                   for t in th]
            for box, m, _, _ in tube(s.grid, pts, 4.5):
                s.P.paint(box, m, f"rib_{side}_{rib}", HU["cortical_bone"] - 250)


def _finish(s: _Scene, liver_box, panc_t: np.ndarray) -> Phantom:
    """Blur for partial volume, add grained noise; Couinaud and pancreas parts; the truth record."""
    P, cfg, truth = s.P, s.cfg, s.truth
    hu = ndimage.gaussian_filter(P.hu, sigma=(0.6, 0.6, 0.35), mode="nearest")
    noise = s.rng.normal(0.0, 1.0, size=cfg.shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=(0.7, 0.7, 0.4), mode="wrap")
    noise *= cfg.noise_std_hu / float(noise.std())
    hu += np.where(P.body, noise, noise * 0.3)
    ct = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    parts = None
    if cfg.parts:
        parts = np.zeros(cfg.shape, np.uint8)
        couinaud_parts(parts, P.lab, liver_box, s.grid, wide_caudate=cfg.caudate_hypertrophy)
        pan = P.lab == L.CANONICAL_IDS["pancreas"]
        tt = panc_t
        parts[pan & (tt < 0.30)] = L.PART_IDS["pancreas_head"]
        parts[pan & (tt >= 0.30) & (tt < 0.65)] = L.PART_IDS["pancreas_body"]
        parts[pan & (tt >= 0.65)] = L.PART_IDS["pancreas_tail"]

    counts = np.bincount(P.lab.ravel(), minlength=256)
    truth["labels"] = {L.CANONICAL_NAMES[i]: {"voxels": int(counts[i]), "volume_ml": counts[i] * s.voxel_ml}
                       for i in np.nonzero(counts)[0] if i}
    truth["variants"] = {"spleen_grade": cfg.spleen_grade, "fatty_liver": cfg.fatty_liver,
                         "enlarged_kidneys": cfg.enlarged_kidneys, "fatty_pancreas": cfg.fatty_pancreas,
                         "absent": list(cfg.absent), "caudate_hypertrophy": cfg.caudate_hypertrophy}
    truth["phase"] = cfg.phase
    truth["hu_means"].update({"spleen": None, "noise_std_hu": cfg.noise_std_hu})
    spleen_m = P.lab == L.CANONICAL_IDS["spleen"]
    truth["hu_means"]["spleen"] = float(P.hu[spleen_m].mean()) if spleen_m.any() else None
    return Phantom(ct=ct, labels=P.lab, parts=parts, affine=s.grid.affine, truth=truth)


def _bowel(P: Painter, grid: Grid, path, radius: float, name: str, rng, wall_hu: float = HU["bowel_wall"]) -> None:
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
