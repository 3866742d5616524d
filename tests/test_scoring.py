"""Scores, noise ceilings and bootstrap CIs (rsabench.scoring) against rsatoolbox, scipy and plain formulas."""

from __future__ import annotations

import itertools
import warnings
from importlib import resources

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from precision import F64, U64, gamma, mean_tolerance
from scipy.spatial.distance import squareform
from scipy.stats import spearmanr

from rsabench.errors import CellFailure
from rsabench.rsa import CosineMetric, KendallTauAMetric, PearsonMetric, SpearmanMetric, upper_tri
from rsabench.scoring import Score, TargetScorer, model_rdm_problem, paired_delta

pytest.importorskip("rsatoolbox")

METRICS = {
    "spearman": (SpearmanMetric, "spearman"),
    "pearson": (PearsonMetric, "corr"),
    "cosine": (CosineMetric, "cosine"),
    "kendall-tau-a": (KendallTauAMetric, "tau-a"),
}
SUBSET = np.arange(0, 92, 2)  # 46 of the 92 images: ceilings must be computed on exactly these pairs


@pytest.fixture(scope="module")
def rdms() -> np.ndarray:
    """Real human-IT RDMs (4 subjects x 2 sessions, 92 x 92), embedded in the package."""
    with np.load(str(resources.files("rsabench.data").joinpath("kriegeskorte2008.npz"))) as npz:
        return npz["rdms"].astype(np.float64)


@pytest.fixture(scope="module")
def animacy_rdm() -> np.ndarray:
    """Categorical model RDM: 0 within animate / inanimate, 1 across (many ties)."""
    with np.load(str(resources.files("rsabench.data").joinpath("kriegeskorte2008.npz"))) as npz:
        animate = npz["category_vectors"][:, 0]
    return (animate[:, None] != animate[None, :]).astype(np.float64)


def rsatoolbox_ceilings(rdms: np.ndarray, method: str, index: np.ndarray | None, by: str = "subject"):
    """rsatoolbox's ``boot_noise_ceiling`` with subjects (not single RDMs) as the left-out unit.

    For each subject it averages ``compare(pooled, that subject's RDMs)`` over the subject's sessions,
    then averages over subjects: the same quantity as TargetScorer's definition.
    """
    from rsatoolbox.inference import boot_noise_ceiling
    from rsatoolbox.rdm import RDMs

    s, r, n, _ = rdms.shape
    obj = RDMs(
        upper_tri(rdms).reshape(s * r, -1),
        rdm_descriptors={"subject": np.repeat(np.arange(s), r), "session": np.tile(np.arange(r), s)},
    )
    if index is not None:
        obj = obj.subsample_pattern("index", index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rsatoolbox warns that tau ceilings use averaged ranks
        lower, upper = boot_noise_ceiling(obj, method=method, rdm_descriptor=by)
    return float(lower), float(upper)


def pooled_full_rdm(scorer: TargetScorer) -> np.ndarray:
    """The pooled vector as a square RDM on the scored images."""
    flat = scorer.vectors.reshape(-1, scorer.vectors.shape[-1])
    return squareform(scorer.metric.pool(flat), checks=False)


# ------------------------------------------------------------------------------------------------
# noise ceilings
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("subset", [False, True], ids=["all-92", "subset-46"])
@pytest.mark.parametrize("name", list(METRICS))
def test_ceilings_match_rsatoolbox(name, subset, rdms):
    cls, method = METRICS[name]
    index = SUBSET if subset else None
    scorer = TargetScorer(rdms, cls(), index=index)
    lower, upper = rsatoolbox_ceilings(rdms, method, index)
    # float64 correlations (|r| <= 1) over <= 4186 pairs, means of 8, rsatoolbox vs us: precision.F64
    assert scorer.ceiling_upper == pytest.approx(upper, abs=F64)
    assert scorer.ceiling_lower == pytest.approx(lower, abs=F64)
    assert scorer.ceiling_lower < scorer.ceiling_upper
    # leaving out single RDMs (sessions) instead of subjects is a different quantity: the test can tell
    lower_by_rdm, _ = rsatoolbox_ceilings(rdms, method, index, by="index")
    assert abs(scorer.ceiling_lower - lower_by_rdm) > 1e-4  # a separation, 1e8 x the F64 rounding above


def test_spearman_ceilings_plain_reference(rdms):
    """The definition written out with scipy: mean ranks pooled, metric per (subject, session)."""
    from scipy.stats import rankdata

    vecs = upper_tri(rdms)  # (4, 2, P)
    ranks = rankdata(vecs, axis=-1)
    pooled = ranks.reshape(8, -1).mean(axis=0)
    upper = np.mean([np.mean([spearmanr(pooled, vecs[s, k])[0] for k in range(2)]) for s in range(4)])
    lower = np.mean(
        [
            np.mean([spearmanr(np.delete(ranks, s, axis=0).reshape(6, -1).mean(axis=0), vecs[s, k])[0] for k in (0, 1)])
            for s in range(4)
        ]
    )
    scorer = TargetScorer(rdms, SpearmanMetric())
    # float64, 4186-term Spearman correlations (ranks exact), scipy vs us: precision.F64
    assert scorer.ceiling_upper == pytest.approx(upper, abs=F64)
    assert scorer.ceiling_lower == pytest.approx(lower, abs=F64)
    # published-scale sanity: Kriegeskorte hIT is noisy but clearly above 0
    assert 0.2 < scorer.ceiling_lower < scorer.ceiling_upper < 0.7


@pytest.mark.parametrize("subset", [False, True], ids=["all-92", "subset-46"])
@pytest.mark.parametrize("name", list(METRICS))
def test_pooled_rdm_scores_exactly_the_upper_ceiling(name, subset, rdms):
    cls, _ = METRICS[name]
    scorer = TargetScorer(rdms, cls(), index=SUBSET if subset else None)
    pooled = pooled_full_rdm(scorer)
    if subset:  # embed in a full 92 x 92 RDM: only the scored pairs may matter
        full = np.random.default_rng(0).random((92, 92))
        full[np.ix_(SUBSET, SUBSET)] = pooled
        pooled = full
    score = scorer.score(pooled)
    # the same float64 operations on the same pooled vector (squareform/sub_rdm only copy), up to the order of
    # the 4-subject mean: far within precision.F64, relative (the ceiling is 0.2..0.7)
    assert score.raw == pytest.approx(scorer.ceiling_upper, rel=F64)
    assert score.normalized == pytest.approx(100.0, rel=F64)
    assert score.ceiling_upper == scorer.ceiling_upper and score.ceiling_lower == scorer.ceiling_lower


# ------------------------------------------------------------------------------------------------
# scores
# ------------------------------------------------------------------------------------------------
def test_score_per_subject_is_mean_over_sessions_then_subjects(rdms, animacy_rdm):
    scorer = TargetScorer(rdms, SpearmanMetric(), bootstrap_seed=3)
    model = upper_tri(animacy_rdm)
    expected = np.array([np.mean([spearmanr(model, upper_tri(rdms[s, k]))[0] for k in range(2)]) for s in range(4)])
    score = scorer.score(animacy_rdm)
    # float64, 4186-term Spearman correlations (|r| <= 1), scipy vs us: precision.F64
    np.testing.assert_allclose(score.per_subject, expected, rtol=0, atol=F64)
    assert score.raw == pytest.approx(expected.mean(), abs=F64)
    assert score.rho == score.raw
    # raw is off by <= F64, the ceiling is the same number on both sides: 100·F64/ceiling
    tol = 100 * F64 / scorer.ceiling_upper
    assert score.normalized == pytest.approx(100 * expected.mean() / scorer.ceiling_upper, abs=tol)
    assert (score.n_subjects, score.n_images, score.metric, score.convention) == (4, 92, "spearman", "computed")
    assert Score.from_dict(score.to_dict()) == score


def test_score_many_matches_single_scores(rdms, animacy_rdm):
    scorer = TargetScorer(rdms, PearsonMetric(), index=SUBSET)
    models = np.stack([animacy_rdm, rdms[0, 0], rdms[3, 1]])
    many = scorer.score_many(models)
    assert len(many) == 3
    for m, s in zip(models, many, strict=True):
        single = scorer.score(m)
        # one model (gemv) vs three (gemm): 1035-term unit-vector inner products in another order differ by up to
        # 2·gamma_p(1035) ≈ 5.7e-14, quantiles of means by no more: precision.F64
        assert single.raw == pytest.approx(s.raw, abs=F64)
        assert (single.ci_low, single.ci_high) == pytest.approx((s.ci_low, s.ci_high), abs=F64)
    np.testing.assert_allclose(scorer.raw_values(models), [s.raw for s in many], rtol=0, atol=F64)


@pytest.fixture(scope="module")
def pearson_scorer(rdms) -> TargetScorer:
    return TargetScorer(rdms, PearsonMetric(), index=np.arange(40))


@pytest.fixture(scope="module")
def cosine_scorer(rdms) -> TargetScorer:
    return TargetScorer(rdms, CosineMetric(), index=np.arange(40))


def candidate_rdm(scorer: TargetScorer, seed: int, kind: str, scale: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = scorer.vectors.shape[-1]
    if kind == "random":
        vec = rng.standard_normal(p) * scale + rng.uniform(-5, 5)
    elif kind == "perturbed-pool":
        vec = scorer.metric.pool(scorer.vectors.reshape(-1, p)) + scale * rng.standard_normal(p)
    else:  # random mixture of the subject RDMs themselves
        w = rng.dirichlet(np.ones(scorer.vectors.shape[0] * scorer.vectors.shape[1]))
        vec = w @ scorer.vectors.reshape(-1, p) + scale * 1e-2 * rng.standard_normal(p)
    assume(model_rdm_problem(vec) is None)  # a constant candidate has no score (see test_constant_rdm_has_no_score)
    return squareform(vec, checks=False)


CANDIDATES = dict(
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["random", "perturbed-pool", "subject-mixture"]),
    scale=st.floats(0.0, 10.0, allow_nan=False),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**CANDIDATES)
def test_pearson_nothing_scores_above_the_upper_ceiling(pearson_scorer, seed, kind, scale):
    """The pooled z-scored RDM maximises the mean Pearson r over subjects: the ceiling is an upper bound."""
    raw = pearson_scorer.raw_values(candidate_rdm(pearson_scorer, seed, kind, scale))[0]
    # both sides float64 correlations over 780 pairs, each off by far less than F64: a centring error of a
    # near-constant candidate is a constant shift, orthogonal to the centred subjects
    assert raw <= pearson_scorer.ceiling_upper + F64


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**CANDIDATES)
def test_cosine_nothing_scores_above_the_upper_ceiling(cosine_scorer, seed, kind, scale):
    raw = cosine_scorer.raw_values(candidate_rdm(cosine_scorer, seed, kind, scale))[0]
    assert raw <= cosine_scorer.ceiling_upper + F64  # float64 unit-vector inner products, 780 terms: precision.F64


@pytest.mark.parametrize("metric", [SpearmanMetric(), PearsonMetric(), CosineMetric(), KendallTauAMetric()])
@pytest.mark.parametrize("bad", ["ones", "zeros", "nan", "inf", "float-noise"])
def test_constant_or_non_finite_rdm_has_no_score(rdms, metric, bad):
    """A constant model RDM (constant or identical features) or a NaN one gets a failure, never 0.0 with a
    zero-width CI (what ranking all-tied values would give)."""
    n = rdms.shape[-1]
    rdm = {"ones": 1.0 - np.eye(n), "zeros": np.zeros((n, n))}.get(bad)
    if rdm is None:
        rdm = 1.0 - np.eye(n)
        if bad == "float-noise":  # identical features through float32 arithmetic: spread ~1e-7
            noise = np.random.default_rng(0).uniform(0, 1e-7, (n, n))
            rdm = rdm + np.triu(noise, 1) + np.triu(noise, 1).T
        else:
            rdm[3, 5] = rdm[5, 3] = np.nan if bad == "nan" else np.inf
    scorer = TargetScorer(rdms, metric)
    assert model_rdm_problem(rdm) is not None
    for call in (scorer.score, scorer.raw_values, scorer.score_many):
        with pytest.raises(CellFailure, match="constant|non-finite"):
            call(rdm)
    structured = rdm.copy()
    structured[np.isfinite(structured) == False] = 1.0  # noqa: E712
    structured[0, 1] = structured[1, 0] = 0.5  # one pair differs by far more than float noise
    assert model_rdm_problem(structured) is None


# ------------------------------------------------------------------------------------------------
# bootstrap confidence intervals
# ------------------------------------------------------------------------------------------------
def test_bootstrap_ci_is_seeded(rdms, animacy_rdm):
    a = TargetScorer(rdms, SpearmanMetric(), bootstrap_seed=11).score(animacy_rdm)
    b = TargetScorer(rdms, SpearmanMetric(), bootstrap_seed=11).score(animacy_rdm)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)  # same seed, same operations on the same inputs: exact

    # with 15 subjects the resample means are nearly continuous: another seed moves the interval
    rng = np.random.default_rng(0)
    base = rng.random((20, 20))
    base = base + base.T
    subjects = base + rng.random((15, 1, 20, 20))
    subjects = subjects + np.swapaxes(subjects, -1, -2)
    subjects[..., np.arange(20), np.arange(20)] = 0.0

    def ci(seed: int) -> tuple[float, float]:
        s = TargetScorer(subjects, PearsonMetric(), bootstrap_seed=seed).score(base)
        return s.ci_low, s.ci_high

    assert ci(1) == ci(1)
    assert ci(1) != ci(2)


def exact_bootstrap_quantiles(values: np.ndarray, qs: list[float]) -> np.ndarray:
    """Quantiles of the exact bootstrap distribution of the mean (all n^n resamples, equally likely)."""
    n = len(values)
    means = np.sort([np.mean(values[list(idx)]) for idx in itertools.product(range(n), repeat=n)])
    return np.quantile(means, qs, method="inverted_cdf")


@pytest.mark.parametrize("which", ["animacy", "subject-rdm", "pooled"])
def test_bootstrap_ci_brackets_raw_and_matches_exact_bootstrap(which, rdms, animacy_rdm):
    scorer = TargetScorer(rdms, SpearmanMetric(), bootstrap_seed=0)
    model = {"animacy": animacy_rdm, "subject-rdm": rdms[1, 0], "pooled": pooled_full_rdm(scorer)}[which]
    score = scorer.score(model)
    assert score.ci_low < score.raw < score.ci_high
    per = np.asarray(score.per_subject)
    # a bootstrap mean equal in exact arithmetic to a bound may be summed in another order (resample (b, a, a, a)
    # vs the enumerated (a, a, a, b)): it may differ by a few ulps
    tol = mean_tolerance(per, U64)
    assert per.min() - tol <= score.ci_low and score.ci_high <= per.max() + tol
    # 1000 seeded Monte-Carlo resamples approximate the exact 95 % percentile interval of 4^4 resamples
    q01, q05, q95, q99 = exact_bootstrap_quantiles(per, [0.01, 0.05, 0.95, 0.99])
    assert q01 - tol <= score.ci_low <= q05 + tol
    assert q95 - tol <= score.ci_high <= q99 + tol


def test_paired_delta_of_a_score_with_itself_is_zero(rdms, animacy_rdm):
    score = TargetScorer(rdms, SpearmanMetric()).score(animacy_rdm)
    assert paired_delta(score, score) == (0.0, 0.0, 0.0)  # exact: x - x = 0, and means of zeros are 0
    assert paired_delta(score, score, seed=5, samples=200) == (0.0, 0.0, 0.0)


def test_paired_delta_is_paired_and_seeded(rdms, animacy_rdm):
    scorer = TargetScorer(rdms, SpearmanMetric())
    a = scorer.score(rdms[0, 0])
    b = scorer.score(animacy_rdm)
    delta, lo, hi = paired_delta(a, b, seed=4)
    # mean(a - b) vs mean(a) - mean(b), 4 float64 values |v| <= 1: <= 2·gamma(5)·(1 + 1) ≈ 2.2e-15
    assert delta == pytest.approx(a.raw - b.raw, abs=4 * gamma(5, U64))
    assert lo < delta < hi
    assert paired_delta(a, b, seed=4) == (delta, lo, hi)  # same seed, same operations: exact
    # a constant per-subject shift has no paired uncertainty (an unpaired bootstrap would give a wide CI)
    shifted = Score.from_dict({**b.to_dict(), "per_subject": [v - 0.1 for v in b.per_subject]})
    d, lo, hi = paired_delta(b, shifted, seed=4)
    # v - (v - 0.1) with |v| <= 1 is 0.1 to a few ulps, and so are means/quantiles of it: precision.F64 is ample,
    # and an unpaired bootstrap would widen the interval by O(0.01)
    assert d == pytest.approx(0.1, abs=F64)
    assert lo == pytest.approx(0.1, abs=F64) and hi == pytest.approx(0.1, abs=F64)


# ------------------------------------------------------------------------------------------------
# the convention hook: values(signed)
# ------------------------------------------------------------------------------------------------
class CubedScorer(TargetScorer):
    """A convention that only overrides ``values``: an odd, non-linear transform keeps the sign visible."""

    convention = "toy-cubed"
    ceiling_source = "toy: cubed correlations with the pooled RDM"

    def values(self, signed: np.ndarray) -> np.ndarray:
        return signed**3


def test_values_hook_transforms_scores_and_ceilings_but_never_rho(rdms, animacy_rdm):
    from scipy.stats import rankdata

    model = 1.0 - animacy_rdm  # anti-correlated with IT: negative rho
    score = CubedScorer(rdms, SpearmanMetric()).score(model)
    plain = TargetScorer(rdms, SpearmanMetric()).score(model)
    vecs = upper_tri(rdms)
    signed = np.array([np.mean([spearmanr(upper_tri(model), vecs[s, k])[0] for k in range(2)]) for s in range(4)])
    ranks = rankdata(vecs, axis=-1)
    pooled = ranks.reshape(8, -1).mean(axis=0)  # rsatoolbox pool_rdm for Spearman: the mean rank
    upper = np.mean([np.mean([spearmanr(pooled, vecs[s, k])[0] for k in range(2)]) ** 3 for s in range(4)])
    others = [np.delete(ranks, s, axis=0).reshape(6, -1).mean(axis=0) for s in range(4)]
    lower = np.mean([np.mean([spearmanr(others[s], vecs[s, k])[0] for k in range(2)]) ** 3 for s in range(4)])
    assert np.all(signed < 0)
    # float64 Spearman over 4186 pairs, |r| <= 1, scipy vs us: precision.F64; cubing: |(r + e)³ - r³| <= 3|e| + O(e²)
    np.testing.assert_allclose(score.extra["rho_per_subject"], signed, rtol=0, atol=F64)
    assert score.rho == pytest.approx(signed.mean(), abs=F64) and score.rho == plain.rho  # same operations: exact
    np.testing.assert_allclose(score.per_subject, signed**3, rtol=0, atol=3 * F64)
    assert score.raw == pytest.approx(np.mean(signed**3), abs=3 * F64)
    assert score.ceiling_upper == pytest.approx(upper, abs=3 * F64)
    assert score.ceiling_lower == pytest.approx(lower, abs=3 * F64)
    assert score.extra["ceiling_source"] == CubedScorer.ceiling_source and score.convention == "toy-cubed"
    np.testing.assert_allclose(
        CubedScorer(rdms, SpearmanMetric()).raw_values(np.stack([model, animacy_rdm])),
        [score.raw, -score.raw],  # cubing is odd and 1 - animacy ranks exactly reversed: the same numbers negated
        rtol=0,
        atol=3 * F64,
    )


def test_values_of_the_wrong_shape_are_a_plugin_error(rdms, animacy_rdm):
    from rsabench.errors import PluginError

    class Broken(TargetScorer):
        convention = "toy-broken"

        def values(self, signed: np.ndarray) -> np.ndarray:
            return signed.mean(axis=1)

    with pytest.raises(PluginError, match=r"convention 'toy-broken': values\(\) returned shape \(1,\)"):
        Broken(rdms, SpearmanMetric())
