"""load_volume: NIfTI in any storage order, HU scaling, DICOM series (real and generated)."""
import zipfile

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from tests.helpers import all_orientations, ct_phantom, reorder_on_disk, write_dicom_series, write_nii
from volvqa.errors import VolvqaInputError
from volvqa.io import load_labelmap, load_volume, save_volume
from volvqa.io.orientation import axcodes


def test_real_nifti_loads_canonical(real_ct):
    v = load_volume(real_ct / "example_ct_sm.nii.gz")
    assert v.array.dtype == np.int16
    assert v.shape == (122, 101, 30)
    assert v.spacing_mm == pytest.approx((3.0, 3.0, 3.0))
    assert axcodes(v.affine) == "RAS"
    raw = np.asanyarray(nib.load(real_ct / "example_ct_sm.nii.gz").dataobj)
    assert np.array_equal(v.array, raw)


@pytest.mark.parametrize("perm,flips", list(all_orientations()))
def test_any_storage_order_gives_identical_canonical(tmp_path, real_ct, perm, flips):
    img = nib.load(real_ct / "example_ct_sm.nii.gz")
    ref = load_volume(real_ct / "example_ct_sm.nii.gz")
    arr, aff = reorder_on_disk(np.asanyarray(img.dataobj), img.affine, perm, flips)
    p = write_nii(tmp_path / "re.nii.gz", arr, aff)
    v = load_volume(p)
    assert np.array_equal(v.array, ref.array)
    assert np.allclose(v.affine, ref.affine, atol=1e-4)
    assert v.meta["orientation_on_disk"] == axcodes(aff)


def test_left_kidney_at_smaller_x_than_right(real_ct):
    v = load_volume(real_ct / "example_ct_sm.nii.gz")
    lm = load_labelmap(real_ct / "example_seg.nii.gz", "totalsegmentator", reference=v)
    def world_x(name):
        idx = np.argwhere(lm.array == lm.id_of(name)).mean(axis=0)
        return (v.affine @ np.r_[idx, 1])[0]
    assert world_x("kidney_left") < world_x("kidney_right")
    # Also in index space: RAS index 0 grows toward the patient's right.
    xl = np.argwhere(lm.array == lm.id_of("kidney_left"))[:, 0].mean()
    xr = np.argwhere(lm.array == lm.id_of("kidney_right"))[:, 0].mean()
    assert xl < xr


def test_flipped_pair_keeps_sides(tmp_path, real_ct):
    img, seg = nib.load(real_ct / "example_ct_sm.nii.gz"), nib.load(real_ct / "example_seg.nii.gz")
    a, aff = reorder_on_disk(np.asanyarray(img.dataobj), img.affine, (1, 0, 2), (True, False, True))
    s, saff = reorder_on_disk(np.asanyarray(seg.dataobj), seg.affine, (2, 0, 1), (False, True, False))
    v = load_volume(write_nii(tmp_path / "ct.nii.gz", a, aff))
    lm = load_labelmap(write_nii(tmp_path / "seg.nii.gz", s, saff), "totalsegmentator", reference=v)
    ref_v = load_volume(real_ct / "example_ct_sm.nii.gz")
    ref_lm = load_labelmap(real_ct / "example_seg.nii.gz", "totalsegmentator", reference=ref_v)
    assert np.array_equal(lm.array, ref_lm.array)
    assert lm.labels == ref_lm.labels


def test_scaled_float_and_unsigned_storage(tmp_path):
    hu = ct_phantom()
    # uint16 with scl_inter -1024, as many scanners export.
    p = write_nii(tmp_path / "u16.nii.gz", (hu.astype(np.int32) + 1024).astype(np.uint16), slope=1, inter=-1024)
    assert np.array_equal(load_volume(p).array, hu)
    # float32 with fractional noise: rounded to the nearest HU.
    p = write_nii(tmp_path / "f32.nii.gz", hu.astype(np.float32) + 0.2)
    assert np.array_equal(load_volume(p).array, hu)
    # 4D with a singleton 4th axis is fine.
    p = write_nii(tmp_path / "4d.nii.gz", hu[..., None])
    assert load_volume(p).shape == hu.shape
    # Uncompressed .nii.
    p = write_nii(tmp_path / "plain.nii", hu)
    assert np.array_equal(load_volume(p).array, hu)


def test_isal_and_gzip_give_identical_arrays(real_ct):
    a = load_volume(real_ct / "example_ct_sm.nii.gz", use_isal=True)
    b = load_volume(real_ct / "example_ct_sm.nii.gz", use_isal=False)
    assert np.array_equal(a.array, b.array)


def test_save_is_deterministic_and_roundtrips(tmp_path, real_ct):
    v = load_volume(real_ct / "example_ct_sm.nii.gz")
    save_volume(v, tmp_path / "a.nii.gz")
    save_volume(v, tmp_path / "b.nii.gz")
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()
    w = load_volume(tmp_path / "a.nii.gz")
    assert np.array_equal(w.array, v.array) and np.allclose(w.affine, v.affine)


def _sitk_canonical(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0)  # -> (x, y, z) index order
    d = np.array(img.GetDirection()).reshape(3, 3)
    aff_lps = np.eye(4)
    aff_lps[:3, :3] = d * np.array(img.GetSpacing())
    aff_lps[:3, 3] = img.GetOrigin()
    aff = np.diag([-1, -1, 1, 1]) @ aff_lps
    canon = nib.as_closest_canonical(nib.Nifti1Image(arr.astype(np.int16), aff))
    return np.asanyarray(canon.dataobj), canon.affine


def test_real_dicom_matches_simpleitk(real_ct):
    v = load_volume(real_ct / "example_ct_dicom")
    arr, aff = _sitk_canonical(real_ct / "example_ct_dicom")
    assert v.shape == (512, 512, 20)
    assert np.array_equal(v.array, arr)
    assert np.allclose(v.affine, aff, atol=1e-3)
    assert v.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.90"  # JPEG 2000, decoded


def test_real_dicom_and_its_label_map_line_up(real_ct):
    v = load_volume(real_ct / "example_ct_dicom")
    lm = load_labelmap(real_ct / "example_seg_dicom.nii.gz", "totalsegmentator", reference=v)
    raw = np.asanyarray(nib.load(real_ct / "example_seg_dicom.nii.gz").dataobj)
    liver = lm.array == lm.id_of("liver")
    assert liver.sum() == (raw == 5).sum()  # exact voxel count through the world mapping
    assert 40 < v.array[liver].mean() < 150  # liver parenchyma HU (unenhanced to portal venous)
    # Same for every structure.
    for cid, name in lm.labels.items():
        assert (lm.array == cid).sum() == (raw == cid).sum(), name


@pytest.mark.parametrize("iop", [(1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, -1, 0), (0, 1, 0, 0, 0, -1),
                                 (0.9848, 0.1736, 0, -0.1736, 0.9848, 0)])
def test_generated_series_sorted_by_position_matches_simpleitk(tmp_path, iop):
    hu = ct_phantom((20, 18, 12))
    write_dicom_series(tmp_path / "s", hu, iop=iop, shuffle_names=True)
    v = load_volume(tmp_path / "s")
    arr, aff = _sitk_canonical(tmp_path / "s")
    assert np.array_equal(v.array, arr)
    assert np.allclose(v.affine, aff, atol=1e-3)


def test_generated_series_hu_and_order(tmp_path):
    hu = ct_phantom((20, 18, 12))
    write_dicom_series(tmp_path / "s", hu, slope=0.5, intercept=-1024.0)
    v = load_volume(tmp_path / "s")
    # Axial LPS series: canonical RAS flips x and y, keeps z.
    expected = (np.rint((hu.astype(float) + 1024) / 0.5) * 0.5 - 1024)
    assert np.array_equal(v.array, np.rint(expected[::-1, ::-1, :]).astype(np.int16))


def test_rle_compressed_series_decodes(tmp_path):
    hu = ct_phantom((16, 16, 8))
    write_dicom_series(tmp_path / "rle", hu, compress_rle=True)
    write_dicom_series(tmp_path / "raw", hu, compress_rle=False)
    assert np.array_equal(load_volume(tmp_path / "rle").array, load_volume(tmp_path / "raw").array)


def test_series_pick_and_zip(tmp_path):
    hu = ct_phantom((16, 16, 8))
    a = write_dicom_series(tmp_path / "two" / "a", hu)
    b = write_dicom_series(tmp_path / "two" / "b", hu[:, :, ::-1].copy())
    with pytest.raises(VolvqaInputError, match="2 DICOM series"):
        load_volume(tmp_path / "two")
    va = load_volume(tmp_path / "two", series_uid=a)
    vb = load_volume(tmp_path / "two", series_uid=b)
    assert va.source.series_uid == a and vb.source.series_uid == b
    assert not np.array_equal(va.array, vb.array)
    zp = tmp_path / "a.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        for f in sorted((tmp_path / "two" / "a").iterdir()):
            zf.write(f, f"series/{f.name}")
    assert np.array_equal(load_volume(zp).array, va.array)


def test_non_dicom_files_in_folder_are_skipped(tmp_path):
    hu = ct_phantom((16, 16, 8))
    write_dicom_series(tmp_path / "s", hu)
    (tmp_path / "s" / "README.txt").write_text("notes")
    v = load_volume(tmp_path / "s")
    assert v.meta["files_skipped"] == 1


def test_mr_needs_allow_non_ct(tmp_path):
    mr = np.random.default_rng(0).integers(0, 1500, size=(20, 20, 10)).astype(np.int16)
    p = write_nii(tmp_path / "mr.nii.gz", mr)
    with pytest.raises(VolvqaInputError, match="not plausible CT"):
        load_volume(p)
    assert load_volume(p, allow_non_ct=True).shape == (20, 20, 10)


def test_voxel_limit_checked_before_data(tmp_path):
    hu = ct_phantom((20, 20, 10))
    p = write_nii(tmp_path / "x.nii.gz", hu)
    with pytest.raises(VolvqaInputError, match="more than the limit"):
        load_volume(p, max_voxels=1000)
    # A header that claims a huge image over a tiny file fails on the header alone.
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((30000, 30000, 30000))
    hdr.set_data_dtype(np.int16)
    big = tmp_path / "bomb.nii"
    big.write_bytes(hdr.binaryblock + b"\0" * 4 + b"\0" * 100)
    with pytest.raises(VolvqaInputError, match="more than the limit"):
        load_volume(big)
