"""Scores with noise ceilings and seeded bootstrap confidence intervals (DESIGN §2, §4).

A :class:`TargetScorer` holds one target's subject RDMs restricted to the scored images, prepared once;
``score_many`` compares any number of model RDMs (one per layer) in one matrix product.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import numpy as np

from .errors import CellFailure
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
    v = np.asarray(rdm, dtype=np.float64)
    v = upper_tri(v) if v.ndim == 2 and v.shape[0] == v.shape[1] and v.shape[0] > 1 else v.ravel()
    if not np.all(np.isfinite(v)):
        return "has non-finite values (NaN or inf: broken weights or features)"
    if v.size and float(v.max() - v.min()) <= CONSTANT_SPREAD:
        return "is constant (every pair equally dissimilar: the features are constant or identical across images)"
    return None


@dataclass
class Score:
    """Never a bare float: raw value, per-subject values, ceilings, normalised value, CI, n, convention.

    ``normalized`` is ``100 * raw / ceiling_upper`` (percent of the upper noise ceiling).
    ``rho`` is the signed mean correlation (equal to ``raw`` unless the convention squares it).
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


def percentile_ci(values: np.ndarray, indices: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` over resampled subjects."""
    means = np.asarray(values, dtype=np.float64)[indices].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


class TargetScorer:
    """Scores model RDMs against one target's subjects on a fixed set of images.

    ``rdms``: ``(subjects, repeats, n, n)``; ``index``: the images scored (all when None). The metric
    is applied per (subject, repeat) and averaged over repeats, then over subjects. Ceilings use the
    same pairs: upper against the pooled RDM of all subjects, lower against the others (leave one out).
    """

    convention = "computed"

    def __init__(
        self,
        rdms: np.ndarray,
        metric: Any,
        index: Sequence[int] | None = None,
        bootstrap_seed: int = 0,
        bootstrap_samples: int = BOOTSTRAP_SAMPLES,
    ) -> None:
        rdms = np.asarray(rdms, dtype=np.float64)
        self.n_full = rdms.shape[-1]
        self.index = np.arange(self.n_full) if index is None else np.unique(np.asarray(index, dtype=np.int64))
        self.metric = metric
        self.n_subjects, self.n_repeats = rdms.shape[:2]
        self.vectors = upper_tri(sub_rdm(rdms, self.index))  # (S, R, P)
        flat = self.vectors.reshape(-1, self.vectors.shape[-1])
        self.prepared = metric.prepare(flat)
        self.bootstrap = bootstrap_indices(self.n_subjects, bootstrap_samples, bootstrap_seed)
        self.ceiling_lower, self.ceiling_upper = self._ceilings()

    # -- per-subject values -------------------------------------------------------------------
    def _per_subject(self, model_vectors: np.ndarray) -> np.ndarray:
        """``(M, P)`` model vectors → ``(M, S)`` per-subject values (mean over repeats)."""
        sims = self.metric.compare(model_vectors, self.prepared)
        return sims.reshape(len(model_vectors), self.n_subjects, self.n_repeats).mean(axis=2)

    def _ceilings(self) -> tuple[float, float]:
        flat = self.vectors.reshape(-1, self.vectors.shape[-1])
        if len(flat) < 2:  # one RDM: it is its own pooled RDM; no ceiling can be estimated
            return float("nan"), float("nan")
        upper = self._per_subject(self.metric.pool(flat)[None])[0]
        if self.n_subjects < 2:
            return float("nan"), float(upper.mean())
        lower = np.empty(self.n_subjects)
        for s in range(self.n_subjects):
            others = np.delete(self.vectors, s, axis=0).reshape(-1, self.vectors.shape[-1])
            pooled = self.metric.pool(others)
            sims = self.metric.compare(pooled[None], self.prepared[s * self.n_repeats : (s + 1) * self.n_repeats])
            lower[s] = sims.mean()
        return float(lower.mean()), float(upper.mean())

    # -- scoring -------------------------------------------------------------------------------
    def model_vectors(self, model_rdms: np.ndarray) -> np.ndarray:
        """Model RDM(s) → vectors on the scored images ``(M, P)``.

        Accepts full-size RDMs ``(..., N, N)`` (restricted here to the scored images) or RDMs already
        computed on just the scored images, in index order ``(..., len(index), len(index))``.
        """
        model_rdms = np.asarray(model_rdms, dtype=np.float64)
        if model_rdms.ndim == 2:
            model_rdms = model_rdms[None]
        n = model_rdms.shape[-1]
        if n == self.n_full:
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
        return self._checked(self._per_subject(self.model_vectors(model_rdms))).mean(axis=1)

    def _checked(self, values: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(values)):
            raise CellFailure(
                f"metric {getattr(self.metric, 'name', self.metric)!r} returned non-finite values for a model RDM; it "
                "cannot be scored"
            )
        return values

    def score_many(self, model_rdms: np.ndarray) -> list[Score]:
        """Full :class:`Score` per model RDM (p-value: t-test over subjects of the per-subject value)."""
        per_subject = self._checked(self._per_subject(self.model_vectors(model_rdms)))
        extra = {
            "p_value_test": "two-sided one-sample t-test over subjects of the per-subject value against 0",
            "ceiling_source": "computed from the data on the scored pairs (subjects pooled as rsatoolbox pool_rdm)",
        }
        return self._build(per_subject, per_subject, extra)

    def score(self, model_rdm: np.ndarray) -> Score:
        return self.score_many(model_rdm)[0]

    def _build(self, values: np.ndarray, signed: np.ndarray, extra: dict[str, Any]) -> list[Score]:
        """Scores from per-subject ``values`` ``(M, S)`` (and the signed correlations behind them)."""
        raw = values.mean(axis=1)
        alpha = (1.0 - CI_LEVEL) / 2.0
        lo, hi = np.quantile(values[:, self.bootstrap].mean(axis=2), [alpha, 1.0 - alpha], axis=1)
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
