"""Answerers and scoring: metrics on hand-made predictions, grounded answers for
every paraphrase, prior, plug-ins, predict/evaluate over a build."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from volvqa.cli import main
from volvqa.eval.metrics import aggregate, iou_3d, mra, parse_bbox, parse_letter, parse_number, parse_yes_no, score_item
from volvqa.qa.generate import render_question
from volvqa.qa.qid import params_of
from volvqa.qa.readings import parse_question
from volvqa.qa.templates import TEMPLATES

OPTS = {"A": "12.0 ml", "B": "20.0 ml", "C": "31.5 ml", "D": "50.0 ml"}


def test_parse_letter():
    assert parse_letter("B", OPTS) == "B"
    assert parse_letter("(C)", OPTS) == "C"
    assert parse_letter("c. 31.5 ml", OPTS) == "C"
    assert parse_letter("The answer is D.", OPTS) == "D"
    assert parse_letter("31.5 ml", OPTS) == "C"
    assert parse_letter("", OPTS) is None
    assert parse_letter("A or B", OPTS) is None
    assert parse_letter("I cannot tell", OPTS) is None
    assert parse_letter("E", OPTS) is None


def test_numeric_scores():
    assert mra(10.0, 10.0) == 1.0
    assert mra(11.0, 10.0) == pytest.approx(0.8)   # 10% error passes thresholds 0.50..0.85
    assert mra(20.0, 10.0) == 0.0
    assert mra(None, 10.0) == 0.0
    assert parse_number("about 1,234.5 ml") == 1234.5
    assert parse_number("no idea") is None
    it = {"qid": "x", "answer_type": "numeric", "answer": 100.0}
    s = score_item(it, "108", "free")
    assert s["hit@10"] == 1.0 and s["hit@5"] == 0.0 and s["hit@20"] == 1.0
    s = score_item(it, "n/a", "free")
    assert not s["parsed"] and s["score"] == 0.0 and s["hit@50"] == 0.0


def test_yes_no_sensitivity_specificity():
    items = [{"qid": str(i), "answer_type": "binary", "answer": a, "subtype": "s", "category": "Recognition"}
             for i, a in enumerate(["yes", "yes", "no", "no", "no"])]
    outs = ["Yes.", "no", "No", "yes, there is", "maybe"]
    assert [parse_yes_no(o) for o in outs] == ["yes", "no", "no", "yes", None]
    agg = aggregate(items, [score_item(it, o, "free") for it, o in zip(items, outs, strict=False)])["overall"]
    assert agg["accuracy"] == pytest.approx(0.4)
    assert agg["sensitivity"] == pytest.approx(0.5) and agg["specificity"] == pytest.approx(1 / 3)


def test_categorical_and_bbox():
    it = {"qid": "c", "answer_type": "categorical", "answer": "upper pole"}
    assert score_item(it, "Upper pole.", "free")["exact"] == 1.0
    s = score_item(it, "pole", "free")
    assert s["exact"] == 0.0 and s["partial"] == 1.0
    assert score_item(it, "", "free")["partial"] == 0.0
    assert iou_3d([0, 0, 0, 9, 9, 9], [0, 0, 0, 9, 9, 9]) == 1.0
    assert iou_3d([0, 0, 0, 9, 9, 9], [5, 0, 0, 14, 9, 9]) == pytest.approx(500 / 1500)
    assert iou_3d([0, 0, 0, 1, 1, 1], [5, 5, 5, 6, 6, 6]) == 0.0
    assert parse_bbox("[1, 2, 3, 4, 5, 6]") == [1, 2, 3, 4, 5, 6]
    bi = {"qid": "b", "answer_type": "bbox", "answer": {"voxel": [0, 0, 0, 9, 9, 9]}}
    assert score_item(bi, "[0,0,0,9,9,9]", "free")["iou"] == 1.0
    s = score_item(bi, "somewhere in the liver", "free")
    assert s["iou"] == 0.0 and not s["parsed"]
    mc = {"qid": "m", "answer_type": "numeric", "answer": 31.5, "options": OPTS, "correct_option": "C"}
    assert score_item(mc, "C", "mc")["correct"] and not score_item(mc, "zzz", "mc")["parsed"]


def test_unknown_question_cannot_be_answered(tmp_path, real_ct):
    r = CliRunner().invoke(main, ["answer", "--volume", str(real_ct / "example_ct_sm.nii.gz"), "--masks",
                                  str(real_ct / "example_seg.nii.gz"), "--labels", "totalsegmentator",
                                  "--question", "What is the patient's favourite colour?"])
    assert r.exit_code == 1
    assert "cannot answer" in r.stdout and "liver" in r.stdout  # lists supported kinds


@pytest.fixture(scope="module")
def mini(tmp_path_factory, mini_build):
    return mini_build.scratch(tmp_path_factory.mktemp("ans"))


def _params(it):
    return params_of(it["qid"], typed=True)


@pytest.mark.slow
def test_every_paraphrase_parses_and_is_answered_by_volvqa_answer(mini):
    """Every paraphrase of every item of one case parses to its template and gets the item's answer: the
    first paraphrase of each template through the `volvqa answer` command line, the others through the
    same answerer in-process (one findings extraction instead of one per call)."""
    from volvqa.io import load_volume
    from volvqa.models.grounded import fixed_masks
    from volvqa.models.registry import ModelRequest, make_answerer
    from volvqa.synth.dataset import PHANTOM_ANNOTATES
    out = mini / "out"
    items = [json.loads(x) for x in (out / "qa.jsonl").read_text().splitlines()]
    case = sorted({it["case_id"] for it in items}, key=lambda c: -sum(i["case_id"] == c for i in items))[0]
    data = mini / "data" / case
    masks = [str(data / "seg.nii.gz"), str(data / "parts.nii.gz")]
    annotates = ",".join(sorted(PHANTOM_ANNOTATES))
    volume = load_volume(data / "ct.nii.gz")
    answerer = make_answerer("grounded", ModelRequest(mode="mc", labelmap_for=fixed_masks(
        masks, ["canonical", "volvqa_parts"], annotates=annotates)))
    n = n_cli = 0
    for it in [i for i in items if i["case_id"] == case and i["answer_type"] != "bbox"]:
        t = TEMPLATES[it["template_id"]]
        params = _params(it)
        for k in range(len(t.paraphrases)):
            q = render_question(t, params, k)
            readings = parse_question(q)
            assert (t.id, ) in {(tid,) for tid, _ in readings}, q
            if k == 0:
                opts = ";".join(f"{kk}={vv}" for kk, vv in it["options"].items())
                r = CliRunner().invoke(main, ["answer", "--volume", str(data / "ct.nii.gz"), "--masks", masks[0],
                                              "--masks", masks[1], "--labels", "canonical",
                                              "--labels", "volvqa_parts", "--annotates", annotates,
                                              "--question", q, "--options", opts])
                assert r.exit_code == 0, (q, r.output)
                got = r.stdout.splitlines()[0].strip()
                n_cli += 1
            else:
                got = answerer.answer(volume, {"qid": "q", "case_id": case, "question": q,
                                               "options": it["options"]}).answer
            assert got == it["correct_option"], (q, got, it["options"])
            n += 1
    assert n > 40 and n_cli > 10


def test_volvqa_answer_free_form_json_and_png(mini, tmp_path):
    out = mini / "out"
    items = [json.loads(x) for x in (out / "qa.jsonl").read_text().splitlines()]
    it = next(i for i in items if i["template_id"] == "meas.organ_volume")
    data = mini / "data" / it["case_id"]
    png = tmp_path / "key.png"
    r = CliRunner().invoke(main, ["answer", "--volume", str(data / "ct.nii.gz"), "--masks", str(data / "seg.nii.gz"),
                                  "--labels", "canonical", "--question", it["question"], "--json", "--png", str(png)])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert float(d["answer"].split()[0]) == pytest.approx(it["answer"]) and d["answer"].endswith("ml")
    assert d["evidence"]["bbox_voxel"] == it["bbox_voxel"]
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_predict_evaluate_grounded_prior_plugin(mini, tmp_path):
    out = mini / "out"
    run = lambda *a: subprocess.run([sys.executable, "-m", "volvqa.cli", *a], capture_output=True, text=True)  # noqa: E731
    for model, name in (("grounded", "g"), ("prior", "p"), ("tests.plugins:LargestOption", "u")):
        r = run("predict", "--qa", str(out), "--model", model, "--split", "all", "--out", str(tmp_path / f"{name}.jsonl"))
        assert r.returncode == 0, r.stderr
    r = run("predict", "--qa", str(out), "--model", "grounded", "--split", "all", "--mode", "free",
            "--out", str(tmp_path / "gf.jsonl"))
    assert r.returncode == 0, r.stderr
    r = run("evaluate", "--qa", str(out), "--predictions", str(tmp_path / "g.jsonl"), "--predictions",
            str(tmp_path / "p.jsonl"), "--predictions", str(tmp_path / "u.jsonl"), "--predictions",
            str(tmp_path / "gf.jsonl"), "--json", str(tmp_path / "s.json"), "--report", str(tmp_path / "report.md"))
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    g = s["grounded-oracle"]
    assert all(v["score"] >= 0.99 for v in g["subtypes"].values()), {k: v["score"] for k, v in g["subtypes"].items()}
    gf = s["grounded-oracle (gf.jsonl)"]
    assert gf["overall"]["score"] > 0.99
    assert s["prior"]["overall"]["score"] < g["overall"]["score"]
    assert s["tests.plugins:LargestOption"]["overall"]["parsed"] > 0.5
    assert (tmp_path / "report.md").read_text().count("|") > 20
    assert (tmp_path / "report_recognition.png").is_file()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"qid": "nope", "answer": "A"}) + "\n")
    r = run("evaluate", "--qa", str(out), "--predictions", str(bad))
    assert r.returncode == 2 and "unknown qid" in r.stderr


@pytest.mark.slow
def test_encoder3d_trains_saves_safetensors_and_answers(mini, tmp_path):
    from safetensors.torch import load_file

    from volvqa.models.encoder3d import Encoder3DAnswerer
    from volvqa.models.train_encoder3d import train
    out = tmp_path / "out"   # training writes its zarr cache into the build: a copy of the shared one
    shutil.copytree(mini / "out", out)
    run = tmp_path / "runs" / "tiny"
    res = train(out, run, preset="cpu-tiny", seed=0, progress=False)
    assert res["epochs"] == 5 and res["device"] == "cpu"
    assert (out / "cache.zarr").is_dir()  # batches came from the zarr cache
    state = load_file(str(run / "model.safetensors"))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["preprocessing"]["hu_window"] == [-160.0, 240.0] and cfg["model"]["grid"] == [16, 48, 48]
    assert any(k.startswith("vit.") for k in state)
    # Same seed, same weights.
    run2 = tmp_path / "runs" / "tiny2"
    train(out, run2, preset="cpu-tiny", seed=0, progress=False)
    state2 = load_file(str(run2 / "model.safetensors"))
    assert all(np.array_equal(state[k].numpy(), state2[k].numpy()) for k in state)
    r = subprocess.run([sys.executable, "-m", "volvqa.cli", "predict", "--qa", str(out), "--model",
                        f"encoder3d:{run}", "--split", "val", "--out", str(tmp_path / "e.jsonl")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    preds = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
    items = {json.loads(x)["qid"]: json.loads(x) for x in (out / "qa.jsonl").read_text().splitlines()}
    for p in preds:
        it = items[p["qid"]]
        if it["options"]:
            assert p["answer"] in it["options"]
        else:
            assert len(json.loads(p["answer"])) == 6  # a box
    a = Encoder3DAnswerer.load(run)
    with pytest.raises(Exception, match="not an encoder3d run"):
        Encoder3DAnswerer.load(tmp_path)
    assert a.cfg.vocab and a.cfg.labels and a.cfg.concept_version == 2
    # The answer prior the heads add to: train answer counts per question kind.
    from collections import Counter

    from volvqa.qa.audit import key_of
    expect: dict = {}
    for it in items.values():
        if it["split"] == "train" and it["answer_type"] in ("binary", "categorical"):
            expect.setdefault(key_of(it), Counter())[str(it["answer"]).lower()] += 1
    assert expect and a.cfg.answer_prior == {k: dict(v) for k, v in expect.items()}
    # Free text (volvqa answer): the question kind, and so the prior's key, comes from the registry.
    for it in items.values():
        kind = a.question_kind({"qid": "q", "question": it["question"]})
        got = (kind["template_id"], kind["answer_type"], kind["key"])
        assert got == (it["template_id"], it["answer_type"], key_of(it)), it["question"]
    binary = next(it for it in items.values() if it["answer_type"] == "binary")
    ct = next(p for p in mini.glob(f"data/{binary['case_id']}/ct.nii.gz"))
    r = CliRunner().invoke(main, ["answer", "--volume", str(ct), "--model", f"encoder3d:{run}",
                                  "--question", binary["question"]])
    assert r.exit_code == 0 and r.stdout.strip() in ("yes", "no"), r.output
    r = CliRunner().invoke(main, ["answer", "--volume", str(ct), "--model", f"encoder3d:{run}",
                                  "--question", "What is the patient's favourite colour?"])
    assert r.exit_code == 1 and "cannot answer" in r.stdout
    # A question stage on another run's encoder: no pretraining, and the
    # frozen encoder comes out exactly as it went in.
    run3 = tmp_path / "runs" / "tiny3"
    res3 = train(out, run3, preset="cpu-tiny", seed=1, progress=False, init_from=run)
    assert res3["anatomy_epochs"] == 0 and res3["epochs"] == 5
    state3 = load_file(str(run3 / "model.safetensors"))
    encoder = [k for k in state if k.startswith(("vit.", "anat."))]
    assert encoder and all(np.array_equal(state[k].numpy(), state3[k].numpy()) for k in encoder)
    assert not np.array_equal(state["yesno.weight"].numpy(), state3["yesno.weight"].numpy())
    with pytest.raises(Exception, match="not an encoder3d run"):
        train(out, tmp_path / "runs" / "tiny4", preset="cpu-tiny", progress=False, init_from=tmp_path)


@pytest.mark.slow
def test_perturbations_and_robustness_report(mini, tmp_path, real_ct):
    from volvqa.eval.perturb import PERTURBATIONS, perturb
    from volvqa.io import load_volume
    v = load_volume(real_ct / "example_ct_sm.nii.gz")
    for k in PERTURBATIONS:
        p = perturb(v, k, seed=1)
        assert p.array.dtype == np.int16
        assert not np.array_equal(p.array, v.array) or k == "reorient"
    r = perturb(v, "reorient")
    # Same world content: voxel (i, j, k) of the original sits where the new affine says.
    i, j, k = 10, 20, 5
    w = v.affine @ np.array([i, j, k, 1.0])
    idx = np.rint(np.linalg.solve(r.affine, w)).astype(int)[:3]
    assert r.array[tuple(idx)] == v.array[i, j, k]
    out = mini / "out"
    clean = tmp_path / "clean.jsonl"
    subprocess.run([sys.executable, "-m", "volvqa.cli", "predict", "--qa", str(out), "--model", "grounded",
                    "--split", "test", "--out", str(clean)], check=True, capture_output=True)
    res = subprocess.run([sys.executable, "-m", "volvqa.cli", "evaluate", "--qa", str(out), "--predictions", str(clean),
                          "--perturb", "reorient", "--model", "grounded", "--json", str(tmp_path / "rob.json")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rob = json.loads((tmp_path / "rob.json").read_text())
    # Masks follow the volume through world coordinates: every answer but the voxel boxes survives.
    assert rob["drop_points"]["Recognition"] == pytest.approx(0.0)
    assert rob["drop_points"]["Localization"] > 50
    # swap-ct: every case's questions answered with the next case's CT. The
    # oracle's masks stay their own case's, so on the wrong CT they fail
    # mask quality control (HU of other tissue) and are not answered from.
    res = subprocess.run([sys.executable, "-m", "volvqa.cli", "evaluate", "--qa", str(out), "--predictions", str(clean),
                          "--perturb", "swap-ct", "--model", "grounded", "--json", str(tmp_path / "swap.json")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    swapped = [json.loads(x) for x in (tmp_path / "predictions_swap-ct.jsonl").read_text().splitlines()]
    case_of = {it["qid"]: it["case_id"] for it in (json.loads(x) for x in (out / "qa.jsonl").read_text().splitlines())
               if it["split"] == "test"}
    assert len(set(case_of.values())) > 1 and len(swapped) == len(case_of)
    assert all(p["ct_case"] != case_of[p["qid"]] and p["ct_case"] in case_of.values() for p in swapped)
    rob = json.loads((tmp_path / "swap.json").read_text())
    refused = [p for p in swapped if "failed quality control" in p["answer"]]
    assert len({case_of[p["qid"]] for p in refused}) == len(set(case_of.values()))
    assert rob["drop_points"]["Recognition"] > 0


def test_grounded_cache_never_serves_another_volume():
    """Findings are cached per volume. In predict()'s pattern (load, then
    replace by a perturbed copy) a freed volume's id() is reused by the next
    case's volume, so the cache must compare identity, not ids (it once
    answered every case with the first case's masks)."""
    from volvqa import labels as L
    from volvqa.models.grounded import GroundedAnswerer
    from volvqa.records import LabelMap, Source, Volume

    arrays, maps = {}, {}
    cids = "abcdef"
    for n, cid in enumerate(cids):
        size = 8 + n
        arr = np.full((24, 24, 24), -1000, np.int16)
        lab = np.zeros((24, 24, 24), np.uint8)
        arr[4:4 + size, 4:4 + size, 4:4 + size] = 60
        lab[4:4 + size, 4:4 + size, 4:4 + size] = L.CANONICAL_IDS["liver"]
        arrays[cid] = arr
        maps[cid] = LabelMap(lab, {L.CANONICAL_IDS["liver"]: "liver"}, np.eye(4))
    # Cubes of 0.5-2.2 ml are no plausible liver: quality control off, this is about the cache.
    ans = GroundedAnswerer(lambda vol, item: maps[item["case_id"]], mode="free", qc="off")
    got = []
    for cid in cids:
        vol = Volume(arrays[cid], np.eye(4), (1.0, 1.0, 1.0), Source("mem"))
        vol = Volume(vol.array.copy(), vol.affine, vol.spacing_mm, vol.source)
        q = {"qid": "q", "case_id": cid, "question": "What is the volume of the liver in ml?"}
        got.append(ans.answer(vol, q).answer)
    assert got == ["0.5 ml", "0.7 ml", "1.0 ml", "1.3 ml", "1.7 ml", "2.2 ml"]


def test_encoder3d_answer_prior_log_frequencies():
    """Hand-worked: 3 yes and 1 no in train give log(4/6) and log(2/6) with
    add-one counts; leaving a training item's own case (1 yes) out gives
    log(3/5) and log(2/5); an unseen kind is uniform; numbers get none."""
    import math

    from volvqa.models.encoder3d import Encoder3DAnswerer, Encoder3DConfig
    a = Encoder3DAnswerer(Encoder3DConfig(answer_prior={"rec.x|organ=liver": {"yes": 3, "no": 1}}), net=None)
    item = {"qid": "c:rec.x:organ=liver", "template_id": "rec.x", "answer_type": "binary",
            "options": {"A": "Yes", "B": "No"}, "key": "rec.x|organ=liver"}
    assert a.prior_log_odds(item, ["A", "B"]) == pytest.approx([math.log(4 / 6), math.log(2 / 6)])
    assert a.prior_log_odds(item, ["A", "B"], {"yes": 1}) == pytest.approx([math.log(3 / 5), math.log(2 / 5)])
    assert a.prior_log_odds(dict(item, key="rec.y|"), ["A", "B"]) == pytest.approx([math.log(0.5)] * 2)
    assert a.prior_log_odds(dict(item, answer_type="numeric"), ["A", "B"]) == [0.0, 0.0]
    yes, _ = a.prior_answer_logits([dict(item, options=None)])
    assert float(yes[0]) == pytest.approx(math.log(4 / 2))


def test_encoder3d_question_phrasings_are_every_paraphrase(mini):
    """Training draws among all paraphrases of an item's template: each
    rendered one is distinct, parses back to the template, and the item's own
    question is among them."""
    from volvqa.models.train_encoder3d import question_phrasings
    from volvqa.qa.templates import TEMPLATES
    items = [json.loads(x) for x in (mini / "out" / "qa.jsonl").read_text().splitlines()]
    seen = set()
    for it in items:
        if it["template_id"] in seen:
            continue
        seen.add(it["template_id"])
        ph = question_phrasings(it)
        assert it["question"] in ph and len(ph) == len(set(TEMPLATES[it["template_id"]].paraphrases)) > 0
        for q in ph:
            assert it["template_id"] in {tid for tid, _ in parse_question(q)}, q
    assert len(seen) > 20 and any(len(question_phrasings(it)) > 1 for it in items)
    assert question_phrasings({"qid": "c:x", "template_id": "no.such", "question": "Why?"}) == ["Why?"]


def test_encoder3d_anatomy_targets_match_block_counts():
    from volvqa.models.encoder3d import ANATOMY_CHANNELS
    from volvqa.models.encoder3d_anatomy import LESION_FULL_COVERAGE, anatomy_targets
    from volvqa.records import LabelMap
    # (x, y, z) = 12 x 8 x 6 voxels cut into (z, y, x) = 2 x 2 x 3 tokens: blocks of 4 x 4 x 3 voxels.
    arr = np.zeros((12, 8, 6), np.uint8)
    arr[0:6, :, :] = 5                      # liver fills x 0-5
    arr[8:12, 0:4, 0:3] = 3                 # kidney_left: token x=2, y=0, z=0
    arr[4:8, 4:8, 3:6] = 2                  # kidney_right: token x=1, y=1, z=1
    arr[1, 1, 1] = 121                      # liver_tumor inside the liver, token x=0, y=0, z=0
    arr[9, 1, 1] = 122                      # kidney lesion next to the left kidney
    parts = np.zeros_like(arr)
    parts[0:6, :, 0:3] = 7                  # liver_segment_7 in the lower half
    labels = {5: "liver", 3: "kidney_left", 2: "kidney_right", 121: "liver_tumor", 122: "kidney_cyst"}
    lm = LabelMap(arr, labels, np.eye(4), parts=parts, part_labels={7: "liver_segment_7"})
    y = anatomy_targets(lm, (2, 2, 3))
    col = {c: i for i, c in enumerate(ANATOMY_CHANNELS)}
    assert y.shape == (12, len(ANATOMY_CHANNELS))
    # Independent: mean of each 4 x 4 x 3 block, tokens in (z, y, x) order.
    blocks = (arr == 5).transpose(2, 1, 0).reshape(2, 3, 2, 4, 3, 4).mean((1, 3, 5)).ravel()
    np.testing.assert_allclose(y[:, col["organ:liver"]], blocks)
    tok = lambda z, yy, x: z * 6 + yy * 3 + x  # noqa: E731
    assert y[tok(0, 0, 2), col["organ:kidney_left"]] == pytest.approx(47 / 48)  # one voxel is its lesion
    assert y[tok(1, 1, 1), col["organ:kidney_right"]] == 1.0
    assert y[tok(0, 0, 0), col["part:liver_segment_7"]] == 1.0  # parts overlap lesions
    one = (1 / 48) / LESION_FULL_COVERAGE    # one lesion voxel of a 48-voxel block
    lesion = y[:, col["lesion:liver"]]
    assert lesion[tok(0, 0, 0)] == pytest.approx(one) and lesion.sum() == pytest.approx(one)
    assert y[tok(0, 0, 0), col["lesion@liver_segment_7"]] == pytest.approx(one)
    assert y[:, col["lesion@liver_segment_7"]].sum() == pytest.approx(one)
    assert y[tok(0, 0, 2), col["lesion:kidney"]] == pytest.approx(one)
    assert y[:, col["lesion@kidney_left"]].sum() == pytest.approx(one) and y[:, col["lesion@kidney_right"]].sum() == 0
    # Three voxels (6%) saturate at 1.
    arr[1:4, 1, 1] = 121
    y = anatomy_targets(LabelMap(arr, labels, np.eye(4), parts=parts, part_labels={7: "liver_segment_7"}), (2, 2, 3))
    assert y[tok(0, 0, 0), col["lesion:liver"]] == 1.0


def test_encoder3d_cells_from_tokens_layout():
    import torch

    from volvqa.models.encoder3d import cells_from_tokens
    tok_grid, r, c = (2, 3, 2), 2, 3
    raw = torch.zeros(1, 12, r ** 3 * c)
    expected = np.zeros((4, 6, 4, c))
    rng = np.random.default_rng(0)
    for t in range(12):
        i, j, k = np.unravel_index(t, tok_grid)
        for s in range(r ** 3):
            a, b, d = np.unravel_index(s, (r, r, r))
            v = rng.random(c)
            raw[0, t, s * c:(s + 1) * c] = torch.from_numpy(v)
            expected[i * r + a, j * r + b, k * r + d] = v
    out = cells_from_tokens(raw, tok_grid, r)
    np.testing.assert_allclose(out[0].numpy(), expected.reshape(-1, c), rtol=1e-6)


@pytest.mark.parametrize("total", [1, 3, 10, 11, 40])
def test_one_cycle_schedule_survives_short_runs(total):
    # torch's OneCycleLR divides by zero at exactly 10 steps with a 10% warm-up.
    import torch

    from volvqa.models.train_encoder3d import one_cycle
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    sched = one_cycle(opt, 0.01, total)
    lrs = []
    for _ in range(total):
        opt.step()
        sched.step() if _ < total - 1 else None
        lrs.append(opt.param_groups[0]["lr"])
    assert all(0 < lr <= 0.01 + 1e-12 for lr in lrs)


@pytest.mark.slow
def test_prior_answers_in_words_in_free_mode(mini, tmp_path):
    """The blind prior in free mode: the train majority answer, the train median with its unit, the
    train median box; never an option letter or an all-zero box (which a free-form scorer gives 0)."""
    from collections import Counter

    from volvqa.bench.layout import load_qa
    out = mini / "out"
    items, _cases, _info = load_qa(out)
    preds = tmp_path / "pf.jsonl"
    r = subprocess.run([sys.executable, "-m", "volvqa.cli", "predict", "--qa", str(out), "--model", "prior",
                        "--split", "test", "--mode", "free", "--out", str(preds)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = {p["qid"]: p["answer"] for p in map(json.loads, preds.read_text().splitlines())}
    train = [it for it in items if it["split"] == "train"]
    by_key = {}
    from volvqa.qa.audit import key_of
    for it in train:
        by_key.setdefault(key_of(it), []).append(it)
    checked = Counter()
    test = [it for it in items if it["split"] == "test"]
    for it in test:
        ans = got[it["qid"]]
        same = by_key.get(key_of(it), [])
        assert ans not in ("A", "B", "C", "D", "[0, 0, 0, 0, 0, 0]"), (it["qid"], ans)
        if not same:
            assert ans.startswith("cannot answer"), ans
            continue
        if it["answer_type"] in ("binary", "categorical"):
            top = Counter(str(x["answer"]) for x in same).most_common()
            assert ans in {a for a, n in top if n == top[0][1]}, (it["qid"], ans, top)
        elif it["answer_type"] == "numeric":
            assert float(ans.split()[0]) == pytest.approx(float(np.median([x["answer"] for x in same])), rel=0.01,
                                                          abs=0.01), (ans, [x["answer"] for x in same])
            assert it.get("unit") is None or ans.endswith(it["unit"]) or it["unit"] in ("", "count")
        elif it["answer_type"] == "bbox":
            want = np.median([x["answer"]["voxel"] for x in same], axis=0)
            assert json.loads(ans) == [int(round(v)) for v in want]
        checked[it["answer_type"]] += 1
    assert checked["binary"] and checked["numeric"] and checked["bbox"], checked
    r = subprocess.run([sys.executable, "-m", "volvqa.cli", "evaluate", "--qa", str(out), "--predictions", str(preds),
                        "--json", str(tmp_path / "s.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    s = next(iter(json.loads((tmp_path / "s.json").read_text()).values()))
    # Every answer parses but the "cannot answer"s (kinds train never asks), which count as wrong.
    cannot = sum(got[it["qid"]].startswith("cannot answer") for it in test)
    assert s["overall"]["parsed"] == pytest.approx(1 - cannot / len(test), abs=0.01), (s["overall"], cannot)
    assert s["overall"]["score"] > 0.1, s["overall"]


@pytest.mark.parametrize("answer_type, truth", [("binary", "no"), ("categorical", "cyst"), ("numeric", 3.0)])
def test_an_abstention_is_never_parsed_as_an_answer(answer_type, truth):
    from volvqa.eval.metrics import score_item
    item = {"qid": "q", "answer_type": answer_type, "answer": truth}
    s = score_item(item, "cannot answer: no train item asks this; not a cyst, 3 ml", "free")
    assert s["parsed"] is False and s["score"] == 0.0, s
