"""OpenAI function-calling schemas of the agent tools (the MCP server lists the same ones)."""
from __future__ import annotations

from volvqa.tools.api import QUANTITIES, TOOL_NAMES, VIEWS, VISION_TOOLS

_TARGET = ("A structure by its canonical name (liver, spleen, kidney_left, kidney_right, pancreas, gallbladder, "
           "aorta, liver_segment_1..8, pancreas_head|body|tail, lesion classes such as kidney_cyst or "
           "pancreatic_pdac), an organ family for its lesions (liver, kidney, pancreas, colon, lung), one lesion "
           "('lesion 3', ids from measure(<organ>, 'lesions')) or 'scan'.")

_TOOLS = {
    "segment_organ": {
        "description": "Segment a structure in the CT. Returns its status: present, absent (annotated, no voxel), "
                       "'not annotated' (unknown: the masks do not cover it) or excluded (its mask failed quality "
                       "control); when present, voxel count, 3D box in voxels (inclusive, canonical RAS+ grid) and "
                       "world mm, centroid (mm) and whether the scan's edge cuts it; an organ's sub-segments.",
        "properties": {"target": {"type": "string", "description": _TARGET}},
        "required": ["target"]},
    "measure": {
        "description": "Measure one quantity of a structure, lesion family, lesion or the scan, with its unit. "
                       + "; ".join(f"{q}: {d} ({u or 'no unit'})" for q, (_a, u, d) in QUANTITIES.items()) + ".",
        "properties": {"target": {"type": "string", "description": _TARGET},
                       "quantity": {"type": "string", "enum": list(QUANTITIES)}},
        "required": ["target", "quantity"]},
    "lookup_knowledge": {
        "description": "Look up the clinical rules volvqa applies (thresholds with their published sources), "
                       "by rule key or keywords, e.g. 'splenomegaly', 'fatty liver', 'pancreatic T-stage'.",
        "properties": {"query": {"type": "string", "description": "A rule key or a few keywords."}},
        "required": ["query"]},
    "render": {
        "description": "Render a PNG crop through a structure (or the whole scan) in one view, soft-tissue window "
                       "(W400/L50), radiological convention (patient's right on the image's left).",
        "properties": {"target": {"type": "string", "description": "A structure or lesion as for segment_organ, "
                                                                   "or 'scan' (the only target in vision mode)."},
                       "view": {"type": "string", "enum": list(VIEWS)},
                       "slice": {"type": "integer", "description": "Slice index along the view's axis "
                                                                  "(default: through the structure's centre)."}},
        "required": ["target", "view"]},
}


def tool_schemas(mode: str = "oracle", case_id: bool = False) -> list[dict]:
    """The tools offered in ``mode`` (vision: render only), in OpenAI's ``tools`` format; with
    ``case_id`` every tool takes the benchmark case it asks about."""
    names = VISION_TOOLS if mode == "vision" else TOOL_NAMES
    out = []
    for name in names:
        spec = _TOOLS[name]
        props = dict(spec["properties"])
        required = list(spec["required"])
        if case_id:
            props = {"case_id": {"type": "string", "description": "The benchmark case (cases.parquet)."}, **props}
            required = ["case_id", *required]
        out.append({"type": "function", "function": {
            "name": name, "description": spec["description"],
            "parameters": {"type": "object", "properties": props, "required": required,
                           "additionalProperties": False}}})
    return out
