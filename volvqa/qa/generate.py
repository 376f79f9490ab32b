"""Per-case question generation: findings -> raw items (answers, evidence, boxes).

Options are not built here: numeric and categorical distractors come from the
whole dataset's answers (``volvqa.qa.options``), in the build's global stage.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from volvqa.jsonable import jsonable
from volvqa.qa.context import CaseContext, organ_text
from volvqa.qa.qid import make_qid, param_key
from volvqa.qa.templates import TEMPLATES, Template, unmet_requirement


def _pick(seed: int, *parts: str, n: int) -> int:
    h = hashlib.sha256(("|".join([str(seed), *parts])).encode()).digest()
    return int.from_bytes(h[:8], "big") % n


def _bbox_mm(findings, box: list[int]) -> list[float]:
    aff = np.asarray(findings.affine_ras_mm)
    lo = np.array(box[:3], float) - 0.5
    hi = np.array(box[3:], float) + 0.5
    corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    w = (aff @ corners.T)[:3]
    return [round(float(v), 2) for v in (*w.min(axis=1), *w.max(axis=1))]


def render_question(t: Template, params: dict, paraphrase_index: int) -> str:
    fields = {k: organ_text(v) if isinstance(v, str) else v for k, v in params.items()}
    return t.paraphrases[paraphrase_index].format(**fields)


def case_items(ctx: CaseContext, seed: int, templates: dict[str, Template] | None = None) -> list[dict[str, Any]]:
    """All raw items one case yields, in registry order. An item whose
    template requirements the masks do not meet (a structure they do not
    annotate) is never emitted, whatever the template function yields."""
    out = []
    for t in (templates or TEMPLATES).values():
        for inst in t.fn(ctx):
            if unmet_requirement(t, inst.params, ctx) is not None:
                continue
            pk = param_key(inst.params)
            kp = inst.params if t.key_params is None else {k: inst.params[k] for k in t.key_params if k in inst.params}
            k = _pick(seed, ctx.case_id, t.id, pk, n=len(t.paraphrases))
            evidence = dict(inst.evidence)
            if t.rule:
                evidence["rule"] = t.rule
            if any(r.startswith("phase:") for r in t.requires):
                evidence["phase"] = ctx.findings.phase
            out.append({
                "qid": make_qid(ctx.case_id, t.id, inst.params),
                "case_id": ctx.case_id,
                "category": t.category,
                "subtype": t.subtype_of(inst.params),
                "template_id": t.id,
                "params": inst.params,
                "key": f"{t.id}|{param_key(kp)}",
                "paraphrase": k,
                "question": render_question(t, inst.params, k),
                "answer_type": t.answer_type,
                "answer": inst.answer,
                "unit": t.unit,
                "decimals": t.decimals,
                "integer": t.integer,
                "signed": t.signed,
                "label_set": inst.label_set,
                "evidence": jsonable(evidence),
                "bbox_voxel": [list(map(int, b)) for b in inst.boxes],
                "bbox_mm": [_bbox_mm(ctx.findings, b) for b in inst.boxes],
                "key_slice": inst.key_slice,
            })
    return out
