"""Agent tools over one case: plain functions, no language model inside.

``CaseTools`` answers four tools from a case's findings (the dataset's masks
in oracle mode, a segmenter's in predicted mode) and its CT (``render``):

- ``segment_organ(target)``: present / absent / not annotated / excluded
  (failed mask quality control), with voxel count, boxes (voxel, inclusive,
  canonical RAS+ grid; world RAS mm) and whether the scan's edge cuts it.
- ``measure(target, quantity)``: one quantity with its unit (``QUANTITIES``);
  ``target`` is a structure, an organ family's lesions (``kidney``), one
  lesion (``lesion 3``, ids from ``measure(<organ>, "lesions")``) or
  ``scan`` (geometry, contrast phase).
- ``lookup_knowledge(query)``: the clinical rules of ``volvqa.knowledge``
  matching the query, with their sources.
- ``render(target, view)``: a PNG crop through a structure (or the scan) in
  the radiological display convention, soft-tissue window.

Vision mode offers ``render`` only, on the scan (no masks behind it).
A bad call returns ``{"error": ..., "hint": ...}`` (``ToolError``), never
raises out of ``call``: an agent reads the error and tries again.
Values are the findings' own (6 decimals, as ``findings.json``).
"""
from __future__ import annotations

import base64
import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from volvqa import labels as L
from volvqa.findings.records import Findings, LesionFindings

MODES = ("oracle", "predicted", "vision")
TOOL_NAMES = ("segment_organ", "measure", "lookup_knowledge", "render")
VISION_TOOLS = ("render",)
VIEWS = ("axial", "coronal", "sagittal")

#: quantity -> (what it applies to, unit, description)
QUANTITIES: dict[str, tuple[str, str, str]] = {
    "volume_ml": ("structure|lesion", "ml", "volume (an organ's includes its lesions), with voxel counts"),
    "mean_hu": ("structure|lesion", "HU", "mean attenuation (an organ's parenchyma, lesions excluded), std, median"),
    "long_axis_mm": ("lesion", "mm", "longest axial diameter, its perpendicular and the axial slice index"),
    "short_axis_mm": ("lesion", "mm", "longest diameter perpendicular to the long axis on the same slice"),
    "max_diameter_3d_mm": ("lesion", "mm", "greatest 3D dimension"),
    "length_mm": ("structure", "mm", "longest 3D diameter of a paired organ (kidney length)"),
    "lesion_count": ("family|structure", "count", "number of lesions, by kind and by location"),
    "lesions": ("family", "", "every lesion of an organ family (liver, kidney, pancreas, colon, lung ...), "
                              "largest first, with all measurements, and which lesion classes the masks annotate"),
    "location": ("lesion", "", "Couinaud segment / pancreatic part / kidney side and pole / lung lobe"),
    "attenuation": ("lesion", "HU", "hypo / iso / hyperattenuating against the organ, and the HU difference"),
    "contacts": ("structure|lesion", "", "structures sharing a voxel face with it"),
    "vessel_contact": ("lesion", "deg", "contact angle with each named vessel (pancreatic lesions)"),
    "caudate_ratio": ("liver", "", "caudate-to-right-lobe width ratio and Couinaud segment volumes"),
    "phase": ("scan", "", "contrast phase: non-contrast, arterial, portal venous, contrast or unknown"),
    "geometry": ("scan", "", "array shape, voxel spacing (mm), affine (RAS mm), orientation"),
}

#: A name that stands for several structures ("lung" is itself a structure: the whole-lung label).
_GROUPS = {"kidney": ("kidney_left", "kidney_right")}
_LESION_REF = re.compile(r"^lesion\s*#?\s*(\d+)$")
_WORDS = {"left kidney": "kidney_left", "right kidney": "kidney_right", "kidneys": "kidney",
          "inferior vena cava": "inferior_vena_cava", "small bowel": "small_bowel", "ivc": "inferior_vena_cava"}


_STOP = {"the", "a", "an", "of", "is", "are", "and", "or", "in", "on", "for", "by", "with", "to", "what", "when",
         "which", "how", "does", "do", "it", "its", "there", "this", "be", "at", "as", "than"}
#: Query words as the rules write them (and plurals folded).
_SYNONYMS = {"renal": "kidney", "kidneys": "kidney", "hounsfield": "hu", "attenuation": "hu", "density": "hu",
             "fatty": "steatosis", "fat": "steatosis", "enlargement": "enlarged", "cysts": "cyst",
             "tumour": "tumor", "tumours": "tumor", "tumors": "tumor", "lesions": "lesion", "staging": "stage",
             "hepatic": "liver", "splenic": "spleen", "pancreatic": "pancreas"}

#: Word pairs that name a rule's term ("enlarged spleen" is splenomegaly).
_CONCEPTS = ((frozenset({"spleen", "enlarged"}), "splenomegaly"), (frozenset({"kidney", "cyst"}), "bosniak"))


class ToolError(Exception):
    """A bad call: the message and a hint go back to the agent as the tool's result."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint = message, hint

    def to_dict(self) -> dict:
        return {"error": self.message, **({"hint": self.hint} if self.hint else {})}


def internal_error(tool: str, e: Exception) -> dict:
    """A failure that is not the call's fault, as the model sees it: one line, no paths, no
    traceback (those go to the server's log, where the operator reads them)."""
    import logging

    from volvqa.errors import VolvqaInputError
    logging.getLogger("volvqa.tools").error("tool %s failed", tool, exc_info=e)
    if isinstance(e, VolvqaInputError):
        what = "the case's files could not be read"
    elif isinstance(e, MemoryError):
        what = "out of memory"
    else:
        what = f"internal error ({type(e).__name__})"
    return {"error": f"{tool}: {what}", "hint": "not a problem with the call; the server's log has the details"}


def parse_arguments(args: dict | str | None) -> dict:
    """A call's arguments as a dict, from a dict or the JSON text chat models send; ToolError otherwise."""
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            raise ToolError(f"arguments are not valid JSON: {args[:80]!r}") from None
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise ToolError("arguments must be a JSON object")
    return dict(args)


def canonical_args(args: dict) -> str:
    """One string per call, the key of the result caches and of trace matching."""
    return json.dumps(args, sort_keys=True, separators=(",", ":"))


class CaseTools:
    """The tools for one case. ``findings`` (None in vision mode) backs
    ``segment_organ``, ``measure`` and ``render``'s structure boxes; ``volume_for``
    (called on first ``render``) gives the CT."""

    def __init__(self, findings: Findings | None, mode: str = "oracle",
                 volume_for: Callable[[], Any] | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown tool mode {mode!r}; use {', '.join(MODES)}")
        if mode != "vision" and findings is None:
            raise ValueError(f"{mode} mode needs findings")
        # The values agents see are the findings as written to findings.json.
        self.findings = findings.canonical() if findings is not None else None
        self.mode = mode
        self._volume_for = volume_for
        self._volume = None

    @property
    def names(self) -> tuple[str, ...]:
        return VISION_TOOLS if self.mode == "vision" else TOOL_NAMES

    def call(self, name: str, args: dict | str | None) -> dict:
        """Run one tool; a bad call gives ``{"error", "hint"}``."""
        try:
            args = parse_arguments(args)
            if name not in self.names:
                raise ToolError(f"unknown tool {name!r}", f"tools in {self.mode} mode: {', '.join(self.names)}")
            fn = getattr(self, name)
            import inspect
            params = inspect.signature(fn).parameters
            required = [p for p, v in params.items() if v.default is inspect.Parameter.empty]
            missing = [p for p in required if p not in args]
            extra = [a for a in args if a not in params]
            if missing or extra:
                raise ToolError(f"{name}: " + "; ".join(
                    ([f"missing argument(s) {', '.join(missing)}"] if missing else []) +
                    ([f"unknown argument(s) {', '.join(extra)}"] if extra else [])),
                    f"{name} takes {', '.join(params)}")
            for a, v in args.items():
                if a != "slice" and not isinstance(v, str):
                    raise ToolError(f"{name}: argument {a} must be a string, got {type(v).__name__}")
            return fn(**args)
        except ToolError as e:
            return e.to_dict()
        except Exception as e:  # noqa: BLE001 - the model gets one line; the operator's log gets the rest
            return internal_error(name, e)

    # --- names -------------------------------------------------------------------------------------

    def _name(self, target: str) -> str:
        t = " ".join(target.strip().lower().split())
        t = _WORDS.get(t, t)
        return t.replace(" ", "_")

    def _known(self) -> list[str]:
        f = self.findings
        return sorted(set(f.annotated or []) | set(f.organs) | set(f.parts) | {x.label for x in f.lesions})

    def _lesion(self, target: str) -> LesionFindings | None:
        m = _LESION_REF.match(" ".join(target.strip().lower().replace("_", " ").split()))
        if not m:
            return None
        lid = int(m.group(1))
        for x in self.findings.lesions:
            if x.lesion_id == lid and x.label not in self.findings.excluded:
                return x
        raise ToolError(f"no lesion {lid} in this scan",
                        "lesion ids come from measure(<organ>, 'lesions'); this scan has "
                        f"{', '.join(str(x.lesion_id) for x in self.findings.lesions) or 'no lesions'}")

    def _check_structure(self, name: str) -> None:
        if name in self._vocabulary():
            return
        raise ToolError(f"unknown target {name!r}",
                        "use a canonical structure name; this scan's masks hold: " + ", ".join(self._known()))

    @staticmethod
    def _vocabulary() -> set[str]:
        return (set(L.CANONICAL_IDS) | set(L.PART_PARENT) | set(L.LESION_ORGAN) | set(L.LESION_ORGAN.values())
                | {"kidney", "lung", "lung_left", "lung_right"})

    def _status(self, name: str) -> tuple[str, str | None]:
        f = self.findings
        if name in f.excluded:
            return "excluded", f.excluded[name]
        s = f.status(name)
        return {"present": "present", "absent": "absent"}.get(s, "not annotated"), None

    # --- tools -------------------------------------------------------------------------------------

    def segment_organ(self, target: str) -> dict:
        les = self._lesion(target)
        if les is not None:
            return {"target": f"lesion {les.lesion_id}", "status": "present", "label": les.label, "kind": les.kind,
                    "organ": les.organ, "voxels": les.voxels, "bbox_voxel": les.bbox_voxel, "bbox_mm": les.bbox_mm,
                    "centroid_mm": les.centroid_mm}
        name = self._name(target)
        self._check_structure(name)
        f = self.findings
        if name in _GROUPS:   # both kidneys: present when either is
            members = {m: self._status(m)[0] for m in _GROUPS[name]}
            states = set(members.values())
            status = "present" if "present" in states else "absent" if states == {"absent"} else "not annotated"
            return {"target": name, "status": status, "members": members,
                    "note": f"'{name}' names {', '.join(_GROUPS[name])}: segment or measure those"}
        status, reason = self._status(name)
        out: dict[str, Any] = {"target": name, "status": status}
        if reason:
            out["reason"] = reason
        o = f.organs.get(name) if status == "present" else None
        if o is not None:
            out.update({"voxels": o.voxels, "bbox_voxel": o.bbox_voxel, "bbox_mm": o.bbox_mm,
                        "extent_mm": o.extent_mm, "centroid_mm": o.centroid_mm, "complete": not o.touches_border})
        parts = sorted(p for p, par in L.PART_PARENT.items() if par == name)
        if parts:
            out["parts"] = {p: self._status(p)[0] for p in parts}
        if name in L.LESION_ORGAN:   # a lesion class
            ids = [x.lesion_id for x in f.lesions if x.label == name]
            if status == "present":
                out.update({"count": len(ids), "lesion_ids": ids})
        out["units"] = {"bbox_voxel": "voxel indices [x0,y0,z0,x1,y1,z1], inclusive, canonical RAS+ grid",
                        "bbox_mm": "world RAS mm"} if "bbox_voxel" in out else {}
        if not out["units"]:
            del out["units"]
        return out

    def measure(self, target: str, quantity: str) -> dict:
        q = quantity.strip().lower()
        if q not in QUANTITIES:
            raise ToolError(f"unknown quantity {quantity!r}", "quantities: " + ", ".join(QUANTITIES))
        f = self.findings
        if self._name(target) == "scan":
            if q == "phase":
                return {"target": "scan", "quantity": q, "phase": f.phase}
            if q == "geometry":
                return {"target": "scan", "quantity": q, "shape": f.shape, "spacing_mm": f.spacing_mm,
                        "affine_ras_mm": f.affine_ras_mm, "orientation": "RAS+ (index 0, 1, 2 grow toward the "
                        "patient's right, anterior, superior)"}
            raise ToolError(f"quantity {q!r} does not apply to the scan", "the scan has: phase, geometry")
        les = self._lesion(target)
        if les is not None:
            return self._measure_lesion(les, q)
        name = self._name(target)
        self._check_structure(name)
        if q in ("phase", "geometry"):
            raise ToolError(f"quantity {q!r} applies to target 'scan'")
        if q in ("lesions", "lesion_count"):
            return self._lesions(name, q)
        if name in _GROUPS:
            raise ToolError(f"'{name}' names {', '.join(_GROUPS[name])}; measure one of them",
                            "a family's lesions: measure(<family>, 'lesions')")
        status, reason = self._status(name)
        if status != "present":
            raise ToolError(f"{name} is {status}" + (f" ({reason})" if reason else "") + f": no {q} to measure",
                            "segment_organ says which structures are present")
        if q == "caudate_ratio":
            if name != "liver":
                raise ToolError("caudate_ratio applies to the liver")
            cr = f.measures.get("caudate")
            return {"target": name, "quantity": q, "caudate": cr,
                    **({} if cr else {"note": "the masks do not give Couinaud segments to measure it"})}
        if q == "contacts":
            touching = sorted({b if a == name else a for a, b in f.contacts if name in (a, b)})
            return {"target": name, "quantity": q, "touching": touching}
        o = f.organs.get(name)
        if o is None:
            raise ToolError(f"{q} is measured on organs and lesions; {name} is neither here",
                            "for a lesion class use measure(<organ>, 'lesions')")
        if q == "volume_ml":
            return {"target": name, "quantity": q, "volume_ml": o.volume_ml, "voxels": o.voxels,
                    "parenchyma_voxels": o.parenchyma_voxels, "unit": "ml"}
        if q == "mean_hu":
            return {"target": name, "quantity": q, "mean_hu": o.hu_mean, "std_hu": o.hu_std, "median_hu": o.hu_median,
                    "region": "parenchyma (the organ's own label, lesions excluded)", "unit": "HU",
                    "phase": f.phase}
        if q == "length_mm":
            if o.length_mm is None:
                raise ToolError(f"length_mm is measured on paired organs (kidneys), not {name}")
            return {"target": name, "quantity": q, "length_mm": o.length_mm, "unit": "mm"}
        raise ToolError(f"quantity {q!r} applies to lesions, not to {name}",
                        "lesion ids come from measure(<organ>, 'lesions')")

    def _lesions(self, name: str, q: str) -> dict:
        f = self.findings
        family = "kidney" if name in ("kidney", "kidney_left", "kidney_right") else name
        fams = set(L.LESION_ORGAN.values()) | {"kidney"}
        if family not in fams:
            raise ToolError(f"{name} has no lesion classes", "lesion families: " + ", ".join(sorted(fams)))
        side = name if name in ("kidney_left", "kidney_right") else None
        classes = sorted(n for n, o in L.LESION_ORGAN.items() if o == family)
        les = [x for x in f.lesions if (x.organ == family or (family == "kidney" and x.organ.startswith("kidney_")))
               and x.label not in f.excluded and (side is None or x.organ == side)]
        les = sorted(les, key=lambda x: (-x.volume_ml, x.lesion_id))
        out = {"target": name, "quantity": q, "lesion_classes": {c: self._status(c)[0] for c in classes},
               "count": len(les)}
        if q == "lesions":
            out["lesions"] = [asdict(x) for x in les]
            out["units"] = {"volume_ml": "ml", "hu_mean": "HU", "long_axis_mm": "mm", "short_axis_mm": "mm",
                            "max_diameter_3d_mm": "mm", "axial_slice": "z index", "bbox_voxel": "voxel, inclusive",
                            "bbox_mm": "world RAS mm", "centroid_mm": "world RAS mm"}
        else:
            from collections import Counter

            from volvqa.qa.templates.base import loc_text
            out["by_kind"] = dict(sorted(Counter(x.kind for x in les).items()))
            out["by_location"] = dict(sorted(Counter(loc_text(x) or "unlocated" for x in les).items()))
        return out

    def _measure_lesion(self, x: LesionFindings, q: str) -> dict:
        base = {"target": f"lesion {x.lesion_id}", "quantity": q, "label": x.label, "organ": x.organ}
        vals = {
            "volume_ml": {"volume_ml": x.volume_ml, "voxels": x.voxels, "unit": "ml"},
            "mean_hu": {"mean_hu": x.hu_mean, "std_hu": x.hu_std, "unit": "HU"},
            "long_axis_mm": {"long_axis_mm": x.long_axis_mm, "short_axis_mm": x.short_axis_mm,
                             "axial_slice": x.axial_slice, "unit": "mm"},
            "short_axis_mm": {"short_axis_mm": x.short_axis_mm, "long_axis_mm": x.long_axis_mm,
                              "axial_slice": x.axial_slice, "unit": "mm"},
            "max_diameter_3d_mm": {"max_diameter_3d_mm": x.max_diameter_3d_mm, "unit": "mm"},
            "location": {"location": x.location},
            "attenuation": {"attenuation": x.attenuation, "hu_difference": x.hu_difference, "unit": "HU"},
            "contacts": {"touching": x.touches},
            "vessel_contact": {"vessel_contact_deg": x.vessel_contact, "unit": "deg"},
        }
        if q not in vals:
            raise ToolError(f"quantity {q!r} does not apply to a lesion",
                            "lesion quantities: " + ", ".join(vals))
        return {**base, **vals[q]}

    def lookup_knowledge(self, query: str) -> dict:
        from volvqa.knowledge import RULES
        q = query.strip().lower()
        if not q:
            raise ToolError("lookup_knowledge: empty query", "e.g. 'splenomegaly', 'fatty liver', 'T-stage'")
        if q.replace(" ", "_") in RULES:
            hits = [RULES[q.replace(" ", "_")]]
        else:
            # Words rare among the rules weigh more (idf), words of a rule's key twice.
            words = {_SYNONYMS.get(w, w) for w in re.findall(r"[a-z0-9/]+", q)} - _STOP
            words |= {term for need, term in _CONCEPTS if need <= words}
            docs = {r.key: (set(r.key.split("_")), {_SYNONYMS.get(w, w) for w in
                                                    re.findall(r"[a-z0-9/]+", r.statement.lower())})
                    for r in RULES.values()}
            df = {w: sum(w in k or w in t for k, t in docs.values()) for w in words}
            scored = []
            for r in RULES.values():
                k, t = docs[r.key]
                s = sum(math.log(len(RULES) / df[w]) * (2 if w in k else 1) for w in words if w in k or w in t)
                if s > 0:
                    scored.append((-s, r.key, r))
            hits = [r for _s, _k, r in sorted(scored)[:3]]
        return {"query": query, "rules": [{"key": r.key, "statement": r.statement, "source": r.source}
                                          for r in hits],
                **({} if hits else {"note": "no rule matches; rule keys: " + ", ".join(sorted(RULES))})}

    def render(self, target: str, view: str = "axial", slice: int | None = None) -> dict:
        from PIL import Image

        from volvqa.render import SOFT_TISSUE_WINDOW, panel, windowed
        if view not in VIEWS:
            raise ToolError(f"unknown view {view!r}", "views: " + ", ".join(VIEWS))
        if self._volume is None:
            if self._volume_for is None:
                raise ToolError("render: no CT is available for this case")
            self._volume = self._volume_for()
        v = self._volume
        shape = v.shape
        name = self._name(target)
        if name == "scan":
            box = [0, 0, 0, shape[0] - 1, shape[1] - 1, shape[2] - 1]
        elif self.mode == "vision":
            raise ToolError("vision mode renders the scan only (no masks)", "use target 'scan' and a slice index")
        else:
            seg = self.segment_organ(target)
            if "bbox_voxel" not in seg:
                raise ToolError(f"{target} is {seg['status']}: nothing to render", "render target 'scan' instead")
            box = seg["bbox_voxel"]
        axis = {"sagittal": 0, "coronal": 1, "axial": 2}[view]
        if slice is not None and (isinstance(slice, bool) or not isinstance(slice, int)
                                  or not 0 <= slice < shape[axis]):
            raise ToolError(f"slice must be an integer in 0..{shape[axis] - 1} for the {view} view")
        idx = slice if slice is not None else (box[axis] + box[axis + 3]) // 2
        margin = 8
        lo = [max(0, box[i] - margin) for i in range(3)]
        hi = [min(shape[i] - 1, box[i + 3] + margin) for i in range(3)]
        sl = [builtins_slice(lo[i], hi[i] + 1) for i in range(3)]
        sl[axis] = idx
        img = panel(windowed(np.asarray(v.array[tuple(sl)]), *SOFT_TISSUE_WINDOW))
        buf = io.BytesIO()
        Image.fromarray((img * 255).round().astype(np.uint8)).save(buf, format="PNG")
        return {"target": name if name == "scan" else seg["target"], "view": view, "slice": int(idx),
                "crop_voxel": [*lo, *hi], "window": {"width_hu": SOFT_TISSUE_WINDOW[0],
                                                      "level_hu": SOFT_TISSUE_WINDOW[1]},
                "display": "radiological: patient's right on the image's left", "mime_type": "image/png",
                "png_base64": base64.b64encode(buf.getvalue()).decode()}


builtins_slice = slice


def without_images(result: dict) -> dict:
    """The result as text-only tools (and transcripts) carry it: the PNG replaced by its size."""
    if "png_base64" in result:
        r = dict(result)
        r["png_bytes"] = len(base64.b64decode(r.pop("png_base64")))
        return r
    return result
