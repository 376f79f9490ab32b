"""Scoring by answer type, as DeepTumorVQA defines it, plus 3D IoU.

- Multiple choice: letter accuracy (the letter is parsed from the output; an
  output equal to an option's text counts as that letter).
- Numeric free form: mean relative accuracy (MRA: the share of thresholds
  t in 0.50, 0.55, ..., 0.95 with relative error < 1 - t) and hit rates
  within 5/10/20/50% relative error.
- Yes/no: accuracy, sensitivity, specificity.
- Categorical: exact match and partial match (one answer's words contained in
  the other's).
- Localization: 3D IoU of voxel boxes (mean, and the share above 0.5).
Unparseable outputs score 0 (and count as wrong in every rate).
"""
from __future__ import annotations

import json
import re

import numpy as np

MRA_THRESHOLDS = np.arange(0.50, 0.951, 0.05)
HIT_LEVELS = (0.05, 0.10, 0.20, 0.50)
_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def parse_letter(output: str, options: dict[str, str]) -> str | None:
    """The option letter an output names; None when it names none or several (hedging)."""
    text = (output or "").strip()
    if not text:
        return None
    for letter, opt in options.items():
        if text.lower().rstrip(".") == opt.lower():
            return letter
    letters = set(re.findall(r"\b([A-E])\b", text))
    m = re.match(r"^\(?([A-Ea-e])(?:[\).:,\s]|$)", text)
    if m:
        letters.add(m.group(1).upper())
    letters &= set(options)
    return letters.pop() if len(letters) == 1 else None


def parse_number(output: str) -> float | None:
    m = _NUM.search((output or "").replace(",", ""))
    return float(m.group(0)) if m else None


def parse_yes_no(output: str) -> str | None:
    t = (output or "").strip().lower()
    m = re.match(r"^(yes|no)\b", t)
    if m:
        return m.group(1)
    has_yes, has_no = bool(re.search(r"\byes\b", t)), bool(re.search(r"\bno\b", t))
    return "yes" if has_yes and not has_no else ("no" if has_no and not has_yes else None)


def parse_bbox(output: str) -> list[float] | None:
    nums = _NUM.findall((output or "").replace(",", " "))
    return [float(x) for x in nums[:6]] if len(nums) >= 6 else None


def relative_error(pred: float, truth: float) -> float:
    return abs(pred - truth) / max(abs(truth), 1e-9)


def mra(pred: float | None, truth: float) -> float:
    if pred is None:
        return 0.0
    err = relative_error(pred, truth)
    return float(np.mean([err < 1 - t for t in MRA_THRESHOLDS]))


def iou_3d(a, b) -> float:
    """IoU of inclusive voxel boxes [x0, y0, z0, x1, y1, z1]."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    lo = np.maximum(a[:3], b[:3])
    hi = np.minimum(a[3:], b[3:])
    inter = np.prod(np.clip(hi - lo + 1, 0, None))
    va = np.prod(np.clip(a[3:] - a[:3] + 1, 0, None))
    vb = np.prod(np.clip(b[3:] - b[:3] + 1, 0, None))
    union = va + vb - inter
    return float(inter / union) if union > 0 else 0.0


def categorical_match(output: str, truth: str) -> tuple[bool, bool]:
    o = " ".join(re.sub(r"[^a-z0-9 ]", " ", (output or "").lower()).split())
    t = " ".join(re.sub(r"[^a-z0-9 ]", " ", truth.lower()).split())
    exact = o == t
    partial = bool(o) and (t in o or o in t)
    return exact, partial or exact


ABSTAIN_PREFIX = "cannot answer"


def is_abstention(output: str | None) -> bool:
    """An answer that declines ("cannot answer: ..."): never parsed as an answer ("...: no train item"
    is not a "no")."""
    return (output or "").strip().lower().startswith(ABSTAIN_PREFIX)


def score_item(item: dict, output: str, mode: str) -> dict:
    """Per-item scores. ``mode``: 'mc' (options shown) or 'free'. An abstention scores 0, unparsed."""
    at = item["answer_type"]
    s: dict = {"qid": item["qid"], "answer_type": at, "mode": mode}
    if is_abstention(output):
        output = ""
    if at == "bbox":
        box = parse_bbox(output)
        truth = item["answer"]["voxel"] if isinstance(item["answer"], dict) else json.loads(item["answer"])["voxel"]
        s["parsed"] = box is not None
        s["iou"] = iou_3d(box, truth) if box is not None else 0.0
        s["score"] = s["iou"]
        return s
    if mode == "mc" and item.get("options"):
        letter = parse_letter(output, item["options"])
        s["parsed"] = letter is not None
        s["correct"] = letter == item["correct_option"]
        s["score"] = float(s["correct"])
        s["chance"] = 1.0 / len(item["options"])
        return s
    if at == "numeric":
        v = parse_number(output)
        truth = float(item["answer"])
        s["parsed"] = v is not None
        s["mra"] = mra(v, truth)
        for h in HIT_LEVELS:
            s[f"hit@{int(h * 100)}"] = float(v is not None and relative_error(v, truth) <= h)
        s["score"] = s["mra"]
    elif at == "binary":
        yn = parse_yes_no(output)
        s["parsed"] = yn is not None
        s["correct"] = yn == item["answer"]
        s["truth"] = item["answer"]
        s["score"] = float(s["correct"])
    else:
        exact, partial = categorical_match(output, str(item["answer"]))
        s["parsed"] = bool((output or "").strip())
        s["exact"], s["partial"] = float(exact), float(partial)
        s["score"] = s["exact"]
    return s


def aggregate(items: list[dict], scores: list[dict]) -> dict:
    """Scores per subtype, per category (question-weighted) and overall."""
    by_sub: dict[str, list] = {}
    by_cat: dict[str, list] = {}
    for it, s in zip(items, scores, strict=False):
        by_sub.setdefault(it["subtype"], []).append((it, s))
        by_cat.setdefault(it["category"], []).append((it, s))

    def summary(pairs):
        sc = [s for _, s in pairs]
        out = {"n": len(sc), "score": float(np.mean([s["score"] for s in sc])),
               "parsed": float(np.mean([s["parsed"] for s in sc]))}
        chances = [s["chance"] for s in sc if s.get("chance") is not None]
        if chances:
            out["chance"] = float(np.mean(chances))
        if any("iou" in s for s in sc):
            ious = [s["iou"] for s in sc if "iou" in s]
            out["iou_mean"], out["iou_above_0.5"] = float(np.mean(ious)), float(np.mean([i > 0.5 for i in ious]))
        if any("mra" in s for s in sc):
            num = [s for s in sc if "mra" in s]
            out["mra"] = float(np.mean([s["mra"] for s in num]))
            for h in HIT_LEVELS:
                out[f"hit@{int(h * 100)}"] = float(np.mean([s[f"hit@{int(h * 100)}"] for s in num]))
        yn = [s for s in sc if "truth" in s and s["answer_type"] == "binary"]
        if yn:
            pos = [s for s in yn if s["truth"] == "yes"]
            neg = [s for s in yn if s["truth"] == "no"]
            out["accuracy"] = float(np.mean([s["correct"] for s in yn]))
            out["sensitivity"] = float(np.mean([s["correct"] for s in pos])) if pos else None
            out["specificity"] = float(np.mean([s["correct"] for s in neg])) if neg else None
        if any("exact" in s for s in sc):
            cat = [s for s in sc if "exact" in s]
            out["exact"] = float(np.mean([s["exact"] for s in cat]))
            out["partial"] = float(np.mean([s["partial"] for s in cat]))
        if any("correct" in s and s["mode"] == "mc" for s in sc):
            mc = [s for s in sc if s["mode"] == "mc" and "correct" in s]
            out["letter_accuracy"] = float(np.mean([s["correct"] for s in mc]))
        return out

    return {"overall": summary(list(zip(items, scores, strict=False))),
            "categories": {k: summary(v) for k, v in sorted(by_cat.items())},
            "subtypes": {k: summary(v) for k, v in sorted(by_sub.items())}}
