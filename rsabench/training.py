"""Feature extraction and the batch-RDM trainer (DESIGN §5).

One forward pass per unique image: a batch of B images from one group yields all B(B-1)/2 pairs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch

from .backbone import LayerTaps, trainable_parameters
from .errors import UsageError
from .objective import Objective
from .rsa import EPS

OPTIMIZERS = ("adam", "sgd", "adamw")


@torch.no_grad()
def extract_rdms(
    model: torch.nn.Module,
    layers: list[str],
    images: torch.Tensor,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    advance: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Correlation-distance RDMs ``(layers, n, n)`` of ``images``, features normalised per batch.

    Per image: flatten, centre across features, L2-normalise; then one float32 Gram matrix per layer.
    """
    taps = LayerTaps(model, layers)
    units: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        for layer, out in taps(x).items():
            z = out.reshape(len(x), -1).float()
            z = z - z.mean(dim=1, keepdim=True)
            units[layer].append((z / (z.norm(dim=1, keepdim=True) + EPS)).cpu())
        if advance:
            advance(len(x))
    rdms = np.empty((len(layers), len(images), len(images)), dtype=np.float32)
    for k, layer in enumerate(layers):
        z = torch.cat(units[layer])
        rdm = 1.0 - z @ z.T
        rdm = 0.5 * (rdm + rdm.T)
        rdm.fill_diagonal_(0.0)
        rdms[k] = rdm.numpy()
        units[layer].clear()
    return rdms


@dataclass
class TrainSettings:
    """Hyper-parameters of one training run (all recorded in the cell config)."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    patience: int = 0
    trainable: str = "all"

    def validate(self) -> None:
        if self.epochs < 0:
            raise UsageError(f"--epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 2:
            raise UsageError(f"--batch-size must be >= 2 (pairs need two images), got {self.batch_size}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")


@dataclass
class TrainResult:
    best_epoch: int
    best_value: float
    epochs_run: int
    train_loss: list[float] = field(default_factory=list)
    best_state: dict[str, Any] | None = None


def make_optimizer(params: Iterable[torch.nn.Parameter], s: TrainSettings) -> torch.optim.Optimizer:
    params = list(params)
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)


def epoch_batches(
    train_index: dict[str, np.ndarray], batch_size: int, generator: torch.Generator
) -> list[tuple[str, np.ndarray]]:
    """Shuffled within-group batches of near-equal size (each >= 2 images), in shuffled order."""
    batches: list[tuple[str, np.ndarray]] = []
    for group in sorted(train_index):
        idx = np.asarray(train_index[group])
        if len(idx) < 2:
            continue
        perm = idx[torch.randperm(len(idx), generator=generator).numpy()]
        n_batches = max(1, int(np.ceil(len(idx) / batch_size)))
        n_batches = min(n_batches, len(idx) // 2)
        batches.extend((group, chunk) for chunk in np.array_split(perm, n_batches))
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[k] for k in order]


def train(
    model: torch.nn.Module,
    loss_layer: str,
    objective: Objective,
    images: dict[str, torch.Tensor],
    train_index: dict[str, np.ndarray],
    targets: dict[str, torch.Tensor],
    settings: TrainSettings,
    seed: int,
    evaluate: Callable[[int], float],
    device: str | torch.device = "cpu",
    advance: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``objective`` at ``loss_layer``; ``evaluate(epoch)`` returns the validation value.

    The model stays in eval mode (BatchNorm statistics frozen, dropout off); gradients still flow.
    The best-on-validation state (epoch 0 = untrained included) is kept; early stopping after
    ``settings.patience`` epochs without improvement (0 = never).
    """
    model.eval()
    example = next(iter(images.values()))[:1].to(device)
    params = trainable_parameters(model, settings.trainable, example)
    if not params:
        raise UsageError(f"--trainable {settings.trainable!r} leaves no parameter to train")
    optimizer = make_optimizer(params, settings)
    taps = LayerTaps(model, [loss_layer])
    generator = torch.Generator().manual_seed(seed)

    best_value = evaluate(0)
    result = TrainResult(best_epoch=0, best_value=best_value, epochs_run=0, best_state=copy.deepcopy(model.state_dict()))
    for epoch in range(1, settings.epochs + 1):
        losses = []
        for group, idx in epoch_batches(train_index, settings.batch_size, generator):
            x = images[group][idx].to(device)
            t = targets[group][idx][:, idx].to(device)
            loss = objective.loss(taps(x)[loss_layer], t)
            if not torch.isfinite(loss):
                raise RuntimeError(f"objective {objective.name!r} returned a non-finite loss at epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if advance:
                advance(len(idx))
        result.train_loss.append(float(np.mean(losses)) if losses else float("nan"))
        result.epochs_run = epoch
        value = evaluate(epoch)
        if value > result.best_value:
            result.best_value, result.best_epoch = value, epoch
            result.best_state = copy.deepcopy(model.state_dict())
        elif settings.patience and epoch - result.best_epoch >= settings.patience:
            break
    for p in model.parameters():
        p.requires_grad_(False)
    return result
