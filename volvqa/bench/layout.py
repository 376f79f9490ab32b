"""Every file name in a build folder, and the readers of a built benchmark.

A build folder (``volvqa build-qa ... --out DIR``) holds::

    qa.jsonl  qa.parquet  data/<split>.parquet  cases.parquet  build.json
    audit.json  qc.json  errors.jsonl  traces.jsonl  dataset_card.md  README.md
    images/  views/  cases/<case>/{findings.json, report.txt, qc.json}
    volumes/<case>.nii.gz  masks/<case>_{seg,parts}.nii.gz   (--export-volumes)
    segmentations/<case>_{seg,parts}.nii.gz                  (a segmenter ran)
    work/<case>/{items.json, case.json, findings.json, qc.json, ...}  (resume state)

This module is the only place those names are spelled.
"""
from __future__ import annotations

import json
from pathlib import Path

from volvqa.errors import VolvqaInputError
from volvqa.findings.records import Findings
from volvqa.records import check_case_id

QA_JSONL = "qa.jsonl"
QA_PARQUET = "qa.parquet"
SPLITS_DIR = "data"
CASES_PARQUET = "cases.parquet"
BUILD_JSON = "build.json"
AUDIT_JSON = "audit.json"
QC_JSON = "qc.json"
ERRORS_JSONL = "errors.jsonl"
TRACES_JSONL = "traces.jsonl"
DATASET_CARD = "dataset_card.md"
HF_README = "README.md"
IMAGES_DIR = "images"
VIEWS_DIR = "views"
CASES_DIR = "cases"
VOLUMES_DIR = "volumes"
MASKS_DIR = "masks"
SEGMENTATIONS_DIR = "segmentations"
WORK_DIR = "work"
# Per case, in cases/<case>/ and work/<case>/.
FINDINGS_JSON = "findings.json"
REPORT_TXT = "report.txt"
CASE_QC_JSON = "qc.json"
ITEMS_JSON = "items.json"
CASE_JSON = "case.json"


def case_dir(out: Path, case_id: str) -> Path:
    return Path(out) / CASES_DIR / check_case_id(case_id)


def findings_path(out: Path, case_id: str) -> Path:
    return case_dir(out, case_id) / FINDINGS_JSON


def label_map_paths(folder: Path, case_id: str) -> tuple[Path, Path]:
    """(label map, parts map) of a case in a folder of ``<case>_seg.nii.gz`` / ``<case>_parts.nii.gz``."""
    folder = Path(folder)
    check_case_id(case_id)
    return folder / f"{case_id}_seg.nii.gz", folder / f"{case_id}_parts.nii.gz"


def segmentation_paths(out: Path, case_id: str, folder: str = SEGMENTATIONS_DIR) -> tuple[Path, Path]:
    return label_map_paths(Path(out) / folder, case_id)


def exported_volume_path(out: Path, case_id: str) -> Path:
    return Path(out) / VOLUMES_DIR / f"{check_case_id(case_id)}.nii.gz"


def work_dir(out: Path, case_id: str) -> Path:
    return Path(out) / WORK_DIR / check_case_id(case_id)


def case_done(out: Path, case_id: str) -> bool:
    """A case's items file is written last, so its presence means the case finished."""
    return (work_dir(out, case_id) / ITEMS_JSON).is_file()


def load_qa(qa_dir: Path) -> tuple[list[dict], dict[str, dict], dict]:
    """(items, case rows by id, build info) of a build-qa output folder."""
    import pandas as pd
    qa_dir = Path(qa_dir)
    p = qa_dir / QA_JSONL
    if not p.is_file():
        raise VolvqaInputError(p, "not found: is this a build-qa output folder?")
    items = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
    cases = {}
    if (qa_dir / CASES_PARQUET).is_file():
        for r in pd.read_parquet(qa_dir / CASES_PARQUET).to_dict("records"):
            # Paths are relative to the build folder (older builds: absolute).
            r["ct"] = str(qa_dir / r["ct"]) if r.get("ct") and not Path(r["ct"]).is_absolute() else r.get("ct")
            if r.get("masks"):
                r["masks"] = json.dumps([str(qa_dir / p) if not Path(p).is_absolute() else p
                                         for p in json.loads(r["masks"]) or []])
            cases[r["case_id"]] = r
    info = json.loads((qa_dir / BUILD_JSON).read_text()) if (qa_dir / BUILD_JSON).is_file() else {}
    info["qa_dir"] = str(qa_dir)
    return items, cases, info


def load_findings(out: Path, case_id: str) -> Findings:
    p = findings_path(out, case_id)
    if not p.is_file():
        raise VolvqaInputError(p, "not found: the case has no findings")
    return Findings.from_dict(json.loads(p.read_text()))


def load_traces(qa_dir: Path) -> dict[str, dict]:
    """qid -> gold tool trace of a built benchmark."""
    p = Path(qa_dir) / TRACES_JSONL
    if not p.is_file():
        raise VolvqaInputError(p, "not found: build the benchmark again (build-qa writes traces.jsonl)")
    return {r["qid"]: r for r in (json.loads(x) for x in p.read_text().splitlines() if x.strip())}


def build_relative(path, out: Path) -> str:
    """A path as cases.parquet records it: relative to the build folder (posix),
    so the build can move together with (or, exported, without) its data."""
    import os
    return Path(os.path.relpath(Path(path).resolve(), Path(out).resolve())).as_posix()


def read_errors(out: Path) -> dict[str, str]:
    """case id -> why it failed, from errors.jsonl."""
    p = Path(out) / ERRORS_JSONL
    if not p.exists():
        return {}
    return {r["case_id"]: r["error"] for r in map(json.loads, p.read_text().splitlines()) if r}


def merge_errors(out: Path, new: dict[str, str], attempted: set[str]) -> None:
    """errors.jsonl with the attempted cases' old entries replaced by ``new`` (always written: empty when
    no case failed)."""
    from volvqa.io.atomic import write_text_atomic
    errs = {k: v for k, v in read_errors(out).items() if k not in attempted}
    errs.update(new)
    text = "".join(json.dumps({"case_id": k, "error": errs[k]}, sort_keys=True) + "\n" for k in sorted(errs))
    write_text_atomic(Path(out) / ERRORS_JSONL, text)
