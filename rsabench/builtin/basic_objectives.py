"""The ``frozen`` baseline and Agrawal et al. 2019's dissimilarity regression (``dissim``)."""

from __future__ import annotations

from typing import Any

import torch

from rsabench.errors import UsageError
from rsabench.objective import NORMALIZATIONS, Objective
from rsabench.rsa import correlation_rdm


def pair_values(matrix: torch.Tensor) -> torch.Tensor:
    """Strict upper triangle (i < j) of a square matrix, row-major."""
    i, j = torch.triu_indices(matrix.shape[0], matrix.shape[1], offset=1, device=matrix.device)
    return matrix[i, j]


class Frozen(Objective):
    """No training: the network as built (ImageNet, random or a checkpoint), layer chosen on validation."""

    name = "frozen"
    trains = False


class Dissim(Objective):
    """Dissimilarity regression (Agrawal et al. 2019, Siamese network on neural RDMs).

    loss = mean over pairs i<j of (d_pred(i,j) - d_obs(i,j))², d_pred = 1 - pearson of the layer's
    flattened features. ``space="fisher-z"`` regresses atanh(1 - d) of both sides instead (the
    target must then be a correlation distance, i.e. normalization ``none``).
    Options: ``normalization`` (none | zscore | agrawal; default: the dataset's), ``space``
    (distance | fisher-z).
    """

    name = "dissim"

    def __init__(self, normalization: str | None = None, space: str = "distance") -> None:
        super().__init__()
        if normalization is not None and normalization not in NORMALIZATIONS:
            raise UsageError(
                f"dissim: invalid normalization {normalization!r}: expected one of {', '.join(NORMALIZATIONS)}"
            )
        if space not in ("distance", "fisher-z"):
            raise UsageError(f"dissim: invalid space {space!r}: expected distance or fisher-z")
        self.normalization = normalization
        self.space = space

    def options(self) -> dict[str, Any]:
        return {"normalization": self.normalization, "space": self.space}

    def target_normalization(self, dataset_default: str) -> str:
        norm = self.normalization or dataset_default
        if self.space == "fisher-z" and norm != "none":
            raise UsageError("dissim: space=fisher-z needs correlation-distance targets (normalization=none)")
        return norm

    def loss(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred = pair_values(correlation_rdm(features))
        obs = pair_values(target).to(pred.dtype)
        if self.space == "fisher-z":
            pred = torch.atanh((1.0 - pred).clamp(-0.999, 0.999))
            obs = torch.atanh((1.0 - obs).clamp(-0.999, 0.999))
        return ((pred - obs) ** 2).mean()
