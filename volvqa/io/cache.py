"""Zarr v3 cache of canonical volumes and label maps, for training and reruns.

Layout: one group per case, ``<store>/<case_id>/`` with arrays ``ct``
(int16 HU), ``labels`` (uint8 canonical ids) and optionally ``parts``;
chunked, zstd-compressed. Group attributes hold the affine (RAS mm),
spacing (mm), label names and the source. A case is written under a
temporary name and renamed into place, so a reader never sees half a case.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from volvqa.errors import VolvqaInputError
from volvqa.io.orientation import spacing_from_affine
from volvqa.records import LabelMap, Source, Volume, check_case_id

CHUNKS = (128, 128, 64)
ZSTD_LEVEL = 3


def _chunks(shape):
    return tuple(min(c, s) for c, s in zip(CHUNKS, shape, strict=False))


def _put(group, name: str, arr: np.ndarray) -> None:
    z = group.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=_chunks(arr.shape),
                           compressors=[ZstdCodec(level=ZSTD_LEVEL)], fill_value=0)
    z[...] = arr


def has_case(store: str | os.PathLike, case_id: str) -> bool:
    return (Path(store) / case_id / "zarr.json").is_file()


def write_case(store: str | os.PathLike, case_id: str, volume: Volume,
               labelmap: LabelMap | None = None, *, overwrite: bool = False) -> Path:
    """Write one case; returns its folder. Existing cases are kept unless ``overwrite``."""
    check_case_id(case_id, "cache")
    store = Path(store)
    final = store / case_id
    if has_case(store, case_id) and not overwrite:
        return final
    if labelmap is not None and labelmap.array.shape != volume.array.shape:
        raise VolvqaInputError(None, f"case {case_id}: label map shape {labelmap.array.shape} "
                               f"differs from the volume's {volume.array.shape}")
    store.mkdir(parents=True, exist_ok=True)
    root = zarr.open_group(store, mode="a")
    if "volvqa_cache" not in root.attrs:
        root.attrs["volvqa_cache"] = 1
    tmp_name = f".tmp-{case_id}-{uuid.uuid4().hex[:8]}"
    try:
        g = root.create_group(tmp_name)
        _put(g, "ct", np.asarray(volume.array, dtype=np.int16))
        attrs = {
            "affine_ras_mm": np.asarray(volume.affine, float).tolist(),
            "spacing_mm": list(volume.spacing_mm),
            "source": {"path": volume.source.path, "series_uid": volume.source.series_uid},
            "orientation": "RAS",
        }
        if labelmap is not None:
            _put(g, "labels", np.asarray(labelmap.array))
            attrs["labels"] = {str(k): v for k, v in sorted(labelmap.labels.items())}
            if labelmap.parts is not None:
                _put(g, "parts", np.asarray(labelmap.parts))
                attrs["part_labels"] = {str(k): v for k, v in sorted(labelmap.part_labels.items())}
        g.attrs.update(attrs)
        if final.exists():
            shutil.rmtree(final)
        os.replace(store / tmp_name, final)
    finally:
        if (store / tmp_name).exists():
            shutil.rmtree(store / tmp_name, ignore_errors=True)
    return final


def read_case(store: str | os.PathLike, case_id: str) -> tuple[Volume, LabelMap | None]:
    """Read a case back: identical arrays, affine and label names."""
    check_case_id(case_id, "cache")
    store = Path(store)
    if not has_case(store, case_id):
        raise VolvqaInputError(store, f"cache has no case {case_id!r}")
    g = zarr.open_group(store / case_id, mode="r")
    attrs = dict(g.attrs)
    affine = np.asarray(attrs["affine_ras_mm"], dtype=float)
    src = attrs.get("source", {})
    vol = Volume(array=np.asarray(g["ct"][...]), affine=affine, spacing_mm=spacing_from_affine(affine),
                 source=Source(src.get("path", ""), src.get("series_uid")), meta={"cache": str(store)})
    lm = None
    if "labels" in g:
        parts = np.asarray(g["parts"][...]) if "parts" in g else None
        lm = LabelMap(array=np.asarray(g["labels"][...]),
                      labels={int(k): v for k, v in attrs.get("labels", {}).items()},
                      affine=affine.copy(), parts=parts,
                      part_labels={int(k): v for k, v in attrs.get("part_labels", {}).items()})
    return vol, lm


def list_cases(store: str | os.PathLike) -> list[str]:
    store = Path(store)
    if not store.is_dir():
        return []
    return sorted(p.name for p in store.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / "zarr.json").is_file())
