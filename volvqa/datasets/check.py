"""``volvqa datasets check``: cases, missing files and unmapped labels."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from volvqa import labels as L
from volvqa.arrays import label_counts
from volvqa.datasets.manifest import Manifest, load_cases
from volvqa.errors import VolvqaInputError
from volvqa.io import nifti
from volvqa.io.labelmap import MASK_SUFFIXES, mask_stem
from volvqa.io.validate import check_label_values, max_voxels_from_env

#: Unmapped names shown per case, and cases shown: a hostile or broken dataset cannot flood the report.
MAX_LISTED = 20
MAX_CASES_LISTED = 50


@dataclass
class CheckReport:
    n_cases: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unmapped: dict[str, list[str]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unmapped or self.unreadable)

    def render(self) -> str:
        lines = [f"cases: {self.n_cases}",
                 "splits: " + ", ".join(f"{k}={v}" for k, v in sorted(self.splits.items()))]
        lines.append(f"missing files: {len(self.missing)}")
        lines += [f"  {p}" for p in self.missing]
        lines.append(f"cases with unmapped labels: {len(self.unmapped)}")
        rows = sorted(self.unmapped.items())
        lines += [f"  {c}: {', '.join(v[:MAX_LISTED])}" + (f" (+{len(v) - MAX_LISTED} more)" if len(v) > MAX_LISTED else "")
                  for c, v in rows[:MAX_CASES_LISTED]]
        if len(rows) > MAX_CASES_LISTED:
            lines.append(f"  ... and {len(rows) - MAX_CASES_LISTED} more cases")
        lines.append(f"unreadable files: {len(self.unreadable)}")
        lines += [f"  {p}" for p in self.unreadable]
        return "\n".join(lines)


def check_manifest(manifest: Manifest, *, read_labels: bool = True) -> CheckReport:
    cases = load_cases(manifest)
    rep = CheckReport(n_cases=len(cases))
    for c in cases:
        rep.splits[c.split] = rep.splits.get(c.split, 0) + 1
        if not c.ct.exists():
            rep.missing.append(str(c.ct))
        if c.masks is None:
            continue
        sources = c.masks if isinstance(c.masks, list) else [c.masks]
        specs = c.label_spec if isinstance(c.label_spec, list) else [c.label_spec] * len(sources)
        bad: list[str] = []
        for src, spec in zip(sources, specs, strict=False):
            _check_source(rep, src, L.resolve_label_spec(spec), read_labels, bad)
        if bad:
            rep.unmapped[c.case_id] = bad
    return rep


def _check_source(rep: CheckReport, masks, spec, read_labels: bool, bad: list[str]) -> None:
    if not masks.exists():
        rep.missing.append(str(masks))
        return
    from volvqa.io.dicom_masks import dicom_mask_names
    try:
        dicom_names = dicom_mask_names(masks)
    except VolvqaInputError as e:
        rep.unreadable.append(str(e))
        return
    if dicom_names is not None:  # DICOM SEG segments / RTSTRUCT ROIs, named like folder files
        from volvqa.io.dicom_masks import normalise_name
        for raw in dicom_names:
            name = spec.get(raw, spec.get(normalise_name(raw))) if isinstance(spec, dict) else \
                L.canonical_name(normalise_name(raw))
            if name is None:
                bad.append(raw)
        return
    if masks.is_dir():
        for f in sorted(masks.iterdir()):
            if f.name.endswith(MASK_SUFFIXES):
                stem = mask_stem(f)
                name = spec.get(stem) if isinstance(spec, dict) else L.canonical_name(stem)
                if name is None:
                    bad.append(stem)
        return
    if not read_labels:
        return
    try:
        data, _aff, _hdr = nifti.read_nifti(masks, max_voxels=max_voxels_from_env())
        data = check_label_values(masks, data)   # ids bounded (65535) before counting by id
    except VolvqaInputError as e:
        rep.unreadable.append(str(e))
        return
    for i in np.nonzero(label_counts(data, minlength=int(data.max(initial=0)) + 1))[0]:
        if i == 0:
            continue
        name = L.CANONICAL_NAMES.get(int(i)) if not isinstance(spec, dict) else spec.get(int(i))
        if name is None:
            bad.append(str(i))
