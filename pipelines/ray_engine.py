"""Ray engine: one task per case. ``address=None`` starts a local Ray
instance; ``address="auto"`` joins the cluster the job runs in. CPU stages
ask for one CPU per task; GPU stages (segmentation) pass ``num_gpus``."""
from __future__ import annotations

import sys
from typing import Callable


def run_ray(fn: Callable[[dict], dict], tasks: list[dict], *, address: str | None = None, num_cpus: float = 1,
            num_gpus: float = 0, progress: bool = True, max_local_cpus: int | None = None) -> list[dict]:
    import ray
    from tqdm import tqdm
    started = False
    if not ray.is_initialized():
        kw = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=max_local_cpus, **kw)
        started = True
    try:
        remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(fn)
        pending = [remote.remote(t) for t in tasks]
        results = []
        with tqdm(total=len(tasks), desc="cases (ray)", unit="case", file=sys.stderr,
                  disable=not progress or None) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                results += ray.get(done)
                bar.update(len(done))
        return sorted(results, key=lambda r: r["case_id"])
    finally:
        if started:
            ray.shutdown()
