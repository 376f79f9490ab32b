"""The segmentation-grounded answerer: findings from masks, answers from the
template registry. Oracle mode uses the dataset's masks, predicted mode a
segmenter's (any callable volume -> LabelMap).

With an item's template id it re-runs that template; for free text it
parses the question against every paraphrase of every template (each
placeholder becomes a capture group), preferring paraphrases without
placeholders. An unknown question gets "cannot answer" and the list of the
question kinds it supports.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable

from volvqa.errors import VolvqaInputError
from volvqa.findings import extract
from volvqa.findings.records import Findings
from volvqa.models.base import Prediction
from volvqa.qa.context import CaseContext, organ_text
from volvqa.qa.qid import params_of
from volvqa.qa.readings import answer_text, parse_question, pick_option, same_params, supported_kinds
from volvqa.qa.templates import TEMPLATES, Template, unmet_requirement
from volvqa.records import LabelMap, Volume


class GroundedAnswerer:
    """Answers from masks. ``labelmap_for(volume, item) -> LabelMap`` supplies them
    (the dataset's masks in oracle mode, a segmenter's in predicted mode); the
    label map's annotation scope says what may be answered, and mask quality
    control (``qc``: exclude | warn | off, as in build-qa) turns structures
    whose masks fail it unknown. ``other_for`` (same signature) gives a second
    source that structures must agree with (build-qa --require-agreement)."""

    def __init__(self, labelmap_for: Callable[[Volume, dict], LabelMap], *, name: str = "grounded",
                 mode: str = "mc", qc: str = "exclude",
                 other_for: Callable[[Volume, dict], LabelMap] | None = None):
        from volvqa.qc import check_mode
        self.labelmap_for = labelmap_for
        self.name = name
        self.mode = mode
        self.qc = check_mode(qc)
        self.other_for = other_for
        self._cache: tuple[Volume, Findings] | None = None

    def findings(self, volume: Volume, item: dict) -> Findings:
        # The cache holds the volume itself and compares identity: an id() key
        # can be reused by the next case's volume once this one is freed.
        from volvqa.qc import qc_labelmap
        key = volume
        if self._cache and self._cache[0] is key:
            return self._cache[1]
        lm = self.labelmap_for(volume, item)
        other = self.other_for(volume, item) if self.other_for is not None else None
        lm, _report = qc_labelmap(volume, lm, self.qc, case_id=item.get("case_id", ""), other=other,
                                  require_agreement=other is not None)
        f = extract(volume, lm, case_id=item.get("case_id", ""))
        self._cache = (key, f)
        return f

    def resolve(self, item: dict) -> list[tuple[str, dict]]:
        """Readings of an item: its template; the generator's wordings; else a natural reading
        (``volvqa.qa.freetext``), whose unit hints are kept in ``self._units``."""
        self._units = {}
        self._natural = False
        if item.get("template_id") in TEMPLATES:
            return [(item["template_id"], params_of(item.get("qid", "")))]
        exact = parse_question(item["question"])
        if exact:
            return exact
        from volvqa.qa.freetext import interpret
        self._natural = True
        out = []
        for r in interpret(item["question"]):
            if r.template_id in TEMPLATES:
                out.append((r.template_id, r.params))
                if r.unit:
                    self._units[(r.template_id, json.dumps(r.params, sort_keys=True))] = r.unit
        return out

    def answer(self, volume: Volume, item: dict) -> Prediction:
        t0 = time.perf_counter()
        readings = self.resolve(item)
        if not readings:
            from volvqa.qa.freetext import explain_unread
            msg = (f"cannot answer: {explain_unread(item['question'])}; the question matches no supported "
                   "question kind; supported: " + "; ".join(supported_kinds()))
            return Prediction(item.get("qid", ""), msg, msg, self.name, time.perf_counter() - t0)
        f = self.findings(volume, item)
        ctx = CaseContext(item.get("case_id", ""), f, exhaustive=True)
        answerable = []
        for tid, params in readings:
            t = TEMPLATES[tid]
            if unmet_requirement(t, params, ctx) is not None:
                continue
            for inst in t.fn(ctx):
                if same_params(inst.params, params) and unmet_requirement(t, inst.params, ctx) is None:
                    answerable.append((t, inst, params))
                    break
        distinct = {(t.id, json.dumps(p, sort_keys=True)) for t, _i, p in answerable}
        if len(distinct) > 1 and getattr(self, "_natural", False):
            from volvqa.qa.generate import render_question
            asks = [render_question(t, inst.params, 0) for t, inst, _p in answerable]
            msg = "cannot answer: the question is ambiguous; did you mean: " + " | ".join(asks)
            return Prediction(item.get("qid", ""), msg, msg, self.name, time.perf_counter() - t0)
        if answerable:
            t, inst, params = answerable[0]
            unit = getattr(self, "_units", {}).get((t.id, json.dumps(params, sort_keys=True)))
            return self._reply(t, inst, item, time.perf_counter() - t0, unit)
        tid, params = readings[0]
        t = TEMPLATES[tid]
        missing = unmet_requirement(t, params, ctx)
        if missing is not None:
            msg = f"cannot answer: {missing}"
        else:
            try:
                kind = t.subtype_of(params)
            except (KeyError, IndexError):
                kind = t.subtype.replace("{organ}", "organ")
            msg = f"cannot answer: the masks lack what '{kind}' needs ({t.needs})"
            organ = ctx.organ(str(params.get("organ", ""))) if params.get("organ") else None
            if "complete" in t.needs and organ is not None and organ.touches_border:
                msg = (f"cannot answer: the {organ_text(organ.name)} is cut by the scan's edge, so its "
                       f"{kind.replace(organ_text(organ.name) + ' ', '')} is not measurable ('{kind}' needs a "
                       "complete organ)")
        return Prediction(item.get("qid", ""), msg, msg, self.name, time.perf_counter() - t0)

    def _reply(self, t: Template, inst, item: dict, seconds: float, unit: str | None = None) -> Prediction:
        text = answer_text(t, inst.answer)
        if unit and t.answer_type == "numeric":
            text += _converted(float(inst.answer), t.unit, unit)
        out = text
        if self.mode == "mc" and item.get("options"):
            letter = pick_option(t, inst.answer, item["options"], inst.evidence)
            out = letter if letter else text
        ev = {"template_id": t.id, "params": inst.params, "answer": text, "values": inst.evidence,
              "bbox_voxel": inst.boxes, "key_slice": inst.key_slice}
        return Prediction(item.get("qid", ""), out, out, self.name, seconds, evidence=ev)


def _converted(value: float, unit: str, asked: str) -> str:
    """The answer again in the unit the question asked for ("(2.3 cm)")."""
    if unit == "ml" and asked == "cc":
        return f" ({value:.1f} cc)"
    if unit == "ml" and asked == "l":
        return f" ({value / 1000:.3f} l)"
    if unit == "mm" and asked == "cm":
        return f" ({value / 10:.2f} cm)"
    return ""


def dataset_masks(case_rows: dict[str, dict]):
    """``labelmap_for`` that loads a case's masks as the build recorded them
    (oracle mode), with the annotation scope the build used."""
    import json as _json

    from volvqa.io import load_labelmap

    def labelmap_for(volume: Volume, item: dict) -> LabelMap:
        row = case_rows[item["case_id"]]
        if row.get("phase"):     # the phase the build recorded decides which attenuation rules apply
            volume.meta["phase"] = row["phase"]
        masks = _json.loads(row["masks"])
        spec = _json.loads(row["label_spec"])
        scope = _json.loads(row["annotates"]) if row.get("annotates") else None
        if isinstance(spec, list) and len(masks) == 1:
            spec = spec[0]
        return load_labelmap(masks, spec, reference=volume, annotates=scope)
    return labelmap_for


def agreement_masks(qa_dir, backend: str):
    """``other_for`` reading the second source a build cached under
    ``<qa>/agreement/`` (build-qa --require-agreement)."""
    from pathlib import Path

    from volvqa.bench.layout import segmentation_paths
    from volvqa.io import load_labelmap
    from volvqa.segment import segmenter_annotates
    scope = sorted(segmenter_annotates(backend))

    def other_for(volume: Volume, item: dict) -> LabelMap:
        seg, parts = segmentation_paths(Path(qa_dir), item["case_id"], "agreement")
        src = [seg, parts] if parts.is_file() else seg
        return load_labelmap(src, ["canonical", "volvqa_parts"] if parts.is_file() else "canonical",
                             reference=volume, annotates=scope)
    return other_for


def fixed_masks(path, label_spec="auto", annotates=None):
    """``labelmap_for`` for one scan's mask file or folder (``volvqa answer --masks``)."""
    from volvqa.io import load_labelmap

    def labelmap_for(volume: Volume, item: dict) -> LabelMap:
        return load_labelmap(path, label_spec, reference=volume, annotates=annotates)
    return labelmap_for


__all__ = ["GroundedAnswerer", "agreement_masks", "dataset_masks", "fixed_masks", "parse_question",
           "supported_kinds"]


def from_request(arg, request) -> GroundedAnswerer:
    """``grounded``: answers from masks: a segmenter's (predicted), one scan's, or a benchmark's own (oracle)."""
    if arg:
        raise VolvqaInputError(None, "the grounded answerer takes no argument", param="model",
                               value=f"grounded:{arg}")
    qc_info = request.info.get("qc") or {"mode": "exclude", "require_agreement": None}
    qc = request.qc or qc_info["mode"]
    if request.segmenter:
        if request.labelmap_for is not None:
            raise VolvqaInputError(None, "give masks or a segmenter, not both", param="segmenter")
        from volvqa.segment import segmenter_masks
        return GroundedAnswerer(segmenter_masks(request.segmenter, request.device), name="grounded-predicted",
                                mode=request.mode, qc=qc)
    if request.labelmap_for is not None:
        return GroundedAnswerer(request.labelmap_for, mode=request.mode, qc=qc)
    if request.qa_dir is None:
        raise VolvqaInputError(None, "the grounded answerer needs the scan's masks or a segmenter", param="masks")
    other = agreement_masks(request.qa_dir, qc_info["require_agreement"]) if qc_info.get("require_agreement") \
        else None
    return GroundedAnswerer(dataset_masks(request.cases), name="grounded-oracle", mode=request.mode, qc=qc,
                            other_for=other)
