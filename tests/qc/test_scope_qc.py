"""Annotation scope (present / absent / unknown) and mask quality control,
on the shared real CT the way a user with a partially annotated dataset
would meet them: MSD-layout liver-only masks, KiTS-layout kidney masks
stored slice-axis first, TotalSegmentator maps with injected faults."""
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from tests.helpers import REAL_CT, reorder_on_disk, write_nii
from volvqa import labels as L
from volvqa.cli import main
from volvqa.findings import extract
from volvqa.io import load_labelmap, load_volume, resample_nearest
from volvqa.qa.context import CaseContext
from volvqa.qa.generate import case_items
from volvqa.qc import check_case, compare, qc_labelmap
from volvqa.records import LabelMap

REAL_TUMOR = REAL_CT.parent / "real_tumor"
TS = {n: i for i, n in L.TOTALSEG_TOTAL.items()}
#: Words that name structures an MSD liver dataset does not annotate.
NOT_IN_LIVER_DATASET = ("spleen", "kidney", "renal", "gallbladder", "pancrea", "splen", "stomach", "aorta")


@pytest.fixture(scope="module")
def real():
    if not (REAL_CT / "example_ct_sm.nii.gz").is_file():
        pytest.skip(f"shared real CT data not found at {REAL_CT}")
    v = load_volume(REAL_CT / "example_ct_sm.nii.gz")
    lm = load_labelmap(REAL_CT / "example_seg.nii.gz", "totalsegmentator", reference=v)
    return v, lm


def _with_lesions(v, lm, requests, seed):
    from volvqa.synth.dataset import insert_with_retries
    from volvqa.synth.lesions import LesionRequest
    v2, lm2, truths, _ = insert_with_retries(v, lm, [LesionRequest(**r) for r in requests], seed)
    assert truths
    return v2, lm2, truths


def _items_text(out: Path) -> list[dict]:
    """Every item the per-case stage generated (before balance and audit) and every final item."""
    raw = [it for p in sorted((out / "work").glob("*/items.json")) for it in json.loads(p.read_text())]
    final = [json.loads(x) for x in (out / "qa.jsonl").read_text().splitlines()]
    return raw + final


def _build(manifest: Path, out: Path, *args) -> dict:
    r = subprocess.run([sys.executable, "-m", "volvqa.cli", "build-qa", str(manifest), "--out", str(out), "--json", *args],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


# --- annotation scope ------------------------------------------------------------------------------

def test_scope_from_spec_folder_and_declaration(tmp_path, real):
    v, lm = real
    seg = REAL_CT / "example_seg.nii.gz"
    # A mapping spec annotates every name it maps: a mapped id with no voxel is absent.
    liver_only = load_labelmap(seg, {5: "liver", 1: "ignore", **{i: "ignore" for i in TS.values() if i not in (1, 5)},
                                     200: "liver_tumor"}, reference=v)
    ctx = CaseContext("c", extract(v, liver_only))
    assert ctx.status("liver") == "present" and ctx.status("liver_tumor") == "absent"
    assert ctx.status("spleen") == "unknown" and ctx.status("kidney_left") == "unknown"
    assert ctx.annotated("liver") and not ctx.annotated("kidney")
    # The full TotalSegmentator spec annotates its whole vocabulary: what it did not find is absent.
    ctx = CaseContext("c", extract(v, lm))
    assert ctx.status("spleen") == "present" and ctx.status("brain") == "absent"
    assert ctx.status("liver_lesion") == "unknown" and not ctx.annotated("liver")  # `total` segments no lesion
    # auto / canonical: only what the file holds (nothing can be absent) ...
    auto = load_labelmap(seg, "auto", reference=v)
    assert auto.scope == auto.present and CaseContext("c", extract(v, auto)).status("brain") == "unknown"
    # ... unless declared.
    declared = load_labelmap(seg, "auto", reference=v, annotates="brain,liver")
    assert CaseContext("c", extract(v, declared)).status("brain") == "absent"
    # A mask folder annotates every mapped file, empty ones included; `kidney` stands for both sides.
    folder = tmp_path / "masks"
    folder.mkdir()
    write_nii(folder / "liver.nii.gz", (lm.array == TS["liver"]).astype(np.uint8), v.affine)
    write_nii(folder / "spleen.nii.gz", np.zeros(v.shape, np.uint8), v.affine)
    write_nii(folder / "kidney.nii.gz", np.isin(lm.array, [TS["kidney_left"], TS["kidney_right"]]).astype(np.uint8),
              v.affine)
    fl = load_labelmap(folder, "auto", reference=v)
    ctx = CaseContext("c", extract(v, fl))
    assert ctx.status("spleen") == "absent" and ctx.status("pancreas") == "unknown"
    assert ctx.status("kidney_left") == ctx.status("kidney_right") == "present"
    with pytest.raises(Exception, match="outside the canonical vocabulary"):
        load_labelmap(seg, "auto", reference=v, annotates=["livr"])


def test_sub_segments_count_by_family(tmp_path, real):
    v, lm = real
    parts = np.zeros(v.shape, np.uint8)
    parts[lm.array == TS["liver"]] = L.PART_IDS["liver_segment_7"]
    write_nii(tmp_path / "parts.nii.gz", parts, v.affine)
    both = load_labelmap([REAL_CT / "example_seg.nii.gz", tmp_path / "parts.nii.gz"],
                         ["totalsegmentator", "volvqa_parts"], reference=v)
    ctx = CaseContext("c", extract(v, both))
    # One Couinaud segment delineated: all eight are (the others absent here); pancreas parts are not.
    assert ctx.has_parts("liver") and not ctx.has_parts("pancreas")
    assert ctx.status("liver_segment_2") == "absent" and ctx.status("pancreas_head") == "unknown"


@pytest.fixture(scope="module")
def msd(tmp_path_factory, real):
    """An MSD Task03-style dataset (liver + cancer labels only) from the shared
    real CT with inserted liver tumors, three cases, stored in another voxel order."""
    v, lm = real
    root = tmp_path_factory.mktemp("msd")
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    entries, counts = [], {}
    for k in range(3):
        v2, lm2, truths = _with_lesions(v, lm, [{"organ": "liver", "kind": "tumor", "diameter_mm": 18.0 + 4 * k,
                                                  "hu_delta": -35.0, "count": 1 + k % 2}], seed=10 + k)
        counts[f"liver_{k}"] = len(truths)
        lab = np.zeros(v.shape, np.uint8)
        lab[lm2.array == TS["liver"]] = 1
        lab[lm2.array == L.CANONICAL_IDS["liver_tumor"]] = 2
        # LiTS volumes are often stored flipped along y: the same world content in another voxel order.
        ct_disk, aff = reorder_on_disk(v2.array, v.affine, (0, 1, 2), (False, True, False))
        lab_disk, _ = reorder_on_disk(lab, v.affine, (0, 1, 2), (False, True, False))
        write_nii(root / "imagesTr" / f"liver_{k}.nii.gz", ct_disk, aff)
        write_nii(root / "labelsTr" / f"liver_{k}.nii.gz", lab_disk, aff)
        entries.append({"image": f"./imagesTr/liver_{k}.nii.gz", "label": f"./labelsTr/liver_{k}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": "cancer"},
                                                   "training": entries}))
    m = root / "msd.yaml"
    m.write_text(f"name: msd-liver\nlayout: msd\nroot: {root}\nlabels: {{liver: liver, cancer: liver_tumor}}\n"
                 "splits: {train: 0.5, test: 0.5}\nseed: 0\n")
    out = root / "out"
    res = _build(m, out, "--include-flagged")
    return root, m, out, res, counts


def test_msd_liver_dataset_asks_nothing_about_unannotated_organs(msd):
    root, _m, out, res, counts = msd
    items = _items_text(out)
    assert res["questions"] > 0 and items
    for it in items:
        text = it["question"].lower() + " " + json.dumps(it.get("params", {})).lower()
        assert not any(w in text for w in NOT_IN_LIVER_DATASET), it["question"]
        assert it["template_id"] != "rec.organ_presence", it["question"]
    tids = {it["template_id"] for it in items}
    assert {"rec.lesion_exists", "vr.lesion_count", "meas.lesion_volume"} <= tids
    info = json.loads((out / "build.json").read_text())
    assert set(info["annotates"]) == {"liver", "liver_tumor"}
    card = (out / "dataset_card.md").read_text()
    assert "## What the masks annotate" in card and "liver_tumor" in card and "spleen" not in card.split(
        "## What the masks annotate")[1].split("##")[0]
    # Liver lesion answers rest on the declared tumor class: count equals the inserted tumors.
    n = 0
    for it in items:
        if it["template_id"] == "vr.lesion_count":
            assert int(float(it["answer"])) == counts[it["case_id"]]
            n += 1
    assert n >= 3
    # The findings and the report say "not annotated", never absent.
    f = json.loads((out / "cases" / "liver_0" / "findings.json").read_text())
    assert f["report"]["structures"]["spleen"] == "not annotated"
    assert "SPLEEN: not annotated." in (out / "cases" / "liver_0" / "report.txt").read_text()


def test_answer_on_liver_only_masks_says_cannot_answer(msd):
    root = msd[0]
    ct, labels = root / "imagesTr" / "liver_0.nii.gz", root / "labelsTr" / "liver_0.nii.gz"
    spec = root / "spec.yaml"
    spec.write_text("1: liver\n2: liver_tumor\n")
    for lab_args in (["--labels", str(spec)], []):
        base = ["answer", "--volume", str(ct), "--masks", str(labels), *lab_args]
        if not lab_args:   # auto: ids read as canonical ids, so rewrite them as such
            lab = np.asarray(nib.load(labels).dataobj)
            canon = np.where(lab == 1, L.CANONICAL_IDS["liver"], np.where(lab == 2, L.CANONICAL_IDS["liver_tumor"], 0))
            write_nii(root / "liver_only.nii.gz", canon.astype(np.uint8), nib.load(labels).affine)
            base = ["answer", "--volume", str(ct), "--masks", str(root / "liver_only.nii.gz")]
        r = CliRunner().invoke(main, [*base, "--question", "Is the spleen present in this scan?"])
        assert r.exit_code == 1, r.output
        assert "cannot answer: the masks do not annotate the spleen" in r.output
        r = CliRunner().invoke(main, [*base, "--question", "Is there a kidney cyst in this scan?"])
        assert r.exit_code == 1 and "do not annotate" in r.output, r.output
        r = CliRunner().invoke(main, [*base, "--question", "Is there a lesion in the liver?"])
        assert r.exit_code == 0 and r.output.splitlines()[0] == "yes", r.output


@pytest.mark.slow
def test_kits_layout_asks_nothing_about_liver_or_spleen(tmp_path, real):
    """KiTS stores the slice axis first, with one `kidney` label for both sides."""
    v, lm = real
    root = tmp_path / "kits"
    for k in range(2):
        v2, lm2, _ = _with_lesions(v, lm, [{"organ": "kidney", "kind": "tumor", "diameter_mm": 20.0, "hu_delta": 30.0}],
                                   seed=3 + k)
        lab = np.zeros(v.shape, np.uint8)
        lab[np.isin(lm2.array, [TS["kidney_left"], TS["kidney_right"]])] = 1
        lab[lm2.array == L.CANONICAL_IDS["kidney_tumor"]] = 2
        ct_disk, aff = reorder_on_disk(v2.array, v.affine, (2, 1, 0), (False, False, False))
        lab_disk, _ = reorder_on_disk(lab, v.affine, (2, 1, 0), (False, False, False))
        d = root / f"case_{k:05d}"
        d.mkdir(parents=True)
        write_nii(d / "imaging.nii.gz", ct_disk, aff)
        write_nii(d / "segmentation.nii.gz", lab_disk, aff)
    m = tmp_path / "kits.yaml"
    m.write_text(f"layout: kits\nroot: {root}\nlabels: {{1: kidney, 2: kidney_tumor}}\n"
                 "splits: {train: 0.5, test: 0.5}\nseed: 0\n")
    out = tmp_path / "out"
    _build(m, out, "--include-flagged")
    items = _items_text(out)
    assert items
    for it in items:
        text = it["question"].lower()
        assert not any(w in text for w in ("liver", "spleen", "splen", "gallbladder", "pancrea", "hepat")), text
        # KiTS19-style labels: tumors only, so "no cyst" is unknown and "cyst or tumor?" has one answer.
        assert it["template_id"] not in ("med.lesion_type", "med.each_lesion_type"), text
        assert not (it["template_id"] == "rec.kidney_kind_exists" and "cyst" in text), text
    assert any(it["template_id"] == "rec.kidney_kind_exists" and it["answer"] == "yes" for it in items)
    info = json.loads((out / "build.json").read_text())
    assert set(info["annotates"]) == {"kidney_left", "kidney_right", "kidney_tumor"}


@pytest.mark.slow
def test_phantom_surgery_variants_keep_presence_questions(tmp_path):
    """Phantoms annotate their whole vocabulary: a removed organ is absent (annotated,
    no voxel) and still gets its presence question, with the landmark in evidence."""
    from volvqa.synth.dataset import phantom_case
    # Phantom 9 of seed 0 lacks its right kidney, phantom 15 its gallbladder (as in the demo).
    for index, gone in ((9, "kidney_right"), (15, "gallbladder")):
        cid, v, lm, truth = phantom_case(index, 0, lesions=False)
        assert truth["variants"]["absent"] == [gone]
        items = case_items(CaseContext(cid, extract(v, lm)), 0)
        pres = {it["params"]["organ"]: it for it in items if it["template_id"] == "rec.organ_presence"}
        assert pres[gone]["answer"] == "no" and pres[gone]["evidence"]["annotated"] is True
        assert {n: it["answer"] for n, it in pres.items() if n != gone} == {
            n: "yes" for n in ("gallbladder", "kidney_left", "kidney_right", "spleen") if n != gone}
    # The same phantom read with `canonical` and no declaration: the gallbladder is unknown, not absent.
    write_nii(tmp_path / "seg.nii.gz", lm.array, lm.affine)
    write_nii(tmp_path / "ct.nii.gz", v.array, v.affine)
    v2 = load_volume(tmp_path / "ct.nii.gz")
    lm2 = load_labelmap(tmp_path / "seg.nii.gz", "canonical", reference=v2)
    items = case_items(CaseContext(cid, extract(v2, lm2)), 0)
    assert not any(it["template_id"] == "rec.organ_presence" and it["answer"] == "no" for it in items)


# --- quality control: faults injected into the shared real CT's TotalSegmentator map ------------------

def _checks(v, lm):
    return {(f.structure, f.check) for f in check_case(v, lm, "c")}


def test_qc_flags_nothing_on_the_real_maps(real):
    v, lm = real
    assert _checks(v, lm) == set()
    fast = load_labelmap(REAL_CT / "example_seg_fast.nii.gz", "totalsegmentator", reference=v)
    assert _checks(v, fast) == set()
    vd = load_volume(REAL_CT / "example_ct_dicom")
    lmd = load_labelmap(REAL_CT / "example_seg_dicom.nii.gz", "totalsegmentator", reference=vd)
    assert _checks(vd, lmd) == set()


def test_qc_swapped_kidneys(real):
    v, lm = real
    arr = lm.array.copy()
    arr[lm.array == TS["kidney_left"]] = TS["kidney_right"]
    arr[lm.array == TS["kidney_right"]] = TS["kidney_left"]
    bad = LabelMap(arr, lm.labels, lm.affine, annotates=lm.annotates)
    assert _checks(v, bad) == {("kidney_left", "side"), ("kidney_right", "side")}
    kept, report = qc_labelmap(v, bad, "exclude")
    assert {"kidney_left", "kidney_right", "kidney_cyst"} <= set(report["excluded"])
    f = extract(v, kept)
    # The boxes quality control hands on (those left after clearing the excluded labels) are
    # every label's true box: the findings equal those of the same map without them.
    assert kept.known_boxes() is not None
    fresh = LabelMap(kept.array.copy(), kept.labels, kept.affine, parts=kept.parts, part_labels=kept.part_labels,
                     meta=kept.meta, annotates=kept.annotates)
    assert fresh.known_boxes() is None and extract(v, fresh).to_dict() == f.to_dict()
    ctx = CaseContext("c", f)
    assert ctx.status("kidney_left") == "unknown" and ctx.status("spleen") == "present"
    # Nothing about the kidneys is asked any more; the rest of the case still is.
    items = case_items(ctx, 0)
    assert items and not any("kidney" in it["question"] for it in items)
    # warn mode reports the same and excludes nothing.
    same, rep = qc_labelmap(v, bad, "warn")
    assert same is bad and rep["excluded"] == report["excluded"]


def test_qc_spleen_in_six_pieces(real):
    v, lm = real
    arr = lm.array.copy()
    spleen = arr == TS["spleen"]
    cut = np.zeros_like(spleen)
    cut[:, :, [5, 10, 15, 20, 25]] = True    # five one-voxel gaps along z: six pieces
    arr[spleen & cut] = 0
    bad = LabelMap(arr, lm.labels, lm.affine, annotates=lm.annotates)
    found = [f for f in check_case(v, bad) if f.structure == "spleen"]
    assert [f.check for f in found] == ["pieces"] and found[0].value == 6


def test_qc_spacing_off_by_ten(tmp_path, real):
    """CT and masks written with 10x the spacing (a unit error): volumes are 1000x."""
    v, lm = real
    aff = v.affine.copy()
    aff[:3, :3] *= 10
    write_nii(tmp_path / "ct.nii.gz", v.array, aff)
    write_nii(tmp_path / "seg.nii.gz", lm.array, aff)
    v10 = load_volume(tmp_path / "ct.nii.gz")
    lm10 = load_labelmap(tmp_path / "seg.nii.gz", "totalsegmentator", reference=v10)
    found = {f.structure: f for f in check_case(v10, lm10) if f.check == "volume"}
    assert {"liver", "spleen", "kidney_left", "kidney_right", "pancreas", "gallbladder"} <= set(found)
    assert found["liver"].value == pytest.approx(1000 * 1043.1, rel=0.01)
    # And a tenth of the spacing: a complete gallbladder becomes implausibly small (cut organs are not judged low).
    aff[:3, :3] /= 100
    write_nii(tmp_path / "ct.nii.gz", v.array, aff)
    write_nii(tmp_path / "seg.nii.gz", lm.array, aff)
    v01 = load_volume(tmp_path / "ct.nii.gz")
    found = {f.structure for f in check_case(v01, load_labelmap(tmp_path / "seg.nii.gz", "totalsegmentator",
                                                                 reference=v01)) if f.check == "volume"}
    assert {"gallbladder", "pancreas"} <= found and "liver" not in found


def test_qc_liver_moved_onto_the_lung(real):
    """The real liver mask moved (through world coordinates) onto the right lung of the shared chest CT."""
    if not (REAL_TUMOR / "lung2_ct.nii.gz").is_file():
        pytest.skip(f"shared real tumor data not found at {REAL_TUMOR}")
    from scipy import ndimage
    v, lm = real
    chest = load_volume(REAL_TUMOR / "lung2_ct.nii.gz")
    air, _ = ndimage.label(chest.array < -400)
    edge = np.unique(np.concatenate([air[0].ravel(), air[-1].ravel(), air[:, 0].ravel(), air[:, -1].ravel()]))
    sizes = np.bincount(air.ravel())
    sizes[edge] = 0
    lungs = air == int(np.argmax(sizes))
    idx = np.argwhere(lungs)
    world = idx @ chest.affine[:3, :3].T + chest.affine[:3, 3]
    mid = np.median(world[:, 0])
    right_lung_centre = world[world[:, 0] > mid].mean(axis=0)
    liver = (lm.array == TS["liver"]).astype(np.uint8)
    li = np.argwhere(liver)
    liver_centre = (li @ v.affine[:3, :3].T + v.affine[:3, 3]).mean(axis=0)
    aff = v.affine.copy()
    aff[:3, 3] += right_lung_centre - liver_centre
    moved = resample_nearest(liver, aff, chest.shape, chest.affine)
    lab = np.where(moved > 0, TS["liver"], 0).astype(np.uint8)
    bad = LabelMap(lab, {TS["liver"]: "liver"}, chest.affine, annotates=frozenset({"liver"}))
    found = [f for f in check_case(chest, bad) if f.structure == "liver"]
    assert [f.check for f in found] == ["hu"] and found[0].value < -500


def _wrong_scan_liver(v):
    """The liver of another patient (the shared DICOM case) on this scan's grid, FOV centres aligned."""
    vd = load_volume(REAL_CT / "example_ct_dicom")
    lmd = load_labelmap(REAL_CT / "example_seg_dicom.nii.gz", "totalsegmentator", reference=vd)

    def centre(vol):
        return vol.affine[:3, :3] @ ((np.array(vol.shape) - 1) / 2) + vol.affine[:3, 3]
    aff = vd.affine.copy()
    aff[:3, 3] += centre(v) - centre(vd)
    return resample_nearest((lmd.array == TS["liver"]).astype(np.uint8), aff, v.shape, v.affine) > 0


def test_qc_liver_mask_of_another_scan(tmp_path, real):
    v, lm = real
    wrong = _wrong_scan_liver(v)
    arr = lm.array.copy()
    arr[arr == TS["liver"]] = 0
    arr[wrong] = TS["liver"]
    bad = LabelMap(arr, lm.labels, lm.affine, annotates=lm.annotates)
    found = [f for f in check_case(v, bad) if f.structure == "liver"]
    assert [f.check for f in found] == ["hu"] and "fat" in found[0].message
    # The same fault in a per-structure mask folder (TotalSegmentator's default output): the
    # foreign liver also overlaps this scan's own organs.
    folder = tmp_path / "segmentations"
    folder.mkdir()
    for name in ("spleen", "kidney_left", "kidney_right", "gallbladder", "stomach", "pancreas"):
        write_nii(folder / f"{name}.nii.gz", (lm.array == TS[name]).astype(np.uint8), v.affine)
    write_nii(folder / "liver.nii.gz", wrong.astype(np.uint8), v.affine)
    fl = load_labelmap(folder, "auto", reference=v)
    checks = _checks(v, fl)
    assert ("liver", "overlap") in checks and ("kidney_right", "overlap") in checks
    # The unmodified folder is clean.
    write_nii(folder / "liver.nii.gz", (lm.array == TS["liver"]).astype(np.uint8), v.affine)
    assert _checks(v, load_labelmap(folder, "auto", reference=v)) == set()


def test_qc_lesion_outside_its_organ_and_empty_liver(real):
    v, lm = real
    v2, lm2, _ = _with_lesions(v, lm, [{"organ": "liver", "kind": "tumor", "diameter_mm": 15.0, "hu_delta": -40.0}], 5)
    tumor = lm2.array == L.CANONICAL_IDS["liver_tumor"]
    assert _checks(v2, lm2) == set()
    arr = lm2.array.copy()
    arr[tumor] = TS["liver"]
    arr[np.roll(tumor, -45, axis=0)] = L.CANONICAL_IDS["liver_tumor"]   # 135 mm to the patient's left
    bad = LabelMap(arr, lm2.labels, lm2.affine, annotates=lm2.annotates)
    assert ("liver_lesions", "lesion_outside") in _checks(v2, bad)
    _, rep = qc_labelmap(v2, bad)
    assert set(rep["excluded"]) >= {"liver_tumor", "liver_lesion", "liver_cyst"} & bad.scope
    # An empty liver mask while the spleen and gallbladder are present: a failed mask, not an absent organ.
    arr = lm.array.copy()
    arr[arr == TS["liver"]] = 0
    empty = LabelMap(arr, {i: n for i, n in lm.labels.items() if n != "liver"}, lm.affine, annotates=lm.annotates)
    assert ("liver", "empty") in _checks(v, empty)


def test_pairwise_agreement_and_required_agreement(real):
    v, lm = real
    fast = load_labelmap(REAL_CT / "example_seg_fast.nii.gz", "totalsegmentator", reference=v)
    rows = {r.structure: r for r in compare(v, lm, fast)}
    for n in ("liver", "spleen", "kidney_left", "kidney_right", "aorta"):
        assert rows[n].agree and rows[n].dice > 0.85, (n, rows[n])
    # Dice against an independent computation.
    a, b = lm.array == TS["liver"], fast.array == TS["liver"]
    assert rows["liver"].dice == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), abs=1e-4)
    assert rows["brain"].agree and rows["brain"].reason == "absent in both"
    # A second source with the spleen shifted by 30 mm disagrees on the spleen only.
    arr = fast.array.copy()
    sp = arr == TS["spleen"]
    arr[sp] = 0
    arr[np.roll(sp, 10, axis=1)] = TS["spleen"]
    shifted = LabelMap(arr, fast.labels, fast.affine, annotates=fast.annotates)
    rows = {r.structure: r for r in compare(v, lm, shifted)}
    assert rows["spleen"].agree is False and rows["spleen"].centroid_mm == pytest.approx(30.0, abs=1.0)
    kept, rep = qc_labelmap(v, lm, "exclude", other=shifted, require_agreement=True)
    assert "spleen" in rep["excluded"] and "liver" not in rep["excluded"]
    assert CaseContext("c", extract(v, kept)).status("spleen") == "unknown"


@pytest.mark.slow
def test_volvqa_qc_command(msd, tmp_path, real):
    root, m = msd[0], msd[1]
    r = CliRunner().invoke(main, ["qc", str(m)])
    assert r.exit_code == 0, r.output
    # Break one case: its tumor moved out of the liver.
    img = nib.load(root / "labelsTr" / "liver_1.nii.gz")
    lab = np.asarray(img.dataobj).copy()
    t = lab == 2
    lab[t] = 1
    lab[np.roll(t, 45, axis=0)] = 2
    nib.save(nib.Nifti1Image(lab, img.affine), str(root / "labelsTr" / "liver_1.nii.gz"))
    r = CliRunner().invoke(main, ["qc", str(m), "--json", str(tmp_path / "qc.json")])
    assert r.exit_code == 1
    lines = [x for x in r.output.splitlines() if x.startswith("liver_")]
    assert lines == [line for line in lines if line.startswith("liver_1\tliver_lesions\tlesion_outside")] and lines
    assert json.loads((tmp_path / "qc.json").read_text())["findings"][0]["case_id"] == "liver_1"
    # The build excludes that case's liver lesions (and every question resting on them) and says so.
    out = tmp_path / "out"
    _build(m, out, "--include-flagged")
    items = [json.loads(x) for x in (out / "qa.jsonl").read_text().splitlines()]
    assert not any(it["case_id"] == "liver_1" and "lesion" in it["question"] for it in items)
    assert any(it["case_id"] == "liver_0" and "lesion" in it["question"] for it in items)
    qc = json.loads((out / "qc.json").read_text())
    assert "liver_tumor" in qc["cases"]["liver_1"]["excluded"] and qc["findings_per_check"] == {"lesion_outside": 1}
    assert "Excluded (structure: cases): liver_tumor: 1" in (out / "dataset_card.md").read_text()
    assert json.loads((out / "cases" / "liver_1" / "qc.json").read_text())["excluded"]
    # warn keeps them (and still reports); the grounded oracle answers the kept ones.
    out_w = tmp_path / "out_warn"
    _build(m, out_w, "--include-flagged", "--qc", "warn")
    items = [json.loads(x) for x in (out_w / "qa.jsonl").read_text().splitlines()]
    assert any(it["case_id"] == "liver_1" and "lesion" in it["question"] for it in items)
    # One scan, the CLI's single mode.
    r = CliRunner().invoke(main, ["qc", "--volume", str(REAL_CT / "example_ct_sm.nii.gz"), "--masks",
                                  str(REAL_CT / "example_seg.nii.gz"), "--labels", "totalsegmentator", "--compare",
                                  str(REAL_CT / "example_seg_fast.nii.gz"), "--compare-labels", "totalsegmentator"])
    assert "liver\t1\t1\t0.9" in r.output
