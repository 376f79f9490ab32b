"""`make bench`: phantom generation time, and build-qa cases per minute with 1 and 2 workers."""
import json
import subprocess
import sys
import time

import pytest

from volvqa.synth.phantom import PhantomConfig, generate_phantom

N = 8


@pytest.mark.bench
def test_bench_phantom_time():
    generate_phantom(PhantomConfig(seed=0))  # warm-up (imports, caches)
    times = []
    for s in range(1, 6):
        t = time.perf_counter()
        generate_phantom(PhantomConfig(seed=s))
        times.append(time.perf_counter() - t)
    print(f"\n[bench synth] phantom 256x256x96 at 1.5x1.5x3 mm: mean {sum(times) / len(times):.2f} s, "
          f"max {max(times):.2f} s (goal < 2 s)")


@pytest.mark.bench
def test_bench_build_qa_cases_per_minute(tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"name: bench\nlayout: synthetic\nroot: {tmp_path / 'data'}\ngenerate: {{n: {N}, seed: 0}}\n"
                        "splits: {train: 0.6, val: 0.1, test: 0.3}\nseed: 0\n")
    rows = []
    for workers in (1, 2):
        for label, clear_data in (("with phantom generation", True), ("per-case stage on existing CT", False)):
            out = tmp_path / f"out{workers}{int(clear_data)}"
            if clear_data:
                subprocess.run(["rm", "-rf", str(tmp_path / "data")], check=True)
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "volvqa.cli", "build-qa", str(manifest), "--out", str(out),
                                "--workers", str(workers)], capture_output=True, text=True)
            dt = time.perf_counter() - t
            assert r.returncode == 0, r.stderr
            q = json.loads(r.stdout.strip().splitlines()[-1])["questions"]
            rows.append((workers, label, dt, N / dt * 60, q))
    print()
    for workers, label, dt, cpm, q in rows:
        print(f"[bench build-qa] {workers} worker(s), {label}: {N} cases in {dt:.1f} s = {cpm:.1f} cases/min "
              f"({q} questions)")
    one = [r for r in rows if r[0] == 1]
    two = [r for r in rows if r[0] == 2]
    for a, b in zip(one, two, strict=False):
        print(f"[bench build-qa] {a[1]}: 2 workers / 1 worker throughput ratio {b[3] / a[3]:.2f}")
