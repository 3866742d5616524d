"""`rsabench plan`'s time estimate against the run it estimates, in one process.

The sweep ``--dataset kriegeskorte2008 --backbone alexnet --objective frozen --objective dissim --seed 0
--seed 1 --weights random --image-size 64 --epochs 3 --no-cache`` (4 cells, the ``make demo`` job with a
second seed) is estimated by :func:`rsabench.estimate.estimate_cells` (timed probes on this machine, a fresh
probe cache), then run in the same process, one cell after another (``Session.run``, as the local executor
runs them). Three rounds of estimate-then-run (fresh runs dir each), since a 2-core machine shared with
other jobs slows a probe or a run several-fold for seconds at a time. Printed: the plan table of the first
round, per round the estimated and measured wall time of the 4 cells and their ratio, per cell of the median
round the estimate's parts against the record's ``timings.total_s``. Asserted: the median ratio lies within
[0.5, 2] (figures in benchmarks/RESULTS.md).

Run: ``pytest benchmarks/test_plan_estimate.py -s``.
"""

from __future__ import annotations

import os
import statistics
import time

from rich.console import Console

from rsabench.estimate import ProbeCache, estimate_cells, render_plan, totals
from rsabench.plugins import get_plugins
from rsabench.runner import RunOptions, Session

SWEEP = dict(
    datasets=["kriegeskorte2008"], backbones=["alexnet"], objectives=["frozen", "dissim"], seeds=[0, 1], targets=[]
)
OPTIONS = dict(weights="random", image_size=64, epochs=3, no_cache=True)
ROUNDS = 3


def one_round(runs, show: bool) -> dict:
    """Estimate the sweep, then run it; the figures of the round."""
    session = Session(get_plugins(), RunOptions(**OPTIONS))
    cells = session.plan(**SWEEP, runs_dir=runs)
    t0 = time.perf_counter()
    estimates = estimate_cells(session, cells, probes=ProbeCache())
    estimate_s = time.perf_counter() - t0
    if show:
        render_plan(Console(width=220), cells, estimates)
    session.preflight(cells, runs)
    t0 = time.perf_counter()
    records = {cell.cell: session.run(cell) for cell in cells}
    measured = time.perf_counter() - t0
    predicted = totals(estimates).seconds
    assert predicted is not None and len(records) == len(cells) == 4
    return {
        "estimated": predicted,
        "measured": measured,
        "ratio": predicted / measured,
        "estimate_s": estimate_s,
        "estimates": estimates,
        "records": records,
    }


def test_estimated_time_is_within_a_factor_2_of_the_run(tmp_path):
    load = os.getloadavg()[0]
    rounds = [one_round(tmp_path / f"runs{r}", show=r == 0) for r in range(ROUNDS)]
    print(f"\nload average before: {load:.2f}")
    for r, x in enumerate(rounds):
        print(
            f"  round {r + 1}: estimated {x['estimated']:.1f} s, measured {x['measured']:.1f} s, ratio "
            f"{x['ratio']:.2f} (the estimate itself took {x['estimate_s']:.1f} s)"
        )
    median = statistics.median(x["ratio"] for x in rounds)
    middle = min(rounds, key=lambda x: abs(x["ratio"] - median))
    for e in middle["estimates"]:
        c, record = e.cell.config, middle["records"][e.cell.cell]
        parts = ", ".join(f"{k} {v:.2f}" for k, v in e.seconds_parts.items())
        print(
            f"    {c['objective']:7s} seed {c['seed']}: estimated {e.seconds:5.2f} s ({parts}), measured "
            f"{record['timings']['total_s']:5.2f} s (selected epoch {record['selection']['epoch']}, loss layer "
            f"{e.loss_layer or '-'})"
        )
    print(f"median ratio {median:.2f}")
    assert 0.5 <= median <= 2.0, [round(x["ratio"], 2) for x in rounds]
