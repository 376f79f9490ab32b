"""Synthetic data: synth phantoms, synth lesions."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from volvqa.cli.main import main, with_load_opts
from volvqa.errors import VolvqaInputError


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
@with_load_opts
def synth_lesions(volume, masks, label_spec, spec_path, out, n, series_uid, allow_non_ct, max_voxels):
    """Insert lesions into a CT with organ masks; writes case folders with truth.json."""

    from volvqa.io import load_labelmap, load_volume
    from volvqa.safe_yaml import load_yaml
    from volvqa.synth.dataset import case_done, insert_with_retries, write_case
    from volvqa.synth.lesions import LesionRequest
    try:
        text = spec_path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise VolvqaInputError(spec_path, f"unreadable lesion spec ({type(e).__name__})") from None
    spec = load_yaml(text, spec_path)
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
