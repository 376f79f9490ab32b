"""The blind prior: question only, per question kind the train majority answer
(or the option nearest the train median for numbers) and else the option
letter most often correct in train. Reads no image.

In free mode (no options shown) it answers in words: the train majority answer of
the question kind, the train median with its unit for a number, and the train
per-coordinate median box for a box; ``cannot answer`` when train never asks it.
"""
from __future__ import annotations

import time
from collections import Counter

import numpy as np

from volvqa.errors import VolvqaInputError
from volvqa.models.base import Prediction
from volvqa.qa.audit import QuestionOnlyPrior, key_of


class PriorAnswerer:
    name = "prior"

    def __init__(self, train_items: list[dict], mode: str = "mc"):
        if mode not in ("mc", "free"):
            raise VolvqaInputError(None, f"unknown answer mode {mode!r}: mc or free", param="mode", value=mode)
        items = [dict(it, key=it.get("key") or key_of(it)) for it in train_items]
        self.prior = QuestionOnlyPrior(items)
        self.mode = mode

    def answer(self, volume, item: dict) -> Prediction:
        t = time.perf_counter()
        it = dict(item, key=item.get("key") or key_of(item))
        if self.mode == "free":
            out = self.free_answer(it)
        else:
            letter = self.prior.guess(it)
            # A box question offers no options: the train median box of its kind.
            out = letter if letter is not None else self.free_answer(it)
        return Prediction(item["qid"], out, out, self.name, time.perf_counter() - t)

    def free_answer(self, item: dict) -> str:
        """The prior's answer in words for an item (its key set), from the train answers of its kind."""
        from volvqa.qa.readings import answer_text
        from volvqa.qa.templates import TEMPLATES
        answers = self.prior.answers(item["key"])
        if not answers:
            return "cannot answer: no train item asks this kind of question"
        kind = item.get("answer_type")
        template = TEMPLATES.get(item.get("template_id", ""))
        if kind == "numeric":
            median = float(np.median([float(a) for a in answers]))
            return answer_text(template, median) if template else f"{median:g}"
        if kind == "bbox":
            boxes = np.asarray([a["voxel"] for a in answers if isinstance(a, dict) and "voxel" in a], float)
            if not len(boxes):
                return "cannot answer: no train box of this kind"
            return str([int(round(v)) for v in np.median(boxes, axis=0)])
        counts = Counter(str(a) for a in answers)
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def from_request(arg, request) -> PriorAnswerer:
    """``prior``: the question-only prior of a built benchmark's train split."""
    if arg:
        raise VolvqaInputError(None, "the prior takes no argument", param="model", value=f"prior:{arg}")
    train = [it for it in request.items if it["split"] == "train"]
    if not train:
        raise VolvqaInputError(request.qa_dir, "the prior needs a built benchmark with a train split",
                               param="model", value="prior")
    return PriorAnswerer(train, mode=request.mode)
