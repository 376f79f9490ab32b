"""``volvqa datasets check``: cases, missing files and unmapped labels."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from volvqa import labels as L
from volvqa.datasets.manifest import Manifest, load_cases
from volvqa.errors import VolvqaInputError
from volvqa.io import nifti
from volvqa.io.labelmap import MASK_SUFFIXES, _stem
from volvqa.io.validate import max_voxels_from_env


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
        lines += [f"  {c}: {', '.join(v)}" for c, v in sorted(self.unmapped.items())]
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
        if not c.masks.exists():
            rep.missing.append(str(c.masks))
            continue
        spec = L.resolve_label_spec(c.label_spec)
        bad: list[str] = []
        if c.masks.is_dir():
            for f in sorted(c.masks.iterdir()):
                if f.name.endswith(MASK_SUFFIXES):
                    stem = _stem(f)
                    name = spec.get(stem) if isinstance(spec, dict) else L.canonical_name(stem)
                    if name is None:
                        bad.append(stem)
        elif read_labels:
            try:
                data, _aff, _hdr = nifti.read_nifti(c.masks, max_voxels=max_voxels_from_env())
            except VolvqaInputError as e:
                rep.unreadable.append(str(e))
                continue
            ids = [int(i) for i in np.unique(data) if i != 0]
            for i in ids:
                name = L.CANONICAL_NAMES.get(i) if not isinstance(spec, dict) else spec.get(i)
                if name is None:
                    bad.append(str(i))
        if bad:
            rep.unmapped[c.case_id] = bad
    return rep
