"""Question generation and build-qa: answers vs phantom truth, options, balance,
determinism, resume after a kill, Ray vs local, real CT with inserted lesions."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from volvqa.qa.options import item_rng, numeric_options
from volvqa.qa.templates import CATEGORIES, TEMPLATES

N_CASES = 8


def _manifest(tmp: Path, root: Path, n=N_CASES, extra="") -> Path:
    p = tmp / "mini.yaml"
    p.write_text(f"name: mini\nlayout: synthetic\nroot: {root}\ngenerate: {{n: {n}, seed: 0}}\n"
                 f"splits: {{train: 0.5, val: 0.2, test: 0.3}}\nseed: 0\nlicense: \"CC0\"\n{extra}")
    return p


def _build(manifest: Path, out: Path, *args) -> dict:
    r = subprocess.run([sys.executable, "-m", "volvqa.cli", "build-qa", str(manifest), "--out", str(out), "--json", *args],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def _hashes(out: Path) -> dict:
    files = ["qa.jsonl", "qa.parquet", "cases.parquet", "dataset_card.md", "audit.json"]
    files += sorted(str(p.relative_to(out)) for p in (out / "images").glob("*.png"))
    files += sorted(str(p.relative_to(out)) for p in (out / "cases").glob("*/*"))
    return {f: hashlib.sha256((out / f).read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qa")
    m = _manifest(tmp, tmp / "data")
    res = _build(m, tmp / "out", "--workers", "2")
    return tmp, m, tmp / "out", res


def test_build_outputs_and_loaders(built):
    tmp, m, out, res = built
    assert res["cases"] == N_CASES and res["failed_now"] == 0
    items = [json.loads(line) for line in (out / "qa.jsonl").read_text().splitlines()]
    assert len(items) == res["questions"] > 150
    assert {it["category"] for it in items} == set(CATEGORIES)
    df = pd.read_parquet(out / "qa.parquet")
    assert len(df) == len(items) and list(df.qid) == [it["qid"] for it in items]
    import datasets
    ds = datasets.load_dataset("parquet", data_files=str(out / "qa.parquet"), split="train",
                               cache_dir=str(tmp / "hf"))
    assert ds.num_rows == len(items) and "options" in ds.column_names
    cases = pd.read_parquet(out / "cases.parquet")
    assert len(cases) == N_CASES and cases.error.isna().all()
    # A case never sits in two splits.
    assert all(len(set(g)) == 1 for _, g in df.groupby("case_id").split)
    for it in items:
        assert it["bbox_voxel"] and it["bbox_mm"], it["qid"]
        assert it["evidence"], it["qid"]
        if it["category"] == "Medical Reasoning" and TEMPLATES[it["template_id"]].rule:
            assert it["evidence"]["rule"] in __import__("volvqa.knowledge", fromlist=["x"]).RULES
        if it["image"]:
            assert (out / it["image"]).is_file()
    for c in cases.case_id:
        assert (out / "cases" / c / "findings.json").is_file() and (out / "cases" / c / "report.txt").is_file()
    card = (out / "dataset_card.md").read_text()
    assert "Shortcut audit" in card and "CC0" in card
    # Phantoms annotate their whole vocabulary, and no phantom mask fails quality control.
    from volvqa.synth.dataset import PHANTOM_ANNOTATES
    info = json.loads((out / "build.json").read_text())
    assert set(info["annotates"]) == PHANTOM_ANNOTATES and info["qc"]["mode"] == "exclude"
    qc = json.loads((out / "qc.json").read_text())
    assert qc["cases_with_findings"] == 0 and qc["cases"] == {}
    assert "## What the masks annotate" in card and "No structure failed a check." in card
    assert all(json.loads((out / "cases" / c / "qc.json").read_text())["findings"] == [] for c in cases.case_id)


def test_answers_equal_phantom_truth(built):
    """Every generated answer (before options and the audit pick what is
    exported) that phantom truth can recompute."""
    tmp, m, out, res = built
    items = [it for p in sorted((out / "work").glob("*/items.json")) for it in json.loads(p.read_text())]
    truths = {p.name: json.loads((p / "truth.json").read_text()) for p in (tmp / "data").iterdir() if p.is_dir()}
    checked = Counter()

    def fam(organ):
        return "kidney" if organ.startswith("kidney") else organ

    def lesion_in_box(t, box):
        hits = [x for x in t["lesions"] if all(box[i] - 0.5 <= x["centroid_voxel"][i] <= box[i + 3] + 0.5 for i in range(3))]
        assert len(hits) == 1
        return hits[0]

    for it in items:
        t = truths[it["case_id"]]
        p = it["qid"].split(":", 2)[2] if it["qid"].count(":") == 2 else ""
        params = dict(kv.split("=", 1) for kv in p.split(",")) if p else {}
        tid, ans = it["template_id"], it["answer"]
        les = t["lesions"]
        voxel_ml = float(np.prod(t["config"]["spacing_mm"])) / 1000
        if tid == "rec.lesion_exists":
            assert ans == ("yes" if any(fam(x["organ"]) == params["organ"] for x in les) else "no")
        elif tid == "vr.lesion_count":
            assert ans == sum(fam(x["organ"]) == params["organ"] for x in les)
        elif tid == "rec.kidney_kind_exists":
            assert ans == ("yes" if any(fam(x["organ"]) == "kidney" and x["kind"] == params["kind"] for x in les) else "no")
        elif tid == "rec.organ_presence":
            assert ans == ("no" if params["organ"] in t["variants"]["absent"] else "yes")
        elif tid == "meas.organ_volume":
            assert ans == pytest.approx(t["labels"][params["organ"]]["volume_ml"], abs=0.051)
        elif tid in ("rec.splenomegaly", "med.splenomegaly_grade"):
            v = t["labels"]["spleen"]["volume_ml"]
            grade = t["variants"]["spleen_grade"]
            assert ans == (grade if tid.startswith("med") else ("no" if grade == "normal" else "yes"))
            assert (v > 314.5) == (grade != "normal")
        elif tid == "med.fatty_liver":
            assert ans == ("yes" if t["variants"]["fatty_liver"] else "no")
        elif tid == "med.pancreatic_steatosis":
            assert ans == ("yes" if t["variants"]["fatty_pancreas"] else "no")
        elif tid == "vr.organ_enlargement":
            from volvqa.knowledge import ENLARGED_ML
            assert ans == ("yes" if t["labels"][params["organ"]]["volume_ml"] > ENLARGED_ML[params["organ"]] else "no")
        elif tid == "meas.lesion_volume":
            assert ans == pytest.approx(lesion_in_box(t, it["bbox_voxel"][0])["voxels"] * voxel_ml, abs=0.006)
        elif tid == "vr.kidney_lesion_side":
            assert "kidney_" + ans == lesion_in_box(t, it["bbox_voxel"][0])["organ"]
        elif tid == "med.each_lesion_type":
            assert ans == lesion_in_box(t, it["bbox_voxel"][0])["kind"]
        elif tid == "meas.largest_lesion_volume":
            assert ans == pytest.approx(max(x["voxels"] for x in les if fam(x["organ"]) == params["organ"]) * voxel_ml,
                                        abs=0.006)
        else:
            continue
        checked[tid] += 1
    assert sum(checked.values()) > 60 and len(checked) >= 10, checked


def test_options_are_fair(built):
    tmp, m, out, res = built
    items = [json.loads(line) for line in (out / "qa.jsonl").read_text().splitlines()]
    mc = [it for it in items if it["options"]]
    letters = Counter(it["correct_option"] for it in mc if len(it["options"]) == 4)
    total = sum(letters.values())
    # Loose on 8 cases (the audit's exclusion adds sampling noise); the
    # builders themselves are checked for uniformity in test_letters_uniform.
    assert all(0.10 < letters[k] / total < 0.40 for k in "ABCD"), letters
    for it in mc:
        texts = list(it["options"].values())
        assert len(set(texts)) == len(texts)
        right = it["options"][it["correct_option"]]
        if it["answer_type"] == "numeric":
            assert float(right.split()[0]) == pytest.approx(float(it["answer"]), abs=1e-9)
        else:
            assert right.lower() == str(it["answer"]).lower()
        if it["answer_type"] == "numeric":
            vals = [float(x.split()[0]) for x in texts]
            units = {x.split()[1] if len(x.split()) > 1 else "" for x in texts}
            decimals = {len(x.split()[0].split(".")[1]) if "." in x.split()[0] else 0 for x in texts}
            assert len(units) == 1 and len(decimals) == 1, texts
            for i in range(len(vals)):
                for j in range(i + 1, len(vals)):
                    a, b = vals[i], vals[j]
                    assert abs(a - b) >= 0.25 * max(min(abs(a), abs(b)), 1e-9) - 1e-9, texts


def test_letters_uniform():
    from volvqa.qa.options import binary_options, categorical_options
    cat = Counter(categorical_options("b", ["a", "b", "c", "d", "e"], 4, item_rng(0, str(k)))[1] for k in range(800))
    num = Counter(numeric_options(10.0, [5.0, 20.0, 40.0], 4, item_rng(2, str(k)), decimals=1, unit="ml")[1]
                  for k in range(800))
    yn = Counter(binary_options("yes", item_rng(3, str(k)))[1] for k in range(800))
    assert all(160 < cat[i] < 240 and 160 < num[i] < 240 for i in range(4)), (cat, num)
    assert 340 < yn[0] < 460


def test_numeric_options_properties():
    rng = np.random.default_rng(0)
    pool = list(np.exp(rng.normal(3, 0.6, 200)))
    ranks = Counter()
    for k in range(1000):
        t = float(pool[k % 200])
        texts, c = numeric_options(t, pool, 5, item_rng(1, str(k)), decimals=1, unit="ml")
        assert len(texts) == 5 and len(set(texts)) == 5 and texts[c] == f"{round(t, 1):.1f} ml"
        ranks[c] += 1
    assert all(150 < ranks[i] < 250 for i in range(5)), ranks  # 200 expected, sd 12.6


def test_balance_and_audit_exclusion(built):
    tmp, m, out, res = built
    items = [json.loads(line) for line in (out / "qa.jsonl").read_text().splitlines()]
    audit = json.loads((out / "audit.json").read_text())
    kept = {it["subtype"] for it in items}
    for sub, row in audit.items():
        if row["flagged"]:
            assert sub not in kept
    by = Counter((it["template_id"], it["split"], it["answer"]) for it in items if it["answer_type"] == "binary"
                 and TEMPLATES[it["template_id"]].key_params is not None and not TEMPLATES[it["template_id"]].key_params)
    for (tid, split, ans), n in by.items():
        other = by.get((tid, split, "no" if ans == "yes" else "yes"), 0)
        assert n == other, (tid, split)


@pytest.mark.slow
def test_deterministic_and_ray_identical(built, tmp_path):
    tmp, m, out, res = built
    again = tmp_path / "again"
    _build(m, again, "--workers", "1")
    assert _hashes(again) == _hashes(out)
    ray_out = tmp_path / "ray"
    _build(m, ray_out, "--engine", "ray")
    assert _hashes(ray_out) == _hashes(out)


@pytest.mark.slow
def test_resume_after_kill_gives_identical_output(built, tmp_path):
    tmp, m, out, res = built
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "volvqa.cli", "build-qa", str(m), "--out", str(killed),
                             "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if len(list((killed / "work").glob("*/items.json"))) >= 2 if (killed / "work").exists() else False:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((killed / "work").glob("*/items.json")))
    assert 2 <= done < N_CASES and not (killed / "qa.jsonl").exists()
    _build(m, killed, "--workers", "2")
    assert _hashes(killed) == _hashes(out)


@pytest.mark.slow
def test_shards_then_merge(built, tmp_path):
    """The Slurm scripts themselves, run as the array tasks and the merge job would run them."""
    tmp, m, out, res = built
    sh = tmp_path / "sharded"
    from tests.helpers import REPO as repo
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               SLURM_ARRAY_TASK_COUNT="3", SLURM_CPUS_PER_TASK="1")
    for i in range(3):
        r = subprocess.run(["bash", str(repo / "pipelines/slurm/build_qa.sbatch"), str(m), str(sh)],
                           env=dict(env, SLURM_ARRAY_TASK_ID=str(i)), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    r = subprocess.run(["bash", str(repo / "pipelines/slurm/merge.sbatch"), str(m), str(sh)], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert _hashes(sh) == _hashes(out)


def test_failing_case_is_recorded_and_others_go_on(tmp_path, real_ct):
    root = tmp_path / "d"
    (root / "bad").mkdir(parents=True)
    (root / "bad" / "ct.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (root / "good").mkdir()
    for name in ("example_ct_sm.nii.gz",):
        (root / "good" / "ct.nii.gz").write_bytes((real_ct / name).read_bytes())
    (root / "good" / "seg.nii.gz").write_bytes((real_ct / "example_seg.nii.gz").read_bytes())
    (root / "bad" / "seg.nii.gz").write_bytes((real_ct / "example_seg.nii.gz").read_bytes())
    m = tmp_path / "m.yaml"
    m.write_text(f"layout: synthetic\nroot: {root}\nsplits: {{train: 0.5, test: 0.5}}\n")
    res = _build(m, tmp_path / "out")
    assert res["failed_now"] == 1 and res["questions"] > 0
    errs = [json.loads(x) for x in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert errs[0]["case_id"] == "bad" and "gzip" in errs[0]["error"]


@pytest.mark.slow
def test_real_ct_with_inserted_lesions_end_to_end(tmp_path, real_ct):
    spec = tmp_path / "spec.yaml"
    spec.write_text("seed: 5\nlesions:\n"
                    "  - {organ: liver, kind: tumor, diameter_mm: 22, hu_delta: -40, count: 2}\n"
                    "  - {organ: liver, kind: cyst, diameter_mm: 14, hu: 4}\n"
                    "  - {organ: kidney, kind: cyst, diameter_mm: 12, hu: 5}\n"
                    "  - {organ: pancreas, kind: tumor, diameter_mm: 8, hu_delta: -25}\n")
    data = tmp_path / "data"
    r = subprocess.run([sys.executable, "-m", "volvqa.cli", "synth", "lesions", "--volume",
                        str(real_ct / "example_ct_sm.nii.gz"), "--masks", str(real_ct / "example_seg.nii.gz"),
                        "--labels", "totalsegmentator", "--spec", str(spec), "--out", str(data), "--n", "4"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = tmp_path / "real.yaml"
    m.write_text(f"name: real-lesions\nlayout: synthetic\nroot: {data}\nsplits: {{train: 0.5, test: 0.5}}\n")
    res = _build(m, tmp_path / "out", "--include-flagged")
    assert res["failed_now"] == 0 and res["questions"] > 40
    items = [json.loads(x) for x in (tmp_path / "out" / "qa.jsonl").read_text().splitlines()]
    truth = json.loads((data / "example_ct_sm_lesions_000" / "truth.json").read_text())
    counts = {it["answer"] for it in items if it["template_id"] == "vr.lesion_count"
              and it["case_id"] == "example_ct_sm_lesions_000" and "organ=liver" in it["qid"]}
    assert counts <= {sum(x["organ"] == "liver" for x in truth["lesions"])}
    assert {it["category"] for it in items} >= {"Recognition", "Visual Reasoning", "Localization"}


def test_qa_audit_cli(built):
    from click.testing import CliRunner

    from volvqa.cli import main
    tmp, m, out, res = built
    r = CliRunner().invoke(main, ["qa", "audit", str(out)])
    assert r.exit_code == 0, r.output
    assert "subtypes in qa.jsonl" in r.stdout and "flagged at build time" in r.stdout
    r = CliRunner().invoke(main, ["qa", "audit", str(tmp)])
    assert r.exit_code == 2 and "qa.jsonl" in r.stderr


def _audit_items(answers_by_case, question_of, split_of, options=("yes", "no")):
    items = []
    for k, ans in enumerate(answers_by_case):
        opts = {"A": options[0], "B": options[1]}
        items.append({"qid": f"c{k}:t.x", "case_id": f"c{k}", "split": split_of(k), "subtype": "s",
                      "category": "Recognition", "template_id": "t.x", "answer_type": "binary", "answer": ans,
                      "options": opts, "correct_option": "A" if ans == opts["A"] else "B",
                      "question": question_of(k), "key": "t.x|"})
    return items


def test_audit_interval_and_statuses_by_hand():
    """Wilson intervals against the closed form, and the three statuses at their edges."""
    from volvqa.qa.audit import accuracy_interval, audit_status
    z = 1.959963984540054
    for k, n in ((10, 10), (4, 9), (0, 5), (33, 40)):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        assert accuracy_interval(k, n) == pytest.approx((centre - half, centre + half), abs=1e-9)
    # 10/10 at chance 25%: lower end 72.2% > 35%: flagged. 4/9: 18.9% < 35%: kept.
    assert audit_status(10, 10, 0.25)[0] == "flagged" and audit_status(4, 9, 0.25)[0] == "ok"
    # Two items, chance 50%: even 2/2 has a lower end of 34%: cannot show 10 points above chance.
    assert audit_status(2, 2, 0.5)[0] == "not enough items"
    assert audit_status(6, 6, 0.5)[0] == "flagged" and audit_status(5, 5, 0.5)[0] == "not enough items"
    # Several guesses tried: the interval widens (Bonferroni), 6/6 is no longer enough.
    assert audit_status(6, 6, 0.5, n_guesses=3)[0] == "not enough items"


def test_audit_catches_a_paraphrase_that_goes_with_the_answer():
    """Balanced yes/no, so the per-question prior is at chance, but one wording always means yes: the
    by-wording guess finds it and the subtype is flagged; the same items worded at random are not."""
    from volvqa.qa.audit import audit
    answers = ["yes" if k % 2 else "no" for k in range(80)]
    split = lambda k: "train" if k < 40 else "test"  # noqa: E731
    told = _audit_items(answers, lambda k: "Is it so?" if k % 2 else "Would you say it is so?", split)
    row = audit(told)["s"]
    assert row["best_blind_guess"] == "same wording" and row["question_only_accuracy"] == 1.0
    assert row["status"] == "flagged" and row["audited_items"] == 40
    rng = np.random.default_rng(0)
    words = ["Is it so?", "Would you say it is so?"]
    fair = _audit_items(answers, lambda k: words[int(rng.integers(2))], split)
    assert audit(fair)["s"]["status"] == "ok"


def test_median_rank_thinning_by_hand():
    from volvqa.qa.options import _count_cap, _median_rank, balance_median_rank
    # Ranks 0..3 kept 29, 2, 6, 7 times: at most 6 per rank leaves 6/20 = 0.30 (7 would give 7/23 = 0.304).
    assert _count_cap({0: 29, 1: 2, 2: 6, 3: 7}, 4) == 6
    # Only the two nearest ranks survive: no cap reaches 0.30, the kind is left whole.
    assert _count_cap({0: 13, 1: 4}, 4) is None
    # Truth 50 among 10 / 30 / 50 / 90 ml, median 45: by log distance 50 is nearest, then 30, 90, 10.
    it = {"options": {"A": "10 ml", "B": "30 ml", "C": "50 ml", "D": "90 ml"}, "correct_option": "C"}
    assert _median_rank(it, 45.0) == 0 and _median_rank({**it, "correct_option": "A"}, 45.0) == 3
    # Signed values (a value <= 0) are ranked by plain distance: -20 is farther from 5 than 20.
    assert _median_rank({"options": {"A": "-20 HU", "B": "20 HU"}, "correct_option": "A"}, 5.0) == 1

    def item(i, values, truth, split):
        letters = "ABCD"
        return {"qid": f"c{i}:meas.x", "key": "meas.x|", "answer_type": "numeric", "split": split,
                "answer": truth, "options": {letters[k]: f"{v} ml" for k, v in enumerate(values)},
                "correct_option": letters[values.index(truth)]}
    # Train answers are all 100 ml (the usual answer). Ranks by log distance to 100: 100 among 200/300/400
    # is 0; 150 among 110/300/500 is 1; 150 among 110/120/500 is 2; 500 among 110/120/150 is 3.
    items = [item(i, [100, 200, 300, 400], 100, "train") for i in range(8)]
    items += [item(10 + i, [100, 200, 300, 400], 100, "test") for i in range(20)]
    items += [item(40 + i, [110, 150, 300, 500], 150, "test") for i in range(4)]
    items += [item(50 + i, [110, 120, 150, 500], 150, "test") for i in range(4)]
    items += [item(60 + i, [110, 120, 150, 500], 500, "test") for i in range(4)]
    # 28 / 4 / 4 / 4 by rank: at most 5 per rank (5/17 = 0.294 <= 0.30; 6/18 = 0.33) -> 23 thinned, all rank 0.
    assert balance_median_rank(items, 4, seed=0) == 23
    kept = [it for it in items if not it.get("drop_reason")]
    assert sorted(_median_rank(it, 100.0) for it in kept) == [0] * 5 + [1] * 4 + [2] * 4 + [3] * 4
    again = [{k: v for k, v in it.items() if k != "drop_reason"} for it in items]
    balance_median_rank(again, 4, seed=0)
    assert [bool(a.get("drop_reason")) for a in again] == [bool(b.get("drop_reason")) for b in items]
