"""The core of the question-template registry: records, ``register``, the
requirement check and the helpers the category modules share.

The one registry of question templates (``volvqa.qa.templates``).

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

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from volvqa import labels as L
from volvqa.phase import is_contrast
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
        if kind == "phase" and what == "non-contrast" and is_contrast(f.phase):
            state = "contrast-enhanced" if f.phase == "contrast" else f"contrast-enhanced ({f.phase} phase)"
            return f"the rule holds on unenhanced CT and this scan is {state}"
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

def _z(ctx: CaseContext, centroid_mm) -> int | None:
    return ctx.slice_of(centroid_mm)


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


def loc_text(les) -> str | None:
    loc = les.location
    if les.organ == "liver" and loc.get("segments"):
        shares = loc.get("segment_shares", {})
        seg = max(loc["segments"], key=lambda s: (shares.get(str(s), 0), -s))
        return f"segment {seg}"
    if les.organ == "pancreas" and loc.get("part"):
        return loc["part"]
    if les.organ.startswith("kidney") and loc.get("pole"):
        # The middle third is "interpolar" (its region, not a pole): the label set's own wording.
        return "interpolar" if loc["pole"] == "interpolar" else f"{loc['pole']} pole"
    return None


LOCATION_LABELS = {
    "liver": [f"segment {i}" for i in range(1, 9)],
    "pancreas": ["head", "body", "tail"],
    "kidney": ["upper pole", "interpolar", "lower pole"],
}


def _in_view_landmark(ctx, name: str):
    """A present organ whose whole craniocaudal extent lies inside the scan
    and that brackets ``name``'s usual level, or None."""
    nz = ctx.findings.shape[2]
    for lm_name in PRESENCE_LANDMARKS[name]:
        o = ctx.organ(lm_name)
        if o is not None and o.bbox_voxel[2] > 0 and o.bbox_voxel[5] < nz - 1:
            return o
    return None


def _pancreatic_tumours(ctx, labels=("pancreatic_pdac", "pancreatic_pnet")):
    return [x for x in ctx.lesions("pancreas") if x.label in labels]


# --- Per-lesion questions share these: a lesion named by the axial slice of its long axis ------------

def _named_lesions(ctx: CaseContext, fam: str):
    """Lesions of a family whose long-axis slice no other lesion of the family shares."""
    les = ctx.lesions(fam)
    z = [x.axial_slice for x in les]
    return [x for x in les if z.count(x.axial_slice) == 1]


def _lesion_params(fam: str, x) -> dict:
    return {"organ": fam, "slice": int(x.axial_slice)}


_LESION_REF = "the {organ} lesion whose longest axial diameter lies on slice {slice}"
