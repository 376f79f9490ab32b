"""Command line: a thin layer over the library.

Bad input prints one line, ``volvqa: error: <file>: <problem>``, on stderr
and exits with status 2 (``--debug`` shows the traceback instead).
"""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import click
import numpy as np

from volvqa.errors import VolvqaInputError


class _Group(click.Group):
    """Turns errors into one line on stderr and a status code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VolvqaInputError as e:
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()
            click.echo(f"volvqa: error: {e}", err=True)
            ctx.exit(2)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("volvqa: interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # The reader went away (`volvqa ... | head`): stop quietly, as a shell tool does.
            import os
            sys.stdout = open(os.devnull, "w")
            ctx.exit(141)
        except Exception as e:  # noqa: BLE001 - last line of defence for users
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()
            msg = " ".join(str(e).split()) or type(e).__name__
            click.echo(f"volvqa: internal error: {type(e).__name__}: {msg} (rerun with --debug)", err=True)
            ctx.exit(1)


def _sub_group(name: str, help: str):
    return click.group(name=name, cls=click.Group, help=help)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="volvqa")
@click.pass_context
def main(ctx, debug):
    """volvqa: 3D CT VQA benchmarks whose answers come from segmentation masks."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


load_opts = [
    click.option("--series-uid", default=None, help="DICOM SeriesInstanceUID when a folder holds several."),
    click.option("--allow-non-ct", is_flag=True, help="Load images whose intensities are not plausible CT HU."),
    click.option("--max-voxels", type=int, default=None,
                 help="Refuse images with more voxels (default 2^31, or VOLVQA_MAX_VOXELS)."),
]


def _with_load_opts(f):
    for o in reversed(load_opts):
        f = o(f)
    return f


@main.command()
@click.argument("volume", type=click.Path(path_type=Path))
@_with_load_opts
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(volume, series_uid, allow_non_ct, max_voxels, as_json):
    """Shape, spacing (mm), orientation on disk, HU range and series of a CT."""
    from volvqa.io import load_volume
    v = load_volume(volume, series_uid=series_uid, allow_non_ct=allow_non_ct, max_voxels=max_voxels)
    d = {
        "path": str(volume),
        "format": v.meta.get("format"),
        "shape_canonical_RAS": list(v.shape),
        "shape_on_disk": v.meta.get("shape_on_disk"),
        "orientation_on_disk": v.meta.get("orientation_on_disk"),
        "spacing_mm": [round(s, 6) for s in v.spacing_mm],
        "hu_min": int(v.array.min()),
        "hu_max": int(v.array.max()),
        "series_uid": v.source.series_uid,
        "affine_ras_mm": np.round(v.affine, 6).tolist(),
    }
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    for k, val in d.items():
        click.echo(f"{k}: {val}")


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--masks", multiple=True, type=click.Path(path_type=Path),
              help="Masks of the CT to convert too: a label map, a mask folder, a DICOM SEG or RTSTRUCT "
                   "(repeat to merge).")
@click.option("--labels", "label_spec", multiple=True, help="Label spec of each --masks (default auto).")
@click.option("--masks-out", type=click.Path(path_type=Path),
              help="Canonical label map (canonical ids, on OUTPUT's grid); sub-segments go to <name>_parts.nii.gz.")
@_with_load_opts
def ingest(input, output, masks, label_spec, masks_out, series_uid, allow_non_ct, max_voxels):
    """Convert a CT (NIfTI, DICOM folder or zip) to canonical RAS int16 HU NIfTI, and its masks
    (NIfTI, DICOM SEG, RTSTRUCT) to a canonical label map."""
    from volvqa.io import load_labelmap, load_volume, save_labelmap, save_volume
    outs = [output] + ([masks_out] if masks_out is not None else [])
    for o in outs:
        if not (o.name.endswith(".nii") or o.name.endswith(".nii.gz")):
            raise VolvqaInputError(o, "output must end in .nii or .nii.gz")
        if not o.parent.exists():
            raise VolvqaInputError(o, "output folder does not exist")
    if bool(masks) != (masks_out is not None):
        raise click.UsageError("--masks and --masks-out go together")
    v = load_volume(input, series_uid=series_uid, allow_non_ct=allow_non_ct, max_voxels=max_voxels)
    lm = None
    if masks:
        specs = list(label_spec) or ["auto"]
        specs = specs * len(masks) if len(specs) == 1 else specs
        if len(specs) != len(masks):
            raise click.BadParameter("give one --labels per --masks, or one for all")
        lm = load_labelmap(list(masks) if len(masks) > 1 else masks[0], specs if len(masks) > 1 else specs[0],
                           reference=v)
    save_volume(v, output)
    click.echo(f"wrote {output} shape {list(v.shape)} spacing {[round(s, 4) for s in v.spacing_mm]} mm RAS")
    if lm is not None:
        from volvqa.io import nifti
        save_labelmap(lm, masks_out)
        msg = f"wrote {masks_out}: {', '.join(lm.names) or 'no structure'}"
        if lm.parts is not None and lm.part_labels:
            parts_out = masks_out.parent / (masks_out.name.split(".nii")[0] + "_parts.nii.gz")
            nifti.write_nifti(parts_out, lm.parts, lm.affine)
            msg += f"; {parts_out}: {', '.join(sorted(lm.part_labels.values()))}"
        absent = sorted(lm.scope - lm.present)
        if absent:
            msg += f" (annotated, no voxel: {', '.join(absent)})"
        click.echo(msg)


@main.command()
@click.argument("manifest", required=False, type=click.Path(path_type=Path))
@click.option("--out", "store", required=True, type=click.Path(path_type=Path), help="Zarr store folder.")
@click.option("--volume", type=click.Path(path_type=Path), help="One CT instead of a manifest.")
@click.option("--masks", type=click.Path(path_type=Path), help="Label map or mask folder for --volume.")
@click.option("--labels", "label_spec", default="auto", help="Label spec for --masks.")
@click.option("--case-id", default=None, help="Case id for --volume (default: file name).")
@click.option("--overwrite", is_flag=True, help="Rewrite cases already in the store.")
@_with_load_opts
def cache(manifest, store, volume, masks, label_spec, case_id, overwrite, series_uid, allow_non_ct,
          max_voxels):
    """Write canonical volumes and label maps into a zarr v3 store (zstd chunks)."""
    from volvqa.io import load_labelmap, load_volume
    from volvqa.io.cache import has_case, write_case
    if (manifest is None) == (volume is None):
        raise click.UsageError("give a MANIFEST or --volume (not both)")
    if volume is not None:
        cid = case_id or volume.name.split(".nii")[0].split(".zip")[0]
        v = load_volume(volume, series_uid=series_uid, allow_non_ct=allow_non_ct, max_voxels=max_voxels)
        lm = load_labelmap(masks, label_spec, reference=v) if masks else None
        write_case(store, cid, v, lm, overwrite=overwrite)
        click.echo(f"cached {cid} in {store}")
        return
    from tqdm import tqdm

    from volvqa.datasets import load_cases
    failed = []
    cases = load_cases(manifest)
    for c in tqdm(cases, desc="cache", unit="case", file=sys.stderr, disable=None):
        if has_case(store, c.case_id) and not overwrite:
            continue
        try:
            v = load_volume(c.ct, allow_non_ct=allow_non_ct, max_voxels=max_voxels)
            lm = load_labelmap(c.masks, c.label_spec, reference=v) if c.masks else None
            write_case(store, c.case_id, v, lm, overwrite=overwrite)
        except VolvqaInputError as e:
            failed.append((c.case_id, str(e)))
            click.echo(f"volvqa: case {c.case_id} failed: {e}", err=True)
    click.echo(f"cached {len(cases) - len(failed)} of {len(cases)} cases in {store}")
    if failed:
        sys.exit(1)


@main.command()
@click.argument("volume", type=click.Path(path_type=Path))
@click.option("--masks", required=True, type=click.Path(path_type=Path), help="Label map or mask folder.")
@click.option("--labels", "label_spec", default="auto", help="Label spec (mapping file, built-in name, auto).")
@click.option("--json", "json_out", required=True, type=click.Path(path_type=Path), help="Findings JSON.")
@click.option("--report", "report_out", type=click.Path(path_type=Path), help="Text report.")
@click.option("--case-id", default=None, help="Case id (default: the volume's file name).")
@click.option("--min-lesion-mm3", type=float, default=None,
              help="Drop lesion components below this volume (default 50 mm^3).")
@click.option("--annotates", default=None,
              help="Comma-separated canonical structures the masks annotate (default: read off the label spec "
                   "or mask folder); an annotated structure without voxels is absent, any other unknown.")
@click.option("--qc", "qc_mode", type=click.Choice(["exclude", "warn", "off"]), default="exclude", show_default=True,
              help="Mask quality control: exclude failing structures (reported as unknown), only warn, or skip.")
@click.option("--phase", default=None,
              help="Contrast phase: non-contrast | arterial | portal venous | delayed | contrast | unknown "
                   "(attenuation rules such as steatosis need unenhanced CT; default: what the file says).")
@_with_load_opts
def findings(volume, masks, label_spec, json_out, report_out, case_id, min_lesion_mm3, annotates, qc_mode,
             phase, series_uid, allow_non_ct, max_voxels):
    """Measure organs and lesions (mm, ml, HU; RAS) and write findings JSON and a report."""
    from volvqa.findings import DEFAULT_MIN_LESION_MM3, extract
    from volvqa.findings.report import render_text, structured_report
    from volvqa.io import load_labelmap, load_volume
    from volvqa.io.atomic import write_text_atomic
    for out in (json_out, report_out):
        if out is not None and not out.parent.exists():
            raise VolvqaInputError(out, "output folder does not exist")
    from volvqa.qc import qc_labelmap
    v = load_volume(volume, series_uid=series_uid, allow_non_ct=allow_non_ct, max_voxels=max_voxels)
    if phase is not None:
        from volvqa.phase import normalise_phase
        v.meta["phase"] = normalise_phase(phase, "--phase")
    lm = load_labelmap(masks, label_spec, reference=v, annotates=annotates)
    cid = case_id or volume.name.split(".nii")[0]
    lm, qc_report = qc_labelmap(v, lm, qc_mode, case_id=cid)
    for fnd in qc_report["findings"]:
        click.echo(f"volvqa: qc: {fnd['structure']}: {fnd['check']}: {fnd['message']}", err=True)
    f = extract(v, lm, case_id=cid,
                min_lesion_mm3=DEFAULT_MIN_LESION_MM3 if min_lesion_mm3 is None else min_lesion_mm3)
    d = f.to_dict()
    d["report"] = structured_report(f)
    d["qc"] = qc_report
    write_text_atomic(json_out, json.dumps(d, indent=1, sort_keys=True) + "\n")
    if report_out is not None:
        write_text_atomic(report_out, render_text(f))
    click.echo(f"{cid}: {len(f.organs)} structures, {len(f.lesions)} lesions -> {json_out}")


@main.command("build-qa")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder (out/<dataset>).")
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel cases (local engine).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--ray-address", default=None, help="Ray cluster address ('auto' inside a cluster job).")
@click.option("--shard", default=None, help="i/N: process only every N-th case from i (Slurm arrays).")
@click.option("--no-finalize", is_flag=True, help="Per-case stage only (for shards); merge later.")
@click.option("--merge-only", is_flag=True, help="Global stage only, over finished per-case outputs.")
@click.option("--options", "n_options", type=click.Choice(["4", "5"]), default="4", show_default=True)
@click.option("--include-flagged", is_flag=True, help="Keep subtypes the shortcut audit flags.")
@click.option("--segmenter", default=None,
              help="Segment cases without masks with this backend (monai:runs/NAME | totalsegmentator[:fast][+...]); "
                   "overrides the manifest's 'segmenter:'.")
@click.option("--segment-all", is_flag=True, default=None,
              help="Replace the dataset's masks with the segmenter's (a predicted-mask benchmark).")
@click.option("--device", default=None, help="Segmenter device: auto | cpu | cuda | cuda:N | mps.")
@click.option("--gpus-per-task", type=float, default=None, help="GPUs each Ray segmentation task requests.")
@click.option("--qc", "qc_mode", type=click.Choice(["exclude", "warn", "off"]), default=None,
              help="Mask quality control (default: the manifest's 'qc:', else exclude): exclude failing "
                   "structures and the questions resting on them, only report them, or skip.")
@click.option("--require-agreement", default=None,
              help="Keep only structures on which the masks agree with this second source "
                   "(a segmenter backend: monai:runs/NAME | totalsegmentator[...]).")
@click.option("--export-volumes/--no-export-volumes", default=None,
              help="Write volumes/<case>.nii.gz (canonical RAS int16, the grid of every slice index and box) and "
                   "masks/<case>_seg.nii.gz into the build, so it can be moved or shared without its source "
                   "(default: on for synthetic data).")
@click.option("--views", is_flag=True, help="Write views/: axial, coronal and sagittal PNGs through each item's "
              "evidence, plain and with its boxes (for 2D models; RadVUQA's plain and boxed variants).")
@click.option("--video", is_flag=True, help="Write videos/<case>.mp4, the axial stack at W400/L50 (for video models).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON line (it is always in build.json).")
def build_qa_cmd(manifest, out, workers, engine, ray_address, shard, no_finalize, merge_only, n_options,
                 include_flagged, segmenter, segment_all, device, gpus_per_task, qc_mode, require_agreement,
                 export_volumes, views, video, as_json):
    """Build the benchmark of a dataset manifest: findings, questions, options, audit, export."""
    from volvqa.datasets.manifest import load_manifest
    from volvqa.qa.build import BuildConfig, build_qa, cases_for, finalize
    sh = None
    if shard:
        try:
            i, n = (int(x) for x in shard.split("/"))
            assert 0 <= i < n
        except (ValueError, AssertionError):
            raise click.BadParameter("--shard takes i/N with 0 <= i < N") from None
        sh = (i, n)
    cfg = BuildConfig(manifest=manifest, out=out, workers=workers, engine=engine, shard=sh,
                      n_options=int(n_options), include_flagged=include_flagged, finalize=not no_finalize,
                      ray_address=ray_address, segmenter=segmenter, segment_all=segment_all, device=device,
                      gpus_per_task=gpus_per_task, qc=qc_mode, require_agreement=require_agreement,
                      export_volumes=export_volumes, views=views, video=video)
    from volvqa.io.atomic import owned_dir
    if merge_only:
        m = load_manifest(manifest)
        res = finalize(m, cases_for(m), out, cfg)
    else:
        load_manifest(manifest)   # a bad manifest fails before any folder is made
        with owned_dir(out):
            res = build_qa(cfg)
    if as_json:
        click.echo(json.dumps(res, sort_keys=True))
        return
    from volvqa.qa.build import summary_text
    click.echo(summary_text(res, out))


@main.command("train")
@click.option("--qa", "qa_dir", required=True, type=click.Path(path_type=Path), help="build-qa output folder.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Run folder (runs/NAME).")
@click.option("--preset", type=click.Choice(["cpu-small", "gpu", "cpu-tiny"]), default="cpu-small", show_default=True,
              help="cpu-small: the demo set on 2 CPU cores in minutes; gpu: M3D-sized; cpu-tiny: tests.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-minutes", type=float, default=None, help="Stop after this many minutes (keeps the best).")
@click.option("--init-from", type=click.Path(path_type=Path), default=None,
              help="Start from this run's image encoder (same preset) and skip anatomy pretraining.")
def train_cmd(qa_dir, out_dir, preset, seed, max_minutes, init_from):
    """Train the encoder3d baseline (MONAI ViT + text encoder + cross-attention)."""
    from volvqa.io.atomic import owned_dir
    from volvqa.models.train_encoder3d import train
    with owned_dir(out_dir):
        res = train(qa_dir, out_dir, preset=preset, seed=seed, max_minutes=max_minutes, init_from=init_from)
    click.echo(json.dumps(res, sort_keys=True))


@main.command("train-seg")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Run folder (runs/NAME).")
@click.option("--preset", type=click.Choice(["cpu-small", "cpu-lesions", "gpu", "cpu-tiny"]), default="cpu-small",
              show_default=True)
@click.option("--labels", "label_names", default="liver,spleen,kidney_left,kidney_right", show_default=True,
              help="Canonical structures to segment.")
@click.option("--lesions", is_flag=True,
              help="Also learn lesion classes (liver/kidney tumor and cyst, PDAC, PNET, pancreatic cyst) and the "
                   "pancreas, so predicted mode answers lesion questions.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-minutes", type=float, default=None)
@click.option("--steps", type=int, default=None, help="Training steps (default: the preset's).")
@click.option("--init-from", type=click.Path(path_type=Path), default=None,
              help="Start from this run's weights (same labels and preset), e.g. lesion steps after an organ stage.")
def train_seg_cmd(manifest, out_dir, preset, label_names, lesions, seed, max_minutes, steps, init_from):
    """Train the MONAI segmentation backend (SegResNet, Dice + cross-entropy) on a manifest with masks."""
    from volvqa import labels as L
    from volvqa.segment.monai_seg import LESION_CLASSES, LESION_HOST_ORGANS, train_seg
    names = [n.strip() for n in label_names.split(",") if n.strip()]
    if lesions:
        names += [n for n in (*LESION_HOST_ORGANS, *LESION_CLASSES) if n not in names]
    bad = [n for n in names if n not in L.CANONICAL_IDS]
    if bad:
        raise click.BadParameter(f"not canonical names: {', '.join(bad)}")
    from volvqa.io.atomic import owned_dir
    with owned_dir(out_dir):
        res = train_seg(manifest, out_dir, preset=preset, seed=seed, labels=names, max_minutes=max_minutes,
                        steps=steps, init_from=init_from)
    click.echo(json.dumps(res, sort_keys=True))


@main.command("segment")
@click.argument("volumes", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--backend", required=True,
              help="monai:runs/NAME | totalsegmentator[:fast][+liver_lesions+kidney_cysts+liver_vessels"
                   "+lung_nodules+liver_segments]")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N | mps")
@click.option("--overwrite", is_flag=True, help="Redo CTs whose output already exists.")
def segment_cmd(volumes, out_dir, backend, device, overwrite):
    """Segment CTs; writes <name>_seg.nii.gz (canonical label ids) and, with
    liver_segments, <name>_parts.nii.gz. A CT that fails is reported and the
    others go on; the exit status is 2 if any failed."""
    from volvqa.io import load_volume, nifti, save_labelmap
    from volvqa.segment import make_segmenter
    seg = make_segmenter(backend, device=device)
    if hasattr(seg, "prepare"):
        seg.prepare()
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for vp in volumes:
        stem = vp.name.split(".nii")[0] if ".nii" in vp.name else vp.name.removesuffix(".zip")
        dest = out_dir / f"{stem}_seg.nii.gz"
        if dest.exists() and not overwrite:
            click.echo(f"{vp} -> {dest} (exists, skipped)")
            continue
        try:
            v = load_volume(vp)
        except VolvqaInputError as e:
            click.echo(f"error: {e}", err=True)
            failed += 1
            continue
        lm = seg.segment(v)
        if lm.parts is not None:
            nifti.write_nifti(out_dir / f"{stem}_parts.nii.gz", lm.parts, lm.affine)
        save_labelmap(lm, dest)
        click.echo(f"{vp} -> {dest} ({', '.join(lm.labels.values())})")
    if failed:
        raise VolvqaInputError(None, f"{failed} of {len(volumes)} CT(s) failed (see above)")


@main.command("predict")
@click.option("--qa", "qa_dir", required=True, type=click.Path(path_type=Path), help="build-qa output folder.")
@click.option("--model", required=True,
              help="prior | grounded | encoder3d:runs/NAME | module:Class | agent:module:Class | agent:openai")
@click.option("--split", default="test", show_default=True, help="train | val | test | all")
@click.option("--mode", type=click.Choice(["mc", "free"]), default="mc", show_default=True,
              help="Multiple choice (options shown) or free form.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Predictions JSONL (default: out/predictions/<model>_<split>.jsonl).")
@click.option("--segmenter", default=None,
              help="With --model grounded: predicted mode, masks from this segmenter instead of the dataset's.")
@click.option("--device", default="auto", show_default=True, help="Segmenter device.")
@click.option("--input-format", type=click.Choice(["volume", "key_slice", "views", "views_boxed", "video", "m3d"]),
              default=None, help="What a module:Class plug-in receives (default: its input_format, else volume).")
@click.option("--prompt", "prompt_style", type=click.Choice(["volvqa", "deeptumorvqa"]), default="volvqa",
              show_default=True, help="A plug-in's prompt wording: volvqa's, or DeepTumorVQA's runners'.")
@click.option("--tool-mode", type=click.Choice(["oracle", "predicted", "vision"]), default="oracle",
              show_default=True, help="agent: tools backed by the dataset's masks, a segmenter's (--segmenter), "
                                      "or render only.")
@click.option("--tools-via", type=click.Choice(["local", "mcp"]), default="local", show_default=True,
              help="agent: run tools in this process, or through `volvqa serve-tools` over MCP stdio.")
@click.option("--max-steps", type=int, default=None, help="agent: turns per question (default 12).")
@click.option("--agent-timeout", type=float, default=None, help="agent: seconds per question (default 300).")
@click.option("--base-url", default=None, help="agent:openai: the OpenAI-compatible endpoint (…/v1).")
@click.option("--model-name", default=None, help="agent:openai: the served model's name.")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="agent:openai: environment variable holding the key.")
def predict_cmd(qa_dir, model, split, mode, out, segmenter, device, input_format, prompt_style, tool_mode,
                tools_via, max_steps, agent_timeout, base_url, model_name, api_key_env):
    """Run a model over a benchmark split."""
    import re as _re

    from volvqa.eval.run import predict
    if out is None:
        name = _re.sub(r"[^A-Za-z0-9._-]+", "_", model.split("/")[-1] if model.startswith("encoder3d:") else model)
        name += "-predicted" if segmenter else ""
        out = Path("out") / "predictions" / f"{name}_{split}{'_free' if mode == 'free' else ''}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
    if not out.parent.exists():
        raise VolvqaInputError(out, "output folder does not exist")
    agent = model.startswith("agent:")
    if segmenter and model != "grounded" and not agent:
        raise click.UsageError("--segmenter goes with --model grounded or an agent in --tool-mode predicted")
    if agent and segmenter and tool_mode != "predicted":
        raise click.UsageError("an agent with --segmenter runs in --tool-mode predicted")
    options = dict(tool_mode=tool_mode, tools_via=tools_via, max_steps=max_steps, timeout_s=agent_timeout,
                   base_url=base_url, model_name=model_name, api_key_env=api_key_env) if agent else None
    n = predict(qa_dir, model, split, out, mode=mode, segmenter=segmenter, device=device, input_format=input_format,
                prompt_style=prompt_style, agent_options=options)
    click.echo(f"{n} predictions -> {out}")


@main.command("serve-tools")
@click.option("--qa", "qa_dir", type=click.Path(path_type=Path), default=None,
              help="A built benchmark: every tool takes a case_id.")
@click.option("--volume", type=click.Path(path_type=Path), default=None, help="One scan (NIfTI or DICOM folder).")
@click.option("--masks", type=click.Path(path_type=Path), default=None, help="With --volume: its masks (oracle).")
@click.option("--labels", "label_spec", default="auto", show_default=True,
              help="With --masks: how to read label ids (auto | totalsegmentator | ... | a YAML/JSON mapping).")
@click.option("--phase", default=None, help="With --volume: the contrast phase, if known.")
@click.option("--mode", "tool_mode", type=click.Choice(["oracle", "predicted", "vision"]), default="oracle",
              show_default=True)
@click.option("--segmenter", default=None, help="Predicted mode: monai:runs/NAME | totalseg ...")
@click.option("--device", default="auto", show_default=True)
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True,
              help="stdio (spawned by an MCP client) or streamable HTTP at http://HOST:PORT/mcp.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--schemas", "print_schemas", is_flag=True, help="Print the OpenAI tool schemas (JSON) and exit.")
def serve_tools_cmd(qa_dir, volume, masks, label_spec, phase, tool_mode, segmenter, device, transport, host, port,
                    print_schemas):
    """Serve segment_organ, measure, lookup_knowledge and render over MCP."""
    from volvqa.agent.mcp_server import serve
    from volvqa.agent.service import ToolService
    if volume is not None and not volume.exists():
        raise VolvqaInputError(volume, "not found")
    if masks is not None and not masks.exists():
        raise VolvqaInputError(masks, "not found")
    service = ToolService(qa_dir=qa_dir, volume=volume, masks=masks, label_spec=label_spec, mode=tool_mode,
                          segmenter=segmenter, device=device, phase=phase)
    if print_schemas:
        click.echo(json.dumps(service.schemas(), indent=1))
        return
    serve(service, transport=transport, host=host, port=port)


@main.command("evaluate")
@click.option("--qa", "qa_dir", required=True, type=click.Path(path_type=Path), help="build-qa output folder.")
@click.option("--predictions", "pred_files", required=True, multiple=True, type=click.Path(path_type=Path),
              help="Predictions JSONL; repeat to compare models.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Scores JSON.")
@click.option("--report", "report_out", type=click.Path(path_type=Path), help="report.md (+ one PNG per category).")
@click.option("--perturb", "perturbation", type=click.Choice(["noise", "blur", "downsample", "intensity-shift",
                                                             "reorient", "swap-ct"]), default=None,
              help="Rerun --model on perturbed volumes and report the drop per category "
                   "(swap-ct: each case's questions with another case's CT).")
@click.option("--model", default=None, help="Model to rerun with --perturb (as in predict).")
@click.option("--protocol", type=click.Choice(["strict", "deeptumorvqa", "both"]), default="strict", show_default=True,
              help="strict: volvqa's rules; deeptumorvqa: DeepTumorVQA v2's evaluator (continuous MRA, its letter, "
                   "yes/no and category parsing, no Localization); both: one line each.")
def evaluate_cmd(qa_dir, pred_files, json_out, report_out, perturbation, model, protocol):
    """Score predictions per subtype, category and overall."""
    from volvqa.eval.run import CATEGORY_ORDER, evaluate, write_report
    from volvqa.io.atomic import write_text_atomic
    for out in (json_out, report_out):
        if out is not None and not out.parent.exists():
            raise VolvqaInputError(out, "output folder does not exist")
    if perturbation:
        from volvqa.eval.run import robustness
        if not model:
            raise click.UsageError("--perturb needs --model (the model to rerun)")
        # Perturbed predictions go beside the requested scores, else under out/robustness/.
        work = (json_out or report_out).parent if (json_out or report_out) else Path("out") / "robustness"
        work.mkdir(parents=True, exist_ok=True)
        rob = robustness(qa_dir, model, pred_files[0], perturbation, work)
        for c, d in rob["drop_points"].items():
            click.echo(f"{perturbation}: {c}: drop {d:+.1f} points")
        if json_out:
            write_text_atomic(json_out, json.dumps(rob, indent=1, sort_keys=True) + "\n")
        return
    protocols = ["strict", "deeptumorvqa"] if protocol == "both" else [protocol]
    all_res = {}
    for proto in protocols:
        res = evaluate(qa_dir, list(pred_files), protocol=proto)
        all_res[proto] = res
        for m, r in res.items():
            cats = ", ".join(f"{c} {r['categories'][c]['score'] * 100:.1f}"
                             + (f" (chance {r['categories'][c]['chance'] * 100:.1f})" if "chance" in r["categories"][c]
                                else "")
                             for c in CATEGORY_ORDER if c in r["categories"])
            tag = f"[{proto}] " if len(protocols) > 1 or proto != "strict" else ""
            click.echo(f"{tag}{m}: overall {r['overall']['score'] * 100:.1f} ({r['overall']['n']} q) | {cats}")
            for tm, t in (r.get("tools") or {}).items():
                vs = "-" if t["valid_call_share"] is None else f"{t['valid_call_share'] * 100:.1f}%"
                gold = "-" if t["gold_calls_per_question"] is None else f"{t['gold_calls_per_question']:.2f}"
                rec = "-" if t["gold_target_recall"] is None else f"{t['gold_target_recall'] * 100:.1f}%"
                click.echo(f"{tag}{m}: tools ({tm}): {t['calls']} calls, {vs} valid, "
                           f"{t['calls_per_question']:.2f} per question (gold {gold}), gold targets queried {rec}, "
                           "stopped: " + ", ".join(f"{k} {v}" for k, v in t["stopped"].items()))
    res = all_res[protocols[0]] if len(protocols) == 1 else all_res
    if json_out:
        write_text_atomic(json_out, json.dumps(res, indent=1, sort_keys=True) + "\n")
    if report_out:
        write_report(all_res[protocols[0]], report_out)


@main.command("answer")
@click.option("--volume", required=True, type=click.Path(path_type=Path))
@click.option("--question", required=True)
@click.option("--options", "options_text", default=None, help='"A=..;B=..;C=.."')
@click.option("--model", default="grounded", show_default=True, help="grounded | module:Class | encoder3d:runs/NAME")
@click.option("--masks", multiple=True, type=click.Path(path_type=Path),
              help="Masks for grounded mode (repeat to merge, e.g. a label map and its parts).")
@click.option("--labels", "label_spec", multiple=True, help="Label spec of each --masks (default auto).")
@click.option("--annotates", default=None,
              help="Comma-separated canonical structures the masks annotate (default: read off the label spec or "
                   "mask folder; with --labels auto/canonical, what the masks hold). Nothing is answered about "
                   "a structure they do not annotate.")
@click.option("--qc", "qc_mode", type=click.Choice(["exclude", "warn", "off"]), default="exclude", show_default=True,
              help="Mask quality control: structures whose masks fail it are not answered about.")
@click.option("--segmenter", default=None,
              help="Grounded predicted mode: segment the scan with this backend instead of --masks "
                   "(monai:runs/NAME | totalsegmentator[:fast][+...]).")
@click.option("--device", default="auto", show_default=True, help="Segmenter device.")
@click.option("--json", "as_json", is_flag=True, help="Print the prediction with its evidence as JSON.")
@click.option("--png", "png_out", type=click.Path(path_type=Path), help="Key slice with the evidence box.")
@click.option("--input-format", type=click.Choice(["volume", "key_slice", "views", "views_boxed", "video", "m3d"]),
              default=None, help="What a module:Class plug-in receives (default: its input_format, else volume).")
@click.option("--phase", default=None,
              help="Contrast phase: non-contrast | arterial | portal venous | delayed | contrast | unknown "
                   "(attenuation rules such as steatosis need unenhanced CT; default: what the file says).")
@_with_load_opts
def answer_cmd(volume, question, options_text, model, masks, label_spec, annotates, qc_mode, segmenter, device,
               as_json, png_out, input_format, phase, series_uid, allow_non_ct, max_voxels):
    """Answer one question about one scan, with its evidence."""
    from volvqa.io import load_volume
    item = {"qid": "q", "case_id": volume.name.split(".nii")[0], "question": question}
    if options_text:
        try:
            item["options"] = dict(kv.split("=", 1) for kv in options_text.split(";") if kv.strip())
            item["options"] = {k.strip().upper(): v.strip() for k, v in item["options"].items()}
        except ValueError:
            raise click.BadParameter('--options takes "A=..;B=.."') from None
    v = load_volume(volume, series_uid=series_uid, allow_non_ct=allow_non_ct, max_voxels=max_voxels)
    if phase is not None:
        from volvqa.phase import normalise_phase
        v.meta["phase"] = normalise_phase(phase, "--phase")
    if model == "grounded" and segmenter:
        from volvqa.models.grounded import GroundedAnswerer
        from volvqa.segment import segmenter_masks
        if masks:
            raise click.UsageError("give --masks or --segmenter, not both")
        ans = GroundedAnswerer(segmenter_masks(segmenter, device), name="grounded-predicted",
                               mode="mc" if options_text else "free", qc=qc_mode)
    elif model == "grounded":
        from volvqa.models.grounded import GroundedAnswerer, fixed_masks
        if not masks:
            raise VolvqaInputError(volume, "grounded mode needs --masks (the scan's segmentation) or --segmenter")
        specs = list(label_spec) or ["auto"]
        if len(specs) == 1:
            specs = specs * len(masks)
        if len(specs) != len(masks):
            raise click.BadParameter("give one --labels per --masks, or one for all")
        src = list(masks) if len(masks) > 1 else masks[0]
        ans = GroundedAnswerer(fixed_masks(src, specs if len(masks) > 1 else specs[0], annotates=annotates),
                               mode="mc" if options_text else "free", qc=qc_mode)
    elif model.startswith("encoder3d:"):
        from volvqa.models.encoder3d import Encoder3DAnswerer
        ans = Encoder3DAnswerer.load(model.split(":", 1)[1])
    else:
        from volvqa.models.base import load_plugin
        ans = load_plugin(model, mode="mc" if options_text else "free", input_format=input_format)
    pred = ans.answer(v, item)
    if as_json:
        click.echo(json.dumps(pred.to_dict(), indent=1, sort_keys=True, default=str))
    else:
        click.echo(pred.answer)
        if pred.evidence:
            click.echo(f"evidence: {json.dumps(pred.evidence.get('values'), default=str)}; "
                       f"box (voxels): {pred.evidence.get('bbox_voxel')}")
    if png_out is not None and pred.evidence and pred.evidence.get("bbox_voxel"):
        from volvqa.render import render_png, write_png
        b = pred.evidence["bbox_voxel"][0]
        z = pred.evidence.get("key_slice")
        c = ((b[0] + b[3]) // 2, (b[1] + b[4]) // 2, z if z is not None else (b[2] + b[5]) // 2)
        label = pred.evidence.get("template_id", "")
        params = pred.evidence.get("params") or {}
        if label in __import__("volvqa.qa.templates", fromlist=["TEMPLATES"]).TEMPLATES:
            from volvqa.qa.templates import TEMPLATES
            try:
                label = TEMPLATES[label].subtype_of(params)
            except (KeyError, IndexError):
                label = TEMPLATES[label].subtype
        write_png(png_out, render_png(v, None, boxes=pred.evidence["bbox_voxel"], centre=c, views=("axial",),
                                      title=question[:90], caption=f"answer: {pred.answer}"[:120],
                                      box_label=f"evidence: {label} (slice {c[2]})"))
    if pred.answer.startswith("cannot answer"):
        sys.exit(1)


@main.command("qc")
@click.argument("manifest", required=False, type=click.Path(path_type=Path))
@click.option("--volume", type=click.Path(path_type=Path), help="One CT instead of a manifest.")
@click.option("--masks", multiple=True, type=click.Path(path_type=Path), help="Masks of --volume (repeat to merge).")
@click.option("--labels", "label_spec", multiple=True, help="Label spec of each --masks (default auto).")
@click.option("--annotates", default=None, help="Comma-separated structures --masks annotate (default: inferred).")
@click.option("--compare", "compare_with", default=None,
              help="Second label source to compare per structure: a segmenter backend (monai:runs/NAME | "
                   "totalsegmentator[...]); with a manifest also a folder of <case>_seg.nii.gz; with --volume "
                   "also a label map or mask folder.")
@click.option("--compare-labels", default="auto", show_default=True, help="Label spec of a --compare file.")
@click.option("--device", default="auto", show_default=True, help="Device of a --compare segmenter.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write findings and agreement as JSON.")
@click.option("--split", default=None, help="Only the cases of this split (train | val | test) of a manifest.")
@_with_load_opts
def qc_cmd(manifest, volume, masks, label_spec, annotates, compare_with, compare_labels, device, json_out,
           split, series_uid, allow_non_ct, max_voxels):
    """Mask quality control: one line per failed check (case, structure, check, reason); with --compare,
    per-structure agreement with a second source (Dice, volume difference, centroid distance).
    Exit status 1 when anything is flagged, 0 when clean."""
    from volvqa.io.atomic import write_text_atomic
    from volvqa.qc.compare import compare
    from volvqa.qc.run import agreement_table, qc_dataset
    if (manifest is None) == (volume is None):
        raise click.UsageError("give a MANIFEST or --volume (not both)")
    if json_out is not None and not json_out.parent.exists():
        raise VolvqaInputError(json_out, "output folder does not exist")
    errors: dict[str, str] = {}
    detection: dict[str, dict] = {}
    if volume is not None:
        from volvqa.io import load_labelmap, load_volume
        from volvqa.qc import check_case
        if not masks:
            raise click.UsageError("--volume needs --masks")
        specs = list(label_spec) or ["auto"]
        specs = specs * len(masks) if len(specs) == 1 else specs
        if len(specs) != len(masks):
            raise click.BadParameter("give one --labels per --masks, or one for all")
        v = load_volume(volume, series_uid=series_uid, allow_non_ct=allow_non_ct, max_voxels=max_voxels)
        lm = load_labelmap(list(masks) if len(masks) > 1 else masks[0], specs if len(masks) > 1 else specs[0],
                           reference=v, annotates=annotates)
        cid = volume.name.split(".nii")[0]
        found = [f.to_dict() for f in check_case(v, lm, cid)]
        agreement = {}
        if compare_with:
            if compare_with.startswith(("monai:", "totalsegmentator")):
                from volvqa.segment import cached_segmenter
                other = cached_segmenter(compare_with, device).segment(v)
            else:
                other = load_labelmap(Path(compare_with), compare_labels, reference=v)
            agreement[cid] = compare(v, lm, other)
    else:
        found, agreement, errors = qc_dataset(manifest, compare_with, device, split=split, detection=detection)
    for f in found:
        click.echo(f"{f['case_id']}\t{f['structure']}\t{f['check']}\t{f['message']}")
    disagree = 0
    for cid, rows in sorted(agreement.items()):
        for r in rows:
            if r.agree is False:
                disagree += 1
                click.echo(f"{cid}\t{r.structure}\tagreement\t{r.reason}")
    table = agreement_table(agreement) if agreement else []
    shown = [row for row in table if row["compared"]]
    if shown:
        click.echo("\nstructure\tcompared\tboth present\tmean Dice\tmin Dice\tdisagree\tnot compared")
        def fmt(x):
            return "-" if x is None else f"{x:.3f}"

        for row in shown:
            click.echo(f"{row['structure']}\t{row['compared']}\t{row['both_present']}\t{fmt(row['mean_dice'])}\t"
                       f"{fmt(row['min_dice'])}\t{row['disagree']}\t{row['not_compared']}")
    skipped = [row["structure"] for row in table if not row["compared"]]
    if skipped:
        click.echo(f"not compared (annotated by one source only): {len(skipped)} structures: "
                   f"{', '.join(skipped[:12])}{' ...' if len(skipped) > 12 else ''}")
    det_table = None
    if detection:
        from volvqa.segment.detection import detection_table, render_detection
        det_table = detection_table(detection)
        click.echo("\n" + render_detection(det_table))
    for cid, e in sorted(errors.items()):
        click.echo(f"volvqa: case {cid} failed: {e}", err=True)
    n_cases = len({f["case_id"] for f in found})
    click.echo(f"{len(found)} findings in {n_cases} cases" + (f", {disagree} disagreements" if agreement else "")
               + (f", {len(errors)} cases failed" if errors else ""), err=True)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps({"findings": found, "errors": errors,
                                                "agreement": {k: [r.to_dict() for r in v] for k, v in agreement.items()},
                                                "agreement_table": table, "detection": det_table,
                                                "detection_cases": detection}, indent=1, sort_keys=True) + "\n")
    if errors:
        sys.exit(2)
    if found or disagree:
        sys.exit(1)


@main.group()
def qa():
    """Built benchmarks."""


@qa.command("audit")
@click.argument("qa_dir", type=click.Path(path_type=Path))
def qa_audit(qa_dir):
    """Answer distribution and question-only accuracy vs chance per subtype; flags > chance + 10 points."""
    from volvqa.qa.audit import audit, key_of, render
    p = qa_dir / "qa.jsonl"
    if not p.is_file():
        raise VolvqaInputError(p, "not found: is this a build-qa output folder?")
    try:
        items = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    except ValueError as e:
        raise VolvqaInputError(p, f"not valid JSON lines ({e})") from None
    for it in items:
        it["key"] = key_of(it)
    rows = audit(items)
    click.echo(render(rows))
    flagged = [s for s, r in rows.items() if r["flagged"]]
    built = qa_dir / "audit.json"
    excluded = []
    if built.is_file():
        excluded = sorted(s for s, r in json.loads(built.read_text()).items() if r["flagged"])
    click.echo(f"\n{len(rows)} subtypes in qa.jsonl, {len(flagged)} flagged now; "
               f"{len(excluded)} flagged at build time and excluded: {', '.join(excluded) or 'none'}")


@main.group()
def export():
    """A built benchmark in another benchmark's layout."""


@export.command("deeptumorvqa")
@click.argument("build", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--dtv-only", is_flag=True, help="Only the questions of DeepTumorVQA's 42 subtypes.")
@click.option("--video/--no-video", default=True, show_default=True, help="Write videos/whole/<id>.mp4.")
@click.option("--train/--no-train", default=True, show_default=True, help="Also write train/train_qa.csv.")
def export_deeptumorvqa_cmd(build, out, dtv_only, video, train):
    """DeepTumorVQA v2's layout: benchmark/test_qa.json, images_2d/, videos/, ct/ (its loader reads it)."""
    from volvqa.io.atomic import owned_dir
    from volvqa.progress import progress
    from volvqa.qa.dtv_export import export_deeptumorvqa
    bars: dict = {}

    def tick(split, k, n):
        if split not in bars:
            bars[split] = progress(n, f"export {split}").__enter__()
        bars[split].update(1)

    with owned_dir(out):
        res = export_deeptumorvqa(build, out, dtv_only=dtv_only, video=video, train=train, progress=tick)
    for b in bars.values():
        b.__exit__(None, None, None)
    q, im, st = res["questions"], res["images"], res["subtypes"]
    click.echo("; ".join(f"{sp}: {q[sp]} questions, {st[sp]} subtypes, {im[sp]} images" for sp in q)
               + f"\nDeepTumorVQA layout: {out}")


@main.group()
def synth():
    """Synthetic CT with known truth: phantoms and lesion insertion."""


@synth.command("phantoms")
@click.option("--n", "n", type=int, required=True, help="Number of phantoms.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder (synthetic layout).")
@click.option("--lesions/--no-lesions", default=True, show_default=True, help="Insert a random mix of lesions.")
@click.option("--kind", type=click.Choice(["abdomen", "chest"]), default="abdomen", show_default=True,
              help="Abdominal phantoms (organs, liver/kidney/pancreas/spleen lesions, sub-segments) or chest "
                   "phantoms (lung lobes, airways, heart, ribs, lung nodules and tumours).")
def synth_phantoms(n, seed, out, lesions, kind):
    """CT phantoms with known truth (CT, label map, parts, truth.json per case)."""
    from tqdm import tqdm

    from volvqa.synth.dataset import generate_phantom_dataset
    if n < 1:
        raise click.BadParameter("--n must be at least 1")
    with tqdm(total=n, desc="phantoms", unit="case", file=sys.stderr, disable=None) as bar:
        generate_phantom_dataset(out, n, seed, lesions=lesions, progress=bar.update, kind=kind)
    click.echo(f"{n} phantoms in {out}")


@synth.command("lesions")
@click.option("--volume", required=True, type=click.Path(path_type=Path))
@click.option("--masks", required=True, type=click.Path(path_type=Path))
@click.option("--labels", "label_spec", default="auto", help="Label spec of --masks.")
@click.option("--spec", "spec_path", required=True, type=click.Path(path_type=Path),
              help="YAML: seed and a list of lesion requests.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--n", "n", type=int, default=1, show_default=True,
              help="Number of variants (case folders <stem>_lesions_000 ...) with seeds seed, seed+1, ...")
@_with_load_opts
def synth_lesions(volume, masks, label_spec, spec_path, out, n, series_uid, allow_non_ct, max_voxels):
    """Insert lesions into a CT with organ masks; writes case folders with truth.json."""
    import yaml

    from volvqa.io import load_labelmap, load_volume
    from volvqa.synth.dataset import case_done, insert_with_retries, write_case
    from volvqa.synth.lesions import LesionRequest
    try:
        spec = yaml.safe_load(spec_path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise VolvqaInputError(spec_path, f"unreadable lesion spec ({str(e).splitlines()[0]})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("lesions"), list):
        raise VolvqaInputError(spec_path, "lesion spec needs a 'lesions' list")
    try:
        reqs = [LesionRequest.from_dict(d) for d in spec["lesions"]]
    except (TypeError, VolvqaInputError) as e:
        raise VolvqaInputError(spec_path, str(e)) from None
    v = load_volume(volume, series_uid=series_uid, allow_non_ct=allow_non_ct, max_voxels=max_voxels)
    lm = load_labelmap(masks, label_spec, reference=v)
    stem = volume.name.split(".nii")[0].split(".zip")[0]
    seed = int(spec.get("seed", 0))
    for k in range(n):
        folder = out / f"{stem}_lesions_{k:03d}"
        if case_done(folder):
            continue
        v2, lm2, truths, skipped = insert_with_retries(v, lm, reqs, seed + k)
        write_case(folder, v2, lm2, {"case_id": folder.name, "source": str(volume), "seed": seed + k,
                                     "lesions": truths, "skipped_lesions": skipped})
        click.echo(f"{folder}: {len(truths)} lesions inserted, {len(skipped)} skipped")


@main.command()
@click.argument("volume", type=click.Path(path_type=Path))
@click.option("--masks", type=click.Path(path_type=Path), help="Label map or mask folder to outline.")
@click.option("--labels", "label_spec", default="auto", help="Label spec of --masks.")
@click.option("--structure", default=None, help="Slices through this structure's centroid (e.g. liver, liver_tumor).")
@click.option("--bbox", "bboxes", multiple=True, help="Voxel box x0,y0,z0,x1,y1,z1 (inclusive); repeatable.")
@click.option("--window", default="400,50", show_default=True, help="Width,level in HU.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="PNG file.")
@_with_load_opts
def render(volume, masks, label_spec, structure, bboxes, window, out, series_uid, allow_non_ct, max_voxels):
    """Axial, coronal and sagittal slices with mask contours and boxes (radiological view)."""
    from volvqa.io import load_labelmap, load_volume
    from volvqa.render import render_png, write_png
    if not out.parent.exists():
        raise VolvqaInputError(out, "output folder does not exist")
    try:
        boxes = [[int(x) for x in b.split(",")] for b in bboxes]
        w, lvl = (float(x) for x in window.split(","))
    except ValueError:
        raise click.BadParameter("--bbox takes 6 integers, --window two numbers") from None
    if any(len(b) != 6 for b in boxes):
        raise click.BadParameter("--bbox takes 6 integers: x0,y0,z0,x1,y1,z1")
    if structure and not masks:
        raise click.UsageError("--structure needs --masks")
    v = load_volume(volume, series_uid=series_uid, allow_non_ct=allow_non_ct, max_voxels=max_voxels)
    lm = load_labelmap(masks, label_spec, reference=v) if masks else None
    if lm is not None and structure:
        from volvqa.render import structure_ids
        try:
            structure_ids(lm, structure)
        except VolvqaInputError as e:
            raise VolvqaInputError(masks, e.problem) from None
    write_png(out, render_png(v, lm, structure=structure, boxes=boxes, window=(w, lvl), title=volume.name))
    click.echo(f"wrote {out}")


@main.group()
def datasets():
    """Dataset manifests."""


@datasets.command("check")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--no-read", is_flag=True, help="Do not read label maps (faster; skips unmapped-id check).")
def datasets_check(manifest, no_read):
    """Report cases, splits, missing files and unmapped labels of a manifest."""
    from volvqa.datasets.check import check_manifest
    from volvqa.datasets.manifest import load_manifest
    m = load_manifest(manifest)
    rep = check_manifest(m, read_labels=not no_read)
    click.echo(f"dataset: {m.name} ({m.layout}) root {m.root}")
    click.echo(rep.render())
    if not rep.ok:
        raise VolvqaInputError(manifest, f"{len(rep.missing)} missing files, {len(rep.unmapped)} cases "
                               f"with unmapped labels, {len(rep.unreadable)} unreadable files")


if __name__ == "__main__":  # pragma: no cover
    main()
