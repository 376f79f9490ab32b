"""The demo population: spread of organ sizes, densities, phases and lesions,
clinical rules on both sides of their thresholds, and the contrast phase
carried from the manifest, DICOM and phantom truth to the questions."""
import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from volvqa.cli import main
from volvqa.knowledge import (
    KIDNEY_ENLARGED_LENGTH_MM,
    PANCREAS_T_STAGE_MM,
    PANCREATIC_STEATOSIS_PS_RATIO,
    PSEUDOCYST_HU,
    SPLENOMEGALY_ML,
    renal_lesion_type,
    splenomegaly_grade,
    steatosis_grade,
)
from volvqa.phase import is_contrast, normalise_phase
from volvqa.synth.population import (
    LESION_SIZE_MM,
    PHASE_SHARES,
    draw_case,
    kidney_cyst_hu,
    lesion_count,
    lesion_diameter_mm,
)

N_DRAWS = 3000


@pytest.fixture(scope="module")
def draws():
    rng = np.random.default_rng(2026)
    return [draw_case(rng) for _ in range(N_DRAWS)]


def test_organ_volumes_spread_like_adults(draws):
    liver = np.array([d["liver_ml"] for d in draws])
    spleen = np.array([d["spleen_ml"] for d in draws])
    # Kim et al.: central 95% of healthy livers 825-1700 ml; ours adds a hepatomegaly tail.
    assert 0.15 < liver.std() / liver.mean() < 0.40
    assert np.percentile(liver, 2.5) < 1100 and np.percentile(liver, 97.5) > 2200
    male = np.array([d["sex"] == "male" for d in draws])
    assert liver[male].mean() > 1.1 * liver[~male].mean()          # Geraghty: 1710 vs 1411 ml
    grades = {splenomegaly_grade(v) for v in spleen}
    assert grades == {"normal", "mild", "moderate", "severe"}
    assert 0.15 < (spleen > SPLENOMEGALY_ML).mean() < 0.40
    kidney = np.array([d["kidney_length_mm"] for d in draws])
    assert 0.05 < (kidney > KIDNEY_ENLARGED_LENGTH_MM).mean() < 0.2
    assert kidney.min() < 95 and kidney.std() > 8
    gb = np.array([d["gallbladder_ml"] for d in draws])
    assert gb.min() < 15 and gb.max() > 60


def test_phases_habitus_and_field_of_view(draws):
    phases = [d["phase"] for d in draws]
    for phase, share in PHASE_SHARES.items():
        assert abs(phases.count(phase) / len(draws) - share) < 0.04, phase
    enhanced = [d for d in draws if is_contrast(d["phase"])]
    assert all(d["enhancement_hu"]["liver"] >= 10 for d in enhanced)
    pv = [d["enhancement_hu"]["liver"] for d in draws if d["phase"] == "portal venous"]
    assert min(pv) >= 45                     # Bae: hepatic enhancement >= 50 HU at portal venous peak (45 floor)
    art = [d["enhancement_hu"]["artery"] for d in draws if d["phase"] == "arterial"]
    assert min(art) >= 200
    assert all(d["enhancement_hu"]["liver"] == 0 for d in draws if d["phase"] == "non-contrast")
    shifted = np.array([d["z_shift_mm"] != 0 for d in draws])
    assert 0.15 < shifted.mean() < 0.25
    assert np.ptp([d["body_scale"] for d in draws]) > 0.15


def test_attenuation_rules_fall_on_both_sides_and_clear_of_thresholds(draws):
    steatosis, ps_sides = set(), set()
    for d in draws:
        hu = d["unenhanced_hu"]
        ls = hu["liver"] / hu["spleen"]
        steatosis.add(steatosis_grade(hu["liver"], ls))
        ps = hu["pancreas"] / hu["spleen"]
        ps_sides.add(ps < PANCREATIC_STEATOSIS_PS_RATIO)
        # Decisive truth: drawn values never sit within the measurement's wobble of a threshold.
        assert not 0.92 + 1e-9 < ls < 1.08 - 1e-9, hu
        assert all(abs(hu["liver"] - e) >= 2.0 - 1e-9 for e in (39.0, 51.0, 58.0)), hu
        assert not 0.64 + 1e-9 < ps < 0.80 - 1e-9, hu
    assert steatosis == {"none", "mild", "moderate", "severe"}
    assert ps_sides == {True, False}


def test_lesion_counts_sizes_and_kinds_cover_their_ranges():
    rng = np.random.default_rng(7)
    liver = np.array([lesion_count(rng, "liver") for _ in range(4000)])
    assert (liver == 0).mean() > 0.3 and (liver >= 10).sum() > 40 and (liver >= 15).sum() > 5
    assert liver.max() <= 18
    kidney = np.array([lesion_count(rng, "kidney") for _ in range(4000)])
    assert set(range(0, 4)) <= set(kidney.tolist())
    sizes = np.array([lesion_diameter_mm(rng, "liver") for _ in range(4000)])
    assert sizes.min() == pytest.approx(5.0) and sizes.max() > 100 and (sizes > 80).sum() > 10
    assert LESION_SIZE_MM["liver"][3] == 120.0
    pancreas = np.array([lesion_diameter_mm(rng, "pancreas") for _ in range(4000)])
    t_stages = {next(s for upper, s in PANCREAS_T_STAGE_MM if d < upper) for d in pancreas}
    assert t_stages == {"T1", "T2", "T3"}
    cyst_types = {renal_lesion_type(kidney_cyst_hu(rng), "cyst") for _ in range(2000)}
    assert len(cyst_types) >= 3, cyst_types
    # Pancreatic cysts are drawn 0-30 HU: both sides of the pseudocyst threshold.
    assert 0 < PSEUDOCYST_HU < 30


def test_phase_names():
    assert normalise_phase("PV") == "portal venous" and normalise_phase("unenhanced") == "non-contrast"
    assert normalise_phase(None) == "unknown"
    with pytest.raises(Exception, match="unknown contrast phase 'nephrographic-ish'"):
        normalise_phase("nephrographic-ish", "m.yaml")


def _contrast_phantom():
    from volvqa.synth.dataset import phantom_case
    for i in range(40):
        cid, v, lm, truth = phantom_case(i, 0)
        if truth["phase"] != "non-contrast" and "spleen" in {o for o in truth["labels"]}:
            return cid, v, lm, truth
    raise AssertionError("no contrast-phase phantom in 40")


@pytest.mark.slow
def test_contrast_phase_case_carries_no_unenhanced_rule_and_grounded_says_why():
    from volvqa.findings import extract
    from volvqa.models.grounded import GroundedAnswerer
    from volvqa.qa.context import CaseContext
    from volvqa.qa.generate import case_items
    cid, v, lm, truth = _contrast_phantom()
    assert v.meta["phase"] == truth["phase"]
    f = extract(v, lm)
    assert f.phase == truth["phase"]
    unenhanced_only = {"med.fatty_liver", "med.steatosis_grade", "med.pancreatic_steatosis", "med.renal_mass_type",
                       "med.pseudocyst"}
    items = case_items(CaseContext(cid, f), 0)
    assert not unenhanced_only & {it["template_id"] for it in items}
    # The same scan read as unenhanced carries them (so the phase, not the anatomy, removed them).
    v.meta["phase"] = "non-contrast"
    f2 = extract(v, lm)
    assert {"med.fatty_liver", "med.steatosis_grade"} <= {it["template_id"] for it in case_items(CaseContext(cid, f2), 0)}
    asked = next(it for it in case_items(CaseContext(cid, f2), 0) if it["template_id"] == "med.fatty_liver")
    assert asked["evidence"]["phase"] == "non-contrast"
    v.meta["phase"] = truth["phase"]
    pred = GroundedAnswerer(lambda vol, item: lm).answer(v, {"qid": "q", "case_id": cid,
                                                             "question": asked["question"]})
    assert pred.answer.startswith("cannot answer: the rule holds on unenhanced CT"), pred.answer
    assert f"contrast-enhanced ({truth['phase']} phase)" in pred.answer


def test_dicom_contrast_agent_gives_contrast_phase(real_ct):
    from volvqa.io import load_volume
    v = load_volume(real_ct / "example_ct_dicom")
    assert v.meta["phase"] == "contrast"
    assert load_volume(real_ct / "example_ct_sm.nii.gz").meta.get("phase", "unknown") == "unknown"


def test_manifest_phase_reaches_case_json_and_bad_phase_is_exit_2(tmp_path, real_ct):
    import shutil
    root = tmp_path / "data"
    root.mkdir()
    for name in ("example_ct_sm.nii.gz", "example_seg.nii.gz"):
        shutil.copy(real_ct / name, root / name)
    (root / "cases.csv").write_text("case_id,ct,masks,labels,phase\n"
                                    "a,example_ct_sm.nii.gz,example_seg.nii.gz,totalsegmentator,PV\n")
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump({"name": "p", "layout": "csv", "root": "data", "csv": "data/cases.csv",
                                 "splits": {"test": 1.0}}))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["build-qa", str(m), "--out", str(out), "--workers", "1"])
    assert res.exit_code == 0, res.output
    case = json.loads((out / "work" / "a" / "case.json").read_text())
    assert case["phase"] == "portal venous"
    items = [json.loads(x) for x in (out / "qa.jsonl").read_text().splitlines()]
    assert items and not any(it["template_id"] in ("med.fatty_liver", "med.steatosis_grade") for it in items)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "p", "layout": "csv", "root": "data", "csv": "data/cases.csv",
                                   "phase": "nephrographic-ish", "splits": {"test": 1.0}}))
    res = CliRunner().invoke(main, ["build-qa", str(bad), "--out", str(tmp_path / "out2")])
    assert res.exit_code == 2
    assert "nephrographic-ish" in res.output and str(bad) in res.output
    assert not (tmp_path / "out2").exists()
