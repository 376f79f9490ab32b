"""NIfTI reading and writing.

The header is read and checked before any voxel data is decompressed (a
decompression-bomb guard); ``.nii.gz`` is inflated with isal (igzip) when it
is installed, several times faster than zlib, else with the standard gzip.
"""
from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from volvqa.errors import VolvqaInputError
from volvqa.io.atomic import write_bytes_atomic
from volvqa.io.validate import check_affine, check_shape

try:  # optional accelerator
    from isal import igzip as _igzip
    from isal import isal_zlib as _isal_zlib
    _isal_errors: tuple = (_isal_zlib.error,)
except ImportError:  # pragma: no cover - exercised when isal is absent
    _igzip = _isal_zlib = None
    _isal_errors = ()

GZIP_MAGIC = b"\x1f\x8b"
#: Header plus extensions before the voxels: real files hold a few KiB.
MAX_VOX_OFFSET = 64 * 2**20


def _inflate_bounded(path: Path, raw: bytes, need: int, use_isal: bool) -> bytes:
    """The gzip stream's first ``need`` bytes; an error if it holds more (a decompression
    bomb, or data that is not this header's) or fewer. Every gzip member is read."""
    zlib_mod = _isal_zlib if (use_isal and _isal_zlib is not None) else zlib
    parts, have, data = [], 0, raw
    try:
        while data[:2] == GZIP_MAGIC:
            d = zlib_mod.decompressobj(wbits=31)
            # One call, bounded one byte past what the header allows: a bomb stops there.
            chunk = d.decompress(data, need + 1 - have)
            parts.append(chunk)
            have += len(chunk)
            if have > need or (not d.eof and d.unconsumed_tail):
                raise VolvqaInputError(path, f"gzip stream inflates to more than the {need} bytes its header's "
                                       "shape and type allow (a decompression bomb?)")
            if not d.eof:
                raise EOFError("compressed stream ended before its end marker")
            data = d.unused_data
    except (OSError, EOFError, zlib.error, *_isal_errors) as e:
        raise VolvqaInputError(path, f"corrupt or truncated gzip ({_reason(e)})") from None
    return parts[0] if len(parts) == 1 else b"".join(parts)


def isal_available() -> bool:
    return _igzip is not None


def _open_stream(path: Path, raw_head: bytes, use_isal: bool):
    if raw_head[:2] == GZIP_MAGIC:
        if use_isal and _igzip is not None:
            return _igzip.open(path, "rb")
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_header(path: str | os.PathLike, *, use_isal: bool = True) -> nib.Nifti1Header:
    """Read and parse only the NIfTI header (NIfTI-1 or -2)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    try:
        with _open_stream(path, head, use_isal) as f:
            hdr_bytes = f.read(540)
    except (OSError, EOFError, zlib.error, *_isal_errors) as e:
        raise VolvqaInputError(path, f"corrupt gzip stream ({_reason(e)})") from None
    return _parse_header(path, hdr_bytes)


def _reason(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _parse_header(path: Path, hdr_bytes: bytes):
    if len(hdr_bytes) < 348:
        raise VolvqaInputError(path, f"not a NIfTI file: only {len(hdr_bytes)} header bytes")
    for endian in ("<", ">"):
        sizeof_hdr = struct.unpack(endian + "i", hdr_bytes[:4])[0]
        if sizeof_hdr in (348, 540):
            break
    else:
        raise VolvqaInputError(path, "not a NIfTI file (bad header size field)")
    klass = nib.Nifti1Header if sizeof_hdr == 348 else nib.Nifti2Header
    if len(hdr_bytes) < sizeof_hdr:
        raise VolvqaInputError(path, "truncated NIfTI header")
    try:
        hdr = klass.from_fileobj(io.BytesIO(hdr_bytes[:sizeof_hdr]), check=False)
    except Exception as e:  # nibabel raises several types for junk headers
        raise VolvqaInputError(path, f"not a valid NIfTI header ({_reason(e)})") from None
    magic = bytes(hdr["magic"]).rstrip(b"\x00")
    if magic not in (b"n+1", b"ni1", b"n+2", b"ni2"):
        raise VolvqaInputError(path, f"not a NIfTI file (magic {magic!r})")
    if magic in (b"ni1", b"ni2"):
        raise VolvqaInputError(path, "two-file NIfTI (.hdr/.img) is not supported; convert to .nii.gz")
    # nibabel decodes fields lazily and raises what it likes on junk: decode them all here, once.
    try:
        hdr.get_data_dtype()
    except Exception:  # noqa: BLE001
        raise VolvqaInputError(path, f"unknown NIfTI datatype code {int(hdr['datatype'])}") from None
    try:
        hdr.get_data_shape(), hdr.get_data_offset(), hdr.get_slope_inter()
        with np.errstate(all="ignore"):
            hdr.get_best_affine()
    except Exception as e:  # noqa: BLE001
        raise VolvqaInputError(path, f"invalid NIfTI header ({type(e).__name__}: {_reason(e)[:120]})") from None
    return hdr


def read_nifti(path: str | os.PathLike, *, max_voxels: int, use_isal: bool = True
               ) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """Read a NIfTI file: (scaled data as stored on disk, affine (RAS mm), header).

    Data keep the on-disk voxel order; scl_slope/scl_inter are applied.
    """
    path = Path(path)
    if not path.exists():
        raise VolvqaInputError(path, "file not found")
    if path.is_dir():
        raise VolvqaInputError(path, "is a folder, not a NIfTI file")
    size = path.stat().st_size
    if size == 0:
        raise VolvqaInputError(path, "empty file (0 bytes)")
    hdr = read_header(path, use_isal=use_isal)
    shape = tuple(int(s) for s in hdr.get_data_shape())
    check_shape(path, shape, max_voxels)
    dtype = hdr.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "iuf":
        raise VolvqaInputError(path, f"unsupported voxel type {dtype} (RGB or complex?)")
    zooms = np.asarray(hdr["pixdim"][1:4], dtype=float)
    scode = int(hdr["sform_code"])
    if (scode == 0) and np.any(zooms <= 0):
        raise VolvqaInputError(path, f"zero or negative voxel spacing in pixdim {zooms.tolist()}")
    affine = hdr.get_best_affine()
    check_affine(path, affine)

    offset = int(hdr.get_data_offset())
    if offset < 0:
        raise VolvqaInputError(path, f"negative vox_offset {offset}")
    if offset > MAX_VOX_OFFSET:
        raise VolvqaInputError(path, f"vox_offset {offset} is implausibly large (extensions over "
                               f"{MAX_VOX_OFFSET // 2**20} MiB)")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    # Read (inflate) no more than the header's shape and type need, so that a
    # small file cannot expand to gigabytes: one bounded pass, then wrap.
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == GZIP_MAGIC:
        raw = _inflate_bounded(path, raw, offset + nbytes, use_isal)
    if len(raw) < offset + nbytes:
        raise VolvqaInputError(path, f"truncated voxel data: {len(raw) - offset} of {nbytes} bytes")
    data = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=offset)
    data = data.reshape(shape, order="F")
    data = data.reshape(shape[:3], order="F")
    slope, inter = hdr.get_slope_inter()
    if slope is not None and (slope != 1 or (inter or 0) != 0):
        if slope == 0:
            raise VolvqaInputError(path, "scl_slope is 0: every voxel would be the same value")
        if not (np.isfinite(slope) and np.isfinite(inter or 0)):
            raise VolvqaInputError(path, f"scl_slope / scl_inter {slope} / {inter} are not finite")
        if dtype.kind in "iu" and float(slope).is_integer() and float(inter or 0).is_integer() \
                and abs(slope) < 2**31 and abs(inter or 0) < 2**31:
            data = data.astype(np.int64) * int(slope) + int(inter or 0)
        else:
            data = data.astype(np.float64) * slope + (inter or 0)
    return data, affine, hdr


def encode_nifti(array: np.ndarray, affine: np.ndarray, *, compress: bool, level: int = 6) -> bytes:
    """NIfTI-1 bytes for ``array``; gzip stream has mtime 0 so equal input gives equal bytes."""
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    raw = img.to_bytes()
    if not compress:
        return raw
    if _igzip is not None:
        return _igzip.compress(raw, compresslevel=min(level, 3), mtime=0)
    return gzip.compress(raw, compresslevel=level, mtime=0)


def write_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray) -> None:
    """Write atomically; ``.gz`` suffix chooses compression."""
    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise VolvqaInputError(path, "output must end in .nii or .nii.gz")
    if not path.parent.exists():
        raise VolvqaInputError(path, "output folder does not exist")
    write_bytes_atomic(path, encode_nifti(array, affine, compress=path.name.endswith(".gz")))
