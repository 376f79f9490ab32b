"""``volvqa qc`` over a dataset manifest: every case's checks, and with a
second source the per-structure agreement table."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from volvqa import labels as L
from volvqa.bench.layout import label_map_paths
from volvqa.errors import VolvqaInputError
from volvqa.qc.checks import check_case
from volvqa.qc.compare import Agreement, compare


def second_source(spec: str, device: str = "auto"):
    """``other_for(volume, case_id) -> LabelMap`` for ``--compare``: a
    segmenter backend, or a folder of ``<case_id>_seg.nii.gz`` label maps
    (canonical ids, as ``volvqa segment`` and build-qa write them; with
    ``<case_id>_parts.nii.gz`` when present). A folder's scope is what its
    maps hold."""
    from volvqa.io import load_labelmap
    if spec.startswith(("monai:", "totalsegmentator")):
        from volvqa.segment import cached_segmenter
        seg = cached_segmenter(spec, device)
        return lambda volume, case_id: seg.segment(volume)
    folder = Path(spec)
    if not folder.is_dir():
        raise VolvqaInputError(folder, "not a segmenter (monai:runs/NAME, totalsegmentator[...]) nor a folder "
                               "of <case>_seg.nii.gz label maps", param="compare")

    def other_for(volume, case_id):
        seg, parts = label_map_paths(folder, case_id)
        if not seg.is_file():
            raise VolvqaInputError(seg, "no label map for this case in the folder compared with", param="compare")
        if parts.is_file():
            return load_labelmap([seg, parts], ["canonical", "volvqa_parts"], reference=volume)
        return load_labelmap(seg, "canonical", reference=volume)
    return other_for


def qc_dataset(manifest, compare_with: str | None = None, device: str = "auto", progress: bool = True,
               split: str | None = None, detection: dict | None = None
               ) -> tuple[list[dict], dict[str, list[Agreement]], dict[str, str]]:
    """(findings as dicts, agreement rows per case, errors per case) over a manifest's cases (of one split
    when given). With a second source and a ``detection`` dict, each case's lesion detection of the second
    source against the masks (``volvqa.segment.detection``) is added to it for the families both annotate."""
    from tqdm import tqdm

    from volvqa.bench.build import case_annotates
    from volvqa.datasets.manifest import cases_for, load_manifest
    from volvqa.io import load_labelmap, load_volume
    m = load_manifest(manifest)
    cases = [c for c in cases_for(m) if split is None or c.split == split]
    other_for = second_source(compare_with, device) if compare_with else None
    findings, agreement, errors = [], {}, {}
    for c in tqdm(cases, desc="qc", unit="case", file=sys.stderr, disable=not progress or None):
        try:
            gen = c.extra.get("generate")
            if gen:
                from volvqa.synth.dataset import case_done, synthetic_case, write_case
                if not case_done(Path(c.ct).parent):
                    _, v0, lm0, truth = synthetic_case(gen.get("kind", "abdomen"), gen["index"], gen["seed"],
                                                       lesions=gen["lesions"])
                    write_case(Path(c.ct).parent, v0, lm0, truth)
            if not c.masks:
                raise VolvqaInputError(c.ct, "case has no masks to check")
            v = load_volume(c.ct)
            masks = [p for p in (c.masks if isinstance(c.masks, list) else [c.masks]) if Path(p).exists()]
            specs = c.label_spec if isinstance(c.label_spec, list) else [c.label_spec] * len(masks)
            specs = specs[: len(masks)]
            lm = load_labelmap(masks, specs,
                               reference=v, annotates=case_annotates(m, c, None))
            findings += [f.to_dict() for f in check_case(v, lm, c.case_id)]
            if other_for is not None:
                other = other_for(v, c.case_id)
                agreement[c.case_id] = compare(v, lm, other)
                if detection is not None:
                    from volvqa.segment.detection import case_detection
                    fams = tuple(f for f in ("liver", "kidney", "pancreas")
                                 if any(L.is_lesion(n) and L.LESION_ORGAN[n] == f for n in lm.annotates)
                                 and any(L.is_lesion(n) and L.LESION_ORGAN[n] == f for n in other.annotates))
                    if fams:
                        detection[c.case_id] = case_detection(other, lm, float(np.prod(v.spacing_mm)),
                                                              families=fams)
        except VolvqaInputError as e:
            errors[c.case_id] = str(e)
    return findings, agreement, errors


def agreement_table(agreement: dict[str, list[Agreement]]) -> list[dict]:
    """Per structure over cases: cases compared, mean / min Dice (cases where
    both sources hold it), cases in disagreement, cases not compared."""
    per: dict[str, list[Agreement]] = {}
    for rows in agreement.values():
        for r in rows:
            per.setdefault(r.structure, []).append(r)
    out = []
    for name, rows in sorted(per.items()):
        dice = [r.dice for r in rows if r.dice is not None]
        out.append({"structure": name, "compared": sum(r.agree is not None for r in rows),
                    "both_present": len(dice),
                    "mean_dice": round(float(np.mean(dice)), 4) if dice else None,
                    "min_dice": round(float(np.min(dice)), 4) if dice else None,
                    "disagree": sum(r.agree is False for r in rows),
                    "not_compared": sum(r.agree is None for r in rows)})
    return out
