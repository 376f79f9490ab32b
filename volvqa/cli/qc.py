"""Mask quality control: qc."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from volvqa.cli.main import main, with_load_opts
from volvqa.errors import VolvqaInputError


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
@with_load_opts
def qc_cmd(manifest, volume, masks, label_spec, annotates, compare_with, compare_labels, device, json_out,
           split, series_uid, allow_non_ct, max_voxels):
    """Mask quality control: one line per failed check (case, structure, check, reason); with --compare,
    per-structure agreement with a second source (Dice, volume difference, centroid distance).
    Exit status 1 when anything is flagged, 0 when clean."""
    from volvqa.bench.qc import agreement_table, qc_dataset
    from volvqa.io.atomic import write_text_atomic
    from volvqa.qc.compare import compare
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
        lm = load_labelmap(list(masks), specs,
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
