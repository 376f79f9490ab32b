"""The answerer interface, prompts, and the plug-in path for users' own models.

An answerer has ``answer(volume, item) -> Prediction``. ``item`` is a QA
record (as in qa.jsonl); with ``options`` it is asked as multiple choice.
A user's model only needs ``generate(prompt, volume=None, images=None) -> str``
and is loaded with ``--model module:Class`` (wrapped in ``PluginAnswerer``).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from volvqa.errors import VolvqaInputError
from volvqa.records import Volume

#: Instructions worded as in DeepTumorVQA.
INSTRUCTIONS = {
    "mc": "Answer with the option's letter from the given choices directly.",
    "numeric": "Answer with a single number.",
    "binary": "Answer with yes or no.",
    "categorical": "Answer with a short phrase.",
    "bbox": "Answer with the 3D bounding box as [x0, y0, z0, x1, y1, z1] in voxel indices.",
}


@dataclass
class Prediction:
    qid: str
    answer: str          # the answer text (a letter for multiple choice)
    raw_output: str
    model: str
    seconds: float
    evidence: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def prompt_for(item: dict, mode: str = "mc") -> str:
    q = item["question"]
    if mode == "mc" and item.get("options"):
        opts = "\n".join(f"{k}. {v}" for k, v in sorted(item["options"].items()))
        return f"{q}\nOptions:\n{opts}\n{INSTRUCTIONS['mc']}"
    return f"{q}\n{INSTRUCTIONS[item['answer_type']]}"


class Answerer(Protocol):
    name: str

    def answer(self, volume: Volume | None, item: dict) -> Prediction: ...


class PluginAnswerer:
    """Wraps a user's model object that has ``generate(prompt, volume=None, images=None) -> str``.

    What ``volume`` and ``images`` hold is the model's input format
    (``volvqa.models.inputs``): the class attribute ``input_format``
    (default ``volume``), overridden by ``input_format=`` here
    (``--input-format`` on the command line)."""

    def __init__(self, model: Any, name: str, mode: str = "mc", input_format: str | None = None):
        from volvqa.models.inputs import INPUT_FORMATS
        if not callable(getattr(model, "generate", None)):
            raise VolvqaInputError(None, f"{name}: the class has no generate(prompt, volume=None, images=None) method")
        self.model, self.name, self.mode = model, name, mode
        self.input_format = input_format or getattr(model, "input_format", "volume")
        if self.input_format not in INPUT_FORMATS:
            raise VolvqaInputError(None, f"{name}: unknown input format {self.input_format!r}; "
                                   f"use {', '.join(INPUT_FORMATS)}")

    def answer(self, volume: Volume | None, item: dict, images=None) -> Prediction:
        from volvqa.models.inputs import model_inputs
        t = time.perf_counter()
        if images is None and volume is not None:
            volume, images = model_inputs(self.input_format, volume, item)
        out = self.model.generate(prompt_for(item, self.mode), volume=volume, images=images)
        return Prediction(item["qid"], str(out).strip(), str(out), self.name, time.perf_counter() - t)


def load_plugin(spec: str, mode: str = "mc", input_format: str | None = None, **kwargs) -> PluginAnswerer:
    """``module:Class`` -> PluginAnswerer (the class is constructed with no arguments)."""
    if ":" not in spec:
        raise VolvqaInputError(None, f"--model {spec!r}: expected module:Class")
    mod_name, cls_name = spec.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise VolvqaInputError(None, f"--model {spec}: cannot import {mod_name} ({e})") from None
    cls = getattr(mod, cls_name, None)
    if cls is None:
        raise VolvqaInputError(None, f"--model {spec}: {mod_name} has no {cls_name}")
    return PluginAnswerer(cls(**kwargs), spec, mode, input_format)
