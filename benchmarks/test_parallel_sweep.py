"""A 6-cell synthetic sweep with ``--jobs 2`` against ``--jobs 1`` on this machine's cores.

``rsabench run --dataset synthetic --objective frozen --objective dissim --objective contrastive --epochs 2
--weights random --image-size 64 --no-cache`` (2 targets x 3 objectives = 6 cells), each way in a fresh runs
dir, interleaved and repeated; the feature cache is off so both do the same work. ``--jobs 1`` runs the cells in
the driver with torch's default threads (one per core); ``--jobs 2`` in 2 spawned workers with one thread each.
Reported: the wall time of each, the speed-up, the load average; asserted: both give the same numbers.

Run: ``pytest benchmarks/test_parallel_sweep.py -s`` (about 3 minutes on 2 CPU cores).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SWEEP = [
    "run", "--dataset", "synthetic", "--objective", "frozen", "--objective", "dissim", "--objective", "contrastive",
    "--epochs", "2", "--weights", "random", "--image-size", "64", "--no-cache",
]  # fmt: skip
ROUNDS = 2


def run(runs: Path, jobs: int) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "rsabench", *SWEEP, "--runs-dir", str(runs), "--jobs", str(jobs)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return time.perf_counter() - start


def scores(runs: Path) -> dict:
    out = {}
    for path in runs.rglob("*.json"):
        doc = json.loads(path.read_text())
        if doc.get("schema") == "rsabench.cell/2":
            out[doc["cell"]] = doc["scores"]
    return out


def test_two_workers_against_one(tmp_path):
    times: dict[int, list[float]] = {1: [], 2: []}
    for r in range(ROUNDS):
        for jobs in (1, 2) if r % 2 == 0 else (2, 1):
            times[jobs].append(run(tmp_path / f"r{r}-j{jobs}", jobs))
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(
        f"\n6-cell synthetic sweep on {os.cpu_count()} cores: --jobs 1 {one:.1f} s (rounds "
        f"{', '.join(f'{t:.1f}' for t in times[1])}), --jobs 2 {two:.1f} s (rounds "
        f"{', '.join(f'{t:.1f}' for t in times[2])}); speed-up {one / two:.2f}x; load "
        f"{Path('/proc/loadavg').read_text().split()[0]}"
    )
    reference = scores(tmp_path / "r0-j1")
    assert len(reference) == 6
    for r in range(ROUNDS):
        for jobs in (1, 2):
            assert scores(tmp_path / f"r{r}-j{jobs}") == reference  # same numbers however the cells are spread
