"""Is a real Slurm cluster reachable? For the tests that submit jobs to one (CI starts one: .ci/slurm.sh start).

``slurm_unavailable()`` is None when ``sinfo`` answers within a few seconds and shows an idle or mixed node, else a
one-line reason; ``requires_slurm`` skips a test with that reason. The cluster from .ci/slurm.sh has one partition,
``debug`` (the default, no time limit), and one node with ``nproc`` CPUs; memory is not a consumable resource there,
so a job asks for few CPUs (``cpus_per_task=1``), a short time (``timeout_min``) and, if anything, a small ``mem_gb``.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

HINT = "(CI starts one with .ci/slurm.sh start)"
TIMEOUT_S = 5.0
USABLE_STATES = {"idle", "mixed"}  # "idle*" (not responding), "drained", "down", ... take no jobs


def slurm_unavailable(timeout_s: float = TIMEOUT_S) -> str | None:
    """None when a Slurm node takes jobs now, else why not (one line); never waits much longer than timeout_s."""
    for tool in ("sinfo", "sbatch", "squeue", "scancel"):
        if shutil.which(tool) is None:
            return f"no Slurm here: {tool} not found {HINT}"
    try:
        proc = subprocess.run(
            ["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return f"no Slurm here: sinfo did not answer within {timeout_s:g} s {HINT}"
    except OSError as exc:
        return f"no Slurm here: sinfo could not run ({exc}) {HINT}"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return f"no Slurm here: sinfo failed ({lines[-1] if lines else f'exit status {proc.returncode}'}) {HINT}"
    states = set(proc.stdout.split())
    if not states & USABLE_STATES:
        return f"Slurm has no idle node (sinfo states: {', '.join(sorted(states)) or 'no nodes'}) {HINT}"
    return None


_REASON = slurm_unavailable()
requires_slurm = pytest.mark.skipif(_REASON is not None, reason=_REASON or "Slurm is available")
