"""``build-qa``: dataset manifest -> benchmark.

Per-case stage (parallel, cached): make the case if the manifest generates it
(phantoms), load CT and masks, extract findings, generate raw items, render
key slices. Each case's outputs land in ``<out>/work/<case>/`` with atomic
writes, ``items.json`` last, so a rerun after a crash resumes where it
stopped. A failing case is recorded in ``errors.jsonl`` and the others go on.

Global stage (fast, deterministic): splits, options from the dataset's
answers, answer balance, shortcut audit, exclusion of flagged subtypes,
export. Its output depends only on the per-case outputs and the seed, so a
resumed build is byte-identical to an uninterrupted one, whatever the
engine or the number of workers.
"""
from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from volvqa import labels as L
from volvqa.datasets.manifest import Case, Manifest, assign_split, load_cases, load_manifest
from volvqa.errors import VolvqaInputError
from volvqa.io.atomic import write_text_atomic


@dataclass
class BuildConfig:
    manifest: Path
    out: Path
    workers: int = 1
    engine: str = "local"            # local | ray
    shard: tuple[int, int] | None = None
    n_options: int = 4
    include_flagged: bool = False
    finalize: bool = True
    ray_address: str | None = None
    progress: bool = True
    segmenter: str | None = None     # backend spec; overrides the manifest's ``segmenter:``
    segment_all: bool | None = None  # True: predicted masks replace the dataset's (predicted-mode benchmark)
    device: str | None = None
    gpus_per_task: float | None = None
    qc: str | None = None                # exclude | warn | off; None: the manifest's ``qc:``, else exclude
    export_volumes: bool | None = None   # volumes/ and masks/ in the build (None: on for synthetic data)
    views: bool = False                  # views/: axial, coronal, sagittal PNGs per item, plain and boxed
    video: bool = False                  # videos/<case>.mp4: the axial stack
    require_agreement: str | None = None  # a second source (segmenter backend) that must agree per structure


def segmenter_settings(m: Manifest, cfg: BuildConfig) -> dict | None:
    """The manifest's ``segmenter:`` (a backend spec, or a mapping with
    ``backend``, ``device``, ``gpus_per_task``, ``segment_all``), overridden
    by the command line. None when no case is to be segmented."""
    raw = m.options.get("segmenter")
    d = {"backend": raw} if isinstance(raw, str) else dict(raw or {})
    if raw is not None and not isinstance(raw, (str, dict)):
        raise VolvqaInputError(m.path, "segmenter must be a backend spec or a mapping with 'backend'")
    for key, val in (("backend", cfg.segmenter), ("segment_all", cfg.segment_all), ("device", cfg.device),
                     ("gpus_per_task", cfg.gpus_per_task)):
        if val is not None:
            d[key] = val
    if not d.get("backend"):
        if d.get("segment_all"):
            raise VolvqaInputError(m.path, "segment_all needs a segmenter backend")
        return None
    unknown = set(d) - {"backend", "device", "gpus_per_task", "segment_all"}
    if unknown:
        raise VolvqaInputError(m.path, f"unknown segmenter option(s): {', '.join(sorted(unknown))}")
    return {"backend": str(d["backend"]), "device": str(d.get("device", "auto")),
            "gpus_per_task": float(d.get("gpus_per_task", 0)), "segment_all": bool(d.get("segment_all", False))}


def manifest_annotates(m: Manifest) -> list[str] | None:
    """The manifest's ``annotates:`` (canonical names), checked against its
    label spec: a name the spec never produces could only ever be absent."""
    raw = m.options.get("annotates")
    if raw is None:
        return None
    names = L.check_structure_names(raw, where=m.path)
    mapped = L.spec_annotates(m.labels) if isinstance(m.labels, dict) else None
    if mapped is not None:
        never = sorted(n for n in names if n not in mapped)
        if never:
            raise VolvqaInputError(m.path, f"annotates lists {', '.join(never)}, which its labels never map to")
    return sorted(names)


def case_annotates(m: Manifest, c: Case, seg: dict | None) -> list[str] | None:
    """What a case's masks annotate when it cannot be read off the masks
    alone: a segmenter's output classes, the manifest's ``annotates:``, a
    synthetic case's recorded scope; None: inferred while loading
    (``volvqa.io.load_labelmap``)."""
    masks = c.masks if isinstance(c.masks, list) else ([c.masks] if c.masks else [])
    if seg is not None and (seg["segment_all"] or not masks):
        from volvqa.segment import segmenter_annotates
        return sorted(segmenter_annotates(seg["backend"]))
    declared = manifest_annotates(m)
    if declared is not None:
        return declared
    if c.extra.get("generate"):
        from volvqa.synth.dataset import kind_annotates
        return sorted(kind_annotates(c.extra["generate"].get("kind", "abdomen")))
    return c.extra.get("annotates")


def qc_settings(m: Manifest, cfg: BuildConfig) -> dict:
    """QC mode (``--qc`` over the manifest's ``qc:``, default exclude) and
    the second source structures must agree with, if any."""
    from volvqa.qc import check_mode
    mode = cfg.qc or str(m.options.get("qc", "exclude"))
    check_mode(mode, m.path)
    other = cfg.require_agreement or m.options.get("require_agreement")
    return {"mode": mode, "require_agreement": str(other) if other else None}


def cases_for(m: Manifest) -> list[Case]:
    """Cases of a manifest; for a generating manifest, the cases it will generate."""
    gen = m.options.get("generate")
    if not gen:
        return load_cases(m)
    from volvqa.synth.dataset import KINDS, case_prefix
    kind = str(gen.get("kind", "abdomen"))
    if kind not in KINDS:
        raise VolvqaInputError(m.path, f"generate: unknown phantom kind {kind!r}; choose from {', '.join(KINDS)}")
    out = []
    for i in range(int(gen["n"])):
        cid = f"{case_prefix(kind)}_{i:04d}"
        d = m.root / cid
        out.append(Case(cid, d / "ct.nii.gz", [d / "seg.nii.gz", d / "parts.nii.gz"], ["canonical", "volvqa_parts"],
                        split=assign_split(cid, m.seed, m.splits),
                        extra={"generate": {"index": i, "seed": int(gen.get("seed", 0)), "kind": kind,
                                            "lesions": bool(gen.get("lesions", True))}}))
    return out


def _task(m: Manifest, c: Case, out: Path, seg: dict | None, qc: dict, device: str = "auto",
          export: bool = False, views: bool = False, video: bool = False) -> dict:
    masks = c.masks if isinstance(c.masks, list) else ([c.masks] if c.masks else [])
    use_seg = seg is not None and (seg["segment_all"] or not masks)
    return {"case_id": c.case_id, "ct": str(c.ct), "masks": [] if use_seg else [str(p) for p in masks],
            "export": export, "views": views, "video": video,
            "label_spec": c.label_spec if isinstance(c.label_spec, list) else c.label_spec,
            "split": c.split, "out": str(out), "seed": m.seed, "annotates": case_annotates(m, c, seg),
            "generate": c.extra.get("generate"), "qc": qc["mode"],
            "phase": c.extra.get("phase") or m.options.get("phase"),
            "agreement": {"backend": qc["require_agreement"], "device": seg["device"] if seg else device}
            if qc["require_agreement"] else None,
            "segmenter": {"backend": seg["backend"], "device": seg["device"]} if use_seg else None}


def segmentation_paths(out: Path, case_id: str, folder: str = "segmentations") -> tuple[Path, Path]:
    d = out / folder
    return d / f"{case_id}_seg.nii.gz", d / f"{case_id}_parts.nii.gz"


def _segment_case(task: dict, v, key: str = "segmenter", folder: str = "segmentations"):
    """The segment stage for one case: predicted masks, cached under
    ``<out>/<folder>/`` (parts first, label map last, both atomic, so an
    existing label map means a finished case). Returns (mask paths, specs,
    the LabelMap when it was just made, else None)."""
    from volvqa.io import nifti, save_labelmap
    from volvqa.segment import cached_segmenter
    seg_path, parts_path = segmentation_paths(Path(task["out"]), task["case_id"], folder)
    lm = None
    if not seg_path.is_file():
        seg_path.parent.mkdir(parents=True, exist_ok=True)
        lm = cached_segmenter(task[key]["backend"], task[key]["device"]).segment(v)
        if lm.parts is not None:
            nifti.write_nifti(parts_path, lm.parts, lm.affine)
        save_labelmap(lm, seg_path)
    if parts_path.is_file():
        return [str(seg_path), str(parts_path)], ["canonical", "volvqa_parts"], lm
    return [str(seg_path)], ["canonical"], lm


def work_dir(out: Path, case_id: str) -> Path:
    return out / "work" / case_id


def case_done(out: Path, case_id: str) -> bool:
    return (work_dir(out, case_id) / "items.json").is_file()


def process_case(task: dict) -> dict:
    """The per-case stage. Returns {"case_id", "ok", "error"}; never raises."""
    cid = task["case_id"]
    try:
        _process_case(task)
        return {"case_id": cid, "ok": True, "error": None}
    except VolvqaInputError as e:
        return {"case_id": cid, "ok": False, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - a failing case must not stop the others
        return {"case_id": cid, "ok": False, "error": f"{type(e).__name__}: {' '.join(str(e).split())}"}


def case_phase(task: dict, v) -> str:
    """The case's contrast phase: the manifest's (per case, else per dataset), else a phantom's truth (drawn
    phantoms without a phase are unenhanced), else what the file says (DICOM contrast agent), else unknown."""
    if task.get("phase"):
        return task["phase"]
    truth = Path(task["ct"]).parent / "truth.json"
    if truth.is_file() and Path(task["ct"]).name == "ct.nii.gz":
        try:
            t = json.loads(truth.read_text())
        except ValueError:
            t = {}
        if "phase" in t:
            return t["phase"]
        if "variants" in t and "config" in t:   # a phantom drawn before phases existed: unenhanced HU
            return "non-contrast"
    return v.meta.get("phase", "unknown")


def _process_case(task: dict) -> None:
    from volvqa.findings import extract
    from volvqa.findings.report import render_text, structured_report
    from volvqa.io import load_labelmap, load_volume
    from volvqa.io.atomic import write_bytes_atomic
    from volvqa.qa.context import CaseContext
    from volvqa.qa.export import key_slice_png
    from volvqa.qa.generate import case_items

    out = Path(task["out"])
    cid = task["case_id"]
    if case_done(out, cid):
        return
    gen = task.get("generate")
    if gen:
        from volvqa.synth.dataset import case_done as synth_done
        from volvqa.synth.dataset import synthetic_case, write_case
        folder = Path(task["ct"]).parent
        if not synth_done(folder):
            _, v, lm, truth = synthetic_case(gen.get("kind", "abdomen"), gen["index"], gen["seed"],
                                             lesions=gen["lesions"])
            write_case(folder, v, lm, truth)
    v = load_volume(task["ct"])
    v.meta["phase"] = case_phase(task, v)
    spec = task["label_spec"]
    masks = task["masks"]
    lm = None
    if task.get("segmenter"):
        masks, spec, lm = _segment_case(task, v)  # a fresh prediction is used as is, not read back
    if not masks:
        raise VolvqaInputError(task["ct"], "case has no masks (a segmenter is needed for this manifest)")
    if isinstance(spec, list):
        keep = [(m, s) for m, s in zip(masks, spec, strict=False) if Path(m).exists() or not m.endswith("parts.nii.gz")]
        masks, spec = [m for m, _ in keep], [s for _, s in keep]
    if lm is None:
        lm = load_labelmap(masks if len(masks) > 1 else masks[0],
                           spec if len(masks) > 1 or not isinstance(spec, list) else spec[0], reference=v,
                           annotates=task.get("annotates"))
    elif task.get("annotates") is not None:
        lm.annotates = frozenset(task["annotates"]) | lm.present
    exported = export_case(out, cid, v, lm) if task.get("export") else None
    lm, qc_report = run_case_qc(task, v, lm)
    f = extract(v, lm, case_id=cid)
    ctx = CaseContext(cid, f)
    items = case_items(ctx, task["seed"])
    wd = work_dir(out, cid)
    wd.mkdir(parents=True, exist_ok=True)
    write_text_atomic(wd / "qc.json", json.dumps(qc_report, indent=1, sort_keys=True) + "\n")
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    for z in sorted({it["key_slice"] for it in items if it["key_slice"] is not None}):
        z = min(max(int(z), 0), v.shape[2] - 1)
        name = f"{cid}_z{z:03d}.png"
        if not (img_dir / name).exists():
            write_bytes_atomic(img_dir / name, key_slice_png(v.array, z))
    for it in items:
        if it["key_slice"] is not None:
            it["key_slice"] = min(max(int(it["key_slice"]), 0), v.shape[2] - 1)
            it["image"] = f"images/{cid}_z{it['key_slice']:03d}.png"
        else:
            it["image"] = None
        it["views"] = None
        it["video"] = None
    if task.get("views"):
        _write_views(out, cid, v, items)
    if task.get("video"):
        from volvqa.models.inputs import axial_frames, write_mp4
        (out / "videos").mkdir(exist_ok=True)
        mp4 = out / "videos" / f"{cid}.mp4"
        if not mp4.exists():
            write_mp4(mp4, axial_frames(v))
        for it in items:
            it["video"] = f"videos/{cid}.mp4"
    d = f.to_dict()
    d["report"] = structured_report(f)
    write_text_atomic(wd / "findings.json", json.dumps(d, indent=1, sort_keys=True) + "\n")
    write_text_atomic(wd / "report.txt", render_text(f))
    meta = {"case_id": cid, "ct": task["ct"], "shape": list(v.shape), "spacing_mm": list(v.spacing_mm),
            "n_lesions": len(f.lesions), "masks": masks, "label_spec": spec, "exported": exported,
            "annotates": sorted(lm.scope | set(f.excluded)), "qc_excluded": f.excluded, "phase": f.phase}
    write_text_atomic(wd / "case.json", json.dumps(meta, sort_keys=True) + "\n")
    write_text_atomic(wd / "items.json", json.dumps(items, sort_keys=True) + "\n")


def _write_views(out: Path, cid: str, v, items: list[dict]) -> None:
    """Axial, coronal and sagittal PNGs through each item's evidence, plain and with its boxes
    (``views/<case>_<hash>_<view>[_boxed].png``), shared by items with the same centre and boxes."""
    import hashlib

    from volvqa.io.atomic import write_bytes_atomic
    from volvqa.models.inputs import item_centre, png_bytes, view_images
    (out / "views").mkdir(exist_ok=True)
    names = ("axial", "coronal", "sagittal")
    for it in items:
        c = item_centre(v, it)
        key = hashlib.sha256(json.dumps([list(c), it["bbox_voxel"]]).encode()).hexdigest()[:10]
        paths = {"plain": [f"views/{cid}_{key}_{n}.png" for n in names],
                 "boxed": [f"views/{cid}_{key}_{n}_boxed.png" for n in names]}
        if not all((out / p).exists() for p in paths["plain"] + paths["boxed"]):
            for variant, boxes in (("plain", None), ("boxed", it["bbox_voxel"])):
                for p, img in zip(paths[variant], view_images(v, c, boxes), strict=False):
                    if not (out / p).exists():
                        write_bytes_atomic(out / p, png_bytes(img))
        it["views"] = paths


def export_case(out: Path, cid: str, v, lm) -> dict:
    """``volumes/<case>.nii.gz`` (canonical RAS int16 HU: the grid every slice
    index and voxel box of the build refers to) and ``masks/<case>_seg.nii.gz``
    (+ ``_parts``; canonical ids), so the build can be moved or shared without
    its source data. A source CT already stored as canonical int16 NIfTI is
    hard-linked rather than copied when the file system allows."""
    import os
    import shutil

    from volvqa.io import nifti, save_labelmap, save_volume
    (out / "volumes").mkdir(exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    ct = out / "volumes" / f"{cid}.nii.gz"
    if not ct.exists():
        src = Path(v.source.path)
        canonical = v.meta.get("format") == "nifti" and "".join(v.meta.get("orientation_on_disk", ())) == "RAS" \
            and v.meta.get("dtype_on_disk") == "int16" and src.name.endswith(".nii.gz")
        if canonical:
            tmp = ct.parent / f".{ct.name}.link"
            tmp.unlink(missing_ok=True)
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
            os.replace(tmp, ct)
        else:
            save_volume(v, ct)
    seg = out / "masks" / f"{cid}_seg.nii.gz"
    parts = out / "masks" / f"{cid}_parts.nii.gz"
    if lm.parts is not None and not parts.exists():
        nifti.write_nifti(parts, lm.parts, lm.affine)
    if not seg.exists():
        save_labelmap(lm, seg)
    masks = [f"masks/{seg.name}"] + ([f"masks/{parts.name}"] if lm.parts is not None else [])
    return {"ct": f"volumes/{ct.name}", "masks": masks,
            "label_spec": ["canonical", "volvqa_parts"][: len(masks)] if len(masks) > 1 else "canonical"}


def run_case_qc(task: dict, v, lm):
    """Quality control of one case's masks (``volvqa.qc``): the label map to
    use (failing structures unknown in exclude mode) and the case's report.
    With ``agreement``, the second source is segmented (cached under
    ``<out>/agreement/``) and only structures on which both agree are kept."""
    from volvqa.qc import qc_labelmap
    other = None
    if task.get("agreement"):
        from volvqa.io import load_labelmap
        from volvqa.segment import segmenter_annotates
        masks, specs, other = _segment_case(task, v, key="agreement", folder="agreement")
        if other is None:
            other = load_labelmap(masks if len(masks) > 1 else masks[0], specs if len(masks) > 1 else specs[0],
                                  reference=v, annotates=sorted(segmenter_annotates(task["agreement"]["backend"])))
    lm, report = qc_labelmap(v, lm, task.get("qc", "exclude"), case_id=task["case_id"], other=other,
                             require_agreement=other is not None)
    report["require_agreement"] = task["agreement"]["backend"] if task.get("agreement") else None
    return lm, report


def run_cases(tasks: list[dict], cfg: BuildConfig, gpus_per_task: float = 0) -> list[dict]:
    if cfg.engine == "ray":
        from volvqa.engines.ray_engine import run_ray
        # Cases that run a segmenter ask Ray for a GPU share; the others stay CPU tasks.
        seg = [t for t in tasks if t.get("segmenter") or t.get("agreement")]
        rest = [t for t in tasks if not (t.get("segmenter") or t.get("agreement"))]
        results = []
        if seg:
            results += run_ray(process_case, seg, address=cfg.ray_address, progress=cfg.progress,
                               num_gpus=gpus_per_task)
        if rest:
            results += run_ray(process_case, rest, address=cfg.ray_address, progress=cfg.progress)
        return sorted(results, key=lambda r: r["case_id"])
    from volvqa.engines.local import run_local
    return run_local(process_case, tasks, workers=cfg.workers, progress=cfg.progress)


def build_qa(cfg: BuildConfig) -> dict:
    m = load_manifest(cfg.manifest)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = cases_for(m)
    seg = segmenter_settings(m, cfg)
    qc = qc_settings(m, cfg)
    export = cfg.export_volumes if cfg.export_volumes is not None else m.layout == "synthetic"
    if seg is not None or qc["require_agreement"]:
        from volvqa.devices import resolve_device
        resolve_device((seg or {}).get("device") or cfg.device or "auto")   # a missing GPU fails here, once
    tasks = [_task(m, c, out, seg, qc, cfg.device or "auto", export, cfg.views, cfg.video) for c in cases]
    if cfg.shard is not None:
        i, n = cfg.shard
        tasks = [t for k, t in enumerate(tasks) if k % n == i]
    todo = [t for t in tasks if not case_done(out, t["case_id"])]
    results = run_cases(todo, cfg, seg["gpus_per_task"] if seg else 0) if todo else []
    new_errors = {r["case_id"]: r["error"] for r in results if not r["ok"]}
    _merge_errors(out, new_errors, {t["case_id"] for t in todo})
    summary = {"cases": len(cases), "processed": len(todo), "failed_now": len(new_errors)}
    if cfg.finalize:
        pending = [c.case_id for c in cases if not case_done(out, c.case_id) and c.case_id not in _errors(out)]
        if pending:
            raise VolvqaInputError(out, f"{len(pending)} cases not processed yet (other shards?): "
                                   f"{', '.join(pending[:5])}")
        summary.update(finalize(m, cases, out, cfg))
    return summary


def _rel(path, out: Path) -> str:
    """A path as cases.parquet records it: relative to the build folder (posix),
    so the build can move together with (or, exported, without) its data."""
    import os
    return Path(os.path.relpath(Path(path).resolve(), Path(out).resolve())).as_posix()


def _errors(out: Path) -> dict[str, str]:
    p = out / "errors.jsonl"
    if not p.exists():
        return {}
    return {r["case_id"]: r["error"] for r in map(json.loads, p.read_text().splitlines()) if r}


def _merge_errors(out: Path, new: dict[str, str], attempted: set[str]) -> None:
    errs = {k: v for k, v in _errors(out).items() if k not in attempted}
    errs.update(new)
    text = "".join(json.dumps({"case_id": k, "error": errs[k]}, sort_keys=True) + "\n" for k in sorted(errs))
    write_text_atomic(out / "errors.jsonl", text)  # always there: empty when no case failed
    for k in sorted(new):
        print(f"volvqa: case {k} failed: {new[k]}", file=sys.stderr)


def finalize(m: Manifest, cases: list[Case], out: Path, cfg: BuildConfig) -> dict:
    from volvqa.qa.audit import audit
    from volvqa.qa.balance import balance
    from volvqa.qa.export import dataset_card, write_cases_parquet, write_jsonl, write_parquet
    from volvqa.qa.options import balance_median_rank, build_options

    errors = _errors(out)
    raw: list[dict] = []
    case_rows = []
    scopes: dict[str, list[str]] = {}
    qc_reports: dict[str, dict] = {}
    for c in cases:
        wd = work_dir(out, c.case_id)
        row = {"case_id": c.case_id, "split": c.split, "ct": _rel(c.ct, out), "error": errors.get(c.case_id)}
        if case_done(out, c.case_id):
            its = json.loads((wd / "items.json").read_text())
            for it in its:
                it["split"] = c.split
            raw += its
            meta = json.loads((wd / "case.json").read_text())
            exp = meta.get("exported")
            row.update(n_lesions=meta["n_lesions"], shape=meta["shape"], spacing_mm=meta["spacing_mm"],
                       masks=json.dumps(exp["masks"] if exp else [_rel(p, out) for p in meta.get("masks") or []]),
                       label_spec=json.dumps(exp["label_spec"] if exp else meta.get("label_spec")),
                       annotates=json.dumps(meta.get("annotates")), phase=meta.get("phase", "unknown"))
            if exp:
                row["ct"] = exp["ct"]
            scopes[c.case_id] = meta.get("annotates") or []
            # Cases processed by a volvqa without quality control have no qc.json.
            qc_reports[c.case_id] = json.loads((wd / "qc.json").read_text()) if (wd / "qc.json").is_file() else \
                {"case_id": c.case_id, "mode": "not run", "findings": [], "excluded": {}}
            dest = out / "cases" / c.case_id
            dest.mkdir(parents=True, exist_ok=True)
            for name in ("findings.json", "report.txt", "qc.json"):
                if not (wd / name).is_file():
                    continue
                src = (wd / name).read_bytes()
                if not (dest / name).exists() or (dest / name).read_bytes() != src:
                    from volvqa.io.atomic import write_bytes_atomic
                    write_bytes_atomic(dest / name, src)
        case_rows.append(row)
    # Distractors and "the usual answer" come from the train split's answers: that is the median a
    # question-only model can learn (with answers that depend on the contrast phase, the median of all
    # splits sits elsewhere, and the option layout balanced around it is not balanced for such a model).
    pools: dict[str, list[float]] = {}
    all_pools: dict[str, list[float]] = {}
    for it in raw:
        if it["answer_type"] == "numeric":
            all_pools.setdefault(it["key"], []).append(float(it["answer"]))
            if it.get("split") == "train":
                pools.setdefault(it["key"], []).append(float(it["answer"]))
    for key, values in all_pools.items():
        if len(pools.get(key, [])) < 5:
            pools[key] = values
    items = [build_options(it, pools, cfg.n_options, m.seed) for it in raw]
    # A numeric item whose truth sits at the dataset's typical value (so the
    # drawn number of distractors nearer that value could not be placed) is
    # answered by "pick the usual value" without the image: dropped.
    balance_median_rank(items, cfg.n_options, m.seed)
    central_dropped = sum(1 for it in items if it.get("drop_reason"))
    items = [it for it in items if not it.get("drop_reason")]
    items = balance(items, m.seed)
    rows = audit(items)
    flagged = sorted(s for s, r in rows.items() if r["flagged"])
    unaudited = sorted(s for s, r in rows.items() if r.get("status") == "not enough items")
    final = items if cfg.include_flagged else [it for it in items if it["subtype"] not in flagged]
    final.sort(key=lambda it: it["qid"])
    n_items = {}
    for it in final:
        n_items[it["case_id"]] = n_items.get(it["case_id"], 0) + 1
    for r in case_rows:
        r["n_items"] = n_items.get(r["case_id"], 0)
    # Gold tool traces, each verified by replay; they also put a rationale in the item's evidence.
    from volvqa.agent.traces import build_traces
    traces, trace_failures = build_traces(out, final)
    write_text_atomic(out / "traces.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in traces))
    write_jsonl(out / "qa.jsonl", final)
    write_parquet(out / "qa.parquet", final)
    write_cases_parquet(out / "cases.parquet", case_rows)
    write_text_atomic(out / "audit.json", json.dumps(rows, indent=1, sort_keys=True) + "\n")
    qc = qc_settings(m, cfg)
    modes = {r.get("mode") for r in qc_reports.values()}
    if len(modes) == 1:  # what the cases ran with (shards merged later may not repeat the options)
        qc["mode"] = modes.pop()
    others = {r.get("require_agreement") for r in qc_reports.values()}
    if len(others) == 1 and others != {None}:
        qc["require_agreement"] = others.pop()
    qc_summary = qc_overview(qc_reports, qc)
    write_text_atomic(out / "qc.json", json.dumps(qc_summary, indent=1, sort_keys=True) + "\n")
    seg = segmenter_settings(m, cfg)
    annotates = {n: sum(n in s_ for s_ in scopes.values()) for n in sorted(set().union(*scopes.values()))} \
        if scopes else {}
    build_info = {"dataset": m.name, "manifest": m.path.name, "seed": m.seed, "n_options": cfg.n_options,
                  "annotates": annotates, "qc": qc,
                  "numeric_items_dropped_central": central_dropped,
                  "phases": dict(sorted(Counter(c.get("phase") or "unknown" for c in case_rows
                                                if not c["error"]).items()))}
    if seg is not None:
        build_info["segmenter"] = {"backend": seg["backend"], "segment_all": seg["segment_all"]}
    build_json = out / "build.json"
    card = dataset_card(m.name, {"path": str(m.path.name), "layout": m.layout, "seed": m.seed, "license": m.license},
                        final, rows, flagged, cfg.include_flagged, len(cases), [c for c in case_rows if c["error"]],
                        central_dropped, annotates=annotates, qc=qc_summary,
                        phases=dict(sorted(Counter(c.get("phase") or "unknown" for c in case_rows
                                                   if not c["error"]).items())))
    write_text_atomic(out / "dataset_card.md", card)
    from volvqa.qa.export import hf_card_header, write_split_parquets
    splits = write_split_parquets(out, final)
    write_text_atomic(out / "README.md", hf_card_header(m.name, m.license, splits) + card)
    used = {it["image"] for it in final if it.get("image")}
    used |= {p for it in final if it.get("views") for ps in it["views"].values() for p in ps}
    for folder in ("images", "views"):
        for p in sorted((out / folder).glob("*.png")) if (out / folder).exists() else []:
            if f"{folder}/{p.name}" not in used:
                p.unlink()
    subtypes = sorted({it["subtype"] for it in final})
    per_cat_info = {c: sum(it["category"] == c for it in final) for c in sorted({it["category"] for it in final})}
    build_info["summary"] = {"questions": len(final), "subtypes": len(subtypes), "questions_per_category": per_cat_info,
                             "flagged": flagged, "not_enough_items": unaudited, "failed_cases": len(errors),
                             "traces": len(traces), "untraced": trace_failures}
    write_text_atomic(build_json, json.dumps(build_info, indent=1, sort_keys=True) + "\n")
    per_cat = {c: sum(it["category"] == c for it in final) for c in sorted({it["category"] for it in final})}
    return {"questions": len(final), "subtypes": len(subtypes), "numeric_items_dropped_central": central_dropped,
            "categories": sorted(per_cat), "questions_per_category": per_cat, "flagged": flagged,
            "not_enough_items": unaudited, "include_flagged": cfg.include_flagged, "failed_cases": len(errors), "traces": len(traces),
            "untraced": trace_failures, "qc_excluded_structures": sum(qc_summary["excluded_per_structure"].values())}


def summary_text(res: dict, out: Path) -> str:
    """What a person reads after build-qa (the JSON is in build.json and with --json)."""
    lines = []
    if "cases" in res:
        lines.append(f"{res['processed']} of {res['cases']} cases processed now, {res['failed_now']} failed"
                     + (f" (see {Path(out) / 'errors.jsonl'})" if res["failed_now"] else ""))
    if "questions" not in res:
        lines.append("per-case stage only: run build-qa --merge-only once every shard has finished")
        return "\n".join(lines)
    cats = ", ".join(f"{c} {n}" for c, n in res.get("questions_per_category", {}).items())
    lines.append(f"{res['questions']} questions in {res['subtypes']} subtypes ({cats})")
    if res.get("flagged"):
        verb = "flagged" if res.get("include_flagged") else "excluded"
        lines.append(f"{len(res['flagged'])} subtypes {verb} by the shortcut audit (audit.json)")
    if res.get("not_enough_items"):
        lines.append(f"{len(res['not_enough_items'])} subtypes kept unaudited: not enough items to audit")
    if res.get("numeric_items_dropped_central"):
        lines.append(f"{res['numeric_items_dropped_central']} numeric questions dropped (answer at the dataset's "
                     "typical value)")
    if res.get("qc_excluded_structures"):
        lines.append(f"{res['qc_excluded_structures']} structures excluded by mask quality control (qc.json)")
    if "traces" in res:
        lines.append(f"{res['traces']} gold tool traces (traces.jsonl), each verified by replay"
                     + (f"; {len(res['untraced'])} items without one (build.json)" if res.get("untraced") else ""))
    lines.append(f"benchmark: {Path(out) / 'qa.jsonl'}; card: {Path(out) / 'dataset_card.md'}; "
                 f"summary: {Path(out) / 'build.json'}")
    return "\n".join(lines)


def qc_overview(reports: dict[str, dict], qc: dict) -> dict:
    """The build's ``qc.json``: settings, counts per check and per
    structure, and each case's findings and exclusions."""
    by_check: dict[str, int] = {}
    by_structure: dict[str, int] = {}
    for r in reports.values():
        for f in r.get("findings", []):
            by_check[f["check"]] = by_check.get(f["check"], 0) + 1
        for n in r.get("excluded", {}):
            by_structure[n] = by_structure.get(n, 0) + 1
    return {"mode": qc["mode"], "require_agreement": qc["require_agreement"],
            "cases_with_findings": sum(1 for r in reports.values() if r.get("findings") or r.get("excluded")),
            "findings_per_check": dict(sorted(by_check.items())),
            "excluded_per_structure": dict(sorted(by_structure.items())),
            "cases": {k: {"findings": r.get("findings", []), "excluded": r.get("excluded", {})}
                      for k, r in sorted(reports.items()) if r.get("findings") or r.get("excluded")}}


def clean(out: Path) -> None:
    shutil.rmtree(out / "work", ignore_errors=True)
