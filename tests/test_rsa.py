"""RSA engine (rsabench.rsa) against independent references: scipy and rsatoolbox."""

from __future__ import annotations

import warnings
from importlib import resources

import numpy as np
import pytest
import torch
from precision import F64, U32, U64, central_difference_tolerance, correlation_distance_tolerance
from scipy.spatial.distance import cosine as scipy_cosine
from scipy.spatial.distance import pdist, squareform
from scipy.stats import pearsonr, rankdata, spearmanr

from rsabench.rsa import (
    CosineMetric,
    KendallTauAMetric,
    PearsonMetric,
    SpearmanMetric,
    correlation_rdm,
    correlation_rdm_numpy,
    rank_rows,
    sub_rdm,
    upper_tri,
)

rsatoolbox_rdm = pytest.importorskip("rsatoolbox.rdm")

METRICS = {
    "spearman": (SpearmanMetric, "spearman"),
    "pearson": (PearsonMetric, "corr"),
    "cosine": (CosineMetric, "cosine"),
    "kendall-tau-a": (KendallTauAMetric, "tau-a"),
}


def scipy_value(name: str, x: np.ndarray, y: np.ndarray) -> float:
    """The plain scipy definition of each metric (independent of rsabench)."""
    if name == "spearman":
        return float(spearmanr(x, y)[0])
    if name == "pearson":
        return float(pearsonr(x, y)[0])
    if name == "cosine":
        return float(1.0 - scipy_cosine(x, y))
    # tau-a: (concordant - discordant) / all pairs, textbook O(P^2) written out here
    p = len(x)
    s = sum(float(np.sum(np.sign(x[i] - x[i + 1 :]) * np.sign(y[i] - y[i + 1 :]))) for i in range(p))
    return s / (p * (p - 1) / 2)


@pytest.fixture(scope="module")
def kriegeskorte_rdms() -> np.ndarray:
    """Real human-IT RDMs (4 subjects, 2 sessions, 92, 92), embedded in the package."""
    with np.load(str(resources.files("rsabench.data").joinpath("kriegeskorte2008.npz"))) as npz:
        rdms = npz["rdms"].astype(np.float64)
    assert rdms.shape == (4, 2, 92, 92)
    return rdms


@pytest.fixture(scope="module")
def kriegeskorte_category() -> np.ndarray:
    with np.load(str(resources.files("rsabench.data").joinpath("kriegeskorte2008.npz"))) as npz:
        return npz["category_vectors"].astype(np.float64)


def structured_features(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Features with a shared component of varying weight: distances span ~0.05 to ~1.9."""
    n = shape[0]
    d = int(np.prod(shape[1:]))
    common = rng.standard_normal(d)
    weights = rng.uniform(-3.0, 3.0, size=(n, 1))
    x = weights * common + rng.standard_normal((n, d)) + rng.uniform(-2, 2, size=(n, 1))  # per-image offsets
    return x.reshape(shape)


def pdist_rdm(x: np.ndarray) -> np.ndarray:
    return squareform(pdist(np.asarray(x, dtype=np.float64).reshape(len(x), -1), metric="correlation"))


# ------------------------------------------------------------------------------------------------
# correlation RDMs
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(20, 50), (12, 8, 5, 5), (7, 3, 4, 6)])
def test_correlation_rdm_matches_pdist(shape):
    rng = np.random.default_rng(sum(shape))
    x = structured_features(rng, shape)
    ref = pdist_rdm(x)
    assert ref.min() < 0.3 and ref.max() > 1.5  # a wide range of distances is exercised

    got64 = correlation_rdm(torch.from_numpy(x)).numpy()
    assert got64.dtype == np.float64
    np.testing.assert_allclose(got64, ref, rtol=0, atol=F64)  # float64 both ways, <= 300 terms: precision.F64

    # float32 by design: the bound of that computation on these features
    tol = correlation_distance_tolerance(x, U32)
    assert tol < 1e-3  # still far below what a wrong formula moves (no centring, wrong pairing: >= 1e-2)
    got32 = correlation_rdm(torch.from_numpy(x).float()).numpy()
    np.testing.assert_allclose(got32, ref, rtol=0, atol=tol)

    got_np = correlation_rdm_numpy(x)
    assert got_np.dtype == np.float32
    np.testing.assert_allclose(got_np, ref, rtol=0, atol=tol)


def test_correlation_rdm_scale_invariant_for_small_activations():
    """Correlation ignores scale; a ``norm + eps`` denominator would bias low-magnitude layers."""
    rng = np.random.default_rng(1)
    x = structured_features(rng, (10, 64)) * 1e-6
    # float64, 64 terms; rounding is relative, so the scale of x does not enter: precision.F64
    np.testing.assert_allclose(correlation_rdm(torch.from_numpy(x)).numpy(), pdist_rdm(x), rtol=0, atol=F64)


@pytest.mark.parametrize("impl", ["torch32", "torch64", "numpy"])
def test_correlation_rdm_is_batch_independent(impl):
    rng = np.random.default_rng(2)
    x = structured_features(rng, (40, 6, 7, 7))
    subset = np.sort(rng.choice(40, size=13, replace=False))

    def rdm(a: np.ndarray) -> np.ndarray:
        if impl == "numpy":
            return correlation_rdm_numpy(a).astype(np.float64)
        dtype = torch.float32 if impl == "torch32" else torch.float64
        return correlation_rdm(torch.from_numpy(a).to(dtype)).numpy().astype(np.float64)

    full, part = rdm(x), rdm(x[subset])
    # two evaluations, each within correlation_distance_tolerance of the exact RDM (40 vs 13 rows may block the
    # Gram product differently); in float32 the Gram alone may differ by 2·gamma_p(294) ≈ 1.6e-5
    tol = F64 if impl == "torch64" else 2 * correlation_distance_tolerance(x, U32)
    assert tol < 1e-3  # far below what a batch-dependent normalisation (across images) moves: O(0.1)
    np.testing.assert_allclose(part, full[np.ix_(subset, subset)], rtol=0, atol=tol)
    np.testing.assert_allclose(part, sub_rdm(full, subset), rtol=0, atol=tol)


@pytest.mark.parametrize("impl", ["torch32", "numpy"])
def test_correlation_rdm_symmetric_zero_diagonal(impl):
    x = structured_features(np.random.default_rng(3), (33, 100)).astype(np.float32)
    r = correlation_rdm_numpy(x) if impl == "numpy" else correlation_rdm(torch.from_numpy(x)).numpy()
    assert np.array_equal(r, r.T)  # exact by construction: 0.5·(a + b) is commutative, the diagonal is filled
    assert np.all(np.diag(r) == 0.0)


@pytest.mark.parametrize("fill", [0.0, 0.7], ids=["all-zero", "constant"])
@pytest.mark.parametrize("impl", ["torch32", "torch64", "torch32-autograd", "numpy"])
def test_correlation_rdm_all_zero_map(impl, fill):
    x = structured_features(np.random.default_rng(4), (6, 3, 4, 4))
    x[2] = fill
    if impl == "numpy":
        r = correlation_rdm_numpy(x)
    else:
        t = torch.from_numpy(x).to(torch.float64 if impl == "torch64" else torch.float32)
        r = correlation_rdm(t.requires_grad_(impl.endswith("autograd"))).detach().numpy()
    assert np.all(np.isfinite(r))
    others = np.delete(np.arange(6), 2)
    # exactly 1 for an all-zero map (a zero row: 1 - 0, halved and doubled, all exact); for a constant map the
    # centring residual is itself constant, orthogonal to every exactly centred row: 1 up to the rounding of the
    # others' unit rows and of the inner product, which correlation_distance_tolerance bounds
    u = U64 if impl == "torch64" else U32
    tol = 0.0 if fill == 0.0 else correlation_distance_tolerance(x[others], u)
    np.testing.assert_allclose(r[2, others], 1.0, rtol=0, atol=tol)
    np.testing.assert_allclose(r[others, 2], 1.0, rtol=0, atol=tol)
    assert r[2, 2] == 0.0
    # the other entries are untouched by the zero map
    tol = correlation_distance_tolerance(x[others], u)
    assert tol < 1e-3  # far below what a zero map leaking into the others would move (O(0.1))
    np.testing.assert_allclose(r[np.ix_(others, others)], pdist_rdm(x[others]), rtol=0, atol=tol)


def test_correlation_rdm_inference_and_autograd_paths_agree():
    """Without autograd the CPU path runs numpy's syrk; with autograd torch's matmul: same RDM."""
    x = torch.from_numpy(structured_features(np.random.default_rng(12), (30, 2, 5, 5)))
    # two computations (syrk vs matmul), each within correlation_distance_tolerance of the exact RDM: twice it
    for dtype, u in [(torch.float64, U64), (torch.float32, U32)]:
        tol = 2 * correlation_distance_tolerance(x.numpy(), u)
        assert tol < 1e-3  # far below what a different formula on one path would move (O(0.1))
        xd = x.to(dtype)
        with torch.no_grad():
            fast = correlation_rdm(xd.clone().requires_grad_(True))
        graph = correlation_rdm(xd.clone().requires_grad_(True))
        assert graph.requires_grad and not fast.requires_grad
        assert fast.dtype == graph.dtype == dtype
        np.testing.assert_allclose(fast.numpy(), graph.detach().numpy(), rtol=0, atol=tol)
    half = correlation_rdm(x.to(torch.bfloat16))  # a dtype numpy lacks falls back to torch
    assert half.dtype == torch.bfloat16


def centred_norms(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1)
    return np.linalg.norm(x - x.mean(axis=1, keepdims=True), axis=1)


def test_correlation_rdm_gradcheck():
    x = torch.from_numpy(structured_features(np.random.default_rng(5), (5, 2, 3, 2))).requires_grad_(True)
    # torch's central differences, float64: moving x[i, k] moves the centred row c_i by v, |v| <= 1; for
    # n(c) = c/|c|, |n'| <= 1/|c| and |n'''| <= 3/|c|^3, so each RDM entry has slope <= 1/r and f''' <= 3/r^3
    h, xn = 1e-6, x.detach().numpy()
    r = centred_norms(xn).min() - h
    tol = central_difference_tolerance(h, correlation_distance_tolerance(xn, U64), 1 / r, 3 / r**3, np.abs(xn).max())
    tol += F64  # the analytical (autograd, float64) side
    assert tol < 1e-6  # far below a wrong gradient (a missing centring or projection term moves it by O(0.1))
    assert torch.autograd.gradcheck(correlation_rdm, (x,), eps=h, atol=tol, rtol=0)


def test_correlation_rdm_gradient_matches_finite_differences_of_pdist():
    """An independent check of the gradient: central differences of scipy's pdist."""
    x = structured_features(np.random.default_rng(6), (4, 6))
    w = np.random.default_rng(7).standard_normal((4, 4))
    xt = torch.from_numpy(x).requires_grad_(True)
    (correlation_rdm(xt) * torch.from_numpy(w)).sum().backward()
    num = np.zeros_like(x)
    h = 1e-6
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num[idx] = ((pdist_rdm(xp) - pdist_rdm(xm)) * w).sum() / (2 * h)
    # f = sum w_ij d_ij; moving x[i, k] moves d_ij and d_ji: slope <= sum_j |w_ij + w_ji| / r_i, f''' <= 3x that / r_i^2
    # (see test_correlation_rdm_gradcheck); each f evaluation: 16 entries within their float64 bound, 16-term sum
    wij = np.abs(w + w.T)
    np.fill_diagonal(wij, 0.0)
    r = centred_norms(x) - h
    value_error = np.abs(w).sum() * (correlation_distance_tolerance(x, U64) + 2 * U64 * 16)
    slope, third = (wij.sum(axis=1) / r).max(), (3 * wij.sum(axis=1) / r**3).max()
    tol = central_difference_tolerance(h, value_error, slope, third, np.abs(x).max()) + F64
    assert tol < 1e-3 * np.abs(num).max()  # far below a wrong gradient (a missing term moves it by O(|grad|))
    np.testing.assert_allclose(xt.grad.numpy(), num, rtol=0, atol=tol)


def test_correlation_rdm_all_zero_map_has_finite_bounded_gradient():
    """A dead (all-zero) map must not blow up training: its gradient is 0, the others' are finite."""
    x = structured_features(np.random.default_rng(8), (5, 12))
    x[0] = 0.0
    xt = torch.from_numpy(x).requires_grad_(True)
    correlation_rdm(xt).sum().backward()
    g = xt.grad.numpy()
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g[0], 0.0)  # exact: the masked branch of the double `where` passes zeros
    # gradients of the live rows equal those without the dead row (its distances are constant 1)
    live = torch.from_numpy(x[1:]).requires_grad_(True)
    correlation_rdm(live).sum().backward()
    # float64 gradients (|g| <= 2·4/|c_i| = O(1)) of the same sums, 12-term rows, computed two ways: precision.F64
    np.testing.assert_allclose(g[1:], live.grad.numpy(), rtol=0, atol=F64)


# ------------------------------------------------------------------------------------------------
# RDM vectors
# ------------------------------------------------------------------------------------------------
def test_upper_tri_is_squareform_order_numpy_and_torch():
    rng = np.random.default_rng(9)
    n = 7
    sym = rng.random((3, 2, n, n))
    sym = sym + np.swapaxes(sym, -1, -2)
    sym[..., np.arange(n), np.arange(n)] = 0.0
    vec = upper_tri(sym)  # indexing only: every comparison below is exact
    assert vec.shape == (3, 2, n * (n - 1) // 2)
    for a in range(3):
        for b in range(2):
            np.testing.assert_array_equal(vec[a, b], squareform(sym[a, b]))
            np.testing.assert_array_equal(squareform(vec[a, b]), sym[a, b])  # round trip
    tvec = upper_tri(torch.from_numpy(sym))
    assert isinstance(tvec, torch.Tensor)
    np.testing.assert_array_equal(tvec.numpy(), vec)

    # an asymmetric matrix tells the upper from the lower triangle: row-major i<j
    m = np.arange(n * n, dtype=float).reshape(n, n)
    expected = [m[i, j] for i in range(n) for j in range(i + 1, n)]
    np.testing.assert_array_equal(upper_tri(m), expected)
    np.testing.assert_array_equal(upper_tri(m), squareform(m, checks=False))
    np.testing.assert_array_equal(upper_tri(torch.from_numpy(m)).numpy(), expected)


def test_upper_tri_keeps_autograd():
    x = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    upper_tri(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.triu(np.ones((5, 5)), 1))


def test_rank_rows_average_ties():
    # ranks are multiples of 1/2 far below 2^53: exact in float64, so equality is exact
    x = np.array([[3.0, 1.0, 3.0, 2.0, 3.0], [0.5, 0.5, 0.1, 0.9, 0.1]])
    np.testing.assert_array_equal(rank_rows(x), [[4.0, 1.0, 4.0, 2.0, 4.0], [3.5, 3.5, 1.5, 5.0, 1.5]])


@pytest.mark.parametrize(
    "x",
    [
        np.random.default_rng(0).random(4186),
        np.round(np.random.default_rng(1).random((15, 300)) * 5),  # many ties
        np.round(np.random.default_rng(2).standard_normal((3, 2, 40)), 1),
        np.array([[1.0, np.nan, 2.0], [3.0, 3.0, 1.0]]),  # a NaN row propagates, as in scipy
        np.array([[-0.0, 0.0, np.inf, -np.inf, np.inf, 7.0]]),
        np.array([2.5]),
    ],
)
def test_rank_rows_equals_scipy_rankdata(x):
    np.testing.assert_array_equal(rank_rows(x), rankdata(x, axis=-1, method="average"))


# ------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------
def random_vectors(rng: np.random.Generator, base: np.ndarray, k: int, ties: bool) -> np.ndarray:
    """``k`` noisy copies of ``base`` (correlations well away from 0), optionally with many ties."""
    v = rng.random((k, len(base))) + base
    return np.round(v * 3) / 3 if ties else v  # ~7 distinct values: many ties


def rsatoolbox_compare(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    from rsatoolbox.rdm import RDMs, compare

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compare(RDMs(np.atleast_2d(x)), RDMs(np.atleast_2d(y)), method=method)


@pytest.mark.parametrize("ties", [False, True], ids=["no-ties", "ties"])
@pytest.mark.parametrize("name", list(METRICS))
def test_metric_compare_matches_scipy_and_rsatoolbox_random(name, ties):
    cls, rt_method = METRICS[name]
    metric = cls()
    rng = np.random.default_rng(10 + int(ties))
    p = 15 * 14 // 2
    base = rng.random(p)
    models = random_vectors(rng, base, 3, ties)
    subjects = random_vectors(rng, base, 5, ties)
    got = metric.compare(models, metric.prepare(subjects))
    assert got.shape == (3, 5)
    ref = np.array([[scipy_value(name, m, s) for s in subjects] for m in models])
    assert np.abs(ref).max() > 0.2  # the comparison is not trivially ~0
    # float64, |values| <= 2, 105-term inner products (ranks exact; tau-a from counts), two ways: precision.F64
    np.testing.assert_allclose(got, ref, rtol=0, atol=F64)
    np.testing.assert_allclose(got, rsatoolbox_compare(models, subjects, rt_method), rtol=0, atol=F64)
    for m in range(3):
        for s in range(5):
            assert metric.reference(models[m], subjects[s]) == pytest.approx(got[m, s], abs=F64)
    # one model given as a 1-D vector: gemv instead of gemm, another summation order; may differ by
    # 2·(unit-row bound) + 2·gamma_p(105) ≈ 1.3e-13: precision.F64
    np.testing.assert_allclose(metric.compare(models[0], metric.prepare(subjects)), got[:1], rtol=0, atol=F64)


@pytest.mark.parametrize("name", list(METRICS))
def test_metric_compare_on_kriegeskorte(name, kriegeskorte_rdms, kriegeskorte_category):
    """Real data: all 8 subject-session RDMs against each other and a categorical (heavily tied) model."""
    cls, rt_method = METRICS[name]
    metric = cls()
    vecs = upper_tri(kriegeskorte_rdms).reshape(8, -1)
    animate = kriegeskorte_category[:, 0]  # first category vector: animate vs inanimate
    animacy_model = upper_tri((animate[:, None] != animate[None, :]).astype(float))
    models = np.vstack([vecs[[0, 5]], animacy_model])
    got = metric.compare(models, metric.prepare(vecs))
    ref_rt = rsatoolbox_compare(models, vecs, rt_method)
    # float64, |values| <= 1 after normalisation, 4186-term inner products, two ways: precision.F64
    np.testing.assert_allclose(got, ref_rt, rtol=0, atol=F64)
    # scipy / reference on a few pairs (the tau-a textbook loop is O(P^2): keep it to a handful)
    for m, s in [(0, 1), (1, 7), (2, 3)]:
        assert scipy_value(name, models[m], vecs[s]) == pytest.approx(got[m, s], abs=F64)
        assert metric.reference(models[m], vecs[s]) == pytest.approx(got[m, s], abs=F64)
    if name != "kendall-tau-a":  # tau-a of a vector with ties against itself is < 1 by definition
        assert got[0, 0] == pytest.approx(1.0, abs=F64)  # a unit row with itself: 1 + O(gamma_p(4186))
    # known structure: human IT separates animate from inanimate (positive correlation with the model)
    assert np.all(got[2] > 0.05)


def test_kendall_tau_a_constant_vector_is_zero():
    metric = KendallTauAMetric()
    y = np.random.default_rng(11).random((2, 10))
    np.testing.assert_array_equal(metric.compare(np.ones(10), metric.prepare(y)), 0.0)  # exact: the all-tied branch
    assert metric.reference(np.ones(10), y[0]) == 0.0


@pytest.mark.parametrize("name", ["spearman", "pearson", "cosine"])
def test_metric_pool_matches_rsatoolbox_pool_rdm(name, kriegeskorte_rdms):
    """Pooled RDM as rsatoolbox's ``pool_rdm`` (up to an affine map that leaves the metric unchanged)."""
    from rsatoolbox.rdm import RDMs
    from rsatoolbox.util.inference_util import pool_rdm

    cls, rt_method = METRICS[name]
    metric = cls()
    vecs = upper_tri(kriegeskorte_rdms).reshape(8, -1)
    ours = metric.pool(vecs)
    theirs = pool_rdm(RDMs(vecs), method=rt_method).get_vectors()[0]
    if name == "spearman":
        # identical mean ranks: sums of 8 half-integers < 2^13 and /8 are exact in float64
        np.testing.assert_array_equal(ours, theirs)
    elif name == "pearson":
        # z-scores (|z| up to ~5) of 4186 float64 terms, mean of 8, shifted to min 0: F64 per unit of magnitude
        tol = F64 * np.abs(theirs).max()
        np.testing.assert_allclose(ours - ours.min(), theirs, rtol=0, atol=tol)  # rsatoolbox shifts to min 0
    else:
        # unit vectors, float64, 4186 terms: precision.F64
        np.testing.assert_allclose(ours / np.linalg.norm(ours), theirs / np.linalg.norm(theirs), rtol=0, atol=F64)
