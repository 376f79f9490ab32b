"""Deterministic agents: no model weights, the same calls every time.

``TraceReplayAgent`` plays an item's gold trace (``traces.jsonl``): it asks
for every call of the trace in one turn, then answers from the results it
got back alone, by the item's question template run over them
(``volvqa.tools.view.ToolContext``). In oracle mode the results are the gold
ones and the answer is the benchmark's; in predicted mode the same calls
return the segmenter's findings, and the answer is what they give.
"""
from __future__ import annotations

from pathlib import Path

from volvqa.tools.api import canonical_args


def results_of(messages: list[dict]) -> dict[tuple[str, str], dict]:
    """(tool, canonical arguments) -> result, from a chat transcript (the loop's case_id left out)."""
    from volvqa.tools.traces import message_calls
    return {(n, canonical_args({k: v for k, v in a.items() if k != "case_id"})): r
            for n, a, r in message_calls(messages)}


def answer_from_results(template_id: str, params: dict, results: dict, case_id: str,
                        options: dict | None) -> str:
    """The answer (an option letter with ``options``) the template gives from these results, or
    "cannot answer: ..." when they do not suffice."""
    from volvqa.qa.readings import answer_text, pick_option
    from volvqa.qa.templates import TEMPLATES
    from volvqa.tools.traces import replay_instance
    t = TEMPLATES[template_id]
    inst, why = replay_instance(t, params, case_id, results)
    if inst is None:
        return f"cannot answer: {why}"
    if options:
        return pick_option(t, inst.answer, options, inst.evidence) or answer_text(t, inst.answer)
    return answer_text(t, inst.answer)


class TraceReplayAgent:
    """Plays the gold trace of each item of a built benchmark (``qa_dir`` holds traces.jsonl)."""

    def __init__(self, qa_dir: str | Path):
        from volvqa.bench.layout import load_traces
        from volvqa.tools.traces import trace_calls
        traces = load_traces(qa_dir)
        self._calls = {qid: [(n, a) for n, a, _r in trace_calls(r)] for qid, r in traces.items()}
        self._template = {qid: r["template_id"] for qid, r in traces.items()}

    def act(self, messages: list[dict], tools: list[dict], task: dict) -> dict:
        from volvqa.qa.qid import params_of
        qid = task["qid"]
        if qid not in self._calls:
            return {"answer": "cannot answer: no gold trace for this item"}
        if not any(m.get("role") == "tool" for m in messages):
            return {"tool_calls": [{"name": n, "arguments": a} for n, a in self._calls[qid]]}
        return {"answer": answer_from_results(self._template[qid], params_of(qid), results_of(messages),
                                              task["case_id"], task.get("options"))}
