"""Multiple-choice options.

- 4 options by default (or 5); the correct letter is uniform by seed.
- Numeric distractors are drawn from the answers of the same question over
  the whole dataset (perturbed), so they look like real answers, then
  filtered to be at least 25% (relative) from the truth and from each other;
  synthetic ones (x(1+g)^k) fill any gap. All options share one format
  (rounding and unit), so none stands out.
- Categorical distractors come from the subtype's label set; binary items
  get Yes/No. Never two equal options.
"""
from __future__ import annotations

import hashlib

import numpy as np

LETTERS = "ABCDE"
MIN_REL_GAP = 0.25


def item_rng(seed: int, qid: str) -> np.random.Generator:
    h = hashlib.sha256(f"{seed}|{qid}".encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "big"))


def fmt(value: float, decimals: int, unit: str, integer: bool = False) -> str:
    v = int(round(value)) if integer else round(float(value), decimals)
    text = str(v) if integer else f"{v:.{decimals}f}"
    return f"{text} {unit}".strip()


def _floor(decimals: int, integer: bool, signed: bool, truth: float) -> float:
    if integer:
        return 1.0
    if signed:
        return max(5.0, 10 ** -decimals * 4)
    return 10 ** -decimals * 4


def _far(a: float, b: float, floor: float) -> bool:
    return abs(a - b) >= MIN_REL_GAP * max(min(abs(a), abs(b)), floor) and abs(a - b) >= floor * 0.999


def _rounded(v, decimals: int, integer: bool) -> float:
    return float(int(round(v))) if integer else round(float(v), decimals)


def numeric_options(truth: float, pool: list[float], n: int, rng: np.random.Generator, *, decimals: int,
                    unit: str, integer: bool = False, signed: bool = False,
                    info: dict | None = None) -> tuple[list[str], int]:
    """Truth plus n-1 distractors, shuffled; returns (texts, index of the truth).

    Against a question-only guess that picks the option nearest the usual
    answer (the median of this question over the dataset), the number of
    distractors nearer that median than the truth is drawn uniformly from
    0..n-1 whenever the 25% gaps allow it. Distractors come from the
    dataset's other answers to the same question (jittered), then from
    synthetic values on both sides. ``info['central_shortfall']`` tells how
    many of the drawn central distractors could not be placed (the truth
    lies too close to the median): such an item is a free point for that
    guess, and ``build_options`` marks it for removal.
    """
    floor = _floor(decimals, integer, signed, truth)
    t = _rounded(truth, decimals, integer)
    p = np.asarray([x for x in pool if np.isfinite(x)], float)
    positive = not signed and t > 0 and (p.size == 0 or np.all(p > 0))
    m = float(np.median(np.r_[p, t])) if p.size else t

    def dist(v: float) -> float:    # from the median: in log space for positive quantities
        if positive and v > 0 and m > 0:
            return abs(np.log(v) - np.log(m))
        return abs(v - m)

    dt = dist(t)
    scale = max(abs(t), abs(m), floor)
    cands = _candidate_values(p, m, dt, scale, positive and m > 0, integer, rng)
    ordered = [_rounded(v, decimals, integer) for v in cands]
    if integer or not signed:
        ordered = [v for v in ordered if v >= 0]
    central = [v for v in ordered if dist(v) < dt]
    outer = [v for v in ordered if dist(v) > dt]
    c = int(rng.integers(0, n))  # distractors nearer the median than the truth
    chosen: list[float] = []
    seen = {fmt(t, decimals, unit, integer)}

    def try_add(v: float) -> bool:
        text = fmt(v, decimals, unit, integer)
        if text not in seen and v != t and _far(v, t, floor) and all(_far(v, x, floor) for x in chosen):
            chosen.append(v)
            seen.add(text)
            return True
        return False

    for v in central:
        if sum(dist(x) < dt for x in chosen) >= c:
            break
        try_add(v)
    if info is not None:
        info["central_shortfall"] = c - sum(dist(x) < dt for x in chosen)
    for v in [*outer, *central, *outer]:
        if len(chosen) >= n - 1:
            break
        try_add(v)
    k = 1
    while len(chosen) < n - 1:  # degenerate pools: keep stepping outward
        if signed:
            v = _rounded(t + (k + 1) * scale * (1 if k % 2 else -1), decimals, integer)
        elif integer or t <= 0:
            v = _rounded(t + (k + 1) * scale, decimals, integer)
        else:
            v = _rounded(t * 1.6 ** (k + 1), decimals, integer)
        try_add(v)
        k += 1
        if k > 200:
            raise ValueError(f"cannot build {n} distinct options around {t}")
    values = chosen + [t]
    perm = rng.permutation(n)
    texts = [fmt(values[i], decimals, unit, integer) for i in perm]
    correct = int(np.nonzero(perm == n - 1)[0][0])
    assert len(set(texts)) == n
    return texts, correct


def _candidate_values(p: np.ndarray, m: float, dt: float, scale: float, log_space: bool, integer: bool,
                      rng: np.random.Generator) -> list[float]:
    """Distractor candidates: up to 40 of the pool's values (jittered), then 16 pairs around the median
    ``m``, one nearer it than the truth (distance ``dt``) and one farther."""
    cands: list[float] = []
    if p.size:
        for x in rng.choice(p, size=min(len(p), 40), replace=False):
            cands.append(x * float(np.exp(rng.normal(0, 0.08))) if not integer else x + int(rng.integers(-1, 2)))
    for _ in range(16):
        u, sgn, g = rng.uniform(0.05, 0.95), rng.choice([-1.0, 1.0]), rng.uniform(0.25, 1.2)
        if log_space:
            cands.append(float(np.exp(np.log(m) + sgn * u * dt)))           # nearer the median than the truth
            cands.append(float(np.exp(np.log(m) + sgn * (dt + g))))         # farther
        else:
            cands.append(m + sgn * u * dt)
            cands.append(m + sgn * (dt + g * scale))
    return cands


def categorical_options(truth: str, label_set: list[str], n: int, rng: np.random.Generator) -> tuple[list[str], int]:
    others = [x for x in dict.fromkeys(label_set) if x != truth]
    k = min(n - 1, len(others))
    picked = [others[i] for i in sorted(rng.choice(len(others), size=k, replace=False))] if k else []
    values = picked + [truth]
    perm = rng.permutation(len(values))
    texts = [values[i] for i in perm]
    return texts, int(np.nonzero(perm == len(values) - 1)[0][0])


def binary_options(truth: str, rng: np.random.Generator) -> tuple[list[str], int]:
    texts = ["Yes", "No"] if rng.random() < 0.5 else ["No", "Yes"]
    return texts, texts.index("Yes" if truth == "yes" else "No")


def build_options(item: dict, pools: dict[str, list[float]], n: int, seed: int) -> dict:
    """Fill ``options`` (letter -> text) and ``correct_option`` of a raw item."""
    rng = item_rng(seed, item["qid"])
    at = item["answer_type"]
    if at == "bbox":
        return {**item, "options": {}, "correct_option": None}
    if at == "binary":
        texts, c = binary_options(item["answer"], rng)
    elif at == "categorical":
        texts, c = categorical_options(item["answer"], item["label_set"] or [item["answer"]], n, rng)
    else:
        pool = [v for v in pools.get(item["key"], []) if v != item["answer"]]
        info: dict = {}
        texts, c = numeric_options(item["answer"], pool, n, rng, decimals=item["decimals"], unit=item["unit"],
                                   integer=item["integer"], signed=item["signed"], info=info)
        out = {**item, "options": {LETTERS[i]: t for i, t in enumerate(texts)}, "correct_option": LETTERS[c]}
        if info.get("central_shortfall", 0) > 0:
            out["drop_reason"] = "truth too close to the dataset's typical answer for the drawn option layout"
        return out
    return {**item, "options": {LETTERS[i]: t for i, t in enumerate(texts)}, "correct_option": LETTERS[c]}


#: After thinning, no rank of the truth by distance to the usual answer holds more than this share above 1/n.
MAX_RANK_EXCESS = 0.05


def _count_cap(kept: dict[int, int], n: int) -> int | None:
    """The largest count T such that keeping at most T items of each rank leaves no rank with more than
    1/n + MAX_RANK_EXCESS of the items kept (None when no T does, e.g. only one rank survives)."""
    def worst(t: int) -> float:
        k = [min(kept.get(c, 0), t) for c in range(n)]
        return max(k) / sum(k) if sum(k) else 1.0
    top = max(kept.values(), default=0)
    for t in range(top, 0, -1):
        if worst(t) <= 1 / n + MAX_RANK_EXCESS:
            return t
    return None


def option_value(text: str) -> float | None:
    """The number an option text starts with ("12.5 ml" -> 12.5), else None."""
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None


def letters_by_distance(options: dict[str, str], m: float) -> list[str]:
    """Option letters ordered by their value's distance to ``m`` (log distance when every value and ``m``
    are positive; ties by letter); options without a number are left out."""
    import math
    vals = {k: option_value(v) for k, v in options.items()}
    vals = {k: v for k, v in vals.items() if v is not None}
    pos = m > 0 and all(v > 0 for v in vals.values())
    dist = {k: abs(math.log(v) - math.log(m)) if pos else abs(v - m) for k, v in vals.items()}
    return sorted(dist, key=lambda k: (dist[k], k))


def _median_rank(item: dict, m: float) -> int | None:
    """The truth's rank among the options by distance to ``m`` (0 = nearest), as the audit's guess ranks
    them; None when an option carries no number."""
    opts = item.get("options") or {}
    order = letters_by_distance(opts, m)
    if len(order) != len(opts) or item.get("correct_option") not in order:
        return None
    return order.index(item["correct_option"])


def balance_median_rank(items: list[dict], n: int, seed: int, rounds: int = 4) -> int:
    """Even out, per question kind, the truth's rank among the options by distance to the usual answer.

    ``numeric_options`` draws how many distractors lie nearer the median than the truth uniformly, but an
    item whose draw cannot be placed (its truth sits near the median) is dropped, and large draws fail
    most: the survivors have the truth nearest the median far more often than 1 in ``n``, a free point
    for "pick the usual value" (on the 80-phantom demo, 31 of 54 spleen HU items). Here the rank is
    measured as the audit's guess measures it, against the median of the train items kept, and the ranks
    held most often are thinned until none holds more than 1/n + ``MAX_RANK_EXCESS`` of the kind's
    items; since thinning moves that median (phase-dependent HU is bimodal), this repeats a few rounds. A
    kind no thinning can balance (only the nearest one or two ranks survive) is left whole, for the
    shortcut audit to measure. Marks thinned items with ``drop_reason``; returns how many."""
    from collections import Counter, defaultdict
    by_key: dict[str, list[dict]] = defaultdict(list)
    for it in items:
        if it.get("answer_type") == "numeric" and it.get("options"):
            by_key[it["key"]].append(it)
    thinned = 0
    for _ in range(rounds):
        changed = 0
        for its in by_key.values():
            alive = [it for it in its if not it.get("drop_reason")]
            train = [float(it["answer"]) for it in alive if it.get("split") == "train"]
            if len(train) < 5:
                continue
            m = float(np.median(train))
            ranks = {it["qid"]: _median_rank(it, m) for it in alive}
            kept = Counter(r for r in ranks.values() if r is not None)
            cap = _count_cap(kept, n)
            if cap is None:
                continue
            for c in range(n):
                same = sorted((it for it in alive if ranks[it["qid"]] == c),
                              key=lambda it: item_rng(seed, it["qid"] + "|median-rank").random())
                for it in same[cap:]:
                    it["drop_reason"] = "thinned so that the truth's rank by distance to the usual answer is even"
                    changed += 1
        thinned += changed
        if not changed:
            break
    return thinned
