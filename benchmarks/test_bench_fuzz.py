"""The fuzz test of tests/cli/test_fuzz.py at ten times its `make test` size (24,000 inputs)."""
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO


@pytest.mark.bench
def test_bench_fuzz_24000_inputs():
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                        str(REPO / "tests" / "cli" / "test_fuzz.py")], capture_output=True, text=True,
                       cwd=REPO, env={**os.environ, "VOLVQA_FUZZ_SCALE": "10"})
    seconds = time.perf_counter() - t0
    assert r.returncode == 0, r.stdout[-3000:]
    print(f"\nfuzz: 24,000 inputs (NIfTI headers, DICOM tags, manifests, questions: 6,000 each) "
          f"without an internal error, a traceback or a hang in {seconds:.0f} s")
