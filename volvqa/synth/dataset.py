"""Synthetic datasets: folders of phantoms (or a real CT) with inserted lesions.

Layout (the ``synthetic`` manifest layout)::

    DIR/<case_id>/ct.nii.gz       int16 HU, canonical RAS
    DIR/<case_id>/seg.nii.gz      canonical label ids (organs + lesions)
    DIR/<case_id>/parts.nii.gz    sub-segment ids (optional)
    DIR/<case_id>/truth.json      generation parameters and per-lesion truth

Each case is written into a temporary folder and renamed into place, so a
rerun skips finished cases and never sees half of one.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from scipy import ndimage

from volvqa import labels as L
from volvqa.arrays import present_ids
from volvqa.io.atomic import write_text_atomic
from volvqa.io.nifti import write_nifti
from volvqa.jsonable import jsonable
from volvqa.records import LabelMap, Source, Volume
from volvqa.synth.lesions import LESION_LABELS, LesionDoesNotFit, LesionRequest, insert_lesions
from volvqa.synth.phantom import PHANTOM_ORGANS, PhantomConfig, generate_phantom

PARTS_SPEC = {i: n for n, i in L.PART_IDS.items()}
#: What a phantom annotates: its organs, every lesion class lesions are
#: inserted as (a phantom without one has none), and the sub-segments.
PHANTOM_ANNOTATES = frozenset(PHANTOM_ORGANS) | frozenset(LESION_LABELS.values()) | {"pancreatic_pnet"} \
    | frozenset(L.PART_IDS)
#: Smallest lesion the retries shrink to: well above findings' 50 mm^3 floor.
MIN_DIAMETER_MM = 5.0

#: Phantom variants cycle through this table by case index (a spread of clinical rules).
#: (spleen grade, fatty liver, enlarged kidneys, fatty pancreas)
_VARIANTS = [("normal", False, False, False), ("normal", False, False, True), ("mild", False, False, False),
             ("normal", True, False, False), ("moderate", False, False, True), ("normal", False, True, False),
             ("normal", False, False, False), ("severe", False, False, False), ("normal", True, False, True),
             ("mild", False, True, False)]


def case_done(folder: Path) -> bool:
    return (folder / "truth.json").is_file() and (folder / "ct.nii.gz").is_file()


def write_case(folder: Path, volume: Volume, labelmap: LabelMap, truth: dict) -> Path:
    """Write one case atomically (temporary folder, then rename)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_nifti(tmp / "ct.nii.gz", volume.array, volume.affine)
        write_nifti(tmp / "seg.nii.gz", labelmap.array, labelmap.affine)
        if labelmap.parts is not None:
            write_nifti(tmp / "parts.nii.gz", labelmap.parts, labelmap.affine)
        if labelmap.annotates is not None and "annotates" not in truth:
            truth = dict(truth, annotates=sorted(labelmap.scope))
        write_text_atomic(tmp / "truth.json", json.dumps(jsonable(truth), indent=1, sort_keys=True) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _texture_and_shape(rng: np.random.Generator, cyst: bool) -> dict:
    """Texture, margin and shape of a drawn lesion (cysts smooth and round, tumours grainy and irregular),
    drawn in this order after its attenuation."""
    return dict(texture_std=float(rng.uniform(1, 4)) if cyst else float(rng.uniform(4, 14)),
                margin="sharp" if cyst or rng.random() < 0.5 else "blurred",
                blur_mm=float(rng.uniform(1.5, 4.0)),
                irregularity=float(rng.uniform(0.02, 0.08)) if cyst else float(rng.uniform(0.05, 0.25)),
                elongation=float(rng.uniform(1.0, 1.3)) if cyst else float(rng.uniform(1.0, 1.6)))


def random_lesion_requests(rng: np.random.Generator, organs_present: set[str]) -> list[LesionRequest]:
    """A spread of lesion counts, sizes, kinds, attenuations, margins and locations."""
    reqs: list[LesionRequest] = []

    def tumour_delta() -> float:
        r = rng.random()
        if r < 0.7:
            return float(rng.uniform(-55, -20))
        if r < 0.9:
            return float(rng.uniform(20, 45))
        return 0.0

    plan = [("liver", [0.35, 0.25, 0.15, 0.1, 0.08, 0.07], (8, 45)),
            ("kidney", [0.55, 0.3, 0.15], (8, 32)),
            ("pancreas", [0.45, 0.4, 0.15], (8, 30)),
            ("spleen", [0.85, 0.15], (8, 25)),
            ("colon", [0.8, 0.2], (12, 30))]
    for organ, probs, (dmin, dmax) in plan:
        if organ == "kidney" and not ({"kidney_left", "kidney_right"} & organs_present):
            continue
        if organ != "kidney" and organ not in organs_present:
            continue
        n = int(rng.choice(len(probs), p=probs))
        for _ in range(n):
            cyst = rng.random() < {"spleen": 0.2, "pancreas": 0.45}.get(organ, 0.35) and organ != "colon"
            d = float(np.exp(rng.uniform(np.log(dmin), np.log(dmax))))
            loc: dict = {}
            if organ == "liver" and rng.random() < 0.5:
                loc = {"segment": int(rng.integers(2, 9))}
            elif organ == "kidney" and rng.random() < 0.6:
                loc = {"pole": str(rng.choice(["upper", "interpolar", "lower"]))}
            elif organ == "pancreas" and rng.random() < 0.6:
                loc = {"part": str(rng.choice(["head", "body", "tail"]))}
            label, delta = None, None
            if organ == "pancreas" and not cyst:
                # PDAC: hypoattenuating, head-predominant; PNET: iso/hyper, body and tail (NCCN imaging features).
                pnet = rng.random() < 0.45
                label = "pancreatic_pnet" if pnet else "pancreatic_pdac"
                delta = round(float(rng.uniform(0, 35) if pnet else rng.uniform(-55, -20)), 1)
                if loc:
                    loc = {"part": str(rng.choice(["body", "tail"]) if pnet else
                                       rng.choice(["head", "head", "body", "tail"]))}
            reqs.append(LesionRequest(
                organ=organ, kind="cyst" if cyst else "tumor", diameter_mm=round(d, 1), label=label,
                # Pancreatic cysts straddle the 14.5 HU pseudocyst threshold; other cysts are water.
                hu=float(rng.uniform(0, 28) if organ == "pancreas" else rng.uniform(0, 12)) if cyst else
                (float(rng.uniform(30, 50)) if organ == "colon" else None),   # a soft-tissue mass in the bowel
                hu_delta=None if cyst or organ == "colon" else (delta if delta is not None else round(tumour_delta(), 1)),
                location=loc, **_texture_and_shape(rng, cyst)))
    return reqs


def population_lesion_requests(rng: np.random.Generator, organs_present: set[str], phase: str) -> list[LesionRequest]:
    """Lesions of a drawn adult (``volvqa.synth.population``): heavy-tailed counts (up to 18 in a liver),
    diameters 5 mm - 12 cm, kinds and attenuations over their real ranges (renal cysts across the Bosniak
    unenhanced classes, pancreatic cysts across 14.5 HU, PDAC hypo- and PNET iso-/hyperattenuating, a
    hypervascular liver tumour brighter than the liver in the arterial phase)."""
    from volvqa.synth.population import kidney_cyst_hu, lesion_count, lesion_diameter_mm
    reqs: list[LesionRequest] = []
    for organ in ("liver", "kidney", "pancreas", "spleen", "colon"):
        if organ == "kidney" and not ({"kidney_left", "kidney_right"} & organs_present):
            continue
        if organ != "kidney" and organ not in organs_present:
            continue
        for _ in range(lesion_count(rng, organ)):
            p_cyst = {"liver": 0.4, "kidney": 0.55, "pancreas": 0.45, "spleen": 0.3, "colon": 0.0}[organ]
            cyst = rng.random() < p_cyst
            d = lesion_diameter_mm(rng, organ)
            loc: dict = {}
            if organ == "liver" and rng.random() < 0.5:
                loc = {"segment": int(rng.integers(2, 9))}
            elif organ == "kidney" and rng.random() < 0.6:
                loc = {"pole": str(rng.choice(["upper", "interpolar", "lower"]))}
            elif organ == "pancreas" and rng.random() < 0.6:
                loc = {"part": str(rng.choice(["head", "body", "tail"]))}
            label, hu, delta = None, None, None
            if cyst:
                hu = {"kidney": kidney_cyst_hu(rng), "pancreas": float(rng.uniform(0, 30))}.get(
                    organ, float(rng.uniform(-2, 14)))
            elif organ == "colon":
                hu = float(rng.uniform(30, 50))
            elif organ == "pancreas":
                pnet = rng.random() < 0.45
                label = "pancreatic_pnet" if pnet else "pancreatic_pdac"
                delta = float(rng.uniform(0, 35) if pnet else rng.uniform(-55, -20))
                if loc:
                    loc = {"part": str(rng.choice(["body", "tail"]) if pnet else
                                       rng.choice(["head", "head", "body", "tail"]))}
            else:
                r = rng.random()
                hyper = 0.45 if phase == "arterial" else 0.15      # hypervascular tumours light up early
                delta = float(rng.uniform(15, 60) if r < hyper else rng.uniform(-70, -15) if r < 0.92 else
                              rng.uniform(-4, 4))
            reqs.append(LesionRequest(
                organ=organ, kind="cyst" if cyst else "tumor", diameter_mm=round(d, 1), label=label,
                hu=None if hu is None else round(hu, 1), hu_delta=None if delta is None else round(delta, 1),
                location=loc, **_texture_and_shape(rng, cyst)))
    return reqs


def insert_with_retries(volume: Volume, labelmap: LabelMap, requests: list[LesionRequest], seed: int
                        ) -> tuple[Volume, LabelMap, list[dict], list[dict]]:
    """Insert lesions one by one; a lesion that does not fit is shrunk (x0.7, up to
    4 times, dropping its location last, never below MIN_DIAMETER_MM) and skipped
    if it still does not fit."""
    truths, skipped = [], []
    for k, req in enumerate(requests):
        r = req
        for attempt in range(5):
            if r.target_volume_ml() < np.pi / 6 * MIN_DIAMETER_MM ** 3 / 1000:
                skipped.append({"request": req.__dict__, "reason": "does not fit at 8 mm or more"})
                break
            try:
                volume, labelmap, t = insert_lesions(volume, labelmap, [r], seed=seed * 7919 + k * 31 + attempt)
                t[0]["lesion_index"] = len(truths) + 1
                truths += t
                break
            except LesionDoesNotFit:
                d = r.diameter_mm * 0.7 if r.diameter_mm else None
                v = r.volume_ml * 0.34 if r.volume_ml else None
                r = LesionRequest(**{**r.__dict__, "diameter_mm": d, "volume_ml": v,
                                     "location": r.location if attempt < 3 else {}})
        else:
            skipped.append({"request": req.__dict__, "reason": "does not fit"})
    return volume, labelmap, truths, skipped


def phantom_case(index: int, seed: int, *, lesions: bool = True, shape=None, spacing=None,
                 population: bool = True) -> tuple:
    """(case_id, Volume, LabelMap, truth) for phantom ``index`` of a dataset seeded ``seed``: a drawn adult
    (``volvqa.synth.population``), or with ``population=False`` the fixed variant table of earlier
    volvqa (unenhanced, ten variants in turn)."""
    grade, fatty, big_kidneys, fatty_pancreas = _VARIANTS[index % len(_VARIANTS)]
    draw = None
    if population:
        from volvqa.knowledge import splenomegaly_grade
        from volvqa.synth.population import draw_case
        draw = draw_case(np.random.default_rng([seed, index, 6]))
        hu = draw["unenhanced_hu"]
        grade = splenomegaly_grade(draw["spleen_ml"])
        fatty = hu["liver"] / hu["spleen"] < 1.0
        fatty_pancreas = hu["pancreas"] / hu["spleen"] < 0.70
        big_kidneys = draw["enlarged_kidneys"]
    case_seed = int(np.random.default_rng([seed, index]).integers(0, 2**31 - 1))
    # Removed organs, independent of the variant table: cholecystectomy 30%,
    # nephrectomy 8% per side, splenectomy 6% (not with a splenomegaly variant).
    r = np.random.default_rng([seed, index, 2]).random(4)
    absent = tuple(n for n, p, x in zip(("gallbladder", "kidney_left", "kidney_right", "spleen"),
                                        (0.30, 0.08, 0.08, 0.06 if grade == "normal" else 0.0), r, strict=False) if x < p)
    if "kidney_left" in absent and "kidney_right" in absent:
        absent = tuple(n for n in absent if n != "kidney_right")
    # Caudate hypertrophy (the caudate-to-right-lobe ratio of cirrhosis) in one case in four.
    caudate = bool(np.random.default_rng([seed, index, 4]).random() < 0.25)
    if draw is not None and caudate and grade == "normal" and "spleen" not in absent and \
            np.random.default_rng([seed, index, 7]).random() < 0.5:
        # Cirrhosis: caudate hypertrophy often comes with splenomegaly (portal hypertension).
        draw["spleen_ml"] = float(np.random.default_rng([seed, index, 8]).uniform(340, 700))
        draw["tails"].append("portal hypertension")
        from volvqa.knowledge import splenomegaly_grade
        grade = splenomegaly_grade(draw["spleen_ml"])
    cfg = PhantomConfig(seed=case_seed, spleen_grade=grade, fatty_liver=fatty, enlarged_kidneys=big_kidneys,
                        fatty_pancreas=fatty_pancreas, absent=absent, caudate_hypertrophy=caudate,
                        population=draw)
    if shape is not None:
        cfg.shape = tuple(shape)
    if spacing is not None:
        cfg.spacing_mm = tuple(spacing)
    ph = generate_phantom(cfg)
    case_id = f"phantom_{index:04d}"
    v = Volume(ph.ct, ph.affine, tuple(cfg.spacing_mm), Source(case_id))
    v.meta["phase"] = ph.truth["phase"]
    lm = LabelMap(ph.labels, {i: L.CANONICAL_NAMES[i] for i in present_ids(ph.labels)},
                  ph.affine, parts=ph.parts,
                  part_labels={i: PARTS_SPEC[i] for i in present_ids(ph.parts)} if ph.parts is not None else {},
                  annotates=PHANTOM_ANNOTATES if ph.parts is not None else PHANTOM_ANNOTATES - frozenset(L.PART_IDS))
    truth = dict(ph.truth, case_id=case_id, lesions=[], skipped_lesions=[])
    if lesions:
        rng = np.random.default_rng([seed, index, 1])
        reqs = population_lesion_requests(rng, set(lm.labels.values()), cfg.phase) if draw is not None else \
            random_lesion_requests(rng, set(lm.labels.values()))
        v, lm, truths, skipped = insert_with_retries(v, lm, reqs, case_seed)
        truth["lesions"], truth["skipped_lesions"] = truths, skipped
    _add_pancreatic_vessels(v, lm, truth, np.random.default_rng([seed, index, 5]))
    return case_id, v, lm, truth


def _add_pancreatic_vessels(v: Volume, lm: LabelMap, truth: dict, rng) -> None:
    """The mesenteric vessels, drawn last; in some cases routed along (abutting) or through (encased by)
    the largest pancreatic tumour, so resectability and T4 fall on every side. Lesions the vessels cut
    are re-measured in the truth."""
    from volvqa.synth.vessels import VESSEL_RADII, paint_pancreatic_vessels
    anchors = truth.get("anchors")
    if not anchors:
        return
    tum = [t for t in truth["lesions"] if t["label"] in ("pancreatic_pdac", "pancreatic_pnet")]
    shift, involvement, cuff, cut_mask = {}, {"kind": "none"}, None, None
    if tum:
        big = max(tum, key=lambda t: t["voxels"])
        kind = str(rng.choice(["none", "abut", "encase"], p=[0.25, 0.35, 0.4]))
        vessel = str(rng.choice(["superior_mesenteric_vein", "superior_mesenteric_artery"], p=[0.45, 0.55]))
        c = np.asarray(big["centroid_mm"], float)
        radius = (3 * big["volume_ml"] * 1000 / (4 * np.pi)) ** (1 / 3)
        if kind == "encase":
            # The vessel runs through the tumour, wrapped in a sleeve of it over the tumour's height.
            zc = float(c[2])
            cuff = {"vessel": vessel, "label": big["label"], "hu": float(big["hu_mean"]),
                    "z_mm": (zc - max(radius, 6.0), zc + max(radius, 6.0))}
        if kind != "none":
            home = np.asarray(vessel_home(anchors, vessel), float)
            d = home - c[:2]
            d = d / max(np.linalg.norm(d), 1e-6)
            # Abutting: the vessel's centre just outside the tumour (under half its circumference inside).
            target = c[:2] if kind == "encase" else c[:2] + d * (radius + 0.45 * VESSEL_RADII[vessel])
            shift = {vessel: (float(target[0]), float(target[1]))}
        involvement = {"kind": kind, "vessel": vessel if kind != "none" else None, "lesion_index": big["lesion_index"]}
        if kind != "none":
            cut_mask = _component_at(lm.array == L.CANONICAL_IDS[big["label"]], big["centroid_voxel"])
    before = lm.array.copy()
    truth["vessels"] = paint_pancreatic_vessels(v.array, lm.array, v.affine, anchors, rng, shift, cuff, cut_mask)
    truth["vessel_involvement"] = involvement
    _debit_organs(before, lm.array, truth, float(np.prod(v.spacing_mm)) / 1000.0)
    counts = np.bincount(lm.array.ravel(), minlength=256)
    lm.labels = {i: n for i, n in lm.labels.items() if counts[i]} | \
        {L.CANONICAL_IDS[n]: n for n in L.PANCREATIC_VESSELS if counts[L.CANONICAL_IDS[n]]}
    _remeasure_lesions(v, lm, truth)


def _component_at(mask: np.ndarray, centroid_voxel) -> np.ndarray:
    """The 26-connected component of ``mask`` whose centroid is nearest ``centroid_voxel``."""
    import cc3d
    cc = cc3d.connected_components(mask, connectivity=26)
    ids = np.arange(1, int(cc.max()) + 1)
    cents = np.array(ndimage.center_of_mass(cc > 0, cc, ids)).reshape(-1, 3)
    return cc == ids[int(np.argmin(np.linalg.norm(cents - np.asarray(centroid_voxel), axis=1)))]


def _debit_organs(before: np.ndarray, after: np.ndarray, truth: dict, voxel_ml: float) -> None:
    """Take the voxels the vessels painted over off the truth volume of the organ they belonged to (an
    organ's volume counts its lesions, so a lesion voxel lost is its organ's loss too)."""
    vessel_ids = [L.CANONICAL_IDS[n] for n in L.PANCREATIC_VESSELS]
    taken = np.isin(after, vessel_ids) & ~np.isin(before, vessel_ids) & (before > 0)
    lost = np.bincount(before[taken], minlength=256)
    for i in np.nonzero(lost)[0]:
        name = L.CANONICAL_NAMES[int(i)]
        if L.is_lesion(name):
            organs = {t["organ"] for t in truth["lesions"] if t["label"] == name}
            name = organs.pop() if len(organs) == 1 else L.LESION_ORGAN.get(name, name)
        rec = truth["labels"].get(name)
        if rec is not None:
            rec["voxels"] -= int(lost[i])
            rec["volume_ml"] = rec["voxels"] * voxel_ml


def vessel_home(anchors: dict, vessel: str) -> tuple[float, float]:
    from volvqa.synth.vessels import vessel_paths
    return tuple(vessel_paths(anchors)[vessel][-1][:2])


def _remeasure_lesions(v: Volume, lm: LabelMap, truth: dict) -> None:
    """Voxels, volume, centroid and mean HU of each truth lesion after the vessels cut into it or its
    sleeve grew round one (the component of its label nearest its old centroid, over the whole volume:
    a sleeve can reach well past the old lesion's box)."""
    import cc3d
    vox_ml = float(np.prod(v.spacing_mm)) / 1000.0
    components = {}
    for t in truth["lesions"]:
        lid = L.CANONICAL_IDS[t["label"]]
        if lid not in components:
            cc = cc3d.connected_components(lm.array == lid, connectivity=26)
            ids = np.arange(1, int(cc.max()) + 1)
            cents = np.array(ndimage.center_of_mass(cc > 0, cc, ids)).reshape(-1, 3) if len(ids) else None
            components[lid] = (cc, ids, cents)
        cc, ids, cents = components[lid]
        if cents is None:
            continue
        k = ids[int(np.argmin(np.linalg.norm(cents - np.asarray(t["centroid_voxel"]), axis=1)))]
        m = cc == k
        n = int(m.sum())
        if n == t["voxels"]:
            continue
        cen = np.argwhere(m).mean(axis=0)
        t.update(voxels=n, volume_ml=n * vox_ml, centroid_voxel=cen.tolist(),
                 centroid_mm=(v.affine[:3, :3] @ cen + v.affine[:3, 3]).tolist(),
                 hu_mean=float(v.array[m].mean()), cut_by_vessels=True)


#: Phantom kinds: the case-id prefix and the function that makes case ``index`` of a dataset seeded ``seed``.
KINDS = ("abdomen", "chest")


def case_prefix(kind: str) -> str:
    return {"abdomen": "phantom", "chest": "chest"}[kind]


def synthetic_case(kind: str, index: int, seed: int, *, lesions: bool = True) -> tuple:
    """(case_id, Volume, LabelMap, truth) of an abdominal or chest phantom."""
    if kind == "chest":
        from volvqa.synth.chest import chest_case
        return chest_case(index, seed, lesions=lesions)
    if kind != "abdomen":
        raise ValueError(f"unknown phantom kind {kind!r}: {', '.join(KINDS)}")
    return phantom_case(index, seed, lesions=lesions)


def kind_annotates(kind: str) -> frozenset[str]:
    if kind == "chest":
        from volvqa.synth.chest import CHEST_ANNOTATES
        return CHEST_ANNOTATES
    return PHANTOM_ANNOTATES


def generate_phantom_dataset(out: str | os.PathLike, n: int, seed: int, *, lesions: bool = True,
                             start: int = 0, progress=None, kind: str = "abdomen") -> list[Path]:
    """Generate phantoms ``start..n-1`` into ``out`` (finished cases are kept)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for i in range(start, n):
        folder = out / f"{case_prefix(kind)}_{i:04d}"
        if not case_done(folder):
            case_id, v, lm, truth = synthetic_case(kind, i, seed, lesions=lesions)
            write_case(folder, v, lm, truth)
        done.append(folder)
        if progress is not None:
            progress(1)
    return done
