"""Portable builds (relative paths, exported volumes, the Hub layout) and the
rough edges a new user meets (manifest typos, devices, Ray, render, outputs)."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from volvqa.cli import main


def _cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "volvqa.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def built(tmp_path_factory, mini_build):
    tmp = mini_build.scratch(tmp_path_factory.mktemp("portable"))
    return tmp, mini_build.manifest, tmp / "out", mini_build


def test_build_prints_a_summary_and_progress_lines_without_a_terminal(built):
    _tmp, _m, out, r = built
    assert "questions in" in r.stdout and "card:" in r.stdout and not r.stdout.lstrip().startswith("{")
    assert "cases: 8/8 cases (100%)" in r.stderr
    info = json.loads((out / "build.json").read_text())
    assert info["summary"]["questions"] == len((out / "qa.jsonl").read_text().splitlines())
    assert (out / "errors.jsonl").is_file() and (out / "errors.jsonl").read_text() == ""


@pytest.mark.slow
def test_build_is_portable_moved_and_zipped(built, tmp_path):
    # A copy of its own: the source data is hidden below, and the shared build must not change.
    own = tmp_path / "own"
    for name in ("out", "data"):
        shutil.copytree(built[3].root / name, own / name)
    out = own / "out"
    cases = pd.read_parquet(out / "cases.parquet")
    for row in cases.itertuples():
        assert row.ct == f"volumes/{row.case_id}.nii.gz" and not Path(row.ct).is_absolute()
        assert all(not Path(p).is_absolute() and p.startswith("masks/") for p in json.loads(row.masks))
    for it in (json.loads(x) for x in (out / "qa.jsonl").read_text().splitlines()):
        assert it["image"] is None or not Path(it["image"]).is_absolute()
    # Moved next to nothing it came from: zipped, the source data deleted, unzipped elsewhere.
    archive = shutil.make_archive(str(tmp_path / "bench"), "zip", out)
    dest = tmp_path / "elsewhere" / "bench"
    with zipfile.ZipFile(archive) as z:
        z.extractall(dest)
    hidden = out.parent / "data_hidden"
    (out.parent / "data").rename(hidden)
    try:
        r = _cli("predict", "--qa", dest, "--model", "grounded", "--split", "all", "--out", tmp_path / "p.jsonl")
        assert r.returncode == 0, r.stderr
        r = _cli("evaluate", "--qa", dest, "--predictions", tmp_path / "p.jsonl", "--json", tmp_path / "s.json")
        assert r.returncode == 0, r.stderr
        scores = json.loads((tmp_path / "s.json").read_text())
        assert next(iter(scores.values()))["overall"]["score"] == pytest.approx(1.0)
    finally:
        hidden.rename(out.parent / "data")


def test_hub_layout_loads_with_split_names(built, tmp_path):
    import datasets
    _tmp, _m, out, _r = built
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))
    items = [json.loads(x) for x in (out / "qa.jsonl").read_text().splitlines()]
    splits = sorted({it["split"] for it in items})
    assert sorted(ds.keys()) == splits
    for sp in splits:
        assert ds[sp].num_rows == sum(it["split"] == sp for it in items)
    assert (out / "README.md").read_text().startswith("---\n") and "license: cc0-1.0" in (out / "README.md").read_text()


def test_key_slice_png_is_the_named_slice_of_the_exported_volume(built):
    from volvqa.bench.export import key_slice_png
    _tmp, _m, out, _r = built
    import nibabel as nib
    items = [json.loads(x) for x in (out / "qa.jsonl").read_text().splitlines() if '"image": "images' in x]
    it = items[len(items) // 2]
    vol = np.asarray(nib.load(out / "volumes" / f"{it['case_id']}.nii.gz").dataobj)
    assert nib.aff2axcodes(nib.load(out / "volumes" / f"{it['case_id']}.nii.gz").affine) == ("R", "A", "S")
    png = np.asarray(Image.open(out / it["image"]))
    import io
    assert np.array_equal(png, np.asarray(Image.open(io.BytesIO(key_slice_png(vol, it["key_slice"])))))
    # And not the neighbouring slice (the phantom changes along z).
    other = np.asarray(Image.open(io.BytesIO(key_slice_png(vol, it["key_slice"] + 3))))
    assert not np.array_equal(png, other)


# --- rough edges ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    ("lables: auto", ["unknown manifest key 'lables'", "did you mean 'labels'"]),
    ("seeed: 3", ["unknown manifest key 'seeed'", "'seed'"]),
    ("splits: {train: 0.5, tset: 0.5}", ["unknown split name 'tset'", "'test'"]),
    ("generate: {n: 2, sead: 1}", ["unknown generate key 'sead'", "'seed'"]),
])
def test_manifest_typos_are_errors(tmp_path, text, words):
    m = tmp_path / "m.yaml"
    m.write_text(f"layout: synthetic\nroot: {tmp_path / 'data'}\n{text}\n")
    r = _cli("build-qa", m, "--out", tmp_path / "out")
    msg = r.stderr.strip()
    assert r.returncode == 2 and len(msg.splitlines()) == 1 and all(w in msg for w in words), msg
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_device_and_ray_problems_are_one_line_errors(tmp_path, built):
    import torch
    _tmp, m, _out, _r = built
    if not torch.cuda.is_available():
        r = _cli("build-qa", m, "--out", tmp_path / "o1", "--segmenter", "totalsegmentator:fast", "--segment-all",
                 "--device", "cuda")
        assert r.returncode == 2 and "no CUDA device" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "o1").exists()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    r = _cli("build-qa", m, "--out", tmp_path / "o2", "--engine", "ray", "--ray-address", "auto", env=env)
    msg = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "no Ray cluster reachable" in msg[-1] and "internal error" not in r.stderr, r.stderr


def test_render_names_a_missing_structure_and_draws_a_legend(tmp_path, real_ct):
    base = ["render", str(real_ct / "example_ct_sm.nii.gz"), "--masks", str(real_ct / "example_seg.nii.gz"),
            "--labels", "totalsegmentator"]
    r = CliRunner().invoke(main, [*base, "--structure", "livr", "--out", str(tmp_path / "x.png")])
    assert r.exit_code == 2 and "no structure 'livr'" in r.output and "liver" in r.output
    assert not (tmp_path / "x.png").exists()
    r = CliRunner().invoke(main, [*base, "--structure", "liver", "--out", str(tmp_path / "y.png")])
    assert r.exit_code == 0
    plain = CliRunner().invoke(main, ["render", str(real_ct / "example_ct_sm.nii.gz"), "--out", str(tmp_path / "z.png")])
    assert plain.exit_code == 0
    # The legend adds a strip under the views.
    assert Image.open(tmp_path / "y.png").size[1] > Image.open(tmp_path / "z.png").size[1]


def test_answer_png_carries_the_answer(tmp_path, real_ct):
    r = CliRunner().invoke(main, ["answer", "--volume", str(real_ct / "example_ct_sm.nii.gz"), "--masks",
                                  str(real_ct / "example_seg.nii.gz"), "--labels", "totalsegmentator", "--question",
                                  "What is the mean attenuation of the spleen in HU?", "--png", str(tmp_path / "a.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a.png").is_file()
    # The README's example: a spleen cut by the scan's edge has no volume, and the message names the organ.
    r = CliRunner().invoke(main, ["answer", "--volume", str(real_ct / "example_ct_sm.nii.gz"), "--masks",
                                  str(real_ct / "example_seg.nii.gz"), "--labels", "totalsegmentator", "--question",
                                  "What is the volume of the spleen in ml?"])
    assert r.exit_code == 1 and "{organ}" not in r.output and "spleen volume" in r.output, r.output


@pytest.mark.slow
def test_failed_runs_leave_no_empty_folders_and_outputs_default_under_out(tmp_path, built):
    _tmp, _m, out, _r = built
    # A training run that fails on its input leaves no runs/NAME behind.
    r = _cli("train", "--qa", tmp_path / "nope", "--out", tmp_path / "runs" / "x", "--preset", "cpu-tiny")
    assert r.returncode == 2 and not (tmp_path / "runs").exists()
    # predict without --out writes under out/predictions/ of the working folder.
    r = _cli("predict", "--qa", out, "--model", "prior", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "predictions" / "prior_test.jsonl").is_file()


# --- model-ready inputs ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def with_media(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("media")
    m = tmp / "m.yaml"
    m.write_text(f"layout: synthetic\nroot: {tmp / 'data'}\ngenerate: {{n: 3, seed: 4}}\n"
                 "splits: {train: 0.5, test: 0.5}\nseed: 4\n")
    r = _cli("build-qa", m, "--out", tmp / "out", "--include-flagged", "--views", "--video")
    assert r.returncode == 0, r.stderr
    return tmp / "out"


def test_views_and_videos_are_written_per_item(with_media):
    import imageio.v2 as imageio

    from volvqa.io import load_volume
    from volvqa.render.inputs import item_centre, png_bytes, view_images
    out = with_media
    items = [json.loads(x) for x in (out / "qa.jsonl").read_text().splitlines()]
    assert items and all(it["views"] and it["video"] for it in items)
    it = next(i for i in items if i["answer_type"] == "bbox")
    v = load_volume(out / "volumes" / f"{it['case_id']}.nii.gz")
    import io
    for variant, boxes in (("plain", None), ("boxed", it["bbox_voxel"])):
        made = view_images(v, item_centre(v, it), boxes)
        for path, img in zip(it["views"][variant], made, strict=False):
            assert (out / path).read_bytes() == png_bytes(img)
    boxed = np.asarray(Image.open(io.BytesIO((out / it["views"]["boxed"][0]).read_bytes())).convert("RGB"))
    assert ((boxed[..., 1] == 255) & (boxed[..., 0] == 0)).sum() > 20      # the green box is drawn
    frames = imageio.mimread(out / it["video"], memtest=False)
    assert len(frames) == v.shape[2]
    k = it["key_slice"]
    ref = np.asarray(Image.open(out / it["image"])).astype(float)
    got = np.asarray(frames[k])[..., 0].astype(float)[: ref.shape[0], : ref.shape[1]]
    assert np.abs(got - ref).mean() < 6      # H.264 is lossy; the frame is the key slice
    df = pd.read_parquet(out / "qa.parquet")
    assert json.loads(df.views.iloc[0])["plain"] and df.video.iloc[0].endswith(".mp4")


@pytest.mark.parametrize("cls, fmt", [("RecordVolume", None), ("RecordKeySlice", None), ("RecordViews", None),
                                      ("RecordVideo", None), ("RecordM3D", None), ("RecordVolume", "views_boxed")])
def test_plugins_receive_their_input_format(with_media, tmp_path, cls, fmt):
    import tests.plugins as P
    from volvqa.eval.run import predict
    from volvqa.records import Volume
    out = with_media
    rec = getattr(P, cls)
    rec.calls.clear()
    n = predict(out, f"tests.plugins:{cls}", "test", tmp_path / "p.jsonl", progress=False, input_format=fmt)
    assert n == len(rec.calls) > 0
    first = rec.calls[0]
    want = fmt or getattr(rec, "input_format", "volume")
    if want == "volume":
        assert isinstance(first["volume"], Volume) and first["images"] is None
    elif want == "key_slice":
        assert first["volume"] is None and len(first["images"]) == 1 and first["images"][0].mode == "L"
    elif want in ("views", "views_boxed"):
        assert first["volume"] is None and len(first["images"]) == 3
        assert (first["images"][0].mode == "RGB") == (want == "views_boxed")
    elif want == "video":
        assert first["volume"] is None and len(first["images"]) > 10
    else:
        arr = first["volume"]
        assert arr.shape == (1, 32, 256, 256) and arr.dtype == np.float32 and arr.min() >= 0 and arr.max() <= 1
    assert any("Options:" in c["prompt"] for c in rec.calls)
