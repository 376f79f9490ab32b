"""`make bench`: build-qa at real scan size.

Cases are 512x512x300 CTs with the shared real CT's TotalSegmentator map
(41 of its 117 classes present, written with canonical ids) and inserted
liver, kidney, spleen and pancreas lesions, made from the shared real CT: lesions are synthesised on its own grid (a different draw per
case), then CT and labels are upsampled (nearest neighbour, plus scanner
noise) to 512x512x300. Reported, as ratios: the per-case build time against
the time to read that CT, peak memory of one worker process, and the
throughput of 2 workers against 1.
"""
import json
import resource
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import ndimage

from tests.helpers import REAL_CT, write_nii

N_CASES = 4
BIG = (512, 512, 300)


def _upsample(arr: np.ndarray) -> np.ndarray:
    zoom = [b / s for b, s in zip(BIG, arr.shape, strict=False)]
    return ndimage.zoom(arr, zoom, order=0, grid_mode=True, mode="grid-constant")[:BIG[0], :BIG[1], :BIG[2]]


@pytest.fixture(scope="module")
def real_size_manifest(tmp_path_factory):
    from volvqa.io import load_labelmap, load_volume
    from volvqa.synth.lesions import LesionRequest, insert_lesions
    if not (REAL_CT / "example_seg.nii.gz").is_file():
        pytest.skip("shared real CT data not found")
    root = tmp_path_factory.mktemp("real_size")
    v = load_volume(REAL_CT / "example_ct_sm.nii.gz")
    lm = load_labelmap(REAL_CT / "example_seg.nii.gz", "totalsegmentator", reference=v)
    rows = ["case_id,ct,masks,labels"]
    for k in range(N_CASES):
        reqs = [LesionRequest(organ="liver", diameter_mm=14 + 4 * k, hu_delta=-35, count=2 + k),
                LesionRequest(organ="liver", kind="cyst", diameter_mm=12, hu=4),
                LesionRequest(organ="kidney_left", kind="cyst", diameter_mm=12, hu=5),
                LesionRequest(organ="kidney_right", diameter_mm=14, hu_delta=25),
                LesionRequest(organ="spleen", diameter_mm=12, hu_delta=-20),
                LesionRequest(organ="pancreas", diameter_mm=9, hu_delta=-25)]
        v2, lm2, _truth = insert_lesions(v, lm, reqs, seed=k)
        # Back to TotalSegmentator's ids for the organs, canonical lesion ids kept: written as two maps.
        big_ct = _upsample(v2.array).astype(np.int16)
        big_ct = big_ct + np.random.default_rng(k).normal(0, 12, size=big_ct.shape).astype(np.int16)
        zoom = np.array([b / s for b, s in zip(BIG, v.shape, strict=False)])
        aff = v.affine.copy()
        aff[:3, :3] = aff[:3, :3] / zoom
        ct = write_nii(root / f"case{k}_ct.nii.gz", big_ct, aff)
        seg = write_nii(root / f"case{k}_seg.nii.gz", _upsample(lm2.array).astype(np.uint8), aff)
        rows.append(f"case{k},{ct.name},{seg.name},canonical")
    (root / "cases.csv").write_text("\n".join(rows) + "\n")
    (root / "half.csv").write_text("\n".join(rows[: 1 + N_CASES // 2]) + "\n")
    out = []
    for name in ("cases", "half"):
        m = root / f"{name}.yaml"
        m.write_text(f"name: real-size\nlayout: csv\nroot: {root}\ncsv: {root / (name + '.csv')}\n"
                     "splits: {train: 0.5, test: 0.5}\nseed: 0\n")
        out.append(m)
    return out[0], out[1], root


def _build(manifest, out, workers: int) -> tuple[float, int, dict]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "volvqa.cli", "build-qa", str(manifest), "--out", str(out),
                        "--workers", str(workers), "--include-flagged"], capture_output=True, text=True)
    dt = time.perf_counter() - t
    assert r.returncode == 0, r.stderr
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return dt, max(peak_kb, before), json.loads((out / "build.json").read_text())["summary"]


@pytest.mark.bench
def test_bench_build_qa_at_real_scan_size(real_size_manifest, tmp_path):
    from volvqa.io import load_volume
    manifest, half, root = real_size_manifest
    cts = sorted(root.glob("case*_ct.nii.gz"))
    for p in cts:
        p.read_bytes()      # page cache warm for both sides
    reads = []
    for p in cts:
        t = time.perf_counter()
        load_volume(p)
        reads.append(time.perf_counter() - t)
    read_s = float(np.mean(reads))
    one, peak_kb, res = _build(manifest, tmp_path / "one", 1)
    two, _, _ = _build(manifest, tmp_path / "two", 2)
    one_half, _, _ = _build(half, tmp_path / "half", 1)
    two_half, _, _ = _build(half, tmp_path / "half2", 2)
    # The marginal cost of a case: start-up, imports and the dataset-level steps (options, audit, card)
    # cancel out between the full and the half run.
    per_case = (one - one_half) / (len(cts) - len(cts) // 2)
    print(f"\n[bench real size] {len(cts)} cases of 512x512x300 with a TotalSegmentator map and inserted lesions "
          f"({res['questions']} questions)")
    print(f"[bench real size] CT read (volvqa.io.load_volume) {read_s:.2f} s per case; build-qa 1 worker "
          f"{per_case:.2f} s per case (marginal; whole run {one:.1f} s = {one / len(cts):.2f} s per case with "
          f"start-up and audit): "
          f"ratio build/read {per_case / read_s:.2f} (goal <= 1.5)")
    print(f"[bench real size] peak memory of one process {peak_kb / 1024 ** 2:.2f} GiB (goal <= 3)")
    print(f"[bench real size] 2 workers {two:.1f} s vs 1 worker {one:.1f} s: throughput ratio {one / two:.2f} "
          f"(goal >= 1.8)")
    # The same without the fixed start-up and dataset-level steps: the marginal cost of a case on each side.
    two_per_case = (two - two_half) / (len(cts) - len(cts) // 2)
    print(f"[bench real size] marginal per case: 1 worker {per_case:.2f} s, 2 workers {two_per_case:.2f} s: "
          f"throughput ratio {per_case / two_per_case:.2f}")
