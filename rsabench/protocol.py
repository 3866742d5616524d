"""The honest protocol's fixed parts: images (never pairs) split by a recorded seed, the test sets scored
once at the end, and the scorer of each target under a named convention (see ARCHITECTURE.md)."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from .dataset import Dataset
from .errors import UsageError
from .scoring import TargetScorer

VALIDATION_CONVENTION = "computed"
"""Layer and epoch are chosen under the convention computed from the data, on validation images only."""


# -- protocol: splits ---------------------------------------------------------------------------
def split_images(
    dataset: Dataset, seed: int, val_fraction: float, test_fraction: float
) -> dict[str, dict[str, np.ndarray]]:
    """Per training group: sorted image indices for ``train``, ``validation`` and (held-out datasets) ``test``."""
    holdout = not dataset.test_splits
    splits: dict[str, dict[str, np.ndarray]] = {}
    for group in dataset.train_groups:
        n = dataset.groups[group].n
        rng = np.random.default_rng([seed, zlib.crc32(group.encode())])
        perm = rng.permutation(n)
        n_test = int(round(n * test_fraction)) if holdout else 0
        n_val = int(round(n * val_fraction))
        parts = {"test": perm[:n_test], "validation": perm[n_test : n_test + n_val], "train": perm[n_test + n_val :]}
        if holdout and n_test < 3 or n_val < 3 or len(parts["train"]) < 2:
            sizes = f"{len(parts['train'])} train, {n_val} validation" + (f", {n_test} test" if holdout else "")
            raise UsageError(
                f"dataset {dataset.name!r}, group {group!r}: --val-fraction {val_fraction:g}"
                + (f" and --test-fraction {test_fraction:g}" if holdout else "")
                + f" split its {n} images into {sizes}; a cell needs >= 2 training, >= 3 validation"
                + (" and >= 3 test images" if holdout else " images")
            )
        splits[group] = {k: np.sort(v) for k, v in parts.items() if len(v) or k != "test"}
    return splits


def test_sets(dataset: Dataset, splits: dict[str, dict[str, np.ndarray]]) -> list[tuple[str, str, np.ndarray]]:
    """(split name, group, image indices) scored once at the end."""
    if not dataset.test_splits:
        return [("test", g, s["test"]) for g, s in splits.items()]
    out = []
    for name, groups in dataset.test_splits.items():
        for g in groups:
            if dataset.groups[g].load_images is not None:
                out.append((name, g, np.arange(dataset.groups[g].n)))
    return out


# -- scorers --------------------------------------------------------------------------------------
def make_scorer(
    convention: str, dataset: Dataset, target: str, group: str, metric: Any, index: np.ndarray, bootstrap_seed: int
) -> TargetScorer:
    """A scorer for one target/group/images under a convention registered by a plugin (``computed`` built in)."""
    from .conventions import scorer_for

    rdms = dataset.target(target, group).rdms
    return scorer_for(convention, dataset, target, group, rdms, metric, index, bootstrap_seed)
