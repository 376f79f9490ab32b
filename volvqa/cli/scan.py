"""One scan: info, ingest, cache, findings, render, segment."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from volvqa.cli.main import main, with_load_opts
from volvqa.errors import VolvqaInputError


@main.command()
@click.argument("volume", type=click.Path(path_type=Path))
@with_load_opts
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
@with_load_opts
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
        lm = load_labelmap(list(masks), specs,
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
@with_load_opts
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
@with_load_opts
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

@main.command("segment")
@click.argument("volumes", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--backend", required=True,
              help="`monai:runs/NAME` | `totalsegmentator[:fast][+liver_lesions+kidney_cysts+liver_vessels"
                   "+lung_nodules+liver_segments]`, or a kind an installed package registers")
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

@main.command()
@click.argument("volume", type=click.Path(path_type=Path))
@click.option("--masks", type=click.Path(path_type=Path), help="Label map or mask folder to outline.")
@click.option("--labels", "label_spec", default="auto", help="Label spec of --masks.")
@click.option("--structure", default=None, help="Slices through this structure's centroid (e.g. liver, liver_tumor).")
@click.option("--bbox", "bboxes", multiple=True, help="Voxel box x0,y0,z0,x1,y1,z1 (inclusive); repeatable.")
@click.option("--window", default="400,50", show_default=True, help="Width,level in HU.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="PNG file.")
@with_load_opts
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
