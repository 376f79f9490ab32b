"""A case as the templates see it, read through the agent tools.

``ToolContext`` is a ``CaseContext`` whose every fact comes from a tool
result: an organ's box from ``segment_organ``, its volume from
``measure(organ, "volume_ml")``, a family's lesions from ``measure(family,
"lesions")`` and so on. Run a template over it with

- a recording fetch (``Recorder``, live tools): the calls the template made
  are the gold trace of each question it yields;
- a replay fetch (``Replay``, the results an agent got): the answer those
  results give. A structure no call asked about is unknown; a measurement
  not fetched raises ``MissingFact``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from volvqa import labels as L
from volvqa.findings.records import LesionFindings
from volvqa.qa.context import FAMILY_LESIONS, ORGAN_OPTIONAL_FAMILIES, CaseContext
from volvqa.tools.api import canonical_args

Fetch = Callable[[str, dict], "dict | None"]

#: OrganFindings field -> the measure quantity that carries it (the rest come from segment_organ).
_ORGAN_MEASURE = {"volume_ml": ("volume_ml", "volume_ml"),
                  "parenchyma_voxels": ("volume_ml", "parenchyma_voxels"),
                  "hu_mean": ("mean_hu", "mean_hu"), "hu_std": ("mean_hu", "std_hu"),
                  "hu_median": ("mean_hu", "median_hu"), "length_mm": ("length_mm", "length_mm")}
_ORGAN_SEGMENT = {"voxels": "voxels", "bbox_voxel": "bbox_voxel", "bbox_mm": "bbox_mm", "extent_mm": "extent_mm",
                  "centroid_mm": "centroid_mm"}


class MissingFact(LookupError):
    """A measurement the agent did not fetch."""


def _unknown(st: str) -> str:
    return {"present": "present", "absent": "absent"}.get(st, "unknown")


def _family(name: str) -> str:
    return "kidney" if name.startswith("kidney_") or name == "kidney" else name


class _Organ:
    """An organ record whose fields are tool results, fetched on first use."""

    def __init__(self, ctx: ToolContext, name: str, seg: dict):
        self.name, self._ctx, self._seg = name, ctx, seg

    @property
    def touches_border(self) -> bool:
        return not self._seg["complete"]

    @property
    def lesion_ids(self) -> list[int]:
        return [x.lesion_id for x in self._ctx.lesions(_family(self.name)) if x.organ == self.name]

    def __getattr__(self, field: str) -> Any:
        if field in _ORGAN_SEGMENT:
            return self._seg[_ORGAN_SEGMENT[field]]
        if field in _ORGAN_MEASURE:
            q, key = _ORGAN_MEASURE[field]
            if q == "length_mm" and self.name not in ("kidney_left", "kidney_right"):
                return None
            return self._ctx.need("measure", {"target": self.name, "quantity": q})[key]
        raise AttributeError(field)


class _Excluded(Mapping):
    """``findings.excluded`` read from segment_organ's status."""

    def __init__(self, ctx: ToolContext):
        self._ctx = ctx

    def __contains__(self, name) -> bool:
        return self._ctx.segment(name).get("status") == "excluded"

    def __getitem__(self, name):
        seg = self._ctx.segment(name)
        if seg.get("status") != "excluded":
            raise KeyError(name)
        return seg.get("reason", "")

    def __iter__(self):   # only membership is asked by templates
        return iter(())

    def __len__(self) -> int:
        return 0


class _Measures(Mapping):
    def __init__(self, ctx: ToolContext):
        self._ctx = ctx

    def __getitem__(self, key):
        if key != "caudate":
            raise KeyError(key)
        cr = self._ctx.need("measure", {"target": "liver", "quantity": "caudate_ratio"}).get("caudate")
        if cr is None:
            raise KeyError(key)
        return cr

    def __iter__(self):
        return iter(("caudate",))

    def __len__(self) -> int:
        return 1


class _Findings:
    """The part of ``Findings`` templates read, as tool results."""

    def __init__(self, ctx: ToolContext, case_id: str):
        self._ctx, self.case_id = ctx, case_id
        self.excluded = _Excluded(ctx)
        self.measures = _Measures(ctx)

    def status(self, name: str) -> str:
        return _unknown(self._ctx.segment(name).get("status", ""))

    def _geometry(self) -> dict:
        return self._ctx.need("measure", {"target": "scan", "quantity": "geometry"})

    @property
    def shape(self) -> list[int]:
        return self._geometry()["shape"]

    @property
    def affine_ras_mm(self) -> list[list[float]]:
        return self._geometry()["affine_ras_mm"]

    @property
    def spacing_mm(self) -> list[float]:
        return self._geometry()["spacing_mm"]

    @property
    def phase(self) -> str:
        return self._ctx.need("measure", {"target": "scan", "quantity": "phase"})["phase"]

    def __getattr__(self, name: str):
        # organs / lesions / contacts are read through the context's methods, one structure at a time.
        raise AttributeError(f"templates read findings.{name} through the case context")


class ToolContext(CaseContext):
    def __init__(self, case_id: str, fetch: Fetch, exhaustive: bool = True):
        self._fetch = fetch
        super().__init__(case_id, _Findings(self, case_id), exhaustive)

    # --- fetching ----------------------------------------------------------------------------------

    def segment(self, name: str) -> dict:
        r = self._fetch("segment_organ", {"target": name})
        return r if r is not None and "error" not in r else {"target": name, "status": "not annotated"}

    def need(self, tool: str, args: dict) -> dict:
        r = self._fetch(tool, args)
        if r is None or "error" in r:
            raise MissingFact(f"{tool}({canonical_args(args)})")
        return r

    def _lesion_result(self, family: str) -> dict | None:
        r = self._fetch("measure", {"target": family, "quantity": "lesions"})
        return r if r is not None and "error" not in r else None

    # --- CaseContext -------------------------------------------------------------------------------

    def organ(self, name: str):
        seg = self.segment(name)
        if seg.get("status") != "present" or "bbox_voxel" not in seg:
            return None
        return _Organ(self, name, seg)

    def lesions(self, family: str) -> list[LesionFindings]:
        r = self._lesion_result(family)
        return [LesionFindings(**d) for d in r["lesions"]] if r else []

    def annotated(self, family: str) -> bool:
        if self.status(family) == "unknown" and family not in ORGAN_OPTIONAL_FAMILIES:
            return False
        r = self._lesion_result(family)
        return bool(r) and any(_unknown(s) != "unknown" for s in r["lesion_classes"].values())

    def kind_annotated(self, family: str, kind: str) -> bool:
        names = [n for n in FAMILY_LESIONS.get(family, ()) if n.endswith(f"_{kind}") or
                 (kind == "tumor" and n.endswith(("_pdac", "_pnet")))]
        if not self.annotated(family):
            return False
        r = self._lesion_result(family)
        return any(_unknown(r["lesion_classes"].get(n, "")) != "unknown" for n in names)

    def has_parts(self, parent: str) -> bool:
        names = [p for p, par in L.PART_PARENT.items() if par == parent]
        parts = self.segment(parent).get("parts") or {}
        return all(_unknown(parts.get(n, "")) != "unknown" for n in names)

    def slice_of(self, centroid_mm) -> int | None:
        # A key slice to show, not an answer: without the scan's geometry there is none.
        r = self._fetch("measure", {"target": "scan", "quantity": "geometry"})
        return super().slice_of(centroid_mm) if r is not None and "error" not in r else None

    def touching(self, name: str) -> set[str]:
        return set(self.need("measure", {"target": name, "quantity": "contacts"})["touching"])


class Recorder:
    """A fetch over live tools that logs every access (cached results, every access logged)."""

    def __init__(self, call: Callable[[str, dict], dict]):
        self._call = call
        self.results: dict[tuple[str, str], dict] = {}
        self.log: list[tuple[str, str]] = []

    def __call__(self, tool: str, args: dict) -> dict:
        key = (tool, canonical_args(args))
        if key not in self.results:
            self.results[key] = self._call(tool, args)
        self.log.append(key)
        return self.results[key]


class Replay:
    """A fetch over the results an agent received; what it did not ask is missing (None)."""

    def __init__(self, results: dict[tuple[str, str], dict]):
        self.results = results

    def __call__(self, tool: str, args: dict) -> dict | None:
        return self.results.get((tool, canonical_args(args)))
