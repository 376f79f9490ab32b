"""The one registry of question templates.

A template declares its id, category (Recognition, Measurement, Visual
Reasoning, Medical Reasoning, Localization), subtype, answer type, the
findings it needs (a case lacking them, or with an incomplete organ, yields
no item), two to four paraphrases, unit and rounding, the clinical rule it
applies (``volvqa.knowledge``) and an answer function. The answer function
returns one ``Instance`` per question it can ask of a case: parameters (the
organ asked about), the answer, the evidence values it used, and the voxel
boxes of the structures the answer rests on. Options are built later
(``volvqa.qa.options``), from the whole dataset's answers.

A new question type is one function here plus its test.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from volvqa import knowledge as K
from volvqa import labels as L
from volvqa.qa.context import GROUPS, CaseContext, organ_text

CATEGORIES = ("Recognition", "Measurement", "Visual Reasoning", "Medical Reasoning", "Localization")
ANSWER_TYPES = ("binary", "numeric", "categorical", "bbox")


@dataclass
class Instance:
    params: dict[str, Any]
    answer: Any
    evidence: dict[str, Any]
    boxes: list[list[int]]
    key_slice: int | None
    label_set: list[str] | None = None


@dataclass(frozen=True)
class Template:
    id: str
    category: str
    subtype: str                 # may use {organ} etc. from the instance's params
    answer_type: str
    paraphrases: tuple[str, ...]
    fn: Callable[[CaseContext], Iterable[Instance]]
    needs: str
    unit: str = ""
    decimals: int = 0
    rule: str | None = None      # key in volvqa.knowledge.RULES (medical reasoning)
    integer: bool = False
    signed: bool = False         # numeric answers that may be negative
    label_set: tuple[str, ...] = field(default_factory=tuple)
    #: Parameters that identify the question kind for priors, pools and balance
    #: (None: all); per-lesion identifiers such as the slice are left out.
    key_params: tuple[str, ...] | None = None
    #: What the masks must annotate for the question to be asked, formatted
    #: with the instance's parameters: ``organ:NAME`` (the structure is
    #: present or absent, not unknown), ``lesions:FAMILY`` (the family's
    #: lesions are annotated), ``kind:FAMILY:KIND`` (that lesion kind is),
    #: ``parts:ORGAN`` (its sub-segments are). Checked for every generated
    #: item (``unmet_requirement``), and named by the grounded answerer
    #: when it cannot answer.
    requires: tuple[str, ...] = ()

    def subtype_of(self, params: dict) -> str:
        return self.subtype.format(**{k: organ_text(v) if isinstance(v, str) else v for k, v in params.items()})


def _family(name: str) -> str:
    return "kidney" if name.startswith("kidney") else name


def unmet_requirement(t: Template, params: dict, ctx: CaseContext) -> str | None:
    """Why the case's masks cannot carry this question, as a clause ("the
    masks do not annotate the spleen", "the liver mask failed quality
    control (...)"), or None when every one of ``t.requires`` is met. A
    requirement naming a parameter the reading lacks is skipped."""
    f = ctx.findings
    for req in t.requires:
        try:
            req = req.format(**params)
        except (KeyError, IndexError):
            continue
        kind, _, what = req.partition(":")
        if kind == "organ" and ctx.status(what) == "unknown":
            return _why(f, what)
        if kind == "lesions" and not ctx.annotated(_family(what)):
            fam = _family(what)
            if ctx.status(fam) == "unknown":
                return _why(f, fam)
            les = [n for n, o in L.LESION_ORGAN.items() if o == fam]
            bad = [n for n in les if n in f.excluded]
            if bad:
                return f"the {organ_text(fam)} lesion masks failed quality control ({f.excluded[bad[0]]})"
            return f"the masks do not annotate {organ_text(fam)} lesions"
        if kind == "kind":
            fam, _, k = what.partition(":")
            if not ctx.kind_annotated(fam, k):
                return f"the masks do not annotate {organ_text(fam)} {k}s as such"
        if kind == "parts" and not ctx.has_parts(what):
            return "the masks do not annotate the Couinaud segments" if what == "liver" else \
                f"the masks do not annotate the {organ_text(what)}'s parts"
    return None


def _why(f, name: str) -> str:
    members = GROUPS.get(name, (name,))
    bad = [m for m in members if m in f.excluded]
    if bad:
        return f"the {organ_text(bad[0])} mask failed quality control ({f.excluded[bad[0]]})"
    return f"the masks do not annotate the {organ_text(name)}"


TEMPLATES: dict[str, Template] = {}


def register(**kw):
    def deco(fn):
        t = Template(fn=fn, **kw)
        assert t.category in CATEGORIES and t.answer_type in ANSWER_TYPES, t.id
        assert 2 <= len(t.paraphrases) <= 4, t.id
        if t.id in TEMPLATES:
            raise ValueError(f"duplicate template id {t.id}")
        TEMPLATES[t.id] = t
        return fn
    return deco


# --- helpers -------------------------------------------------------------------------------------

def _z(ctx: CaseContext, centroid_mm) -> int:
    aff = np.asarray(ctx.findings.affine_ras_mm)
    idx = np.linalg.solve(aff[:3, :3], np.asarray(centroid_mm) - aff[:3, 3])
    return int(round(float(idx[2])))


def _stable(*parts: str) -> int:
    """A hash that does not change between runs (Python's hash() does)."""
    import hashlib
    return int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:8], "big")


def _yn(b: bool) -> str:
    return "yes" if b else "no"


LESION_FAMILIES = ("liver", "kidney", "pancreas", "colon")
VOLUME_ORGANS = ("liver", "spleen", "kidney_left", "kidney_right", "pancreas", "gallbladder")
HU_ORGANS = ("liver", "spleen", "kidney_left", "kidney_right", "pancreas")
#: Organs a patient may lack after surgery, and the landmark whose full
#: craniocaudal extent in the scan shows that the organ's place is in view
#: (an organ the scan does not reach is not "absent").
PRESENCE_LANDMARKS = {"gallbladder": ("liver",), "spleen": ("liver",), "kidney_left": ("kidney_right", "liver"),
                      "kidney_right": ("kidney_left", "liver")}
CONTACT_ORGANS = ("liver", "spleen", "kidney_left", "kidney_right", "pancreas", "gallbladder", "stomach",
                  "aorta", "inferior_vena_cava", "colon", "small_bowel")


def _family_organs(ctx: CaseContext, family: str) -> list:
    if family == "kidney":
        return [o for o in (ctx.organ("kidney_left"), ctx.organ("kidney_right")) if o is not None]
    o = ctx.organ(family)
    return [o] if o is not None else []


def _family_box(ctx: CaseContext, family: str) -> list[list[int]]:
    return [o.bbox_voxel for o in _family_organs(ctx, family)]


def _loc_text(les) -> str | None:
    loc = les.location
    if les.organ == "liver" and loc.get("segments"):
        shares = loc.get("segment_shares", {})
        seg = max(loc["segments"], key=lambda s: (shares.get(str(s), 0), -s))
        return f"segment {seg}"
    if les.organ == "pancreas" and loc.get("part"):
        return loc["part"]
    if les.organ.startswith("kidney") and loc.get("pole"):
        return f"{loc['pole']} pole"
    return None


LOCATION_LABELS = {
    "liver": [f"segment {i}" for i in range(1, 9)],
    "pancreas": ["head", "body", "tail"],
    "kidney": ["upper pole", "interpolar", "lower pole"],
}


# --- Recognition ---------------------------------------------------------------------------------

@register(id="rec.lesion_exists", category="Recognition", subtype="{organ} lesion existence",
          answer_type="binary", needs="organ present; the dataset annotates its lesions",
          requires=('lesions:{organ}',),
          paraphrases=("Is there a lesion in the {organ}?", "Does the {organ} contain any lesion?",
                       "Are any lesions visible in the {organ}?"))
def lesion_exists(ctx):
    for fam in LESION_FAMILIES:
        organs = _family_organs(ctx, fam)
        if not organs or not ctx.annotated(fam):
            continue
        les = ctx.lesions(fam)
        boxes = [les[0].bbox_voxel] if les else _family_box(ctx, fam)
        z = les[0].axial_slice if les else _z(ctx, organs[0].centroid_mm)
        yield Instance({"organ": fam}, _yn(bool(les)), {"lesion_count": len(les)}, boxes, z)


@register(id="rec.kidney_kind_exists", category="Recognition", subtype="kidney {kind} existence",
          answer_type="binary", needs="a kidney; kidney tumors and cysts annotated separately",
          requires=('lesions:kidney', 'kind:kidney:{kind}'),
          paraphrases=("Is there a kidney {kind} in this scan?", "Does either kidney have a {kind}?",
                       "Can you see a renal {kind}?"))
def kidney_kind_exists(ctx):
    if not _family_organs(ctx, "kidney") or not ctx.annotated("kidney"):
        return
    for kind in ("tumor", "cyst"):
        if not ctx.kind_annotated("kidney", kind):
            continue
        les = [x for x in ctx.lesions("kidney") if x.kind == kind]
        boxes = [les[0].bbox_voxel] if les else _family_box(ctx, "kidney")
        z = les[0].axial_slice if les else _z(ctx, _family_organs(ctx, "kidney")[0].centroid_mm)
        yield Instance({"kind": kind}, _yn(bool(les)), {f"kidney_{kind}_count": len(les)}, boxes, z)


@register(id="rec.organ_presence", category="Recognition", subtype="{organ} presence", answer_type="binary",
          needs="an abdominal scan (organs that may have been removed: gallbladder, kidneys, spleen)",
          requires=('organ:{organ}',),
          paraphrases=("Is the {organ} present in this scan?", "Does this CT show a {organ}?",
                       "Can a {organ} be seen in this image?"))
def organ_presence(ctx):
    if ctx.organ("liver") is None and ctx.organ("kidney_left") is None and ctx.organ("kidney_right") is None:
        return  # not an abdominal field of view
    for n in ("gallbladder", "kidney_left", "kidney_right", "spleen"):
        o = ctx.organ(n)
        if o is not None:
            yield Instance({"organ": n}, "yes", {"voxels": o.voxels}, [o.bbox_voxel], _z(ctx, o.centroid_mm))
            continue
        if ctx.status(n) != "absent":
            continue  # not annotated: nothing can be said
        landmark = _in_view_landmark(ctx, n)
        if landmark is None:
            continue  # its place may lie outside the scan
        # Absent anywhere: the answer rests on the whole scan, so the box is the scan's.
        shape = ctx.findings.shape
        yield Instance({"organ": n}, "no", {"voxels": 0, "annotated": True, "in_view_landmark": landmark.name},
                       [[0, 0, 0, shape[0] - 1, shape[1] - 1, shape[2] - 1]], _z(ctx, landmark.centroid_mm))


def _in_view_landmark(ctx, name: str):
    """A present organ whose whole craniocaudal extent lies inside the scan
    and that brackets ``name``'s usual level, or None."""
    nz = ctx.findings.shape[2]
    for lm_name in PRESENCE_LANDMARKS[name]:
        o = ctx.organ(lm_name)
        if o is not None and o.bbox_voxel[2] > 0 and o.bbox_voxel[5] < nz - 1:
            return o
    return None


@register(id="rec.splenomegaly", category="Recognition", subtype="splenomegaly detection", answer_type="binary",
          needs="complete spleen", rule="splenomegaly",
          requires=('organ:spleen',),
          paraphrases=("Does the patient have splenomegaly?", "Is the spleen enlarged?",
                       "Is there splenomegaly in this scan?"))
def splenomegaly(ctx):
    s = ctx.complete("spleen")
    if s:
        yield Instance({}, _yn(s.volume_ml > K.SPLENOMEGALY_ML),
                       {"spleen_volume_ml": s.volume_ml, "threshold_ml": K.SPLENOMEGALY_ML, "rule": "splenomegaly"},
                       [s.bbox_voxel], _z(ctx, s.centroid_mm))


# --- Measurement ---------------------------------------------------------------------------------

@register(id="meas.organ_volume", category="Measurement", subtype="{organ} volume", answer_type="numeric",
          unit="ml", decimals=1, needs="complete organ",
          requires=('organ:{organ}',),
          paraphrases=("What is the volume of the {organ} in ml?", "How large is the {organ} (volume, ml)?",
                       "Estimate the {organ} volume in milliliters."))
def organ_volume(ctx):
    for n in VOLUME_ORGANS:
        o = ctx.complete(n)
        if o:
            yield Instance({"organ": n}, round(o.volume_ml, 1), {"volume_ml": o.volume_ml, "voxels": o.voxels},
                           [o.bbox_voxel], _z(ctx, o.centroid_mm))


@register(id="meas.organ_hu", category="Measurement", subtype="{organ} mean HU", answer_type="numeric",
          unit="HU", decimals=1, signed=True, needs="organ present",
          requires=('organ:{organ}',),
          paraphrases=("What is the mean attenuation of the {organ} in HU?",
                       "What is the average Hounsfield unit value of the {organ} parenchyma?",
                       "Give the {organ}'s mean density in HU."))
def organ_hu(ctx):
    for n in HU_ORGANS:
        o = ctx.organ(n)
        if o:
            yield Instance({"organ": n}, round(o.hu_mean, 1), {"hu_mean": o.hu_mean, "hu_std": o.hu_std},
                           [o.bbox_voxel], _z(ctx, o.centroid_mm))


@register(id="meas.hu_ratio", category="Measurement", subtype="{organ}/spleen HU ratio", answer_type="numeric",
          decimals=2, needs="organ and spleen present, spleen mean above 0 HU",
          requires=('organ:{organ}', 'organ:spleen'),
          paraphrases=("What is the {organ}-to-spleen attenuation ratio?",
                       "Compute the ratio of mean {organ} HU to mean spleen HU.",
                       "What is the {organ}/spleen Hounsfield unit ratio?"))
def hu_ratio(ctx):
    s = ctx.organ("spleen")
    for n in ("liver", "pancreas"):
        o = ctx.organ(n)
        if o and s and s.hu_mean > 1:
            r = o.hu_mean / s.hu_mean
            yield Instance({"organ": n}, round(r, 2), {f"{n}_hu": o.hu_mean, "spleen_hu": s.hu_mean, "ratio": r},
                           [o.bbox_voxel, s.bbox_voxel], _z(ctx, o.centroid_mm))


@register(id="meas.largest_lesion_volume", category="Measurement", subtype="largest {organ} lesion volume",
          answer_type="numeric", unit="ml", decimals=2, needs="at least one lesion in the organ",
          requires=('lesions:{organ}',),
          paraphrases=("What is the volume of the largest {organ} lesion in ml?",
                       "How big is the largest lesion in the {organ} (ml)?",
                       "Estimate the volume of the biggest {organ} lesion in milliliters."))
def largest_lesion_volume(ctx):
    for fam in LESION_FAMILIES:
        les = ctx.lesions(fam)
        if les and ctx.annotated(fam):
            x = les[0]
            yield Instance({"organ": fam}, round(x.volume_ml, 2), {"volume_ml": x.volume_ml, "lesion_id": x.lesion_id},
                           [x.bbox_voxel], x.axial_slice)


@register(id="meas.tumor_burden", category="Measurement", subtype="{organ} tumor burden", answer_type="numeric",
          unit="%", decimals=2, needs="complete organ with at least one lesion",
          requires=('lesions:{organ}',),
          paraphrases=("What percentage of the {organ} volume is occupied by lesions?",
                       "What is the {organ} tumor burden (lesion volume as % of organ volume)?",
                       "How much of the {organ}, in percent of its volume, is lesion?"))
def tumor_burden(ctx):
    for fam in ("liver", "pancreas"):
        o = ctx.complete(fam)
        les = ctx.lesions(fam)
        if o and les and ctx.annotated(fam):
            v = sum(x.volume_ml for x in les)
            pct = 100.0 * v / o.volume_ml
            yield Instance({"organ": fam}, round(pct, 2), {"lesion_volume_ml": v, "organ_volume_ml": o.volume_ml},
                           [o.bbox_voxel], les[0].axial_slice)


# --- Visual reasoning ----------------------------------------------------------------------------

@register(id="vr.lesion_count", category="Visual Reasoning", subtype="{organ} lesion counting",
          answer_type="numeric", integer=True, needs="organ present; lesions annotated",
          requires=('lesions:{organ}',),
          paraphrases=("How many lesions are in the {organ}?", "Count the lesions in the {organ}.",
                       "What is the number of {organ} lesions?"))
def lesion_count(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        if _family_organs(ctx, fam) and ctx.annotated(fam):
            les = ctx.lesions(fam)
            yield Instance({"organ": fam}, len(les), {"lesion_ids": [x.lesion_id for x in les]},
                           [x.bbox_voxel for x in les] or _family_box(ctx, fam),
                           les[0].axial_slice if les else _z(ctx, _family_organs(ctx, fam)[0].centroid_mm))


@register(id="vr.lesion_count_by_location", category="Visual Reasoning", subtype="{organ} lesion count by location",
          answer_type="numeric", integer=True, needs="lesions with a location (segments, parts or poles)",
          requires=('lesions:{organ}',),
          paraphrases=("How many {organ} lesions are located {where}?",
                       "Count the {organ} lesions {where}.",
                       "What is the number of lesions {where} of the {organ}?"))
def lesion_count_by_location(ctx):
    for fam in ("liver", "pancreas", "kidney"):
        les = ctx.lesions(fam)
        if not les or not ctx.annotated(fam):
            continue
        places = sorted({_loc_text(x) for x in les if _loc_text(x)})
        if not places:
            continue
        chosen = LOCATION_LABELS[fam] if ctx.exhaustive else [places[_stable(ctx.case_id, fam) % len(places)]]
        for place in chosen:
            hit = [x for x in les if _loc_text(x) == place]
            where = f"in {place}" if place.startswith("segment") else f"in the {place}"
            yield Instance({"organ": fam, "place": place, "where": where}, len(hit),
                           {"lesions_at_place": [x.lesion_id for x in hit]},
                           [x.bbox_voxel for x in hit] or _family_box(ctx, fam),
                           hit[0].axial_slice if hit else les[0].axial_slice)


@register(id="vr.largest_lesion_diameter", category="Visual Reasoning", subtype="largest {organ} lesion diameter",
          answer_type="numeric", unit="mm", decimals=1, needs="a lesion in the organ",
          requires=('lesions:{organ}',),
          paraphrases=("What is the longest axial diameter of the largest {organ} lesion in mm?",
                       "How long is the largest {organ} lesion on axial images (mm)?",
                       "Measure the largest {organ} lesion's long axis in millimeters."))
def largest_lesion_diameter(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        les = ctx.lesions(fam)
        if les and ctx.annotated(fam):
            x = les[0]
            yield Instance({"organ": fam}, round(x.long_axis_mm, 1),
                           {"long_axis_mm": x.long_axis_mm, "short_axis_mm": x.short_axis_mm, "slice": x.axial_slice},
                           [x.bbox_voxel], x.axial_slice)


@register(id="vr.largest_lesion_slice", category="Visual Reasoning", subtype="largest {organ} lesion slice",
          answer_type="numeric", integer=True, needs="a lesion in the organ",
          requires=('lesions:{organ}',),
          paraphrases=("On which axial slice (index) is the largest {organ} lesion widest?",
                       "Which axial slice number shows the longest diameter of the largest {organ} lesion?"))
def largest_lesion_slice(ctx):
    for fam in ("liver", "kidney"):
        les = ctx.lesions(fam)
        if les and ctx.annotated(fam):
            x = les[0]
            yield Instance({"organ": fam}, int(x.axial_slice), {"long_axis_mm": x.long_axis_mm},
                           [x.bbox_voxel], x.axial_slice)


@register(id="vr.largest_lesion_location", category="Visual Reasoning", subtype="largest {organ} lesion location",
          answer_type="categorical", needs="a lesion with a location (segment masks, pancreas axis, kidney extent)",
          requires=('lesions:{organ}',),
          paraphrases=("Where is the largest {organ} lesion located?", "In which part of the {organ} is its largest lesion?",
                       "Which {organ} region holds the largest lesion?"))
def largest_lesion_location(ctx):
    for fam in ("liver", "pancreas", "kidney"):
        les = ctx.lesions(fam)
        if les and ctx.annotated(fam) and _loc_text(les[0]):
            x = les[0]
            yield Instance({"organ": fam}, _loc_text(x), {"location": x.location}, [x.bbox_voxel], x.axial_slice,
                           label_set=LOCATION_LABELS[fam])


@register(id="vr.largest_lesion_attenuation", category="Visual Reasoning",
          subtype="largest {organ} lesion attenuation", answer_type="categorical",
          needs="a lesion in the organ and the organ's parenchyma",
          requires=('lesions:{organ}',),
          paraphrases=("Is the largest {organ} lesion hypoattenuating, isoattenuating or hyperattenuating?",
                       "How does the largest {organ} lesion's density compare with the {organ}?",
                       "What is the attenuation of the largest {organ} lesion relative to the {organ}?"))
def largest_lesion_attenuation(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        les = ctx.lesions(fam)
        if les and ctx.annotated(fam) and les[0].attenuation in ("hypo", "iso", "hyper"):
            x = les[0]
            text = {"hypo": "hypoattenuating", "iso": "isoattenuating", "hyper": "hyperattenuating"}[x.attenuation]
            yield Instance({"organ": fam}, text, {"lesion_hu": x.hu_mean, "hu_difference": x.hu_difference},
                           [x.bbox_voxel], x.axial_slice,
                           label_set=["hypoattenuating", "isoattenuating", "hyperattenuating"])


@register(id="vr.kidney_volume_comparison", category="Visual Reasoning", subtype="kidney volume comparison",
          answer_type="categorical", needs="both kidneys complete",
          requires=('organ:kidney_left', 'organ:kidney_right'),
          paraphrases=("Which kidney is larger, the left or the right?", "Is the left or the right kidney bigger by volume?"))
def kidney_volume_comparison(ctx):
    a, b = ctx.complete("kidney_left"), ctx.complete("kidney_right")
    if a and b:
        yield Instance({}, "left" if a.volume_ml > b.volume_ml else "right",
                       {"left_ml": a.volume_ml, "right_ml": b.volume_ml}, [a.bbox_voxel, b.bbox_voxel],
                       _z(ctx, a.centroid_mm), label_set=["left", "right"])


@register(id="vr.kidney_lesion_asymmetry", category="Visual Reasoning", subtype="bilateral kidney lesion asymmetry",
          answer_type="categorical", needs="both kidneys, kidney lesions annotated, at least one lesion",
          requires=('lesions:kidney',),
          paraphrases=("Which kidney has more lesions: left, right, or are they equal?",
                       "Compare the number of lesions in the left and right kidneys."))
def kidney_lesion_asymmetry(ctx):
    if ctx.organ("kidney_left") and ctx.organ("kidney_right") and ctx.annotated("kidney") and ctx.lesions("kidney"):
        les = ctx.lesions("kidney")
        nl = sum(x.organ == "kidney_left" for x in les)
        nr = sum(x.organ == "kidney_right" for x in les)
        vl = sum(x.volume_ml for x in les if x.organ == "kidney_left")
        vr = sum(x.volume_ml for x in les if x.organ == "kidney_right")
        # More lesions; with as many on each side, more lesion volume (DeepTumorVQA: count or volume).
        ans = "left" if (nl, vl) > (nr, vr) else ("right" if (nr, vr) > (nl, vl) else "equal")
        yield Instance({}, ans, {"left_count": nl, "right_count": nr, "left_volume_ml": vl, "right_volume_ml": vr,
                                 "rule": "kidney_lesion_asymmetry"},
                       [x.bbox_voxel for x in les], les[0].axial_slice, label_set=["left", "right", "equal"])


@register(id="vr.lesion_outlier", category="Visual Reasoning", subtype="{organ} lesion outlier", answer_type="binary",
          needs=">= 3 lesions in the organ", rule="lesion_outlier",
          requires=('lesions:{organ}',),
          paraphrases=("Is the largest {organ} lesion at least three times the volume of the second largest?",
                       "Does one {organ} lesion dominate, being 3x or more the volume of the next largest?"))
def lesion_outlier(ctx):
    for fam in ("liver", "kidney"):
        les = ctx.lesions(fam)
        if len(les) >= 3 and ctx.annotated(fam):
            r = les[0].volume_ml / max(les[1].volume_ml, 1e-9)
            yield Instance({"organ": fam}, _yn(r >= 3.0), {"largest_ml": les[0].volume_ml, "second_ml": les[1].volume_ml,
                                                           "ratio": r, "rule": "lesion_outlier"},
                           [les[0].bbox_voxel, les[1].bbox_voxel], les[0].axial_slice)


@register(id="vr.liver_lesion_clustering", category="Visual Reasoning", subtype="liver lesion clustering",
          answer_type="categorical", needs=">= 2 liver lesions and liver segment masks", rule="liver_lesion_clustering",
          requires=('lesions:liver', 'parts:liver'),
          paraphrases=("How are the liver lesions distributed across the Couinaud segments?",
                       "Are the liver lesions clustered in one segment or widely distributed?"))
def liver_lesion_clustering(ctx):
    les = ctx.lesions("liver")
    segs = [_loc_text(x) for x in les]
    if len(les) >= 2 and all(segs) and ctx.annotated("liver") and ctx.has_parts("liver"):
        counts = sorted((segs.count(s) for s in set(segs)), reverse=True)
        top = counts[0] / len(les)
        top2 = sum(counts[:2]) / len(les)
        ans = "highly clustered" if top > 0.5 else ("somewhat clustered" if top2 >= 0.75 else "widely distributed")
        yield Instance({}, ans, {"segments": segs, "top_share": top, "top2_share": top2,
                                 "rule": "liver_lesion_clustering"},
                       [x.bbox_voxel for x in les], les[0].axial_slice,
                       label_set=["highly clustered", "somewhat clustered", "widely distributed"])


@register(id="vr.organ_enlargement", category="Visual Reasoning", subtype="{organ} enlargement", answer_type="binary",
          needs="complete organ (liver, spleen, a kidney, pancreas)", rule="organ_enlarged",
          requires=('organ:{organ}',),
          paraphrases=("Is the {organ} enlarged?", "Is the {organ} larger than normal by volume?",
                       "Does the {organ} appear enlarged?"))
def organ_enlargement(ctx):
    for n in ("liver", "spleen", "kidney_left", "kidney_right", "pancreas"):
        o = ctx.complete(n)
        if o:
            yield Instance({"organ": n}, _yn(o.volume_ml > K.ENLARGED_ML[n]),
                           {"volume_ml": o.volume_ml, "threshold_ml": K.ENLARGED_ML[n], "rule": "organ_enlarged"},
                           [o.bbox_voxel], _z(ctx, o.centroid_mm))


@register(id="vr.lesion_organ_hu_difference", category="Visual Reasoning",
          subtype="{organ} tumor-organ HU difference", answer_type="numeric", unit="HU", decimals=1, signed=True,
          needs="a lesion in the organ",
          requires=('lesions:{organ}',),
          paraphrases=("By how many HU does the largest {organ} lesion differ from the {organ} parenchyma (lesion minus organ)?",
                       "What is the attenuation difference in HU between the largest {organ} lesion and the {organ}?"))
def lesion_organ_hu_difference(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        les = ctx.lesions(fam)
        if les and ctx.annotated(fam) and not np.isnan(les[0].hu_difference):
            x = les[0]
            yield Instance({"organ": fam}, round(x.hu_difference, 1), {"lesion_hu": x.hu_mean, "difference": x.hu_difference},
                           [x.bbox_voxel], x.axial_slice)


@register(id="vr.adjacent_organ", category="Visual Reasoning", subtype="{organ} adjacent organ",
          answer_type="categorical", needs="an organ touching another (shared voxel face)",
          requires=('organ:{organ}',),
          paraphrases=("Which of these structures is in contact with the {organ}?",
                       "Which organ directly touches the {organ}?", "What structure borders the {organ}?"))
def adjacent_organ(ctx):
    pairs = {tuple(p) for p in ctx.findings.contacts}
    for n in ("liver", "spleen", "pancreas", "kidney_left", "kidney_right"):
        o = ctx.organ(n)
        if o is None:
            continue
        touching = sorted(m for m in CONTACT_ORGANS if m != n and tuple(sorted((n, m))) in pairs)
        others = [m for m in CONTACT_ORGANS if m != n and m not in touching and ctx.organ(m) is not None]
        if touching and len(others) >= 3:
            pick = touching[_stable(ctx.case_id, n) % len(touching)]
            yield Instance({"organ": n}, organ_text(pick), {"touching": touching},
                           [o.bbox_voxel, ctx.organ(pick).bbox_voxel], _z(ctx, o.centroid_mm),
                           label_set=[organ_text(pick)] + [organ_text(m) for m in others])


@register(id="vr.multi_organ_burden", category="Visual Reasoning", subtype="multi-organ lesion burden comparison",
          answer_type="categorical", needs="lesions in at least two organ families whose lesions are annotated",
          requires=(), key_params=(),
          paraphrases=("Which of the {organs} has the largest total lesion volume?",
                       "Among the {organs}, where is the lesion burden (total lesion volume) highest?"))
def multi_organ_burden(ctx):
    # Only families whose lesions are annotated can be compared, and the
    # question names them: an organ outside the list may hold more.
    fams = [f for f in ("liver", "kidney", "pancreas", "spleen", "colon") if ctx.annotated(f)]
    burden = {f: sum(x.volume_ml for x in ctx.lesions(f)) for f in fams}
    if sum(v > 0 for v in burden.values()) >= 2:
        best = max(burden, key=lambda f: (burden[f], f))
        yield Instance({"organs": "+".join(fams)}, organ_text(best), {"burden_ml": burden},
                       [ctx.lesions(f)[0].bbox_voxel for f in fams if ctx.lesions(f)],
                       ctx.lesions(best)[0].axial_slice, label_set=[organ_text(f) for f in fams])


@register(id="vr.organ_aggregation", category="Visual Reasoning", subtype="{organ} combined volume",
          answer_type="numeric", unit="ml", decimals=1, needs="all summed organs complete",
          requires=('organ:{organ}',),
          paraphrases=("What is the combined volume of the {organ} in ml?", "Add up the volumes of the {organ} (ml).",
                       "What is the total volume of the {organ}, in milliliters?"))
def organ_aggregation(ctx):
    groups = {"kidneys": ("kidney_left", "kidney_right"), "liver and spleen": ("liver", "spleen")}
    for name, members in groups.items():
        os_ = [ctx.complete(m) for m in members]
        if all(os_):
            v = sum(o.volume_ml for o in os_)
            yield Instance({"organ": name}, round(v, 1), {m: o.volume_ml for m, o in zip(members, os_)},
                           [o.bbox_voxel for o in os_], _z(ctx, os_[0].centroid_mm))


# --- Medical reasoning ---------------------------------------------------------------------------

@register(id="med.splenomegaly_grade", category="Medical Reasoning", subtype="splenomegaly grading",
          answer_type="categorical", needs="complete spleen", rule="splenomegaly",
          requires=('organ:spleen',),
          paraphrases=("How would you grade the spleen size (normal, mild, moderate or severe splenomegaly)?",
                       "What is the splenomegaly grade?", "Grade the spleen: normal, mild, moderate or severe enlargement?"))
def splenomegaly_grade(ctx):
    s = ctx.complete("spleen")
    if s:
        yield Instance({}, K.splenomegaly_grade(s.volume_ml), {"spleen_volume_ml": s.volume_ml, "rule": "splenomegaly"},
                       [s.bbox_voxel], _z(ctx, s.centroid_mm), label_set=["normal", "mild", "moderate", "severe"])


@register(id="med.fatty_liver", category="Medical Reasoning", subtype="fatty liver", answer_type="binary",
          needs="liver and spleen", rule="fatty_liver_ls_ratio",
          requires=('organ:liver', 'organ:spleen'),
          paraphrases=("Does the patient have a fatty liver?", "Is there hepatic steatosis by the liver-to-spleen ratio?",
                       "Is the liver fatty (liver/spleen attenuation below 1.0)?"))
def fatty_liver(ctx):
    liv, s = ctx.organ("liver"), ctx.organ("spleen")
    if liv and s and s.hu_mean > 1:
        r = liv.hu_mean / s.hu_mean
        yield Instance({}, _yn(r < K.FATTY_LIVER_LS_RATIO), {"liver_hu": liv.hu_mean, "spleen_hu": s.hu_mean, "ratio": r,
                                                             "rule": "fatty_liver_ls_ratio"},
                       [liv.bbox_voxel, s.bbox_voxel], _z(ctx, liv.centroid_mm))


@register(id="med.steatosis_grade", category="Medical Reasoning", subtype="hepatic steatosis grade",
          answer_type="categorical", needs="liver and spleen", rule="steatosis_grade",
          requires=('organ:liver', 'organ:spleen'),
          paraphrases=("What is the grade of hepatic steatosis?",
                       "Grade the liver fat: none, mild, moderate or severe?"))
def steatosis(ctx):
    liv, s = ctx.organ("liver"), ctx.organ("spleen")
    if liv and s and s.hu_mean > 1:
        r = liv.hu_mean / s.hu_mean
        yield Instance({}, K.steatosis_grade(liv.hu_mean, r), {"liver_hu": liv.hu_mean, "ls_ratio": r,
                                                               "rule": "steatosis_grade"},
                       [liv.bbox_voxel], _z(ctx, liv.centroid_mm), label_set=list(K.STEATOSIS_ORDER))


@register(id="med.pancreatic_steatosis", category="Medical Reasoning", subtype="pancreatic steatosis",
          answer_type="binary", needs="pancreas and spleen", rule="pancreatic_steatosis",
          requires=('organ:pancreas', 'organ:spleen'),
          paraphrases=("Is there pancreatic steatosis?", "Is the pancreas fatty (pancreas/spleen attenuation below 0.70)?"))
def pancreatic_steatosis(ctx):
    p, s = ctx.organ("pancreas"), ctx.organ("spleen")
    if p and s and s.hu_mean > 1:
        r = p.hu_mean / s.hu_mean
        yield Instance({}, _yn(r < K.PANCREATIC_STEATOSIS_PS_RATIO), {"pancreas_hu": p.hu_mean, "spleen_hu": s.hu_mean,
                                                                      "ratio": r, "rule": "pancreatic_steatosis"},
                       [p.bbox_voxel, s.bbox_voxel], _z(ctx, p.centroid_mm))


@register(id="med.pancreatic_t_stage", category="Medical Reasoning", subtype="pancreatic tumor T-stage",
          answer_type="categorical", needs="a pancreatic tumor (T4 needs the SMA, celiac trunk and CHA annotated)",
          rule="pancreas_t_stage", key_params=(),
          requires=('lesions:pancreas',),
          paraphrases=("What is the T-stage of the pancreatic tumor {basis} (AJCC 8th edition)?",
                       "Based on {basis}, what T category is the pancreatic tumor?"))
def pancreatic_t_stage(ctx):
    les = [x for x in ctx.lesions("pancreas") if x.kind == "tumor"]
    if les and ctx.annotated("pancreas"):
        x = les[0]
        arteries = all(ctx.status(v) != "unknown" for v in K.PANCREATIC_ARTERIES)
        stage = K.pancreas_t_stage(x.max_diameter_3d_mm)
        ev = {"greatest_dimension_mm": x.max_diameter_3d_mm, "rule": "pancreas_t_stage"}
        if arteries:
            touched = {v: x.vessel_contact.get(v, 0.0) for v in K.PANCREATIC_ARTERIES}
            ev["arterial_contact_deg"] = touched
            if any(a > 0 for a in touched.values()):
                stage = "T4"
        basis = "by size and arterial involvement" if arteries else "by size"
        yield Instance({"basis": basis}, stage, ev, [x.bbox_voxel], x.axial_slice,
                       label_set=["T1", "T2", "T3", "T4"] if arteries else ["T1", "T2", "T3"])


@register(id="med.pancreatic_resectability", category="Medical Reasoning", subtype="pancreatic lesion resectability",
          answer_type="categorical", needs="a pancreatic tumor and the SMA, celiac trunk, CHA, SMV and portal vein",
          rule="pancreatic_resectability",
          requires=('lesions:pancreas', 'organ:superior_mesenteric_artery', 'organ:celiac_trunk',
                    'organ:common_hepatic_artery', 'organ:superior_mesenteric_vein', 'organ:portal_vein'),
          paraphrases=("By its contact with the nearby arteries and veins, is the pancreatic tumor resectable, "
                       "borderline resectable or unresectable?",
                       "What is the resectability of the pancreatic tumor (resectable, borderline, unresectable)?"))
def pancreatic_resectability(ctx):
    les = [x for x in ctx.lesions("pancreas") if x.kind == "tumor"]
    if les and ctx.annotated("pancreas") and all(ctx.status(v) != "unknown" for v in L.PANCREATIC_VESSELS):
        x = les[0]
        contact = {v: x.vessel_contact.get(v, 0.0) for v in L.PANCREATIC_VESSELS}
        yield Instance({}, K.pancreatic_resectability(contact), {"vessel_contact_deg": contact,
                                                                 "encasement_deg": K.ENCASEMENT_DEG,
                                                                 "rule": "pancreatic_resectability"},
                       [x.bbox_voxel] + [ctx.organ(v).bbox_voxel for v in L.PANCREATIC_VESSELS if ctx.organ(v)],
                       x.axial_slice, label_set=["resectable", "borderline", "unresectable"])


@register(id="med.renal_mass_type", category="Medical Reasoning", subtype="renal mass characterization",
          answer_type="categorical", needs="a kidney lesion", rule="renal_cyst_hu",
          requires=('lesions:kidney',),
          paraphrases=("How is the largest renal lesion characterised: simple cyst, hyperattenuating cyst, "
                       "indeterminate or solid?",
                       "By its attenuation and type, what is the largest kidney lesion: simple cyst, hyperattenuating "
                       "cyst, indeterminate or solid?"))
def renal_mass_type(ctx):
    les = ctx.lesions("kidney")
    if les and ctx.annotated("kidney"):
        x = les[0]
        yield Instance({}, K.renal_lesion_type(x.hu_mean, x.kind),
                       {"lesion_hu": x.hu_mean, "label": x.label, "simple_cyst_hu": list(K.RENAL_CYST_HU_RANGE),
                        "hyperattenuating_above_hu": K.RENAL_HYPERATTENUATING_HU, "rule": "renal_cyst_hu"},
                       [x.bbox_voxel], x.axial_slice,
                       label_set=["simple cyst", "hyperattenuating cyst", "indeterminate", "solid"])


@register(id="med.lesion_type", category="Medical Reasoning", subtype="{organ} lesion type", answer_type="categorical",
          needs="a lesion whose class says tumor or cyst",
          requires=('lesions:{organ}', 'kind:{organ}:cyst', 'kind:{organ}:tumor'),
          paraphrases=("Is the largest {organ} lesion a cyst or a tumor?", "What type is the largest {organ} lesion: cyst or tumor?"))
def lesion_type(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        les = [x for x in ctx.lesions(fam) if x.kind in ("cyst", "tumor")]
        if les and ctx.annotated(fam):
            x = les[0]
            yield Instance({"organ": fam}, x.kind, {"label": x.label, "lesion_hu": x.hu_mean}, [x.bbox_voxel],
                           x.axial_slice, label_set=["cyst", "tumor"])


@register(id="med.pancreatic_cyst_resection", category="Medical Reasoning", subtype="pancreatic cyst resection criterion",
          answer_type="binary", needs="a pancreatic cyst", rule="pancreatic_cyst_resection",
          requires=('lesions:pancreas',),
          paraphrases=("Does the largest pancreatic cyst meet the size criterion for resection (> 3 cm or > 3 ml)?",
                       "Is the pancreatic cyst large enough (over 3 cm or 3 ml) to consider surgery?"))
def pancreatic_cyst_resection(ctx):
    les = [x for x in ctx.lesions("pancreas") if x.kind == "cyst"]
    if les and ctx.annotated("pancreas"):
        x = les[0]
        ok = x.max_diameter_3d_mm > K.PANCREATIC_CYST_RESECTION_MM or x.volume_ml > K.PANCREATIC_CYST_RESECTION_ML
        yield Instance({}, _yn(ok), {"greatest_dimension_mm": x.max_diameter_3d_mm, "volume_ml": x.volume_ml,
                                     "rule": "pancreatic_cyst_resection"}, [x.bbox_voxel], x.axial_slice)


# --- DeepTumorVQA v2 subtypes: pancreatic tumour types, Couinaud comparison, portal hypertension, pseudocyst ---

def _pancreatic_tumours(ctx, labels=("pancreatic_pdac", "pancreatic_pnet")):
    return [x for x in ctx.lesions("pancreas") if x.label in labels]


@register(id="rec.pdac_exists", category="Recognition", subtype="PDAC existence", answer_type="binary",
          needs="the pancreas; PDAC annotated as its own class",
          requires=("lesions:pancreas", "organ:pancreatic_pdac"),
          paraphrases=("Is there a pancreatic ductal adenocarcinoma (PDAC)?", "Does the pancreas harbour a PDAC?"))
def pdac_exists(ctx):
    p = ctx.organ("pancreas")
    if p is not None and ctx.annotated("pancreas") and ctx.status("pancreatic_pdac") != "unknown":
        les = _pancreatic_tumours(ctx, ("pancreatic_pdac",))
        yield Instance({}, _yn(bool(les)), {"pdac_count": len(les)}, [les[0].bbox_voxel] if les else [p.bbox_voxel],
                       les[0].axial_slice if les else _z(ctx, p.centroid_mm))


@register(id="rec.pnet_exists", category="Recognition", subtype="PNET existence", answer_type="binary",
          needs="the pancreas; PNET annotated as its own class",
          requires=("lesions:pancreas", "organ:pancreatic_pnet"),
          paraphrases=("Is there a pancreatic neuroendocrine tumor (PNET)?",
                       "Does the pancreas contain a neuroendocrine tumor?"))
def pnet_exists(ctx):
    p = ctx.organ("pancreas")
    if p is not None and ctx.annotated("pancreas") and ctx.status("pancreatic_pnet") != "unknown":
        les = _pancreatic_tumours(ctx, ("pancreatic_pnet",))
        yield Instance({}, _yn(bool(les)), {"pnet_count": len(les)}, [les[0].bbox_voxel] if les else [p.bbox_voxel],
                       les[0].axial_slice if les else _z(ctx, p.centroid_mm))


@register(id="med.pdac_vs_pnet", category="Medical Reasoning", subtype="PDAC vs PNET classification",
          answer_type="categorical", needs="a pancreatic tumour annotated as PDAC or PNET (both classes annotated)",
          rule="pdac_vs_pnet", requires=("lesions:pancreas", "organ:pancreatic_pdac", "organ:pancreatic_pnet"),
          paraphrases=("Is the largest pancreatic tumor more likely a PDAC or a PNET?",
                       "Classify the pancreatic tumor: ductal adenocarcinoma (PDAC) or neuroendocrine tumor (PNET)?"))
def pdac_vs_pnet(ctx):
    tum = _pancreatic_tumours(ctx)
    if tum and ctx.status("pancreatic_pdac") != "unknown" and ctx.status("pancreatic_pnet") != "unknown":
        x = tum[0]
        yield Instance({}, "PDAC" if x.label == "pancreatic_pdac" else "PNET",
                       {"label": x.label, "attenuation": x.attenuation, "hu_difference": x.hu_difference,
                        "part": x.location.get("part"), "rule": "pdac_vs_pnet"},
                       [x.bbox_voxel], x.axial_slice, label_set=["PDAC", "PNET"])


@register(id="vr.segment_comparison", category="Visual Reasoning", subtype="inter-segment comparison",
          answer_type="categorical", needs="liver segment masks and liver lesions", key_params=(),
          requires=("lesions:liver", "parts:liver"),
          paraphrases=("Which holds more lesions, Couinaud segment {a} or segment {b}, or are they equal?",
                       "Compare liver segments {a} and {b}: which has more lesions (or equal)?"))
def segment_comparison(ctx):
    if not (ctx.has_parts("liver") and ctx.organ("liver") and ctx.annotated("liver")):
        return
    les = ctx.lesions("liver")
    count = {s: sum(s in (x.location.get("segments") or []) for x in les) for s in range(1, 9)}
    with_lesions = [s for s in range(1, 9) if count[s]]
    if ctx.exhaustive:
        pairs = [(a, b) for a in range(1, 9) for b in range(a + 1, 9)]
    elif with_lesions:
        # A segment with lesions against another one, chosen by a stable hash.
        a = with_lesions[_stable(ctx.case_id, "seg_a") % len(with_lesions)]
        others = [s for s in range(1, 9) if s != a]
        b = others[_stable(ctx.case_id, "seg_b") % len(others)]
        pairs = [tuple(sorted((a, b)))]
    else:
        return
    liver = ctx.organ("liver")
    for a, b in pairs:
        ans = f"segment {a}" if count[a] > count[b] else (f"segment {b}" if count[b] > count[a] else "equal")
        hit = [x for x in les if {a, b} & set(x.location.get("segments") or [])]
        yield Instance({"a": a, "b": b}, ans, {f"segment_{a}_lesions": count[a], f"segment_{b}_lesions": count[b]},
                       [x.bbox_voxel for x in hit] or [liver.bbox_voxel],
                       hit[0].axial_slice if hit else _z(ctx, liver.centroid_mm),
                       label_set=[f"segment {a}", f"segment {b}", "equal"])


@register(id="med.portal_hypertension", category="Medical Reasoning", subtype="portal hypertension assessment",
          answer_type="binary", needs="complete spleen and liver segment masks", rule="portal_hypertension",
          requires=("organ:spleen", "parts:liver"),
          paraphrases=("Do the spleen size and the caudate-to-right-lobe ratio suggest portal hypertension?",
                       "Are there imaging signs of portal hypertension (splenomegaly with caudate hypertrophy)?"))
def portal_hypertension(ctx):
    s = ctx.complete("spleen")
    cr = ctx.findings.measures.get("caudate")
    if s and cr and ctx.has_parts("liver"):
        yes = s.volume_ml > K.SPLENOMEGALY_ML and cr["ratio"] > K.PORTAL_HYPERTENSION_CRL
        yield Instance({}, _yn(yes), {"spleen_volume_ml": s.volume_ml, "caudate_right_lobe_ratio": cr["ratio"],
                                      "caudate_width_mm": cr["caudate_width_mm"],
                                      "right_lobe_width_mm": cr["right_lobe_width_mm"],
                                      "segment_volumes_ml": cr["segment_volumes_ml"], "rule": "portal_hypertension"},
                       [s.bbox_voxel, ctx.organ("liver").bbox_voxel], cr["slice"])


@register(id="med.pseudocyst", category="Medical Reasoning", subtype="pseudocyst determination",
          answer_type="binary", needs="a pancreatic cyst", rule="pseudocyst_hu",
          requires=("lesions:pancreas", "kind:pancreas:cyst"),
          paraphrases=("Is the largest pancreatic cyst more likely a pseudocyst than a mucinous cyst (by its HU)?",
                       "By its attenuation, is the pancreatic cyst a pseudocyst?"))
def pseudocyst(ctx):
    cysts = [x for x in ctx.lesions("pancreas") if x.kind == "cyst"]
    if cysts and ctx.annotated("pancreas"):
        x = cysts[0]
        yield Instance({}, _yn(x.hu_mean > K.PSEUDOCYST_HU), {"cyst_hu": x.hu_mean, "threshold_hu": K.PSEUDOCYST_HU,
                                                              "rule": "pseudocyst_hu"}, [x.bbox_voxel], x.axial_slice)


# --- Localization --------------------------------------------------------------------------------

@register(id="loc.organ_bbox", category="Localization", subtype="{organ} bounding box", answer_type="bbox",
          needs="organ present",
          requires=('organ:{organ}',),
          paraphrases=("Give the 3D bounding box of the {organ}.", "Where is the {organ}? Answer with its 3D bounding box.",
                       "Localize the {organ} with a bounding box."))
def organ_bbox(ctx):
    for n in ("liver", "spleen", "kidney_left", "kidney_right", "pancreas"):
        o = ctx.organ(n)
        if o:
            yield Instance({"organ": n}, {"voxel": o.bbox_voxel, "mm": o.bbox_mm}, {"voxels": o.voxels},
                           [o.bbox_voxel], _z(ctx, o.centroid_mm))


@register(id="loc.largest_lesion_bbox", category="Localization", subtype="largest {organ} lesion bounding box",
          answer_type="bbox", needs="a lesion in the organ",
          requires=('lesions:{organ}',),
          paraphrases=("Give the 3D bounding box of the largest {organ} lesion.",
                       "Localize the largest lesion in the {organ} with a 3D bounding box."))
def largest_lesion_bbox(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        les = ctx.lesions(fam)
        if les and ctx.annotated(fam):
            x = les[0]
            yield Instance({"organ": fam}, {"voxel": x.bbox_voxel, "mm": x.bbox_mm}, {"volume_ml": x.volume_ml},
                           [x.bbox_voxel], x.axial_slice)


# --- Per-lesion questions (a lesion named by the axial slice of its long axis) ---------------------

def _named_lesions(ctx: CaseContext, fam: str):
    """Lesions of a family whose long-axis slice no other lesion of the family shares."""
    les = ctx.lesions(fam)
    z = [x.axial_slice for x in les]
    return [x for x in les if z.count(x.axial_slice) == 1]


def _lesion_params(fam: str, x) -> dict:
    return {"organ": fam, "slice": int(x.axial_slice)}


_LESION_REF = "the {organ} lesion whose longest axial diameter lies on slice {slice}"


@register(id="vr.lesion_location", category="Visual Reasoning", subtype="{organ} lesion location",
          answer_type="categorical", needs="lesions with a location", key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("Where is " + _LESION_REF + "?", "In which part of the {organ} is " + _LESION_REF + "?"))
def lesion_location(ctx):
    for fam in ("liver", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam) and _loc_text(x):
                yield Instance(_lesion_params(fam, x), _loc_text(x), {"location": x.location}, [x.bbox_voxel],
                               x.axial_slice, label_set=LOCATION_LABELS[fam])


@register(id="vr.kidney_lesion_side", category="Visual Reasoning", subtype="kidney lesion side",
          answer_type="categorical", needs="kidney lesions", key_params=(),
          requires=('lesions:kidney',),
          paraphrases=("Which kidney holds the renal lesion whose longest axial diameter lies on slice {slice}?",
                       "Is the kidney lesion on slice {slice} in the left or the right kidney?"))
def kidney_lesion_side(ctx):
    for x in _named_lesions(ctx, "kidney"):
        if ctx.annotated("kidney"):
            yield Instance({"slice": int(x.axial_slice)}, x.organ.split("_")[1], {"organ": x.organ,
                           "centroid_mm": x.centroid_mm}, [x.bbox_voxel], x.axial_slice, label_set=["left", "right"])


@register(id="meas.lesion_volume", category="Measurement", subtype="{organ} lesion volume", answer_type="numeric",
          unit="ml", decimals=2, needs="lesions", key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("What is the volume in ml of " + _LESION_REF + "?", "How large (ml) is " + _LESION_REF + "?"))
def lesion_volume(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam):
                yield Instance(_lesion_params(fam, x), round(x.volume_ml, 2), {"volume_ml": x.volume_ml},
                               [x.bbox_voxel], x.axial_slice)


@register(id="vr.lesion_diameter", category="Visual Reasoning", subtype="{organ} lesion diameter",
          answer_type="numeric", unit="mm", decimals=1, needs="lesions", key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("What is the longest axial diameter (mm) of " + _LESION_REF + "?",
                       "How long is the long axis of " + _LESION_REF + ", in mm?"))
def lesion_diameter(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam):
                yield Instance(_lesion_params(fam, x), round(x.long_axis_mm, 1),
                               {"long_axis_mm": x.long_axis_mm, "short_axis_mm": x.short_axis_mm}, [x.bbox_voxel],
                               x.axial_slice)


@register(id="vr.lesion_attenuation", category="Visual Reasoning", subtype="{organ} lesion attenuation",
          answer_type="categorical", needs="lesions and the organ's parenchyma", key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("Is " + _LESION_REF + " hypo-, iso- or hyperattenuating?",
                       "How dense is " + _LESION_REF + " compared with the {organ}?"))
def lesion_attenuation(ctx):
    text = {"hypo": "hypoattenuating", "iso": "isoattenuating", "hyper": "hyperattenuating"}
    for fam in ("liver", "kidney", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam) and x.attenuation in text:
                yield Instance(_lesion_params(fam, x), text[x.attenuation], {"lesion_hu": x.hu_mean,
                               "hu_difference": x.hu_difference}, [x.bbox_voxel], x.axial_slice,
                               label_set=list(text.values()))


@register(id="med.each_lesion_type", category="Medical Reasoning", subtype="{organ} lesion cyst or tumor",
          answer_type="categorical", needs="lesions whose class says tumor or cyst", key_params=("organ",),
          requires=('lesions:{organ}', 'kind:{organ}:cyst', 'kind:{organ}:tumor'),
          paraphrases=("Is " + _LESION_REF + " a cyst or a tumor?", "What kind of lesion is " + _LESION_REF + "?"))
def each_lesion_type(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam) and x.kind in ("cyst", "tumor"):
                yield Instance(_lesion_params(fam, x), x.kind, {"label": x.label, "lesion_hu": x.hu_mean},
                               [x.bbox_voxel], x.axial_slice, label_set=["cyst", "tumor"])


@register(id="rec.segment_lesion_exists", category="Recognition", subtype="liver segment lesion existence",
          answer_type="binary", needs="liver segment masks; liver lesions annotated", key_params=(),
          requires=('lesions:liver', 'parts:liver'),
          paraphrases=("Is there a lesion in Couinaud segment {segment} of the liver?",
                       "Does liver segment {segment} contain a lesion?"))
def segment_lesion_exists(ctx):
    if not (ctx.has_parts("liver") and ctx.organ("liver") and ctx.annotated("liver")):
        return
    les = ctx.lesions("liver")
    liver = ctx.organ("liver")
    for seg in range(1, 9):
        hit = [x for x in les if seg in (x.location.get("segments") or [])]
        yield Instance({"segment": seg}, _yn(bool(hit)), {"lesions": [x.lesion_id for x in hit]},
                       [x.bbox_voxel for x in hit] or [liver.bbox_voxel],
                       hit[0].axial_slice if hit else _z(ctx, liver.centroid_mm))


@register(id="loc.lesion_bbox", category="Localization", subtype="{organ} lesion bounding box", answer_type="bbox",
          needs="lesions", key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("Give the 3D bounding box of " + _LESION_REF + ".",
                       "Localize " + _LESION_REF + " with a 3D bounding box."))
def lesion_bbox(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam):
                yield Instance(_lesion_params(fam, x), {"voxel": x.bbox_voxel, "mm": x.bbox_mm},
                               {"volume_ml": x.volume_ml}, [x.bbox_voxel], x.axial_slice)


@register(id="rec.part_lesion_exists", category="Recognition", subtype="{organ} part lesion existence",
          answer_type="binary", needs="pancreas parts (masks or axis) or kidney poles; lesions annotated",
          key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("Is there a lesion {where} of the {organ}?", "Does the {organ} have a lesion {where}?"))
def part_lesion_exists(ctx):
    for fam, places in (("pancreas", ("head", "body", "tail")), ("kidney_left", ("upper pole", "interpolar", "lower pole")),
                        ("kidney_right", ("upper pole", "interpolar", "lower pole"))):
        o = ctx.organ(fam)
        family = "kidney" if fam.startswith("kidney") else fam
        if o is None or not ctx.annotated(family):
            continue
        les = [x for x in ctx.lesions(family) if x.organ == fam]
        for place in places:
            hit = [x for x in les if _loc_text(x) == place]
            where = f"in the {place}" if place != "interpolar" else "in the interpolar region"
            yield Instance({"organ": fam, "place": place, "where": where}, _yn(bool(hit)),
                           {"lesions": [x.lesion_id for x in hit]}, [x.bbox_voxel for x in hit] or [o.bbox_voxel],
                           hit[0].axial_slice if hit else _z(ctx, o.centroid_mm))


@register(id="vr.denser_organ", category="Visual Reasoning", subtype="{organ} vs spleen attenuation",
          answer_type="categorical", needs="the organ and the spleen",
          requires=('organ:{organ}', 'organ:spleen'),
          paraphrases=("Which is denser (higher mean HU), the {organ} or the spleen?",
                       "Does the {organ} or the spleen have the higher attenuation?"))
def denser_organ(ctx):
    s = ctx.organ("spleen")
    for n in ("liver", "pancreas"):
        o = ctx.organ(n)
        if o and s:
            yield Instance({"organ": n}, n if o.hu_mean > s.hu_mean else "spleen",
                           {f"{n}_hu": o.hu_mean, "spleen_hu": s.hu_mean}, [o.bbox_voxel, s.bbox_voxel],
                           _z(ctx, o.centroid_mm), label_set=[n, "spleen"])


@register(id="meas.lesion_hu", category="Measurement", subtype="{organ} lesion mean HU", answer_type="numeric",
          unit="HU", decimals=1, signed=True, needs="lesions", key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("What is the mean attenuation (HU) of " + _LESION_REF + "?",
                       "Give the average Hounsfield unit value of " + _LESION_REF + "."))
def lesion_hu(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam):
                yield Instance(_lesion_params(fam, x), round(x.hu_mean, 1), {"hu_mean": x.hu_mean, "hu_std": x.hu_std},
                               [x.bbox_voxel], x.axial_slice)


@register(id="vr.lesion_short_axis", category="Visual Reasoning", subtype="{organ} lesion short axis",
          answer_type="numeric", unit="mm", decimals=1, needs="lesions", key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("What is the short axis (mm), perpendicular to the long axis on the same slice, of "
                       + _LESION_REF + "?", "How wide is " + _LESION_REF + " perpendicular to its long axis, in mm?"))
def lesion_short_axis(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam):
                yield Instance(_lesion_params(fam, x), round(x.short_axis_mm, 1),
                               {"short_axis_mm": x.short_axis_mm, "long_axis_mm": x.long_axis_mm}, [x.bbox_voxel],
                               x.axial_slice)


@register(id="vr.lesion_max_diameter", category="Visual Reasoning", subtype="{organ} lesion greatest 3D dimension",
          answer_type="numeric", unit="mm", decimals=1, needs="lesions", key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("What is the greatest 3D dimension (mm) of " + _LESION_REF + "?",
                       "What is the maximum diameter in 3D, in mm, of " + _LESION_REF + "?"))
def lesion_max_diameter(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam):
                yield Instance(_lesion_params(fam, x), round(x.max_diameter_3d_mm, 1),
                               {"max_diameter_3d_mm": x.max_diameter_3d_mm}, [x.bbox_voxel], x.axial_slice)


# The chest family registers into the same registry (imported last: it uses ``register``).
from volvqa.qa import chest as _chest  # noqa: E402,F401
