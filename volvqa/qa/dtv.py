"""The DeepTumorVQA v2 scoring protocol (``volvqa evaluate --protocol
deeptumorvqa``), written from the rules its evaluator documents, beside
volvqa's stricter default (``--protocol strict``, ``volvqa.eval.metrics``).

Where the two differ (``tests/test_dtv.py`` checks this module against the
reference scorer item by item):

- **Letters**: ``<think>...</think>`` blocks (closed or not) are dropped;
  the first character is taken when it is A-D, else the first standalone
  A-D anywhere ("I think B, not C" -> B). Strict: a hedged answer naming two
  letters is wrong; an answer equal to an option's text counts.
- **Numbers**: the first number (``-?digits.digits``; "1,250" reads as 1);
  MRA is the continuous ``max(0, 1 - |pred - gt| / |gt|)`` (0.30 relative
  error scores 0.70); strict averages hits over thresholds 0.50..0.95 (0.30
  scores 0.40). Tolerance bands: relative error <= 5/10/20/50%.
- **Yes/no**: the answer as written, its first word, else a standalone
  yes / no anywhere (yes first). Strict: a hedged "yes or no" is wrong.
- **Categories**: lower case, punctuation other than hyphens removed; exact,
  or partial when one contains the other.
- **Answer type** comes from the subtype (its table; an unknown subtype is
  categorical) rather than from the item.
- **Aggregation**: per subtype, then per super-type weighted by questions,
  and overall micro-averaged over every question; Localization is not part
  of it (DeepTumorVQA has none).
"""
from __future__ import annotations

import json
import re
from collections import defaultdict

from volvqa.qa.qid import params_of

#: DeepTumorVQA v2 subtype -> answer type (its 42 subtypes).
DTV_ANSWER_TYPE: dict[str, str] = {
    **{s: "numeric" for s in (
        "organ volume measurement", "organ HU measurement", "lesion volume measurement", "organ HU ratio",
        "tumor burden percentage", "largest lesion diameter", "largest lesion slice", "lesion counting",
        "lesion count by location", "organ aggregation", "tumor organ HU difference")},
    **{s: "binary" for s in (
        "pancreatic lesion existence", "liver lesion existence", "kidney lesion existence", "kidney tumor existence",
        "kidney cyst existence", "colon lesion existence", "PDAC existence", "PNET existence", "lesion outlier",
        "organ enlargement", "pancreatic steatosis", "pancreatic cyst resectability", "pseudocyst determination",
        "splenomegaly detection", "portal hypertension assessment")},
    **{s: "categorical" for s in (
        "liver lesion clustering", "kidney volume comparison", "largest lesion attenuation", "largest lesion location",
        "inter-segment comparison", "adjacent organ", "bilateral kidney asymmetry",
        "multi-organ lesion burden comparison", "fatty liver", "hepatic steatosis grading", "pancreatic tumor staging",
        "pancreatic lesion resectability", "PDAC vs PNET classification", "lesion type classification",
        "splenomegaly grading", "renal mass characterization")},
}
TOLERANCES = (0.05, 0.10, 0.20, 0.50)
SUPER_TYPES = ("recognition", "measurement", "visual reasoning", "medical reasoning")

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_THINK_OPEN = re.compile(r"<think>.*$", re.DOTALL)
_NUMBER = re.compile(r"-?[\d]+\.?\d*")
_LETTER = re.compile(r"\b([A-D])\b")


def strip_think(text: str) -> str:
    return _THINK_OPEN.sub("", _THINK.sub("", text)).strip()


def letter(text: str) -> str:
    t = strip_think(text)
    if not t:
        return ""
    s = t.upper()
    if s[0] in "ABCD":
        return s[0]
    m = _LETTER.search(s)
    return m.group(1) if m else ""


def number(text) -> float | None:
    if text is None:
        return None
    m = _NUMBER.search(str(text).strip())
    if not m:
        return None
    try:
        return float(m.group())
    except ValueError:
        return None


def yes_no(text: str) -> str:
    s = str(text).strip().lower()
    if s in ("yes", "no"):
        return s
    for w in ("yes", "no"):
        if s.startswith(w):
            return w
    for w in ("yes", "no"):
        if re.search(rf"\b{w}\b", s):
            return w
    return ""


def normalise(text: str) -> str:
    s = re.sub(r"[^\w\s\-]", "", str(text).strip().lower())
    return re.sub(r"\s+", " ", s)


def mra(pred: float, gt: float) -> float:
    if gt == 0:
        return 1.0 if pred == 0 else 0.0
    return max(0.0, 1.0 - abs(pred - gt) / abs(gt))


def answer_type(subtype: str) -> str:
    return DTV_ANSWER_TYPE.get(subtype, "categorical")


def score_one(subtype: str, pred_text: str, gt: str, fmt: str) -> dict:
    """One item's score under the protocol: ``score`` (the primary accuracy
    contribution) plus what its aggregates count (hits, bands, confusion)."""
    pred_text, gt = str(pred_text), str(gt)
    if fmt == "mc":
        got = letter(pred_text)
        return {"score": float(got == gt.strip().upper()), "parsed": bool(got)}
    kind = answer_type(subtype)
    if kind == "numeric":
        g = number(gt)
        if g is None:
            return {"score": None}
        p = number(strip_think(pred_text))
        if p is None:
            return {"score": 0.0, "bands": [False] * len(TOLERANCES)}
        err = (0.0 if p == 0 else float("inf")) if g == 0 else abs(p - g) / abs(g)
        return {"score": mra(p, g), "bands": [err <= t for t in TOLERANCES]}
    if kind == "binary":
        g, p = yes_no(gt), yes_no(strip_think(pred_text))
        return {"score": float(bool(p) and p == g), "gt": g, "pred": p}
    g, p = normalise(gt), normalise(strip_think(pred_text))
    exact = g == p
    return {"score": float(exact), "partial": exact or bool(g and p and (g in p or p in g))}


def aggregate(rows: list[tuple[str, str, dict]], fmt: str) -> dict:
    """``rows``: (subtype, super type, score_one result) per item -> overall,
    per super type (question-weighted) and per subtype, with the keys and
    roundings of DeepTumorVQA's evaluator."""
    by_sub: dict[str, list[dict]] = defaultdict(list)
    super_of: dict[str, str] = {}
    for sub, sup, s in rows:
        by_sub[sub].append(s)
        super_of.setdefault(sub, sup)
    subs: dict[str, dict] = {}
    for sub, ss in by_sub.items():
        n = len(ss)
        kind = "mc" if fmt == "mc" else answer_type(sub)
        if kind == "mc":
            m = {"metric": "exact_match", "accuracy": round(sum(s["score"] for s in ss) / max(n, 1), 4),
                 "n_parsed": sum(s["parsed"] for s in ss), "n_total": n}
        elif kind == "numeric":
            scored = [s for s in ss if s["score"] is not None]
            m = {"metric": "MRA", "mean_mra": round(sum(s["score"] for s in scored) / max(len(scored), 1), 4),
                 "tolerance_acc": {f"tol_{int(t * 100)}%": round(sum(s["bands"][k] for s in scored) /
                                                                 max(len(scored), 1), 4)
                                   for k, t in enumerate(TOLERANCES)},
                 "n_total": n, "n_scored": len(scored)}
        elif kind == "binary":
            tp = sum(s["gt"] == "yes" and s["pred"] == "yes" for s in ss)
            fn = sum(s["gt"] == "yes" and s["pred"] != "yes" for s in ss)
            fp = sum(s["gt"] != "yes" and s["gt"] == "no" and s["pred"] == "yes" for s in ss)
            tn = sum(s["gt"] == "no" and s["pred"] != "yes" for s in ss)
            m = {"metric": "exact_match", "accuracy": round(sum(s["score"] for s in ss) / max(n, 1), 4),
                 "sensitivity": round(tp / max(tp + fn, 1), 4), "specificity": round(tn / max(tn + fp, 1), 4),
                 "n_total": n}
        else:
            m = {"metric": "exact_match", "accuracy": round(sum(s["score"] for s in ss) / max(n, 1), 4),
                 "partial_accuracy": round(sum(s["partial"] for s in ss) / max(n, 1), 4), "n_total": n}
        subs[sub] = m
    primary = {sub: (m["mean_mra"] if "mean_mra" in m else m["accuracy"]) for sub, m in subs.items()}
    by_super: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for sub, m in subs.items():
        if super_of.get(sub):
            by_super[super_of[sub]].append((primary[sub], m["n_total"]))
    supers = {sup: {"accuracy": round(sum(a * n for a, n in v) / max(sum(n for _, n in v), 1), 4),
                    "n_total": sum(n for _, n in v)} for sup, v in by_super.items()}
    total_n = sum(m["n_total"] for m in subs.values())
    overall = sum(primary[s] * m["n_total"] for s, m in subs.items())
    return {"overall": {"accuracy": round(overall / max(total_n, 1), 4), "n_total": total_n,
                        "n_subtypes": len(subs)},
            "by_super_type": supers, "by_subtype": subs}


#: volvqa template -> DeepTumorVQA v2 subtype (a function of the parameters where one template covers several).
_BY_ORGAN = {"liver": "liver lesion existence", "kidney": "kidney lesion existence",
             "pancreas": "pancreatic lesion existence", "colon": "colon lesion existence"}
DTV_SUBTYPE: dict[str, object] = {
    "rec.lesion_exists": lambda p: _BY_ORGAN.get(p.get("organ")),
    "rec.kidney_kind_exists": lambda p: {"tumor": "kidney tumor existence", "cyst": "kidney cyst existence"}.get(
        p.get("kind")),
    "rec.pdac_exists": "PDAC existence",
    "rec.pnet_exists": "PNET existence",
    "rec.splenomegaly": "splenomegaly detection",
    "meas.organ_volume": "organ volume measurement",
    "meas.organ_hu": "organ HU measurement",
    "meas.hu_ratio": "organ HU ratio",
    "meas.largest_lesion_volume": "lesion volume measurement",
    "meas.tumor_burden": "tumor burden percentage",
    "vr.lesion_count": "lesion counting",
    "vr.lesion_count_by_location": "lesion count by location",
    "vr.largest_lesion_diameter": "largest lesion diameter",
    "vr.largest_lesion_slice": "largest lesion slice",
    "vr.largest_lesion_location": "largest lesion location",
    "vr.largest_lesion_attenuation": "largest lesion attenuation",
    "vr.kidney_volume_comparison": "kidney volume comparison",
    "vr.kidney_lesion_asymmetry": "bilateral kidney asymmetry",
    "vr.lesion_outlier": "lesion outlier",
    "vr.liver_lesion_clustering": "liver lesion clustering",
    "vr.organ_enlargement": "organ enlargement",
    "vr.lesion_organ_hu_difference": "tumor organ HU difference",
    "vr.adjacent_organ": "adjacent organ",
    "vr.multi_organ_burden": "multi-organ lesion burden comparison",
    "vr.organ_aggregation": "organ aggregation",
    "vr.segment_comparison": "inter-segment comparison",
    "med.splenomegaly_grade": "splenomegaly grading",
    "med.fatty_liver": "fatty liver",
    "med.steatosis_grade": "hepatic steatosis grading",
    "med.pancreatic_steatosis": "pancreatic steatosis",
    "med.pancreatic_t_stage": "pancreatic tumor staging",
    "med.renal_mass_type": "renal mass characterization",
    "med.lesion_type": "lesion type classification",
    "med.pancreatic_cyst_resection": "pancreatic cyst resectability",
    "med.pdac_vs_pnet": "PDAC vs PNET classification",
    "med.pancreatic_resectability": "pancreatic lesion resectability",
    "med.portal_hypertension": "portal hypertension assessment",
    "med.pseudocyst": "pseudocyst determination",
}


def dtv_subtype(item: dict) -> str | None:
    """The DeepTumorVQA v2 subtype an item belongs to, or None for volvqa-only questions."""
    m = DTV_SUBTYPE.get(item.get("template_id", ""))
    return m(params_of(item.get("qid", ""))) if callable(m) else m


def dtv_answer_text(item: dict) -> str:
    """The ground-truth answer as DeepTumorVQA's records write it (a plain string)."""
    a = item["answer"]
    if isinstance(a, float) and a.is_integer() and item.get("integer"):
        return str(int(a))
    return a if isinstance(a, str) else json.dumps(a) if isinstance(a, (dict, list)) else str(a)
