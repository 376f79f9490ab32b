"""MONAI segmentation backend: training, checkpoint, `volvqa segment`, reference backend."""
import json
import subprocess
import sys

import numpy as np
from click.testing import CliRunner
from safetensors.torch import load_file

from volvqa import labels as L
from volvqa.cli import main
from volvqa.io import load_labelmap, load_volume
from volvqa.segment import ReferenceSegmenter
from volvqa.segment.monai_seg import MonaiSegmenter, dice_per_label, train_seg


def test_monai_backend_trains_segments_and_round_trips(tmp_path):
    data = tmp_path / "data"
    r = subprocess.run([sys.executable, "-m", "volvqa.cli", "synth", "phantoms", "--n", "3", "--seed", "2",
                        "--no-lesions", "--out", str(data)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = tmp_path / "m.yaml"
    m.write_text(f"layout: synthetic\nroot: {data}\nsplits: {{train: 0.6, val: 0.4}}\nseed: 1\n")
    run = tmp_path / "runs" / "seg"
    res = train_seg(m, run, preset="cpu-tiny", seed=0, progress=False)
    assert res["train_cases"] >= 1 and res["val_cases"] >= 1
    assert set(res["val_dice"]) == {"liver", "spleen", "kidney_left", "kidney_right"}
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["preprocessing"]["spacing_mm"] == [6.0, 6.0, 6.0] and cfg["model"]["labels"][0] == "liver"
    assert any("conv" in k for k in load_file(str(run / "model.safetensors")))
    ct = data / "phantom_0000" / "ct.nii.gz"
    out = tmp_path / "segs"
    r = CliRunner().invoke(main, ["segment", str(ct), "--out", str(out), "--backend", f"monai:{run}", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    v = load_volume(ct)
    seg = load_labelmap(out / "ct_seg.nii.gz", "canonical", reference=v)
    assert seg.array.shape == v.shape and seg.array.dtype == np.uint8
    assert set(seg.labels.values()) <= {"liver", "spleen", "kidney_left", "kidney_right"}
    direct = MonaiSegmenter.load(run, device="cpu").segment(v)
    assert np.array_equal(direct.array, seg.array)
    r = CliRunner().invoke(main, ["segment", str(ct), "--out", str(out), "--backend", f"monai:{tmp_path}"])
    assert r.exit_code == 2 and "not a MONAI segmentation run" in r.stderr


def test_reference_backend_and_dice():
    a = np.zeros((10, 10, 10), np.uint8)
    b = a.copy()
    a[2:6, 2:6, 2:6] = 1
    b[3:7, 2:6, 2:6] = 1
    assert dice_per_label(a, b, 1)[0] == 2 * 48 / 128
    assert np.isnan(dice_per_label(a * 0, b * 0, 1)[0])


def test_reference_segmenter(real_ct):
    v = load_volume(real_ct / "example_ct_sm.nii.gz")
    lm = ReferenceSegmenter(real_ct / "example_seg.nii.gz", "totalsegmentator").segment(v)
    assert lm.labels[L.CANONICAL_IDS["liver"]] == "liver"
