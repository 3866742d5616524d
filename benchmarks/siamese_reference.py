"""A deliberately straightforward two-branch Siamese trainer (Agrawal et al. 2019): the batch-RDM reference.

For each pair (i, j), i < j, of images of one group, image i goes through branch A and image j through
branch B: two separate forward passes of the same network (shared weights), i.e. two image-forwards per
pair. A minibatch of P pairs is one forward of its P "i" images and one of its P "j" images. The loss
layer's flattened features give ``d_pred = 1 - pearson(f_i, f_j)``, computed for each pair directly
from the definition (no Gram matrix); ``loss = mean over the pairs of (d_pred - d_obs)²``.

rsabench's batch-RDM trainer (`rsabench.training.train`) must give the same loss and gradients on the same
pairs with one forward per unique image; tests/test_batch_rdm_equivalence.py checks that and
benchmarks/test_training_speed.py measures the speed-up.
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np
import torch

from rsabench.backbone import LayerTaps

Pair = tuple[str, int, int]


def within_group_pairs(index: dict[str, Sequence[int]]) -> list[Pair]:
    """All ``(group, i, j)`` with ``i < j`` image indices of the same group (groups sorted, pairs row-major)."""
    pairs: list[Pair] = []
    for group in sorted(index):
        pairs.extend((group, int(i), int(j)) for i, j in combinations(sorted(int(k) for k in index[group]), 2))
    return pairs


def pair_distance(f_i: torch.Tensor, f_j: torch.Tensor) -> torch.Tensor:
    """``1 - pearson(f_i[k], f_j[k])`` for every row k: centre each flattened vector, cosine of the two."""
    a = f_i.reshape(f_i.shape[0], -1)
    b = f_j.reshape(f_j.shape[0], -1)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return 1.0 - (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))


def pair_squared_errors(
    taps: LayerTaps, layer: str, x_i: torch.Tensor, x_j: torch.Tensor, d_obs: torch.Tensor, space: str = "distance"
) -> torch.Tensor:
    """Per-pair ``(d_pred - d_obs)²``: branch A forwards ``x_i``, branch B forwards ``x_j`` (two forwards).

    ``space="fisher-z"`` compares ``atanh(1 - d)`` of both sides, as ``Dissim(space="fisher-z")``.
    """
    f_i = taps(x_i)[layer]
    f_j = taps(x_j)[layer]
    d_pred = pair_distance(f_i, f_j)
    d_obs = d_obs.to(d_pred.dtype)
    if space == "fisher-z":
        d_pred = torch.atanh((1.0 - d_pred).clamp(-0.999, 0.999))
        d_obs = torch.atanh((1.0 - d_obs).clamp(-0.999, 0.999))
    return (d_pred - d_obs) ** 2


def _gather(pairs: Sequence[Pair], images: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]):
    x_i = torch.stack([images[g][i] for g, i, _ in pairs])
    x_j = torch.stack([images[g][j] for g, _, j in pairs])
    d_obs = torch.stack([targets[g][i, j] for g, i, j in pairs])
    return x_i, x_j, d_obs


def two_branch_loss(
    model: torch.nn.Module,
    layer: str,
    images: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    pairs: Sequence[Pair],
    space: str = "distance",
) -> torch.Tensor:
    """Mean pair loss over ``pairs`` (one minibatch: one forward per branch), differentiable."""
    x_i, x_j, d_obs = _gather(pairs, images, targets)
    return pair_squared_errors(LayerTaps(model, [layer]), layer, x_i, x_j, d_obs, space).mean()


def two_branch_epoch(
    model: torch.nn.Module,
    layer: str,
    images: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    pairs: Sequence[Pair],
    optimizer: torch.optim.Optimizer,
    pairs_per_step: int,
    pairs_per_forward: int = 256,
    generator: torch.Generator | None = None,
    space: str = "distance",
) -> float:
    """One epoch over ``pairs`` in minibatches of ``pairs_per_step`` pairs (one optimizer step each).

    A minibatch larger than ``pairs_per_forward`` is forwarded in chunks whose gradients accumulate, so the
    step is exactly that of the minibatch's mean loss. ``generator`` shuffles the pairs (None: in order).
    Returns the mean pair loss of the epoch.
    """
    model.eval()
    taps = LayerTaps(model, [layer])
    order = torch.randperm(len(pairs), generator=generator).tolist() if generator is not None else range(len(pairs))
    pairs = [pairs[k] for k in order]
    total = 0.0
    for start in range(0, len(pairs), pairs_per_step):
        step_pairs = pairs[start : start + pairs_per_step]
        optimizer.zero_grad(set_to_none=True)
        for chunk_start in range(0, len(step_pairs), pairs_per_forward):
            chunk = step_pairs[chunk_start : chunk_start + pairs_per_forward]
            x_i, x_j, d_obs = _gather(chunk, images, targets)
            sq = pair_squared_errors(taps, layer, x_i, x_j, d_obs, space)
            (sq.sum() / len(step_pairs)).backward()
            total += float(sq.detach().sum())
        optimizer.step()
    return total / max(len(pairs), 1)


def pairwise_rdm(model: torch.nn.Module, layer: str, images: torch.Tensor) -> np.ndarray:
    """RDM ``(n, n)`` from per-pair two-branch forwards (each pair's images forwarded on their own)."""
    n = len(images)
    rdm = np.zeros((n, n))
    taps = LayerTaps(model, [layer])
    with torch.no_grad():
        for i, j in combinations(range(n), 2):
            d = pair_distance(taps(images[i : i + 1])[layer], taps(images[j : j + 1])[layer])
            rdm[i, j] = rdm[j, i] = float(d[0])
    return rdm
