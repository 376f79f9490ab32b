"""Layout adapters: a dataset's folder tree -> list of Cases.

Each adapter only finds files; label names are mapped by the manifest's
``labels`` table (``volvqa.labels`` vocabulary).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from volvqa import labels as L
from volvqa.datasets.manifest import Case, Manifest, safe_join
from volvqa.errors import VolvqaInputError, shown

KITS23_LABELS = {1: "kidney", 2: "kidney_tumor", 3: "kidney_cyst"}


def _subdirs(m: Manifest, pattern: str) -> list[Path]:
    return sorted(p for p in m.root.glob(pattern) if p.is_dir())


def _rel(m: Manifest, p: Path) -> str:
    return p.relative_to(m.root).as_posix()


def abdomenatlas(m: Manifest) -> list[Case]:
    """``BDMAP_*/ct.nii.gz`` + ``BDMAP_*/segmentations/<name>.nii.gz``."""
    out = []
    for d in _subdirs(m, "BDMAP_*"):
        ct = safe_join(m, _rel(m, d / "ct.nii.gz"), what="CT")
        seg = d / "segmentations"
        masks = safe_join(m, _rel(m, seg), what="mask folder") if seg.exists() else None
        out.append(Case(d.name, ct, masks, m.labels))
    return out


def totalsegmentator(m: Manifest) -> list[Case]:
    """The TotalSegmentator dataset: ``s*/ct.nii.gz`` + ``s*/segmentations/*.nii.gz``."""
    out = []
    for d in _subdirs(m, "s[0-9]*"):
        ct = safe_join(m, _rel(m, d / "ct.nii.gz"), what="CT")
        seg = d / "segmentations"
        masks = safe_join(m, _rel(m, seg), what="mask folder") if seg.exists() else None
        out.append(Case(d.name, ct, masks, m.labels))
    return out


def kits(m: Manifest) -> list[Case]:
    """KiTS19/21/23: ``case_*/imaging.nii.gz`` + ``case_*/segmentation.nii.gz``."""
    spec = m.labels if isinstance(m.labels, dict) else KITS23_LABELS
    out = []
    for d in _subdirs(m, "case_*"):
        ct = safe_join(m, _rel(m, d / "imaging.nii.gz"), what="CT")
        seg = d / "segmentation.nii.gz"
        masks = safe_join(m, _rel(m, seg), what="label map") if seg.exists() else None
        out.append(Case(d.name, ct, masks, spec))
    return out


def msd(m: Manifest) -> list[Case]:
    """Medical Segmentation Decathlon: ``dataset.json``, ``imagesTr/``, ``labelsTr/``.

    The manifest's ``labels`` may be keyed by the dataset's label ids or by
    the names in ``dataset.json`` (e.g. ``{liver: liver, cancer: liver_lesion}``).
    """
    dj = safe_join(m, "dataset.json", what="dataset.json")
    try:
        meta = json.loads(dj.read_text())
    except (OSError, ValueError) as e:
        raise VolvqaInputError(dj, f"unreadable dataset.json ({shown(str(e))})") from None
    if not isinstance(meta, dict):
        raise VolvqaInputError(dj, "dataset.json must be a JSON object")
    raw_labels = meta.get("labels") or {}
    if not isinstance(raw_labels, dict):
        raise VolvqaInputError(dj, "'labels' must map label ids to names")
    try:
        ds_labels = {int(k): str(v) for k, v in raw_labels.items()}
    except ValueError:
        raise VolvqaInputError(dj, f"'labels' keys must be integer ids, got {shown(list(raw_labels))}") from None
    if isinstance(m.labels, dict):
        spec = {}
        for i, name in ds_labels.items():
            if i == 0:
                continue
            c = m.labels.get(i, m.labels.get(name))
            if c is not None:
                spec[i] = c
    else:
        spec = {i: L.canonical_name(n) for i, n in ds_labels.items() if i != 0}
    out = []
    training = meta.get("training") or []
    if not isinstance(training, list):
        raise VolvqaInputError(dj, "'training' must be a list of {image, label} entries")
    for n, entry in enumerate(training):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise VolvqaInputError(dj, f"training entry {n} needs an 'image' path (a string), got {shown(entry)}")
        if entry.get("label") is not None and not isinstance(entry["label"], str):
            raise VolvqaInputError(dj, f"training entry {n}: 'label' must be a path (a string), "
                                   f"got {shown(entry['label'])}")
        ct = safe_join(m, entry["image"], what="image")
        masks = safe_join(m, entry["label"], what="label") if entry.get("label") else None
        cid = ct.name.split(".nii")[0]
        out.append(Case(cid, ct, masks, spec))
    return out


def csv_layout(m: Manifest) -> list[Case]:
    """A CSV with columns ``case_id, ct, masks[, labels]``: ``csv:`` in the
    manifest names it relative to the manifest file (default: ``cases.csv``
    under the root). Paths in it are relative to the root; ``labels`` is a
    built-in spec name or a YAML/JSON file under the root."""
    if m.options.get("csv"):
        table = m.path.parent / str(m.options["csv"])
        r, here = table.resolve(), m.path.parent.resolve()
        if not any(r == d or d in r.parents for d in (here, m.root)):
            raise VolvqaInputError(m.path, f"csv {str(m.options['csv'])!r} lies outside the manifest's folder "
                                   "and the dataset root")
    else:
        table = safe_join(m, "cases.csv", what="CSV")
    try:
        rows = list(csv.DictReader(table.read_text().splitlines()))
    except OSError as e:
        raise VolvqaInputError(table, f"unreadable CSV ({e})") from None
    out = []
    for n, row in enumerate(rows, start=2):
        if not row.get("case_id") or not row.get("ct"):
            raise VolvqaInputError(table, f"line {n}: needs case_id and ct")
        ct = safe_join(m, row["ct"], what=f"line {n} ct")
        masks = safe_join(m, row["masks"], what=f"line {n} masks") if row.get("masks") else None
        spec = m.labels
        if row.get("labels"):
            s = row["labels"].strip()
            spec = s if s in L.BUILTIN_SPECS or s in ("auto", "canonical") else \
                L.resolve_label_spec(safe_join(m, s, what=f"line {n} labels"))
        extra = {}
        if row.get("phase"):
            from volvqa.phase import normalise_phase
            extra["phase"] = normalise_phase(row["phase"], f"{table} line {n}")
        out.append(Case(row["case_id"].strip(), ct, masks, spec, extra=extra))
    return out


def synthetic(m: Manifest) -> list[Case]:
    """A folder made by ``volvqa synth``: ``<case>/ct.nii.gz``, ``seg.nii.gz``
    (canonical ids), optional ``parts.nii.gz`` and ``truth.json``."""
    out = []
    for d in sorted(p for p in m.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (d / "ct.nii.gz").exists():
            continue
        ct = safe_join(m, _rel(m, d / "ct.nii.gz"), what="CT")
        masks = [safe_join(m, _rel(m, d / "seg.nii.gz"), what="label map")]
        spec: list = ["canonical"]
        if (d / "parts.nii.gz").exists():
            masks.append(safe_join(m, _rel(m, d / "parts.nii.gz"), what="parts"))
            spec.append("volvqa_parts")
        truth = d / "truth.json"
        extra = {}
        if truth.exists():
            extra = {"truth": truth}
            scope = synthetic_annotates(truth)
            if scope is not None:
                extra["annotates"] = scope
        out.append(Case(d.name, ct, masks, spec, extra=extra))
    return out


def synthetic_annotates(truth_path: Path) -> list[str] | None:
    """What a synthetic case annotates, from its truth.json: the list written
    with the case, else (folders written before it was) a phantom's full
    vocabulary when the truth is a phantom's, else None (what the masks hold)."""
    try:
        truth = json.loads(truth_path.read_text())
    except (OSError, ValueError) as e:
        raise VolvqaInputError(truth_path, f"unreadable truth.json ({e})") from None
    if isinstance(truth.get("annotates"), list):
        return sorted(truth["annotates"])
    if isinstance(truth.get("config"), dict) and "spleen_grade" in truth["config"]:
        from volvqa.synth.dataset import PHANTOM_ANNOTATES
        return sorted(PHANTOM_ANNOTATES)
    if truth.get("kind") == "chest":
        from volvqa.synth.chest import CHEST_ANNOTATES
        return sorted(CHEST_ANNOTATES)
    return None


LAYOUTS = {
    "synthetic": synthetic,
    "abdomenatlas": abdomenatlas,
    "totalsegmentator": totalsegmentator,
    "kits": kits,
    "msd": msd,
    "csv": csv_layout,
}
