"""The prompts a model is asked with: volvqa's own wording and DeepTumorVQA v2's.

Question-side text only (no model code), so the gold tool traces and every
answerer share one wording.
"""
from __future__ import annotations

from volvqa.qa.dtv import answer_type, dtv_subtype
from volvqa.records import Volume

#: Instructions worded as in DeepTumorVQA.
INSTRUCTIONS = {
    "mc": "Answer with the option's letter from the given choices directly.",
    "numeric": "Answer with a single number.",
    "binary": "Answer with yes or no.",
    "categorical": "Answer with a short phrase.",
    "bbox": "Answer with the 3D bounding box as [x0, y0, z0, x1, y1, z1] in voxel indices.",
}


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
