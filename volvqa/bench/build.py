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
import sys
from dataclasses import dataclass
from pathlib import Path

from volvqa import labels as L
from volvqa.bench.layout import IMAGES_DIR, case_done, merge_errors, read_errors, segmentation_paths, work_dir
from volvqa.datasets.manifest import Case, Manifest, cases_for, load_manifest
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


def _generate_case(task: dict) -> None:
    """A generating manifest's phantom, written into its case folder unless it is there already."""
    from volvqa.synth.dataset import case_done as synth_done
    from volvqa.synth.dataset import synthetic_case, write_case
    gen = task["generate"]
    folder = Path(task["ct"]).parent
    if not synth_done(folder):
        _, v, lm, truth = synthetic_case(gen.get("kind", "abdomen"), gen["index"], gen["seed"],
                                         lesions=gen["lesions"])
        write_case(folder, v, lm, truth)


def _write_key_slices(out: Path, cid: str, v, items: list[dict]) -> None:
    """Each item's key slice (clipped to the volume) as images/<case>_z<k>.png; sets ``image``."""
    from volvqa.bench.export import key_slice_png
    from volvqa.io.atomic import write_bytes_atomic
    img_dir = out / IMAGES_DIR
    img_dir.mkdir(parents=True, exist_ok=True)
    for z in sorted({it["key_slice"] for it in items if it["key_slice"] is not None}):
        z = min(max(int(z), 0), v.shape[2] - 1)
        name = f"{cid}_z{z:03d}.png"
        if not (img_dir / name).exists():
            write_bytes_atomic(img_dir / name, key_slice_png(v.array, z))
    for it in items:
        if it["key_slice"] is not None:
            it["key_slice"] = min(max(int(it["key_slice"]), 0), v.shape[2] - 1)
            it["image"] = f"{IMAGES_DIR}/{cid}_z{it['key_slice']:03d}.png"
        else:
            it["image"] = None
        it["views"] = None
        it["video"] = None


def _process_case(task: dict) -> None:
    from volvqa.findings import extract
    from volvqa.findings.report import render_text, structured_report
    from volvqa.io import load_labelmap, load_volume
    from volvqa.qa.context import CaseContext
    from volvqa.qa.generate import case_items

    out = Path(task["out"])
    cid = task["case_id"]
    if case_done(out, cid):
        return
    if task.get("generate"):
        _generate_case(task)
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
        lm = load_labelmap(masks, spec, reference=v,
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
    _write_key_slices(out, cid, v, items)
    if task.get("views"):
        _write_views(out, cid, v, items)
    if task.get("video"):
        from volvqa.render.inputs import axial_frames, write_mp4
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
    from volvqa.render.inputs import item_centre, png_bytes, view_images
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

    from volvqa.io import nifti, save_labelmap, save_volume
    from volvqa.io.atomic import link_or_copy_atomic
    (out / "volumes").mkdir(exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    ct = out / "volumes" / f"{cid}.nii.gz"
    if not ct.exists():
        src = Path(v.source.path)
        canonical = v.meta.get("format") == "nifti" and "".join(v.meta.get("orientation_on_disk", ())) == "RAS" \
            and v.meta.get("dtype_on_disk") == "int16" and src.name.endswith(".nii.gz")
        if canonical:
            link_or_copy_atomic(src, ct)
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
            other = load_labelmap(masks, specs,
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
    merge_errors(out, new_errors, {t["case_id"] for t in todo})
    for k in sorted(new_errors):
        print(f"volvqa: case {k} failed: {new_errors[k]}", file=sys.stderr)
    summary = {"cases": len(cases), "processed": len(todo), "failed_now": len(new_errors)}
    if cfg.finalize:
        pending = [c.case_id for c in cases if not case_done(out, c.case_id) and c.case_id not in read_errors(out)]
        if pending:
            raise VolvqaInputError(out, f"{len(pending)} cases not processed yet (other shards?): "
                                   f"{', '.join(pending[:5])}")
        from volvqa.bench.finalize import finalize
        summary.update(finalize(m, cases, out, cfg))
    return summary
