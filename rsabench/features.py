"""Feature extraction: per-layer correlation-distance RDMs of a network on a set of images, in bounded memory.

One forward pass over the images taps every requested layer. Each image's features are flattened, centred
and L2-normalised (``rsa.unit_features``) as they come; the unit rows of all layers are kept in memory up to
a budget and spilled to a temporary directory beyond it, and the RDMs are then formed one layer at a time,
so at most one layer's features of all images are in memory at once. The RDM is ``1 - Z Zᵀ`` in float32,
the same whether the rows came from memory or from disk.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .backbone import LayerTaps
from .errors import CellFailure
from .rsa import rdm_from_unit_rows, unit_features

FEATURES_VERSION = 1
"""Version of this module's numbers; part of every feature-cache key (bump when the RDMs would change)."""

FEATURE_BUDGET_BYTES = 1 << 30
"""Unit rows of all layers kept in memory during the forward pass before they are spilled to disk."""


def to_device(x: torch.Tensor, device: str | torch.device, channels_last: bool) -> torch.Tensor:
    """``x`` on ``device``, channels-last where asked (4-d image batches only)."""
    x = x.to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


class UnitRowStore:
    """Per-layer float32 unit rows, appended batch by batch: in memory up to ``budget_bytes``, then on disk."""

    def __init__(self, layers: list[str], budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.rows: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
        self.width: dict[str, int] = {}
        self.in_memory = 0
        self._spill: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> "UnitRowStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.rows.clear()
        if self._spill is not None:
            self._spill.cleanup()

    @property
    def spilled(self) -> bool:
        return self._spill is not None

    def _path(self, layer: str) -> Path:
        assert self._spill is not None
        return Path(self._spill.name) / f"{list(self.rows).index(layer)}.f32"

    def add(self, layer: str, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        self.width[layer] = rows.shape[1]
        if self._spill is None and self.in_memory + rows.nbytes > self.budget_bytes:
            self._spill = tempfile.TemporaryDirectory(prefix="rsabench-features-")
            for name, held in self.rows.items():
                with open(self._path(name), "ab") as fh:
                    for block in held:
                        block.tofile(fh)
                held.clear()
            self.in_memory = 0
        if self._spill is None:
            self.rows[layer].append(rows)
            self.in_memory += rows.nbytes
        else:
            with open(self._path(layer), "ab") as fh:
                rows.tofile(fh)

    def take(self, layer: str) -> np.ndarray:
        """All rows of ``layer`` ``(n, width)``; released from the store."""
        if self._spill is None:
            z = np.concatenate(self.rows[layer])
            self.in_memory -= z.nbytes
            self.rows[layer].clear()
            return z
        path = self._path(layer)
        z = np.fromfile(path, dtype=np.float32).reshape(-1, self.width[layer])
        path.unlink()
        return z


@torch.no_grad()
def extract_rdms(
    model: torch.nn.Module,
    layers: list[str],
    images: torch.Tensor,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    advance: Callable[[int], None] | None = None,
    channels_last: bool = False,
    budget_bytes: int = FEATURE_BUDGET_BYTES,
) -> np.ndarray:
    """Correlation-distance RDMs ``(layers, n, n)`` (float32) of ``images`` under ``model``'s current state.

    Always full precision (``--amp`` applies to training steps only). Non-finite features are a
    :class:`~rsabench.errors.CellFailure` naming the layer, never an RDM.
    """
    taps = LayerTaps(model, layers)
    with UnitRowStore(layers, budget_bytes) as store:
        for start in range(0, len(images), batch_size):
            x = to_device(images[start : start + batch_size], device, channels_last)
            for layer, out in taps(x).items():
                out = out.float()
                if not bool(torch.isfinite(out).all()):
                    raise CellFailure(
                        f"layer {layer} produced non-finite features (NaN or inf): the network's weights are broken or "
                        "diverged"
                    )
                store.add(layer, unit_features(out).cpu().numpy())
            if advance:
                advance(len(x))
        rdms = np.empty((len(layers), len(images), len(images)), dtype=np.float32)
        for k, layer in enumerate(layers):
            rdms[k] = rdm_from_unit_rows(store.take(layer))
    return rdms
