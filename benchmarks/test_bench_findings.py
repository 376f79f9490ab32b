"""`make bench`: read + extract on a 512x512x300 CT with a 117-label map,
against SimpleITK reading the same files and running its label statistics."""
import time

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from tests.helpers import REAL_CT, write_nii
from volvqa.findings import extract
from volvqa.io import load_labelmap, load_volume


@pytest.fixture(scope="module")
def big_pair(tmp_path_factory, big_ct):
    import nibabel as nib
    if not (REAL_CT / "example_seg.nii.gz").is_file():
        pytest.skip("shared real CT data not found")
    path_ct, small, aff = big_ct
    seg = np.asanyarray(nib.load(REAL_CT / "example_seg.nii.gz").dataobj)
    zoom = [b / s for b, s in zip((512, 512, 300), seg.shape, strict=False)]
    big = ndimage.zoom(seg, zoom, order=0, grid_mode=True, mode="grid-constant")[:512, :512, :300]
    p = write_nii(tmp_path_factory.mktemp("bench_seg") / "big_seg.nii.gz", big.astype(np.uint8), aff)
    return path_ct, p


@pytest.mark.bench
def test_bench_findings_vs_simpleitk(big_pair):
    ct, seg = big_pair
    # Warm the page cache for both sides.
    ct.read_bytes(), seg.read_bytes()

    def ours():
        t0 = time.perf_counter()
        v = load_volume(ct)
        t_ct = time.perf_counter() - t0
        lm = load_labelmap(seg, "totalsegmentator", reference=v)
        t1 = time.perf_counter()
        f = extract(v, lm)
        return time.perf_counter() - t0, time.perf_counter() - t1, t_ct, f

    def theirs():
        t0 = time.perf_counter()
        img = sitk.ReadImage(str(ct))
        lab = sitk.ReadImage(str(seg))
        shape = sitk.LabelShapeStatisticsImageFilter()
        shape.Execute(lab)
        inten = sitk.LabelIntensityStatisticsImageFilter()
        inten.Execute(lab, img)
        return time.perf_counter() - t0, shape, inten

    runs_o = [ours() for _ in range(3)]
    runs_s = [theirs() for _ in range(3)]
    t_o = min(r[0] for r in runs_o)
    t_x = min(r[1] for r in runs_o)
    t_ct = min(r[2] for r in runs_o)
    t_s = min(r[0] for r in runs_s)
    f, shape = runs_o[0][3], runs_s[0][1]
    n_labels = len(shape.GetLabels())
    assert len(f.organs) == n_labels
    print(f"\n[bench findings] 512x512x300 CT, {n_labels}-label map: ours read+extract {t_o:.2f} s "
          f"(extract alone {t_x:.2f} s, CT read {t_ct:.2f} s), SimpleITK read+2 label filters {t_s:.2f} s; "
          f"ratio ours/SimpleITK {t_o / t_s:.2f}; extract/CT-read {t_x / t_ct:.2f} "
          f"(SimpleITK threads: {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()})")
