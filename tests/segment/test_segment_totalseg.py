"""TotalSegmentator backend: offline end-to-end run with randomly initialised
nnU-Net folders in TotalSegmentator's layout, missing weights, usage
statistics off, and the merge rules on hand-made task outputs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REAL_CT
from volvqa import labels as L

pytest.importorskip("totalsegmentator")

from totalsegmentator.map_to_binary import class_map  # noqa: E402

from volvqa.errors import VolvqaInputError  # noqa: E402
from volvqa.segment import make_segmenter  # noqa: E402
from volvqa.segment.totalseg import (  # noqa: E402
    merge_task_outputs,
    parse_backend,
    required_models,
    totalseg_device,
)


@pytest.fixture
def ts_env(tmp_path, monkeypatch):
    weights, home = tmp_path / "weights", tmp_path / "tshome"
    weights.mkdir()
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(weights))
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(home))
    return weights, home


@pytest.mark.slow
def test_totalseg_offline_end_to_end_on_real_ct(real_ct, ts_env, monkeypatch):
    import totalsegmentator.config as ts_config

    from tests.fake_totalseg import write_model
    from volvqa.io import load_volume

    weights, home = ts_env
    # The untrained models: total --fast (3 mm), the 6 mm crop model (biased to
    # call everything liver, so the kidney_cysts crop is the whole scan), kidney_cysts.
    write_model(weights, 297, "nnUNetTrainer_4000epochs_NoMirroring", class_map["total"], [3.0] * 3)
    write_model(weights, 298, "nnUNetTrainer_4000epochs_NoMirroring", class_map["total"], [6.0] * 3,
                bias={5: 50.0})
    write_model(weights, 789, "nnUNetTrainer_DASegOrd0_NoMirroring", class_map["kidney_cysts"], [1.5] * 3)
    posted = []
    monkeypatch.setattr(ts_config.requests, "post", lambda *a, **k: posted.append(a))

    volume = load_volume(real_ct / "example_ct_sm.nii.gz")
    seg = make_segmenter("totalsegmentator:fast+kidney_cysts", device="cpu")
    lm = seg.segment(volume)

    assert lm.array.shape == volume.shape == (122, 101, 30)
    assert lm.array.dtype == np.uint8
    np.testing.assert_array_equal(lm.affine, volume.affine)
    present = set(np.unique(lm.array)) - {0}
    assert present == set(lm.labels)
    for i, name in lm.labels.items():
        assert L.CANONICAL_IDS[name] == i
    organ_names = {L.canonical_name(n) for n in class_map["total"].values()}
    assert set(lm.labels.values()) <= organ_names | {"kidney_cyst"}
    assert "kidney_cyst" in lm.labels.values() and len(lm.labels) > 3
    assert lm.meta["tasks"] == ["total", "kidney_cysts"] and lm.meta["device"] == "cpu"
    config = json.loads((home / "config.json").read_text())
    assert config["send_usage_stats"] is False
    assert posted == []


def test_totalseg_missing_weights_one_line_error(ts_env, tmp_path):
    weights, _ = ts_env
    with pytest.raises(VolvqaInputError) as e:
        make_segmenter("totalsegmentator:fast+liver_lesions").prepare()
    msg = str(e.value)
    assert "\n" not in msg and str(weights) in msg
    assert "totalseg_download_weights -t total_fast" in msg
    assert "totalseg_download_weights -t liver_lesions" in msg
    assert "Dataset591_ct_liver_lesions_842subj" in msg


@pytest.mark.slow
@pytest.mark.skipif(not REAL_CT.is_dir(), reason="shared real CT not present")
def test_totalseg_missing_weights_cli_exit_2(ts_env, tmp_path):
    weights, _ = ts_env
    out = tmp_path / "segout"
    r = subprocess.run([sys.executable, "-m", "volvqa.cli", "segment", str(REAL_CT / "example_ct_sm.nii.gz"),
                        "--out", str(out), "--backend", "totalsegmentator"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(weights) in lines[0]
    assert "totalseg_download_weights -t total" in lines[0]
    assert not out.exists()


def test_totalseg_required_models_follow_task_configs():
    assert [m[0] for m in required_models("total", False)] == [291, 292, 293, 294, 295]
    assert required_models("total", True) == [(297, "nnUNetTrainer_4000epochs_NoMirroring", "total_fast")]
    # lesion tasks run TotalSegmentator's crop model first: 6 mm, or 3 mm when robust_crop
    assert [m[0] for m in required_models("kidney_cysts", False)] == [789, 298]
    assert [m[0] for m in required_models("liver_lesions", False)] == [591, 297]


def test_totalseg_backend_spec_and_device():
    assert parse_backend("totalsegmentator") == (False, ())
    assert parse_backend("totalsegmentator:fast+liver_lesions+kidney_cysts") == (
        True, ("kidney_cysts", "liver_lesions"))
    for bad in ("totalsegmentator:fastest", "totalsegmentator+brain", "totalsegmentator:a:b"):
        with pytest.raises(VolvqaInputError):
            parse_backend(bad)
    from volvqa.segment.totalseg import totalseg_device_name
    assert totalseg_device("cpu") == "cpu"
    assert totalseg_device_name("cuda:1") == "gpu:1" and totalseg_device_name("cuda") == "gpu"
    import torch
    if not torch.cuda.is_available():   # asking for a GPU this machine lacks fails at once, in one line
        with pytest.raises(VolvqaInputError, match="no CUDA device"):
            totalseg_device("cuda")
    with pytest.raises(VolvqaInputError):
        totalseg_device("tpu")


def test_totalseg_merge_rules():
    shape = (6, 4, 3)
    total = np.zeros(shape, np.uint8)
    total[:3] = 5          # liver
    total[3:5] = 2         # kidney_right
    total[5, 0, 0] = 24    # total's kidney_cyst_right
    vessels = np.zeros(shape, np.uint8)
    vessels[0] = 1         # vessel inside the liver: the liver keeps it
    vessels[5, 3, 2] = 1   # vessel on background: becomes liver_vessels
    vessels[1, 0, 0] = 2   # liver_tumor from the vessel model
    lesions = np.zeros(shape, np.uint8)
    lesions[1, 0, 0] = 1   # the dedicated lesion model wins there
    lesions[2, 1, 1] = 1
    cysts = np.zeros(shape, np.uint8)
    cysts[4, 2, 2] = 2     # kidney_cyst_right over kidney
    segments = np.zeros(shape, np.uint8)
    segments[:3, :2] = 7
    merged, parts = merge_task_outputs({"total": total, "liver_vessels": vessels, "liver_lesions": lesions,
                                        "kidney_cysts": cysts, "liver_segments": segments})
    ids = L.CANONICAL_IDS
    assert merged[0, 0, 0] == ids["liver"]
    assert merged[5, 3, 2] == ids["liver_vessels"]
    assert merged[1, 0, 0] == ids["liver_lesion"]
    assert merged[2, 1, 1] == ids["liver_lesion"]
    assert merged[4, 2, 2] == ids["kidney_cyst"] and merged[5, 0, 0] == ids["kidney_cyst"]
    assert merged[3, 0, 0] == ids["kidney_right"]
    assert (merged == ids["liver"]).sum() == 3 * 4 * 3 - 2
    assert parts is not None and (parts == L.PART_IDS["liver_segment_7"]).sum() == 3 * 2 * 3
    assert parts.sum() == 7 * 18
