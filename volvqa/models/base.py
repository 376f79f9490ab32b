"""The prediction record and the plug-in path for users' own models.

An answerer has ``answer(volume, item) -> Prediction``. ``item`` is a QA
record (as in qa.jsonl); with ``options`` it is asked as multiple choice.
A user's model only needs ``generate(prompt, volume=None, images=None) -> str``
and is loaded with ``--model module:Class`` (wrapped in ``PluginAnswerer``).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from volvqa.errors import VolvqaInputError
from volvqa.plugins import load_object
from volvqa.qa.prompts import DTV_SYSTEM_PROMPT, PROMPT_STYLES, dtv_prompt, prompt_for
from volvqa.records import Volume


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


class PluginAnswerer:
    """Wraps a user's model object that has ``generate(prompt, volume=None, images=None) -> str``.

    What ``volume`` and ``images`` hold is the model's input format
    (``volvqa.render.inputs``): the class attribute ``input_format``
    (default ``volume``), overridden by ``input_format=`` here
    (``--input-format`` on the command line)."""

    def __init__(self, model: Any, name: str, mode: str = "mc", input_format: str | None = None,
                 prompt_style: str = "volvqa"):
        import inspect

        from volvqa.render.inputs import INPUT_FORMATS
        if not callable(getattr(model, "generate", None)):
            raise VolvqaInputError(None, f"{name}: the class has no generate(prompt, volume=None, images=None) method")
        if prompt_style not in PROMPT_STYLES:
            raise VolvqaInputError(None, f"unknown prompt style {prompt_style!r}; use {', '.join(PROMPT_STYLES)}")
        self.model, self.name, self.mode, self.prompt_style = model, name, mode, prompt_style
        params = inspect.signature(model.generate).parameters
        self._takes_system = "system" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
        self.input_format = input_format or getattr(model, "input_format", "volume")
        if self.input_format not in INPUT_FORMATS:
            raise VolvqaInputError(None, f"{name}: unknown input format {self.input_format!r}; "
                                   f"use {', '.join(INPUT_FORMATS)}")

    def answer(self, volume: Volume | None, item: dict, images=None) -> Prediction:
        from volvqa.render.inputs import model_inputs
        t = time.perf_counter()
        scan = volume
        if images is None and volume is not None:
            volume, images = model_inputs(self.input_format, volume, item)
        kw = {}
        if self.prompt_style == "deeptumorvqa":
            prompt = dtv_prompt(item, self.mode, self.input_format, scan)
            if self._takes_system:
                kw["system"] = DTV_SYSTEM_PROMPT
        else:
            prompt = prompt_for(item, self.mode)
        out = self.model.generate(prompt, volume=volume, images=images, **kw)
        return Prediction(item["qid"], str(out).strip(), str(out), self.name, time.perf_counter() - t)


def load_plugin(spec: str, mode: str = "mc", input_format: str | None = None, prompt_style: str = "volvqa",
                **kwargs) -> PluginAnswerer:
    """``module:Class`` -> PluginAnswerer (the class is constructed with no arguments)."""
    if ":" not in spec:
        raise VolvqaInputError(None, "expected module:Class", param="model", value=spec)
    cls = load_object(spec, what="model")
    return PluginAnswerer(cls(**kwargs), spec, mode, input_format, prompt_style)
