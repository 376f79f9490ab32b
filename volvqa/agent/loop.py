"""The agent loop of ``volvqa predict --model agent:...`` and the tool metrics.

A user's agent is a class with

    def act(self, messages: list[dict], tools: list[dict], task: dict) -> dict

``messages`` is the conversation so far in OpenAI's chat format (system,
user, assistant turns with ``tool_calls``, ``tool`` results), ``tools`` the
OpenAI function schemas of the tools offered (per mode), ``task`` the item
without its answer (qid, case_id, question, options, answer_type, mode). It
returns either an assistant message in OpenAI's format or the short forms
``{"tool_calls": [{"name": ..., "arguments": {...}}]}`` / ``{"answer": "..."}``.
volvqa runs the calls (in process, or through its MCP server over stdio),
appends the results and asks again, up to ``max_steps`` turns and
``timeout_s`` seconds per question; the transcript and the call log go into
the prediction's evidence, and ``tool_metrics`` scores them against the gold
traces.
"""
from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from volvqa.models.base import Prediction
from volvqa.qa.prompts import prompt_for
from volvqa.tools.api import TOOL_NAMES, ToolError, parse_arguments, without_images
from volvqa.tools.schemas import tool_schemas
from volvqa.tools.traces import SYSTEM_PROMPT

DEFAULT_MAX_STEPS = 12
DEFAULT_TIMEOUT_S = 300.0


class McpExecutor:
    """Tool calls through volvqa's MCP server, spawned over stdio by the MCP SDK's client."""

    def __init__(self, argv: list[str], timeout_s: float = 120.0):
        from volvqa.agent.mcp_server import _need_mcp
        _need_mcp()
        from mcp.client.stdio import StdioServerParameters
        self._params = StdioServerParameters(command=argv[0], args=argv[1:])
        self._timeout = timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._stop: asyncio.Event | None = None
        self._session = None
        self._main = asyncio.run_coroutine_threadsafe(self._run(), self._loop)
        ready = asyncio.run_coroutine_threadsafe(self._open(), self._loop)
        try:
            self.schemas = ready.result(timeout=timeout_s)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise

    async def _open(self):
        while self._session is None:
            if self._main.done():
                self._main.result()   # raises the server's start-up error
                raise RuntimeError("MCP server exited during start-up")
            await asyncio.sleep(0.01)
        listed = await self._session.list_tools()
        return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                  "parameters": t.input_schema}} for t in listed.tools]

    async def _run(self):
        from mcp.client.session import ClientSession
        from mcp.client.stdio import stdio_client
        self._stop = asyncio.Event()
        async with stdio_client(self._params, errlog=_real_stderr()) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                self._session = session
                await self._stop.wait()

    def call(self, name: str, args: dict) -> dict:
        fut = asyncio.run_coroutine_threadsafe(self._session.call_tool(name, args), self._loop)
        res = fut.result(timeout=self._timeout)
        if res.structured_content is not None:
            return dict(res.structured_content)
        text = next((c.text for c in res.content if getattr(c, "type", "") == "text"), "")
        try:
            return json.loads(text)
        except ValueError:
            return {"error": text or "the tool returned no result"}

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        try:
            self._main.result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


def _real_stderr():
    """The server's stderr needs a file descriptor (a captured sys.stderr may have none)."""
    try:
        sys.stderr.fileno()
        return sys.stderr
    except (AttributeError, OSError, ValueError):
        return sys.__stderr__


def serve_tools_argv(qa_dir, mode: str, segmenter: str | None = None, device: str = "auto") -> list[str]:
    argv = [sys.executable, "-m", "volvqa.cli", "serve-tools", "--qa", str(qa_dir), "--mode", mode,
            "--transport", "stdio"]
    if segmenter:
        argv += ["--segmenter", segmenter, "--device", device]
    return argv


def _normalise(reply: Any, step: int) -> tuple[dict, list[dict], str | None]:
    """(assistant message to record, tool calls [{id, name, arguments}], final answer or None)."""
    if isinstance(reply, str):
        return {"role": "assistant", "content": reply}, [], reply
    if not isinstance(reply, dict):
        raise TypeError(f"act() returned {type(reply).__name__}, expected a dict")
    calls = []
    for k, c in enumerate(reply.get("tool_calls") or []):
        fn = c.get("function", c)
        calls.append({"id": c.get("id") or f"call_{step}_{k + 1}", "name": fn.get("name"),
                      "arguments": fn.get("arguments", {})})
    if calls:
        msg = {"role": "assistant", "content": reply.get("content"), "tool_calls": [
            {"id": c["id"], "type": "function", "function": {
                "name": c["name"], "arguments": c["arguments"] if isinstance(c["arguments"], str)
                else json.dumps(c["arguments"], sort_keys=True)}} for c in calls]}
        return msg, calls, None
    answer = reply.get("answer", reply.get("content"))
    if answer is None:
        raise ValueError("act() returned neither tool calls nor an answer")
    return {"role": "assistant", "content": str(answer)}, [], str(answer)


class AgentAnswerer:
    """Runs a user's agent over one item at a time; ``executor.call(name, args)`` runs tools with
    the item's ``case_id`` added (so an agent asks about its own scan only)."""

    def __init__(self, agent: Any, name: str, executor, tool_mode: str = "oracle", mode: str = "mc",
                 max_steps: int = DEFAULT_MAX_STEPS, timeout_s: float = DEFAULT_TIMEOUT_S):
        if not callable(getattr(agent, "act", None)):
            raise TypeError(f"{name}: the agent class has no act(messages, tools, task) method")
        self.agent, self.name, self.executor = agent, name, executor
        self.tool_mode, self.mode, self.max_steps, self.timeout_s = tool_mode, mode, max_steps, timeout_s
        self.schemas = tool_schemas(tool_mode)
        self._pool = ThreadPoolExecutor(max_workers=1)

    def answer(self, volume, item: dict) -> Prediction:
        t0 = time.perf_counter()
        task = {"qid": item["qid"], "case_id": item["case_id"], "question": item["question"],
                "options": item.get("options") if self.mode == "mc" else None, "answer_type": item["answer_type"],
                "mode": self.mode, "tool_mode": self.tool_mode}
        messages: list[dict] = [{"role": "system", "content": SYSTEM_PROMPT},
                                {"role": "user", "content": prompt_for(item, self.mode)}]
        log: list[dict] = []
        answer, stopped, error = "", "step_cap", None
        steps = 0
        for step in range(1, self.max_steps + 1):
            left = self.timeout_s - (time.perf_counter() - t0)
            if left <= 0:
                stopped = "timeout"
                break
            steps = step
            fut = self._pool.submit(self.agent.act, [dict(m) for m in messages], self.schemas, dict(task))
            try:
                reply = fut.result(timeout=left)
                msg, calls, final = _normalise(reply, step)
            except FutureTimeout:
                stopped = "timeout"
                # The stuck act() keeps the worker: the next question gets a fresh one.
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = ThreadPoolExecutor(max_workers=1)
                break
            except Exception as e:  # noqa: BLE001  (the user's agent failed: recorded, the run goes on)
                stopped, error = "agent_error", f"{type(e).__name__}: {e}"
                break
            messages.append(msg)
            if final is not None:
                answer, stopped = final.strip(), "answer"
                break
            for c in calls:
                result = self._run(c, item["case_id"])
                ok = "error" not in result
                log.append({"name": c["name"], "arguments": c["arguments"], "valid": ok,
                            **({} if ok else {"error": result["error"]})})
                messages.append({"role": "tool", "tool_call_id": c["id"], "name": c["name"],
                                 "content": json.dumps(without_images(result), sort_keys=True)})
                if "png_base64" in result:   # the picture itself, as chat models take images
                    messages.append({"role": "user", "content": [
                        {"type": "text", "text": f"Image returned by {c['name']} ({c['id']}):"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + result["png_base64"]}}]})
        evidence = {"agent": {"tool_mode": self.tool_mode, "steps": steps, "stopped": stopped, "calls": log,
                              "n_calls": len(log), "n_valid": sum(c["valid"] for c in log),
                              **({"error": error} if error else {})},
                    "transcript": [_text_only(m) for m in messages]}
        return Prediction(item["qid"], answer, answer, self.name, time.perf_counter() - t0, evidence=evidence)

    def _run(self, call: dict, case_id: str) -> dict:
        name = call["name"]
        try:
            args = parse_arguments(call["arguments"])
        except ToolError as e:
            return e.to_dict()
        if name not in {s["function"]["name"] for s in self.schemas}:
            return {"error": f"unknown tool {name!r}", "hint": "tools: " + ", ".join(
                s["function"]["name"] for s in self.schemas)}
        try:
            return self.executor.call(name, {**args, "case_id": case_id})
        except Exception as e:  # noqa: BLE001  (a transport failure is this call's error, not the run's)
            return {"error": f"tool call failed: {type(e).__name__}: {e}"}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.executor, "close", None)
        if close is not None:
            close()


def _text_only(m: dict) -> dict:
    if isinstance(m.get("content"), list):   # an image message: the transcript keeps its text
        return {**m, "content": [c if c.get("type") == "text" else {"type": "image_url", "image_url": "<png>"}
                                 for c in m["content"]]}
    return m


def _targets(calls) -> set[tuple[str, str]]:
    out = set()
    for name, args in calls:
        try:
            args = parse_arguments(args)
        except ToolError:
            continue
        if name in TOOL_NAMES:
            out.add((name, str(args.get("target", args.get("query", ""))).strip().lower()))
    return out


def tool_metrics(predictions: list[dict], traces: dict[str, dict] | None) -> dict:
    """Per tool mode: share of valid calls, calls per question (and the gold traces' length), the
    share of the gold trace's (tool, target) pairs the agent queried, and how runs stopped."""
    from volvqa.tools.traces import trace_calls
    by_mode: dict[str, list[dict]] = {}
    for p in predictions:
        a = (p.get("evidence") or {}).get("agent")
        if a is not None:
            by_mode.setdefault(a.get("tool_mode", "oracle"), []).append(p)
    out = {}
    for mode, preds in sorted(by_mode.items()):
        n = len(preds)
        calls = sum(p["evidence"]["agent"]["n_calls"] for p in preds)
        valid = sum(p["evidence"]["agent"]["n_valid"] for p in preds)
        gold_len, recall = [], []
        for p in preds:
            tr = (traces or {}).get(p["qid"])
            if tr is None:
                continue
            gold = _targets((n_, a) for n_, a, _r in trace_calls(tr))
            gold_len.append(tr["n_calls"])
            got = _targets((c["name"], c["arguments"]) for c in p["evidence"]["agent"]["calls"])
            recall.append(len(gold & got) / len(gold) if gold else 1.0)
        stops: dict[str, int] = {}
        for p in preds:
            s = p["evidence"]["agent"]["stopped"]
            stops[s] = stops.get(s, 0) + 1
        out[mode] = {"questions": n, "calls": calls, "valid_call_share": valid / calls if calls else None,
                     "calls_per_question": calls / n if n else 0.0,
                     "gold_calls_per_question": sum(gold_len) / len(gold_len) if gold_len else None,
                     "gold_target_recall": sum(recall) / len(recall) if recall else None,
                     "stopped": dict(sorted(stops.items()))}
    return out
