"""The tool service under concurrent and failing calls: one computation per case, and
errors that tell the model what went wrong without the server's paths or tracebacks."""
import json
import threading
import time

import pytest

import volvqa.agent.service as service_mod
from volvqa.agent.service import ToolService
from volvqa.tools.api import CaseTools


def _case(mini_build) -> str:
    return sorted(p.name for p in (mini_build.out / "cases").iterdir())[0]


def test_twenty_concurrent_calls_compute_a_case_once(mini_build, monkeypatch):
    loads = []
    real = service_mod.load_findings

    def slow_load(qa_dir, case_id):
        loads.append(case_id)
        time.sleep(0.3)   # a findings computation takes a while: every thread arrives meanwhile
        return real(qa_dir, case_id)
    monkeypatch.setattr(service_mod, "load_findings", slow_load)
    svc = ToolService(qa_dir=mini_build.out)
    case = _case(mini_build)
    start = threading.Barrier(20)
    results = [None] * 20

    def call(i):
        start.wait()
        results[i] = svc.call("measure", {"case_id": case, "target": "liver", "quantity": "volume_ml"})
    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == [case]
    assert all(r == results[0] for r in results) and "error" not in results[0], results[0]
    # Renders of one case share one CT read too.
    reads = []
    real_volume = svc._volume

    def counted(case_id):
        reads.append(case_id)
        time.sleep(0.2)
        return real_volume(case_id)
    monkeypatch.setattr(svc, "_volume", counted)
    svc._tools.clear()
    start = threading.Barrier(8)
    pngs = []

    def render():
        start.wait()
        pngs.append(svc.call("render", {"case_id": case, "target": "scan"})["png_base64"])
    threads = [threading.Thread(target=render) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reads == [case] and len(set(pngs)) == 1


def _no_leak(result: dict) -> None:
    text = json.dumps(result)
    assert "error" in result and "Traceback" not in text and "/secret" not in text and "File \"" not in text
    assert len(result["error"].splitlines()) == 1


def test_tool_errors_carry_no_paths_or_tracebacks(mini_build, monkeypatch):
    svc = ToolService(qa_dir=mini_build.out)
    case = _case(mini_build)
    r = svc.call("render", {"case_id": case, "target": "scan", "slice": True})
    _no_leak(r)
    assert "slice must be an integer" in r["error"]
    svc.cases[case] = {**svc.cases[case], "ct": "/secret/site/patient_0042/ct.nii.gz"}
    svc._tools.clear()   # the CT the render above read is kept with the case's tools
    r = svc.call("render", {"case_id": case, "target": "scan"})
    _no_leak(r)
    assert r["error"] == "render: the case's files could not be read"

    def broken(self, target, quantity):
        raise KeyError("/secret/site/findings.json")
    monkeypatch.setattr(CaseTools, "measure", broken)
    r = svc.call("measure", {"case_id": _case(mini_build), "target": "liver", "quantity": "volume_ml"})
    _no_leak(r)
    assert r["error"] == "measure: internal error (KeyError)"
    # The service itself failing (not the tools) is answered the same way.
    monkeypatch.setattr(service_mod, "load_findings", lambda *a: (_ for _ in ()).throw(OSError("/secret/x")))
    svc._tools.clear()
    other = sorted(p.name for p in (mini_build.out / "cases").iterdir())[1]
    _no_leak(svc.call("segment_organ", {"case_id": other, "target": "liver"}))


@pytest.mark.parametrize("slice_", [True, 1.5, "3", -1, 10**9])
def test_render_slice_must_be_a_plain_integer(mini_build, slice_):
    svc = ToolService(qa_dir=mini_build.out)
    r = svc.call("render", {"case_id": _case(mini_build), "target": "scan", "slice": slice_})
    _no_leak(r)
    assert "slice must be an integer" in r["error"]
