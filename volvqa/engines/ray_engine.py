"""Ray engine: one task per case. ``address=None`` starts a local Ray
instance; ``address="auto"`` joins the cluster the job runs in. CPU stages
ask for one CPU per task; GPU stages (segmentation) pass ``num_gpus``."""
from __future__ import annotations

from collections.abc import Callable


def run_ray(fn: Callable[[dict], dict], tasks: list[dict], *, address: str | None = None, num_cpus: float = 1,
            num_gpus: float = 0, progress: bool = True, max_local_cpus: int | None = None) -> list[dict]:
    import ray

    from volvqa.progress import progress as progress_bar
    started = False
    if not ray.is_initialized():
        kw = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            try:
                ray.init(address=address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as e:
                from volvqa.errors import VolvqaInputError
                raise VolvqaInputError(None, f"no Ray cluster reachable ({' '.join(str(e).split())[:160]}); "
                                       "start one with `ray start --head`, or give no address to run a local "
                                       "Ray instance", param="ray_address", value=address) from None
        else:
            ray.init(num_cpus=max_local_cpus, **kw)
        started = True
    try:
        remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(fn)
        pending = [remote.remote(t) for t in tasks]
        results = []
        with progress_bar(len(tasks), "cases (ray)", enabled=progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                results += ray.get(done)
                bar.update(len(done))
        return sorted(results, key=lambda r: r["case_id"])
    finally:
        if started:
            ray.shutdown()
