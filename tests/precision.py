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


def correlation_tolerance(
    x: np.ndarray, y: np.ndarray, err_x: float = 0.0, err_y: float = 0.0, u: float = U64
) -> float:
    """Bound on ``|r̂ − r|`` for Pearson ``r(x, y)`` computed in precision ``u`` from vectors known only to
    within ``err_x``, ``err_y`` per entry: the rounding of the correlation itself (the
    :func:`correlation_distance_tolerance` of the pair) plus the perturbation (a centred vector ``c`` moved
    by ``δ``, ``‖δ‖ ≤ √P·err``, moves ``c/‖c‖`` by at most ``2‖δ‖/‖c‖``)."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    root_p = math.sqrt(len(x))
    moved = sum(2.0 * root_p * e / np.linalg.norm(v - v.mean()) for v, e in ((x, err_x), (y, err_y)) if e)
    return correlation_distance_tolerance(np.stack([x, y]), u) + float(moved)


def central_difference_tolerance(
    h: float, value_error: float, slope: float, third: float, x_max: float, u: float = U64
) -> float:
    """Bound on ``|(f̂(fl(x+h)) − f̂(fl(x−h)))/(2h) − f'(x)|``: Taylor truncation ``h²/6·max|f'''|`` (``third``),
    the evaluation errors ``|f̂ − f| ≤ value_error`` over ``h``, and the rounding of ``x ± h`` (the step is off
    by ``≤ 2u(|x|+h)``) and of the quotient, times ``max|f'|`` (``slope``)."""
    return h * h / 6.0 * third + value_error / h + slope * u * ((x_max + h) / h + 2.0)


def mean_tolerance(values: np.ndarray, u: float = U64) -> float:
    """Bound on how far two evaluations of the mean of the same ``n`` values (any summation order) can
    differ: each is off by at most ``(gamma(n) + u)·max|v|``. A percentile of such means, or a linear
    interpolation between two of them, is off by at most as much plus ``3u·max|v|``."""
    v = np.abs(np.asarray(values, dtype=np.float64))
    return (2.0 * (gamma(len(v), u) + u) + 3.0 * u) * float(v.max())


def ttest_p_tolerance(values: np.ndarray, delta: float) -> float:
    """Bound on the change of the two-sided one-sample t-test p-value (against 0) of ``values`` when each
    value moves by at most ``delta``: the mean moves by ``≤ δ``, the sample SD by ``≤ δ·√(n/(n−1))``, so
    ``t = √n·m/s`` by ``≤ Δt``; ``p = 2·sf(|t|)`` then moves by ``≤ 2·max pdf·Δt`` over ``[|t|−Δt, |t|+Δt]``.
    scipy's ``sf`` itself is the same function on both sides; its rounding adds ``F64·p`` at most."""
    from scipy.stats import t as student_t

    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    m, s = abs(float(v.mean())), float(v.std(ddof=1))
    ds = delta * math.sqrt(n / (n - 1))
    t = math.sqrt(n) * m / s
    dt = math.sqrt(n) * (delta / (s - ds) + m * ds / (s * (s - ds)))
    pdf = float(student_t.pdf(max(t - dt, 0.0), n - 1))  # the density falls with |t|: its max on the interval
    return 2.0 * pdf * dt + F64 * 2.0 * float(student_t.sf(t, n - 1))


def network_tolerance(model, x, layer: str, u: float = U32) -> float:
    """Bound on ``max|ŷ₁ − ŷ₂|`` between two float32 evaluations of ``layer``'s output for one input ``x`` (batch
    of 1) that differ only in the order of their inner products (batch size, BLAS/oneDNN blocking, FMA).

    Each conv/linear layer with ``K``-term inner products adds an error of 2-norm at most ``γ_p(K)·‖|W||x|‖``,
    i.e. a relative ``γ_p(K)·c``, ``c = ‖|W||x|‖/‖Wx‖`` (its cancellation, measured here in float64: a property
    of the weights and data, not of the machine). Assumed: errors pass through the later layers with the
    signal's own gain (BatchNorm, ReLU, pooling, residual sums do not amplify them relative to the signal;
    a worst-case |W|-chain is ~1e10 for a ResNet and useless). Hence ``2·Σ γ_p(K)·c·‖y‖₂``.
    """
    import copy

    import torch
    from torch import nn

    from rsabench.backbone import LayerTaps

    m = copy.deepcopy(model).double().eval()
    relative: list[float] = []

    def hook(module, inputs, out):
        bias = None if module.bias is None else module.bias.abs()
        if isinstance(module, nn.Conv2d):
            a = module._conv_forward(inputs[0].abs(), module.weight.abs(), bias)
        else:
            a = nn.functional.linear(inputs[0].abs(), module.weight.abs(), bias)
        relative.append(gamma_p(module.weight[0].numel(), u) * float(a.norm() / out.norm()))

    for module in m.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_hook(hook)
    with torch.no_grad():
        y = LayerTaps(m, [layer])(x.double())[layer]
    return 2.0 * sum(relative) * float(y.norm())


def zscore_tolerance(values: np.ndarray, x: np.ndarray | float, u: float = U64) -> float:
    """Bound on how far two evaluations of ``z = (x − mean)/sd`` (``sd`` with ddof 0, both over the ``n``
    ``values``) can differ: the mean is off by ``μ ≤ (γ(n) + u)·max|v|``, which moves the sd only at second
    order (Σ(v − m) = 0); the sd's own rounding is ``≤ γ(n + 4)`` relative; so each ``z`` is off by
    ``(μ + u·|x − m|)/sd + |z|·γ(n + 5)``."""
    v = np.asarray(values, dtype=np.float64).ravel()
    n, m, s = len(v), float(v.mean()), float(v.std())
    mu = (gamma(n, u) + u) * float(np.abs(v).max())
    dev = float(np.max(np.abs(np.asarray(x, dtype=np.float64) - m)))
    return 2.0 * ((mu + u * dev) / s + dev / s * gamma(n + 5, u))
