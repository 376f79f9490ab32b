"""Zarr v3 cache: identical arrays and attributes on read-back."""
import json

import numpy as np
import zarr
from click.testing import CliRunner

from volvqa.cli import main
from volvqa.io import load_labelmap, load_volume
from volvqa.io.cache import list_cases, read_case, write_case


def test_roundtrip_real_ct(tmp_path, real_ct):
    v = load_volume(real_ct / "example_ct_sm.nii.gz")
    lm = load_labelmap(real_ct / "example_seg.nii.gz", "totalsegmentator", reference=v)
    write_case(tmp_path / "c.zarr", "s1", v, lm)
    v2, lm2 = read_case(tmp_path / "c.zarr", "s1")
    assert v2.array.dtype == np.int16 and np.array_equal(v2.array, v.array)
    assert np.array_equal(v2.affine, v.affine)
    assert v2.spacing_mm == v.spacing_mm
    assert np.array_equal(lm2.array, lm.array) and lm2.labels == lm.labels
    # Real zarr v3 with zstd chunks.
    meta = json.loads((tmp_path / "c.zarr" / "s1" / "ct" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    assert [c["name"] for c in meta["codecs"]] == ["bytes", "zstd"]
    z = zarr.open_array(tmp_path / "c.zarr" / "s1" / "ct", mode="r")
    assert z.chunks == (122, 101, 30)  # CHUNKS clipped to the volume


def test_cli_cache_single_and_rerun(tmp_path, real_ct):
    store = tmp_path / "cache.zarr"
    args = ["cache", "--volume", str(real_ct / "example_ct_sm.nii.gz"), "--masks",
            str(real_ct / "example_seg.nii.gz"), "--labels", "totalsegmentator", "--out", str(store)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert list_cases(store) == ["example_ct_sm"]
    mtime = (store / "example_ct_sm" / "zarr.json").stat().st_mtime_ns
    r = CliRunner().invoke(main, args)  # rerun resumes: existing case kept
    assert r.exit_code == 0
    assert (store / "example_ct_sm" / "zarr.json").stat().st_mtime_ns == mtime
    assert not [p for p in store.iterdir() if p.name.startswith(".tmp")]
