"""RSA engine: correlation-distance RDMs, RDM vectors and vectorised comparisons (ARCHITECTURE.md, "The mathematics").

Model RDMs are computed in torch (differentiable, float32 Gram form); comparisons in numpy, with the
brain side prepared once (ranked, centred, unit-normalised) so comparing M model RDMs with K subject
RDMs is one matrix product. Every kernel is written once here: unit rows (:func:`unit_rows` in numpy,
:func:`unit_features` in torch), the Gram RDM (:func:`rdm_from_unit_rows`), average ranks
(:func:`doubled_ranks`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import kendalltau

if TYPE_CHECKING:
    import torch

EPS = 1e-8
CHUNK = 1 << 20
"""Pairs per block where a long RDM vector is processed piecewise (8 MiB of float64 per row)."""


def correlation_rdm(features: "torch.Tensor", eps: float = EPS) -> "torch.Tensor":
    """``1 - pearson(f_i, f_j)`` over flattened features; batch-independent and differentiable.

    Each image's flattened features are centred across features and L2-normalised, then ``1 - Z Zᵀ``.
    A map whose centred norm is at most ``eps`` (all-zero or constant) is legal: it becomes the zero
    vector, its distance to everything is 1 and its gradient is 0 (not ``1/eps``). Above ``eps`` the
    division is exact, so the RDM is scale-invariant like ``pdist(metric="correlation")``.
    Without autograd, a float32/float64 CPU tensor takes the NumPy path (BLAS syrk: half the work of
    a GEMM, and no OpenMP/OpenBLAS thread contention); the dtype is kept.
    """
    import torch

    inference = not (features.requires_grad and torch.is_grad_enabled())
    if inference and features.device.type == "cpu" and features.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(correlation_rdm_numpy(features.detach().numpy(), eps, dtype=None))
    return rdm_from_unit_rows(unit_features(features, eps))


def correlation_rdm_numpy(features: np.ndarray, eps: float = EPS, dtype: Any = np.float32) -> np.ndarray:
    """NumPy twin of :func:`correlation_rdm` (Gram form, in ``dtype``; None keeps the features' dtype)."""
    x = np.asarray(features, dtype=dtype)
    return rdm_from_unit_rows(unit_rows(x.reshape(len(x), -1), center=True, eps=eps))


def unit_rows(x: np.ndarray, center: bool = True, eps: float = 0.0) -> np.ndarray:
    """Rows (last axis) optionally centred, then L2-normalised; a row whose norm is <= ``eps`` → zeros.

    Floating input keeps its dtype (anything else becomes float64); ``x`` is never modified.
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    z = x - x.mean(axis=-1, keepdims=True) if center else x.copy()
    norm = np.linalg.norm(z, axis=-1, keepdims=True)
    ok = norm > eps
    z /= np.where(ok, norm, 1.0).astype(z.dtype)
    z[~ok[..., 0]] = 0.0
    return z


def unit_features(features: "torch.Tensor", eps: float = EPS, center: bool = True) -> "torch.Tensor":
    """Torch :func:`unit_rows` of the flattened features ``(B, P)``: zero rows get zero gradient, not 1/eps."""
    import torch

    z = features.reshape(features.shape[0], -1)
    if center:
        z = z - z.mean(dim=1, keepdim=True)
    norm = z.norm(dim=1, keepdim=True)
    ok = norm > eps
    # double `where`: the masked branch never divides by ~0, so no inf/NaN reaches the backward pass
    return torch.where(ok, z / torch.where(ok, norm, torch.ones_like(norm)), torch.zeros_like(z))


def rdm_from_gram(gram: np.ndarray, dtype: Any = None) -> np.ndarray:
    """``1 - G`` of the Gram matrix ``G = Z Zᵀ`` of unit rows, exactly symmetric with a zero diagonal
    (computed in place in ``G``'s dtype, then cast to ``dtype`` if given)."""
    rdm = gram
    np.subtract(1.0, rdm, out=rdm)
    np.add(rdm, rdm.T, out=rdm)  # numpy buffers the overlapping transpose: the same as rdm + rdm.T
    rdm *= 0.5
    np.fill_diagonal(rdm, 0.0)
    return rdm if dtype is None else rdm.astype(dtype)


def rdm_from_unit_rows(z: Any) -> Any:
    """``1 - Z Zᵀ`` of unit rows, exactly symmetric with a zero diagonal (numpy: a BLAS syrk, in place).

    Torch tensors keep autograd (the diagonal is masked, not written).
    """
    if isinstance(z, np.ndarray):
        return rdm_from_gram(z @ z.T)
    import torch

    rdm = 1.0 - z @ z.T
    rdm = 0.5 * (rdm + rdm.T)
    return rdm * (1.0 - torch.eye(rdm.shape[0], dtype=rdm.dtype, device=rdm.device))


def upper_tri(rdms: Any) -> Any:
    """RDM vector(s): strict upper triangle of the last two axes, row-major (numpy or torch; dtype kept).

    NumPy copies it row by row (memory: the output alone; no index arrays of two int64 per pair).
    """
    n = rdms.shape[-1]
    if not isinstance(rdms, np.ndarray):
        import torch

        mask = torch.ones(n, n, dtype=torch.bool, device=rdms.device).triu(1)
        return rdms[..., mask]
    out = np.empty((*rdms.shape[:-2], n * (n - 1) // 2), dtype=rdms.dtype)
    start = 0
    for i in range(n - 1):
        out[..., start : start + n - 1 - i] = rdms[..., i, i + 1 :]
        start += n - 1 - i
    return out


def sub_rdm(rdms: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The RDM(s) restricted to the images in ``index`` (rows and columns)."""
    index = np.asarray(index)
    return rdms[..., index[:, None], index[None, :]]


# -- average ranks ------------------------------------------------------------------------------
_LOW, _HIGH = (0, 1) if sys.byteorder == "little" else (1, 0)  # the uint32 halves of a uint64 in memory


def _write_order_keys(row: np.ndarray, keys: np.ndarray) -> bool:
    """Write into the uint32 array ``keys`` keys ordered and tied exactly as the values of a NaN-free
    ``row``; False when 32 bits cannot hold them (float64 values that are not float32 numbers, integers
    spanning 2^32 or more). Block by block: the temporaries stay a few MiB."""
    if row.dtype.kind == "b":
        row = row.view(np.uint8)
    step = 4 * CHUNK
    if row.dtype.kind in "iu":
        lo, hi = (int(row.min()), int(row.max())) if row.size else (0, 0)
        if hi - lo >= 2**32:
            return False
        wide = np.int64 if row.dtype.kind == "i" else np.uint64  # holds row - lo, which lies in [0, 2^32)
        for a in range(0, len(row), step):
            keys[a : a + step] = row[a : a + step].astype(wide) - wide(lo)
        return True
    if row.dtype.kind != "f" or row.dtype.itemsize > 8:
        return False
    for a in range(0, len(row), step):
        block = row[a : a + step].astype(np.float32)  # a copy: never modifies ``row``
        if row.dtype.itemsize == 8 and not np.array_equal(block, row[a : a + step]):
            return False
        block += np.float32(0.0)  # -0.0 → +0.0: they tie
        bits = block.view(np.int32)
        flip = bits >> 31  # IEEE order: negative floats' bits count downwards
        flip &= np.int32(0x7FFFFFFF)
        bits ^= flip
        bits ^= np.int32(-(2**31))  # flip the sign bit: unsigned order of the bits = order of the values
        keys[a : a + step] = bits.view(np.uint32)
    return True


def _sorted_order(row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, change): ``row[order]`` is sorted; ``change[k]`` says sorted entry k+1 differs from entry k.

    Values that 32-bit keys hold are sorted as packed ``key << 32 | index`` words (an in-place integer
    sort, ~10x faster than ``argsort`` at 10^7 pairs); any other row takes ``argsort``.
    """
    sorted_by_keys = _packed_sort(row) if len(row) < 2**32 else None
    if sorted_by_keys is not None:
        return sorted_by_keys
    order = np.argsort(row)
    ordered = row[order]
    return order, ordered[1:] != ordered[:-1]


def _packed_sort(row: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`_sorted_order` by the packed integer sort (``order``: a view of the words' low halves), or None
    when 32-bit keys cannot hold the values. The keys and indices are written straight into the words."""
    p = len(row)
    packed = np.empty(p, dtype=np.uint64)
    halves = packed.view(np.uint32)
    low, high = halves[_LOW::2], halves[_HIGH::2]
    if not _write_order_keys(row, high):
        return None
    for a in range(0, p, 4 * CHUNK):
        low[a : a + 4 * CHUNK] = np.arange(a, min(a + 4 * CHUNK, p), dtype=np.uint32)
    packed.sort()
    return low, high[1:] != high[:-1]


def _ranks_by_group(change: np.ndarray, dtype: Any) -> tuple[np.ndarray, int]:
    """Sorted-order doubled ranks and ``Σ t³`` from the tie groups: for rows with many ties.

    A tie group of t entries from sorted position s has mean rank ``s + (t + 1) / 2``: twice it is
    ``2s + t + 1``, computed once per group and repeated over it.
    """
    p = len(change) + 1
    bound = np.empty(p, dtype=bool)  # first of its tie group
    bound[0], bound[1:] = True, change
    starts = np.flatnonzero(bound).astype(dtype)
    del bound
    counts = np.diff(starts, append=dtype(p))
    starts *= 2
    starts += counts
    starts += 1
    return np.repeat(starts, counts), _sum_of_cubes(counts, p)


def _ranks_by_tie(change: np.ndarray, dtype: Any) -> tuple[np.ndarray, int]:
    """Sorted-order doubled ranks and ``Σ t³`` from the tied entries alone: for rows with few ties.

    An untied entry at sorted position k has doubled rank ``2k + 2``; each run of tie links
    ``k = a … b`` (entry k+1 equals entry k) is one group of ``t = b - a + 2`` entries from position a,
    all of doubled rank ``2a + t + 1``.
    """
    p = len(change) + 1
    ranks = np.arange(2, 2 * p + 2, 2, dtype=dtype)
    links = np.flatnonzero(~change)
    if not links.size:
        return ranks, p
    run = np.empty(links.size, dtype=bool)  # first link of its run
    run[0] = True
    np.not_equal(links[1:], links[:-1] + 1, out=run[1:])
    starts = np.flatnonzero(run)
    del run
    sizes = np.diff(starts, append=links.size) + 1  # a run of r links ties r + 1 entries
    value = np.repeat((2 * links[starts] + sizes + 1).astype(dtype), sizes - 1)
    ranks[links] = value
    ranks[links + 1] = value
    return ranks, _sum_of_cubes(sizes, p)


def _sum_of_cubes(sizes: np.ndarray, p: int) -> int:
    """``Σ t³`` over the tie groups of a row of ``p`` entries: ``sizes`` lists groups (any that are
    missing are single entries), counted by size so the Python integers stay few and exact."""
    counts = np.bincount(sizes)
    singles = p - int(sizes.sum())
    return singles + sum(int(counts[t]) * int(t) ** 3 for t in np.flatnonzero(counts))


def doubled_ranks(row: np.ndarray) -> np.ndarray:
    """Twice the average ranks (1-based; ties share their mean) of a NaN-free 1-D ``row``: exact integers.

    int32 while ``2·len + 1`` fits, else int64.
    """
    return _doubled_ranks(row)[0]


def _doubled_ranks(row: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(:func:`doubled_ranks`, ``Σ t³`` over the tie groups' sizes t, an exact integer), into ``out`` if given.

    The ranks are formed in sorted order from whichever is fewer, tie groups or tied entries, then
    scattered to the row's order.
    """
    p = len(row)
    dtype = np.int32 if 2 * p + 1 < 2**31 else np.int64
    out = np.empty(p, dtype) if out is None else out
    if p == 0:
        return out, 0
    order, change = _sorted_order(row)
    tied = p - 1 - int(np.count_nonzero(change))
    sorted_ranks, cubes = (_ranks_by_tie if 2 * tied < p else _ranks_by_group)(change, dtype)
    del change
    for a in range(0, p, 4 * CHUNK):  # scatter piecewise: fancy indexing copies its index as intp
        out[order[a : a + 4 * CHUNK]] = sorted_ranks[a : a + 4 * CHUNK]
    return out, cubes


def rank_rows(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank) along the last axis; a row with a NaN is all NaN.

    Equal to ``scipy.stats.rankdata(x, axis=-1)``: ranks are half-integers, exact in float64.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "iubf":
        x = x.astype(np.float64)
    p = x.shape[-1] if x.ndim else 0
    ranks = np.empty(x.shape, dtype=np.float64)
    if x.size == 0 or p == 0:
        return ranks
    rows, out = x.reshape(-1, p), ranks.reshape(-1, p)
    for k, row in enumerate(rows):
        if row.dtype.kind == "f" and np.isnan(row).any():
            out[k] = np.nan
        else:
            out[k] = doubled_ranks(row) / 2.0
    return ranks


# -- metrics ------------------------------------------------------------------------------------
class CorrelationMetric:
    """A metric of the form ``<u(T(x)), u(T(y))>``: T a row transform, u centring (optional) + unit norm.

    Covers Pearson (T = id), Spearman (T = average ranks) and cosine (T = id, no centring). Besides the
    metric contract (``prepare``, ``compare``, ``pool``, ``reference``) it offers what lets
    :class:`~rsabench.scoring.TargetScorer` work subject by subject: ``compare_prepared`` (the model
    prepared once for all subjects) and ``pooled_sum`` (the pooled RDM from prepared rows, up to a
    positive factor, which no correlation sees).
    """

    name = "correlation"
    center = True

    def transform(self, vecs: np.ndarray) -> np.ndarray:
        return np.asarray(vecs, dtype=np.float64)

    def prepare(self, vecs: np.ndarray) -> Any:
        """Subject RDM vectors ``(K, P)`` → prepared rows (done once per dataset load)."""
        return unit_rows(self.transform(vecs), self.center)

    def compare(self, model: np.ndarray, prepared: Any) -> np.ndarray:
        """Model vectors ``(M, P)`` against prepared subjects ``(K, P)`` → ``(M, K)``."""
        return self.compare_prepared(self.prepare(np.atleast_2d(model)), prepared)

    def compare_prepared(self, model: Any, prepared: Any) -> np.ndarray:
        """Prepared model rows against prepared subject rows → ``(M, K)``."""
        return model @ prepared.T

    def pool(self, vecs: np.ndarray) -> np.ndarray:
        """Pooled RDM vector as rsatoolbox's ``pool_rdm``: mean after the metric's normalisation."""
        t = self.transform(vecs)
        if self.center:
            t = t - t.mean(axis=-1, keepdims=True)
            sd = t.std(axis=-1, keepdims=True)
            t = t / np.where(sd > 0, sd, 1.0)
        else:
            norm = np.linalg.norm(t, axis=-1, keepdims=True)
            t = t / np.where(norm > 0, norm, 1.0)
        return t.mean(axis=0)

    def pooled_sum(self, prepared: Any) -> np.ndarray:
        """A positive multiple of ``len · pool(vecs)`` from ``prepare(vecs)`` (z-scores are √P unit rows)."""
        return prepared.sum(axis=0)

    def reference(self, x: np.ndarray, y: np.ndarray) -> float:  # pragma: no cover - overridden
        raise NotImplementedError


class PearsonMetric(CorrelationMetric):
    """Pearson correlation between RDM vectors."""

    name = "pearson"

    def reference(self, x: np.ndarray, y: np.ndarray) -> float:
        from scipy.stats import pearsonr

        return float(pearsonr(x, y)[0])


@dataclass
class RankedRows:
    """Prepared Spearman rows: twice the average ranks, centred (exact integers), and 1/norm per row.

    ``inv_norm`` is 0 for a constant row (its correlation with anything is 0) and NaN for a row with a NaN.
    Four bytes a pair instead of eight, exactly (a float64 unit row rounds each pair).
    """

    centred: np.ndarray
    inv_norm: np.ndarray

    def __len__(self) -> int:
        return len(self.centred)


def _chunk_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b.T`` in float64 for long integer rows, block by block of pairs (bounded temporaries)."""
    out = np.zeros((len(a), len(b)))
    for s in range(0, a.shape[1], CHUNK):  # einsum's own SIMD loop: no BLAS threads for thin products
        out += np.einsum("mi,ki->mk", a[:, s : s + CHUNK].astype(np.float64), b[:, s : s + CHUNK].astype(np.float64))
    return out


class SpearmanMetric(CorrelationMetric):
    """Spearman correlation with average ranks for ties (the Algonauts metric).

    Prepared rows are :class:`RankedRows` (ranked once, row by row: memory stays a few pair vectors);
    ``rho = Σ c_a c_b / (|c_a| |c_b|)`` over the centred doubled ranks, accumulated in float64.
    """

    name = "spearman"

    def transform(self, vecs: np.ndarray) -> np.ndarray:
        return rank_rows(vecs)

    def prepare(self, vecs: np.ndarray) -> RankedRows:
        rows = np.atleast_2d(np.asarray(vecs))
        k, p = rows.shape
        centred = np.zeros((k, p), dtype=np.int32 if 2 * p + 1 < 2**31 else np.int64)
        inv_norm = np.full(k, np.nan)
        for i, row in enumerate(rows):
            if row.dtype.kind == "f" and np.isnan(row).any():
                continue
            cubes = _doubled_ranks(row, out=centred[i])[1]
            centred[i] -= p + 1  # the mean of doubled average ranks is exactly P + 1
            # Σ (2r - (P+1))² = (P³ - Σ t³) / 3 over the tie groups' sizes t, exactly (P³ - P without ties)
            sq = (p**3 - cubes) // 3
            inv_norm[i] = 1.0 / np.sqrt(float(sq)) if sq > 0 else 0.0
        return RankedRows(centred, inv_norm)

    def compare_prepared(self, model: RankedRows, prepared: RankedRows) -> np.ndarray:
        return _chunk_dot(model.centred, prepared.centred) * model.inv_norm[:, None] * prepared.inv_norm[None, :]

    def pool(self, vecs: np.ndarray) -> np.ndarray:
        # rsatoolbox pools Spearman RDMs by averaging ranks
        return rank_rows(vecs).mean(axis=0)

    def pooled_sum(self, prepared: RankedRows) -> np.ndarray:
        """The sum of the rows' centred doubled ranks: integers (exact), ranked as the mean rank is."""
        if np.isnan(prepared.inv_norm).any():
            return np.full(prepared.centred.shape[1], np.nan)
        return prepared.centred.sum(axis=0, dtype=np.int64)

    def reference(self, x: np.ndarray, y: np.ndarray) -> float:
        from scipy.stats import spearmanr

        return float(spearmanr(x, y)[0])


class CosineMetric(CorrelationMetric):
    """Cosine similarity between RDM vectors (no centring)."""

    name = "cosine"
    center = False

    def reference(self, x: np.ndarray, y: np.ndarray) -> float:
        from scipy.spatial.distance import cosine

        return float(1.0 - cosine(x, y))


def _tied_pairs(x: np.ndarray) -> float:
    """Number of pairs ``i<j`` with ``x_i == x_j``."""
    counts = np.unique(x, return_counts=True)[1].astype(np.float64)
    return float((counts * (counts - 1) / 2).sum())


class KendallTauAMetric:
    """Kendall's tau-a (ties count as discordance-free zeros; Nili et al. 2014).

    ``(concordant - discordant) / (P(P-1)/2)``, computed in O(P log P) per pair from scipy's tau-b:
    ``C - D = tau_b * sqrt((P0 - ties_x)(P0 - ties_y))`` with ``P0 = P(P-1)/2``.
    """

    name = "kendall-tau-a"

    def prepare(self, vecs: np.ndarray) -> np.ndarray:
        return np.atleast_2d(np.asarray(vecs, dtype=np.float64))

    def compare(self, model: np.ndarray, prepared: np.ndarray) -> np.ndarray:
        model = np.atleast_2d(np.asarray(model, dtype=np.float64))
        p = model.shape[1]
        pairs = p * (p - 1) / 2
        untied_m = [pairs - _tied_pairs(x) for x in model]
        untied_s = [pairs - _tied_pairs(y) for y in prepared]
        out = np.zeros((len(model), len(prepared)))
        for m, x in enumerate(model):
            for k, y in enumerate(prepared):
                if untied_m[m] > 0 and untied_s[k] > 0:  # else every pair is tied: tau-a = 0
                    tau_b = kendalltau(x, y, variant="b").statistic
                    out[m, k] = tau_b * np.sqrt(untied_m[m] * untied_s[k]) / pairs
        return out

    def pool(self, vecs: np.ndarray) -> np.ndarray:
        return rank_rows(vecs).mean(axis=0)

    def pooled_sum(self, prepared: np.ndarray) -> np.ndarray:
        """``len · pool`` of the prepared (plain) rows."""
        return rank_rows(prepared).sum(axis=0)

    def reference(self, x: np.ndarray, y: np.ndarray) -> float:
        # plain O(P^2) loop over pairs: the textbook definition
        n = len(x)
        s = sum(float(np.sum(np.sign(x[i] - x[i + 1 :]) * np.sign(y[i] - y[i + 1 :]))) for i in range(n))
        return s / (n * (n - 1) / 2)
