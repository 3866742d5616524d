"""The ``algonauts2019`` scoring convention: the official Algonauts 2019 devkit (``testSub_fmri.py`` /
``testSub_meg.py``), a built-in plugin registered like any other (:mod:`rsabench.builtin.conventions`).

Per-subject value ``R²_s = (mean_k spearman(model, subject_s session_k))²`` (fMRI: one session), the
score is ``R² = mean_s R²_s``, ``%NC = 100·R²/NC`` with the devkit's hard-coded noise ceilings NC, and a
track score ``100·mean(R²_a, R²_b) / mean(NC_a, NC_b)`` (:func:`rsabench.conventions.track_score`). The
devkit's p-value is a two-sided one-sample t-test over subjects of the per-subject **R²** against 0
(``ttest_1samp(corr_squared, 0)``): R² is never negative, so it says little; the signed ρ and a t-test on
it are logged beside it (``extra``). Where the devkit has no constant (the hidden TS2 set, a subset of
images), NC is computed from the data the way the devkit's constants were: plain subject mean, squared
Spearman (they reproduce to 4 decimals).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy.stats import rankdata

from rsabench.errors import UsageError
from rsabench.rsa import unit_rows
from rsabench.scoring import BOOTSTRAP_SAMPLES, TargetScorer

SUMMARY = "Algonauts 2019 devkit: mean squared Spearman over subjects, % of the devkit's noise ceilings"

# Devkit noise ceilings (R², upper bound), keyed (modality, group, target): testSub_fmri.py / testSub_meg.py.
DEVKIT_NOISE_CEILINGS: dict[tuple[str, str, str], float] = {
    ("fmri", "92", "EVC"): 0.1589,
    ("fmri", "92", "IT"): 0.3075,
    ("fmri", "118", "EVC"): 0.1048,
    ("fmri", "118", "IT"): 0.0728,
    ("fmri", "78", "EVC"): 0.0640,
    ("fmri", "78", "IT"): 0.0647,
    ("meg", "92", "MEG-early"): 0.4634,
    ("meg", "92", "MEG-late"): 0.2275,
    ("meg", "118", "MEG-early"): 0.3468,
    ("meg", "118", "MEG-late"): 0.2265,
    ("meg", "78", "MEG-early"): 0.3562,
    ("meg", "78", "MEG-late"): 0.4452,
}
OFFICIAL_SIZES: dict[str, int] = {"92": 92, "118": 118, "78": 78}
"""Images per group in the release: a devkit constant applies only to RDMs of that size (the official data)."""
ALGONAUTS_MODALITY: dict[str, str] = {"algonauts-fmri": "fmri", "algonauts-meg": "meg"}
DEVKIT_P_VALUE = "two-sided one-sample t-test over subjects of the per-subject R² against 0 (as the devkit)"


def devkit_noise_ceiling(vectors: np.ndarray, prepared: np.ndarray | None = None) -> tuple[float, float]:
    """(lower, upper) R² ceilings of ``(subjects, repeats, pairs)`` RDM vectors, the devkit way.

    Upper: the model is the plain mean RDM of all subjects (and repeats), scored as a submission:
    ``mean_s (mean_k spearman(mean, subject_s session_k))²``. Lower: the same against the plain mean of
    the *other* subjects (leave one subject out). ``prepared``: the vectors' centred, unit-norm ranks
    (``SpearmanMetric.prepare``), when already computed.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    s, r, p = vectors.shape
    if prepared is None:
        prepared = unit_rows(rankdata(vectors, axis=-1))
    prepared = np.asarray(prepared).reshape(s, r, p)
    pooled = unit_rows(rankdata(vectors.mean(axis=(0, 1)))[None])[0]
    upper = float(np.mean(np.einsum("srp,p->sr", prepared, pooled).mean(axis=1) ** 2))
    if s < 2:
        return float("nan"), upper
    per_subject = vectors.sum(axis=1)  # (S, P)
    others = (per_subject.sum(axis=0)[None] - per_subject) / ((s - 1) * r)
    others = unit_rows(rankdata(others, axis=-1))
    lower = float(np.mean(np.einsum("srp,sp->sr", prepared, others).mean(axis=1) ** 2))
    return lower, upper


class Algonauts2019Scorer(TargetScorer):
    """The devkit's scoring: per-subject ``(mean over sessions of Spearman)²``; see module docstring.

    ``noise_ceiling``: the devkit constant (R²) to normalise by; ``None`` computes it from the data the
    devkit way (:func:`devkit_noise_ceiling`) on the scored pairs. The lower ceiling is always computed.
    """

    convention = "algonauts2019"
    p_value_test = DEVKIT_P_VALUE

    def __init__(
        self,
        rdms: np.ndarray,
        metric: Any,
        index: Sequence[int] | None = None,
        bootstrap_seed: int = 0,
        bootstrap_samples: int = BOOTSTRAP_SAMPLES,
        *,
        noise_ceiling: float | None = None,
    ) -> None:
        if getattr(metric, "name", None) != "spearman":
            raise UsageError(
                "the algonauts2019 convention is defined for the spearman metric, not "
                f"{getattr(metric, 'name', metric)!r} "
                "(use --metric spearman, or the computed convention)"
            )
        self.noise_ceiling_constant = noise_ceiling
        self.ceiling_source = (
            "devkit constant (testSub_*.py)"
            if noise_ceiling is not None
            else "computed from the data the devkit way (plain subject mean, squared Spearman) on the scored pairs"
        )
        super().__init__(rdms, metric, index, bootstrap_seed, bootstrap_samples)

    def values(self, signed: np.ndarray) -> np.ndarray:
        """``R²_s``: the square of each subject's signed Spearman (averaged over sessions first)."""
        return signed**2

    def _ceilings(self, total: np.ndarray | None) -> tuple[float, float]:
        lower, upper = devkit_noise_ceiling(self.vectors)
        self.computed_ceiling_upper = upper
        if self.noise_ceiling_constant is not None:
            upper = float(self.noise_ceiling_constant)
        return lower, upper

    def score_extra(self) -> dict[str, Any]:
        return {**super().score_extra(), "ceiling_upper_from_data": self.computed_ceiling_upper}


def devkit_constant(dataset_name: str, group: str, target: str) -> float | None:
    """The devkit's hard-coded noise ceiling for an Algonauts 2019 group/target, or None."""
    modality = ALGONAUTS_MODALITY.get(dataset_name)
    return DEVKIT_NOISE_CEILINGS.get((modality, group, target)) if modality else None


def scorer(
    *,
    dataset: Any,
    target: str,
    group: str,
    rdms: Any,
    metric: Any,
    index: Sequence[int] | None = None,
    bootstrap_seed: int = 0,
    bootstrap_samples: int = BOOTSTRAP_SAMPLES,
) -> Algonauts2019Scorer:
    """The convention's factory: the devkit constant only when every image of an official-size group is
    scored; otherwise the ceiling is computed from the data the devkit way on the scored pairs."""
    name = dataset if isinstance(dataset, str) else dataset.name
    if name not in ALGONAUTS_MODALITY:
        raise UsageError(
            f"the algonauts2019 convention applies to the Algonauts 2019 datasets "
            f"({', '.join(ALGONAUTS_MODALITY)}), not {name!r}; use the computed convention"
        )
    n = np.shape(rdms[0])[-1]
    whole = OFFICIAL_SIZES.get(group) == n and (
        index is None or np.array_equal(np.unique(np.asarray(index)), np.arange(n))
    )
    constant = devkit_constant(name, group, target) if whole else None
    return Algonauts2019Scorer(rdms, metric, index, bootstrap_seed, bootstrap_samples, noise_ceiling=constant)
