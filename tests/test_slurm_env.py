"""A real job array through submitit on a real Slurm cluster (CI starts one with .ci/slurm.sh start); skipped
where none runs (see slurm_env.py for why)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from slurm_env import requires_slurm

WAIT_S = 120


@requires_slurm
def test_job_array_runs_and_leaves_logs(tmp_path: Path) -> None:
    submitit = pytest.importorskip("submitit")

    # A closure, so that cloudpickle sends it by value: the job's Python cannot import this test module.
    def square(x: int) -> tuple[int, str]:
        import os
        import sys

        print(f"stdout of task {x}")
        print(f"stderr of task {x}", file=sys.stderr)
        return x * x, os.environ.get("SLURM_ARRAY_TASK_ID", "")

    executor = submitit.AutoExecutor(folder=tmp_path)
    assert executor.cluster == "slurm"
    executor.update_parameters(timeout_min=2, slurm_array_parallelism=2, cpus_per_task=1)
    jobs = executor.map_array(square, [3, 4])
    assert len(jobs) == 2

    deadline = time.monotonic() + WAIT_S
    while not all(job.done() for job in jobs):
        if time.monotonic() > deadline:
            queue = subprocess.run(["squeue", "-a"], capture_output=True, text=True, timeout=10, check=False).stdout
            for job in jobs:
                job.cancel(check=False)
            pytest.fail(f"the job array did not finish within {WAIT_S} s; squeue said:\n{queue}")
        time.sleep(0.5)

    assert [job.result() for job in jobs] == [(9, "0"), (16, "1")]
    for x, job in zip([3, 4], jobs, strict=True):
        stdout, stderr = Path(job.paths.stdout), Path(job.paths.stderr)
        assert stdout.parent == tmp_path and stderr.parent == tmp_path
        assert f"stdout of task {x}" in stdout.read_text()
        assert f"stderr of task {x}" in stderr.read_text()
