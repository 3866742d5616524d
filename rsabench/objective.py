"""Training objectives: the plugin interface and target normalisation (ARCHITECTURE.md, "The mathematics")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UsageError

if TYPE_CHECKING:
    import torch

NORMALIZATIONS = ("none", "zscore", "agrawal")


class Objective:
    """Base class. ``trains=False`` objectives (``frozen``) only score the network as built.

    A training objective implements :meth:`loss` on one batch: ``features`` ``(B, ...)`` of the loss
    layer for B unique images of one group, ``target`` ``(B, B)`` their target dissimilarities.
    Only the strict upper triangle (i < j) carries pairs. Options are the keyword parameters of a
    subclass's ``__init__`` (rsabench routes ``--objective-option`` values by them; an unknown key is a
    usage error before anything runs). Values arrive as strings from the command line: coerce them.
    """

    name: str = ""
    trains: bool = True

    def __init__(self) -> None:
        pass

    def options(self) -> dict[str, Any]:
        """Resolved options, recorded in the cell config."""
        return {}

    def target_normalization(self, dataset_default: str) -> str:
        """How subject RDMs are normalised before they become the training target."""
        return dataset_default

    def setup(self, train_pairs: np.ndarray) -> None:
        """Called once before training with the target dissimilarities of every training pair."""

    def loss(self, features: "torch.Tensor", target: "torch.Tensor") -> "torch.Tensor":
        raise NotImplementedError


def normalize_subject_rdms(rdms: np.ndarray, how: str, train_index: np.ndarray) -> np.ndarray:
    """Normalise each (subject, repeat) RDM, using statistics of the training-image pairs only.

    ``none``: as is. ``zscore``: (d - mean) / sd. ``agrawal``: (z + 2) / 5 (Agrawal 2019), which maps most
    z-scored dissimilarities into [0, 1], the range of a correlation distance in practice.
    """
    if how not in NORMALIZATIONS:
        raise UsageError(f"invalid target normalisation {how!r}: expected one of {', '.join(NORMALIZATIONS)}")
    rdms = np.asarray(rdms, dtype=np.float64)
    if how == "none":
        return rdms
    idx = np.asarray(train_index)
    i, j = np.triu_indices(len(idx), k=1)
    pairs = rdms[..., idx[i], idx[j]]
    mean = pairs.mean(axis=-1)[..., None, None]
    sd = pairs.std(axis=-1)[..., None, None]
    z = (rdms - mean) / np.where(sd > 0, sd, 1.0)
    out = z if how == "zscore" else (z + 2.0) / 5.0
    n = rdms.shape[-1]
    out[..., np.arange(n), np.arange(n)] = 0.0
    return out


def training_target(rdms: np.ndarray, how: str, train_index: np.ndarray) -> np.ndarray:
    """Subject-mean target RDM ``(n, n)`` after per-subject normalisation (repeats averaged too)."""
    return normalize_subject_rdms(rdms, how, train_index).mean(axis=(0, 1))
