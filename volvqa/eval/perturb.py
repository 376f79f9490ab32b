"""Out-of-distribution perturbations of a volume (RadVUQA's robustness test).

Each is seeded and keeps the volume's world geometry except ``reorient``,
which hands the model the same scan stored in another voxel order (axes
permuted and flipped, affine updated), as an un-canonicalised input would be.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from volvqa.records import Volume

NOISE_STD_HU = 25.0
BLUR_SIGMA_VOXELS = 1.0
DOWNSAMPLE_FACTOR = 2
INTENSITY_SHIFT_HU = 40.0


def perturb(volume: Volume, kind: str, seed: int = 0) -> Volume:
    a = volume.array
    aff = volume.affine.copy()
    if kind == "noise":
        rng = np.random.default_rng(seed)
        out = a + rng.normal(0.0, NOISE_STD_HU, a.shape)
    elif kind == "blur":
        out = ndimage.gaussian_filter(a.astype(np.float32), BLUR_SIGMA_VOXELS)
    elif kind == "downsample":
        f = DOWNSAMPLE_FACTOR
        small = a[::f, ::f, :].astype(np.float32)
        out = ndimage.zoom(small, (a.shape[0] / small.shape[0], a.shape[1] / small.shape[1], 1), order=1)
        out = out[: a.shape[0], : a.shape[1]]
        out = np.pad(out, [(0, a.shape[0] - out.shape[0]), (0, a.shape[1] - out.shape[1]), (0, 0)], mode="edge")
    elif kind == "intensity-shift":
        out = a.astype(np.float32) + INTENSITY_SHIFT_HU
    elif kind == "reorient":
        perm = (1, 0, 2)
        out = np.flip(np.transpose(a, perm), axis=0)
        aff[:, :3] = volume.affine[:, list(perm)]
        n = out.shape[0]
        aff[:, 3] = aff @ np.array([n - 1, 0, 0, 1.0])
        aff[:, 0] = -aff[:, 0]
        sp = tuple(float(x) for x in np.linalg.norm(aff[:3, :3], axis=0))
        return Volume(np.ascontiguousarray(out), aff, sp, volume.source, dict(volume.meta, perturbation=kind))
    else:
        raise ValueError(f"unknown perturbation {kind!r}; choose from {', '.join(PERTURBATIONS)}")
    out = np.clip(np.rint(out), -32768, 32767).astype(np.int16)
    return Volume(out, aff, volume.spacing_mm, volume.source, dict(volume.meta, perturbation=kind))


PERTURBATIONS = ("noise", "blur", "downsample", "intensity-shift", "reorient")
