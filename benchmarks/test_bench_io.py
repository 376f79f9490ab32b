"""`make bench`: load time of a 512x512x300 int16 .nii.gz, isal vs gzip."""
import time

import numpy as np
import pytest

from volvqa.io import load_volume
from volvqa.io.nifti import isal_available


def _best_of(fn, n=3):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


@pytest.mark.bench
def test_bench_nifti_load_isal_vs_gzip(big_ct):
    path = big_ct[0]
    if not isal_available():
        pytest.skip("isal not installed")
    t_isal, a = _best_of(lambda: load_volume(path, use_isal=True))
    t_gzip, b = _best_of(lambda: load_volume(path, use_isal=False))
    assert np.array_equal(a.array, b.array)
    mb = path.stat().st_size / 2**20
    print(f"\n[bench io] {path.name} {a.shape} int16, {mb:.1f} MiB on disk: "
          f"isal {t_isal:.3f} s, gzip {t_gzip:.3f} s, isal/gzip time ratio {t_isal / t_gzip:.2f} "
          f"(speed-up {t_gzip / t_isal:.2f}x)")
