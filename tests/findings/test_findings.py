"""Findings: agreement with SimpleITK, known truth on hand-built arrays, storage independence."""
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner

from tests.helpers import reorder_on_disk, write_nii
from volvqa import labels as L
from volvqa.cli import main
from volvqa.findings import extract
from volvqa.findings.report import render_text, structured_report
from volvqa.io import load_labelmap, load_volume
from volvqa.records import LabelMap, Source, Volume

CID = L.CANONICAL_IDS


def make_case(hu, lab, spacing=(1.0, 1.0, 1.0), parts=None, part_labels=None):
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = [-50.0, 20.0, 100.0]
    v = Volume(np.asarray(hu, np.int16), aff, tuple(float(s) for s in spacing), Source("mem"))
    names = {int(i): L.CANONICAL_NAMES[int(i)] for i in np.unique(lab) if i}
    return v, LabelMap(np.asarray(lab, np.uint8), names, aff, parts=parts, part_labels=part_labels or {})


def test_agrees_with_simpleitk_on_real_ct(real_ct):
    v = load_volume(real_ct / "example_ct_sm.nii.gz")
    lm = load_labelmap(real_ct / "example_seg.nii.gz", "totalsegmentator", reference=v)
    f = extract(v, lm)
    img = sitk.ReadImage(str(real_ct / "example_ct_sm.nii.gz"))
    seg = sitk.ReadImage(str(real_ct / "example_seg.nii.gz"))
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(seg)
    inten = sitk.LabelIntensityStatisticsImageFilter()
    inten.Execute(seg, img)
    assert set(shape.GetLabels()) == {CID[o.name] for o in f.organs.values()}
    for name, o in f.organs.items():
        k = CID[name]
        assert o.volume_ml * 1000 == pytest.approx(shape.GetPhysicalSize(k), rel=1e-3), name
        assert o.hu_mean == pytest.approx(inten.GetMean(k), rel=1e-3, abs=1e-6), name
        cx, cy, cz = shape.GetCentroid(k)  # LPS mm
        assert np.allclose(o.centroid_mm, [-cx, -cy, cz], atol=0.5), name
        x, y, z, sx, sy, sz = shape.GetBoundingBox(k)
        assert o.bbox_voxel == [x, y, z, x + sx - 1, y + sy - 1, z + sz - 1], name


def test_sphere_volume_within_voxelisation_bound():
    sp = np.array([0.7, 0.9, 2.5])
    r = 12.0
    g = np.meshgrid(*[(np.arange(n) - n // 2) * s for n, s in zip((60, 50, 20), sp, strict=False)], indexing="ij")
    sphere = g[0] ** 2 + g[1] ** 2 + g[2] ** 2 <= r ** 2
    hu = np.full(sphere.shape, 60, np.int16)
    lab = np.where(sphere, CID["spleen"], 0)
    f = extract(*make_case(hu, lab, sp))
    v = f.organs["spleen"].volume_ml * 1000
    d = np.linalg.norm(sp)  # voxel diagonal: the bound on where a voxel's centre can sit
    assert 4 / 3 * np.pi * (r - d / 2) ** 3 <= v <= 4 / 3 * np.pi * (r + d / 2) ** 3
    assert v == pytest.approx(4 / 3 * np.pi * r ** 3, rel=0.03)


def test_ellipse_on_one_slice_axial_diameters():
    sp = (0.6, 0.6, 3.0)
    x, y = np.meshgrid((np.arange(100) - 50) * sp[0], (np.arange(90) - 45) * sp[1], indexing="ij")
    ell = (x / 15.0) ** 2 + (y / 8.0) ** 2 <= 1  # 30 mm x 16 mm
    organ = np.zeros((100, 90, 9), np.uint8)
    organ[5:95, 5:85, 1:8] = CID["liver"]
    organ[:, :, 4][ell] = CID["liver_lesion"]
    hu = np.where(organ == CID["liver"], 60, 20).astype(np.int16)
    f = extract(*make_case(hu, organ, sp))
    (les,) = f.lesions
    assert les.axial_slice == 4
    # Caliper diameters are within one voxel of the true ones (findings/diameters.py).
    one_voxel = sp[0] + 1e-9
    assert les.long_axis_mm == pytest.approx(30.0, abs=one_voxel)
    assert les.short_axis_mm == pytest.approx(16.0, abs=one_voxel)
    assert les.max_diameter_3d_mm == pytest.approx(30.0, abs=one_voxel)


def test_touching_vs_separate_blobs():
    lab = np.zeros((30, 30, 30), np.uint8)
    lab[2:28, 2:28, 2:28] = CID["liver"]
    lab[5:9, 5:9, 5:9] = CID["liver_lesion"]
    lab[9:13, 9:13, 9:13] = CID["liver_lesion"]  # meets the first at a corner: 26-connected
    hu = np.full(lab.shape, 60, np.int16)
    assert len(extract(*make_case(hu, lab)).lesions) == 1
    lab[9:13, 9:13, 9:13] = CID["liver"]
    lab[10:14, 10:14, 10:14] = CID["liver_lesion"]  # one voxel gap
    assert len(extract(*make_case(hu, lab)).lesions) == 2


def test_small_components_dropped_and_counted():
    lab = np.zeros((30, 30, 30), np.uint8)
    lab[2:28, 2:28, 2:28] = CID["liver"]
    lab[5:10, 5:10, 5:10] = CID["liver_lesion"]  # 125 mm^3
    lab[20, 20, 20] = CID["liver_lesion"]        # 1 mm^3
    f = extract(*make_case(np.full(lab.shape, 60, np.int16), lab))
    assert len(f.lesions) == 1 and f.dropped_lesion_components == {"liver_lesion": 1}
    assert f.organs["liver"].voxels == 26 ** 3 - 1  # the dropped voxel is not the liver's either


def test_attenuation_classes_at_chosen_hu():
    rng = np.random.default_rng(0)
    lab = np.zeros((60, 40, 20), np.uint8)
    lab[2:58, 2:38, 2:18] = CID["liver"]
    hu = (60 + rng.normal(0, 10, lab.shape)).round().astype(np.int16)
    for x0, mean in [(5, 20), (22, None), (40, 110)]:
        lab[x0:x0 + 10, 10:20, 5:12] = CID["liver_lesion"]
        if mean is not None:
            hu[x0:x0 + 10, 10:20, 5:12] = mean
    # The iso lesion keeps the parenchyma's noise: same mean.
    f = extract(*make_case(hu, lab))
    got = [(round(les.hu_mean), les.attenuation) for les in sorted(f.lesions, key=lambda x: x.centroid_voxel[0])]
    assert [a for _, a in got] == ["hypo", "iso", "hyper"]
    assert got[0][0] == 20 and got[2][0] == 110


def test_lesion_spanning_two_liver_segments():
    lab = np.zeros((40, 40, 40), np.uint8)
    lab[2:38, 2:38, 2:38] = CID["liver"]
    parts = np.zeros_like(lab)
    parts[2:38, 2:38, 2:20] = L.PART_IDS["liver_segment_5"]
    parts[2:38, 2:38, 20:38] = L.PART_IDS["liver_segment_8"]
    lab[10:20, 10:20, 14:24] = CID["liver_lesion"]   # 6 slices in seg 5, 4 in seg 8
    lab[25:35, 25:35, 19:29] = CID["liver_lesion"]   # 1 slice of 10 in seg 5: 10%, not more
    plabels = {L.PART_IDS["liver_segment_5"]: "liver_segment_5", L.PART_IDS["liver_segment_8"]: "liver_segment_8"}
    f = extract(*make_case(np.full(lab.shape, 60, np.int16), lab, parts=parts, part_labels=plabels))
    a, b = sorted(f.lesions, key=lambda x: x.centroid_voxel[0])
    assert a.location["segments"] == [5, 8]
    assert b.location["segments"] == [8]


def test_kidney_side_and_pole_and_pancreas_axis():
    lab = np.zeros((80, 40, 60), np.uint8)
    lab[5:20, 10:25, 10:55] = CID["kidney_left"]     # small x: patient's left
    lab[60:75, 10:25, 10:55] = CID["kidney_right"]
    lab[8:14, 14:20, 45:52] = CID["kidney_tumor"]    # upper third of the left kidney
    lab[63:69, 14:20, 12:18] = CID["kidney_cyst"]    # lower third of the right kidney
    lab[25:58, 28:34, 30:36] = CID["pancreas"]       # runs along x; head at large x (right)
    lab[52:57, 29:33, 31:35] = CID["pancreatic_lesion"]
    lab[27:31, 29:33, 31:35] = CID["pancreatic_lesion"]
    f = extract(*make_case(np.full(lab.shape, 40, np.int16), lab))
    by = {(les.label, les.organ): les for les in f.lesions}
    t = by[("kidney_tumor", "kidney_left")]
    assert t.location == {"side": "left", "pole": "upper"}
    c = by[("kidney_cyst", "kidney_right")]
    assert c.location == {"side": "right", "pole": "lower"} and c.kind == "cyst"
    panc = sorted([les for les in f.lesions if les.organ == "pancreas"], key=lambda x: x.centroid_voxel[0])
    assert [p.location["part"] for p in panc] == ["tail", "head"]
    assert all(p.location["method"] == "principal_axis" for p in panc)
    # Whole-organ volume includes its lesions.
    assert f.organs["kidney_left"].voxels == 15 * 15 * 45


def test_relations_contacts_and_touches():
    lab = np.zeros((30, 20, 20), np.uint8)
    lab[2:12, 2:18, 2:18] = CID["liver"]
    lab[12:20, 2:18, 2:18] = CID["kidney_right"]     # shares a face with the liver
    lab[22:28, 2:18, 2:18] = CID["spleen"]           # separated by a gap
    lab[8:12, 6:10, 6:10] = CID["liver_lesion"]      # at the liver's edge, next to the kidney
    f = extract(*make_case(np.full(lab.shape, 50, np.int16), lab))
    assert ["kidney_right", "liver"] in f.contacts
    assert not any("spleen" in p for p in f.contacts)
    assert f.lesions[0].touches == ["kidney_right", "liver"]


def test_touches_border_flag():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[0:5, 5:10, 5:10] = CID["spleen"]
    lab[8:12, 8:12, 8:12] = CID["liver"]
    f = extract(*make_case(np.full(lab.shape, 50, np.int16), lab))
    assert f.organs["spleen"].touches_border and not f.organs["liver"].touches_border


def _with_lesions(real_ct):
    """The real CT with two synthetic lesions painted in (liver, left kidney)."""
    img = nib.load(real_ct / "example_ct_sm.nii.gz")
    seg = nib.load(real_ct / "example_seg.nii.gz")
    hu = np.asanyarray(img.dataobj).copy()
    lab = np.asanyarray(seg.dataobj).copy()
    liver = np.argwhere(lab == 5)
    c = liver[len(liver) // 2]
    g = np.indices(lab.shape)
    ball = ((g - c[:, None, None, None]) ** 2).sum(0) <= 9
    ball &= lab == 5
    lab[ball] = CID["liver_lesion"]
    hu[ball] = 10
    kid = np.argwhere(lab == 3)
    c = kid[len(kid) // 2]
    ball = (((g - c[:, None, None, None]) ** 2).sum(0) <= 4) & (lab == 3)
    lab[ball] = CID["kidney_cyst"]
    hu[ball] = 5
    return hu, lab, img.affine


def test_flipped_or_permuted_storage_gives_identical_findings(tmp_path, real_ct):
    hu, lab, aff = _with_lesions(real_ct)
    ref_v = load_volume(write_nii(tmp_path / "ct.nii.gz", hu, aff))
    ref = extract(ref_v, load_labelmap(write_nii(tmp_path / "seg.nii.gz", lab, aff), "canonical",
                                       reference=ref_v)).to_dict()
    assert {les["organ"] for les in ref["lesions"]} == {"liver", "kidney_left"}
    for k, (perm, flips) in enumerate([((0, 1, 2), (True, False, False)), ((2, 0, 1), (False, True, True)),
                                       ((1, 2, 0), (True, True, False))]):
        a, a_aff = reorder_on_disk(hu, aff, perm, flips)
        s, s_aff = reorder_on_disk(lab, aff, perm[::-1], flips[::-1])
        v = load_volume(write_nii(tmp_path / f"ct{k}.nii.gz", a, a_aff))
        lm = load_labelmap(write_nii(tmp_path / f"seg{k}.nii.gz", s, s_aff), "canonical", reference=v)
        got = extract(v, lm).to_dict()
        got["source"] = ref["source"]
        assert got == ref


def test_report_and_cli(tmp_path, real_ct):
    hu, lab, aff = _with_lesions(real_ct)
    ct = write_nii(tmp_path / "ct.nii.gz", hu, aff)
    seg = write_nii(tmp_path / "seg.nii.gz", lab, aff)
    out, rep = tmp_path / "f.json", tmp_path / "r.txt"
    r = CliRunner().invoke(main, ["findings", str(ct), "--masks", str(seg), "--labels", "canonical",
                                  "--json", str(out), "--report", str(rep)])
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert len(d["lesions"]) == 2 and d["report"]["lesions"][0]["text"]
    text = rep.read_text()
    assert "LIVER:" in text and " x " in text and "cm (slice" in text
    # Splenomegaly flag with its rule from the knowledge table.
    lab2 = np.zeros((60, 60, 60), np.uint8)
    lab2[5:55, 5:55, 5:55] = CID["spleen"]  # 125 ml at 1 mm... scaled below
    f = extract(*make_case(np.full(lab2.shape, 45, np.int16), lab2, spacing=(1.5, 1.5, 1.5)))
    rep2 = structured_report(f)
    assert rep2["organs"]["spleen"]["flags"][0]["rule"] == "splenomegaly"
    assert "splenomegaly (mild)" in render_text(f)
