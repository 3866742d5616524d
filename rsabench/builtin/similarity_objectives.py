"""Similarity-based training objectives: Hadsell's contrastive loss, RDM correlation and CKA.

Each objective sees one batch: ``features`` ``(B, ...)`` of the loss layer for B unique images of one
group and ``target`` ``(B, B)`` their (normalised) target dissimilarities; only the strict upper
triangle (i < j) carries pairs. Options arrive as strings from ``--objective-option [name.]key=value``
and are coerced and validated here (a bad value is a :class:`~rsabench.errors.UsageError`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from rsabench.errors import UsageError
from rsabench.objective import NORMALIZATIONS, Objective
from rsabench.rsa import correlation_rdm, unit_features

from .basic_objectives import pair_values

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


# -- option coercion ------------------------------------------------------------------------------
def float_option(objective: str, key: str, value: Any, ok: Any = None, expected: str = "a finite number") -> float:
    """``value`` (a CLI string or a number) as a finite float satisfying ``ok``; UsageError otherwise."""
    try:
        if isinstance(value, bool):
            raise ValueError
        out = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise UsageError(f"objective {objective!r}: option {key} expects {expected}, got {value!r}") from None
    if not math.isfinite(out) or (ok is not None and not ok(out)):
        raise UsageError(f"objective {objective!r}: option {key} expects {expected}, got {value!r}")
    return out


def bool_option(objective: str, key: str, value: Any) -> bool:
    """``true/false/yes/no/on/off/1/0`` (or a bool) as a bool; UsageError otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise UsageError(f"objective {objective!r}: option {key} expects true or false, got {value!r}")


def choice_option(objective: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` as one of ``choices``; UsageError naming them otherwise."""
    text = str(value).strip()
    if text not in choices:
        raise UsageError(f"objective {objective!r}: option {key} expects one of {', '.join(choices)}, got {value!r}")
    return text


# -- differentiable building blocks ---------------------------------------------------------------
def as_float(x: torch.Tensor) -> torch.Tensor:
    """Floating tensors as they are (float64 stays float64), anything else as float32."""
    return x if x.is_floating_point() else x.float()


def safe_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``<a, b> / (|a| |b|)`` over all elements; 0 (with zero gradient) when either norm is ~0."""
    na, nb = a.norm(), b.norm()
    ok = (na > eps) & (nb > eps)
    denom = torch.where(ok, na * nb, torch.ones_like(na))
    return torch.where(ok, (a * b).sum() / denom, torch.zeros_like(na))


def double_center(matrix: torch.Tensor) -> torch.Tensor:
    """``H M H`` with ``H = I - 11ᵀ/n``: subtract row and column means, add back the grand mean."""
    return matrix - matrix.mean(dim=0, keepdim=True) - matrix.mean(dim=1, keepdim=True) + matrix.mean()


# -- objectives -----------------------------------------------------------------------------------
class _TargetNormalization(Objective):
    """Shared ``normalization`` option (none | zscore | agrawal; default: the dataset's)."""

    def __init__(self, normalization: str | None = None) -> None:
        super().__init__()
        self.normalization = (
            None if normalization is None else choice_option(self.name, "normalization", normalization, NORMALIZATIONS)
        )

    def options(self) -> dict[str, Any]:
        return {"normalization": self.normalization}

    def target_normalization(self, dataset_default: str) -> str:
        return self.normalization or dataset_default


class Contrastive(_TargetNormalization):
    """Contrastive margin loss (Hadsell, Chopra & LeCun 2006, "Dimensionality reduction by learning an invariant
    mapping").

    loss = mean over pairs i<j of ``(1 - Y)·½·D² + Y·½·max(0, m - D)²``, where D is the Euclidean
    distance between the pair's flattened features after per-image centring (``center=true``) and
    L2 normalisation, so ``D² = 2·(1 - pearson)``, twice the model RDM's correlation distance
    (``center=false``: cosine geometry, D in [0, 2] as well). Y = 1 ("dissimilar") for pairs whose
    target dissimilarity is above ``threshold``; by default the ``quantile`` (0.5: the median) of the
    training pairs' target dissimilarities, fixed in :meth:`setup`. Options: ``margin`` (m > 0,
    default 1.0, i.e. dissimilar pairs pushed to pearson <= 0.5), ``threshold`` (a number, in target
    units after normalisation), ``quantile`` (in (0, 1), default 0.5), ``center`` (true | false),
    ``normalization`` (none | zscore | agrawal; default: the dataset's).
    """

    name = "contrastive"

    def __init__(
        self,
        margin: Any = 1.0,
        threshold: Any = None,
        quantile: Any = None,
        center: Any = True,
        normalization: str | None = None,
    ) -> None:
        super().__init__(normalization=normalization)
        self.margin = float_option(self.name, "margin", margin, lambda v: v > 0, "a number > 0")
        if threshold is not None and quantile is not None:
            raise UsageError(f"objective {self.name!r}: give either option threshold or option quantile, not both")
        self.fixed_threshold = None if threshold is None else float_option(self.name, "threshold", threshold)
        self.quantile = (
            0.5
            if quantile is None
            else float_option(self.name, "quantile", quantile, lambda v: 0 < v < 1, "a number in (0, 1)")
        )
        self.center = bool_option(self.name, "center", center)
        self.threshold: float | None = self.fixed_threshold

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "margin": self.margin,
            "threshold": self.fixed_threshold,
            "quantile": None if self.fixed_threshold is not None else self.quantile,
            "center": self.center,
        }

    def setup(self, train_pairs: np.ndarray) -> None:
        """Fix the similar/dissimilar threshold from the training pairs (unless ``threshold`` was given)."""
        if self.fixed_threshold is not None:
            return
        pairs = np.asarray(train_pairs, dtype=np.float64).ravel()
        pairs = pairs[np.isfinite(pairs)]
        if not len(pairs):
            raise UsageError(f"objective {self.name!r}: no finite training pair to set the threshold from")
        self.threshold = float(np.quantile(pairs, self.quantile))

    def labels(self, target: torch.Tensor) -> torch.Tensor:
        """Y per pair i<j (1 = dissimilar), row-major."""
        if self.threshold is None:
            raise RuntimeError(f"objective {self.name!r}: setup(train_pairs) must be called before loss()")
        return (pair_values(target) > self.threshold).to(torch.float32)

    def loss(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = unit_features(as_float(features), center=self.center)
        sq = (z * z).sum(dim=1)
        d2 = pair_values(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)).clamp_min(0.0)
        d = torch.sqrt(d2.clamp_min(1e-12))
        y = self.labels(target).to(d)
        per_pair = (1.0 - y) * 0.5 * d2 + y * 0.5 * torch.relu(self.margin - d) ** 2
        return per_pair.mean()


class RDMCorrelation(_TargetNormalization):
    """RDM correlation: ``1 - pearson(d_pred, d_obs)`` over the batch's pairs i<j (scale- and offset-free).

    d_pred is the model's correlation-distance RDM (``1 - pearson`` of flattened features), d_obs the
    target; both as strict-upper-triangle vectors. A differentiable RSA score in the sense of Cloos
    et al. 2024 ("Differentiable optimization of similarity scores between models and brains").
    Where the correlation is undefined (a single pair, or a constant model RDM) the loss is 1 with zero
    gradient. Options: ``normalization`` (none | zscore | agrawal; default: the dataset's).
    """

    name = "rdm-corr"

    def loss(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred = pair_values(correlation_rdm(as_float(features)))
        obs = pair_values(target).to(pred)
        return 1.0 - safe_cosine(pred - pred.mean(), obs - obs.mean())


class CKA(_TargetNormalization):
    """Linear centred kernel alignment (Kornblith et al. 2019) with the target: loss = log(1 - CKA).

    ``CKA(K, L) = <HKH, HLH>_F / (||HKH||_F · ||HLH||_F)``, ``H = I - 11ᵀ/B``. The target kernel
    comes from the RDM by double centring, ``L = -½ H D H`` (classical MDS: exact for a squared
    Euclidean distance such as a correlation distance). The model kernel K, option ``kernel``:
    ``correlation`` (default) is the Gram matrix ``Z Zᵀ`` of the flattened features centred per image
    and L2-normalised, i.e. ``-½ H D_model H`` of the model's own correlation-distance RDM, so both
    sides pass through the same transformation; ``linear`` is ``X Xᵀ`` of the raw flattened features
    (Kornblith's linear CKA on responses, as in Dapello et al. 2023, who align model and IT
    responses). CKA is computed in float64; ``1 - CKA`` is clamped at 0 and offset by ``eps``
    (default 1e-6) before the log, so the loss is finite even at a perfect fit (its floor is
    ``log(eps)``). A constant batch (zero kernel) gives CKA = 0. Options: ``kernel``, ``eps`` (in
    (0, 1)), ``normalization`` (none | zscore | agrawal; the dataset's by default; CKA is scale- but
    not offset-invariant in the target, so this matters).
    """

    name = "cka"
    KERNELS = ("correlation", "linear")

    def __init__(self, kernel: str = "correlation", eps: Any = 1e-6, normalization: str | None = None) -> None:
        super().__init__(normalization=normalization)
        self.kernel = choice_option(self.name, "kernel", kernel, self.KERNELS)
        self.eps = float_option(self.name, "eps", eps, lambda v: 0 < v < 1, "a number in (0, 1)")

    def options(self) -> dict[str, Any]:
        return {**super().options(), "kernel": self.kernel, "eps": self.eps}

    def cka(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Linear CKA between the batch's model kernel and the target kernel (float64 scalar)."""
        if self.kernel == "correlation":
            z = unit_features(as_float(features).double())
        else:
            z = features.reshape(features.shape[0], -1).double()
        k = double_center(z @ z.T)
        t = target.to(device=features.device, dtype=torch.float64)
        t = 0.5 * (t + t.T)
        t = t - torch.diag_embed(torch.diagonal(t))  # pairs only: the diagonal is zero by definition
        target_kernel = -0.5 * double_center(t)
        return safe_cosine(k, target_kernel)

    def loss(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        one_minus = (1.0 - self.cka(features, target)).clamp_min(0.0)
        return torch.log(one_minus + self.eps).to(as_float(features).dtype)
