"""Hospital mask formats (DICOM SEG, RTSTRUCT) and the chest family, on the
shared real data: the dcmqi DICOM SEG liver, an RTSTRUCT written by rt-utils
for the shared CT series, the real lung tumour of pyradiomics' lung2 and the
KiTS19 case-0 label map."""
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from tests.helpers import REAL_CT, write_nii
from volvqa import knowledge as K
from volvqa import labels as L
from volvqa.cli import main
from volvqa.findings import extract
from volvqa.io import load_labelmap, load_volume, resample_nearest
from volvqa.io.orientation import LPS_TO_RAS
from volvqa.qa.context import CaseContext
from volvqa.qa.generate import case_items

REAL_TUMOR = REAL_CT.parent / "real_tumor"
SEG_DIR = REAL_TUMOR / "dicom_seg_liver"


def _need(path):
    if not path.exists():
        pytest.skip(f"shared real data not found at {path}")


def _sitk_on(reference, path):
    """A NRRD/NIfTI mask read by SimpleITK (LPS), mapped onto ``reference``'s grid through world coordinates."""
    import SimpleITK as sitk
    im = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(im).transpose(2, 1, 0)
    aff = np.eye(4)
    aff[:3, :3] = np.array(im.GetDirection()).reshape(3, 3) * np.array(im.GetSpacing())
    aff[:3, 3] = im.GetOrigin()
    return resample_nearest((arr > 0).astype(np.uint8), LPS_TO_RAS @ aff, reference.shape, reference.affine) > 0


def _recist_by_angles(mask2d, spacing_xy, step_deg=0.25):
    """Long axis and its perpendicular width of a 2D mask by sweeping caliper
    directions (outer faces: centre extent plus one pixel's extent along the
    direction) - an implementation independent of findings' hull pairs."""
    pts = np.argwhere(mask2d) * np.asarray(spacing_xy, float)
    best = (-1.0, 0.0)
    for th in np.deg2rad(np.arange(0, 180, step_deg)):
        u = np.array([np.cos(th), np.sin(th)])
        w = np.ptp(pts @ u) + np.abs(u) @ np.asarray(spacing_xy, float)
        if w > best[0]:
            best = (w, th)
    th = best[1] + np.pi / 2
    u = np.array([np.cos(th), np.sin(th)])
    return best[0], np.ptp(pts @ u) + np.abs(u) @ np.asarray(spacing_xy, float)


# --- DICOM SEG -------------------------------------------------------------------------------------

def test_dicom_seg_equals_the_reference_nrrd(tmp_path):
    _need(SEG_DIR / "liver.dcm")
    v = load_volume(SEG_DIR / "ct-3slice")
    lm = load_labelmap(SEG_DIR / "liver.dcm", "auto", reference=v)   # SegmentLabel "Liver" -> liver
    assert set(lm.labels.values()) == {"liver"} and lm.annotates == {"liver"}
    ref = _sitk_on(v, SEG_DIR / "liver_seg.nrrd")
    assert ref.sum() > 100_000 and np.array_equal(lm.array == L.CANONICAL_IDS["liver"], ref)
    # The same through a NIfTI copy of the CT stored in another voxel order: world coordinates, not indices.
    flipped = tmp_path / "ct.nii.gz"
    write_nii(flipped, v.array[::-1, :, ::-1], v.affine @ np.array([[-1, 0, 0, v.shape[0] - 1], [0, 1, 0, 0],
                                                                       [0, 0, -1, v.shape[2] - 1], [0, 0, 0, 1]]))
    v2 = load_volume(flipped)
    lm2 = load_labelmap(SEG_DIR, {"Liver": "liver"}, reference=v2)   # the folder holding the SEG
    assert np.array_equal(lm2.array, lm.array)
    # Converted to a canonical label map by `volvqa ingest`, then read back.
    r = CliRunner().invoke(main, ["ingest", str(SEG_DIR / "ct-3slice"), str(tmp_path / "ct3.nii.gz"), "--masks",
                                  str(SEG_DIR / "liver.dcm"), "--masks-out", str(tmp_path / "labels.nii.gz")])
    assert r.exit_code == 0, r.output
    back = load_labelmap(tmp_path / "labels.nii.gz", "canonical", reference=load_volume(tmp_path / "ct3.nii.gz"))
    assert np.array_equal(back.array, lm.array)


def test_fractional_multi_segment_seg_written_by_highdicom(tmp_path):
    """Segments named "Liver" and "Liver Tumor", fractional values: a voxel belongs at 0.5 or more."""
    _need(SEG_DIR / "liver.dcm")
    import warnings

    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid
    from scipy import ndimage
    srcs = [pydicom.dcmread(p) for p in sorted((SEG_DIR / "ct-3slice").iterdir())]
    for ds in srcs:
        if not ds.get("SpecificCharacterSet"):
            del ds.SpecificCharacterSet     # an empty value that highdicom refuses
    v = load_volume(SEG_DIR / "ct-3slice")
    liver = load_labelmap(SEG_DIR / "liver.dcm", "auto", reference=v).array == L.CANONICAL_IDS["liver"]
    tumour = np.zeros_like(liver)
    c = np.argwhere(liver).mean(axis=0).astype(int)
    tumour[c[0] - 10:c[0] + 10, c[1] - 10:c[1] + 10, :] = True
    tumour &= liver
    ring = ndimage.binary_dilation(liver, iterations=2) & ~liver
    inv = np.linalg.inv(v.affine)

    def on_frames(mask):   # the canonical mask on each source image's (row, column) grid
        out = []
        for ds in srcs:
            ipp, iop = np.asarray(ds.ImagePositionPatient, float), np.asarray(ds.ImageOrientationPatient, float)
            ps = np.asarray(ds.PixelSpacing, float)
            rows, cols = np.mgrid[0:ds.Rows, 0:ds.Columns]
            world = ipp + cols[..., None] * iop[:3] * ps[1] + rows[..., None] * iop[3:] * ps[0]
            idx = np.rint((world @ LPS_TO_RAS[:3, :3].T) @ inv[:3, :3].T + inv[:3, 3]).astype(int)
            out.append(mask[idx[..., 0], idx[..., 1], idx[..., 2]])
        return np.stack(out)
    organ = np.where(on_frames(liver & ~tumour), 0.8, np.where(on_frames(ring), 0.3, 0.0))
    lesion = np.where(on_frames(tumour), 0.9, 0.0)

    def desc(n, label, typ):
        return hd.seg.SegmentDescription(segment_number=n, segment_label=label,
                                         segmented_property_category=codes.SCT.Organ, segmented_property_type=typ,
                                         algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=srcs, pixel_array=np.stack([organ, lesion], axis=-1).astype(np.float32),
            segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
            segment_descriptions=[desc(1, "Liver", codes.SCT.Liver), desc(2, "Liver Tumor", codes.SCT.Neoplasm)],
            series_instance_uid=generate_uid(), series_number=5, sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer="volvqa tests", manufacturer_model_name="none", software_versions="0",
            device_serial_number="1", max_fractional_value=255)
    seg.save_as(tmp_path / "frac.dcm")
    lm = load_labelmap(tmp_path / "frac.dcm", "auto", reference=v)
    assert set(lm.labels.values()) == {"liver", "liver_tumor"}
    assert np.array_equal(lm.array == L.CANONICAL_IDS["liver"], liver & ~tumour)
    assert np.array_equal(lm.array == L.CANONICAL_IDS["liver_tumor"], tumour)
    f = extract(v, lm)
    assert f.organs["liver"].voxels == liver.sum() and len(f.lesions) == 1


def test_dicom_seg_of_another_series_is_refused(tmp_path):
    _need(SEG_DIR / "liver.dcm")
    ds = pydicom.dcmread(SEG_DIR / "liver.dcm")
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.3.4.5"
    ds.save_as(tmp_path / "other_series.dcm")
    ds = pydicom.dcmread(SEG_DIR / "liver.dcm")
    ds.FrameOfReferenceUID = "1.2.3.4.6"
    ds.save_as(tmp_path / "other_frame.dcm")
    ct_uid = pydicom.dcmread(SEG_DIR / "ct-3slice" / "01.dcm", stop_before_pixels=True)
    for f, uid, ct in (("other_series.dcm", "1.2.3.4.5", ct_uid.SeriesInstanceUID),
                       ("other_frame.dcm", "1.2.3.4.6", ct_uid.FrameOfReferenceUID)):
        r = CliRunner().invoke(main, ["findings", str(SEG_DIR / "ct-3slice"), "--masks", str(tmp_path / f),
                                      "--json", str(tmp_path / "f.json")])
        assert r.exit_code == 2 and not (tmp_path / "f.json").exists()
        msg = r.output.strip()
        assert len(msg.splitlines()) == 1 and uid in msg and str(ct) in msg and f in msg, msg


# --- RTSTRUCT -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rtstruct(tmp_path_factory):
    """An RTSTRUCT written by rt-utils (an independent writer) from the
    shared DICOM series' TotalSegmentator liver, and the reference mask."""
    series = REAL_CT / "example_ct_dicom"
    _need(series)
    from rt_utils import RTStructBuilder
    v = load_volume(series)
    lm = load_labelmap(REAL_CT / "example_seg_dicom.nii.gz", "totalsegmentator", reference=v)
    liver = lm.array == L.CANONICAL_IDS["liver"]
    rt = RTStructBuilder.create_new(dicom_series_path=str(series))
    inv = np.linalg.inv(v.affine)
    planes = []
    for ds in rt.series_data:  # rt-utils' own slice order and (row, column) layout
        ipp = np.asarray(ds.ImagePositionPatient, float)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        ps = np.asarray(ds.PixelSpacing, float)
        rows, cols = np.mgrid[0:ds.Rows, 0:ds.Columns]
        world = ipp + cols[..., None] * iop[:3] * ps[1] + rows[..., None] * iop[3:] * ps[0]
        idx = np.rint((world @ LPS_TO_RAS[:3, :3].T) @ inv[:3, :3].T + inv[:3, 3]).astype(int)
        planes.append(liver[idx[..., 0], idx[..., 1], idx[..., 2]])
    rt.add_roi(mask=np.stack(planes, axis=-1), name="Liver")
    out = tmp_path_factory.mktemp("rt") / "rtstruct.dcm"
    rt.save(str(out))
    return series, out, v, liver


def test_rtstruct_round_trip(rtstruct):
    series, path, v, liver = rtstruct
    lm = load_labelmap(path, "auto", reference=v)
    got = lm.array == L.CANONICAL_IDS["liver"]
    dice = 2 * (got & liver).sum() / (got.sum() + liver.sum())
    assert dice >= 0.97 and abs(got.sum() / liver.sum() - 1) <= 0.03, (dice, got.sum(), liver.sum())
    # Findings through the CLI.
    r = CliRunner().invoke(main, ["findings", str(series), "--masks", str(path), "--json", "/dev/null"])
    assert r.exit_code == 0, r.output


def test_rtstruct_wrong_frame_or_missing_slice(rtstruct, tmp_path):
    series, path, v, _ = rtstruct
    ds = pydicom.dcmread(path)
    for ref in ds.ReferencedFrameOfReferenceSequence:
        ref.FrameOfReferenceUID = "1.2.3.9"
    for roi in ds.StructureSetROISequence:
        roi.ReferencedFrameOfReferenceUID = "1.2.3.9"
    ds.save_as(tmp_path / "wrong_frame.dcm")
    ds = pydicom.dcmread(path)
    c = ds.ROIContourSequence[0].ContourSequence[0]
    pts = np.asarray([float(x) for x in c.ContourData]).reshape(-1, 3)
    pts[:, 2] += 1.0   # half a 2 mm slice: a plane the CT lacks
    c.ContourData = [f"{x:.4f}" for x in pts.ravel()]
    ds.save_as(tmp_path / "between.dcm")
    for name, words in (("wrong_frame.dcm", ["1.2.3.9", "FrameOfReferenceUID"]), ("between.dcm", ["slice the CT lacks"])):
        r = CliRunner().invoke(main, ["answer", "--volume", str(series), "--masks", str(tmp_path / name),
                                      "--question", "What is the volume of the liver in ml?"])
        msg = r.output.strip()
        assert r.exit_code == 2 and len(msg.splitlines()) == 1 and name in msg, msg
        assert all(w in msg for w in words), msg


def _malformed_contour(ds, kind):
    c = ds.ROIContourSequence[0].ContourSequence[0]
    pts = [float(x) for x in c.ContourData]
    if kind == "four_floats":
        c.ContourData = [f"{x:.4f}" for x in pts[:4]]
    elif kind == "nan":
        c.ContourData = ["NaN"] + [f"{x:.4f}" for x in pts[1:]]
    elif kind == "two_points":
        c.ContourData = [f"{x:.4f}" for x in pts[:6]]
        c.NumberOfContourPoints = 2
    elif kind == "roi_number":
        ds.ROIContourSequence[0].ReferencedROINumber = None
    return {"four_floats": "holds 4 numbers", "nan": "NaN or Inf", "two_points": "of 2 points",
            "roi_number": "ReferencedROINumber"}[kind]


@pytest.mark.parametrize("kind", ["four_floats", "nan", "two_points", "roi_number"])
def test_malformed_rtstruct_is_bad_input_not_an_internal_error(rtstruct, tmp_path, kind):
    from pydicom import config
    series, path, v, _ = rtstruct
    ds = pydicom.dcmread(path)
    expected = _malformed_contour(ds, kind)
    bad = tmp_path / f"{kind}.dcm"
    old = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE   # write what a careless writer would
    try:
        ds.save_as(bad)
    finally:
        config.settings.writing_validation_mode = old
    r = CliRunner().invoke(main, ["answer", "--volume", str(series), "--masks", str(bad),
                                  "--question", "What is the volume of the liver in ml?"])
    msg = r.output.strip()
    assert r.exit_code == 2 and len(msg.splitlines()) == 1 and str(bad) in msg and expected in msg, msg
    assert "internal error" not in msg


# --- the chest family on the real lung tumour -----------------------------------------------------

@pytest.fixture(scope="module")
def lung2():
    _need(REAL_TUMOR / "lung2_ct.nii.gz")
    v = load_volume(REAL_TUMOR / "lung2_ct.nii.gz")
    lm = load_labelmap(REAL_TUMOR / "lung2_label.nii.gz", {1: "lung_tumor"}, reference=v)
    return v, lm, extract(v, lm, case_id="lung2")


def test_lung_tumour_findings_against_simpleitk(lung2):
    import SimpleITK as sitk
    v, lm, f = lung2
    lab = sitk.ReadImage(str(REAL_TUMOR / "lung2_label.nii.gz"))
    ct = sitk.ReadImage(str(REAL_TUMOR / "lung2_ct.nii.gz"))
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.ComputeFeretDiameterOn()
    shape.Execute(lab)
    inten = sitk.LabelIntensityStatisticsImageFilter()
    inten.Execute(lab, ct)
    assert len(f.lesions) == 1
    x = f.lesions[0]
    assert x.volume_ml == pytest.approx(shape.GetPhysicalSize(1) / 1000, rel=1e-3)
    assert x.hu_mean == pytest.approx(inten.GetMean(1), abs=1e-6)
    # Caliper (outer faces) vs Feret (voxel centres): within one voxel's extent (at most its diagonal).
    feret = shape.GetFeretDiameter(1)
    assert 0 <= x.max_diameter_3d_mm - feret <= float(np.linalg.norm(v.spacing_mm))
    # Long axis: SimpleITK's Feret diameter on each axial slice, the largest, within one in-plane voxel.
    arr = sitk.GetArrayFromImage(lab)
    best = 0.0
    for k in range(arr.shape[0]):
        if arr[k].any():
            s2 = sitk.GetImageFromArray(arr[k].astype(np.uint8))
            s2.SetSpacing(lab.GetSpacing()[:2])
            st = sitk.LabelShapeStatisticsImageFilter()
            st.ComputeFeretDiameterOn()
            st.Execute(s2)
            best = max(best, st.GetFeretDiameter(1))
    assert 0 <= x.long_axis_mm - best <= 2 * v.spacing_mm[0]
    # Long and short axis on their slice against a caliper sweep over directions.
    z = x.axial_slice
    long_bf, short_bf = _recist_by_angles(lm.array[:, :, z] == L.CANONICAL_IDS["lung_tumor"], v.spacing_mm[:2])
    assert x.long_axis_mm == pytest.approx(long_bf, rel=0.005)
    assert x.short_axis_mm == pytest.approx(short_bf, abs=2 * v.spacing_mm[0])
    # By hand: the greatest dimension, 6.5-7.0 cm by either measure, is T3 (> 5 and <= 7 cm).
    assert 50 < feret <= 70 and 50 < x.max_diameter_3d_mm <= 70
    assert K.lung_t_category(x.max_diameter_3d_mm) == "T3"
    assert x.density == "solid" and x.location["side"] == "left" and x.location["third"] == "lower"


@pytest.mark.slow
def test_lung_questions_end_to_end(lung2, tmp_path):
    v, lm, f = lung2
    items = {it["template_id"]: it for it in case_items(CaseContext("lung2", f), 0)}
    assert items["med.lung_t_category"]["answer"] == "T3"
    assert items["vr.lung_lesion_density"]["answer"] == "solid"
    assert items["vr.lung_lesion_count"]["answer"] == 1
    assert items["meas.lung_lesion_volume"]["answer"] == pytest.approx(48.43, abs=0.01)
    assert "med.fleischner_category" not in items   # a 48 ml tumour is no incidental nodule
    assert not any("liver" in it["question"] or "kidney" in it["question"] for it in items.values())
    # build-qa over a CSV manifest (the CT cell and the mask cell, with a per-case label spec).
    (tmp_path / "cases.csv").write_text("case_id,ct,masks\nlung2,lung2_ct.nii.gz,lung2_label.nii.gz\n")
    m = tmp_path / "lung.yaml"
    m.write_text(f"layout: csv\nroot: {REAL_TUMOR}\ncsv: cases.csv\nlabels: {{1: lung_tumor}}\n"
                 "splits: {test: 1.0}\nseed: 0\n")
    r = subprocess.run([sys.executable, "-m", "volvqa.cli", "build-qa", str(m), "--out", str(tmp_path / "out"),
                        "--include-flagged"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # Every category is generated (a one-case build then drops what answer balancing cannot keep).
    raw = json.loads((tmp_path / "out" / "work" / "lung2" / "items.json").read_text())
    assert {"med.lung_t_category", "vr.lung_lesion_location", "loc.lung_lesion_bbox"} <= {it["template_id"] for it in raw}
    assert {it["category"] for it in raw} == {"Recognition", "Measurement", "Visual Reasoning", "Medical Reasoning",
                                              "Localization"}
    built = [json.loads(x) for x in (tmp_path / "out" / "qa.jsonl").read_text().splitlines()]
    assert built and {it["qid"] for it in built} <= {it["qid"] for it in raw}
    # The grounded oracle answers every one of them.
    preds = tmp_path / "p.jsonl"
    from volvqa.eval.run import evaluate, predict
    predict(tmp_path / "out", "grounded", "all", preds, progress=False)
    assert next(iter(evaluate(tmp_path / "out", [preds]).values()))["overall"]["score"] == pytest.approx(1.0)


def test_lung_rules_by_hand():
    # Fleischner: the average of long and short axis rounded to the nearest mm.
    assert K.fleischner_category(6.0, 4.9) == "< 6 mm"      # 5.45 -> 5
    assert K.fleischner_category(6.0, 5.0) == "6-8 mm"      # 5.5 -> 6
    assert K.fleischner_category(8.0, 8.0) == "6-8 mm"      # 8
    assert K.fleischner_category(8.9, 8.0) == "6-8 mm"      # 8.45 -> 8
    assert K.fleischner_category(9.0, 8.0) == "> 8 mm"      # 8.5 -> 9
    # Lung-RADS v2022: mean diameter to one decimal.
    assert [K.lung_rads_category(d, d) for d in (5.9, 5.96, 7.94, 7.96, 14.9, 15.0)] == ["2", "3", "3", "4A", "4A", "4B"]
    assert [K.lung_t_category(mm) for mm in (10, 10.1, 20, 30, 30.1, 40, 50, 70, 70.1)] == \
        ["T1a", "T1b", "T1b", "T1c", "T2a", "T2a", "T2b", "T3", "T4"]
    assert [K.lung_density(h) for h in (-700, -600, -301, -300, 20)] == \
        ["ground-glass", "part-solid", "part-solid", "solid", "solid"]


# --- KiTS19 case 0: real kidney-tumour geometry, HU synthesised on its grid -------------------------

@pytest.mark.slow
def test_kits19_label_map_findings_against_simpleitk(tmp_path):
    """KiTS19 stores the slice axis first (I, P, L): the kidney side must come from the affine."""
    path = REAL_TUMOR / "kits19_case_00000_segmentation.nii.gz"
    _need(path)
    import SimpleITK as sitk
    img = nib.load(path)
    seg = np.asarray(img.dataobj)
    rng = np.random.default_rng(0)
    hu = np.full(seg.shape, 30, np.int16) + rng.integers(-8, 9, seg.shape, dtype=np.int16)
    hu[seg == 1] += 120
    hu[seg == 2] += 40
    hu[:, :8, :] = -1000   # air in front of the body
    ct_path = tmp_path / "imaging.nii"
    nib.save(nib.Nifti1Image(hu, img.affine), str(ct_path))
    v = load_volume(ct_path)
    lm = load_labelmap(path, {1: "kidney", 2: "kidney_tumor"}, reference=v)
    f = extract(v, lm, case_id="kits19_0")
    les = f.lesions
    lab = sitk.ReadImage(str(path))
    st = sitk.LabelShapeStatisticsImageFilter()
    st.ComputeFeretDiameterOn()
    st.Execute(lab)
    assert sum(x.volume_ml for x in les) == pytest.approx(st.GetPhysicalSize(2) / 1000, rel=1e-3)
    big = max(les, key=lambda x: x.volume_ml)
    # Caliper (outer faces) vs Feret (voxel centres): within one voxel's extent (at most its diagonal).
    assert 0 <= big.max_diameter_3d_mm - st.GetFeretDiameter(2) <= float(np.linalg.norm(v.spacing_mm))
    # RECIST axes on the canonical axial slice: SimpleITK's per-slice Feret for the long axis, a
    # caliper sweep for both.
    tumour = lm.array == L.CANONICAL_IDS["kidney_tumor"]
    best = 0.0
    for z in np.nonzero(tumour.any(axis=(0, 1)))[0]:
        s2 = sitk.GetImageFromArray(tumour[:, :, z].T.astype(np.uint8))
        s2.SetSpacing(v.spacing_mm[:2])
        st2 = sitk.LabelShapeStatisticsImageFilter()
        st2.ComputeFeretDiameterOn()
        st2.Execute(s2)
        best = max(best, st2.GetFeretDiameter(1))
    assert 0 <= big.long_axis_mm - best <= float(np.hypot(*v.spacing_mm[:2]))
    long_bf, short_bf = _recist_by_angles(tumour[:, :, big.axial_slice], v.spacing_mm[:2])
    assert big.long_axis_mm == pytest.approx(long_bf, rel=0.005)
    assert big.short_axis_mm == pytest.approx(short_bf, abs=2 * v.spacing_mm[0])
    # Side by hand from nibabel's affine: world x (RAS) of the tumour vs each kidney.
    ijk = np.argwhere(seg == 2).mean(axis=0)
    tumour_x = (img.affine @ [*ijk, 1])[0]
    kid, n = __import__("scipy.ndimage", fromlist=["label"]).label(seg == 1)
    xs = [(img.affine @ [*np.argwhere(kid == k).mean(axis=0), 1])[0] for k in range(1, n + 1)
          if (kid == k).sum() > 10_000]
    nearest_x = min(xs, key=lambda x: abs(x - tumour_x))
    side = "right" if nearest_x == max(xs) else "left"   # RAS: the patient's right has the larger x
    assert big.organ == f"kidney_{side}"
    # Questions: nothing about organs KiTS does not annotate; the side question is right.
    items = case_items(CaseContext("kits19_0", f), 0)
    assert items and not any(w in it["question"] for it in items for w in ("liver", "spleen", "pancrea", "lung"))
    side_q = [it for it in items if it["template_id"] == "vr.kidney_lesion_side"]
    assert side_q and all(it["answer"] == side for it in side_q)


# --- chest phantoms: nodules of known lobe, size and density -------------------------------------------

def test_chest_phantom_nodule_truth_is_recovered():
    from volvqa.records import LabelMap, Source, Volume
    from volvqa.synth.chest import ChestConfig, NoduleSpec, generate_chest
    specs = [NoduleSpec("lung_upper_lobe_right", 5.5, "solid"), NoduleSpec("lung_lower_lobe_left", 7.0, "solid"),
             NoduleSpec("lung_middle_lobe_right", 12.0, "part-solid"),
             NoduleSpec("lung_lower_lobe_right", 10.0, "ground-glass"),
             NoduleSpec("lung_upper_lobe_left", 45.0, "solid", "lung_tumor")]
    ph = generate_chest(ChestConfig(seed=3, nodules=specs))
    v = Volume(ph.ct, ph.affine, (1.5, 1.5, 3.0), Source("chest"))
    lm = LabelMap(ph.labels, {i: L.CANONICAL_NAMES[i] for i in np.unique(ph.labels) if i}, ph.affine)
    f = extract(v, lm, case_id="chest")
    painted = [n for n in ph.truth["nodules"] if "skipped" not in n]
    assert len(painted) == len(specs) == len(f.lesions)
    vox_ml = 1.5 * 1.5 * 3.0 / 1000
    for t in painted:
        # Each painted nodule is one lesion: same voxels, lobe, density; volume = voxels x voxel size.
        x = min(f.lesions, key=lambda les: np.linalg.norm(np.subtract(les.centroid_mm, t["centre_mm"])))
        assert x.voxels == t["voxels"] and x.volume_ml == pytest.approx(t["voxels"] * vox_ml)
        assert x.location["lobe"] == t["lobe_painted"] == t["lobe"] and x.density == t["density"]
        assert x.label == t["label"] and x.hu_mean == pytest.approx(t["mean_hu"], abs=15)   # + the scan's noise
        # Equivalent-sphere diameter vs the measured axes: the long axis is at least it (less 1.5 voxels).
        assert x.long_axis_mm >= t["diameter_mm"] - 1.5 * 1.5
    items = {(it["template_id"], json.dumps(it["params"], sort_keys=True)): it
             for it in case_items(CaseContext("chest", f), 0)}
    lobes = {k[1] for k in items if k[0] == "rec.lobe_lesion_exists"}
    assert len(lobes) == 5
    largest = max(f.lesions, key=lambda les: les.volume_ml)
    assert items[("vr.lung_lesion_location", "{}")]["answer"] == "left upper lobe" == \
        {"lung_upper_lobe_left": "left upper lobe"}[largest.location["lobe"]]
    assert items[("med.lung_t_category", "{}")]["answer"] == K.lung_t_category(largest.max_diameter_3d_mm)
    solid = [x for x in f.lesions if x.density == "solid" and x.label == "lung_nodule"]
    big = max(solid, key=lambda x: x.long_axis_mm + x.short_axis_mm)
    mean = (big.long_axis_mm + big.short_axis_mm) / 2
    expect = "< 6 mm" if round(mean + 1e-9) < 6 else ("6-8 mm" if int(mean + 0.5) <= 8 else "> 8 mm")
    assert items[("med.fleischner_category", "{}")]["answer"] == expect


@pytest.mark.slow
def test_chest_demo_manifest_builds_every_category(tmp_path):
    m = tmp_path / "chest.yaml"
    m.write_text(f"layout: synthetic\nroot: {tmp_path / 'data'}\ngenerate: {{n: 10, seed: 0, kind: chest}}\n"
                 "splits: {train: 0.5, test: 0.5}\nseed: 0\n")
    r = subprocess.run([sys.executable, "-m", "volvqa.cli", "build-qa", str(m), "--out", str(tmp_path / "out"),
                        "--workers", "2", "--include-flagged"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    items = [json.loads(x) for x in (tmp_path / "out" / "qa.jsonl").read_text().splitlines()]
    assert {it["category"] for it in items} == {"Recognition", "Measurement", "Visual Reasoning",
                                                "Medical Reasoning", "Localization"}
    info = json.loads((tmp_path / "out" / "build.json").read_text())
    from volvqa.synth.chest import CHEST_ANNOTATES
    assert set(info["annotates"]) <= CHEST_ANNOTATES and {"lung_nodule", "lung_tumor"} <= set(info["annotates"])
    assert json.loads((tmp_path / "out" / "qc.json").read_text())["cases_with_findings"] == 0
    from volvqa.eval.run import evaluate, predict
    preds = tmp_path / "p.jsonl"
    predict(tmp_path / "out", "grounded", "all", preds, progress=False)
    assert next(iter(evaluate(tmp_path / "out", [preds]).values()))["overall"]["score"] == pytest.approx(1.0)


@pytest.mark.slow
def test_csv_manifest_with_dicom_folder_and_seg_cells(tmp_path, rtstruct):
    """A CSV layout whose cells name a DICOM series folder and a SEG (or RTSTRUCT) file."""
    import shutil
    _need(SEG_DIR / "liver.dcm")
    root = tmp_path / "root"
    shutil.copytree(SEG_DIR / "ct-3slice", root / "case_a" / "ct")
    shutil.copy(SEG_DIR / "liver.dcm", root / "case_a" / "liver_seg.dcm")
    series, rt_path, _v, _liver = rtstruct
    shutil.copytree(series, root / "case_b" / "ct")
    shutil.copy(rt_path, root / "case_b" / "rtstruct.dcm")
    (root / "cases.csv").write_text("case_id,ct,masks\ncase_a,case_a/ct,case_a/liver_seg.dcm\n"
                                    "case_b,case_b/ct,case_b/rtstruct.dcm\n")
    m = tmp_path / "hospital.yaml"
    m.write_text(f"layout: csv\nroot: {root}\nlabels: {{Liver: liver}}\nsplits: {{test: 1.0}}\nseed: 0\n")
    r = CliRunner().invoke(main, ["datasets", "check", str(m)])
    assert r.exit_code == 0 and "cases with unmapped labels: 0" in r.output, r.output
    r = subprocess.run([sys.executable, "-m", "volvqa.cli", "build-qa", str(m), "--out", str(tmp_path / "out"),
                        "--include-flagged"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for cid in ("case_a", "case_b"):
        f = json.loads((tmp_path / "out" / "cases" / cid / "findings.json").read_text())
        assert f["annotated"] == ["liver"] and "liver" in f["organs"]
        raw = json.loads((tmp_path / "out" / "work" / cid / "items.json").read_text())
        assert raw and all("liver" in it["question"] for it in raw)
