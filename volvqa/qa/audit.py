"""Shortcut audit: how well does a question-only guess do, per subtype?

The guess sees only the question and options, with priors from the train
split: for binary and categorical items the option given most often as the
answer to the same question (template and parameters) in train; for numeric items the option closest to the train median (in log
space for positive quantities); else the letter most often correct in
train. Accuracy is measured on the val and test items of a subtype (on all
its items when it has fewer than ``MIN_EVAL`` of them, a train item then
guessed from the other train cases) against chance (1 / number of options). Numeric subtypes also
face blind guesses that read only the option values (farthest from the
median, the k-th smallest value), and every subtype a guess by the exact
question text (the answer given most often, or the median, for the same
wording in train: a paraphrase that goes with an answer is a shortcut too);
the best of them counts.

A subtype is flagged only when that best guess beats chance by more than
``FLAG_POINTS`` with confidence: the lower end of the Wilson interval of its
accuracy (confidence 95%, Bonferroni-corrected for the number of guesses
tried, since the best of several is taken) lies above chance + 10 points.
A subtype with so few items that even a guess right on all of them could not
be shown to beat chance by 10 points is reported as "not enough items"
(kept, and listed as unaudited in the card and the build summary).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

from volvqa.qa.options import letters_by_distance
from volvqa.qa.options import option_value as _value
from volvqa.qa.qid import params_of

FLAG_POINTS = 10.0
MIN_EVAL = 20
CONFIDENCE = 0.95
STATUSES = ("ok", "flagged", "not enough items", "not applicable")


def accuracy_interval(hits: int, n: int, n_guesses: int = 1) -> tuple[float, float]:
    """Wilson interval of an accuracy, at ``CONFIDENCE`` corrected for ``n_guesses`` guesses (Bonferroni)."""
    from scipy.stats import binomtest
    level = 1 - (1 - CONFIDENCE) / max(n_guesses, 1)
    ci = binomtest(hits, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def audit_status(hits: int, n: int, chance: float, n_guesses: int = 1) -> tuple[str, tuple[float, float]]:
    lo, hi = accuracy_interval(hits, n, n_guesses)
    if lo * 100 > chance * 100 + FLAG_POINTS:
        return "flagged", (lo, hi)
    if accuracy_interval(n, n, n_guesses)[0] * 100 <= chance * 100 + FLAG_POINTS:
        return "not enough items", (lo, hi)
    return "ok", (lo, hi)


class QuestionOnlyPrior:
    """Per question kind (template + key parameters): the train majority answer or
    median. A train item is guessed with its own case left out (no self-leak)."""

    def __init__(self, train_items: list[dict]):
        self.by_key: dict[str, list[tuple[str, object]]] = defaultdict(list)
        self.types: dict[str, str] = {}
        letters = Counter()
        self.by_text: dict[str, list[tuple[str, object]]] = defaultdict(list)
        for it in train_items:
            self.by_key[it["key"]].append((it["case_id"], it["answer"]))
            self.by_text[it["question"]].append((it["case_id"], it["answer"]))
            self.types[it["key"]] = it["answer_type"]
            if it.get("correct_option"):
                letters[it["correct_option"]] += 1
        self.letter = sorted(letters.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if letters else "A"

    def _answers(self, key: str, exclude_case: str | None) -> list:
        return [a for c, a in self.by_key.get(key, []) if c != exclude_case]

    def answers(self, key: str) -> list:
        """The train answers of a question kind (its key), in train order."""
        return self._answers(key, None)

    def guess(self, item: dict, exclude_case: str | None = None) -> str | None:
        """The letter a question-only model picks (None for box items)."""
        opts = item.get("options") or {}
        if not opts:
            return None
        answers = self._answers(item["key"], exclude_case)
        if item["answer_type"] in ("binary", "categorical") and answers:
            # The option given most often as the answer to this question in train
            # (not just the single most frequent answer, which may not be offered).
            c = Counter(str(a).lower() for a in answers)
            best = max(opts.items(), key=lambda kv: (c.get(kv[1].lower(), 0), -ord(kv[0][0])))
            if c.get(best[1].lower(), 0) > 0:
                return best[0]
        if item["answer_type"] == "numeric" and answers:
            m = float(np.median([float(a) for a in answers]))
            vals = {k: _value(v) for k, v in opts.items()}
            vals = {k: v for k, v in vals.items() if v is not None}
            if vals:
                pos = m > 0 and all(v > 0 for v in vals.values())
                dist = {k: abs(math.log(v) - math.log(m)) if pos else abs(v - m) for k, v in vals.items()}
                return sorted(dist.items(), key=lambda kv: (kv[1], kv[0]))[0][0]
        return self.letter if self.letter in opts else sorted(opts)[0]

    def by_wording(self, item: dict, exclude_case: str | None = None) -> str | None:
        """The guess from train items asked in exactly the same words (paraphrase and parameters): the option
        given most often as their answer, or the option nearest their median."""
        opts = item.get("options") or {}
        answers = [a for c, a in self.by_text.get(item["question"], []) if c != exclude_case]
        if not opts or not answers:
            return None
        if item["answer_type"] == "numeric":
            vals = {k: _value(v) for k, v in opts.items()}
            vals = {k: v for k, v in vals.items() if v is not None}
            if not vals:
                return None
            m = float(np.median([float(a) for a in answers]))
            return sorted(vals.items(), key=lambda kv: (abs(kv[1] - m), kv[0]))[0][0]
        c = Counter(str(a).lower() for a in answers)
        best = max(opts.items(), key=lambda kv: (c.get(kv[1].lower(), 0), -ord(kv[0][0])))
        return best[0] if c.get(best[1].lower(), 0) > 0 else None

    def by_median_rank(self, item: dict, rank: int, exclude_case: str | None = None) -> str | None:
        """The option ``rank``-th nearest the train median (0 = nearest): a guess that learned where the truth
        usually sits among the options relative to the usual answer."""
        answers = self._answers(item["key"], exclude_case)
        if not answers:
            return None
        order = letters_by_distance(item.get("options") or {}, float(np.median([float(a) for a in answers])))
        return order[rank] if len(order) > rank else None

    def farthest(self, item: dict, exclude_case: str | None = None) -> str | None:
        """The option farthest from the train median: wins where the items
        left are those whose answer is atypical."""
        answers = self._answers(item["key"], exclude_case)
        vals = {k: _value(v) for k, v in (item.get("options") or {}).items()}
        vals = {k: v for k, v in vals.items() if v is not None}
        if not answers or not vals:
            return None
        m = float(np.median([float(a) for a in answers]))
        pos = m > 0 and all(v > 0 for v in vals.values())
        dist = {k: abs(math.log(v) - math.log(m)) if pos else abs(v - m) for k, v in vals.items()}
        return sorted(dist.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def by_value_rank(item: dict, rank: int) -> str | None:
    """The option with the ``rank``-th smallest value (a guess that reads only the options)."""
    vals = sorted((v, k) for k, v in ((k, _value(t)) for k, t in (item.get("options") or {}).items())
                  if v is not None)
    return vals[rank][1] if len(vals) > rank else None


def numeric_guesses(prior: QuestionOnlyPrior, it: dict, exclude: str | None) -> dict[str, str | None]:
    out = {"nearest median": prior.guess(it, exclude_case=exclude),
           "farthest from median": prior.farthest(it, exclude_case=exclude)}
    for r in range(len(it.get("options") or {})):
        out[f"value rank {r + 1}"] = by_value_rank(it, r)
    for r in range(1, len(it.get("options") or {}) - 1):
        out[f"median rank {r + 1}"] = prior.by_median_rank(it, r, exclude_case=exclude)
    return out


def audit(items: list[dict]) -> dict[str, dict]:
    """Per subtype: answer distribution, question-only accuracy, chance, flag."""
    prior = QuestionOnlyPrior([it for it in items if it["split"] == "train"])
    out: dict[str, dict] = {}
    by_sub: dict[str, list[dict]] = defaultdict(list)
    for it in items:
        by_sub[it["subtype"]].append(it)
    for sub, its in sorted(by_sub.items()):
        mc = [it for it in its if it.get("options")]
        held_out = [it for it in mc if it["split"] != "train"]
        if len(held_out) >= MIN_EVAL:
            mc = held_out
        dist = Counter(str(it["answer"]) for it in its if it["answer_type"] != "bbox")
        row = {"category": its[0]["category"], "answer_type": its[0]["answer_type"], "items": len(its),
               "answer_distribution": dict(sorted(dist.most_common(6))) if its[0]["answer_type"] in
               ("binary", "categorical") else {}, "flagged": False}
        if mc:
            exclude = [it["case_id"] if it["split"] == "train" else None for it in mc]
            hits = [prior.guess(it, exclude_case=ex) == it["correct_option"] for it, ex in zip(mc, exclude, strict=False)]
            chance = float(np.mean([1.0 / len(it["options"]) for it in mc]))
            acc = float(np.mean(hits))
            best, best_hits = "prior", int(sum(hits))
            guesses = [{"same wording": prior.by_wording(it, exclude_case=ex)} for it, ex in zip(mc, exclude, strict=False)]
            if its[0]["answer_type"] == "numeric":
                # Other blind guesses that read only the option values.
                for g, it, ex in zip(guesses, mc, exclude, strict=False):
                    g.update(numeric_guesses(prior, it, ex))
            for name in guesses[0]:
                k = sum(g.get(name) == it["correct_option"] for g, it in zip(guesses, mc, strict=False))
                if k > best_hits:
                    best, best_hits = name, int(k)
            status, (lo, hi) = audit_status(best_hits, len(mc), chance, n_guesses=1 + len(guesses[0]))
            row.update(question_only_accuracy=best_hits / len(mc), prior_accuracy=acc, best_blind_guess=best,
                       chance=chance, audited_items=len(mc), ci95=[round(lo, 4), round(hi, 4)], status=status,
                       flagged=status == "flagged")
        else:
            # Box answers have no options for a blind guess to pick from (Localization is scored by IoU).
            row.update(status="not applicable" if its[0]["answer_type"] == "bbox" else "not enough items")
        out[sub] = row
    return out


def key_of(item: dict) -> str:
    """The question kind of an exported item (its qid carries the parameters)."""
    from volvqa.qa.templates import TEMPLATES
    params = params_of(item["qid"])
    t = TEMPLATES.get(item["template_id"])
    keep = params if t is None or t.key_params is None else {k: v for k, v in params.items() if k in t.key_params}
    return f"{item['template_id']}|" + ",".join(f"{k}={keep[k]}" for k in sorted(keep))


def render(rows: dict[str, dict]) -> str:
    lines = [f"{'category':18s} {'subtype':46s} {'items':>5s} {'guess':>6s} {'interval':>13s} {'chance':>6s}  answers"]
    for sub, r in sorted(rows.items(), key=lambda kv: (kv[1]["category"], kv[0])):
        acc = f"{r['question_only_accuracy'] * 100:5.1f}%" if "question_only_accuracy" in r else "     -"
        ci = f"{r['ci95'][0] * 100:5.1f}-{r['ci95'][1] * 100:5.1f}%" if "ci95" in r else "            -"
        ch = f"{r['chance'] * 100:5.1f}%" if "chance" in r else "     -"
        dist = ", ".join(f"{k}:{v}" for k, v in r.get("answer_distribution", {}).items())
        flag = {"flagged": "  FLAGGED", "not enough items": "  NOT ENOUGH ITEMS"}.get(r.get("status"), "")
        lines.append(f"{r['category']:18s} {sub:46s} {r['items']:5d} {acc} {ci} {ch}  {dist}{flag}")
    return "\n".join(lines)
