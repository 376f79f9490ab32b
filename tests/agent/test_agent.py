"""Agent mode: tools, gold traces, the MCP server and the agent loop, on a real built benchmark."""
import base64
import io
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import anyio
import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from volvqa import labels as L
from volvqa.agent.scripted import answer_from_results, results_of
from volvqa.agent.service import ToolService
from volvqa.bench.layout import load_traces
from volvqa.cli import main
from volvqa.eval.run import evaluate
from volvqa.findings.records import Findings
from volvqa.qa.qid import params_of
from volvqa.qa.readings import answer_text
from volvqa.qa.templates import TEMPLATES
from volvqa.tools.api import CaseTools, canonical_args
from volvqa.tools.schemas import tool_schemas
from volvqa.tools.traces import trace_calls


@pytest.fixture(scope="module")
def bench(tmp_path_factory, mini_build):
    return mini_build.scratch(tmp_path_factory.mktemp("agent"))


def _items(out):
    return [json.loads(x) for x in (out / "qa.jsonl").read_text().splitlines()]


def test_every_item_has_a_trace_that_replays_on_the_live_tools(bench):
    out = bench / "out"
    items = _items(out)
    traces = load_traces(out)
    assert set(traces) == {it["qid"] for it in items}
    assert json.loads((out / "build.json").read_text())["summary"]["untraced"] == {}
    service = ToolService(qa_dir=out)
    for it in items:
        tr = traces[it["qid"]]
        calls = trace_calls(tr)
        assert tr["n_calls"] == len(calls) >= 1
        results = {}
        for name, args, recorded in calls:
            live = service.call(name, {**args, "case_id": it["case_id"]})
            assert live == recorded, (it["qid"], name, args)
            results[(name, canonical_args(args))] = live
        # The results alone give the answer, by the item's template.
        want = it["correct_option"] or answer_text(TEMPLATES[it["template_id"]], it["answer"])
        got = answer_from_results(it["template_id"], params_of(it["qid"]), results, it["case_id"],
                                  it.get("options"))
        assert got == want, it["qid"]
        assert tr["messages"][-1] == {"role": "assistant", "content": tr["answer"]}
        assert it["evidence"]["rationale"] == tr["rationale"]
        assert tr["rationale"].startswith("Findings: ") and " Summary: " in tr["rationale"]
        if it["template_id"] in ("rec.splenomegaly", "med.fatty_liver"):
            assert calls[-1][0] == "lookup_knowledge"


def test_organ_volume_trace_is_two_calls_and_its_value_is_the_mask_count(bench):
    """Hand-checked: the volume comes from segment_organ + measure, and equals voxel count x voxel
    volume counted here from the mask file with nibabel."""
    out = bench / "out"
    it = next(i for i in _items(out) if i["template_id"] == "meas.organ_volume")
    organ = params_of(it["qid"])["organ"]
    calls = trace_calls(load_traces(out)[it["qid"]])
    assert [(n, a) for n, a, _r in calls] == [("segment_organ", {"target": organ}),
                                              ("measure", {"target": organ, "quantity": "volume_ml"})]
    lesion_ids = [L.CANONICAL_IDS[n] for n, o in L.LESION_ORGAN.items() if o == organ and n in L.CANONICAL_IDS]
    mask = nib.load(str(bench / "data" / it["case_id"] / "seg.nii.gz"))
    arr = np.asarray(mask.dataobj)
    voxel_ml = abs(np.linalg.det(mask.affine[:3, :3])) / 1000
    organ_lesions = 0
    if lesion_ids:  # an organ's volume includes its own lesions: those inside its box
        f = Findings.from_dict(json.loads((out / "cases" / it["case_id"] / "findings.json").read_text()))
        organ_lesions = sum(x.voxels for x in f.lesions if x.organ == organ)
    expect = ((arr == L.CANONICAL_IDS[organ]).sum() + organ_lesions) * voxel_ml
    assert calls[1][2]["volume_ml"] == pytest.approx(expect, abs=1e-3)
    assert calls[1][2]["unit"] == "ml"
    # Without the measurement the answer cannot be given.
    partial = {("segment_organ", canonical_args(calls[0][1])): calls[0][2]}
    assert answer_from_results(it["template_id"], params_of(it["qid"]), partial, it["case_id"],
                               it["options"]).startswith("cannot answer")


@pytest.mark.slow
def test_scripted_agent_through_mcp_stdio_scores_100(bench):
    out = bench / "out"
    preds = bench / "agent_mcp.jsonl"
    r = CliRunner().invoke(main, ["predict", "--qa", str(out), "--model", "agent:volvqa.agent.scripted:TraceReplayAgent",
                                  "--split", "test", "--tools-via", "mcp", "--out", str(preds)])
    assert r.exit_code == 0, r.output
    res = next(iter(evaluate(out, [preds]).values()))
    assert res["overall"]["score"] == 1.0
    assert all(c["score"] == 1.0 for c in res["categories"].values()) and len(res["categories"]) == 5
    tools = res["tools"]["oracle"]
    assert tools["valid_call_share"] == 1.0 and tools["gold_target_recall"] == 1.0
    assert tools["calls_per_question"] == pytest.approx(tools["gold_calls_per_question"])
    assert tools["stopped"] == {"answer": res["overall"]["n"]}
    p = json.loads(preds.read_text().splitlines()[0])
    assert p["evidence"]["transcript"][0]["role"] == "system" and p["evidence"]["agent"]["steps"] == 2


@pytest.mark.slow
def test_mistaken_agents_are_stopped_and_scored(bench):
    out = bench / "out"
    preds = bench / "mistaken.jsonl"
    r = CliRunner().invoke(main, ["predict", "--qa", str(out), "--model", "agent:tests.plugins:MistakenAgent",
                                  "--split", "test", "--max-steps", "4", "--out", str(preds)])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    for p in lines:
        a = p["evidence"]["agent"]
        assert a["stopped"] == "step_cap" and a["steps"] == 4 and p["answer"] == ""
        assert [c["valid"] for c in a["calls"]] == [False, False, True, True]
        assert "unknown tool" in a["calls"][0]["error"] and "unknown quantity" in a["calls"][1]["error"]
    res = next(iter(evaluate(out, [preds]).values()))
    assert res["overall"]["score"] == 0.0
    t = res["tools"]["oracle"]
    assert t["valid_call_share"] == 0.5 and t["calls_per_question"] == 4.0
    assert t["stopped"] == {"step_cap": len(lines)}
    assert 0.0 < t["gold_target_recall"] < 1.0   # it asked about the liver only
    # An agent that raises, and one that takes too long: recorded, the run goes on.
    for cls, opts, stop in (("CrashingAgent", [], "agent_error"), ("SlowAgent", ["--agent-timeout", "0.5"], "timeout")):
        p2 = bench / f"{cls}.jsonl"
        r = CliRunner().invoke(main, ["predict", "--qa", str(out), "--model", f"agent:tests.plugins:{cls}",
                                      "--split", "val", "--out", str(p2), *opts])
        assert r.exit_code == 0, r.output
        got = [json.loads(x)["evidence"]["agent"] for x in p2.read_text().splitlines()]
        assert got and all(a["stopped"] == stop for a in got)
    r = CliRunner().invoke(main, ["predict", "--qa", str(out), "--model", "agent:tests.plugins:NoSuchAgent",
                                  "--out", str(bench / "x.jsonl")])
    assert r.exit_code == 2 and "cannot load" in r.output and not (bench / "x.jsonl").exists()


async def _mcp_session(argv, body):
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    async with stdio_client(StdioServerParameters(command=argv[0], args=argv[1:]), errlog=sys.__stderr__) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            return await body(s)


@pytest.mark.slow
def test_serve_tools_answers_list_and_call_over_mcp(bench):
    out = bench / "out"
    case = sorted(json.loads(x)["case_id"] for x in (out / "qa.jsonl").read_text().splitlines())[0]

    async def body(s):
        listed = await s.list_tools()
        ok = await s.call_tool("segment_organ", {"case_id": case, "target": "liver"})
        bad = await s.call_tool("measure", {"case_id": case, "target": "liver", "quantity": "weight"})
        nocase = await s.call_tool("segment_organ", {"case_id": "nope", "target": "liver"})
        pic = await s.call_tool("render", {"case_id": case, "target": "liver", "view": "coronal"})
        return listed, ok, bad, nocase, pic

    argv = [sys.executable, "-m", "volvqa.cli", "serve-tools", "--qa", str(out)]
    listed, ok, bad, nocase, pic = anyio.run(_mcp_session, argv, body)
    want = {s["function"]["name"]: s["function"]["parameters"] for s in tool_schemas("oracle", case_id=True)}
    assert {t.name: t.input_schema for t in listed.tools} == want
    assert ok.is_error is False and ok.structured_content["status"] == "present"
    f = Findings.from_dict(json.loads((out / "cases" / case / "findings.json").read_text()))
    assert ok.structured_content["bbox_voxel"] == f.organs["liver"].bbox_voxel
    assert bad.is_error is True and "weight" in bad.structured_content["error"] and "volume_ml" in \
        bad.structured_content["hint"]
    assert nocase.is_error is True and "unknown case_id" in nocase.structured_content["error"]
    from PIL import Image
    img = next(c for c in pic.content if c.type == "image")
    assert img.mime_type == "image/png"
    png = Image.open(io.BytesIO(base64.b64decode(img.data)))
    crop = pic.structured_content["crop_voxel"]
    assert png.size == (crop[3] - crop[0] + 1, crop[5] - crop[2] + 1)   # coronal: x across, z up


@pytest.mark.slow
def test_serve_tools_one_scan_partial_labels_and_vision_mode(bench, tmp_path):
    """One scan whose masks annotate the liver and spleen only: the kidneys are 'not annotated'
    (unknown), never absent; vision mode offers render alone."""
    case = bench / "data" / sorted(p.name for p in (bench / "data").iterdir() if p.is_dir())[0]
    img = nib.load(str(case / "seg.nii.gz"))
    arr = np.asarray(img.dataobj)
    keep = np.where(np.isin(arr, [L.CANONICAL_IDS["liver"], L.CANONICAL_IDS["spleen"]]), arr, 0).astype(np.uint8)
    masks = tmp_path / "liver_spleen.nii.gz"
    nib.save(nib.Nifti1Image(keep, img.affine), str(masks))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({str(L.CANONICAL_IDS["liver"]): "liver", str(L.CANONICAL_IDS["spleen"]): "spleen"}))

    async def body(s):
        return (await s.call_tool("segment_organ", {"target": "kidney_left"}),
                await s.call_tool("measure", {"target": "spleen", "quantity": "volume_ml"}),
                await s.call_tool("measure", {"target": "kidney", "quantity": "lesions"}))

    argv = [sys.executable, "-m", "volvqa.cli", "serve-tools", "--volume", str(case / "ct.nii.gz"), "--masks",
            str(masks), "--labels", str(spec)]
    kid, spleen, les = anyio.run(_mcp_session, argv, body)
    assert kid.structured_content["status"] == "not annotated"
    expect = (keep == L.CANONICAL_IDS["spleen"]).sum() * abs(np.linalg.det(img.affine[:3, :3])) / 1000
    assert spleen.structured_content["volume_ml"] == pytest.approx(expect, abs=1e-3)
    assert set(les.structured_content["lesion_classes"].values()) == {"not annotated"}

    async def vision(s):
        return await s.list_tools(), await s.call_tool("render", {"target": "scan", "view": "axial", "slice": 3}), \
            await s.call_tool("segment_organ", {"target": "liver"})

    argv = [sys.executable, "-m", "volvqa.cli", "serve-tools", "--volume", str(case / "ct.nii.gz"), "--mode", "vision"]
    listed, pic, seg = anyio.run(_mcp_session, argv, vision)
    assert [t.name for t in listed.tools] == ["render"]
    assert pic.structured_content["slice"] == 3 and any(c.type == "image" for c in pic.content)
    assert seg.is_error is True and "unknown tool" in seg.structured_content["error"]
    r = CliRunner().invoke(main, ["serve-tools", "--volume", str(tmp_path / "missing.nii.gz")])
    assert r.exit_code == 2 and "missing.nii.gz" in r.output


def test_tool_errors_are_results_not_crashes(bench):
    out = bench / "out"
    case = sorted((out / "cases").iterdir())[0]
    f = Findings.from_dict(json.loads((case / "findings.json").read_text()))
    t = CaseTools(f)
    assert "unknown target" in t.call("segment_organ", {"target": "unicorn"})["error"]
    assert "liver" in t.call("segment_organ", {"target": "unicorn"})["hint"]
    assert "missing argument" in t.call("measure", {"target": "liver"})["error"]
    assert "unknown argument" in t.call("segment_organ", {"target": "liver", "organ": "x"})["error"]
    assert "not valid JSON" in t.call("measure", "{target: liver")["error"]
    assert "no lesion 999" in t.call("measure", {"target": "lesion 999", "quantity": "volume_ml"})["error"]
    assert "must be a string" in t.call("segment_organ", {"target": 3})["error"]
    assert t.call("segment_organ", {"target": "left kidney"})["target"] == "kidney_left"
    both = t.call("segment_organ", {"target": "kidneys"})
    assert both["target"] == "kidney" and set(both["members"]) == {"kidney_left", "kidney_right"}
    assert both["status"] == ("present" if "present" in both["members"].values() else both["status"])
    assert "measure one of them" in t.call("measure", {"target": "kidney", "quantity": "volume_ml"})["error"]
    f.excluded["spleen"] = "2 sizeable pieces"
    t2 = CaseTools(f)
    assert t2.call("segment_organ", {"target": "spleen"}) == {"target": "spleen", "status": "excluded",
                                                              "reason": "2 sizeable pieces"}
    assert "excluded" in t2.call("measure", {"target": "spleen", "quantity": "mean_hu"})["error"]
    rules = t.call("lookup_knowledge", {"query": "splenomegaly grades"})["rules"]
    assert rules[0]["key"] == "splenomegaly" and "Bezerra" in rules[0]["source"]
    assert t.call("lookup_knowledge", {"query": "renal cyst Hounsfield"})["rules"][0]["key"] == "renal_cyst_hu"
    assert {r["key"] for r in t.call("lookup_knowledge", {"query": "is the spleen enlarged"})["rules"]} >= \
        {"organ_enlarged", "splenomegaly"}
    assert t.call("lookup_knowledge", {"query": "xyzzy"})["rules"] == []


class _FakeChat(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/chat/completions that plays the gold trace, then answers from
    the tool results it was sent (the scripted policy behind a real HTTP endpoint)."""
    agent = None
    bodies: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        if len(body["messages"]) == 2:   # a new question: predict asks them case by case, in order
            self.server.current = self.server.order.pop(0)
        qid = self.server.current
        task = {"qid": qid, "case_id": qid.split(":")[0], "options": self.server.options[qid]}
        reply = self.agent.act(body["messages"], body["tools"], task)
        if "tool_calls" in reply:
            msg = {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"c{k}", "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
                for k, c in enumerate(reply["tool_calls"])]}
        else:
            msg = {"role": "assistant", "content": reply["answer"]}
        data = json.dumps({"choices": [{"message": msg, "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def test_openai_adapter_against_a_local_endpoint(bench):
    from volvqa.agent.scripted import TraceReplayAgent
    out = bench / "out"
    items = [it for it in _items(out) if it["split"] == "val"]
    _FakeChat.agent = TraceReplayAgent(out)
    srv = HTTPServer(("127.0.0.1", 0), _FakeChat)
    srv.order = [it["qid"] for it in sorted(items, key=lambda it: it["case_id"])]
    srv.options = {it["qid"]: it.get("options") for it in items}
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        preds = bench / "openai.jsonl"
        r = CliRunner().invoke(main, ["predict", "--qa", str(out), "--model", "agent:openai", "--split", "val",
                                      "--base-url", f"http://127.0.0.1:{srv.server_port}/v1", "--model-name", "scripted",
                                      "--out", str(preds)])
        assert r.exit_code == 0, r.output
    finally:
        srv.shutdown()
    res = next(iter(evaluate(out, [preds]).values()))
    assert res["overall"]["score"] == 1.0 and res["overall"]["n"] == len(items)
    first = _FakeChat.bodies[0]
    assert first["model"] == "scripted" and first["tool_choice"] == "auto"
    assert [t["function"]["name"] for t in first["tools"]] == ["segment_organ", "measure", "lookup_knowledge", "render"]
    assert all("name" not in m for b in _FakeChat.bodies for m in b["messages"] if m["role"] == "tool")
    r = CliRunner().invoke(main, ["predict", "--qa", str(out), "--model", "agent:openai", "--out", str(bench / "y.jsonl")])
    assert r.exit_code == 2 and "--base-url" in r.output


@pytest.mark.slow
def test_scripted_agent_in_predicted_mode_agrees_with_grounded_predicted(tmp_path, bench):
    """Through a (tiny, CPU-trained) MONAI segmenter: the agent's tools and the grounded answerer read
    the same predicted masks, so where both answer an organ measurement they agree."""
    from tests.segment.test_segment import _tiny_run
    _data, run = _tiny_run(tmp_path)
    out = bench / "out"
    a, g = tmp_path / "agent.jsonl", tmp_path / "grounded.jsonl"
    r = CliRunner().invoke(main, ["predict", "--qa", str(out), "--model", "agent:volvqa.agent.scripted:TraceReplayAgent",
                                  "--split", "test", "--tool-mode", "predicted", "--segmenter", f"monai:{run}",
                                  "--device", "cpu", "--out", str(a)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["predict", "--qa", str(out), "--model", "grounded", "--split", "test",
                                  "--segmenter", f"monai:{run}", "--device", "cpu", "--out", str(g)])
    assert r.exit_code == 0, r.output
    pa = {p["qid"]: p for p in map(json.loads, a.read_text().splitlines())}
    pg = {p["qid"]: p for p in map(json.loads, g.read_text().splitlines())}
    assert set(pa) == set(pg)
    assert all(p["evidence"]["agent"]["tool_mode"] == "predicted" for p in pa.values())
    organ = [q for q in pa if q.split(":")[1] in ("meas.organ_volume", "meas.organ_hu")]
    assert organ
    both = [q for q in organ if not pa[q]["answer"].startswith("cannot") and not pg[q]["answer"].startswith("cannot")]
    assert all(pa[q]["answer"] == pg[q]["answer"] for q in both)
    # An organ the network failed on is unknown to both.
    assert all(pa[q]["answer"].startswith("cannot") == pg[q]["answer"].startswith("cannot") for q in organ)
    res = next(iter(evaluate(out, [a]).values()))
    assert res["tools"]["predicted"]["valid_call_share"] > 0.5


def test_schemas_are_valid_openai_function_schemas():
    for mode, names in (("oracle", ["segment_organ", "measure", "lookup_knowledge", "render"]),
                        ("vision", ["render"])):
        s = tool_schemas(mode)
        assert [x["function"]["name"] for x in s] == names
        for x in s:
            p = x["function"]["parameters"]
            assert x["type"] == "function" and p["type"] == "object" and set(p["required"]) <= set(p["properties"])
    r = CliRunner().invoke(main, ["serve-tools", "--qa", "nowhere", "--schemas"])
    assert r.exit_code == 2 and "nowhere" in r.output
    assert results_of([]) == {}


@pytest.mark.slow
def test_serve_tools_over_streamable_http(bench):
    """A real server process with a bearer token: the MCP client with the token works; without it,
    with a wrong one, with a foreign Host (DNS rebinding) or Origin, the request is refused."""
    import os
    import socket
    import time

    import httpx2
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    out = bench / "out"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "volvqa.cli", "serve-tools", "--qa", str(out), "--transport", "http",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "VOLVQA_TOOLS_TOKEN": "tok-123"})
    url = f"http://127.0.0.1:{port}/mcp"
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    try:
        for _ in range(200):   # until it listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
        case = sorted(p.name for p in (out / "cases").iterdir())[0]

        async def run():
            async with httpx2.AsyncClient(headers={"Authorization": "Bearer tok-123"}) as http, \
                    streamable_http_client(url, http_client=http) as (read, write), \
                    ClientSession(read, write) as session:
                await session.initialize()
                return (await session.list_tools(),
                        await session.call_tool("measure", {"case_id": case, "target": "scan", "quantity": "phase"}))

        listed, phase = anyio.run(run)
        good = {**accept, "Authorization": "Bearer tok-123"}
        codes = {name: httpx2.post(url, json=init, headers=h).status_code for name, h in {
            "no token": accept, "wrong token": {**accept, "Authorization": "Bearer tok-124"},
            "foreign host": {**good, "Host": "evil.example:8765"},
            "foreign origin": {**good, "Origin": "http://evil.example"}, "good": good}.items()}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert codes == {"no token": 401, "wrong token": 401, "foreign host": 421, "foreign origin": 403, "good": 200}
    assert [t.name for t in listed.tools] == ["segment_organ", "measure", "lookup_knowledge", "render"]
    f = Findings.from_dict(json.loads((out / "cases" / case / "findings.json").read_text()))
    assert phase.structured_content["phase"] == f.phase


@pytest.mark.parametrize("args, env, expected", [
    (["--host", "0.0.0.0"], {}, "not a loopback address"),
    (["--host", "10.1.2.3"], {"VOLVQA_TOOLS_TOKEN": "t"}, "not a loopback address"),
    (["--host", "0.0.0.0", "--allow-remote"], {}, "needs a bearer token"),
])
def test_serve_tools_refuses_remote_hosts_without_opt_in_and_token(tmp_path, monkeypatch, args, env, expected):
    monkeypatch.delenv("VOLVQA_TOOLS_TOKEN", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    r = CliRunner().invoke(main, ["serve-tools", "--qa", str(tmp_path / "nope"), "--transport", "http", *args])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and expected in lines[0] and "--host" in lines[0], r.output


def test_remote_http_security_settings():
    from volvqa.agent.mcp_server import http_security
    hosts, origins = http_security("0.0.0.0", allow_remote=True, token="t", allowed_hosts=("gpu-node",))
    assert hosts == ["gpu-node:*", "gpu-node"] and "https://gpu-node:*" in origins
    hosts, _ = http_security("127.0.0.1")
    assert "localhost:*" in hosts and "[::1]:*" in hosts


def test_openai_agent_never_follows_a_redirect_with_the_key(monkeypatch):
    from volvqa.agent.openai_agent import OpenAIChatAgent
    seen = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(dict(self.headers))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"choices": [{"message": {"content": "A"}}]}')

        def log_message(self, *a):
            pass
    other = HTTPServer(("127.0.0.1", 0), Elsewhere)

    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{other.server_port}/steal")
            self.end_headers()

        def log_message(self, *a):
            pass
    srv = HTTPServer(("127.0.0.1", 0), Redirecting)
    for s in (srv, other):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    monkeypatch.setenv("VOLVQA_TEST_KEY", "sk-secret-123")
    try:
        agent = OpenAIChatAgent(f"http://127.0.0.1:{srv.server_port}/v1", "m", api_key_env="VOLVQA_TEST_KEY")
        with pytest.raises(RuntimeError, match="307 redirect .* not followed") as e:
            agent.act([{"role": "user", "content": "hi"}], [], {})
        assert "sk-secret" not in str(e.value)
        assert seen == []   # the other host got nothing, key or not
    finally:
        srv.shutdown()
        other.shutdown()
