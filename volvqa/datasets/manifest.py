"""Dataset manifests: one YAML per dataset naming its layout, root, label
mapping onto the canonical vocabulary, split ratios and seed.

Example (``data_manifests/kits23.yaml``)::

    name: kits23
    layout: kits                # abdomenatlas | msd | kits | totalsegmentator | csv
    root: ../data/kits23        # relative to this file
    root_env: KITS23_ROOT       # optional: this environment variable wins when set
    labels: {1: kidney, 2: kidney_tumor, 3: kidney_cyst}
    splits: {train: 0.7, val: 0.1, test: 0.2}
    seed: 0
    license: CC BY-NC-SA 4.0
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from volvqa import labels as L
from volvqa.errors import VolvqaInputError, shown
from volvqa.records import check_case_id
from volvqa.safe_yaml import load_yaml

DEFAULT_SPLITS = {"train": 0.7, "val": 0.1, "test": 0.2}
SPLIT_NAMES = ("train", "val", "test")
#: Every key a manifest may hold (anything else is a typo, and an error).
MANIFEST_KEYS = {
    "name": "dataset name", "layout": "folder layout", "root": "dataset root", "root_env": "variable overriding root",
    "labels": "label spec", "splits": "split ratios", "seed": "split and option seed", "license": "license text",
    "generate": "phantoms made on first use: {n, seed, lesions, kind}", "segmenter": "segmenter for cases without masks",
    "csv": "CSV table of the csv layout", "annotates": "structures the masks annotate",
    "qc": "mask quality control mode", "require_agreement": "second source structures must agree with",
    "phase": "contrast phase of every case (non-contrast, arterial, portal venous, delayed, contrast, unknown)",
}
GENERATE_KEYS = ("n", "seed", "lesions", "kind")
#: The YAML types each key may hold (a value of another type is an error, not a crash later).
MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str, int), "layout": (str,), "root": (str,), "root_env": (str,), "labels": (str, dict),
    "splits": (dict,), "seed": (int,), "license": (str,), "generate": (dict,), "segmenter": (str, dict),
    "csv": (str,), "annotates": (list,), "qc": (str,), "require_agreement": (str,), "phase": (str,)}
_TYPE_WORDS = {str: "a string", int: "an integer", dict: "a mapping", list: "a list"}


def _unknown(where, what: str, key, known) -> VolvqaInputError:
    import difflib
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(sorted(known))}"
    return VolvqaInputError(where, f"unknown {what} {shown(key)}{hint}")


@dataclass
class Case:
    """One scan of a dataset: where its CT and masks are, and how to name its labels."""

    case_id: str
    ct: Path
    masks: Path | list[Path] | None   # one source, or several merged in order
    label_spec: Any = "auto"          # one spec, or one per mask source
    split: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Manifest:
    path: Path
    name: str
    layout: str
    root: Path
    labels: Any
    splits: dict[str, float]
    seed: int
    license: str = ""
    options: dict = field(default_factory=dict)


def load_manifest(path: str | os.PathLike) -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise VolvqaInputError(path, "manifest not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise VolvqaInputError(path, f"unreadable manifest ({type(e).__name__})") from None
    data = load_yaml(text, path)
    if not isinstance(data, dict):
        raise VolvqaInputError(path, "manifest must be a YAML mapping")
    for key in data:
        if key not in MANIFEST_KEYS:
            raise _unknown(path, "manifest key", key, MANIFEST_KEYS)
    data = {k: v for k, v in data.items() if v is not None}   # "key:" with no value: as if absent
    for key in ("layout", "root"):
        if key not in data:
            raise VolvqaInputError(path, f"manifest lacks '{key}'")
    for key, value in data.items():
        want = MANIFEST_TYPES[key]
        if not isinstance(value, want) or (isinstance(value, bool) and bool not in want):
            raise VolvqaInputError(path, f"'{key}' must be " + " or ".join(_TYPE_WORDS[t] for t in want)
                                   + f", got {type(value).__name__} {shown(value)}")
    gen = data.get("generate")
    if gen is not None:
        if "n" not in gen:   # a mapping (checked with the other types above)
            raise VolvqaInputError(path, "generate must be a mapping with at least n (e.g. {n: 40, seed: 0})")
        for key in gen:
            if key not in GENERATE_KEYS:
                raise _unknown(path, "generate key", key, GENERATE_KEYS)
    from volvqa.datasets.layouts import LAYOUTS
    layout = str(data["layout"])
    if layout not in LAYOUTS:
        raise VolvqaInputError(path, f"unknown layout {shown(layout)}; known: {', '.join(sorted(LAYOUTS))}")
    root_env = data.get("root_env")
    if root_env and os.environ.get(str(root_env)):
        root = Path(os.environ[str(root_env)])
    else:
        root = Path(os.path.expandvars(str(data["root"])))
        if not root.is_absolute():
            root = path.parent / root
    splits = data.get("splits") or DEFAULT_SPLITS
    try:
        splits = {str(k): float(v) for k, v in splits.items()}
    except (AttributeError, TypeError, ValueError):
        raise VolvqaInputError(path, "splits must map split names to ratios") from None
    for name in splits:
        if name not in SPLIT_NAMES:
            raise _unknown(path, "split name", name, SPLIT_NAMES)
    if any(v < 0 for v in splits.values()) or abs(sum(splits.values()) - 1) > 1e-6:
        raise VolvqaInputError(path, f"split ratios must be non-negative and sum to 1, got {shown(splits)}")
    labels = data.get("labels", "auto")
    if isinstance(labels, dict):
        labels = L.resolve_label_spec(labels, where=path)
    elif labels not in ("auto", "canonical") and labels not in L.BUILTIN_SPECS:
        labels = L.resolve_label_spec(path.parent / str(labels), where=path)
    if "phase" in data:
        from volvqa.phase import normalise_phase
        data["phase"] = normalise_phase(data["phase"], path)
    known = {"name", "layout", "root", "root_env", "labels", "splits", "seed", "license"}
    return Manifest(path=path, name=str(data.get("name") or path.stem), layout=layout,
                    root=root.resolve(), labels=labels, splits=splits, seed=int(data.get("seed", 0)),
                    license=str(data.get("license", "")),
                    options={k: v for k, v in data.items() if k not in known})


def safe_join(manifest: Manifest, rel: str | os.PathLike, *, what: str = "path") -> Path:
    """``root / rel``, refusing paths that leave the dataset root.

    Absolute paths and ``..`` are refused outright; a symlink that resolves
    outside the root is refused too.
    """
    rel_s = os.fspath(rel).replace("\\", "/")
    if rel_s.startswith("./"):
        rel_s = rel_s[2:]
    pp = PurePosixPath(rel_s)
    if pp.is_absolute() or rel_s.startswith("/") or (len(rel_s) > 1 and rel_s[1] == ":"):
        raise VolvqaInputError(manifest.path, f"{what} {rel_s!r} is absolute; paths must be relative "
                               "to the dataset root")
    if ".." in pp.parts:
        raise VolvqaInputError(manifest.path, f"{what} {rel_s!r} leaves the dataset root ('..')")
    full = manifest.root / Path(*pp.parts) if pp.parts else manifest.root
    _check_inside(manifest, full, f"{what} {rel_s!r}")
    if full.is_dir():
        _check_links_inside(manifest, full, f"{what} {rel_s!r}")
    return full


def _check_links_inside(manifest: Manifest, folder: Path, what: str) -> None:
    """A folder's files are read by name later (mask folders, DICOM series): every link under
    it must stay inside the root too (plain entries of a folder inside the root are inside)."""
    with os.scandir(folder) as it:
        for e in it:
            if e.is_symlink():
                _check_inside(manifest, Path(e.path), f"{what}: {e.name!r}")
            elif e.is_dir():
                _check_links_inside(manifest, Path(e.path), what)


def _check_inside(manifest: Manifest, path: Path, what: str) -> None:
    resolved = path.resolve()
    if resolved != manifest.root and manifest.root not in resolved.parents:
        raise VolvqaInputError(manifest.path, f"{what} resolves outside the dataset root (symlink to {resolved})")


#: Folders that are never a dataset root: a root there (or a link to one)
#: would let a layout's globs and a CSV's paths reach the whole system.
_SYSTEM_DIRS = ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin",
                "/sys", "/usr", "/var")


def check_root(m: Manifest) -> None:
    """Refuse a dataset root that resolves to the file system's root or a system folder."""
    if m.root.as_posix() in _SYSTEM_DIRS or m.root == Path(m.root.anchor):
        raise VolvqaInputError(m.path, f"dataset root resolves to {m.root}, which is not a dataset folder "
                               "(a link to a system folder?)")


def assign_split(case_id: str, seed: int, ratios: dict[str, float]) -> str:
    """Deterministic split from the case id and seed alone (stable as cases are added)."""
    h = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    acc = 0.0
    names = list(ratios)
    for name in names:
        acc += ratios[name]
        if u < acc:
            return name
    return names[-1]


def load_cases(manifest: Manifest | str | os.PathLike) -> list[Case]:
    """All cases of a manifest, with their split, in case-id order."""
    from volvqa.datasets.layouts import LAYOUTS
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    if not m.root.is_dir():
        raise VolvqaInputError(m.path, f"dataset root {m.root} is not a folder")
    check_root(m)
    cases = LAYOUTS[m.layout](m)
    seen = set()
    for c in cases:
        check_case_id(c.case_id, m.path)
        if c.case_id in seen:
            raise VolvqaInputError(m.path, f"case id {c.case_id!r} appears twice")
        seen.add(c.case_id)
        c.split = assign_split(c.case_id, m.seed, m.splits)
    return sorted(cases, key=lambda c: c.case_id)


def cases_for(m: Manifest) -> list[Case]:
    """Cases of a manifest; for a generating manifest, the cases it will generate."""
    gen = m.options.get("generate")
    if not gen:
        return load_cases(m)
    from volvqa.synth.dataset import KINDS, case_prefix
    kind = str(gen.get("kind", "abdomen"))
    if kind not in KINDS:
        raise VolvqaInputError(m.path, f"generate: unknown phantom kind {shown(kind)}; choose from {', '.join(KINDS)}")
    out = []
    for i in range(int(gen["n"])):
        cid = f"{case_prefix(kind)}_{i:04d}"
        d = m.root / cid
        out.append(Case(cid, d / "ct.nii.gz", [d / "seg.nii.gz", d / "parts.nii.gz"], ["canonical", "volvqa_parts"],
                        split=assign_split(cid, m.seed, m.splits),
                        extra={"generate": {"index": i, "seed": int(gen.get("seed", 0)), "kind": kind,
                                            "lesions": bool(gen.get("lesions", True))}}))
    return out
