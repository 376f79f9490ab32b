"""Answer balance: binary and categorical subtypes are subsampled per split so
that guessing the majority answer gains little.

Balance is per question kind (template and its key parameters, e.g. the
organ) and split. Binary kinds go to about 50/50 (the larger class is cut to the smaller's
size). Categorical subtypes keep every class but cut the large ones to a cap
chosen so that the majority class is at most ``1/k + MAX_EXCESS`` of the
items (k = classes present). Which items go is decided by a hash of the seed
and qid, so the same seed keeps the same items.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict

MAX_EXCESS = 0.03
#: Integer answers balanced like classes (lesion counts: few values, a dominant one).
COUNT_TEMPLATES = ("vr.lesion_count", "vr.lesion_count_by_location")


def _order_key(seed: int, qid: str) -> bytes:
    return hashlib.sha256(f"balance|{seed}|{qid}".encode()).digest()


def _cap(counts: list[int], k: int) -> int:
    """Largest cap C with max share min(count, C) / sum(min(count_i, C)) <= 1/k + MAX_EXCESS."""
    limit = 1.0 / k + MAX_EXCESS
    best = min(counts)
    for c in range(min(counts), max(counts) + 1):
        kept = [min(x, c) for x in counts]
        if max(kept) / sum(kept) <= limit:
            best = c
        else:
            break
    return best


def balance(items: list[dict], seed: int) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    keep: list[dict] = []
    for it in items:
        if it["answer_type"] in ("binary", "categorical") or (it["answer_type"] == "numeric" and it.get("integer")
                                                              and it["template_id"] in COUNT_TEMPLATES):
            groups[(it["key"], it["split"])].append(it)
        else:
            keep.append(it)
    for (_sub, _split), its in sorted(groups.items()):
        by_answer: dict[str, list[dict]] = defaultdict(list)
        for it in its:
            by_answer[str(it["answer"])].append(it)
        if len(by_answer) < 2:
            continue  # one possible answer: pure shortcut, dropped
        counts = [len(v) for v in by_answer.values()]
        k = len(counts) if its[0]["answer_type"] != "numeric" else 4  # counts: chance is 1 of 4 options
        cap = min(counts) if its[0]["answer_type"] == "binary" else _cap(counts, min(k, len(counts)))
        for ans in sorted(by_answer):
            chosen = sorted(by_answer[ans], key=lambda it: _order_key(seed, it["qid"]))[:cap]
            keep += chosen
    return sorted(keep, key=lambda it: it["qid"])
