"""Scoring conventions: how per-subject values, ceilings and p-values are computed (ARCHITECTURE.md, "The mathematics").

A convention is a plugin object (``register_conventions``, registry kind ``convention``): its factory
takes keywords ``dataset`` (a :class:`~rsabench.dataset.Dataset` or its name), ``target``, ``group``,
``rdms``, ``metric``, ``index``, ``bootstrap_seed``, ``bootstrap_samples`` and returns a
:class:`~rsabench.scoring.TargetScorer`. The built-in plugin :mod:`rsabench.builtin.conventions` registers

- ``computed``: rsabench's own (:func:`computed`). Per-subject value = the metric (mean over repeats);
  ceilings from the data on exactly the scored pairs, subjects pooled as rsatoolbox's ``pool_rdm``;
- ``algonauts2019``: the Algonauts 2019 devkit (:mod:`rsabench.builtin.algonauts_convention`).

A dataset plugin can register its own convention the same way, without touching rsabench.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Any, Sequence

import numpy as np

from .errors import PluginError, UsageError
from .scoring import BOOTSTRAP_SAMPLES, Score, TargetScorer, bootstrap_indices, percentile_ci

COMPUTED_SUMMARY = "metric per subject; noise ceilings computed from the data on the scored pairs (rsatoolbox pooling)"


def _registry() -> Any:
    from .plugins import get_plugins

    return get_plugins().conventions


class _Conventions(Mapping):
    """``{name: summary}`` of the registered conventions, read from the plugins' registry on each use."""

    def __getitem__(self, name: str) -> str:
        if name not in self:
            raise KeyError(name)
        return _registry().summary(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in _registry().names()

    def __iter__(self) -> Iterator[str]:
        return iter(_registry().names())

    def __len__(self) -> int:
        return len(_registry().names())


CONVENTIONS: Mapping[str, str] = _Conventions()


ComputedScorer = TargetScorer
"""Convention ``computed``: ceilings from the data on the scored pairs (:class:`TargetScorer`)."""


def computed(
    *,
    dataset: Any = None,
    target: str = "",
    group: str = "",
    rdms: Any,
    metric: Any,
    index: Sequence[int] | None = None,
    bootstrap_seed: int = 0,
    bootstrap_samples: int = BOOTSTRAP_SAMPLES,
) -> TargetScorer:
    """The ``computed`` convention's factory (dataset, target and group do not change it)."""
    return TargetScorer(rdms, metric, index, bootstrap_seed, bootstrap_samples)


def _resolve_metric(metric: Any) -> Any:
    if isinstance(metric, str):
        from .plugins import get_plugins

        return get_plugins().metrics.get(metric)()
    return metric


def _factory(convention: str) -> Any:
    registry = _registry()
    if convention not in registry.names():
        known = registry.names()
        close = difflib.get_close_matches(convention, known, n=2, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UsageError(f"unknown scoring convention {convention!r}{hint} (known: {', '.join(known)})")
    return registry.get(convention)


def scorer_for(
    convention: str,
    dataset: Any,
    target: str,
    group: str,
    rdms: Any,
    metric: Any,
    index: Sequence[int] | None = None,
    bootstrap_seed: int = 0,
    bootstrap_samples: int = BOOTSTRAP_SAMPLES,
) -> TargetScorer:
    """A scorer for one target/group on the images ``index`` (all when None) under a registered ``convention``.

    ``dataset`` is a :class:`~rsabench.dataset.Dataset` or its name; ``metric`` an object or a registered name.
    """
    factory = _factory(convention)
    scorer = factory(
        dataset=dataset,
        target=target,
        group=group,
        rdms=rdms,
        metric=_resolve_metric(metric),
        index=index,
        bootstrap_seed=bootstrap_seed,
        bootstrap_samples=bootstrap_samples,
    )
    if not isinstance(scorer, TargetScorer):
        plugin = _registry().plugin_of(convention)
        raise PluginError(
            f"plugin {plugin!r}: convention {convention!r} returned {type(scorer).__name__}, not a TargetScorer"
        )
    return scorer


def track_score(scores: Sequence[Score], bootstrap_seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> Score:
    """The track score over targets (EVC+IT or early+late): ``100·mean(raw) / mean(ceiling_upper)``.

    A ratio of means, not a mean of ratios (devkit). Per-subject values are averaged over targets (the
    same subjects), which gives the bootstrap CI of the mean raw value; the devkit reports no p-value.
    """
    if not scores:
        raise ValueError("track_score needs at least one score")
    raw = float(np.mean([s.raw for s in scores]))
    upper = float(np.mean([s.ceiling_upper for s in scores]))
    lower = float(np.mean([s.ceiling_lower for s in scores]))
    n_subjects = {s.n_subjects for s in scores}
    per_subject: list[float] = []
    lo = hi = float("nan")
    if len(n_subjects) == 1:
        values = np.mean([s.per_subject for s in scores], axis=0)
        per_subject = [float(v) for v in values]
        lo, hi = percentile_ci(values, bootstrap_indices(len(values), samples, bootstrap_seed))
    return Score(
        raw=raw,
        per_subject=per_subject,
        ceiling_lower=lower,
        ceiling_upper=upper,
        normalized=100.0 * raw / upper if upper else float("nan"),
        ci_low=lo,
        ci_high=hi,
        n_subjects=max(n_subjects),
        n_images=max(s.n_images for s in scores),
        convention=scores[0].convention,
        metric=scores[0].metric,
        rho=float(np.mean([s.rho for s in scores])),
        extra={"p_value": None, "formula": "100 * mean(raw over targets) / mean(ceiling_upper over targets)"},
    )
