"""Builders for test inputs: real NIfTI and DICOM files written on the fly."""
from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

REPO = Path(__file__).resolve().parents[1]
REAL_CT = REPO.parent / "shared" / "data" / "real_ct"


def write_nii(path, array, affine=None, *, slope=None, inter=None, dtype=None):
    affine = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(np.asarray(array) if dtype is None else np.asarray(array).astype(dtype), affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    if slope is not None:
        img.header.set_slope_inter(slope, inter or 0)
    nib.save(img, str(path))
    return Path(path)


def reorder_on_disk(array, affine, perm, flips):
    """The same image stored with axes permuted by ``perm`` and then flipped.

    Returns (array_on_disk, affine_on_disk) so that every voxel keeps its
    world position.
    """
    a = np.transpose(array, perm)
    aff = affine.copy()
    aff[:, :3] = affine[:, list(perm)]
    for ax, f in enumerate(flips):
        if f:
            n = a.shape[ax]
            a = np.flip(a, axis=ax)
            aff[:, 3] = aff @ np.array([*(n - 1 if i == ax else 0 for i in range(3)), 1.0])
            aff[:, ax] = -aff[:, ax]
    return np.ascontiguousarray(a), aff


def all_orientations():
    for perm in itertools.permutations(range(3)):
        for flips in itertools.product([False, True], repeat=3):
            yield perm, flips


def ct_phantom(shape=(40, 36, 24), seed=0):
    """Air around a soft-tissue ellipsoid with a denser core: plausible CT HU."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    body = x**2 / 0.8**2 + y**2 / 0.7**2 + z**2 / 0.95**2 < 1
    hu = np.full(shape, -1000, dtype=np.int16)
    hu[body] = 40
    hu[(x - 0.2)**2 + y**2 + z**2 < 0.1] = 300
    hu = hu + rng.integers(-5, 6, size=shape).astype(np.int16)
    return hu


def write_dicom_series(folder, hu_xyz, *, spacing=(0.8, 0.8, 2.5), origin=(-100.0, -120.0, 50.0),
                       iop=(1, 0, 0, 0, 1, 0), series_uid=None, slope=1.0, intercept=-1024.0,
                       shuffle_names=True, compress_rle=False, skip_slices=(), duplicate_slice=None,
                       modality="CT", seed=0, per_slice_iop=None):
    """Write ``hu_xyz`` (column, row, slice order) as a classic DICOM series.

    Positions follow ``origin + k * spacing[2] * normal`` in LPS. File names
    and InstanceNumbers are scrambled so that only positions give the order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    n = hu_xyz.shape[2]
    ks = [k for k in range(n) if k not in set(skip_slices)]
    if duplicate_slice is not None:
        ks.append(duplicate_slice)
    names = rng.permutation(len(ks)) if shuffle_names else np.arange(len(ks))
    stored = np.rint((hu_xyz.astype(np.float64) - intercept) / slope)
    for idx, k in enumerate(ks):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.SeriesInstanceUID = series_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesDescription = "test series"
        ds.InstanceNumber = int(rng.integers(1, 10000))
        this_iop = per_slice_iop(k) if per_slice_iop else iop
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in this_iop]
        pos = np.asarray(origin) + k * spacing[2] * normal
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.4f}"
        ds.Rows, ds.Columns = hu_xyz.shape[1], hu_xyz.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if stored.min() < 0 else 0
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        dt = np.int16 if ds.PixelRepresentation else np.uint16
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T.astype(dt)).tobytes()
        if compress_rle:
            ds.compress(RLELossless)
        ds.save_as(folder / f"IM{names[idx]:04d}.dcm", enforce_file_format=True)
    return series_uid


def gzip_bytes(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=0)


# VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a large
# pytest worker would report the worker's peak.
_MEASURED_CLI = """
import atexit, os, sys
def _peak():
    hwm = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
    open(os.environ["VOLVQA_TEST_PEAK"], "w").write(hwm.split()[1])
atexit.register(_peak)
sys.argv[0] = "volvqa"
from volvqa.cli import main
main()
"""


def run_cli_measured(args, tmp, *, env=None, timeout=120):
    """``volvqa ARGS`` in a process of its own: (completed process, its peak resident memory in MiB)."""
    import os
    import subprocess
    import sys
    peak = Path(tmp) / f".peak-{os.getpid()}-{len(list(Path(tmp).glob('.peak-*')))}"
    r = subprocess.run([sys.executable, "-c", _MEASURED_CLI, *map(str, args)], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=timeout,
                       env={**os.environ, **(env or {}), "VOLVQA_TEST_PEAK": str(peak)})
    mib = int(peak.read_text()) / 1024 if peak.is_file() else float("nan")
    peak.unlink(missing_ok=True)
    return r, mib


def files_under(folder) -> set[str]:
    """Every file and folder under ``folder`` (relative paths), links not followed."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}
