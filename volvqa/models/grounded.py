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
import re
import time
from collections.abc import Callable

from volvqa.findings import extract
from volvqa.findings.records import Findings
from volvqa.models.base import Prediction
from volvqa.qa.context import ORGAN_TEXT, CaseContext, organ_text
from volvqa.qa.options import fmt
from volvqa.qa.templates import TEMPLATES, Template, unmet_requirement
from volvqa.records import LabelMap, Volume

_NAME_OF = {v: k for k, v in ORGAN_TEXT.items()}
_NAME_OF.update({"kidneys": "kidneys", "liver and spleen": "liver and spleen"})
_INT_FIELDS = {"slice", "segment"}


def _pattern(paraphrase: str) -> re.Pattern:
    parts = re.split(r"(\{[a-z_]+\})", paraphrase)
    out = []
    seen = set()
    for p in parts:
        if p.startswith("{") and p.endswith("}"):
            name = p[1:-1]
            if name in seen:
                out.append(rf"(?P={name})")
                continue
            seen.add(name)
            out.append(rf"(?P<{name}>\d+)" if name in _INT_FIELDS else rf"(?P<{name}>.+?)")
        else:
            out.append(re.escape(p))
    return re.compile("^" + "".join(out) + "$", re.I)


_PATTERNS: list[tuple[int, str, re.Pattern]] = sorted(
    ((p.count("{"), t.id, _pattern(p)) for t in TEMPLATES.values() for p in t.paraphrases),
    key=lambda x: (x[0], x[1]))


def supported_kinds() -> list[str]:
    return sorted({t.subtype.replace("{organ}", "<organ>").replace("{kind}", "<kind>") for t in TEMPLATES.values()})


def parse_question(question: str) -> list[tuple[str, dict]]:
    """Candidate (template id, params) readings of a free-text question, best first."""
    q = " ".join(question.strip().split())
    out = []
    for _n, tid, pat in _PATTERNS:
        m = pat.match(q)
        if not m:
            continue
        params = {}
        ok = True
        for k, v in m.groupdict().items():
            if k in _INT_FIELDS:
                params[k] = int(v)
            elif k == "organ":
                if v.lower() not in _NAME_OF:
                    ok = False
                    break
                params[k] = _NAME_OF[v.lower()]
            elif k == "organs":  # "liver, kidneys and pancreas" -> liver+kidney+pancreas
                names = [w.strip().lower() for w in re.split(r",|\band\b", v) if w.strip()]
                names = [n[:-1] if n == "kidneys" else n for n in names]
                if not names or any(n not in _NAME_OF for n in names):
                    ok = False
                    break
                params[k] = "+".join(_NAME_OF[n] for n in names)
            else:
                params[k] = v
        if ok:
            out.append((tid, params))
    return out


def _params_from_qid(qid: str) -> dict:
    parts = qid.split(":", 2)
    if len(parts) < 3 or not parts[2]:
        return {}
    return dict(kv.split("=", 1) for kv in parts[2].split(","))


def _same(a: dict, b: dict) -> bool:
    keys = set(a) & set(b)
    return all(str(a[k]) == str(b[k]) for k in keys) and set(b) <= set(a) | {"where"}


def answer_text(t: Template, answer) -> str:
    if t.answer_type == "numeric":
        return fmt(float(answer), t.decimals, t.unit, t.integer)
    if t.answer_type == "bbox":
        return str(list(answer["voxel"]))
    return str(answer)


def pick_option(t: Template, answer, options: dict[str, str], evidence: dict | None = None) -> str | None:
    if t.answer_type == "numeric":
        vals = {}
        for k, v in options.items():
            try:
                vals[k] = float(v.split()[0])
            except (ValueError, IndexError):
                continue
        if not vals:
            return None
        return min(vals, key=lambda k: (abs(vals[k] - float(answer)), k))
    wants = [str(answer)]
    if evidence and evidence.get("touching"):  # any structure in contact is a right answer
        wants += [ORGAN_TEXT.get(n, n) for n in evidence["touching"]]
    for want in wants:
        for k, v in sorted(options.items()):
            if v.lower() == want.lower():
                return k
    return None


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
        (``volvqa.models.freetext``), whose unit hints are kept in ``self._units``."""
        self._units = {}
        self._natural = False
        if item.get("template_id") in TEMPLATES:
            return [(item["template_id"], _params_from_qid(item.get("qid", "")))]
        exact = parse_question(item["question"])
        if exact:
            return exact
        from volvqa.models.freetext import interpret
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
            msg = ("cannot answer: the question matches no supported question kind; supported: "
                   + "; ".join(supported_kinds()))
            return Prediction(item.get("qid", ""), msg, msg, self.name, time.perf_counter() - t0)
        f = self.findings(volume, item)
        ctx = CaseContext(item.get("case_id", ""), f, exhaustive=True)
        answerable = []
        for tid, params in readings:
            t = TEMPLATES[tid]
            if unmet_requirement(t, params, ctx) is not None:
                continue
            for inst in t.fn(ctx):
                if _same(inst.params, params) and unmet_requirement(t, inst.params, ctx) is None:
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
        return load_labelmap(masks if len(masks) > 1 else masks[0], spec, reference=volume, annotates=scope)
    return labelmap_for


def agreement_masks(qa_dir, backend: str):
    """``other_for`` reading the second source a build cached under
    ``<qa>/agreement/`` (build-qa --require-agreement)."""
    from pathlib import Path

    from volvqa.io import load_labelmap
    from volvqa.qa.build import segmentation_paths
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
