"""Natural questions -> template readings, for ``volvqa answer`` and the
grounded answerer when a question is not one of the generator's wordings.

Rules over a normalised question (lower case, punctuation dropped, words
that are near misses of the vocabulary corrected): the structures it names
(synonyms: splenic, renal, hepatic, ...; sides; Couinaud segments in digits
or Roman numerals; pancreas parts; kidney poles; lung lobes), whether it
speaks of lesions (lesion, tumour, mass, nodule, cyst, metastasis ...), the
quantity asked (volume / size / how big; diameter / long axis / how long;
density / attenuation / HU; how many; where; is there ...), the unit asked
in (ml, cc, cm3, litres; mm, cm), and clinical words (splenomegaly,
steatosis, grade, T stage, Fleischner, Lung-RADS). The first rule that
fits gives the reading; a question that fits several (the left or the
right kidney?) gets them all, and the answerer lists them.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

ORGAN_WORDS = {
    "liver": "liver", "hepatic": "liver", "spleen": "spleen", "splenic": "spleen",
    "pancreas": "pancreas", "pancreatic": "pancreas", "gallbladder": "gallbladder", "stomach": "stomach",
    "gastric": "stomach", "aorta": "aorta", "aortic": "aorta", "ivc": "inferior_vena_cava",
    "colon": "colon", "colonic": "colon", "kidney": "kidney", "kidneys": "kidney", "renal": "kidney",
    "lung": "lung", "lungs": "lung", "pulmonary": "lung", "chest": "lung",
}
LESION_WORDS = {"lesion", "lesions", "tumor", "tumors", "tumour", "tumours", "mass", "masses", "nodule", "nodules",
                "cyst", "cysts", "metastasis", "metastases", "cancer", "neoplasm", "hcc", "carcinoma", "focal"}
ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8}
LOBES = {("right", "upper"): "lung_upper_lobe_right", ("right", "middle"): "lung_middle_lobe_right",
         ("right", "lower"): "lung_lower_lobe_right", ("left", "upper"): "lung_upper_lobe_left",
         ("left", "lower"): "lung_lower_lobe_left"}
LOBE_ABBR = {"rul": ("right", "upper"), "rml": ("right", "middle"), "rll": ("right", "lower"),
             "lul": ("left", "upper"), "lll": ("left", "lower")}
VOCAB = sorted(set(ORGAN_WORDS) | LESION_WORDS | {
    "volume", "size", "large", "larger", "largest", "big", "bigger", "biggest", "diameter", "axis", "long",
    "longest", "length", "wide", "width", "density", "dense", "denser", "attenuation", "hounsfield", "mean",
    "average", "many", "number", "count", "where", "located", "location", "which", "segment", "couinaud", "present",
    "visible", "there", "contain", "contains", "have", "presence", "splenomegaly", "enlarged", "enlargement",
    "steatosis", "fatty", "grade", "grading", "stage", "category", "fleischner", "bounding", "localize", "localise",
    "milliliters", "millilitres", "liters", "litres", "centimeters", "centimetres", "millimeters",
    "millimetres", "combined", "total", "together", "burden", "percentage", "percent", "ratio", "hypoattenuating",
    "hyperattenuating", "isoattenuating", "solid", "ground", "glass", "part", "upper", "lower", "middle", "lobe",
    "pole", "interpolar", "head", "body", "tail", "left", "right", "both", "bilateral", "gall", "bladder",
    "inferior", "vena", "cava", "simple", "cystic", "compared", "relative", "baseline", "screening", "show",
    "shows", "seen", "see", "evidence", "detect", "detected", "measure", "estimate",
    # tokens the normaliser makes from phrases
    "tstage", "lungrads", "groundglass", "partsolid", "bbox", "howmany", "ctvalue"})


@dataclass
class Reading:
    template_id: str
    params: dict = field(default_factory=dict)
    unit: str | None = None         # the unit the question asked in (cc, l, cm), when not the template's own


def _tokens(question: str) -> list[str]:
    q = question.lower()
    # L/S ratio (liver-to-spleen attenuation ratio, a steatosis measure): "l" alone would be litres.
    q = re.sub(r"\bl\s*[/:]\s*s\b", " liver spleen ", q)
    q = q.replace("cm³", " cm3 ").replace("cm^3", " cm3 ").replace("tumour", "tumor")
    q = q.replace("gall bladder", "gallbladder").replace("vena cava", "ivc").replace("lung-rads", "lungrads")
    q = q.replace("lung rads", "lungrads").replace("t-stage", "tstage").replace("t stage", "tstage")
    q = q.replace("t category", "tstage").replace("t-category", "tstage").replace("ground-glass", "groundglass")
    q = q.replace("ground glass", "groundglass").replace("part-solid", "partsolid").replace("part solid", "partsolid")
    q = q.replace("bounding box", "bbox").replace("ct number", "ctvalue").replace("ct value", "ctvalue")
    q = q.replace("how many", "howmany").replace("number of", "howmany")
    words = re.findall(r"[a-z]+\d*|\d+(?:\.\d+)?", q)
    fixed = []
    for w in words:
        if len(w) >= 4 and w not in VOCAB and w not in STOP and not w[0].isdigit():
            close = difflib.get_close_matches(w, VOCAB, n=1, cutoff=0.8)
            w = close[0] if close else w
        fixed.append(w)
    return fixed


#: Common words never "corrected" into the vocabulary.
STOP = {"what", "does", "this", "that", "with", "from", "there", "they", "them", "than", "then", "have", "much",
        "scan", "image", "images", "patient", "patients", "would", "could", "should", "about", "give", "tell",
        "please", "your", "some", "into", "onto", "also", "just", "only", "same", "very", "more", "most", "less",
        "whole", "entire", "organ", "organs", "value", "values", "based", "using", "here", "were", "been", "being",
        "other", "their", "these", "those", "show", "when", "each", "every", "across", "over", "under", "what's"}


def _has(tokens, *words) -> bool:
    return any(w in tokens for w in words)


def _phrase(tokens, *phrases) -> bool:
    text = " " + " ".join(tokens) + " "
    return any(f" {p} " in text for p in phrases)


def _structures(tokens: list[str]) -> dict:
    """What the question names: organ family, side, segment, pancreas part, kidney pole, lung lobe."""
    out: dict = {}
    for w in tokens:
        if w in ORGAN_WORDS and "organ" not in out:
            out["organ"] = ORGAN_WORDS[w]
    if "inferior" in tokens and "ivc" in tokens:
        out["organ"] = "inferior_vena_cava"
    sides = [w for w in tokens if w in ("left", "right")]
    if sides:
        out["side"] = sides[0]
    if _has(tokens, "both", "bilateral") or "kidneys" in tokens:
        out["both"] = True
    for i, w in enumerate(tokens):
        if w in ("segment", "couinaud", "seg") and i + 1 < len(tokens):
            nxt = tokens[i + 1]
            n = int(nxt) if nxt.isdigit() else ROMAN.get(nxt)
            if n and 1 <= n <= 8:
                out["segment"] = n
                out.setdefault("organ", "liver")
        m = re.fullmatch(r"s([1-8])", w)
        if m:
            out["segment"] = int(m.group(1))
            out.setdefault("organ", "liver")
    for part in ("head", "body", "tail"):
        if part in tokens and out.get("organ") == "pancreas":
            out["part"] = part
    if "pole" in tokens or "poles" in tokens or "interpolar" in tokens:
        for pole in ("upper", "lower"):
            if pole in tokens:
                out["pole"] = f"{pole} pole"
        if "interpolar" in tokens:
            out["pole"] = "interpolar"
    if "lobe" in tokens or any(w in LOBE_ABBR for w in tokens):
        key = next((LOBE_ABBR[w] for w in tokens if w in LOBE_ABBR), None)
        if key is None and out.get("side"):
            level = next((w for w in ("upper", "middle", "lower") if w in tokens), None)
            key = (out["side"], level) if level else None
        if key in LOBES:
            out["lobe"] = LOBES[key]
            out["organ"] = "lung"
    return out


def _unit(tokens) -> str | None:
    if _has(tokens, "cc", "cm3", "cubic"):
        return "cc"
    if _has(tokens, "liters", "litres", "liter", "litre", "l"):
        return "l"
    if _has(tokens, "cm", "centimeters", "centimetres"):
        return "cm"
    return None


def _kidney_organs(s: dict) -> list[str]:
    return [f"kidney_{s['side']}"] if s.get("side") else ["kidney_left", "kidney_right"]


@dataclass(frozen=True)
class _Asked:
    """What a question's tokens name: structures, a lesion, its kind, the unit wanted."""
    t: list[str]
    s: dict
    organ: str | None
    lesion: bool
    unit: str | None
    kind: str | None
    lung: bool
    family: str | None
    volume_units: bool

    def has(self, *words: str) -> bool:
        return _has(self.t, *words)


_LESION_ORGANS = ("liver", "kidney", "pancreas")


def interpret(question: str) -> list[Reading]:
    """Readings of a natural question, best first; [] when nothing fits. The rules are tried in order;
    the first that recognises the question's ask decides (its [] means: recognised, but nothing fits)."""
    return _interpret(question)[0]


#: Words that carry no ask of their own (never reported as not understood).
FUNCTION_WORDS = {"a", "an", "the", "is", "are", "was", "of", "in", "on", "to", "and", "or", "for", "by", "at", "as",
                  "it", "its", "be", "do", "can", "you", "me", "my", "i", "we", "how", "whats", "s", "any", "not",
                  "no", "yes", "this", "ct", "if", "there", "between", "one", "two", "either", "within", "per",
                  "ml", "mm", "cm", "cc", "l", "hu", "has", "have", "out", "up", "down", "versus", "vs"}


def explain_unread(question: str) -> str:
    """Why ``interpret`` found no reading: the words it did not understand, or the ask it
    recognised and what the question named that the ask does not cover."""
    readings, rule, q = _interpret(question)
    unknown = [w for w in dict.fromkeys(q.t) if w not in VOCAB and w not in STOP and w not in FUNCTION_WORDS
               and w not in ORGAN_WORDS and not w[0].isdigit() and w not in ROMAN]
    named = q.s.get("lobe") or q.organ or ("a lesion" if q.lesion else None)
    parts = []
    if rule is not None:
        parts.append(f"it asks for {_ASKS[rule.__name__]}, which is not computed for "
                     + (f"'{named.replace('_', ' ')}'" if named else "nothing it names"))
    if unknown:
        parts.append("did not understand " + ", ".join(repr(w) for w in unknown[:6]))
    if not parts:
        parts.append("it names " + (f"'{named.replace('_', ' ')}'" if named else "no structure")
                     + " but asks nothing that is computed")
    return "; ".join(parts)


def _interpret(question: str):
    """(readings, the rule that decided or None, the parsed question)."""
    t = _tokens(question)
    s = _structures(t)
    organ = s.get("organ")
    lung = organ == "lung" or "lobe" in s or _has(t, "fleischner", "lungrads") \
        or (organ is None and _has(t, "nodule", "nodules"))   # "nodules in the liver" are liver lesions
    q = _Asked(
        t=t, s=s, organ=organ, lesion=bool(LESION_WORDS & set(t)) or _has(t, "groundglass", "partsolid"),
        unit=_unit(t),
        kind="cyst" if _has(t, "cyst", "cysts") else ("tumor" if _has(t, "tumor", "tumors", "mass", "cancer",
                                                                         "carcinoma") else None),
        lung=lung, family="lung" if lung else organ,
        volume_units=_has(t, "ml", "milliliters", "millilitres", "cc", "cm3", "liters", "litres"))
    for rule in _RULES:
        got = rule(q)
        if got is not None:
            return got, (rule if not got else None), q
    return [], None, q


def _localization(q: _Asked) -> list[Reading] | None:
    if not q.has("bbox", "localize", "localise", "box"):
        return None
    if q.lesion:
        return [Reading("loc.lung_lesion_bbox")] if q.lung else \
            [Reading("loc.largest_lesion_bbox", {"organ": q.family})] if q.family in _LESION_ORGANS else []
    if q.organ == "kidney":
        return [Reading("loc.organ_bbox", {"organ": o}) for o in _kidney_organs(q.s)]
    return [Reading("loc.organ_bbox", {"organ": q.organ})] if q.organ else []


def _clinical(q: _Asked) -> list[Reading] | None:
    """Clinical rules and grades."""
    t, organ, has = q.t, q.organ, q.has
    if has("fleischner"):
        return [Reading("med.fleischner_category")]
    if has("lungrads"):
        return [Reading("med.lung_rads_category")]
    if has("tstage") or (has("stage", "category") and has("t1", "t2", "t3", "t4")):
        return [Reading("med.lung_t_category")] if q.lung else [Reading("med.pancreatic_t_stage")]
    if has("grade", "grading", "severity", "severe") and (has("splenomegaly") or (organ == "spleen")):
        return [Reading("med.splenomegaly_grade")]
    if has("grade", "grading") and (has("steatosis", "fatty", "fat") or organ == "liver"):
        return [Reading("med.steatosis_grade")]
    if has("splenomegaly") or (organ == "spleen" and has("enlarged", "enlargement", "big", "large")
                               and not has("volume", "how", "howmany")):
        return [Reading("rec.splenomegaly")]
    if (has("steatosis", "fatty", "fat") and organ == "pancreas") or _phrase(t, "pancreatic steatosis"):
        return [Reading("med.pancreatic_steatosis")]
    if has("steatosis", "fatty", "fat") and organ in (None, "liver"):
        return [Reading("med.fatty_liver")]
    if organ == "kidney" and has("enlarged", "enlargement") and not q.lesion:
        return [Reading("vr.organ_enlargement", {"organ": o}) for o in _kidney_organs(q.s)]
    if q.lung and has("solid", "partsolid", "groundglass"):
        return [Reading("vr.lung_lesion_density")]
    return None


def _comparison(q: _Asked) -> list[Reading] | None:
    has, organ = q.has, q.organ
    # "Which kidney is larger?", or a choice between the sides ("Is the left or the right kidney larger?"),
    # which would otherwise read as a yes/no question about one kidney.
    between_sides = has("left") and has("right") and has("or")
    if organ == "kidney" and (has("which") or between_sides) \
            and has("larger", "bigger", "smaller", "largest", "biggest") and not q.lesion:
        return [Reading("vr.kidney_volume_comparison")]
    if organ == "kidney" and q.lesion and (has("which") and has("more", "most") or has("asymmetry")):
        return [Reading("vr.kidney_lesion_asymmetry")]
    if not q.lesion and (has("denser", "brighter") or (has("which") and has("higher")
                                                       and has("attenuation", "density"))):
        other = organ if organ in ("liver", "pancreas") else next((ORGAN_WORDS[w] for w in q.t if ORGAN_WORDS.get(w)
                                                                   in ("liver", "pancreas")), None)
        return [Reading("vr.denser_organ", {"organ": other})] if other else []
    return None


def _lesion_type(q: _Asked) -> list[Reading] | None:
    # "Is the liver mass a cyst?" asks the lesion's type (the answer names it), not whether one exists.
    kind_of_one = q.t[:1] in (["is"], ["are"]) and not _phrase(q.t, "is there", "are there") \
        and not q.s.get("side") \
        and _phrase(q.t, "a cyst", "a tumor", "a simple cyst", "cysts", "tumors", "cystic", "a cancer")
    if q.lesion and (_phrase(q.t, "cyst or a tumor", "cyst or tumor", "tumor or cyst", "tumor or a cyst",
                             "cystic or solid", "solid or cystic", "simple cyst or") or q.has("type", "kind")
                     or kind_of_one) \
            and not q.has("howmany"):
        if q.family == "kidney" and (q.has("solid", "simple", "cystic", "attenuation", "hu")):
            return [Reading("med.renal_mass_type")]
        return [Reading("med.lesion_type", {"organ": q.family})] if q.family in _LESION_ORGANS else []
    return None


def _counting(q: _Asked) -> list[Reading] | None:
    """Lesion counts ("how many ml is ..." asks a volume)."""
    s, family = q.s, q.family
    if not q.has("howmany", "count") or q.volume_units:
        return None
    if not (q.lesion or q.lung):
        return []
    if q.lung:
        if "lobe" in s:
            return [Reading("vr.lung_lesion_count_by_lobe", {"organ": s["lobe"]})]
        return [Reading("vr.lung_lesion_count")]
    if s.get("segment"):
        return [Reading("vr.lesion_count_by_location", {"organ": "liver", "place": f"segment {s['segment']}"})]
    if s.get("part"):
        return [Reading("vr.lesion_count_by_location", {"organ": "pancreas", "place": s["part"]})]
    if s.get("pole") and family == "kidney":
        return [Reading("vr.lesion_count_by_location", {"organ": "kidney", "place": s["pole"]})]
    return [Reading("vr.lesion_count", {"organ": family})] if family in _LESION_ORGANS else []


def _location(q: _Asked) -> list[Reading] | None:
    if not (q.has("where", "located", "location") or (q.has("which") and q.has(
            "segment", "couinaud", "part", "lobe", "region", "side", "lung", "lungs"))):
        return None
    if q.lung:
        return [Reading("vr.lung_lesion_location")]
    if q.family in _LESION_ORGANS and (q.lesion or q.has("largest", "biggest")):
        return [Reading("vr.largest_lesion_location", {"organ": q.family})]
    return []


def _relative_attenuation(q: _Asked) -> list[Reading] | None:
    """Attenuation relative to the organ (categorical) before the numeric density."""
    if q.lesion and (q.has("hypoattenuating", "hyperattenuating", "isoattenuating", "compared", "relative")
                     or _phrase(q.t, "hypo or hyper", "darker or brighter", "brighter or darker")):
        return [Reading("vr.largest_lesion_attenuation", {"organ": q.family})] if q.family in _LESION_ORGANS else []
    if q.has("ratio") and q.has("spleen", "splenic") and q.family in ("liver", "pancreas"):
        return [Reading("meas.hu_ratio", {"organ": q.family})]
    return None


def _size(q: _Asked) -> list[Reading] | None:
    """Volume or diameter."""
    has, organ, family, unit, s = q.has, q.organ, q.family, q.unit, q.s
    wants_diameter = has("diameter", "axis", "length", "long", "longest", "wide", "width") or unit == "cm" \
        or (has("mm", "millimeters", "millimetres") and not has("cubic"))
    wants_volume = has("volume", "big", "large", "size", "ml", "milliliters", "millilitres", "cc", "cm3") \
        or unit in ("cc", "l")
    if has("burden", "percentage", "percent", "fraction", "proportion", "share") and q.lesion \
            and family in ("liver", "pancreas"):
        return [Reading("meas.tumor_burden", {"organ": family})]
    if wants_diameter and (q.lesion or q.lung):
        if q.lung:
            return [Reading("meas.lung_lesion_long_axis", unit=unit)]
        return [Reading("vr.largest_lesion_diameter", {"organ": family}, unit=unit)] if family in _LESION_ORGANS \
            else []
    if not (wants_volume or (has("how") and has("big", "large"))):
        return None
    if q.lesion or (q.lung and not organ == "lung" and not q.lesion):
        if q.lung:
            return [Reading("meas.lung_lesion_volume", unit=unit)]
        return [Reading("meas.largest_lesion_volume", {"organ": family}, unit=unit)] if family in (
            *_LESION_ORGANS, "colon") else []
    if organ == "kidney" and (s.get("both") or has("combined", "total", "together", "sum")) and not s.get("side"):
        return [Reading("vr.organ_aggregation", {"organ": "kidneys"}, unit=unit)]
    if has("combined", "total", "together", "sum") and organ in ("liver", "spleen") \
            and has("liver", "hepatic") and has("spleen", "splenic"):
        return [Reading("vr.organ_aggregation", {"organ": "liver and spleen"}, unit=unit)]
    if organ == "kidney":
        return [Reading("meas.organ_volume", {"organ": o}, unit=unit) for o in _kidney_organs(s)]
    return [Reading("meas.organ_volume", {"organ": organ}, unit=unit)] if organ else []


def _density(q: _Asked) -> list[Reading] | None:
    """Numeric attenuation of an organ."""
    if not q.has("density", "attenuation", "hounsfield", "hu", "ctvalue"):
        return None
    if q.lesion:
        return []
    if q.organ == "kidney":
        return [Reading("meas.organ_hu", {"organ": o}) for o in _kidney_organs(q.s)]
    return [Reading("meas.organ_hu", {"organ": q.organ})] if q.organ else []


def _existence(q: _Asked) -> list[Reading] | None:
    """Existence / presence. A lesion and a place with no other ask ("lesion in the right lower lobe?")
    asks whether there is one."""
    t, s, family = q.t, q.s, q.family
    existence = _phrase(t, "is there", "are there", "is there any", "any") or q.has(
        "contain", "contains", "have", "has", "present", "presence", "visible", "seen", "see", "evidence",
        "detect", "detected", "show", "shows", "exist", "exists", "harbor", "harbour")
    if not (existence or t[:1] in (["is"], ["are"], ["does"], ["do"], ["can"]) or q.lesion):
        return None
    if q.lung and (q.lesion or "lobe" in s):
        if "lobe" in s:
            return [Reading("rec.lobe_lesion_exists", {"organ": s["lobe"]})]
        sides = [s["side"]] if s.get("side") else ["left", "right"]
        return [Reading("rec.lung_lesion_exists", {"side": x}) for x in sides]
    if q.lesion:
        if s.get("segment"):
            return [Reading("rec.segment_lesion_exists", {"segment": s["segment"]})]
        if s.get("part"):
            return [Reading("rec.part_lesion_exists", {"organ": "pancreas", "place": s["part"]})]
        if s.get("pole") and family == "kidney":
            return [Reading("rec.part_lesion_exists", {"organ": o, "place": s["pole"]}) for o in _kidney_organs(s)]
        if family == "kidney" and q.kind and not s.get("side"):
            return [Reading("rec.kidney_kind_exists", {"kind": q.kind})]
        return [Reading("rec.lesion_exists", {"organ": family})] if family in (*_LESION_ORGANS, "colon") else []
    if q.organ in ("gallbladder", "spleen"):
        return [Reading("rec.organ_presence", {"organ": q.organ})]
    if q.organ == "kidney":
        return [Reading("rec.organ_presence", {"organ": o}) for o in _kidney_organs(s)]
    return None


_ASKS = {"_localization": "a bounding box", "_clinical": "a clinical category", "_comparison": "a comparison",
         "_lesion_type": "a lesion's type", "_counting": "a lesion count", "_location": "a location",
         "_relative_attenuation": "a relative attenuation", "_size": "a size", "_density": "an attenuation",
         "_existence": "a presence"}
_RULES = (_localization, _clinical, _comparison, _lesion_type, _counting, _location, _relative_attenuation, _size,
          _density, _existence)
