"""Seeded fuzzing of what volvqa reads from others: NIfTI headers, DICOM tags, manifests and
free-text questions. Every input must load, or fail with a one-line VolvqaInputError: no other
exception, no hang (5 s per input), and memory bounded across the run.

``make test`` runs 2,400 inputs (600 per family, in chunks spread over the workers);
``make bench`` runs ten times as many (``VOLVQA_FUZZ_SCALE=10``). A failure names the family,
the seed and the input, so it can be replayed alone.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import resource
import signal
import string
import zlib

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tests.helpers import ct_phantom, write_dicom_series, write_nii
from volvqa.errors import VolvqaInputError

SCALE = int(os.environ.get("VOLVQA_FUZZ_SCALE", "1"))
PER_FAMILY = 600 * SCALE
CHUNKS = 3
SECONDS_PER_INPUT = 5
#: Growth of the process's peak resident memory over one chunk (the inputs are tiny; a leak or a
#: bomb that slipped through would show here).
GROWTH_MIB = 300
MAX_VOXELS = 10**6


class Hang(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float):
    def _raise(*_):
        raise Hang(f"no result within {seconds} s")
    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _check(family: str, seed: int, shown: str, fn) -> str:
    """Run one input: 'ok' or 'refused'; anything else fails the test, naming the input."""
    try:
        with _deadline(SECONDS_PER_INPUT):
            fn()
        return "ok"
    except VolvqaInputError as e:
        msg = str(e)
        assert "\n" not in msg and "Traceback" not in msg and len(msg) <= 1000, (family, seed, shown, msg)
        return "refused"
    except Hang:
        pytest.fail(f"{family} seed {seed}: hung on {shown}")
    except Exception as e:  # noqa: BLE001 - any other exception is the bug this test hunts
        pytest.fail(f"{family} seed {seed}: {type(e).__name__}: {e} on {shown}")


def _run_family(family: str, chunk: int, make_and_load) -> dict:
    seeds = range(chunk * PER_FAMILY // CHUNKS, (chunk + 1) * PER_FAMILY // CHUNKS)
    before = _peak_mib()
    outcomes = {"ok": 0, "refused": 0}
    for seed in seeds:
        rng = np.random.default_rng([zlib.crc32(family.encode()), seed])
        shown, fn = make_and_load(rng, seed)
        outcomes[_check(family, seed, shown, fn)] += 1
    assert _peak_mib() - before < GROWTH_MIB, (family, before, _peak_mib())
    return outcomes


# --- NIfTI headers ------------------------------------------------------------------------------------

_NIFTI_FIELDS = ["dim", "datatype", "bitpix", "pixdim", "vox_offset", "scl_slope", "scl_inter", "qform_code",
                 "sform_code", "srow_x", "srow_y", "srow_z", "quatern_b", "quatern_c", "quatern_d", "sizeof_hdr",
                 "magic", "dim_info", "xyzt_units"]
_NASTY = [0, -1, 1, 2, 3, 7, 8, 255, 256, 2**15 - 1, -2**15, 2**31 - 1, -2**31, 1e30, -1e30, float("nan"),
          float("inf"), -float("inf"), 1e-30, 0.5]


def _nifti_bytes(rng) -> bytes:
    shape = tuple(int(x) for x in rng.integers(1, 9, size=3))
    img = nib.Nifti1Image(ct_phantom((max(shape[0], 2), max(shape[1], 2), max(shape[2], 2))), np.eye(4))
    hdr = img.header
    for _ in range(int(rng.integers(1, 4))):
        field = _NIFTI_FIELDS[int(rng.integers(len(_NIFTI_FIELDS)))]
        with contextlib.suppress(Exception):   # some values do not fit a field's type: leave it
            cur = np.asarray(hdr[field])
            if field == "magic":
                hdr[field] = rng.choice([b"n+1", b"ni1", b"n+2", b"xx1", b""])
            elif cur.shape:
                vals = cur.copy()
                vals[int(rng.integers(len(vals)))] = _NASTY[int(rng.integers(len(_NASTY)))]
                hdr[field] = vals
            else:
                hdr[field] = _NASTY[int(rng.integers(len(_NASTY)))]
    raw = bytearray(hdr.binaryblock + b"\0" * 4 + np.asarray(img.dataobj).tobytes(order="F"))
    kind = int(rng.integers(5))
    if kind == 1:          # flipped bytes anywhere
        for _ in range(int(rng.integers(1, 20))):
            raw[int(rng.integers(len(raw)))] = int(rng.integers(256))
    elif kind == 2:        # truncated
        raw = raw[: int(rng.integers(0, len(raw)))]
    elif kind == 3:        # trailing bytes
        raw += bytes(rng.integers(0, 256, size=int(rng.integers(1, 200)), dtype=np.uint8))
    return bytes(raw)


def _nifti_input(tmp_path, reference):
    def make(rng, seed):
        raw = _nifti_bytes(rng)
        gz = bool(rng.integers(2))
        p = tmp_path / f"f{seed}.nii{'.gz' if gz else ''}"
        data = gzip.compress(raw, mtime=0) if gz else raw
        if gz and rng.integers(4) == 0:   # a corrupt stream
            data = data[:10] + bytes(rng.integers(0, 256, size=len(data) - 10, dtype=np.uint8))
        p.write_bytes(data)
        as_labels = bool(rng.integers(3) == 0)

        def load():
            from volvqa.io import load_labelmap, load_volume
            try:
                if as_labels:
                    load_labelmap(p, "auto", reference=reference, max_voxels=MAX_VOXELS, ignore_unmapped=True)
                else:
                    load_volume(p, max_voxels=MAX_VOXELS, allow_non_ct=bool(rng.integers(2)))
            finally:
                p.unlink()
        return f"{'label map' if as_labels else 'CT'} {p.name} ({len(data)} bytes)", load
    return make


@pytest.fixture(scope="module")
def reference():
    import tempfile
    from pathlib import Path

    from volvqa.io import load_volume
    with tempfile.TemporaryDirectory() as d:
        return load_volume(write_nii(Path(d) / "ref.nii.gz", ct_phantom((8, 8, 8))))


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_fuzz_nifti_headers(tmp_path, reference, chunk):
    got = _run_family("nifti", chunk, _nifti_input(tmp_path, reference))
    assert got["ok"] > 0 and got["refused"] > 0, got   # the generator reaches both sides


# --- DICOM tags -------------------------------------------------------------------------------------

def _pick(options: list):
    return lambda r: options[int(r.integers(len(options)))]


_DICOM_TAGS = {
    "ImagePositionPatient": _pick([["a", "b", "c"], [1.0, 2.0], ["nan", "0", "0"], [1e300, 0, 0], []]),
    "ImageOrientationPatient": _pick([[0, 0, 0, 0, 0, 0], [1, 0, 0, 1, 0, 0], ["x"] * 6, [1, 0, 0]]),
    "PixelSpacing": _pick([[0, 0], [-1, 1], ["nan", "1"], [1], [1e-9, 1e-9]]),
    "SliceThickness": _pick(["0", "-3", "abc", ""]),
    "Rows": _pick([0, 1, 7, 9, 65535]),
    "Columns": _pick([0, 1, 7, 9, 65535]),
    "BitsAllocated": _pick([0, 1, 8, 12, 32, 64]),
    "BitsStored": _pick([0, 1, 8, 17, 40]),
    "PixelRepresentation": _pick([0, 1, 2]),
    "SamplesPerPixel": _pick([0, 3, 4]),
    "RescaleSlope": _pick(["0", "nan", "1e30", "-1", "x"]),
    "RescaleIntercept": _pick(["nan", "1e30", "-32768", "x"]),
    "Modality": _pick(["MR", "", "SEG", "RTSTRUCT"]),
    "SeriesInstanceUID": _pick(["", "1.2.3", "x" * 64]),
    "PixelData": _pick([b"", b"\0" * 7, b"\0" * 10**4]),
    "NumberOfFrames": _pick([0, 2, 1000]),
    "InstanceNumber": _pick(["", "-1", "x"]),
    "PhotometricInterpretation": _pick(["RGB", "PALETTE COLOR", ""]),
}


def _dicom_input(tmp_path):
    from pydicom import config
    base = tmp_path / "base"
    write_dicom_series(base, ct_phantom((8, 8, 3)))
    originals = {p.name: p.read_bytes() for p in sorted(base.iterdir())}

    def make(rng, seed):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        names = sorted(originals)
        edits = []
        for _ in range(int(rng.integers(1, 4))):
            tag = list(_DICOM_TAGS)[int(rng.integers(len(_DICOM_TAGS)))]
            which = names if rng.integers(2) else [names[int(rng.integers(len(names)))]]
            edits.append((tag, _DICOM_TAGS[tag](rng), which))
        old = config.settings.writing_validation_mode
        config.settings.writing_validation_mode = config.IGNORE
        try:
            for name in names:
                ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(originals[name]))
                for tag, value, which in edits:
                    if name in which:
                        with contextlib.suppress(Exception):
                            setattr(ds, tag, value)
                with contextlib.suppress(Exception):
                    ds.save_as(folder / name)
                if not (folder / name).exists():
                    (folder / name).write_bytes(originals[name][: int(rng.integers(0, 400))])
        finally:
            config.settings.writing_validation_mode = old
        if rng.integers(8) == 0:   # a truncated file among them
            victim = folder / names[0]
            victim.write_bytes(victim.read_bytes()[: int(rng.integers(0, 600))])

        def load():
            from volvqa.io import load_volume
            try:
                load_volume(folder, max_voxels=MAX_VOXELS, allow_non_ct=bool(rng.integers(2)))
            finally:
                for p in folder.iterdir():
                    p.unlink()
                folder.rmdir()
        return f"series with {[(t, repr(v)[:30], len(w)) for t, v, w in edits]}", load
    return make


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_fuzz_dicom_tags(tmp_path, chunk):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # pydicom warns about every invalid value it reads
        got = _run_family("dicom", chunk, _dicom_input(tmp_path))
    assert got["ok"] > 0 and got["refused"] > 0, got


# --- manifests ----------------------------------------------------------------------------------------

_KEYS = ["name", "layout", "root", "root_env", "labels", "splits", "seed", "license", "generate", "csv",
         "annotates", "qc", "phase", "segmenter", "require_agreement", "bogus", "Layout", "roots"]
_SCALARS = ["kits", "msd", "csv", "synthetic", "abdomenatlas", "totalsegmentator", "data", ".", "..", "/",
            "/etc", "../../..", "auto", "canonical", "totalsegmentator", 0, -1, 2**70, 1.5, "nan", True, None, "",
            "a" * 300, "~", "$HOME", "${X}", "liver", "portal venous", "exclude", "é", "\u202e", "\0"]


def _yaml_value(rng, depth=0):
    k = int(rng.integers(6 if depth < 3 else 1))
    if k == 0 or depth >= 3:
        v = _SCALARS[int(rng.integers(len(_SCALARS)))]
        return repr(v) if isinstance(v, str) and v and any(c in v for c in ":{}[]#&*!|>'\"%@`\0") else \
            ("''" if v == "" else str(v).lower() if isinstance(v, bool) else "null" if v is None else str(v))
    if k == 1:
        return "[" + ", ".join(_yaml_value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))) + "]"
    if k == 2:
        keys = ["train", "val", "test", "n", "seed", "kind", "lesions", "1", "2", "x"]
        return "{" + ", ".join(f"{keys[int(rng.integers(len(keys)))]}: {_yaml_value(rng, depth + 1)}"
                               for _ in range(int(rng.integers(0, 4)))) + "}"
    if k == 3:
        return rng.choice(["&a [1, 2]", "*a", "!!python/object:os.system", "{<<: *a}", "|\n  text", "!!binary aGk="])
    if k == 4:
        return "".join(rng.choice(list(string.printable), size=int(rng.integers(0, 30))))
    return f"{{train: {rng.random():.2f}, val: {rng.random():.2f}, test: {rng.random():.2f}}}"


def _manifest_input(tmp_path):
    data = tmp_path / "data"
    (data / "case_00001").mkdir(parents=True)
    write_nii(data / "case_00001" / "imaging.nii.gz", ct_phantom((8, 8, 8)))
    (data / "cases.csv").write_text("case_id,ct,masks\na,case_00001/imaging.nii.gz,\n../x,/etc/passwd,\n")
    (data / "dataset.json").write_text('{"labels": {"0": "bg", "x": 1}, "training": [{"image": 5}]}')

    def make(rng, seed):
        lines = []
        for _ in range(int(rng.integers(0, 8))):
            key = _KEYS[int(rng.integers(len(_KEYS)))]
            lines.append(f"{key}: {_yaml_value(rng)}")
        if rng.integers(3):
            lines += ["layout: " + str(rng.choice(["kits", "csv", "msd", "synthetic"])), "root: data"]
        text = "\n".join(lines) + "\n"
        if rng.integers(6) == 0:   # raw junk
            text = bytes(rng.integers(0, 256, size=int(rng.integers(0, 300)), dtype=np.uint8)).decode("latin-1")
        m = tmp_path / f"m{seed}.yaml"
        m.write_text(text, encoding="utf-8", errors="surrogateescape")

        def load():
            from volvqa.datasets.check import check_manifest
            from volvqa.datasets.manifest import load_manifest
            try:
                check_manifest(load_manifest(m), read_labels=False)
            finally:
                m.unlink()
        return f"manifest {text[:200]!r}", load
    return make


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_fuzz_manifests(tmp_path, chunk):
    got = _run_family("manifest", chunk, _manifest_input(tmp_path))
    assert got["refused"] > 0, got


# --- free-text questions ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def answerer_case():
    from volvqa.models.grounded import GroundedAnswerer
    from volvqa.synth.dataset import phantom_case
    _cid, v, lm, _t = phantom_case(10, 0)
    return v, GroundedAnswerer(lambda vol, item: lm, mode="free"), GroundedAnswerer(lambda vol, item: lm, mode="mc")


def _question_input(answerer_case):
    from volvqa.qa.freetext import VOCAB
    v, free, mc = answerer_case
    extra = ["what", "is", "the", "of", "in", "how", "which", "or", "and", "?", "/", "-", "a", "there", "any", "L/S",
             "segment", "VII", "S9", "99", "-3", "1e400", "ml", "cm", "%", "'", '"', "\u202e", "é", "\0", "\n",
             "lesion 999", "segment 0", "is there", "left or right"]
    words = list(VOCAB) + extra

    def make(rng, seed):
        n = int(rng.integers(0, 16))
        q = " ".join(str(rng.choice(words)) for _ in range(n))
        if rng.integers(20) == 0:
            q = q * 500   # very long
        elif rng.integers(20) == 0:
            q = "".join(chr(int(c)) for c in rng.integers(1, 0x3000, size=40))
        ans = mc if rng.integers(2) else free

        def load():
            item = {"qid": f"q{seed}", "case_id": "c", "question": q}
            if ans is mc:
                item["options"] = {"A": "yes", "B": "no", "C": "12.5", "D": "liver"}
            pred = ans.answer(v, item)
            assert isinstance(pred.answer, str) and "\n" not in pred.answer and "Traceback" not in pred.answer
        return f"question {q[:120]!r}", load
    return make


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_fuzz_free_text_questions(answerer_case, chunk):
    got = _run_family("question", chunk, _question_input(answerer_case))
    assert got["refused"] == 0, got   # a question is never "bad input": at worst "cannot answer: ..."
