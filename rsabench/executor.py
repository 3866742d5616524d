"""Executors decide where cells run; each is a plugin (``register_executors``) given the jobs of a sweep.

An executor calls ``report(job, outcome)`` as each job ends; when ``report`` returns False (``--fail-fast``
after a failure) it starts no further job. Workers write their own cell's files (:func:`rsabench.jobs.run_job`);
an executor that loses a worker (killed, out of memory) writes that job's failure record itself.

``local`` runs jobs in this process, or with ``jobs > 1`` in that many spawned worker processes, each with
its share of the CPU threads and, where several GPUs are visible, its own GPU (round-robin).
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import UsageError
from .jobs import QUIET_STAGES, CellJob, Outcome, run_job, write_lost_worker_failure

Report = Callable[[CellJob, Outcome], bool]


@dataclass(frozen=True)
class ExecutorOption:
    """An option an executor accepts through ``--executor-option KEY=VALUE`` or a sweep file's ``[executor]``."""

    kind: type  # int, float, str or bool
    default: Any
    help: str


def _convert(executor: str, key: str, option: ExecutorOption, value: Any) -> Any:
    if isinstance(value, option.kind) and not (option.kind is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    try:
        if option.kind is bool:
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("1", "true", "yes")
        return option.kind(text)
    except ValueError:
        raise UsageError(
            f"--executor-option {key}={value}: executor {executor!r} expects {option.kind.__name__} ({option.help})"
        ) from None


class Executor:
    """Base class. ``OPTIONS`` declares the executor's options; ``jobs`` is ``--jobs`` (cells at once),
    ``log_dir`` where per-cell logs go, ``detach`` whether the driver may return once the jobs are submitted."""

    name = ""
    OPTIONS: dict[str, ExecutorOption] = {}

    def __init__(self, jobs: int = 1, log_dir: Path | None = None, detach: bool = False, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            accepted = ", ".join(sorted(self.OPTIONS)) or "none"
            raise UsageError(
                f"--executor-option {unknown[0]}: not an option of executor {self.name!r} (accepted: {accepted})"
            )
        self.jobs, self.log_dir, self.detach = jobs, log_dir, detach
        self.options = {
            key: _convert(self.name, key, opt, options[key]) if key in options else opt.default
            for key, opt in self.OPTIONS.items()
        }
        if detach and not self.can_detach:
            raise UsageError(f"--detach: executor {self.name!r} runs cells while the driver waits; it cannot detach")

    can_detach = False

    def run(self, jobs: list[CellJob], report: Report, workspace: Any = None) -> None:
        raise NotImplementedError


class LocalExecutor(Executor):
    """Cells on this machine: in this process (``--jobs 1``) or in ``--jobs N`` spawned worker processes."""

    name = "local"
    OPTIONS = {
        "threads": ExecutorOption(int, 0, "torch CPU threads per worker; 0: the CPUs divided among the workers"),
    }
    run_one = staticmethod(run_job)  # what a worker process runs per job (a module-level function)

    def run(self, jobs: list[CellJob], report: Report, workspace: Any = None) -> None:
        if self.jobs <= 1:
            for job in jobs:
                if not report(job, run_job(job, workspace=workspace)):
                    return
            return
        self._run_pool(list(jobs), report)

    def _run_pool(self, jobs: list[CellJob], report: Report) -> None:
        """Run ``jobs`` in a pool. When a worker dies, the pool breaks and takes the unfinished jobs with it:
        they run again in a fresh pool; those lost a second time run one at a time, so a death then names its
        own cell, which is recorded as failed."""
        lost = self._one_pool(jobs, report, min(self.jobs, len(jobs)))
        if lost:
            lost = self._one_pool(lost, report, min(self.jobs, len(lost)))
        for job in lost or []:
            again = self._one_pool([job], report, 1)
            if again is None or (again and not report(job, write_lost_worker_failure(job))):
                return

    def _one_pool(self, jobs: list[CellJob], report: Report, workers: int) -> list[CellJob] | None:
        """Jobs lost to a broken pool (none: all ended), or None when ``report`` asked to stop."""
        import multiprocessing

        threads = self.options["threads"] or max(1, (os.cpu_count() or 1) // workers)
        slots = multiprocessing.get_context("spawn").Queue()
        for slot in range(workers):
            slots.put(slot)
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(slots, threads, visible_gpus() if all(_any_gpu(job) for job in jobs) else []),
        )
        futures: dict[Future, CellJob] = {pool.submit(self.run_one, job.to_dict()): job for job in jobs}
        lost: list[CellJob] = []
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    job = futures[future]
                    try:
                        outcome = future.result()
                    except BrokenProcessPool:
                        lost.append(job)
                        continue
                    if not report(job, outcome):
                        pool.shutdown(wait=True, cancel_futures=True)
                        return None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return lost


def _any_gpu(job: CellJob) -> bool:
    """Whether the job leaves the choice of GPU open (a job given ``cuda:N`` keeps its device)."""
    return job.runtime.get("device", "auto") in ("auto", "cuda")


def visible_gpus() -> list[str]:
    """The CUDA devices a worker may be given (their ``CUDA_VISIBLE_DEVICES`` names), none without CUDA."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d for d in listed.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except Exception:  # noqa: BLE001 - no usable CUDA: CPU workers
        return []


def _start_worker(slots: Any, threads: int, gpus: list[str]) -> None:
    """Worker set-up before torch is imported: its CPU threads and (round-robin) its GPU."""
    slot = slots.get()
    os.environ[QUIET_STAGES] = "1"
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    import torch

    torch.set_num_threads(threads)
