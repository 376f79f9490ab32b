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

from volvqa import labels as L
from volvqa.arrays import present_ids
from volvqa.io.atomic import write_text_atomic
from volvqa.io.nifti import write_nifti
from volvqa.records import LabelMap, Source, Volume
from volvqa.synth.lesions import LESION_LABELS, LesionDoesNotFit, LesionRequest, insert_lesions
from volvqa.jsonable import jsonable
from volvqa.synth.phantom import PHANTOM_ORGANS, PhantomConfig, generate_phantom

PARTS_SPEC = {i: n for n, i in L.PART_IDS.items()}
#: What a phantom annotates: its organs, every lesion class lesions are
#: inserted as (a phantom without one has none), and the sub-segments.
PHANTOM_ANNOTATES = frozenset(PHANTOM_ORGANS) | frozenset(LESION_LABELS.values()) | {"pancreatic_pnet"} \
    | frozenset(L.PART_IDS)
#: Smallest lesion the retries shrink to: well above findings' 50 mm^3 floor.
MIN_DIAMETER_MM = 7.0

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
            ("pancreas", [0.65, 0.35], (8, 22)),
            ("spleen", [0.85, 0.15], (8, 25)),
            ("colon", [0.8, 0.2], (12, 30))]
    for organ, probs, (dmin, dmax) in plan:
        if organ == "kidney" and not ({"kidney_left", "kidney_right"} & organs_present):
            continue
        if organ != "kidney" and organ not in organs_present:
            continue
        n = int(rng.choice(len(probs), p=probs))
        for _ in range(n):
            cyst = rng.random() < (0.35 if organ != "spleen" else 0.2) and organ != "colon"
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
                texture_std=float(rng.uniform(1, 4)) if cyst else float(rng.uniform(4, 14)),
                margin="sharp" if cyst or rng.random() < 0.5 else "blurred",
                blur_mm=float(rng.uniform(1.5, 4.0)),
                irregularity=float(rng.uniform(0.02, 0.08)) if cyst else float(rng.uniform(0.05, 0.25)),
                elongation=float(rng.uniform(1.0, 1.3)) if cyst else float(rng.uniform(1.0, 1.6)),
                location=loc))
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


def phantom_case(index: int, seed: int, *, lesions: bool = True, shape=None, spacing=None) -> tuple:
    """(case_id, Volume, LabelMap, truth) for phantom ``index`` of a dataset seeded ``seed``."""
    grade, fatty, big_kidneys, fatty_pancreas = _VARIANTS[index % len(_VARIANTS)]
    case_seed = int(np.random.default_rng([seed, index]).integers(0, 2**31 - 1))
    # Removed organs, independent of the variant table: cholecystectomy 30%,
    # nephrectomy 8% per side, splenectomy 6% (not with a splenomegaly variant).
    r = np.random.default_rng([seed, index, 2]).random(4)
    absent = tuple(n for n, p, x in zip(("gallbladder", "kidney_left", "kidney_right", "spleen"),
                                        (0.30, 0.08, 0.08, 0.06 if grade == "normal" else 0.0), r) if x < p)
    if "kidney_left" in absent and "kidney_right" in absent:
        absent = tuple(n for n in absent if n != "kidney_right")
    # Caudate hypertrophy (the caudate-to-right-lobe ratio of cirrhosis) in one case in four.
    caudate = bool(np.random.default_rng([seed, index, 4]).random() < 0.25)
    cfg = PhantomConfig(seed=case_seed, spleen_grade=grade, fatty_liver=fatty, enlarged_kidneys=big_kidneys,
                        fatty_pancreas=fatty_pancreas, absent=absent, caudate_hypertrophy=caudate)
    if shape is not None:
        cfg.shape = tuple(shape)
    if spacing is not None:
        cfg.spacing_mm = tuple(spacing)
    ph = generate_phantom(cfg)
    case_id = f"phantom_{index:04d}"
    v = Volume(ph.ct, ph.affine, tuple(cfg.spacing_mm), Source(case_id))
    lm = LabelMap(ph.labels, {i: L.CANONICAL_NAMES[i] for i in present_ids(ph.labels)},
                  ph.affine, parts=ph.parts,
                  part_labels={i: PARTS_SPEC[i] for i in present_ids(ph.parts)} if ph.parts is not None else {},
                  annotates=PHANTOM_ANNOTATES if ph.parts is not None else PHANTOM_ANNOTATES - frozenset(L.PART_IDS))
    truth = dict(ph.truth, case_id=case_id, lesions=[], skipped_lesions=[])
    if lesions:
        rng = np.random.default_rng([seed, index, 1])
        reqs = random_lesion_requests(rng, set(lm.labels.values()))
        v, lm, truths, skipped = insert_with_retries(v, lm, reqs, case_seed)
        truth["lesions"], truth["skipped_lesions"] = truths, skipped
    return case_id, v, lm, truth


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
