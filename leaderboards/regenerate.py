"""Regenerate the committed leaderboards: a fixed, offline, CPU-sized sweep per embedded dataset.

    python leaderboards/regenerate.py [--runs-dir runs/leaderboards]

Random initial weights (ImageNet weights cannot be fetched offline), 64 px images, 3 epochs: these
tables track the harness itself, not the state of the art. Records are cached, so a re-run only
computes what changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rsabench.cli import main

HERE = Path(__file__).resolve().parent
SWEEPS = {
    "kriegeskorte2008": ["--backbone", "alexnet"],
    "synthetic": ["--backbone", "alexnet"],
}
COMMON = ["--weights", "random", "--image-size", "64", "--epochs", "3", "--objective", "frozen", "--objective", "dissim", "--format", "csv"]


def run(argv: list[str]) -> None:
    try:
        main(argv)
    except SystemExit as exc:
        if exc.code:
            raise


def regenerate(runs_dir: Path) -> None:
    for dataset, extra in SWEEPS.items():
        cell_dir = runs_dir / dataset
        run(["run", "--dataset", dataset, *extra, *COMMON, "--runs-dir", str(cell_dir)])
        run(["leaderboard", "--runs-dir", str(cell_dir), "--format", "markdown", "--output", str(HERE / f"{dataset}.md")])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/leaderboards"))
    regenerate(parser.parse_args().runs_dir)
