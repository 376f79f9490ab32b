"""Phantoms and lesion synthesis: known truth recovered by findings."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

from volvqa import labels as L
from volvqa.cli import main
from volvqa.datasets import load_cases
from volvqa.findings import extract
from volvqa.io import load_labelmap, load_volume
from volvqa.io.nifti import encode_nifti
from volvqa.knowledge import splenomegaly_grade
from volvqa.records import LabelMap, Source, Volume
from volvqa.synth.dataset import phantom_case
from volvqa.synth.lesions import LesionDoesNotFit, LesionRequest, insert_lesions
from volvqa.synth.phantom import PhantomConfig, generate_phantom
from volvqa.synth.recovery import score_case, summarise, table

CID = L.CANONICAL_IDS


def _records(ph):
    v = Volume(ph.ct, ph.affine, tuple(np.linalg.norm(ph.affine[:3, :3], axis=0)), Source("phantom"))
    names = {int(i): L.CANONICAL_NAMES[int(i)] for i in np.unique(ph.labels) if i}
    plabels = {int(i): n for n, i in L.PART_IDS.items() if (ph.parts == i).any()}
    return v, LabelMap(ph.labels, names, ph.affine, parts=ph.parts, part_labels=plabels)


@pytest.mark.slow
def test_phantom_is_deterministic_and_anatomical():
    a = generate_phantom(PhantomConfig(seed=5))
    b = generate_phantom(PhantomConfig(seed=5))
    assert encode_nifti(a.ct, a.affine, compress=True) == encode_nifti(b.ct, b.affine, compress=True)
    assert encode_nifti(a.labels, a.affine, compress=True) == encode_nifti(b.labels, b.affine, compress=True)
    assert not np.array_equal(a.ct, generate_phantom(PhantomConfig(seed=6)).ct)
    v, lm = _records(a)
    f = extract(v, lm)
    o = f.organs
    # Sides in RAS: the patient's right has the larger x.
    assert o["liver"].centroid_mm[0] > 0 > o["spleen"].centroid_mm[0]
    assert o["kidney_left"].centroid_mm[0] < 0 < o["kidney_right"].centroid_mm[0]
    assert o["aorta"].centroid_mm[0] < o["inferior_vena_cava"].centroid_mm[0]
    # Anterior-posterior: the spine is behind the aorta, the stomach in front.
    assert o["vertebrae_L1"].centroid_mm[1] < o["aorta"].centroid_mm[1] < o["stomach"].centroid_mm[1]
    # Attenuation near the cited normal values, with ~12 HU noise.
    assert 50 < o["liver"].hu_mean < 66 and 40 < o["spleen"].hu_mean < 56
    assert 8 < o["liver"].hu_std < 20
    assert 1000 < o["liver"].volume_ml < 2100 and 100 < o["spleen"].volume_ml < 320
    for name in ("liver", "spleen", "kidney_left", "kidney_right", "pancreas", "gallbladder"):
        assert not o[name].touches_border, name
    # Couinaud segments 1-8 and the three pancreas parts all exist.
    assert set(lm.part_labels.values()) >= {f"liver_segment_{i}" for i in range(1, 9)}
    assert {"pancreas_head", "pancreas_body", "pancreas_tail"} <= set(lm.part_labels.values())
    # The pancreas head lies right of its tail.
    head = np.argwhere(lm.parts == L.PART_IDS["pancreas_head"]).mean(axis=0)
    tail = np.argwhere(lm.parts == L.PART_IDS["pancreas_tail"]).mean(axis=0)
    assert head[0] > tail[0]


@pytest.mark.parametrize("grade", ["normal", "mild", "moderate", "severe"])
def test_spleen_variants_hit_their_grade(grade):
    ph = generate_phantom(PhantomConfig(seed=11, spleen_grade=grade))
    v, lm = _records(ph)
    assert splenomegaly_grade(extract(v, lm).organs["spleen"].volume_ml) == grade


@pytest.mark.slow
def test_fatty_liver_and_enlarged_kidney_variants():
    v, lm = _records(generate_phantom(PhantomConfig(seed=3, fatty_liver=True, enlarged_kidneys=True)))
    f = extract(v, lm)
    assert f.organs["liver"].hu_mean / f.organs["spleen"].hu_mean < 1.0
    assert f.organs["kidney_left"].length_mm > 130 and f.organs["kidney_right"].length_mm > 130
    v, lm = _records(generate_phantom(PhantomConfig(seed=3)))
    f = extract(v, lm)
    assert f.organs["liver"].hu_mean / f.organs["spleen"].hu_mean > 1.0
    assert f.organs["kidney_left"].length_mm < 130


def test_inserted_lesion_hu_mean_and_noise_match_request():
    v, lm = _records(generate_phantom(PhantomConfig(seed=8)))
    organ = ndimage.binary_erosion(lm.array == CID["liver"], iterations=3)  # away from edges
    sub = v.array.astype(np.float32)
    residual_std = float((sub - ndimage.gaussian_filter(sub, 1.5, mode="nearest"))[organ].std())
    reqs = [LesionRequest(organ="liver", diameter_mm=30, hu=20, texture_std=10, margin="sharp", location={}),
            LesionRequest(organ="liver", diameter_mm=26, hu_delta=35, texture_std=4, margin="blurred",
                          blur_mm=3)]
    v2, lm2, truth = insert_lesions(v, lm, reqs, seed=2)
    for t, req_std in zip(truth, (10, 4), strict=False):
        # Mean over the labelled voxels equals the request up to int16 rounding.
        assert abs(t["hu_mean"] - t["target_hu"]) < 0.5
        expected = np.hypot(req_std, residual_std)
        assert t["hu_std_core"] == pytest.approx(expected, rel=0.15)
        assert t["voxels"] * 1.5 * 1.5 * 3 / 1000 == pytest.approx(t["target_volume_ml"], rel=0.02)
    # Noise texture kept: no flat blob (the core still has the scan's grain).
    assert all(t["hu_std_core"] > 0.5 * residual_std for t in truth)
    # Lesions stay inside their organ and the label map is updated.
    les = np.isin(lm2.array, [CID["liver_tumor"]])
    assert les.sum() == sum(t["voxels"] for t in truth)
    assert np.all(lm.array[les] == CID["liver"])


def test_lesion_that_cannot_fit_is_a_clear_error():
    v, lm = _records(generate_phantom(PhantomConfig(seed=1)))
    with pytest.raises(LesionDoesNotFit, match="does not fit in pancreas"):
        insert_lesions(v, lm, [LesionRequest(organ="pancreas", diameter_mm=60)], seed=0)


def _phantom_rows(n_cases=12):
    rows = []
    for i in range(n_cases):
        _, v, lm, truth = phantom_case(i, seed=123)
        # Extra lesions so that every organ gets several, at requested locations.
        reqs = [LesionRequest(organ="liver", diameter_mm=14 + i, hu_delta=-30, location={"segment": 2 + i % 7}),
                LesionRequest(organ="kidney", kind="cyst", diameter_mm=12, hu=5,
                              location={"pole": ["upper", "interpolar", "lower"][i % 3]}),
                LesionRequest(organ="spleen", diameter_mm=12, hu_delta=25),
                LesionRequest(organ="pancreas", diameter_mm=9, hu_delta=-20,
                              location={"part": ["head", "body", "tail"][i % 3]})]
        try:
            v, lm, extra = insert_lesions(v, lm, reqs, seed=i)
        except LesionDoesNotFit:
            extra = []
        rows += score_case(extract(v, lm), truth["lesions"] + extra)
    return rows


def _real_rows(real_ct, n_variants=6):
    v = load_volume(real_ct / "example_ct_sm.nii.gz")
    lm = load_labelmap(real_ct / "example_seg.nii.gz", "totalsegmentator", reference=v)
    rows = []
    for k in range(n_variants):
        reqs = [LesionRequest(organ="liver", diameter_mm=18, hu_delta=-35, count=3),
                LesionRequest(organ="liver", kind="cyst", diameter_mm=15, hu=3),
                LesionRequest(organ="liver", diameter_mm=16, hu_delta=30, margin="blurred"),
                LesionRequest(organ="kidney_left", kind="cyst", diameter_mm=12, hu=4,
                              location={"pole": ["upper", "interpolar", "lower"][k % 3]}),
                LesionRequest(organ="kidney_right", diameter_mm=12, hu_delta=25),
                LesionRequest(organ="spleen", diameter_mm=12, hu_delta=-20),
                LesionRequest(organ="pancreas", diameter_mm=8, hu_delta=-25,
                              location={"part": "head"})]
        v2, lm2, truth = insert_lesions(v, lm, reqs, seed=k)
        rows += score_case(extract(v2, lm2), truth)
    return rows


@pytest.mark.slow
def test_findings_recover_inserted_truth_over_100_lesions(real_ct, capsys):
    phantom_rows = _phantom_rows()
    real_rows = _real_rows(real_ct)
    rows = phantom_rows + real_rows
    assert len(rows) >= 100
    with capsys.disabled():
        print("\n" + table({"phantoms": phantom_rows, "real CT (shared example)": real_rows}))
    for r in rows:
        assert r["found"] and r["case_count_ok"], r
        assert r["volume_rel_error"] <= 0.10, r
        assert r["centroid_vs_centre_voxels"] <= 2.0, r
        assert r["attenuation_ok"], r
        assert r["location_ok"], r
    assert summarise(rows)["found"] == len(rows)


@pytest.mark.slow
def test_cli_phantoms_lesions_render_and_synthetic_manifest(tmp_path, real_ct):
    out = tmp_path / "data"
    r = CliRunner().invoke(main, ["synth", "phantoms", "--n", "2", "--seed", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    first = (out / "phantom_0000" / "ct.nii.gz").read_bytes()
    r = CliRunner().invoke(main, ["synth", "phantoms", "--n", "2", "--seed", "4", "--out", str(tmp_path / "again")])
    assert (tmp_path / "again" / "phantom_0000" / "ct.nii.gz").read_bytes() == first
    spec = tmp_path / "spec.yaml"
    spec.write_text("seed: 2\nlesions:\n  - {organ: liver, kind: tumor, diameter_mm: 20, hu_delta: -40}\n"
                    "  - {organ: kidney, kind: cyst, diameter_mm: 12, hu: 5}\n")
    r = CliRunner().invoke(main, ["synth", "lesions", "--volume", str(real_ct / "example_ct_sm.nii.gz"),
                                  "--masks", str(real_ct / "example_seg.nii.gz"), "--labels", "totalsegmentator",
                                  "--spec", str(spec), "--out", str(out), "--n", "2"])
    assert r.exit_code == 0, r.output
    truth = json.loads((out / "example_ct_sm_lesions_001" / "truth.json").read_text())
    assert len(truth["lesions"]) == 2
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"layout: synthetic\nroot: {out}\nsplits: {{train: 0.5, test: 0.5}}\n")
    cases = load_cases(manifest)
    assert [c.case_id for c in cases] == ["example_ct_sm_lesions_000", "example_ct_sm_lesions_001",
                                          "phantom_0000", "phantom_0001"]
    c = cases[2]
    v = load_volume(c.ct)
    lm = load_labelmap(c.masks, c.label_spec, reference=v)
    assert lm.parts is not None and "liver" in lm.labels.values()
    png = tmp_path / "p.png"
    r = CliRunner().invoke(main, ["render", str(c.ct), "--masks", str(c.masks[0]), "--labels", "canonical",
                                  "--structure", "liver", "--bbox", "10,10,10,40,40,30", "--out", str(png)])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("lesions:\n  - {organ: liver, kind: polyp, diameter_mm: 10}\n")
    r = CliRunner().invoke(main, ["synth", "lesions", "--volume", str(real_ct / "example_ct_sm.nii.gz"),
                                  "--masks", str(real_ct / "example_seg.nii.gz"), "--labels", "totalsegmentator",
                                  "--spec", str(bad), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "tumor or cyst" in r.stderr and str(bad) in r.stderr
