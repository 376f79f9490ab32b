"""The blind prior: question only, per question kind the train majority answer
(or the option nearest the train median for numbers) and else the option
letter most often correct in train. Reads no image."""
from __future__ import annotations

import time

from volvqa.errors import VolvqaInputError
from volvqa.models.base import Prediction
from volvqa.qa.audit import QuestionOnlyPrior, key_of


class PriorAnswerer:
    name = "prior"

    def __init__(self, train_items: list[dict]):
        items = [dict(it, key=it.get("key") or key_of(it)) for it in train_items]
        self.prior = QuestionOnlyPrior(items)

    def answer(self, volume, item: dict) -> Prediction:
        t = time.perf_counter()
        it = dict(item, key=item.get("key") or key_of(item))
        letter = self.prior.guess(it)
        if letter is None:  # a box question: no prior box from the question alone
            out = "[0, 0, 0, 0, 0, 0]"
        else:
            out = letter
        return Prediction(item["qid"], out, out, self.name, time.perf_counter() - t)


def from_request(arg, request) -> PriorAnswerer:
    """``prior``: the question-only prior of a built benchmark's train split."""
    if arg:
        raise VolvqaInputError(None, "the prior takes no argument", param="model", value=f"prior:{arg}")
    train = [it for it in request.items if it["split"] == "train"]
    if not train:
        raise VolvqaInputError(request.qa_dir, "the prior needs a built benchmark with a train split",
                               param="model", value="prior")
    return PriorAnswerer(train)
