"""Scoring precomputed model RDMs (``rsabench score``) in the Algonauts 2019 submission format.

A submission holds one ``(n, n)`` model RDM per target (MATLAB v5 or v7.3, or ``.npz``), under the variable
the dataset names (:meth:`rsabench.dataset.Dataset.submission_key`): Algonauts' ``submit_fmri.mat`` holds
``EVC_RDMs``/``IT_RDMs``, ``submit_meg.mat`` ``MEG_RDMs_early``/``MEG_RDMs_late``; the default is
``<target>_RDMs`` (``hIT_RDMs`` for kriegeskorte2008); the target's own name is accepted too. A dataset with a
single target also takes a bare ``(n, n)`` ``.npy``. Rows of the RDM follow the split's images in sorted file-name
order. The diagonal is ignored (the devkit reads the strict upper triangle); asymmetric RDMs are refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .conventions import CONVENTIONS, scorer_for, track_score
from .dataset import Dataset
from .errors import DataError, UsageError
from .matio import BARE, check_rdms, read_arrays
from .scoring import Score, model_rdm_problem


def split_names(dataset: Dataset) -> list[str]:
    """Every name ``--split`` accepts for ``dataset``: named splits, test splits, then group names."""
    names = [*dataset.named_splits, *dataset.test_splits, *dataset.groups]
    return list(dict.fromkeys(names))


def resolve_split(dataset: Dataset, split: str | None) -> str:
    """The group a ``--split`` names. None: the only test split, else the only group."""
    if split is None:
        if len(dataset.test_splits) == 1 and len(next(iter(dataset.test_splits.values()))) == 1:
            return next(iter(dataset.test_splits.values()))[0]
        if len(dataset.groups) == 1:
            return next(iter(dataset.groups))
        raise UsageError(f"dataset {dataset.name!r}: --split is required (one of: {', '.join(split_names(dataset))})")
    for table in (dataset.named_splits, dataset.test_splits):
        if split in table:
            groups = table[split]
            if len(groups) != 1:
                raise UsageError(
                    f"dataset {dataset.name!r}: split {split!r} spans groups {groups}; name one group with --split"
                )
            return groups[0]
    if split in dataset.groups:
        return split
    notes = [n for n in dataset.notes if "not found" in n]
    hint = f" ({'; '.join(notes)})" if notes else ""
    raise UsageError(
        f"dataset {dataset.name!r}: unknown split {split!r}; known: {', '.join(split_names(dataset))}{hint}"
    )


def read_submission(path: str | os.PathLike, dataset: Dataset, group: str) -> dict[str, np.ndarray]:
    """The submission's model RDM per target name of ``group``, checked (size, finite, symmetric)."""
    path = Path(path)
    names = [t.name for t in dataset.targets if t.group == group]
    n = dataset.groups[group].n
    arrays = read_arrays(path)
    keys = {t: dataset.submission_key(t) for t in names}
    out: dict[str, np.ndarray] = {}
    if list(arrays) == [BARE]:
        if len(names) != 1:
            raise DataError(
                f"{path}: a .npy file holds one RDM, but {dataset.name} needs {', '.join(keys.values())}; "
                "use a .mat or .npz file with those keys"
            )
        arrays = {keys[names[0]]: arrays[BARE]}
    missing = [k for t, k in keys.items() if k not in arrays and t not in arrays]
    if missing:
        present = ", ".join(repr(k) for k in arrays) or "none"
        raise DataError(
            f"{path}: missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} (keys present: "
            f"{present})"
        )
    for t, k in keys.items():
        value = arrays[k] if k in arrays else arrays[t]
        where = f"{path}: {k if k in arrays else t}"
        if isinstance(value, str):
            raise DataError(f"{where}: expected a numeric {n}x{n} RDM, got {value}")
        if value.ndim != 2:
            raise DataError(f"{where}: expected one {n}x{n} model RDM, got shape {value.shape}")
        if value.shape != (n, n):
            raise DataError(
                f"{where}: RDM is {value.shape[0]}x{value.shape[1]} but group {group!r} of {dataset.name} has {n} "
                "images "
                f"(expected {n}x{n})"
            )
        out[t] = check_rdms(value, where, n=n, ndim=2, check_diagonal_finite=False)
        problem = model_rdm_problem(out[t])
        if problem:
            raise DataError(f"{where}: the model RDM {problem}; it cannot be scored")
    return out


def _clean(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def score_row(score: Score, target: str, dataset: str, split: str, group: str) -> dict[str, Any]:
    """One flat result row for a Score (NaN becomes None)."""
    row = {
        "dataset": dataset,
        "split": split,
        "group": group,
        "target": target,
        "convention": score.convention,
        "metric": score.metric,
        "raw": score.raw,
        "rho": score.rho,
        "normalized": score.normalized,
        "ceiling_upper": score.ceiling_upper,
        "ceiling_lower": score.ceiling_lower,
        "p_value": score.extra.get("p_value"),
        "ci_low": score.ci_low,
        "ci_high": score.ci_high,
        "n_subjects": score.n_subjects,
        "n_images": score.n_images,
        "ceiling_source": score.extra.get("ceiling_source", ""),
        "per_subject": list(score.per_subject),
    }
    return {k: _clean(v) for k, v in row.items()}


def score_submission(
    path: str | os.PathLike,
    dataset: Dataset | str,
    split: str | None = None,
    conventions: Sequence[str] | None = None,
    *,
    metric: str = "spearman",
    data_dir: str | os.PathLike | None = None,
    bootstrap_seed: int = 0,
) -> list[dict[str, Any]]:
    """Score a submission file: one row per (convention, target), plus a track row (target ``"score"``).

    ``dataset``: a loaded Dataset or a registered name (loaded from ``data_dir``). ``conventions``: None
    means the dataset's own (``algonauts2019`` and ``computed`` for Algonauts). Rows hold at least target,
    raw (R² under algonauts2019), rho (signed mean Spearman), normalized (%), ceiling_upper, ceiling_lower,
    p_value, convention, ci_low/ci_high, n_subjects, n_images and per_subject; plain JSON-able values
    (NaN becomes None). The track row always comes last per convention (equal to the target's row when
    there is one target).
    """
    if isinstance(dataset, str):
        from .plugins import get_plugins

        dataset = get_plugins().datasets.get(dataset)(data_dir)
    conventions = tuple(dataset.conventions if conventions is None else conventions)
    for c in conventions:
        if c not in CONVENTIONS:
            raise UsageError(f"unknown scoring convention {c!r} (known: {', '.join(CONVENTIONS)})")
    group = resolve_split(dataset, split)
    split_name = split if split is not None else group
    models = read_submission(path, dataset, group)
    rows: list[dict[str, Any]] = []
    for convention in conventions:
        scores = []
        for target, model in models.items():
            t = dataset.target(target, group)
            scorer = scorer_for(convention, dataset, target, group, t.rdms, metric, None, bootstrap_seed)
            s = scorer.score(model)
            scores.append(s)
            rows.append(score_row(s, target, dataset.name, split_name, group))
        s = track_score(scores, bootstrap_seed)
        rows.append(score_row(s, "score", dataset.name, split_name, group))
    return rows
