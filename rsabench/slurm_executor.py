"""``--executor slurm``: one Slurm job array per sweep through submitit, one cell per array task.

Each task runs :func:`rsabench.jobs.run_job` (the cell's record or failure record, written by the task).
A task that reaches its time limit or is preempted is requeued by submitit (``checkpoint``) and the cell
resumes from its last per-epoch checkpoint in ``<record>.ckpt/``. Per-task stdout/stderr logs go to
``<runs-dir>/logs/slurm/<job id>/``; ``submitted-<array id>.json`` there maps job ids to cells, so a rerun
of the same command (after ``--detach``, or a killed driver) waits for the tasks still queued or running
instead of submitting them again.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import submitit

from .errors import UsageError
from .executor import Executor, ExecutorOption, Report
from .jobs import CellJob, Outcome, run_job, write_lost_worker_failure
from .records import write_atomic


class SlurmCell(submitit.helpers.Checkpointable):
    """The array task: run one job; on timeout or preemption submitit requeues it with the same job."""

    def __call__(self, job: dict[str, Any]) -> Outcome:
        return run_job(job)


class SlurmExecutor(Executor):
    """Cells as the tasks of one Slurm job array (submitit)."""

    name = "slurm"
    can_detach = True
    OPTIONS = {
        "partition": ExecutorOption(str, "", "partition (default: the cluster's default partition)"),
        "account": ExecutorOption(str, "", "account to charge"),
        "qos": ExecutorOption(str, "", "quality of service"),
        "gpus": ExecutorOption(int, 0, "GPUs per cell"),
        "cpus": ExecutorOption(int, 2, "CPUs per cell"),
        "mem": ExecutorOption(float, 0.0, "memory per cell in GB (0: the partition's default)"),
        "time": ExecutorOption(int, 60, "time limit per cell in minutes; a cell that reaches it is requeued"),
        "array_parallelism": ExecutorOption(int, 0, "tasks at once (0: --jobs when above 1, else all)"),
        "max_requeues": ExecutorOption(int, 3, "requeues of a timed-out or preempted cell"),
        "signal_delay": ExecutorOption(int, 90, "seconds before the time limit that a task is told to requeue itself"),
        "poll": ExecutorOption(float, 5.0, "seconds between status checks while waiting"),
    }

    @property
    def folder(self) -> Path:
        if self.log_dir is None:
            raise UsageError("executor 'slurm' needs a log folder (the runs dir's logs/)")
        return Path(self.log_dir) / "slurm"

    def parameters(self, n_jobs: int) -> dict[str, Any]:
        """submitit parameters for an array of ``n_jobs`` cells."""
        o = self.options
        parallel = o["array_parallelism"] or (self.jobs if self.jobs > 1 else n_jobs)
        params: dict[str, Any] = {
            "name": "rsabench",
            "timeout_min": o["time"],
            "cpus_per_task": o["cpus"],
            "tasks_per_node": 1,
            "slurm_array_parallelism": max(1, parallel),
            "slurm_signal_delay_s": o["signal_delay"],
        }
        optional = {"slurm_partition": o["partition"], "slurm_account": o["account"], "slurm_qos": o["qos"]}
        params.update({k: v for k, v in optional.items() if v})
        if o["gpus"]:
            params["gpus_per_node"] = o["gpus"]
        if o["mem"]:
            params["mem_gb"] = o["mem"]
        return params

    def run(self, jobs: list[CellJob], report: Report, workspace: Any = None) -> None:
        if not jobs:
            return
        waiting = self._in_flight({job.cell for job in jobs})
        new = [job for job in jobs if job.cell not in waiting]
        by_id: dict[str, CellJob] = {}
        handles = []
        for job in jobs:
            if job.cell in waiting:
                handles.append(submitit.SlurmJob(folder=self.folder / "%j", job_id=waiting[job.cell]))
                by_id[waiting[job.cell]] = job
        logging.getLogger("submitit").setLevel(logging.ERROR)  # "bypassing sacct" warnings: clusters without accounting
        if new:
            executor = submitit.AutoExecutor(
                folder=str(self.folder / "%j"), cluster="slurm", slurm_max_num_timeout=self.options["max_requeues"]
            )
            executor.update_parameters(**self.parameters(len(new)))
            submitted = executor.map_array(SlurmCell(), [job.to_dict() for job in new])
            self._write_submission(submitted, new)
            handles += submitted
            by_id.update({s.job_id: job for s, job in zip(submitted, new, strict=True)})
        if self.detach:
            return
        self._collect(handles, by_id, report)

    def _collect(self, handles: list, by_id: dict[str, CellJob], report: Report) -> None:
        remaining = list(handles)
        for handle in submitit.helpers.as_completed(handles, poll_frequency=self.options["poll"]):
            remaining.remove(handle)
            job = by_id[handle.job_id]
            try:
                outcome = handle.result()
            except Exception as exc:  # noqa: BLE001 - the task died (killed, node failure, out of requeues)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                outcome = write_lost_worker_failure(job, f"Slurm job {handle.job_id}: {first}")
            if not report(job, outcome):
                for other in remaining:
                    other.cancel(check=False)
                return

    def _write_submission(self, submitted: list, jobs: list[CellJob]) -> None:
        array = submitted[0].job_id.split("_")[0]
        doc = {
            "schema": "rsabench.slurm-submission/1",
            "array": array,
            "tasks": [
                {"job_id": s.job_id, "cell": job.cell, "record": job.path}
                for s, job in zip(submitted, jobs, strict=True)
            ],
        }
        write_atomic(self.folder / f"submitted-{array}.json", doc)

    def _in_flight(self, cells: set[str]) -> dict[str, str]:
        """cell → job id of the cells that an earlier submission still has queued or running."""
        known: dict[str, str] = {}
        for path in sorted(self.folder.glob("submitted-*.json")) if self.folder.is_dir() else []:
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                known.update({t["cell"]: str(t["job_id"]) for t in doc["tasks"] if t["cell"] in cells})
            except (OSError, ValueError, KeyError, TypeError):
                continue
        if not known:
            return {}
        active = _active_jobs(sorted(set(known.values())))
        return {cell: job_id for cell, job_id in known.items() if job_id in active}


def _active_jobs(job_ids: list[str]) -> set[str]:
    """The job ids (``<array>_<task>``) that Slurm still has queued or running."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(arrays)], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return set()
    return {line.strip() for line in out.stdout.splitlines() if line.strip()} & set(job_ids)
