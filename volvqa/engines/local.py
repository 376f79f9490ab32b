"""Local engine: a process pool (or in-process for one worker), with a progress bar."""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed


def run_local(fn: Callable[[dict], dict], tasks: list[dict], *, workers: int = 1, progress: bool = True) -> list[dict]:
    from volvqa.progress import progress as progress_bar
    results = []
    with progress_bar(len(tasks), "cases", enabled=progress) as bar:
        if workers <= 1:
            for t in tasks:
                results.append(fn(t))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as ex:
                futs = [ex.submit(fn, t) for t in tasks]
                for f in as_completed(futs):
                    results.append(f.result())
                    bar.update(1)
    return sorted(results, key=lambda r: r["case_id"])
