"""Float tolerances derived from the precision of the computation, not from what one machine printed.

Notation: ``u`` is the unit roundoff (float32 ``2**-24`` ≈ 6.0e-8, float64 ``2**-53`` ≈ 1.1e-16). An inner
product or sum of ``n`` terms computed in any order has a forward error of at most ``gamma(n)·Σ|x_i y_i|``,
``gamma(n) = n·u / (1 - n·u)`` (Higham, *Accuracy and Stability of Numerical Algorithms*, 2002, §3.1);
BLAS blocking, FMA and vector width change which of these errors occur, never the bound. Worst cases are
pessimistic by orders of magnitude, so where a bound is used as a test tolerance we take the probabilistic
bound of Higham & Mary (2019, SIAM J. Sci. Comput. 41(5)): ``gamma_p(n) = exp(λ·√n·u + n·u²/(1-u)) - 1``
holds with probability at least ``1 - 2·exp(-λ²(1-u)²/2)``; with λ = 8 a failure has probability below
3e-14 per inner product, machine-independent.

Where a test compares float64 results of the same mathematics computed two ways (scipy, rsatoolbox, a
plain loop) on inputs of magnitude O(1) and a few thousand terms, the difference is bounded by a few
``gamma_p(n)`` ≈ 8·√5000·1.1e-16 ≈ 6e-14 each: :data:`F64` = 1e-12 leaves a factor of ten for the handful
of such steps in a pipeline (centring, normalisation, ranking is exact).
"""

from __future__ import annotations

import math

import numpy as np

U32 = 2.0**-24
U64 = 2.0**-53
LAMBDA = 8.0
F64 = 1e-12
"""float64, the same quantity computed two ways over at most ~10^4 O(1) terms (see the module docstring)."""


def gamma(n: int, u: float) -> float:
    """Worst-case relative error bound of an n-term sum or inner product (Higham 2002, Lemma 3.1)."""
    return n * u / (1.0 - n * u)


def gamma_p(n: int, u: float, lam: float = LAMBDA) -> float:
    """Probabilistic bound of an n-term sum or inner product (Higham & Mary 2019, Theorem 3.1)."""
    return math.expm1(lam * math.sqrt(n) * u + n * u * u / (1.0 - u))


def condition(features: np.ndarray) -> float:
    """max over rows of ``‖x‖ / ‖x − mean(x)‖``: how much centring amplifies the rounding of x."""
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    centred = np.linalg.norm(x - x.mean(axis=1, keepdims=True), axis=1)
    return float(np.max(np.linalg.norm(x, axis=1) / centred))


def correlation_distance_tolerance(features: np.ndarray, u: float = U32) -> float:
    """Bound on ``|d̂(i,j) − d(i,j)|`` for ``d = 1 − pearson`` of flattened ``features`` (rows = images),
    computed as rsabench does in precision ``u``: round to that precision, centre, L2-normalise, Gram.

    Per row with d entries and κ = :func:`condition`: rounding the input and centring (a d-term mean)
    perturb the centred vector by a relative ``u + (γ + u)·κ``; normalising (a d-term sum of squares, a
    square root, a division) turns a relative perturbation δ of a vector into at most ``2δ + γ`` of its
    unit vector; the inner product of two unit vectors adds ``γ``, and ``1 − g`` and the symmetrisation
    ``u`` each. γ is :func:`gamma_p` of ``d + 2`` terms.
    """
    d = int(np.prod(np.shape(features)[1:]))
    g = gamma_p(d + 2, u)
    unit = 2.0 * (u + (g + u) * condition(features)) + g
    return 2.0 * unit + g + 2.0 * u
