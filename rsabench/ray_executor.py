"""``--executor ray``: cells as Ray tasks, on a running cluster (``address=auto``) or a local instance."""

from __future__ import annotations

import os
from typing import Any

from .executor import Executor, ExecutorOption, Report
from .jobs import CellJob, Outcome, run_job, write_lost_worker_failure


def ray_cell(job: dict[str, Any], threads: int) -> Outcome:
    """The Ray task: one cell, with ``threads`` torch CPU threads."""
    import torch

    torch.set_num_threads(max(1, threads))
    return run_job(job)


class RayExecutor(Executor):
    """Cells as Ray tasks with their resources (CPUs, GPUs per cell)."""

    name = "ray"
    OPTIONS = {
        "address": ExecutorOption(str, "", "a running Ray cluster (auto: find it); empty: start a local instance"),
        "num_cpus": ExecutorOption(float, 1.0, "CPUs per cell (also its torch threads)"),
        "num_gpus": ExecutorOption(float, 0.0, "GPUs per cell"),
        "local_cpus": ExecutorOption(int, 0, "CPUs of a local instance (0: all of this machine's)"),
    }

    def run(self, jobs: list[CellJob], report: Report, workspace: Any = None) -> None:
        if not jobs:
            return
        import ray

        o = self.options
        started = not ray.is_initialized()
        if started:
            if o["address"]:
                ray.init(address=o["address"], include_dashboard=False, log_to_driver=True)
            else:
                cpus = o["local_cpus"] or os.cpu_count() or 1
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=True)
        try:
            task = ray.remote(num_cpus=o["num_cpus"], num_gpus=o["num_gpus"], max_retries=0)(ray_cell)
            threads = max(1, int(o["num_cpus"]))
            refs = {task.remote(job.to_dict(), threads): job for job in jobs}
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                job = refs[done[0]]
                try:
                    outcome = ray.get(done[0])
                except Exception as exc:  # noqa: BLE001 - the task's worker died
                    text = str(exc).strip()
                    outcome = write_lost_worker_failure(job, f"Ray task: {text.splitlines()[0] if text else exc}")
                if not report(job, outcome):
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    return
        finally:
            if started:
                ray.shutdown()
