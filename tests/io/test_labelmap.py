"""load_labelmap: grids mapped through world coordinates, folders of masks, overlap rules."""
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from tests.helpers import ct_phantom, reorder_on_disk, write_nii
from volvqa import labels as L
from volvqa.errors import VolvqaInputError
from volvqa.io import load_labelmap, load_volume, resample_nearest

AFF = np.array([[0.8, 0, 0, -20.0], [0, 0.9, 0, 10.0], [0, 0, 2.5, 100.0], [0, 0, 0, 1]])


@pytest.fixture
def ct(tmp_path):
    return load_volume(write_nii(tmp_path / "ct.nii.gz", ct_phantom((40, 36, 24)), AFF))


def _box(shape, lo, hi):
    m = np.zeros(shape, np.uint8)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=False))] = 1
    return m


def test_folder_of_masks_on_other_grids(tmp_path, ct):
    liver = _box(ct.shape, (5, 5, 5), (20, 20, 15))
    spleen = _box(ct.shape, (25, 8, 6), (33, 18, 14))
    lesion = _box(ct.shape, (8, 8, 8), (11, 11, 10))
    d = tmp_path / "segs"
    d.mkdir()
    # Each stored in another voxel order, one cropped (other origin).
    a, aff = reorder_on_disk(liver, AFF, (2, 1, 0), (True, False, False))
    write_nii(d / "liver.nii.gz", a, aff)
    a, aff = reorder_on_disk(spleen, AFF, (0, 2, 1), (False, True, True))
    write_nii(d / "spleen.nii.gz", a, aff)
    crop = lesion[4:20, 4:20, 4:20]
    caff = AFF.copy()
    caff[:3, 3] = (AFF @ np.array([4, 4, 4, 1]))[:3]
    write_nii(d / "liver_tumor.nii.gz", crop, caff)
    lm = load_labelmap(d, "auto", reference=ct)
    assert lm.array.shape == ct.shape
    assert set(lm.labels.values()) == {"liver", "spleen", "liver_tumor"}
    assert np.array_equal(lm.array == L.CANONICAL_IDS["spleen"], spleen.astype(bool))
    assert np.array_equal(lm.array == L.CANONICAL_IDS["liver_tumor"], lesion.astype(bool))
    # The lesion is painted over the liver it lies in.
    assert np.array_equal(lm.array == L.CANONICAL_IDS["liver"], liver.astype(bool) & ~lesion.astype(bool))


def test_coarser_grid_matches_simpleitk_nearest_neighbour(tmp_path, ct):
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 3, size=(20, 18, 12)).astype(np.uint8)
    caff = AFF.copy()
    caff[:3, :3] = AFF[:3, :3] * 2
    caff[:3, 3] += 0.3  # not a whole-voxel shift: the general path
    ours = resample_nearest(coarse, caff, ct.shape, ct.affine)
    # SimpleITK in LPS with a Nearest-neighbour resampler onto the CT grid.
    def to_sitk(arr, aff):
        img = sitk.GetImageFromArray(arr.transpose(2, 1, 0))
        lps = np.diag([-1, -1, 1, 1]) @ aff
        sp = np.linalg.norm(lps[:3, :3], axis=0)
        img.SetSpacing(sp.tolist())
        img.SetDirection((lps[:3, :3] / sp).ravel().tolist())
        img.SetOrigin(lps[:3, 3].tolist())
        return img
    ref = to_sitk(np.zeros(ct.shape, np.uint8), ct.affine)
    res = sitk.Resample(to_sitk(coarse, caff), ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    theirs = sitk.GetArrayFromImage(res).transpose(2, 1, 0)
    agree = (ours == theirs).mean()
    assert agree > 0.999  # ties at exact half-voxel positions may round differently


def test_rotated_grid_goes_through_world(tmp_path, ct):
    # A mask on a grid rotated 90 degrees in-plane: still a permutation, exact.
    m = _box(ct.shape, (3, 4, 5), (9, 30, 12))
    rot = AFF.copy()
    arr = np.rot90(m, k=1, axes=(0, 1))
    # rot90 maps new[i, j] = old[j, n0 - 1 - i]
    rot[:3, 0] = -AFF[:3, 1]
    rot[:3, 1] = AFF[:3, 0]
    rot[:3, 3] = (AFF @ np.array([0, ct.shape[1] - 1, 0, 1]))[:3]
    p = write_nii(tmp_path / "rot.nii.gz", arr, rot)
    lm = load_labelmap(p, {1: "liver"}, reference=ct)
    assert np.array_equal(lm.array > 0, m.astype(bool))


def test_unmapped_ids_and_stems_are_errors(tmp_path, ct):
    p = write_nii(tmp_path / "seg.nii.gz", _box(ct.shape, (1, 1, 1), (5, 5, 5)) * 7, AFF)
    with pytest.raises(VolvqaInputError, match="label ids not in the label spec: 7"):
        load_labelmap(p, {1: "liver"}, reference=ct)
    d = tmp_path / "segs"
    d.mkdir()
    write_nii(d / "mystery_organ.nii.gz", _box(ct.shape, (1, 1, 1), (5, 5, 5)), AFF)
    with pytest.raises(VolvqaInputError, match="mystery_organ"):
        load_labelmap(d, "auto", reference=ct)
    lm = load_labelmap(d, {"mystery_organ": "ignore"}, reference=ct, ignore_unmapped=True)
    assert lm.labels == {}


def test_spec_must_use_canonical_names(tmp_path, ct):
    p = write_nii(tmp_path / "seg.nii.gz", _box(ct.shape, (1, 1, 1), (5, 5, 5)), AFF)
    with pytest.raises(VolvqaInputError, match="canonical"):
        load_labelmap(p, {1: "lever"}, reference=ct)


def test_bilateral_kidney_split_by_side(tmp_path, ct):
    seg = np.zeros(ct.shape, np.uint8)
    seg[4:10, 10:20, 8:16] = 1   # small x: patient's left (RAS)
    seg[28:34, 10:20, 8:16] = 1  # large x: patient's right
    seg[30:32, 12:14, 10:12] = 2  # tumor in the right kidney
    p = write_nii(tmp_path / "kits.nii.gz", seg, AFF)
    lm = load_labelmap(p, {1: "kidney", 2: "kidney_tumor"}, reference=ct)
    left = np.argwhere(lm.array == L.CANONICAL_IDS["kidney_left"])[:, 0]
    right = np.argwhere(lm.array == L.CANONICAL_IDS["kidney_right"])[:, 0]
    assert left.max() < 10 and right.min() >= 28
    assert (lm.array == L.CANONICAL_IDS["kidney_tumor"]).sum() == 8


def test_parts_layer_and_organ_from_segments(tmp_path, ct):
    seg = np.zeros(ct.shape, np.uint8)
    seg[5:15, 5:25, 5:15] = 1
    seg[15:25, 5:25, 5:15] = 2
    p = write_nii(tmp_path / "segments.nii.gz", seg, AFF)
    lm = load_labelmap(p, "totalsegmentator_liver_segments", reference=ct)
    assert lm.part_labels == {1: "liver_segment_1", 2: "liver_segment_2"}
    assert (lm.array == L.CANONICAL_IDS["liver"]).sum() == (seg > 0).sum()
    assert np.array_equal(lm.parts, seg)


def test_real_total_labelmap_keeps_every_voxel(real_ct):
    v = load_volume(real_ct / "example_ct_sm.nii.gz")
    lm = load_labelmap(real_ct / "example_seg.nii.gz", "totalsegmentator", reference=v)
    raw = np.asanyarray(nib.load(real_ct / "example_seg.nii.gz").dataobj)
    assert (lm.array > 0).sum() == (raw > 0).sum()
    assert lm.labels[1] == "spleen" and lm.labels[5] == "liver"
