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


PROMPT_STYLES = ("volvqa", "deeptumorvqa")

# DeepTumorVQA v2's prompt wording (its ``prompt.py``, Apache-2.0), so a model can be run here exactly as
# its runners ask it: a modality line by input, the voxel spacing and shape for numeric subtypes, and its
# answer-format line. Its system prompt goes to models whose ``generate`` takes ``system=``.
DTV_SYSTEM_PROMPT = ("You are a radiology AI assistant. You read abdominal CT scans and answer clinical questions "
                     "using the visual evidence and any patient context provided. Be concise and follow the "
                     "answer-format instructions exactly.")
_DTV_MODALITY = {
    "2d_image": "The image is a single axial CT slice from the patient's abdomen (window width 400, level 50).",
    "2d_video": "The video plays a series of axial CT slices through the patient's abdomen "
                "(window width 400, level 50).",
    "3d_volume": "You are given the full 3D abdominal CT volume (NIfTI, native voxel spacing).",
}
_DTV_INPUT = {"volume": "3d_volume", "m3d": "3d_volume", "key_slice": "2d_image", "views": "2d_image",
              "views_boxed": "2d_image", "video": "2d_video"}
_DTV_FORMAT = {"numeric": "Answer with a single number (no units, no extra words).",
               "binary": "Answer with 'yes' or 'no'.", "categorical": "Answer with the most appropriate short phrase."}


def dtv_prompt(item: dict, mode: str, input_format: str = "volume", volume: Volume | None = None) -> str:
    """The user message DeepTumorVQA's runners send for this item (its subtype decides the answer type)."""
    from volvqa.eval.dtv import answer_type, dtv_subtype
    sub = dtv_subtype(item) or item.get("subtype", "")
    parts = [_DTV_MODALITY[_DTV_INPUT.get(input_format, "3d_volume")]]
    if answer_type(sub) == "numeric" and volume is not None:
        parts.append(f"Voxel spacing (mm): {[float(x) for x in volume.spacing_mm]}.  "
                     f"Volume shape: {[int(x) for x in volume.shape]}.")
    if mode == "mc" and item.get("options"):
        parts.append(item["question"] + "".join(f"\n{k}. {v}" for k, v in sorted(item["options"].items())))
        parts.append("Answer with ONLY the single letter (A, B, C, or D).")
    else:
        parts.append(item["question"])
        parts.append(_DTV_FORMAT[answer_type(sub)])
    return "\n".join(parts)


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

    def __init__(self, model: Any, name: str, mode: str = "mc", input_format: str | None = None,
                 prompt_style: str = "volvqa"):
        import inspect

        from volvqa.models.inputs import INPUT_FORMATS
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
        from volvqa.models.inputs import model_inputs
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
        raise VolvqaInputError(None, f"--model {spec!r}: expected module:Class")
    mod_name, cls_name = spec.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise VolvqaInputError(None, f"--model {spec}: cannot import {mod_name} ({e})") from None
    cls = getattr(mod, cls_name, None)
    if cls is None:
        raise VolvqaInputError(None, f"--model {spec}: {mod_name} has no {cls_name}")
    return PluginAnswerer(cls(**kwargs), spec, mode, input_format, prompt_style)
