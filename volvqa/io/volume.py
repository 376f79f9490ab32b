"""``load_volume``: any supported CT input -> Volume (int16 HU, canonical RAS+)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from volvqa.errors import VolvqaInputError
from volvqa.io import dicom, nifti
from volvqa.io.orientation import axcodes, spacing_from_affine, to_canonical
from volvqa.io.validate import (
    check_affine,
    check_plausible_ct,
    max_voxels_from_env,
    to_hu_int16,
)
from volvqa.records import Source, Volume


def input_kind(path: Path) -> str:
    """'nifti', 'dicom-dir' or 'dicom-zip'; an error for anything else."""
    if not path.exists():
        raise VolvqaInputError(path, "file not found")
    if path.is_dir():
        return "dicom-dir"
    name = path.name.lower()
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        return "nifti"
    if name.endswith(".zip"):
        return "dicom-zip"
    with open(path, "rb") as f:
        head = f.read(132)
    if head[128:132] == b"DICM":
        raise VolvqaInputError(path, "a single DICOM file: pass the folder (or .zip) holding the whole series")
    raise VolvqaInputError(path, "unsupported input: expected .nii, .nii.gz, a DICOM folder or a .zip of one")


def load_volume(path: str | os.PathLike, *, series_uid: str | None = None,
                allow_non_ct: bool = False, max_voxels: int | None = None,
                use_isal: bool = True) -> Volume:
    """Load a CT as int16 HU in canonical RAS+ voxel order.

    ``path``: ``.nii``/``.nii.gz``, a folder holding one DICOM series (or
    several, with ``series_uid``), or a ``.zip`` of such a folder.
    Raises VolvqaInputError (one line naming the file) on bad input.
    """
    path = Path(path)
    max_voxels = max_voxels_from_env() if max_voxels is None else int(max_voxels)
    kind = input_kind(path)
    if kind == "nifti":
        data, affine, hdr = nifti.read_nifti(path, max_voxels=max_voxels, use_isal=use_isal)
        meta = {"format": "nifti", "dtype_on_disk": str(hdr.get_data_dtype())}
        uid = None
    else:
        data, affine, meta = dicom.read_series(path, series_uid=series_uid, max_voxels=max_voxels)
        uid = meta["series_uid"]
    check_affine(path, affine)
    hu = to_hu_int16(path, data)
    check_plausible_ct(path, hu, allow_non_ct)
    meta["orientation_on_disk"] = axcodes(affine)
    meta["shape_on_disk"] = list(hu.shape)
    hu, affine = to_canonical(hu, affine)
    # Own, writable memory in whatever order is cheapest (no transposing copy).
    hu = np.array(hu, dtype=np.int16, order="K", copy=True)
    return Volume(array=hu, affine=affine, spacing_mm=spacing_from_affine(affine),
                  source=Source(str(path), uid), meta=meta)


def save_volume(volume: Volume, path: str | os.PathLike) -> None:
    """Write a Volume as canonical NIfTI (int16 HU), atomically."""
    nifti.write_nifti(path, volume.array, volume.affine)
