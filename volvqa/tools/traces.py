"""Gold tool traces: for every QA item, the tool calls whose results give its answer.

A template is run over a ``ToolContext`` whose fetch records each call
(``Recorder``): the calls made while it computed an item's instance,
plus the calls its requirements check, plus ``lookup_knowledge`` of the rule
it applies, are the item's trace. Each trace is verified by replay (the
template run again on those results alone must give the item's answer),
taking the shortest of: the calls made for that instance; with the calls
made before the case's first instance; all calls up to it.

``traces.jsonl`` holds one record per item: chat messages with tool calls
(OpenAI format, the final assistant message the answer), the answer, and a
staged rationale (findings -> summary -> answer) also put in the item's
evidence.
"""
from __future__ import annotations

import json

from volvqa.findings.records import Findings
from volvqa.tools.api import CaseTools, canonical_args, without_images
from volvqa.tools.view import MissingFact, Recorder, Replay, ToolContext

SYSTEM_PROMPT = ("You are a radiology assistant answering questions about one CT scan. Call the tools to segment "
                 "structures, measure them and look clinical rules up; every number must come from a tool "
                 "result. A structure the tools call 'not annotated' is unknown, not absent. Finish with the "
                 "answer alone, in the format the question asks for.")


class TraceError(RuntimeError):
    pass


def _instances(t, ctx) -> list:
    """(instance, log length when it was yielded) for every instance of a template."""
    out = []
    gen = t.fn(ctx)
    rec = ctx._fetch
    while True:
        try:
            inst = next(gen)
        except StopIteration:
            break
        out.append((inst, len(rec.log)))
    return out


def _dedup(keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(keys))


def replay_instance(t, params: dict, case_id: str, results: dict) -> tuple[object | None, str]:
    """(the template's instance for ``params`` from these tool results alone, or None and why not)."""
    from volvqa.qa.readings import same_params
    from volvqa.qa.templates import unmet_requirement
    ctx = ToolContext(case_id, Replay(results))
    try:
        missing = unmet_requirement(t, params, ctx)
        if missing is not None:
            return None, missing
        for inst in t.fn(ctx):
            if same_params(inst.params, params) and unmet_requirement(t, inst.params, ctx) is None:
                return inst, ""
    except (MissingFact, AttributeError, TypeError, KeyError) as e:
        # Templates assume complete findings (a touching organ is present ...); results an agent
        # left out can break that assumption: they do not suffice.
        return None, f"the tool results lack {e}"
    return None, "the tool results do not give this question's answer"


def _suffices(t, inst, case_id: str, results: dict, keys: list) -> bool:
    """Whether these calls' results alone give the instance's answer and boxes."""
    from volvqa.qa.readings import answer_text
    got, _why = replay_instance(t, inst.params, case_id, {k: results[k] for k in keys})
    return got is not None and answer_text(t, got.answer) == answer_text(t, inst.answer) and got.boxes == inst.boxes


def case_traces(findings: Findings, items: list[dict]) -> dict[str, list[tuple[str, dict, dict]]]:
    """qid -> [(tool, arguments, result), ...] for one case's items."""
    from volvqa.qa.qid import params_of
    from volvqa.qa.readings import answer_text, same_params
    from volvqa.qa.templates import TEMPLATES, unmet_requirement
    tools = CaseTools(findings, "oracle")
    by_template: dict[str, list[dict]] = {}
    for it in items:
        by_template.setdefault(it["template_id"], []).append(it)
    out = {}
    for tid, its in sorted(by_template.items()):
        t = TEMPLATES[tid]
        rec = Recorder(tools.call)
        ctx = ToolContext(findings.case_id, rec)
        insts = _instances(t, ctx)
        for it in its:
            params = params_of(it["qid"])
            hit = next((i for i, (inst, _n) in enumerate(insts) if same_params(inst.params, params)), None)
            if hit is None:
                raise TraceError(f"{it['qid']}: the template yields no instance with these parameters")
            inst, end = insts[hit]
            if answer_text(t, inst.answer) != answer_text(t, it["answer"]):
                raise TraceError(f"{it['qid']}: findings.json gives {answer_text(t, inst.answer)!r}, "
                                 f"the item says {it['answer']!r}")
            start = len(rec.log)
            unmet_requirement(t, inst.params, ctx)
            req = rec.log[start:]
            first_end = insts[0][1]
            prev_end = insts[hit - 1][1] if hit else 0
            candidates = [req + rec.log[prev_end:end], req + rec.log[:first_end] + rec.log[prev_end:end],
                          req + rec.log[:end]]
            for keys in candidates:
                keys = _dedup(keys)
                if _suffices(t, inst, findings.case_id, rec.results, keys):
                    break
            else:
                raise TraceError(f"{it['qid']}: no recorded call sequence replays to the answer")
            # Then the calls whose results the answer does not rest on (a key slice's geometry,
            # the lesions of a family looked at before the one asked about) are left out.
            for k in list(keys):
                fewer = [x for x in keys if x != k]
                if _suffices(t, inst, findings.case_id, rec.results, fewer):
                    keys = fewer
            calls = [(name, json.loads(a), rec.results[(name, a)]) for name, a in keys]
            if t.rule:
                calls.append(("lookup_knowledge", {"query": t.rule}, tools.call("lookup_knowledge",
                                                                                 {"query": t.rule})))
            out[it["qid"]] = calls
    return out


def _brief(tool: str, args: dict, r: dict) -> str:
    if "error" in r:
        return f"{tool} error: {r['error']}"
    if tool == "segment_organ":
        s = f"{r['target']} {r['status']}"
        if "complete" in r:
            s += "" if r["complete"] else " (cut by the scan's edge)"
        return s
    if tool == "lookup_knowledge":
        return "; ".join(f"rule {x['key']}: {x['statement']}" for x in r["rules"])
    q = r.get("quantity")
    tgt = r.get("target")
    if q in ("lesions", "lesion_count"):
        return f"{r['count']} {tgt} lesion(s)"
    if q == "phase":
        return f"contrast phase {r['phase']}"
    if q == "geometry":
        return f"scan {r['shape']} voxels at {r['spacing_mm']} mm"
    if q == "contacts":
        return f"{tgt} touches {', '.join(r['touching']) or 'nothing'}"
    if q == "caudate_ratio":
        cr = r.get("caudate") or {}
        return f"caudate-to-right-lobe ratio {cr.get('ratio')}"
    if q == "volume_ml":
        return f"{tgt} volume {r['volume_ml']} ml"
    if q == "mean_hu":
        return f"{tgt} mean {r['mean_hu']} HU"
    if q == "length_mm":
        return f"{tgt} length {r['length_mm']} mm"
    return f"{tgt} {q}: " + json.dumps({k: v for k, v in r.items() if k not in ("target", "quantity")})


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    text = json.dumps(v, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def rationale(item: dict, calls: list[tuple[str, dict, dict]], answer: str) -> str:
    """Findings (one line per tool result) -> summary (the evidence values) -> answer."""
    found = "; ".join(_brief(n, a, r) for n, a, r in calls)
    ev = {k: v for k, v in (item.get("evidence") or {}).items() if k not in ("rule", "rationale")}
    summary = ", ".join(f"{k} = {_short(v)}" for k, v in sorted(ev.items()))
    return f"Findings: {found}. Summary: {summary or item['subtype']}. Answer: {answer}"


def trace_record(item: dict, calls: list[tuple[str, dict, dict]], mode: str = "oracle") -> dict:
    from volvqa.qa.prompts import prompt_for
    from volvqa.qa.readings import answer_text
    from volvqa.qa.templates import TEMPLATES
    t = TEMPLATES[item["template_id"]]
    text = answer_text(t, item["answer"])
    final = item.get("correct_option") or text
    msgs = [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": prompt_for(item, "mc" if item.get("options") else "open")}]
    for k, (name, args, result) in enumerate(calls, 1):
        cid = f"call_{k}"
        msgs.append({"role": "assistant", "content": None,
                     "tool_calls": [{"id": cid, "type": "function",
                                     "function": {"name": name, "arguments": canonical_args(args)}}]})
        msgs.append({"role": "tool", "tool_call_id": cid, "name": name,
                     "content": json.dumps(without_images(result), sort_keys=True)})
    why = rationale(item, calls, text)
    msgs.append({"role": "assistant", "content": final})
    return {"qid": item["qid"], "case_id": item["case_id"], "split": item["split"], "category": item["category"],
            "subtype": item["subtype"], "template_id": item["template_id"], "mode": mode, "messages": msgs,
            "answer": final, "answer_text": text, "rationale": why, "n_calls": len(calls)}


def build_traces(items: list[dict], findings_of) -> tuple[list[dict], dict[str, str]]:
    """(trace records for ``items``, in their order; qid -> why an item has none) from each case's
    findings (``findings_of(case_id) -> Findings``). Sets each traced item's ``evidence["rationale"]``."""
    by_case: dict[str, list[dict]] = {}
    for it in items:
        by_case.setdefault(it["case_id"], []).append(it)
    calls: dict[str, list] = {}
    failures: dict[str, str] = {}
    for cid, its in sorted(by_case.items()):
        f = findings_of(cid)
        try:
            calls.update(case_traces(f, its))
        except TraceError:
            # One item's failure must not cost the case's other traces: item by item.
            for it in its:
                try:
                    calls.update(case_traces(f, [it]))
                except TraceError as e:
                    failures[it["qid"]] = str(e)
    records = []
    for it in items:
        if it["qid"] not in calls:
            continue
        rec = trace_record(it, calls[it["qid"]])
        it.setdefault("evidence", {})["rationale"] = rec["rationale"]
        records.append(rec)
    return records, failures


def message_calls(messages: list[dict]) -> list[tuple[str, dict, dict]]:
    """(tool, arguments, result) of the answered tool calls in chat messages."""
    results = {m["tool_call_id"]: json.loads(m["content"]) for m in messages if m.get("role") == "tool"}
    return [(c["function"]["name"], json.loads(c["function"]["arguments"] or "{}"), results[c["id"]])
            for m in messages if m.get("role") == "assistant" and m.get("tool_calls")
            for c in m["tool_calls"] if c["id"] in results]


def trace_calls(record: dict) -> list[tuple[str, dict, dict]]:
    """(tool, arguments, result) of a trace record's messages."""
    return message_calls(record["messages"])
