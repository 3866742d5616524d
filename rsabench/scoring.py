"""Scores with noise ceilings and seeded bootstrap confidence intervals.

A :class:`TargetScorer` holds one target's subject RDMs restricted to the scored images, prepared once;
``score_many`` compares any number of model RDMs (one per layer) in one matrix product. A convention
subclasses it and overrides :meth:`TargetScorer.values` (its per-subject value from the signed
correlations) and, where its ceilings differ, :meth:`TargetScorer._ceilings`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import numpy as np

from .errors import CellFailure, PluginError
from .rsa import sub_rdm, upper_tri

BOOTSTRAP_SAMPLES = 1000
CI_LEVEL = 0.95
CONSTANT_SPREAD = 1e-6
"""A model RDM whose entries all lie within this of each other is constant: the features carry no
structure (a float32 correlation distance is exact to ~1e-7 for the feature sizes of a small layer, so a
genuinely structured RDM spreads far wider; ranks of a constant vector are all ties, and any metric of
it would be a number computed from nothing)."""


def model_rdm_problem(rdm: np.ndarray) -> str | None:
    """Why a model RDM (or RDM vector) cannot be scored, or None: non-finite values, or constant."""
    v = np.asarray(rdm)
    if v.dtype.kind != "f":
        v = v.astype(np.float64)
    v = upper_tri(v) if v.ndim == 2 and v.shape[0] == v.shape[1] and v.shape[0] > 1 else v.ravel()
    if not np.all(np.isfinite(v)):
        return "has non-finite values (NaN or inf: broken weights or features)"
    if v.size and float(v.max()) - float(v.min()) <= CONSTANT_SPREAD:  # float64 difference of exact extremes
        return "is constant (every pair equally dissimilar: the features are constant or identical across images)"
    return None


@dataclass
class Score:
    """Never a bare float: raw value, per-subject values, ceilings, normalised value, CI, n, convention.

    ``normalized`` is ``100 * raw / ceiling_upper`` (percent of the upper noise ceiling). ``rho`` and
    ``extra["rho_per_subject"]`` are always the signed correlations; ``raw`` and ``per_subject`` are the
    convention's values of them (:meth:`TargetScorer.values`; equal to ``rho`` under ``computed``).
    """

    raw: float
    per_subject: list[float]
    ceiling_lower: float
    ceiling_upper: float
    normalized: float
    ci_low: float
    ci_high: float
    n_subjects: int
    n_images: int
    convention: str
    metric: str
    rho: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Score":
        """From a record's JSON (where a missing value is ``null``)."""
        names = {f.name for f in fields(cls)}
        values = {k: (float("nan") if v is None and k not in ("extra",) else v) for k, v in d.items() if k in names}
        values.setdefault("rho", values.get("raw", float("nan")))
        return cls(**values)


def bootstrap_indices(n: int, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> np.ndarray:
    """Seeded resamples of ``n`` subjects with replacement, ``(samples, n)``; shared for paired Δ."""
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def percentile_ci(values: np.ndarray, indices: np.ndarray, level: float = CI_LEVEL) -> tuple[Any, Any]:
    """Percentile bootstrap CI of the mean over resampled subjects (the last axis of ``values``).

    ``indices``: ``(samples, n)`` from :func:`bootstrap_indices`. ``values`` ``(n,)`` gives two floats;
    ``(..., n)`` gives two arrays ``(...)`` (every row resampled alike: paired).
    """
    means = np.asarray(values, dtype=np.float64)[..., indices].mean(axis=-1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], axis=-1)
    if np.ndim(lo) == 0:
        return float(lo), float(hi)
    return lo, hi


class TargetScorer:
    """Scores model RDMs against one target's subjects on a fixed set of images.

    ``rdms``: ``(subjects, repeats, n, n)``, or any sequence of per-subject ``(repeats, n, n)`` arrays (a
    memory map, a generator-backed list): it is read one subject at a time and kept as given, never
    copied whole. ``index``: the images scored (all when None). The metric is applied per (subject,
    repeat) and averaged over repeats (:meth:`_per_subject`: the signed correlations), turned into the
    convention's values (:meth:`values`: the identity here), then averaged over subjects. Ceilings use the
    same pairs and the same values: upper against the pooled RDM of all subjects, lower against the others
    (leave one out).

    Memory: the prepared subjects (for Spearman 4 bytes a pair and subject-repeat) plus a few pair vectors,
    when the metric offers ``pooled_sum`` (the pooled RDM from prepared rows; all built-ins do). Without
    it each subject's ``metric.pool`` is kept beside (the plain contract: ``prepare``, ``compare``, ``pool``).
    """

    convention = "computed"
    ceiling_source = "computed from the data on the scored pairs (subjects pooled as rsatoolbox pool_rdm)"
    p_value_test = "two-sided one-sample t-test over subjects of the per-subject value against 0"

    def __init__(
        self,
        rdms: Any,
        metric: Any,
        index: Sequence[int] | None = None,
        bootstrap_seed: int = 0,
        bootstrap_samples: int = BOOTSTRAP_SAMPLES,
    ) -> None:
        self.source = rdms
        self.metric = metric
        self.n_subjects = len(rdms)
        self._index_arg = index
        self.prepared: list[Any] = []
        self._pool_sums: list[np.ndarray] | None = None if hasattr(metric, "pooled_sum") else []
        total = None
        for s in range(self.n_subjects):
            vectors = self.subject_vectors(s)
            self.prepared.append(metric.prepare(vectors))
            own = self._own_sum(s, vectors)
            if total is None:
                total = np.array(own)  # a copy: ``own`` may be kept (metrics without pooled_sum)
            else:
                total += own
            del vectors, own
        self.bootstrap = bootstrap_indices(self.n_subjects, bootstrap_samples, bootstrap_seed)
        self.ceiling_lower, self.ceiling_upper = self._ceilings(total)

    # -- subjects ------------------------------------------------------------------------------
    def subject_vectors(self, s: int) -> np.ndarray:
        """Subject ``s``'s RDM vectors on the scored images ``(repeats, P)``, in the source's float dtype."""
        rdms = np.asarray(self.source[s])
        if rdms.dtype.kind != "f":
            rdms = rdms.astype(np.float64)
        if not hasattr(self, "index"):
            self.n_repeats, self.n_full = rdms.shape[0], rdms.shape[-1]
            index = self._index_arg
            self.index = np.arange(self.n_full) if index is None else np.unique(np.asarray(index, dtype=np.int64))
            self._whole = np.array_equal(self.index, np.arange(self.n_full))
        return upper_tri(rdms if self._whole else sub_rdm(rdms, self.index))

    @property
    def vectors(self) -> np.ndarray:
        """All subjects' RDM vectors ``(S, R, P)`` in float64 (materialised on demand: small data only)."""
        return np.stack([self.subject_vectors(s) for s in range(self.n_subjects)]).astype(np.float64)

    def _own_sum(self, s: int, vectors: np.ndarray | None = None) -> np.ndarray:
        """Subject ``s``'s share of the pooled RDM: ``metric.pooled_sum`` of its prepared rows, or (a metric
        without it) ``repeats · metric.pool`` of its vectors, kept from the first pass."""
        if self._pool_sums is None:
            return self.metric.pooled_sum(self.prepared[s])
        if vectors is not None:
            self._pool_sums.append(self.metric.pool(vectors) * len(vectors))
        return self._pool_sums[s]

    def _pooled(self, total: np.ndarray, count: int) -> np.ndarray:
        """The pooled RDM of ``count`` subject-repeats whose shares sum to ``total`` (a ``pooled_sum`` metric
        takes the sum as it is: scaling the model side changes no correlation, and integer sums rank fast)."""
        return total[None] if self._pool_sums is None else (total / count)[None]

    # -- per-subject values -------------------------------------------------------------------
    def _compare(self, model_vectors: np.ndarray, subjects: Sequence[int] | None = None) -> np.ndarray:
        """``(M, P)`` model vectors → ``(M, len(subjects), R)`` metric values (the model prepared once)."""
        metric = self.metric
        parts = [self.prepared[s] for s in (range(self.n_subjects) if subjects is None else subjects)]
        if hasattr(metric, "compare_prepared"):
            model = metric.prepare(np.atleast_2d(model_vectors))
            sims = [metric.compare_prepared(model, part) for part in parts]
        else:
            sims = [metric.compare(model_vectors, part) for part in parts]
        return np.stack(sims, axis=1)

    def _per_subject(self, model_vectors: np.ndarray) -> np.ndarray:
        """``(M, P)`` model vectors → ``(M, S)`` signed correlations per subject (mean over repeats): the
        record's ``rho``. A convention changes its values with :meth:`values`, not here."""
        return self._compare(model_vectors).mean(axis=2)

    def values(self, signed: np.ndarray) -> np.ndarray:
        """The convention's per-subject values ``(M, S)`` from the signed correlations ``(M, S)`` (the hook a
        convention overrides, e.g. ``signed**2``; the identity here). Scores and ceilings both use it."""
        return signed

    def _values(self, signed: np.ndarray) -> np.ndarray:
        values = np.asarray(self.values(signed), dtype=np.float64)
        if values.shape != signed.shape:
            raise PluginError(
                f"convention {self.convention!r}: values() returned shape {values.shape} for signed correlations "
                f"of shape {signed.shape} (expected the same shape)"
            )
        return values

    def _ceilings(self, total: np.ndarray | None) -> tuple[float, float]:
        """(lower, upper) noise ceilings on the scale of :meth:`values`, from ``total``: the sum of every
        subject's pooled share (the metric's ``pooled_sum`` of prepared rows, else ``repeats · pool``)."""
        n_s, n_r = self.n_subjects, self.n_repeats
        if n_s * n_r < 2:  # one RDM: it is its own pooled RDM; no ceiling can be estimated
            return float("nan"), float("nan")
        upper = self._values(self._per_subject(self._pooled(total, n_s * n_r)))[0]
        if n_s < 2:
            return float("nan"), float(upper.mean())
        signed = np.empty((1, n_s))
        for s in range(n_s):
            others = total - self._own_sum(s)
            signed[0, s] = self._compare(self._pooled(others, (n_s - 1) * n_r), [s]).mean()
            del others
        return float(self._values(signed).mean()), float(upper.mean())

    # -- scoring -------------------------------------------------------------------------------
    def model_vectors(self, model_rdms: np.ndarray) -> np.ndarray:
        """Model RDM(s) → vectors on the scored images ``(M, P)`` (a float dtype is kept).

        Accepts full-size RDMs ``(..., N, N)`` (restricted here to the scored images) or RDMs already
        computed on just the scored images, in index order ``(..., len(index), len(index))``.
        """
        model_rdms = np.asarray(model_rdms)
        if model_rdms.dtype.kind != "f":
            model_rdms = model_rdms.astype(np.float64)
        if model_rdms.ndim == 2:
            model_rdms = model_rdms[None]
        n = model_rdms.shape[-1]
        if n == self.n_full and not self._whole:
            model_rdms = sub_rdm(model_rdms, self.index)
        elif n != len(self.index):
            raise ValueError(
                f"model RDMs are {n}x{n}; expected {self.n_full} (all images) or {len(self.index)} (scored images)"
            )
        vectors = upper_tri(model_rdms)
        for m, v in enumerate(vectors):
            problem = model_rdm_problem(v)
            if problem:
                which = f"model RDM {m}" if len(vectors) > 1 else "the model RDM"
                raise CellFailure(f"{which} {problem}; it cannot be scored")
        return vectors

    def raw_values(self, model_rdms: np.ndarray) -> np.ndarray:
        """Raw score per model RDM ``(M,)`` (cheap: for layer/epoch selection)."""
        signed = self._checked(self._per_subject(self.model_vectors(model_rdms)))
        return self._checked(self._values(signed)).mean(axis=1)

    def _checked(self, values: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(values)):
            raise CellFailure(
                f"metric {getattr(self.metric, 'name', self.metric)!r} returned non-finite values for a model RDM; it "
                "cannot be scored"
            )
        return values

    def score_extra(self) -> dict[str, Any]:
        """What every score of this scorer logs in ``extra`` besides p-values and ``rho_per_subject``."""
        return {"p_value_test": self.p_value_test, "ceiling_source": self.ceiling_source}

    def score_many(self, model_rdms: np.ndarray) -> list[Score]:
        """Full :class:`Score` per model RDM (p-value: t-test over subjects of the per-subject value)."""
        signed = self._checked(self._per_subject(self.model_vectors(model_rdms)))
        return self._build(self._checked(self._values(signed)), signed, self.score_extra())

    def score(self, model_rdm: np.ndarray) -> Score:
        return self.score_many(model_rdm)[0]

    def _build(self, values: np.ndarray, signed: np.ndarray, extra: dict[str, Any]) -> list[Score]:
        """Scores from per-subject ``values`` ``(M, S)`` (and the signed correlations behind them)."""
        raw = values.mean(axis=1)
        lo, hi = percentile_ci(values, self.bootstrap)
        p_values, p_rho = ttest_pvalues(values), ttest_pvalues(signed)
        return [
            Score(
                raw=float(raw[m]),
                per_subject=[float(v) for v in values[m]],
                ceiling_lower=self.ceiling_lower,
                ceiling_upper=self.ceiling_upper,
                normalized=100.0 * float(raw[m]) / self.ceiling_upper if self.ceiling_upper else float("nan"),
                ci_low=float(lo[m]),
                ci_high=float(hi[m]),
                n_subjects=self.n_subjects,
                n_images=len(self.index),
                convention=self.convention,
                metric=self.metric.name,
                rho=float(signed[m].mean()),
                extra={
                    **extra,
                    "p_value": float(p_values[m]),
                    "rho_per_subject": [float(v) for v in signed[m]],
                    "rho_p_value": float(p_rho[m]),
                },
            )
            for m in range(len(values))
        ]


def ttest_pvalues(values: np.ndarray) -> np.ndarray:
    """Two-sided one-sample t-test against 0 along the last axis (vectorised ``scipy.stats.ttest_1samp``)."""
    from scipy.stats import t as student_t

    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    n = values.shape[-1]
    if n < 2:
        return np.full(values.shape[:-1], np.nan)
    mean = values.mean(axis=-1)
    sd = values.std(axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / np.sqrt(n))
    return 2.0 * student_t.sf(np.abs(t), n - 1)


def paired_delta(a: Score, b: Score, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float, float]:
    """Paired difference ``a - b`` of two scores on the same subjects: (Δ, CI low, CI high)."""
    diff = np.asarray(a.per_subject) - np.asarray(b.per_subject)
    lo, hi = percentile_ci(diff, bootstrap_indices(len(diff), samples, seed))
    return float(diff.mean()), lo, hi
