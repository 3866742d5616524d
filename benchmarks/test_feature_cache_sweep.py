"""The feature cache across a sweep: the frozen forward pass over each image set runs once.

The sweep ``--dataset synthetic --backbone alexnet --objective frozen --objective dissim --objective
contrastive --objective rdm-corr --objective cka --epochs 1 --weights random --image-size 64`` is 10 cells
(2 targets x 5 objectives) that all start from the same network (AlexNet, random weights, seed 0) and share
the same image splits. Every call of ``extract_rdms`` is counted by (state of the network, images): a call
with the network in its state as built is a frozen forward pass. Asserted: in a first run (empty cache) each
image set's frozen pass runs exactly once; in a second run of the same sweep (``--force``, same cache) not
at all, and every cell reports no cache miss; a third run with ``--no-cache`` counts the frozen passes the
cache saves. The wall time of the runs is printed (figures in benchmarks/RESULTS.md).

Run: ``pytest benchmarks/test_feature_cache_sweep.py -s``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter

from rsabench import features
from rsabench.cli import main
from rsabench.feature_cache import state_digest
from rsabench.plugins import get_plugins

SWEEP = [
    "run", "--dataset", "synthetic", "--backbone", "alexnet", "--objective", "frozen", "--objective", "dissim",
    "--objective", "contrastive", "--objective", "rdm-corr", "--objective", "cka", "--epochs", "1",
    "--weights", "random", "--image-size", "64",
]  # fmt: skip


def _cell_times(runs) -> dict[str, float]:
    """Seconds per objective (both targets) from the records' timings."""
    out: Counter = Counter()
    for path in runs.rglob("*.json"):
        record = json.loads(path.read_text())
        out[record["config"]["objective"]] += record["timings"]["total_s"]
    return dict(out)


def test_frozen_forward_once_per_image_set_then_served_from_the_cache(tmp_path, monkeypatch):
    as_built = state_digest(get_plugins().backbones.get("alexnet")().build(weights="random", seed=0).model)
    calls: Counter = Counter()
    real = features.extract_rdms

    def counted(model, layers, images, *args, **kwargs):
        state = "as built" if state_digest(model) == as_built else "trained"
        calls[(state, hashlib.sha256(images.numpy().tobytes()).hexdigest())] += 1
        return real(model, layers, images, *args, **kwargs)

    monkeypatch.setattr(features, "extract_rdms", counted)
    argv = [*SWEEP, "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--format", "json"]

    t0 = time.perf_counter()
    main(argv)
    first_s = time.perf_counter() - t0
    cell_s_first = _cell_times(tmp_path / "runs")
    frozen_first = {k: n for k, n in calls.items() if k[0] == "as built"}
    trained_first = sum(n for k, n in calls.items() if k[0] == "trained")
    calls.clear()

    t0 = time.perf_counter()
    main([*argv, "--force"])
    second_s = time.perf_counter() - t0
    frozen_second = sum(n for k, n in calls.items() if k[0] == "as built")

    cell_s_second = _cell_times(tmp_path / "runs")
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("*.json")]
    calls.clear()
    t0 = time.perf_counter()
    main([*argv, "--force", "--no-cache"])
    uncached_s = time.perf_counter() - t0
    frozen_uncached = sum(n for k, n in calls.items() if k[0] == "as built")
    for objective in sorted(cell_s_first):
        first, second = cell_s_first[objective], cell_s_second[objective]
        print(f"\n  {objective:12s} cell time, both targets: {first:.2f} s -> {second:.2f} s")
    print(
        f"\nsweep of {len(records)} cells: first run {first_s:.1f} s ({len(frozen_first)} image sets, "
        f"{sum(frozen_first.values())} frozen forward passes, {trained_first} after training); "
        f"second run {second_s:.1f} s ({frozen_second} frozen forward passes); "
        f"speed-up of the second run {first_s / second_s:.2f}x; without the cache {uncached_s:.1f} s "
        f"({frozen_uncached} frozen forward passes)"
    )
    assert len(records) == 10
    assert frozen_first and all(n == 1 for n in frozen_first.values()), frozen_first
    assert frozen_second == 0
    assert frozen_uncached > sum(frozen_first.values())  # without the cache every cell runs its own
    assert all(r["manifest"]["feature_cache"]["misses"] == 0 for r in records)
