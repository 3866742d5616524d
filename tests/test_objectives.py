"""Training objectives against independent references, a generic contract over the registry, and the
acceptance test: every training objective beats ``frozen`` on held-out ``synthetic`` images."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from precision import F64, U64, correlation_distance_tolerance, correlation_tolerance, mean_tolerance, zscore_tolerance
from scipy.spatial.distance import pdist, squareform
from scipy.stats import pearsonr
from scipy.stats import zscore as scipy_zscore

from rsabench.builtin.basic_objectives import Dissim, Frozen
from rsabench.builtin.similarity_objectives import CKA, Contrastive, RDMCorrelation
from rsabench.errors import UsageError
from rsabench.objective import normalize_subject_rdms, training_target
from rsabench.plugins import get_plugins


# -- plain references (written out here, independent of rsabench) --------------------------------
def corr_dist(x: np.ndarray) -> np.ndarray:
    """``1 - pearson`` between rows, via scipy."""
    return squareform(pdist(np.asarray(x, dtype=np.float64).reshape(len(x), -1), metric="correlation"))


def contrastive_loop(feats: np.ndarray, target: np.ndarray, threshold: float, margin: float, center: bool) -> float:
    """Hadsell et al. 2006 written per pair: (1-Y)/2 D^2 + Y/2 max(0, m - D)^2, mean over i<j."""
    f = np.asarray(feats, dtype=np.float64).reshape(len(feats), -1)
    total, count = 0.0, 0
    for i in range(len(f)):
        for j in range(i + 1, len(f)):
            a, b = f[i].copy(), f[j].copy()
            if center:
                a -= a.mean()
                b -= b.mean()
            a /= np.linalg.norm(a)
            b /= np.linalg.norm(b)
            d = float(np.sqrt(np.sum((a - b) ** 2)))
            y = 1.0 if target[i, j] > threshold else 0.0
            total += (1 - y) * 0.5 * d**2 + y * 0.5 * max(0.0, margin - d) ** 2
            count += 1
    return total / count


def kornblith_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA in feature space (Kornblith et al. 2019, eq. for linear kernels): ||YᵀX||² / (||XᵀX|| ||YᵀY||)."""
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def gram_cka(k: np.ndarray, k2: np.ndarray) -> float:
    """<HKH, HLH>_F / (||HKH|| ||HLH||) (L = ``k2``) with an explicit centring matrix H."""
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    kc, lc = h @ k @ h, h @ k2 @ h
    return float(np.sum(kc * lc) / (np.linalg.norm(kc) * np.linalg.norm(lc)))


def unit_centered(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def batch() -> tuple[np.ndarray, np.ndarray]:
    """Features ``(10, 3, 4, 5)`` (positive and negative values) and a target RDM from hidden features."""
    rng = np.random.default_rng(7)
    feats = rng.standard_normal((10, 3, 4, 5))
    target = corr_dist(rng.standard_normal((10, 6)))
    return feats, target


def trainable_objectives() -> list[str]:
    objectives = get_plugins().objectives
    return [n for n in objectives.names() if getattr(objectives.get(n)(), "trains", True)]


# -- registry -------------------------------------------------------------------------------------
def test_builtin_objectives_registered():
    names = get_plugins().objectives.names()
    for name in ("frozen", "dissim", "contrastive", "rdm-corr", "cka"):
        assert name in names
    assert set(trainable_objectives()) >= {"dissim", "contrastive", "rdm-corr", "cka"}
    assert "frozen" not in trainable_objectives()


def test_frozen_trains_nothing_and_takes_no_options():
    from rsabench.registry import accepted_options

    assert Frozen.trains is False
    assert accepted_options(Frozen) == ()


# -- contrastive ----------------------------------------------------------------------------------
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("margin", [0.3, 1.0, 1.9])
def test_contrastive_matches_per_pair_loop(batch, center, margin):
    feats, target = batch
    obj = Contrastive(margin=str(margin), center=str(center).lower())
    pairs = target[np.triu_indices(len(target), 1)]
    obj.setup(pairs)
    assert obj.threshold == float(np.median(pairs))  # 45 pairs, exact index 22: both pick the middle value, exact
    got = obj.loss(torch.from_numpy(feats), torch.from_numpy(target))
    assert got.dtype == torch.float64
    # float64, 60-term rows, Gram form vs per-pair differences (D >= 1 here, so sqrt does not amplify), mean of
    # 45 terms of size <= 2 (the labels compare the same numbers: identical): precision.F64
    want = contrastive_loop(feats, target, float(np.median(pairs)), margin, center)
    assert float(got) == pytest.approx(want, rel=F64)


def test_contrastive_both_terms_matter(batch):
    """With centring, D^2 = 2 (1 - r): check the two terms separately on known labels."""
    feats, target = batch
    d2 = 2.0 * corr_dist(feats)  # squared Euclidean distance of centred unit-norm rows
    iu = np.triu_indices(len(target), 1)
    all_similar = Contrastive(threshold="10")  # no pair above: loss = mean D^2 / 2
    # float64 both ways: each D² within 2·2·correlation_distance_tolerance ≈ 2e-13 (|d(2-D)²/dD²| <= 1/2 for
    # D >= 1), losses ~1: precision.F64
    assert 4 * correlation_distance_tolerance(feats, U64) < F64
    loss = float(all_similar.loss(torch.from_numpy(feats), torch.from_numpy(target)))
    assert loss == pytest.approx(0.5 * d2[iu].mean(), rel=F64)
    all_dissimilar = Contrastive(threshold="-10", margin="2")  # every pair: (2 - D)^2 / 2
    want = 0.5 * np.mean((2.0 - np.sqrt(d2[iu])) ** 2)
    assert float(all_dissimilar.loss(torch.from_numpy(feats), torch.from_numpy(target))) == pytest.approx(want, rel=F64)


def test_contrastive_threshold_options():
    pairs = np.arange(101, dtype=float)
    q = Contrastive(quantile="0.9")
    q.setup(pairs)
    assert q.threshold == pytest.approx(90.0, rel=4 * U64)  # index 0.9·100 and the interpolation: a few ulps
    fixed = Contrastive(threshold="3.5")
    fixed.setup(pairs)  # an explicit threshold is not overridden by the training pairs
    assert fixed.threshold == 3.5
    assert fixed.options()["threshold"] == 3.5 and fixed.options()["quantile"] is None
    with pytest.raises(RuntimeError, match="setup"):
        Contrastive().loss(torch.randn(3, 4), torch.rand(3, 3))


# -- rdm-corr -------------------------------------------------------------------------------------
def test_rdm_corr_matches_scipy_pearson(batch):
    feats, target = batch
    iu = np.triu_indices(len(target), 1)
    pred = corr_dist(feats)[iu]
    want = 1.0 - pearsonr(pred, target[iu])[0]
    got = RDMCorrelation().loss(torch.from_numpy(feats), torch.from_numpy(target))
    # two float64 evaluations, each within correlation_tolerance of the exact r, the model RDM's entries
    # within their correlation_distance_tolerance
    tol = 2 * correlation_tolerance(pred, target[iu], err_x=correlation_distance_tolerance(feats, U64))
    assert tol < 1e-9  # far below what a wrong pairing or a missing centring moves: O(0.01)
    assert float(got) == pytest.approx(want, abs=tol)


def test_rdm_corr_is_scale_and_offset_free(batch):
    feats, target = batch
    x, t = torch.from_numpy(feats), torch.from_numpy(target)
    obj = RDMCorrelation()
    off = (3.0 * t + 7.0) * (1 - torch.eye(len(t), dtype=t.dtype))
    # the model RDM is the same on both sides; each correlation rounds within correlation_tolerance, and 3t + 7
    # is itself rounded (2 ulps of |3t + 7|); -t is exact
    iu = np.triu_indices(len(target), 1)
    pred, tv, ov = corr_dist(feats)[iu], target[iu], off.numpy()[iu]
    one = correlation_tolerance(pred, tv)
    tol = one + correlation_tolerance(pred, ov, err_y=2 * U64 * np.abs(ov).max())
    assert float(obj.loss(x, off)) == pytest.approx(float(obj.loss(x, t)), abs=tol)
    assert float(obj.loss(x, -t)) == pytest.approx(2.0 - float(obj.loss(x, t)), abs=2 * one + 2 * U64)


# -- cka ------------------------------------------------------------------------------------------
def test_cka_matches_kornblith_feature_space(batch):
    """A correlation-distance target is -2x a squared Euclidean distance of unit rows: CKA reduces to
    Kornblith's linear CKA between those rows and the model's features."""
    rng = np.random.default_rng(3)
    feats, _ = batch
    hidden = rng.standard_normal((10, 6))
    target = corr_dist(hidden)
    x, t = torch.from_numpy(feats), torch.from_numpy(target)
    corr = CKA().cka(x, t)
    lin = CKA(kernel="linear").cka(x, t)
    # float64, 10 images, 60- and 6-term rows, 100-term Frobenius products of O(1) (linear: O(60), but CKA is a
    # ratio, so relative) kernels, feature vs Gram form: precision.F64
    assert float(corr) == pytest.approx(kornblith_linear_cka(unit_centered(feats), unit_centered(hidden)), rel=F64)
    assert float(lin) == pytest.approx(kornblith_linear_cka(feats.reshape(10, -1), unit_centered(hidden)), rel=F64)
    assert float(corr) != pytest.approx(float(lin), rel=1e-3)  # different definitions: apart by far more than F64
    loss = CKA(eps="1e-6").loss(x, t)
    # the same float64 ops on the same CKA value; only the log's implementation differs (<= 1 ulp each)
    assert float(loss) == pytest.approx(math.log(1.0 - float(corr) + 1e-6), rel=4 * U64)


def test_cka_matches_gram_formula_on_a_non_euclidean_rdm(batch):
    feats, _ = batch
    rng = np.random.default_rng(11)
    a = rng.uniform(0.2, 1.8, (10, 10))
    target = np.triu(a, 1) + np.triu(a, 1).T  # arbitrary symmetric dissimilarities, zero diagonal
    z = unit_centered(feats)
    want = gram_cka(z @ z.T, -0.5 * target)
    # float64, O(1) kernels of 10 images, centring by a mean vs by H: precision.F64
    assert float(CKA().cka(torch.from_numpy(feats), torch.from_numpy(target))) == pytest.approx(want, rel=F64)
    junk = target + np.diag(rng.uniform(1, 5, 10))  # only pairs count: a non-zero diagonal is ignored
    assert float(CKA().cka(torch.from_numpy(feats), torch.from_numpy(junk))) == pytest.approx(want, rel=F64)


def test_cka_perfect_fit_is_finite():
    hidden = torch.randn(8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target = torch.from_numpy(corr_dist(hidden.numpy()))
    feats = (3.0 * hidden + 1.0).clone().requires_grad_(True)  # same correlation geometry
    obj = CKA()
    # float64: the kernels agree to rounding, and 1 - cos is second order in their difference; what is left is the
    # rounding of the 64-term cosine itself: precision.F64
    assert float(obj.cka(feats, target).detach()) == pytest.approx(1.0, abs=F64)
    loss = obj.loss(feats, target)
    # log(eps + δ) - log(eps) <= δ/eps with δ = |1 - CKA| <= F64; without eps the loss would be -inf or ~-30
    assert float(loss.detach()) == pytest.approx(math.log(1e-6), abs=F64 / 1e-6)
    loss.backward()
    assert torch.isfinite(feats.grad).all()


# -- dissim (Agrawal 2019), its options, and the target normalisations ------------------------------
def test_dissim_matches_squared_error(batch):
    feats, target = batch
    iu = np.triu_indices(len(target), 1)
    pred = corr_dist(feats)[iu]
    # the two model RDMs differ by <= err per pair; (p - t)² then by <= 2·max|p - t|·err + err², plus the rounding
    # of a 45-term mean of squares, F64 relative
    err = 2 * correlation_distance_tolerance(feats, U64)
    want = np.mean((pred - target[iu]) ** 2)
    tol = 2 * np.abs(pred - target[iu]).max() * err + err**2 + F64 * want
    assert tol < 1e-9 * want  # far below what a wrong pairing or target transform moves: O(want)
    assert float(Dissim().loss(torch.from_numpy(feats), torch.from_numpy(target))) == pytest.approx(want, abs=tol)
    fz = Dissim(space="fisher-z")
    zp, zt = np.arctanh(np.clip(1 - pred, -0.999, 0.999)), np.arctanh(np.clip(1 - target[iu], -0.999, 0.999))
    want = np.mean((zp - zt) ** 2)
    # atanh'(r) = 1/(1 - r²) scales err; each atanh implementation adds <= 2 ulps of |z|
    dz = err / (1 - np.clip(1 - pred, -0.999, 0.999) ** 2).min() + 4 * U64 * max(np.abs(zp).max(), np.abs(zt).max())
    tol = 2 * np.abs(zp - zt).max() * dz + dz**2 + F64 * want
    assert tol < 1e-9 * want
    assert float(fz.loss(torch.from_numpy(feats), torch.from_numpy(target))) == pytest.approx(want, abs=tol)
    assert fz.target_normalization("none") == "none"
    with pytest.raises(UsageError, match="fisher-z"):
        fz.target_normalization("zscore")
    assert Dissim(normalization="agrawal").target_normalization("none") == "agrawal"
    assert Dissim().target_normalization("zscore") == "zscore"


def test_target_normalizations_against_scipy():
    """zscore / agrawal use the training pairs' statistics per (subject, repeat), then the subject mean."""
    rng = np.random.default_rng(5)
    n = 9
    rdms = np.zeros((3, 2, n, n))
    for s in range(3):
        for r in range(2):
            rdms[s, r] = corr_dist(rng.standard_normal((n, 4))) * (s + 1) + s
    train = np.array([0, 2, 3, 5, 8])
    it, jt = np.triu_indices(len(train), 1)
    z = normalize_subject_rdms(rdms, "zscore", train)
    a = normalize_subject_rdms(rdms, "agrawal", train)
    for s in range(3):
        for r in range(2):
            sub = rdms[s, r][np.ix_(train, train)][it, jt]
            # float64 z-scores over 10 pairs, ours vs scipy / written out: zscore_tolerance
            tol = zscore_tolerance(sub, sub)
            assert tol < 1e-9  # far below what a statistic from the wrong pairs (leakage) moves: O(0.1)
            assert np.allclose(z[s, r][np.ix_(train, train)][it, jt], scipy_zscore(sub), rtol=0, atol=tol)
            # the held-out images use the training pairs' mean and SD (no leakage)
            x = rdms[s, r, 1, 4]
            tol = zscore_tolerance(sub, x)
            assert z[s, r, 1, 4] == pytest.approx((x - sub.mean()) / sub.std(), abs=tol)
            a_want = ((x - sub.mean()) / sub.std() + 2) / 5
            assert a[s, r, 1, 4] == pytest.approx(a_want, abs=tol + 2 * U64 * abs(a_want))  # (z + 2)/5: 2 more ulps
            assert np.all(np.diag(z[s, r]) == 0) and np.all(np.diag(a[s, r]) == 0)  # set, not computed: exact
    assert np.array_equal(normalize_subject_rdms(rdms, "none", train), rdms)  # returned as is: exact
    # a mean over the 6 (subject, repeat) z-scores, maybe in another order
    tol = mean_tolerance(z.reshape(6, -1), U64)
    assert np.allclose(training_target(rdms, "zscore", train), z.mean(axis=(0, 1)), rtol=0, atol=tol)
    with pytest.raises(UsageError, match="normalisation"):
        normalize_subject_rdms(rdms, "minmax", train)


# -- options arrive as strings -------------------------------------------------------------------
def test_string_options_are_coerced():
    c = Contrastive(margin=" 0.75", center="no", normalization="zscore")
    assert (c.margin, c.center, c.target_normalization("none")) == (0.75, False, "zscore")
    k = CKA(kernel="linear", eps="1e-4")
    assert (k.kernel, k.eps) == ("linear", 1e-4)
    assert RDMCorrelation(normalization="agrawal").target_normalization("none") == "agrawal"


@pytest.mark.parametrize(
    "cls, options, fragment",
    [
        (Contrastive, {"margin": "abc"}, "margin"),
        (Contrastive, {"margin": "-1"}, "margin"),
        (Contrastive, {"margin": "nan"}, "margin"),
        (Contrastive, {"threshold": "inf"}, "threshold"),
        (Contrastive, {"quantile": "1"}, "quantile"),
        (Contrastive, {"quantile": "0.5", "threshold": "0.2"}, "not both"),
        (Contrastive, {"center": "maybe"}, "center"),
        (Contrastive, {"normalization": "minmax"}, "normalization"),
        (CKA, {"kernel": "rbf"}, "kernel"),
        (CKA, {"eps": "0"}, "eps"),
        (Dissim, {"space": "log"}, "space"),
        (Dissim, {"normalization": "z"}, "normalization"),
    ],
)
def test_bad_options_are_usage_errors(cls, options, fragment):
    with pytest.raises(UsageError, match=fragment):
        cls(**options)


@pytest.mark.parametrize(
    "objectives, pairs, fragment",
    [
        (["rdm-corr"], [("margin", "1")], "no objective of this run takes option 'margin'.*rdm-corr: normalization"),
        (["cka"], [("cka.kernal", "rbf")], "objective 'cka' has no option 'kernal'; did you mean cka.kernel"),
        (["frozen"], [("margin", "1")], "frozen: none"),
        (["dissim"], [("contrastive.margin", "1")], "no objective 'contrastive' in this run"),
        (["dissim"], [("space", "distance"), ("space", "fisher-z")], "given twice"),
    ],
)
def test_unknown_objective_options_are_usage_errors(objectives, pairs, fragment):
    """Options are routed by each objective's own signature: an unknown key is never dropped."""
    from rsabench.options import route_options
    from rsabench.registry import accepted_options

    accepted = {n: accepted_options(get_plugins().objectives.get(n)) for n in objectives}
    with pytest.raises(UsageError, match=fragment):
        route_options("--objective-option", "objective", pairs, accepted)


def test_plain_options_go_to_the_objectives_that_take_them():
    from rsabench.options import route_options
    from rsabench.registry import accepted_options

    names = ["frozen", "dissim", "contrastive"]
    accepted = {n: accepted_options(get_plugins().objectives.get(n)) for n in names}
    assert accepted["dissim"] == ("normalization", "space") and accepted["frozen"] == ()
    routed = route_options(
        "--objective-option",
        "objective",
        [("normalization", "zscore"), ("contrastive.normalization", "none"), ("margin", "0.5")],
        accepted,
    )
    assert routed == {
        "frozen": {},
        "dissim": {"normalization": "zscore"},
        "contrastive": {"normalization": "none", "margin": "0.5"},
    }


# -- generic contract: every registered objective that trains -------------------------------------
@pytest.mark.parametrize("name", trainable_objectives())
def test_objective_contract(name):
    """Options record as JSON and round-trip; loss is a finite differentiable scalar; gradients reach
    the features (also with an all-zero map in the batch); a few Adam steps on a toy problem lower it."""
    factory = get_plugins().objectives.get(name)
    obj = factory()
    opts = obj.options()
    json.dumps(opts)
    again = factory(**{k: str(v) if not isinstance(v, str) else v for k, v in opts.items() if v is not None})
    assert again.options() == opts
    from rsabench.registry import accepted_options

    assert set(opts) <= set(accepted_options(factory))  # every recorded option can be given back

    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(24, 16, generator=g)
    hidden = inputs @ torch.randn(16, 8, generator=g)
    target = torch.from_numpy(corr_dist(hidden.numpy())).float()
    norm = obj.target_normalization("none")
    target = torch.from_numpy(training_target(target.numpy()[None, None], norm, np.arange(24))).float()
    obj.setup(target.numpy()[np.triu_indices(24, 1)])

    weight = torch.randn(16, 32, generator=g).requires_grad_(True)
    batches = [torch.arange(0, 12), torch.arange(12, 24)]

    def total() -> torch.Tensor:
        return sum(obj.loss(inputs[b] @ weight, target[b][:, b]) for b in batches) / len(batches)

    feats = (inputs[:12] @ weight).detach().requires_grad_(True)
    loss = obj.loss(feats, target[:12, :12])
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0

    with_zero = feats.detach().clone()
    with_zero[3] = 0.0
    with_zero.requires_grad_(True)
    loss = obj.loss(with_zero, target[:12, :12])
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(with_zero.grad).all()

    two = obj.loss(torch.randn(2, 5, generator=g), target[:2, :2])  # the smallest batch: one pair
    assert torch.isfinite(two)

    opt = torch.optim.Adam([weight], lr=0.05)
    with torch.no_grad():
        start = float(total())
    for _ in range(15):
        opt.zero_grad()
        total().backward()
        opt.step()
    with torch.no_grad():
        end = float(total())
    assert end < start - 0.1 * abs(start), f"{name}: loss {start:.4f} -> {end:.4f} after 15 Adam steps"


# -- acceptance: every training objective beats `frozen` on held-out synthetic images ---------------
# Random-weight AlexNet at 64 px (about AlexNet's smallest input), `synthetic` (8 subjects), Adam, one cell
# seed. Layer and epoch are chosen on validation images; the test images (25% per group) are scored once.
# - early (low-level colour/position RDM): 96 images per group (53 train / 19 validation / 24 test),
#   3 epochs, batches of 16, lr 1e-4, loss layer chosen on validation (auto). With the default 48 images
#   per group (12 test images, 66 pairs) group B's held-out Δ is within noise for every objective.
# - late (colour/position-invariant shape latent; a random network scores ~0): 192 images per group
#   (106 / 38 / 48), 15 epochs, batches of 32, lr 3e-4, loss at features.11 (conv5; the auto choice, the
#   best *random* layer, is a poor place to learn invariance).
ACCEPTANCE: dict[str, dict] = {
    "early": {"dataset": (("n_per_group", "96"),), "train": dict(epochs=3, batch_size=16, lr=1e-4, loss_layer="auto")},
    "late": {
        "dataset": (("n_per_group", "192"),),
        "train": dict(epochs=15, batch_size=32, lr=3e-4, loss_layer="features.11"),
    },
}
# per-objective `--objective-option` values (all defaults work; listed so a new built-in must be added)
ACCEPTANCE_OBJECTIVES: dict[str, tuple[tuple[str, str], ...]] = {
    "dissim": (),
    "contrastive": (),
    "rdm-corr": (),
    "cka": (),
}


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory):
    """Per target: one session on `synthetic` (generated and preprocessed once) and its `frozen` record."""
    from rsabench.runner import RunOptions, Session

    plugins = get_plugins()
    if "synthetic" not in plugins.datasets.names():
        pytest.fail("the `synthetic` dataset is not registered")
    runs = tmp_path_factory.mktemp("runs")
    options = tuple((f"{name}.{k}", v) for name, kv in ACCEPTANCE_OBJECTIVES.items() for k, v in kv)
    cache: dict[str, tuple] = {}

    def get(target: str) -> tuple:
        if target not in cache:
            cfg = ACCEPTANCE[target]
            opts = RunOptions(
                weights="random",
                image_size=64,
                device="cpu",
                dataset_options=cfg["dataset"],
                objective_options=options,
                **cfg["train"],
            )
            session = Session(plugins, opts)

            records: dict[str, dict] = {}

            def run(objective: str) -> dict:
                if objective not in records:  # each cell runs once per module
                    (cell,) = session.plan(["synthetic"], ["alexnet"], [objective], [0], [target], runs)
                    records[objective] = session.run(cell)
                return records[objective]

            cache[target] = (run, run("frozen"))
        return cache[target]

    return get


def test_every_builtin_training_objective_is_in_the_acceptance_test():
    objectives = get_plugins().objectives
    builtin = {n for n in trainable_objectives() if objectives.entries[n].plugin.startswith("rsabench.")}
    assert builtin == set(ACCEPTANCE_OBJECTIVES)


@pytest.mark.slow
@pytest.mark.parametrize("target, name", [(t, n) for t in sorted(ACCEPTANCE) for n in sorted(ACCEPTANCE_OBJECTIVES)])
def test_objective_beats_frozen_on_held_out_synthetic_images(synthetic_runs, target, name):
    from rsabench.scoring import Score, paired_delta

    run, frozen = synthetic_runs(target)
    record = run(name)
    losses = record["curves"]["training"]["train_loss"]
    assert losses[-1] < losses[0], f"{name}: training loss did not decrease: {losses}"
    assert record["selection"]["epoch"] > 0, f"{name}: no epoch beat the untrained network on validation images"
    base = {(s["split"], s["group"]): Score.from_dict(s["score"]) for s in frozen["scores"]}
    scores = {(s["split"], s["group"]): Score.from_dict(s["score"]) for s in record["scores"]}
    assert set(scores) == set(base) == {("test", "A"), ("test", "B")}
    n_test = round(0.25 * int(dict(ACCEPTANCE[target]["dataset"])["n_per_group"]))
    for key, score in scores.items():
        assert score.n_images == base[key].n_images == n_test
        delta, lo, hi = paired_delta(score, base[key])
        print(
            f"{target} {name} {key[1]}: {score.raw:.4f} vs frozen {base[key].raw:.4f}, delta {delta:+.4f} [{lo:+.4f}, "
            f"{hi:+.4f}]"
        )
        assert delta > 0 and lo > 0, (
            f"{name} vs frozen, {target} {key}: delta {delta:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}]"
        )


@pytest.mark.slow
def test_dissim_beats_frozen_with_non_overlapping_intervals(synthetic_runs):
    """Agrawal's dissimilarity regression learns the shape latent that a frozen random network misses:
    on held-out images of both groups, dissim's 95% CI lies entirely above frozen's."""
    run, frozen = synthetic_runs("late")
    record = run("dissim")
    base = {(s["split"], s["group"]): s["score"] for s in frozen["scores"]}
    for s in record["scores"]:
        b = base[(s["split"], s["group"])]
        assert s["score"]["ci_low"] > b["ci_high"], (s["group"], s["score"]["ci_low"], b["ci_high"])
