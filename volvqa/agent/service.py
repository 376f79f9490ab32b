"""The tools of one scan or of a built benchmark's cases, in one of three modes.

- oracle: findings from the dataset's masks (a benchmark's ``cases/<id>/findings.json``,
  which its questions were computed from; for one scan, ``--masks``);
- predicted: findings from a segmenter's masks (``--segmenter``), through the
  same quality control and extraction as build-qa;
- vision: ``render`` only, over the CT.

``ToolService.call(name, args)`` takes ``case_id`` among the arguments when it
serves a benchmark, and never raises for a bad call: the error is the result.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from volvqa.bench.layout import load_findings
from volvqa.errors import VolvqaInputError
from volvqa.findings.records import Findings
from volvqa.tools.api import MODES, CaseTools, ToolError, internal_error, parse_arguments
from volvqa.tools.schemas import tool_schemas

_KEEP_CASES = 4   # tools (and their CTs) kept in memory


class ToolService:
    def __init__(self, *, qa_dir: str | Path | None = None, volume: str | Path | None = None,
                 masks: str | Path | None = None, label_spec: str = "auto", mode: str = "oracle",
                 segmenter: str | None = None, device: str = "auto", phase: str | None = None,
                 qc: str = "exclude"):
        if mode not in MODES:
            raise VolvqaInputError(None, f"unknown tool mode {mode!r}; use {', '.join(MODES)}")
        if (qa_dir is None) == (volume is None):
            raise VolvqaInputError(None, "give either a built benchmark (qa_dir) or one scan (volume)")
        if mode == "predicted" and not segmenter:
            raise VolvqaInputError(None, "predicted mode needs a segmenter", param="segmenter")
        if mode == "oracle" and volume is not None and masks is None:
            raise VolvqaInputError(volume, "oracle mode on one scan needs its masks", param="masks")
        self.mode, self.segmenter, self.device, self.qc = mode, segmenter, device, qc
        self.qa_dir = Path(qa_dir) if qa_dir is not None else None
        self.volume_path, self.masks, self.label_spec, self.phase = volume, masks, label_spec, phase
        self.cases: dict[str, dict] = {}
        if self.qa_dir is not None:
            from volvqa.bench.layout import load_qa
            _items, self.cases, info = load_qa(self.qa_dir)
            self.qc = (info.get("qc") or {}).get("mode", qc)
        self._tools: OrderedDict[str, CaseTools] = OrderedDict()
        # Concurrent calls (the MCP server runs each in a thread) share one computation per case.
        self._lock = threading.Lock()
        self._case_locks: dict[str, threading.Lock] = {}

    @property
    def per_case(self) -> bool:
        return self.qa_dir is not None

    def schemas(self) -> list[dict]:
        return tool_schemas(self.mode, case_id=self.per_case)

    def _volume(self, case_id: str):
        from volvqa.io import load_volume
        if self.per_case:
            v = load_volume(self.cases[case_id]["ct"])
            if self.cases[case_id].get("phase"):
                v.meta["phase"] = self.cases[case_id]["phase"]
            return v
        v = load_volume(self.volume_path)
        if self.phase:
            v.meta["phase"] = self.phase
        return v

    def _findings(self, case_id: str, volume_for) -> Findings | None:
        if self.mode == "vision":
            return None
        if self.mode == "oracle" and self.per_case:
            return load_findings(self.qa_dir, case_id)
        from volvqa.models.grounded import GroundedAnswerer, fixed_masks
        if self.mode == "oracle":
            labelmap_for = fixed_masks(self.masks, self.label_spec)
        else:
            from volvqa.segment import segmenter_masks
            labelmap_for = segmenter_masks(self.segmenter, self.device)
        g = GroundedAnswerer(labelmap_for, qc=self.qc)
        return g.findings(volume_for(), {"case_id": case_id})

    def tools(self, case_id: str = "") -> CaseTools:
        if self.per_case and case_id not in self.cases:
            raise ToolError(f"unknown case_id {case_id!r}", f"the benchmark has {len(self.cases)} cases, e.g. "
                            + ", ".join(sorted(self.cases)[:5]))
        with self._lock:
            case_lock = self._case_locks.setdefault(case_id, threading.Lock())
        with case_lock:
            with self._lock:
                if case_id in self._tools:
                    self._tools.move_to_end(case_id)
                    return self._tools[case_id]
            loaded = []   # the CT, read once: for the findings (predicted, one scan) and for render
            volume_lock = threading.Lock()

            def volume_for():
                with volume_lock:
                    if not loaded:
                        loaded.append(self._volume(case_id))
                    return loaded[0]
            t = CaseTools(self._findings(case_id, volume_for), self.mode, volume_for=volume_for)
            with self._lock:
                self._tools[case_id] = t
                while len(self._tools) > _KEEP_CASES:
                    self._tools.popitem(last=False)
            return t

    def call(self, name: str, args: dict | str | None) -> dict:
        try:
            args = parse_arguments(args)
            case_id = ""
            if self.per_case:
                if "case_id" not in args:
                    raise ToolError(f"{name}: missing argument case_id", "every tool takes the benchmark's case_id")
                case_id = str(args.pop("case_id"))
            return self.tools(case_id).call(name, args)
        except ToolError as e:
            return e.to_dict()
        except Exception as e:  # noqa: BLE001 - the model gets one line; the operator's log gets the rest
            return internal_error(name, e)
