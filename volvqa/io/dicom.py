"""DICOM series reading: group by series, sort by position along the slice
normal, check geometry, decode, rescale to HU.

Slices are never ordered by file name or InstanceNumber: only by
ImagePositionPatient projected on the normal of ImageOrientationPatient.
"""
from __future__ import annotations

import io
import os
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from volvqa.errors import VolvqaInputError
from volvqa.io.orientation import LPS_TO_RAS

#: What to install for each compressed transfer syntax (pydicom's plugins).
DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.81": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",
}
#: Tolerance on slice steps, relative to the nominal step.
SPACING_RTOL = 0.01
ORIENTATION_ATOL = 1e-3


@dataclass
class _Slice:
    name: str
    ds: pydicom.Dataset
    position_mm: float = 0.0


def _iter_files(path: Path):
    """Yield (display name, file-like or path) for every file in a folder or zip."""
    if path.is_dir():
        for root, _dirs, files in os.walk(path):
            for fn in sorted(files):
                yield os.path.relpath(os.path.join(root, fn), path), os.path.join(root, fn)
        return
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise VolvqaInputError(path, f"not a readable zip archive ({e})") from None
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            try:
                data = zf.read(info)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                raise VolvqaInputError(path, f"corrupt zip member {info.filename} ({e})") from None
            yield info.filename, io.BytesIO(data)


def _zip_size_guard(path: Path, max_voxels: int) -> None:
    """Reject zips that would inflate to far more than max_voxels int16 voxels."""
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, OSError) as e:
        raise VolvqaInputError(path, f"not a readable zip archive ({e})") from None
    limit = max_voxels * 2 * 2 + (64 << 20)
    if total > limit:
        raise VolvqaInputError(path, f"zip inflates to {total} bytes, more than the "
                               f"{limit}-byte limit that --max-voxels implies")


def read_slices(path: Path) -> tuple[dict[str, list[_Slice]], int]:
    """All image slices by SeriesInstanceUID, and the number of files skipped."""
    series: dict[str, list[_Slice]] = defaultdict(list)
    skipped = 0
    for name, src in _iter_files(path):
        try:
            ds = pydicom.dcmread(src, defer_size="1 KB")
        except Exception:  # noqa: BLE001 - pydicom raises many types on junk (BytesLengthException, ...)
            skipped += 1  # not DICOM (README, DICOMDIR index, junk): ignore
            continue
        if "PixelData" not in ds:
            skipped += 1
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        series[uid].append(_Slice(name, ds))
    return series, skipped


def describe_series(series: dict[str, list[_Slice]]) -> str:
    parts = []
    for uid, sl in sorted(series.items()):
        ds = sl[0].ds
        desc = str(ds.get("SeriesDescription", "") or "").strip()
        mod = str(ds.get("Modality", "") or "?")
        parts.append(f"{uid or '(no SeriesInstanceUID)'} ({mod}, {len(sl)} slices{', ' + desc if desc else ''})")
    return "; ".join(parts)


def _floats(ds, tag: str, n: int, where) -> np.ndarray:
    v = ds.get(tag)
    if v is None:
        raise VolvqaInputError(where, f"slice lacks {tag}")
    try:
        arr = np.asarray([float(x) for x in v], dtype=float)
    except (TypeError, ValueError):
        raise VolvqaInputError(where, f"slice has an unreadable {tag} ({v!r})") from None
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise VolvqaInputError(where, f"slice has an invalid {tag} ({v!r})")
    return arr


def _check_decoder(path: Path, ds: pydicom.Dataset) -> None:
    tsuid = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if not tsuid:
        return
    uid = pydicom.uid.UID(tsuid)
    if not uid.is_compressed:
        return
    try:
        from pydicom.pixels import get_decoder
        decoder = get_decoder(uid)
    except (NotImplementedError, ValueError):
        raise VolvqaInputError(path, f"transfer syntax {uid.name} ({uid}) is not supported by "
                               "any pixel decoder") from None
    if not decoder.is_available:
        pkg = DECODER_PACKAGES.get(str(uid), "pylibjpeg")
        raise VolvqaInputError(path, f"pixel data use the compressed transfer syntax {uid.name} "
                               f"({uid}) and no decoder is installed: pip install {pkg}")


def read_series(path: str | os.PathLike, *, series_uid: str | None = None, max_voxels: int
                ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read one DICOM series from a folder or zip.

    Returns (HU array in (column, row, slice) order as float64 or int64,
    affine in RAS mm, meta). The caller brings it to canonical order.
    """
    path = Path(path)
    if path.is_file():
        _zip_size_guard(path, max_voxels)
    series, skipped = read_slices(path)
    series_uid = _pick_series(path, series, series_uid, skipped)
    slices = series[series_uid]
    first = slices[0].ds
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise VolvqaInputError(path, "multi-frame (enhanced) DICOM is not supported; "
                               "convert it to a classic series or NIfTI (dcm2niix)")
    if len(slices) < 2:
        raise VolvqaInputError(path, "series has a single slice: not a 3D volume")

    iop = _floats(first, "ImageOrientationPatient", 6, path)
    rows, cols = int(first.Rows), int(first.Columns)
    pix = _floats(first, "PixelSpacing", 2, path)
    if np.any(pix <= 0):
        raise VolvqaInputError(path, f"zero or negative PixelSpacing {pix.tolist()}")
    row_cos, col_cos = iop[:3], iop[3:]
    normal = np.cross(row_cos, col_cos)
    if np.linalg.norm(normal) < 0.5:
        raise VolvqaInputError(path, f"singular ImageOrientationPatient {iop.tolist()}")
    normal /= np.linalg.norm(normal)
    slices, ipps = _ordered_slices(path, slices, iop, rows, cols, pix, normal)
    n = len(slices)
    if rows * cols * n > max_voxels:
        raise VolvqaInputError(path, f"series has {rows * cols * n} voxels, more than the limit of {max_voxels} "
                               "(raise the limit, or set VOLVQA_MAX_VOXELS)", param="max_voxels")
    _check_decoder(path, first)
    hu = _pixels_hu(path, slices, rows, cols)

    # Affine in LPS: x index walks along a row (row_cos), y down a column.
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_cos * pix[1]
    affine_lps[:3, 1] = col_cos * pix[0]
    affine_lps[:3, 2] = (ipps[-1] - ipps[0]) / (n - 1)
    affine_lps[:3, 3] = ipps[0]
    in_plane = affine_lps[:3, 2] - normal * (affine_lps[:3, 2] @ normal)
    meta = {
        "format": "dicom",
        "series_uid": series_uid or None,
        "frame_of_reference_uid": str(first.get("FrameOfReferenceUID", "") or "") or None,
        "modality": str(first.get("Modality", "") or ""),
        "series_description": str(first.get("SeriesDescription", "") or ""),
        "transfer_syntax": str(getattr(getattr(first, "file_meta", None), "TransferSyntaxUID", "") or ""),
        "n_slices": n,
        "files_skipped": skipped,
        "gantry_tilt_shear_mm": float(np.linalg.norm(in_plane)),
        # A contrast agent named in the header: enhanced, phase not stated (its absence proves nothing).
        "phase": "contrast" if str(first.get("ContrastBolusAgent", "") or "").strip() else "unknown",
    }
    return hu, LPS_TO_RAS @ affine_lps, meta


def _pick_series(path: Path, series: dict, series_uid: str | None, skipped: int) -> str:
    if not series:
        raise VolvqaInputError(path, f"no DICOM image files found ({skipped} other files skipped)")
    if series_uid is None:
        if len(series) > 1:
            raise VolvqaInputError(path, f"holds {len(series)} DICOM series; pick one with "
                                   f"--series-uid / series_uid=: {describe_series(series)}")
        return next(iter(series))
    if series_uid not in series:
        raise VolvqaInputError(path, f"no series with SeriesInstanceUID {series_uid}; found: "
                               f"{describe_series(series)}")
    return series_uid


def _ordered_slices(path: Path, slices: list[_Slice], iop, rows: int, cols: int, pix, normal
                    ) -> tuple[list[_Slice], np.ndarray]:
    """Slices sorted along the normal with their positions (mm, LPS), after checking that they share
    orientation, size and pixel spacing and are evenly spaced (a gap names the missing positions)."""
    ipps = []
    for s in slices:
        other = _floats(s.ds, "ImageOrientationPatient", 6, path)
        if not np.allclose(other, iop, atol=ORIENTATION_ATOL):
            raise VolvqaInputError(path, f"slices have more than one orientation: {s.name} has "
                                   f"{np.round(other, 4).tolist()}, {slices[0].name} has "
                                   f"{np.round(iop, 4).tolist()}")
        if int(s.ds.Rows) != rows or int(s.ds.Columns) != cols:
            raise VolvqaInputError(path, f"slices differ in size: {s.name} is "
                                   f"{s.ds.Rows}x{s.ds.Columns}, expected {rows}x{cols}")
        if not np.allclose(_floats(s.ds, "PixelSpacing", 2, path), pix, rtol=1e-4):
            raise VolvqaInputError(path, f"slices differ in PixelSpacing ({s.name})")
        ipp = _floats(s.ds, "ImagePositionPatient", 3, path)
        ipps.append(ipp)
        s.position_mm = float(ipp @ normal)
    order = np.argsort([s.position_mm for s in slices], kind="stable")
    slices = [slices[i] for i in order]
    pos = np.asarray([s.position_mm for s in slices])
    _check_spacing(path, slices, pos)
    return slices, np.asarray([ipps[i] for i in order])


def _check_spacing(path: Path, slices: list[_Slice], pos: np.ndarray) -> None:
    steps = np.diff(pos)
    nominal = float(np.median(steps))
    dup = np.nonzero(steps <= max(1e-3, SPACING_RTOL * abs(nominal)))[0]
    if nominal <= 1e-3 or dup.size:
        i = int(dup[0]) if dup.size else 0
        listed = ", ".join(f"{pos[j]:.3f} mm ({slices[j].name}, {slices[j + 1].name})" for j in dup[:5])
        raise VolvqaInputError(path, f"duplicate slice positions along the normal: {listed or pos[i]}")
    bad = np.nonzero(np.abs(steps - nominal) > SPACING_RTOL * nominal)[0]
    if bad.size:
        missing = []
        for j in bad:
            k = steps[j] / nominal
            if abs(k - round(k)) < 0.05 and round(k) >= 2:
                missing += [pos[j] + m * nominal for m in range(1, int(round(k)))]
        if missing and len(missing) == int(sum(round(steps[j] / nominal) - 1 for j in bad)):
            listed = ", ".join(f"{p:.3f}" for p in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise VolvqaInputError(path, f"uneven slice spacing: missing slice positions {listed}{more} mm "
                                   f"along the normal (step {nominal:.3f} mm)")
        raise VolvqaInputError(path, f"uneven slice spacing: steps from {steps.min():.3f} to "
                               f"{steps.max():.3f} mm along the normal (nominal {nominal:.3f} mm)")


def _pixels_hu(path: Path, slices: list[_Slice], rows: int, cols: int) -> np.ndarray:
    """HU (column, row, slice): stored values through each slice's rescale; int64 when every rescale is
    integral (no float rounding of integer HU), else float64."""
    hu = np.empty((cols, rows, len(slices)), dtype=np.float64)
    int_ok = True
    for k, s in enumerate(slices):
        try:
            px = s.ds.pixel_array
        except Exception as e:  # decoders raise many types on corrupt data
            raise VolvqaInputError(path, f"cannot decode pixel data of {s.name} "
                                   f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        if px.shape != (rows, cols):
            raise VolvqaInputError(path, f"{s.name}: pixel data shape {px.shape}, expected {(rows, cols)}")
        slope = float(s.ds.get("RescaleSlope", 1) or 1)
        inter = float(s.ds.get("RescaleIntercept", 0) or 0)
        int_ok &= slope.is_integer() and inter.is_integer()
        hu[:, :, k] = px.T.astype(np.float64) * slope + inter
    if int_ok:
        lo, hi = hu.min(), hu.max()
        if -2**62 < lo and hi < 2**62:
            hu = hu.astype(np.int64)
    return hu
