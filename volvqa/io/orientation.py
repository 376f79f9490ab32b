"""Voxel order: bring arrays to canonical RAS+ and back, through the affine only."""
from __future__ import annotations

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt_mod

#: RAS <-> LPS: DICOM world coordinates are LPS, NIfTI/ours RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def axcodes(affine: np.ndarray) -> str:
    """Orientation code of an affine's voxel axes, e.g. 'LAS' (nibabel convention)."""
    return "".join(c if c is not None else "?" for c in nib.aff2axcodes(affine))


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder a 3D array to the closest canonical RAS+ voxel order.

    Same result as ``nibabel.as_closest_canonical``: axes are permuted and
    flipped (never resampled), and the affine is updated so every voxel keeps
    its world position. The result may be a view of ``array`` (no copy when
    nothing moves).
    """
    io = ornt_mod.io_orientation(affine)
    if np.array_equal(io, ornt_mod.axcodes2ornt("RAS")):
        return array, affine.copy()
    out = ornt_mod.apply_orientation(array, io)
    new_affine = affine @ ornt_mod.inv_ornt_aff(io, array.shape)
    return out, new_affine


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis (column norms of the affine)."""
    norms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return tuple(float(v) for v in norms)  # type: ignore[return-value]
