"""A corpus of bad inputs, generated here: each gives one line on stderr naming
the file and the problem, exit status 2, and no output file."""
import gzip
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.uid import JPEG2000Lossless

from tests.helpers import ct_phantom, write_dicom_series, write_nii
from volvqa.cli import main
from volvqa.errors import VolvqaInputError


def _ok_nii(d: Path) -> Path:
    return write_nii(d / "ok.nii.gz", ct_phantom((16, 16, 8)))


def _header_only(d: Path, name: str, shape, dtype=np.int16, pixdim=None, sform=None, extra=b"") -> Path:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    if pixdim is not None:
        hdr["pixdim"][1:4] = pixdim
    if sform is not None:
        hdr.set_sform(sform, code=1)
    p = d / name
    p.write_bytes(hdr.binaryblock + b"\0" * 4 + extra)
    return p


def missing(d):
    return d / "nope.nii.gz", "file not found"


def empty_file(d):
    p = d / "empty.nii.gz"
    p.write_bytes(b"")
    return p, "empty file"


def truncated_gzip(d):
    raw = _ok_nii(d).read_bytes()
    p = d / "trunc.nii.gz"
    p.write_bytes(raw[: len(raw) // 2])
    return p, "gzip"


def corrupt_gzip(d):
    raw = bytearray(_ok_nii(d).read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[i] ^= 0x5A
    p = d / "corrupt.nii.gz"
    p.write_bytes(bytes(raw))
    return p, "gzip"


def gzip_of_text(d):
    p = d / "text.nii.gz"
    p.write_bytes(gzip.compress(b"hello, I am not an image\n" * 40))
    return p, "not a NIfTI"


def plain_text_nii(d):
    p = d / "text.nii"
    p.write_text("just some words\n" * 50)
    return p, "not a NIfTI"


def image_2d(d):
    return write_nii(d / "2d.nii.gz", np.full((20, 20), -1000, np.int16)), "not a 3D image"


def image_4d(d):
    return write_nii(d / "4d.nii.gz", np.full((10, 10, 10, 3), -1000, np.int16)), "not a 3D image"


def nan_values(d):
    a = ct_phantom((12, 12, 6)).astype(np.float32)
    a[3, 3, 3] = np.nan
    return write_nii(d / "nan.nii.gz", a), "NaN"


def inf_values(d):
    a = ct_phantom((12, 12, 6)).astype(np.float32)
    a[3, 3, 3] = np.inf
    return write_nii(d / "inf.nii.gz", a), "Inf"


def zero_spacing(d):
    aff = np.diag([1.0, 0.0, 1.0, 1.0])
    p = _header_only(d, "zero.nii", (4, 4, 4), sform=aff, extra=b"\0" * 128)
    return p, "zero voxel spacing"


def negative_spacing(d):
    p = _header_only(d, "neg.nii", (4, 4, 4), pixdim=[1.0, -2.0, 1.0], extra=b"\0" * 128)
    return p, "negative voxel spacing"


def singular_affine(d):
    aff = np.array([[1.0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
    aff[2, 0] = aff[2, 1] = 0
    aff[:3, 1] = aff[:3, 0]  # two parallel axes
    p = _header_only(d, "sing.nii", (4, 4, 4), sform=aff, extra=b"\0" * 128)
    return p, "singular affine"


def empty_image(d):
    p = _header_only(d, "zero_dim.nii", (4, 0, 4))
    return p, "empty image"


def mr_intensities(d):
    a = np.random.default_rng(1).integers(0, 2000, size=(16, 16, 8)).astype(np.int16)
    return write_nii(d / "mr.nii.gz", a), "not plausible CT HU"


def too_many_voxels(d):
    return _header_only(d, "huge.nii", (30000, 30000, 30000)), "more than the limit"


def int16_overflow(d):
    a = np.full((12, 12, 6), 1000, np.int16)
    a[0] = -30  # scaled: -3000 (air), and 100000 for the rest
    return write_nii(d / "ovf.nii.gz", a, slope=100, inter=0), "overflow int16"


def truncated_voxels(d):
    raw = write_nii(d / "full.nii", ct_phantom((16, 16, 8))).read_bytes()
    p = d / "short.nii"
    p.write_bytes(raw[:600])
    return p, "truncated voxel data"


def rgb_nifti(d):
    rgb = np.zeros((8, 8, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    return write_nii(d / "rgb.nii.gz", rgb), "unsupported voxel type"


def unsupported_extension(d):
    p = d / "scan.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    return p, "unsupported input"


def not_a_zip(d):
    p = d / "series.zip"
    p.write_text("not a zip")
    return p, "not a readable zip"


def dicom_folder_without_dicom(d):
    f = d / "nodicom"
    f.mkdir()
    (f / "a.txt").write_text("x")
    return f, "no DICOM image files"


def single_dicom_file(d):
    write_dicom_series(d / "s", ct_phantom((8, 8, 4)))
    return sorted((d / "s").iterdir())[0], "single DICOM file"


def dicom_missing_slice(d):
    write_dicom_series(d / "gap", ct_phantom((8, 8, 10)), skip_slices=(4, 5))
    return d / "gap", "missing slice positions"


def dicom_duplicate_slice(d):
    write_dicom_series(d / "dup", ct_phantom((8, 8, 6)), duplicate_slice=2)
    return d / "dup", "duplicate slice positions"


def dicom_two_series(d):
    write_dicom_series(d / "two" / "a", ct_phantom((8, 8, 4)))
    write_dicom_series(d / "two" / "b", ct_phantom((8, 8, 4)))
    return d / "two", "2 DICOM series"


def dicom_mixed_orientation(d):
    write_dicom_series(d / "mix", ct_phantom((8, 8, 6)),
                       per_slice_iop=lambda k: (1, 0, 0, 0, 1, 0) if k != 3 else (1, 0, 0, 0, 0.8, 0.6))
    return d / "mix", "more than one orientation"


def dicom_single_slice(d):
    write_dicom_series(d / "one", ct_phantom((8, 8, 1)))
    return d / "one", "single slice"


def dicom_hu_overflow(d):
    hu = ct_phantom((8, 8, 4)).astype(np.float64)
    write_dicom_series(d / "ovf", hu, slope=1.0, intercept=-1024.0)
    for f in (d / "ovf").iterdir():
        ds = pydicom.dcmread(f)
        ds.RescaleSlope = "100"
        ds.save_as(f)
    return d / "ovf", "overflow int16"


CORPUS = [missing, empty_file, truncated_gzip, corrupt_gzip, gzip_of_text, plain_text_nii, image_2d,
          image_4d, nan_values, inf_values, zero_spacing, negative_spacing, singular_affine, empty_image,
          mr_intensities, too_many_voxels, int16_overflow, truncated_voxels, rgb_nifti,
          unsupported_extension, not_a_zip, dicom_folder_without_dicom, single_dicom_file,
          dicom_missing_slice, dicom_duplicate_slice, dicom_two_series, dicom_mixed_orientation,
          dicom_single_slice, dicom_hu_overflow]


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 20


@pytest.mark.parametrize("make_bad", CORPUS, ids=[f.__name__ for f in CORPUS])
def test_bad_input_one_line_exit_2_no_output(tmp_path, make_bad):
    src = tmp_path / "in"
    src.mkdir()
    bad, expected = make_bad(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "ingested.nii.gz"
    res = CliRunner().invoke(main, ["ingest", str(bad), str(out)])
    assert res.exit_code == 2, res.output
    err_lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(err_lines) == 1, res.stderr
    assert err_lines[0].startswith("volvqa: error: ")
    assert str(bad) in err_lines[0]
    assert expected in err_lines[0]
    assert "Traceback" not in res.output
    assert list(out_dir.iterdir()) == []  # nothing written, no temp file left


def test_mask_errors_through_cli(tmp_path):
    ct = _ok_nii(tmp_path)
    far = write_nii(tmp_path / "far.nii.gz", np.ones((16, 16, 8), np.uint8),
                    affine=np.diag([1, 1, 1, 1.0]) + np.array([[0, 0, 0, 5000]] * 3 + [[0, 0, 0, 0]]))
    prob = write_nii(tmp_path / "prob.nii.gz", np.full((16, 16, 8), 0.3, np.float32))
    for mask, expected in [(far, "does not overlap"), (prob, "non-integer")]:
        store = tmp_path / f"store-{mask.stem}"
        res = CliRunner().invoke(main, ["cache", "--volume", str(ct), "--masks", str(mask),
                                        "--out", str(store)])
        assert res.exit_code == 2, res.output
        assert str(mask) in res.stderr and expected in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        assert not store.exists()


def test_real_process_exit_status_and_debug(tmp_path):
    bad = tmp_path / "text.nii"
    bad.write_text("nothing here\n" * 40)
    cmd = [sys.executable, "-m", "volvqa.cli", "info", str(bad)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "not a NIfTI" in r.stderr
    r = subprocess.run([sys.executable, "-m", "volvqa.cli", "--debug", "info", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" in r.stderr


HIDE_DECODERS = """
import sys
for m in ("pylibjpeg", "openjpeg", "libjpeg", "rle", "gdcm", "jpeg_ls", "PIL"):
    sys.modules[m] = None  # as on a machine where they are not installed
from volvqa.cli import main
from volvqa.errors import VolvqaInputError
main()
"""


def test_compressed_dicom_without_decoder_names_package(tmp_path):
    from pydicom.pixels import get_encoder
    if not get_encoder(JPEG2000Lossless).is_available:
        pytest.skip("no JPEG 2000 encoder (pylibjpeg-openjpeg) to make the test series")
    write_dicom_series(tmp_path / "j2k", ct_phantom((64, 64, 3)))
    for f in (tmp_path / "j2k").iterdir():
        ds = pydicom.dcmread(f)
        ds.compress(JPEG2000Lossless)
        ds.save_as(f, enforce_file_format=True)
    out = tmp_path / "out.nii.gz"
    # With decoders: it loads.
    r = subprocess.run([sys.executable, "-m", "volvqa.cli", "ingest", str(tmp_path / "j2k"), str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out.unlink()
    r = subprocess.run([sys.executable, "-c", HIDE_DECODERS, "ingest", str(tmp_path / "j2k"), str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "pip install pylibjpeg pylibjpeg-openjpeg" in r.stderr and str(tmp_path / "j2k") in r.stderr
    assert not out.exists()


def _gzip_bomb(path, inflated_mib: int, members: int = 1) -> Path:
    """A valid 8x8x8 int16 NIfTI header whose gzip stream inflates to ``inflated_mib`` MiB."""
    import zlib
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((8, 8, 8))
    hdr.set_data_dtype(np.int16)
    hdr.set_sform(np.eye(4), code=1)
    head = hdr.binaryblock + b"\0" * 4
    zeros = b"\0" * 2**20
    with open(path, "wb") as f:
        for m in range(members):
            c = zlib.compressobj(9, zlib.DEFLATED, 31)
            f.write(c.compress(head) if m == 0 else b"")
            for _ in range(inflated_mib // members):
                f.write(c.compress(zeros))
            f.write(c.flush())
    return Path(path)


@pytest.mark.parametrize("members", [1, 2])
def test_gzip_bomb_is_refused_while_reading(tmp_path, members):
    from tests.helpers import files_under, run_cli_measured
    bomb = _gzip_bomb(tmp_path / "bomb.nii.gz", 512, members)
    assert bomb.stat().st_size < 2**20
    (tmp_path / "out").mkdir()
    before = files_under(tmp_path)
    r, peak_mib = run_cli_measured(["ingest", bomb, tmp_path / "out" / "x.nii.gz"], tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bomb) in lines[0] and "decompression bomb" in lines[0], r.stderr
    assert files_under(tmp_path) == before
    assert peak_mib < 250, peak_mib   # the 512 MiB stream is never held (it was 1.1 GB; now about 100 MiB)


def test_gzip_of_exactly_the_header_size_in_two_members_reads(tmp_path):
    from volvqa.io.nifti import read_nifti
    ok = write_nii(tmp_path / "ok.nii", ct_phantom((8, 8, 8)))
    raw = ok.read_bytes()
    two = tmp_path / "two.nii.gz"
    two.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    data, _aff, _hdr = read_nifti(two, max_voxels=10**6)
    assert np.array_equal(data, ct_phantom((8, 8, 8)))
    longer = tmp_path / "longer.nii.gz"
    longer.write_bytes(gzip.compress(raw + b"\1" * 10))
    with pytest.raises(VolvqaInputError, match="more than"):
        read_nifti(longer, max_voxels=10**6)
