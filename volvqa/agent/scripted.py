"""Deterministic agents: no model weights, the same calls every time.

``TraceReplayAgent`` plays an item's gold trace (``traces.jsonl``): it asks
for every call of the trace in one turn, then answers from the results it
got back alone, by the item's question template run over them
(``volvqa.agent.view.ToolContext``). In oracle mode the results are the gold
ones and the answer is the benchmark's; in predicted mode the same calls
return the segmenter's findings, and the answer is what they give.
"""
from __future__ import annotations

import json
from pathlib import Path

from volvqa.agent.tools import canonical_args
from volvqa.agent.view import Replay, ToolContext


def results_of(messages: list[dict]) -> dict[tuple[str, str], dict]:
    """(tool, canonical arguments) -> result, from a chat transcript (the loop's case_id left out)."""
    calls = {}
    for m in messages:
        for c in m.get("tool_calls") or []:
            args = json.loads(c["function"]["arguments"] or "{}")
            args.pop("case_id", None)
            calls[c["id"]] = (c["function"]["name"], canonical_args(args))
    return {calls[m["tool_call_id"]]: json.loads(m["content"]) for m in messages
            if m.get("role") == "tool" and m.get("tool_call_id") in calls}


def answer_from_results(template_id: str, params: dict, results: dict, case_id: str,
                        options: dict | None) -> str:
    """The answer (an option letter with ``options``) the template gives from these results, or
    "cannot answer: ..." when they do not suffice."""
    from volvqa.agent.view import MissingFact
    from volvqa.models.grounded import _same, answer_text, pick_option
    from volvqa.qa.templates import TEMPLATES, unmet_requirement
    t = TEMPLATES[template_id]
    ctx = ToolContext(case_id, Replay(results))
    try:
        missing = unmet_requirement(t, params, ctx)
        if missing is not None:
            return f"cannot answer: {missing}"
        for inst in t.fn(ctx):
            if _same(inst.params, params) and unmet_requirement(t, inst.params, ctx) is None:
                if options:
                    return pick_option(t, inst.answer, options, inst.evidence) or answer_text(t, inst.answer)
                return answer_text(t, inst.answer)
    except (MissingFact, AttributeError, TypeError, KeyError) as e:
        return f"cannot answer: the tool results lack {e}"
    return "cannot answer: the tool results do not give this question's answer"


class TraceReplayAgent:
    """Plays the gold trace of each item of a built benchmark (``qa_dir`` holds traces.jsonl)."""

    def __init__(self, qa_dir: str | Path):
        from volvqa.agent.traces import load_traces, trace_calls
        self._calls = {qid: [(n, a) for n, a, _r in trace_calls(r)] for qid, r in load_traces(qa_dir).items()}
        self._template = {qid: r["template_id"] for qid, r in load_traces(qa_dir).items()}

    def act(self, messages: list[dict], tools: list[dict], task: dict) -> dict:
        from volvqa.models.grounded import _params_from_qid
        qid = task["qid"]
        if qid not in self._calls:
            return {"answer": "cannot answer: no gold trace for this item"}
        if not any(m.get("role") == "tool" for m in messages):
            return {"tool_calls": [{"name": n, "arguments": a} for n, a in self._calls[qid]]}
        return {"answer": answer_from_results(self._template[qid], _params_from_qid(qid), results_of(messages),
                                              task["case_id"], task.get("options"))}
