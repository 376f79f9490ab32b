"""MONAI segmentation backend: training, checkpoint, `volvqa segment`, reference backend."""
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from volvqa import labels as L
from volvqa.cli import main
from volvqa.io import load_labelmap, load_volume
from volvqa.qa.context import organ_text
from volvqa.segment.monai_seg import MonaiSegmenter, dice_per_label, train_seg


@pytest.mark.slow
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
    # both kidneys are one network class, split by side afterwards
    assert set(res["val_dice"]) == {"liver", "spleen", "kidney"}
    assert set(res["heldout_dice"]) == {"liver", "spleen", "kidney_left", "kidney_right"}
    held = json.loads((run / "heldout_dice.json").read_text())
    assert held["mean"].keys() == res["heldout_dice"].keys() and held["cases"]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["pair_sides"] is True
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


def _segment_fed_the_reference(v, ref, cfg):
    """segment() of a network whose prediction is the reference on its grid; (label map, that grid)."""
    from volvqa.segment.monai_seg import _network, class_lut, to_network_grid
    _, lab, _ = to_network_grid(v, cfg, class_lut(cfg)[ref.array])
    seg = MonaiSegmenter(cfg, _network(cfg), "cpu")
    seg.predict_grid = lambda img: lab[0].numpy().astype(np.uint8)
    return seg.segment(v), lab


def test_monai_segment_splits_paired_class_by_side(tmp_path):
    """A network output 'kidney' becomes kidney_left / kidney_right by side,
    on the input grid: fed the reference as its prediction, segment() gives
    the reference back."""
    import torch

    from volvqa.segment.monai_seg import SegConfig, segmentation_dice
    from volvqa.synth.dataset import phantom_case

    _cid, v, ref, _truth = phantom_case(1, 0, lesions=False)
    assert {"kidney_left", "kidney_right"} <= set(ref.labels.values())
    cfg = SegConfig(labels=["liver", "spleen", "kidney_left", "kidney_right"], spacing_mm=v.spacing_mm,
                    pair_sides=True)
    assert [c for c, _ in cfg.classes] == ["liver", "spleen", "kidney"]
    out, lab = _segment_fed_the_reference(v, ref, cfg)
    dice = segmentation_dice(out, ref, cfg.labels)
    assert min(dice.values()) > 0.99, dice
    left_x = np.nonzero(out.array == L.CANONICAL_IDS["kidney_left"])[0].max()
    right_x = np.nonzero(out.array == L.CANONICAL_IDS["kidney_right"])[0].min()
    assert left_x < right_x  # RAS: the patient's left is at smaller x
    assert torch.is_tensor(lab)


def test_reference_backend_and_dice():
    a = np.zeros((10, 10, 10), np.uint8)
    b = a.copy()
    a[2:6, 2:6, 2:6] = 1
    b[3:7, 2:6, 2:6] = 1
    assert dice_per_label(a, b, 1)[0] == 2 * 48 / 128
    assert np.isnan(dice_per_label(a * 0, b * 0, 1)[0])


def _tiny_run(tmp_path, n=3, seed=2):
    data = tmp_path / "data"
    r = subprocess.run([sys.executable, "-m", "volvqa.cli", "synth", "phantoms", "--n", str(n), "--seed", str(seed),
                        "--out", str(data)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = tmp_path / "train.yaml"
    m.write_text(f"layout: synthetic\nroot: {data}\nsplits: {{train: 0.6, val: 0.4}}\nseed: 1\n")
    run = tmp_path / "runs" / "seg"
    train_seg(m, run, preset="cpu-tiny", seed=0, progress=False)
    return data, run


@pytest.mark.slow
def test_build_qa_segment_stage_for_cases_without_masks(tmp_path):
    """A manifest whose cases have no masks builds through its ``segmenter:``;
    predictions are cached and a rerun does not segment again."""
    from volvqa.bench.build import BuildConfig, build_qa

    data, run = _tiny_run(tmp_path)
    # A second stage starts from the first's weights (same labels and preset); other labels are refused.
    from volvqa.errors import VolvqaInputError
    train_m = tmp_path / "train.yaml"
    stage2 = train_seg(train_m, tmp_path / "runs" / "seg2", preset="cpu-tiny", seed=1, progress=False,
                       init_from=run, steps=2)
    assert json.loads((tmp_path / "runs" / "seg2" / "config.json").read_text())["history"][-1]["step"] == 2
    assert stage2["train_cases"] >= 1
    with pytest.raises(VolvqaInputError, match="same labels"):
        train_seg(train_m, tmp_path / "runs" / "seg3", preset="cpu-tiny", labels=["liver"], progress=False,
                  init_from=run, steps=1)
    cases = sorted(p.name for p in data.iterdir() if p.is_dir())
    (data / "cases.csv").write_text("case_id,ct\n" + "".join(f"{c},{c}/ct.nii.gz\n" for c in cases))
    m = tmp_path / "nomasks.yaml"
    m.write_text(f"layout: csv\nroot: {data}\nsplits: {{train: 0.5, test: 0.5}}\nseed: 0\n"
                 f"segmenter: {{backend: 'monai:{run}', device: cpu}}\n")
    out = tmp_path / "qa"
    res = build_qa(BuildConfig(manifest=m, out=out, progress=False))
    segs = sorted((out / "segmentations").glob("*_seg.nii.gz"))
    assert [p.name for p in segs] == [f"{c}_seg.nii.gz" for c in cases]
    assert not (out / "errors.jsonl").exists() or (out / "errors.jsonl").read_text() == ""
    info = json.loads((out / "build.json").read_text())
    assert info["segmenter"] == {"backend": f"monai:{run}", "segment_all": False}
    assert res["cases"] == len(cases)
    # masks recorded for the grounded answerer are the predictions
    import pandas as pd
    rows = pd.read_parquet(out / "cases.parquet")
    assert all(json.loads(x)[0].endswith("_seg.nii.gz") for x in rows["masks"])
    # resume: finished cases are not segmented again, and the predictions read
    # back from disk give the same benchmark as the fresh ones did
    import hashlib
    def digest_of(out):
        files = [out / "qa.jsonl", *sorted((out / "cases").glob("*/findings.json"))]
        return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]

    digest = digest_of(out)
    assert len(digest) == 1 + len(cases)
    mtimes = [p.stat().st_mtime_ns for p in segs]
    for wd in (out / "work").iterdir():
        (wd / "items.json").unlink()
    build_qa(BuildConfig(manifest=m, out=out, progress=False))
    assert [p.stat().st_mtime_ns for p in segs] == mtimes
    assert digest_of(out) == digest


@pytest.mark.slow
def test_build_qa_segment_all_and_grounded_predicted_mode(tmp_path):
    """``--segment-all`` builds from predicted masks; the grounded answerer's
    predicted mode answers the reference benchmark through a segmenter."""
    from volvqa.eval.run import evaluate, predict

    data, run = _tiny_run(tmp_path)
    m = tmp_path / "ref.yaml"
    m.write_text(f"layout: synthetic\nroot: {data}\nsplits: {{train: 0.5, test: 0.5}}\nseed: 0\n")
    pred_out = tmp_path / "qa_pred"
    r = CliRunner().invoke(main, ["build-qa", str(m), "--out", str(pred_out), "--segmenter", f"monai:{run}",
                                  "--segment-all", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    info = json.loads((pred_out / "build.json").read_text())
    assert info["segmenter"]["segment_all"] is True
    # An organ-only network annotates its organs only: it cannot say 'no lesion'.
    assert info["annotates"] and not any(L.is_lesion(n) for n in info["annotates"])
    ref_out = tmp_path / "qa_ref"
    r = CliRunner().invoke(main, ["build-qa", str(m), "--out", str(ref_out)])
    assert r.exit_code == 0, r.output
    preds = tmp_path / "pred.jsonl"
    r = CliRunner().invoke(main, ["predict", "--qa", str(ref_out), "--model", "grounded", "--split", "all",
                                  "--segmenter", f"monai:{run}", "--device", "cpu", "--out", str(preds)])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert lines and all(p["model"] == "grounded-predicted" for p in lines)
    scores = evaluate(ref_out, [preds])
    assert "overall" in next(iter(scores.values()))
    oracle = tmp_path / "oracle.jsonl"
    assert predict(ref_out, "grounded", "all", oracle, progress=False) == len(lines)
    # one scan, predicted mode, through `volvqa answer`
    ct = sorted(data.glob("*/ct.nii.gz"))[0]
    r = CliRunner().invoke(main, ["answer", "--volume", str(ct), "--segmenter", f"monai:{run}", "--device", "cpu",
                                  "--question", "What is the volume of the liver in ml?", "--json"])
    out = json.loads(r.output)
    assert r.exit_code == (1 if out["answer"].startswith("cannot answer") else 0), r.output
    assert out["model"] == "grounded-predicted"
    seg = MonaiSegmenter.load(run, device="cpu").segment(load_volume(ct))
    liver_ml = (seg.array == L.CANONICAL_IDS["liver"]).sum() * np.prod(load_volume(ct).spacing_mm) / 1000
    if out["answer"].startswith("cannot answer"):  # no liver, one cut by the scan's edge, or an implausible one
        liver = seg.array == L.CANONICAL_IDS["liver"]
        cut = liver.any() and any(np.take(liver, i, axis=a).any() for a in range(3) for i in (0, -1))
        assert "masks lack" in out["answer"] or "liver mask failed quality control" in out["answer"] or \
            (cut and "cut by the scan's edge" in out["answer"])
    else:
        assert abs(float(out["answer"].split()[0]) - liver_ml) <= 0.05 * liver_ml + 0.1
    # Keep only the structures on which the dataset's masks and the network agree.
    agree_out = tmp_path / "qa_agree"
    r = CliRunner().invoke(main, ["build-qa", str(m), "--out", str(agree_out), "--require-agreement",
                                  f"monai:{run}", "--device", "cpu", "--include-flagged"])
    assert r.exit_code == 0, r.output
    qc = json.loads((agree_out / "qc.json").read_text())
    assert qc["require_agreement"] == f"monai:{run}"
    assert len(list((agree_out / "agreement").glob("*_seg.nii.gz"))) == len(list(data.glob("*/ct.nii.gz")))
    for cid, rep in qc["cases"].items():
        # The network segments no lesion: every lesion class is left out, as are organs it disagrees on.
        assert {"liver_tumor", "kidney_cyst", "pancreatic_cyst"} <= set(rep["excluded"])
        assert all(why.startswith(("sources disagree", "agreement not checked")) for why in rep["excluded"].values())
        agreed = [json.loads(x) for x in (agree_out / "qa.jsonl").read_text().splitlines() if x.strip()]
        for it in (i for i in agreed if i["case_id"] == cid):
            assert "lesion" not in it["question"], it["question"]
            assert not any(organ_text(n) in it["question"] for n in rep["excluded"]
                           if n in ("spleen", "liver", "kidney_left", "kidney_right")), it["question"]
    # The oracle over that build applies the same requirement: it answers its own questions 100%.
    if (agree_out / "qa.jsonl").read_text().strip():
        preds = tmp_path / "agree.jsonl"
        assert predict(agree_out, "grounded", "all", preds, progress=False) > 0
        scores = evaluate(agree_out, [preds])
        assert next(iter(scores.values()))["overall"]["score"] == pytest.approx(1.0)


@pytest.mark.slow
def test_lesion_classes_survive_segment_and_detection_by_hand():
    """A lesion-aware network's output (fed the reference as its prediction) comes back with every lesion,
    small ones included (fragment cleaning spares lesion classes), and annotates the lesion families; the
    detection table counts a hand-made miss and false positive."""
    from volvqa.findings import extract
    from volvqa.records import LabelMap
    from volvqa.segment.detection import case_detection, detection_table
    from volvqa.segment.monai_seg import LESION_CLASSES, LESION_HOST_ORGANS, SegConfig
    from volvqa.synth.dataset import phantom_case
    _cid, v, ref, truth = phantom_case(1, 0)      # liver, kidney and pancreatic lesions (seed 0)
    labels = ["liver", "spleen", *[o for o in LESION_HOST_ORGANS if o != "liver"], *LESION_CLASSES]
    cfg = SegConfig(labels=labels, spacing_mm=v.spacing_mm, pair_sides=True)
    out, lab = _segment_fed_the_reference(v, ref, cfg)
    assert {"liver", "kidney", "pancreas"} <= {L.LESION_ORGAN[n] for n in out.annotates if L.is_lesion(n)}
    f_ref, f_out = extract(v, ref), extract(v, out)
    fams = ("liver", "kidney", "pancreas")
    n_ref = sum(les.organ.startswith(fams) for les in f_ref.lesions)
    assert n_ref >= 3 and sum(les.organ.startswith(fams) for les in f_out.lesions) == n_ref
    vox = float(np.prod(v.spacing_mm))
    det = case_detection(out, ref, vox)
    assert all(x["detected"] for fam in fams for x in det[fam]["lesions"])
    assert sum(len(det[f]["lesions"]) for f in fams) == n_ref
    # By hand: a 4x4x4 reference lesion missed, a 3x3x3 predicted one where there is none.
    a = np.zeros((30, 30, 30), np.uint8)
    b = a.copy()
    a[2:6, 2:6, 2:6] = L.CANONICAL_IDS["liver_tumor"]
    a[20:25, 20:25, 20:25] = L.CANONICAL_IDS["liver_cyst"]
    b[21:24, 21:24, 21:24] = L.CANONICAL_IDS["liver_tumor"]     # kind differs: still a detection
    b[10:13, 10:13, 10:13] = L.CANONICAL_IDS["liver_tumor"]
    mk = lambda arr: LabelMap(arr, {}, np.eye(4))                                    # noqa: E731
    d = case_detection(mk(b), mk(a), voxel_mm3=8.0)["liver"]
    assert [x["detected"] for x in d["lesions"]] == [False, True] and d["false_positives"] == 1
    assert d["lesions"][0]["diameter_mm"] == pytest.approx((6 * 64 * 8 / np.pi) ** (1 / 3), abs=0.05)
    t = detection_table({"a": {"liver": d}})["families"]["liver"]
    assert t["sensitivity"] == 0.5 and t["false_positives_per_case"] == 1.0
    assert t["by_size"]["< 10 mm"] == {"lesions": 1, "detected": 0, "sensitivity": 0.0}
