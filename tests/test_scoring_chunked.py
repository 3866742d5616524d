"""Bounded scoring (TargetScorer subject by subject, Spearman in blocks of pairs) equals the unbounded path.

The reference is the plain unbounded formula written here: every subject vector in float64, scipy ranks,
centred unit rows, pooled by a plain mean of ranks, leave-one-out by ``np.delete``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from precision import F64
from scipy.stats import rankdata, spearmanr

from rsabench import rsa
from rsabench.rsa import CosineMetric, KendallTauAMetric, PearsonMetric, SpearmanMetric, rank_rows, upper_tri
from rsabench.scoring import TargetScorer, bootstrap_indices

N, SUBJECTS, REPEATS = 24, 5, 2


class LazySubjects(Sequence):
    """Per-subject ``(repeats, n, n)`` RDMs made when read; counts the reads."""

    def __init__(self, rdms: np.ndarray) -> None:
        self.rdms, self.reads = rdms, 0

    def __len__(self) -> int:
        return len(self.rdms)

    def __getitem__(self, s: int) -> np.ndarray:
        if not 0 <= s < len(self.rdms):
            raise IndexError(s)
        self.reads += 1
        return self.rdms[s].copy()


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    latent = rng.standard_normal((N, 4))
    subjects = np.stack(
        [
            [rsa.correlation_rdm_numpy(latent + rng.standard_normal((N, 4)), dtype=np.float32) for _ in range(REPEATS)]
            for _ in range(SUBJECTS)
        ]
    )
    model = rsa.correlation_rdm_numpy(latent + 2 * rng.standard_normal((N, 4)), dtype=np.float32)
    return subjects, model


def reference(subjects: np.ndarray, model: np.ndarray) -> dict[str, object]:
    def unit(r):
        c = r - r.mean(axis=-1, keepdims=True)
        return c / np.linalg.norm(c, axis=-1, keepdims=True)

    ranks = rankdata(upper_tri(subjects).astype(np.float64), axis=-1)  # (S, R, P)
    prepared = unit(ranks)
    per_subject = (prepared @ unit(rankdata(upper_tri(model).astype(np.float64)))).mean(axis=1)
    upper = (prepared @ unit(rankdata(ranks.mean(axis=(0, 1))))).mean()
    lower = np.mean(
        [(prepared[s] @ unit(rankdata(np.delete(ranks, s, 0).mean(axis=(0, 1))))).mean() for s in range(len(ranks))]
    )
    means = per_subject[bootstrap_indices(len(per_subject))].mean(axis=1)
    return {"per_subject": per_subject, "upper": upper, "lower": lower, "ci": np.quantile(means, [0.025, 0.975])}


@pytest.mark.parametrize("chunk", [7, 1 << 20], ids=["many-blocks", "one-block"])
def test_chunked_spearman_scorer_equals_the_unbounded_reference(data, chunk, monkeypatch):
    monkeypatch.setattr(rsa, "CHUNK", chunk)
    subjects, model = data
    source = LazySubjects(subjects)
    score = TargetScorer(source, SpearmanMetric()).score(model)
    ref = reference(subjects, model)
    # float64 correlations of the same exact ranks, 276-term sums, in another order: precision.F64
    np.testing.assert_allclose(score.per_subject, ref["per_subject"], rtol=0, atol=F64)
    assert score.ceiling_upper == pytest.approx(ref["upper"], abs=F64)
    assert score.ceiling_lower == pytest.approx(ref["lower"], abs=F64)
    np.testing.assert_allclose([score.ci_low, score.ci_high], ref["ci"], rtol=0, atol=F64)
    assert source.reads == SUBJECTS  # each subject read once: never the whole stack


@pytest.mark.parametrize("cls", [SpearmanMetric, PearsonMetric, CosineMetric, KendallTauAMetric])
def test_a_lazy_source_scores_as_the_array(data, cls):
    subjects, model = data
    a = TargetScorer(subjects, cls()).score(model)
    b = TargetScorer(LazySubjects(subjects), cls()).score(model)
    assert a.per_subject == b.per_subject and a.ceiling_upper == b.ceiling_upper  # the same operations: exact
    assert a.ceiling_lower == b.ceiling_lower and (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)


class PlainMetric:
    """The bare metric contract (no pooled_sum, no compare_prepared): the scorer keeps each subject's pool."""

    name = "plain-pearson"

    def prepare(self, vecs):
        return np.atleast_2d(np.asarray(vecs, dtype=np.float64))

    def compare(self, model, prepared):
        return np.array([[np.corrcoef(m, p)[0, 1] for p in prepared] for m in np.atleast_2d(model)])

    def pool(self, vecs):
        return PearsonMetric().pool(vecs)

    def reference(self, x, y):
        return float(np.corrcoef(x, y)[0, 1])


def test_a_metric_without_the_bounded_methods_pools_by_its_own_pool(data):
    subjects, model = data
    plain = TargetScorer(subjects, PlainMetric()).score(model)
    fast = TargetScorer(subjects, PearsonMetric()).score(model)
    # the same Pearson correlations two ways (corrcoef vs unit rows), 276 terms, float64: precision.F64
    np.testing.assert_allclose(plain.per_subject, fast.per_subject, rtol=0, atol=F64)
    assert plain.ceiling_upper == pytest.approx(fast.ceiling_upper, abs=F64)
    assert plain.ceiling_lower == pytest.approx(fast.ceiling_lower, abs=F64)


@pytest.mark.parametrize(
    "x",
    [
        np.random.default_rng(0).random(1000).astype(np.float32),  # 32-bit keys: packed integer sort
        np.round(np.random.default_rng(1).random((4, 500)) * 7).astype(np.float32),  # float32 ties
        np.random.default_rng(2).integers(-50, 50, (3, 400)),  # integer keys, ties
        np.random.default_rng(3).random((2, 300)).astype(np.float32).astype(np.float64),  # float64, float32 values
        np.random.default_rng(4).random((2, 300)),  # float64 that 32 bits cannot hold: argsort
        np.array([[-0.0, 0.0, -1.5, np.inf, -np.inf, 2.0]], dtype=np.float32),
        np.array([[2**40, -(2**40), 0, 5]], dtype=np.int64),  # a span past 2^32: argsort
    ],
)
def test_rank_rows_both_sort_paths_equal_scipy(x):
    # ranks are half-integers far below 2^53: exact, so equality is exact
    np.testing.assert_array_equal(rank_rows(x), rankdata(x, axis=-1))


def _tie_rows() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    sparse = rng.permutation(300).astype(np.int64)
    sparse[[0, 1, 2, 150, 151, 298, 299]] = [5, 5, 5, 77, 77, 9, 9]  # few ties: runs at both ends, one inside
    return [
        sparse,  # fewer tied entries than groups: ranks built from the tie links
        np.round(rng.random(300) * 6).astype(np.float32),  # many ties: ranks built per group
        np.full(50, 3.0, dtype=np.float32),  # one group
        rng.permutation(64).astype(np.float32),  # no ties
        np.array([1.0]),
        np.array([2, 2]),
        np.array([2**64 - 1, 2**64 - 3, 2**64 - 1], dtype=np.uint64),  # 32-bit keys of a small span near 2^64
        rng.integers(-128, 127, 200).astype(np.int8),
        rng.random(100) > 0.5,
    ]


@pytest.mark.parametrize("row", _tie_rows(), ids=lambda r: f"{r.dtype}-{r.size}")
def test_doubled_ranks_and_tie_cubes_in_small_blocks(monkeypatch, row):
    monkeypatch.setattr(rsa, "CHUNK", 4)  # blocks of 16 entries: keys, indices and the scatter cross blocks
    ranks, cubes = rsa._doubled_ranks(row)
    np.testing.assert_array_equal(ranks, 2 * rankdata(row))  # exact integers
    _, sizes = np.unique(row, return_counts=True)
    assert cubes == sum(int(t) ** 3 for t in sizes)


def test_spearman_blocks_equal_scipy(monkeypatch):
    monkeypatch.setattr(rsa, "CHUNK", 5)
    rng = np.random.default_rng(5)
    x, y = rng.random((3, 200)), np.round(rng.random((4, 200)) * 9)
    got = SpearmanMetric().compare(x, SpearmanMetric().prepare(y))
    ref = [[spearmanr(a, b)[0] for b in y] for a in x]
    np.testing.assert_allclose(got, ref, rtol=0, atol=F64)  # float64, 200 terms, two ways: precision.F64
