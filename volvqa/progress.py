"""Progress for long loops: a tqdm bar on a terminal; without one (a batch
job, a pipe, CI) a plain line every tenth of the work, so logs show that
the run is alive without a wall of carriage returns."""
from __future__ import annotations

import sys
import time


class _Lines:
    def __init__(self, total: int, desc: str, unit: str):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self.t0 = time.perf_counter()
        self.step = max(1, total // 10)

    def update(self, k: int = 1) -> None:
        before = self.n
        self.n += k
        if self.total and (self.n // self.step != before // self.step or self.n == self.total):
            dt = time.perf_counter() - self.t0
            print(f"{self.desc}: {self.n}/{self.total} {self.unit}s ({100 * self.n / self.total:.0f}%), {dt:.0f} s",
                  file=sys.stderr, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def progress(total: int, desc: str, unit: str = "case", enabled: bool = True):
    """A context manager with ``update(k)``: tqdm on a terminal, lines otherwise, nothing when disabled."""
    from tqdm import tqdm
    if not enabled:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)
    return _Lines(total, desc, unit)
