"""Checks shared by every reader. Each raises VolvqaInputError with one line."""
from __future__ import annotations

import os

import numpy as np

from volvqa.errors import VolvqaInputError

#: Default decompression-bomb guard: 1024 x 1024 x 2048 voxels (4 GiB as int16).
DEFAULT_MAX_VOXELS = 1024 * 1024 * 2048
INT16_MIN, INT16_MAX = -32768, 32767
#: Body CT always holds fat (about -100 HU) or air (-1000 HU); MR and
#: normalised images have nothing this low.
CT_LOW_HU = -200
#: Largest label id a label map may hold (every dataset we know stays under 256).
MAX_LABEL_ID = 65535


def max_voxels_from_env(default: int = DEFAULT_MAX_VOXELS) -> int:
    v = os.environ.get("VOLVQA_MAX_VOXELS")
    return int(v) if v else default


def check_shape(path, shape: tuple[int, ...], max_voxels: int) -> tuple[int, int, int]:
    """Return the 3D shape; a 4th and later axes are allowed only with length 1."""
    if len(shape) < 3:
        raise VolvqaInputError(path, f"not a 3D image: {len(shape)}D with shape {tuple(shape)}")
    if any(int(s) != 1 for s in shape[3:]):
        raise VolvqaInputError(path, f"not a 3D image: shape {tuple(shape)} has more than one "
                               "volume along its extra axes")
    shape3 = tuple(int(s) for s in shape[:3])
    if min(shape3) <= 0:
        raise VolvqaInputError(path, f"empty image: shape {shape3}")
    n = int(np.prod(shape3, dtype=np.int64))
    if n > max_voxels:
        raise VolvqaInputError(path, f"image has {n} voxels {shape3}, more than the limit of {max_voxels} "
                               "(raise the limit, or set VOLVQA_MAX_VOXELS)", param="max_voxels")
    return shape3  # type: ignore[return-value]


def check_affine(path, affine: np.ndarray) -> None:
    if not np.all(np.isfinite(affine)):
        raise VolvqaInputError(path, "affine holds NaN or Inf")
    lin = affine[:3, :3]
    norms = np.sqrt((lin ** 2).sum(axis=0))
    if np.any(norms <= 1e-6):
        raise VolvqaInputError(path, f"zero voxel spacing in the affine (spacing {np.round(norms, 6).tolist()} mm)")
    # Scale-free test: the determinant of the direction matrix.
    if abs(np.linalg.det(lin / norms)) < 1e-3:
        raise VolvqaInputError(path, "singular affine: voxel axes are parallel, no 3D orientation")


def check_finite(path, array: np.ndarray) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int(np.isinf(array).sum())
        raise VolvqaInputError(path, f"image holds non-finite values ({n_nan} NaN, {n_inf} Inf)")


def to_hu_int16(path, array: np.ndarray) -> np.ndarray:
    """Round scaled intensities to int16 HU; an error if they do not fit."""
    if array.dtype.kind not in "iuf":
        raise VolvqaInputError(path, f"unsupported voxel type {array.dtype}: CT needs numbers")
    check_finite(path, array)
    if array.dtype == np.int16:
        return array
    lo, hi = array.min(), array.max()
    if lo < INT16_MIN - 0.5 or hi > INT16_MAX + 0.5:
        raise VolvqaInputError(path, f"HU values {float(lo):g}..{float(hi):g} overflow int16 "
                               f"({INT16_MIN}..{INT16_MAX}): check RescaleSlope/Intercept or scl_slope")
    if array.dtype.kind == "f":
        array = np.rint(array)
    return array.astype(np.int16)


def check_plausible_ct(path, hu: np.ndarray, allow_non_ct: bool) -> None:
    if allow_non_ct:
        return
    if not (hu < CT_LOW_HU).any():
        raise VolvqaInputError(
            path, f"intensities {int(hu.min())}..{int(hu.max())} are not plausible CT HU (no voxel "
            f"below {CT_LOW_HU} HU, so no fat or air: MR or normalised data?); pass "
            "--allow-non-ct / allow_non_ct=True to load it anyway")


def check_label_values(path, array: np.ndarray) -> np.ndarray:
    """Label maps hold non-negative integers; return them as an unsigned integer array."""
    if array.dtype.kind not in "iuf":
        raise VolvqaInputError(path, f"unsupported voxel type {array.dtype} for a label map")
    check_finite(path, array)
    if array.dtype.kind == "f":
        r = np.rint(array)
        if not np.allclose(array, r, atol=1e-3):
            raise VolvqaInputError(path, "label map holds non-integer values: is it an image, "
                                   "or a probability map?")
        array = r
    if array.dtype.kind in "iuf" and array.dtype.kind != "u" and array.min() < 0:
        raise VolvqaInputError(path, f"label map holds negative values (min {array.min():g})")
    top = array.max(initial=0)
    if top > MAX_LABEL_ID:
        # Checked before any cast: a float 2**32 + 5 would wrap to 5 in uint32.
        raise VolvqaInputError(path, f"label id {top:.0f} is larger than {MAX_LABEL_ID}")
    if array.dtype.kind == "u":
        return array
    out_t = np.uint8 if top < 256 else (np.uint16 if top < 65536 else np.uint32)
    return array.astype(out_t)
