"""Training: train (the 3D-encoder answerer), train-seg (a MONAI segmenter)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from volvqa.cli.main import main


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
