"""Timing helper shared by the benchmarks (speed-ups are ratios measured in the same process)."""

from __future__ import annotations

import time
from typing import Callable


def best_time(fn: Callable[[], object], number: int) -> float:
    """Best wall time of ``number`` calls (seconds per call)."""
    best = float("inf")
    for _ in range(number):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
