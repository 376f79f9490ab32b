"""Building and checking benchmarks: build-qa, qa audit, export, datasets check."""
from __future__ import annotations

import json
from pathlib import Path

import click

from volvqa.cli.main import main
from volvqa.errors import VolvqaInputError


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
              help="Segment cases without masks with this backend (`monai:runs/NAME` | `totalsegmentator[:fast][+...]`); "
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
    from volvqa.bench.build import BuildConfig, build_qa
    from volvqa.bench.finalize import finalize
    from volvqa.datasets.manifest import cases_for, load_manifest
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
    from volvqa.bench.finalize import summary_text
    click.echo(summary_text(res, out))

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
    from volvqa.bench.dtv_export import export_deeptumorvqa
    from volvqa.io.atomic import owned_dir
    from volvqa.progress import progress
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
