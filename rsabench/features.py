"""Feature extraction: per-layer correlation-distance RDMs of a network on a set of images, in bounded memory.

One forward pass over the images taps every requested layer. Each image's features are flattened, centred
and L2-normalised (``rsa.unit_features``) as they come. The unit rows of all layers are kept in memory up
to a budget and spilled to a temporary directory beyond it, split by columns into chunks of at most
:data:`CHUNK_BYTES` for all images; each layer's Gram matrix is then the sum of its chunks' ``Z_c Z_cᵀ``
(float32 products, summed in float64), so at most one chunk of one layer is formed at a time. The chunks
depend only on the number of images and the layer's width, never on where the rows waited: the RDMs are
the same bits whether they came from memory or from disk.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .backbone import LayerTaps
from .errors import CellFailure
from .rsa import rdm_from_gram, unit_features

FEATURES_VERSION = 2
"""Version of this module's numbers; part of every feature-cache key (bump when the RDMs would change)."""

FEATURE_BUDGET_BYTES = 256 << 20
"""Unit rows of all layers kept in memory during the forward pass before they are spilled to disk."""

CHUNK_BYTES = 64 << 20
"""Largest column chunk of one layer's unit rows (all images) formed at once."""


def to_device(x: torch.Tensor, device: str | torch.device, channels_last: bool) -> torch.Tensor:
    """``x`` on ``device``, channels-last where asked (4-d image batches only)."""
    x = x.to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def column_chunks(n: int, width: int) -> list[tuple[int, int]]:
    """Column ranges of a layer of ``width`` features over ``n`` images, each at most CHUNK_BYTES (float32)."""
    step = max(1024, CHUNK_BYTES // (4 * max(n, 1)))
    return [(c, min(c + step, width)) for c in range(0, width, step)]


class UnitRowStore:
    """Per-layer float32 unit rows of ``n`` images, appended batch by batch: in memory up to
    ``budget_bytes``, then on disk as one file per (layer, column chunk)."""

    def __init__(self, layers: list[str], n: int, budget_bytes: int) -> None:
        self.n, self.budget_bytes = n, budget_bytes
        self.rows: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
        self.chunks: dict[str, list[tuple[int, int]]] = {}
        self.in_memory = 0
        self._spill: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> UnitRowStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.rows.clear()
        if self._spill is not None:
            self._spill.cleanup()

    @property
    def spilled(self) -> bool:
        return self._spill is not None

    def _path(self, layer: str, chunk: int) -> Path:
        assert self._spill is not None
        return Path(self._spill.name) / f"{list(self.rows).index(layer)}-{chunk}.f32"

    def _write(self, layer: str, rows: np.ndarray) -> None:
        for k, (c0, c1) in enumerate(self.chunks[layer]):
            with open(self._path(layer, k), "ab") as fh:
                np.ascontiguousarray(rows[:, c0:c1]).tofile(fh)

    def add(self, layer: str, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        self.chunks.setdefault(layer, column_chunks(self.n, rows.shape[1]))
        if self._spill is None and self.in_memory + rows.nbytes > self.budget_bytes:
            self._spill = tempfile.TemporaryDirectory(prefix="rsabench-features-")
            for name, held in self.rows.items():
                for block in held:
                    self._write(name, block)
                held.clear()
            self.in_memory = 0
        if self._spill is None:
            self.rows[layer].append(rows)
            self.in_memory += rows.nbytes
        else:
            self._write(layer, rows)

    def _chunk(self, layer: str, k: int) -> np.ndarray:
        c0, c1 = self.chunks[layer][k]
        if self._spill is None:
            return np.concatenate([block[:, c0:c1] for block in self.rows[layer]])
        path = self._path(layer, k)
        z = np.fromfile(path, dtype=np.float32).reshape(self.n, c1 - c0)
        path.unlink()
        return z

    def gram(self, layer: str) -> np.ndarray:
        """``Z Zᵀ`` ``(n, n)`` of ``layer``'s unit rows (float64 sum of float32 chunk products); the rows
        are released from the store."""
        total = np.zeros((self.n, self.n), dtype=np.float64)
        for k in range(len(self.chunks[layer])):
            z = self._chunk(layer, k)
            total += z @ z.T
            del z
        self.in_memory -= sum(block.nbytes for block in self.rows[layer])
        self.rows[layer].clear()
        return total


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
    with UnitRowStore(layers, len(images), budget_bytes) as store:
        for start in range(0, len(images), batch_size):
            x = to_device(images[start : start + batch_size], device, channels_last)
            for layer, out in taps(x).items():
                out = out.float()
                if not bool(torch.isfinite(out).all()):
                    raise CellFailure(
                        f"layer {layer} produced non-finite features (NaN or inf): "
                        "the network's weights are broken or diverged"
                    )
                store.add(layer, unit_features(out).cpu().numpy())
                del out
            if advance:
                advance(len(x))
        rdms = np.empty((len(layers), len(images), len(images)), dtype=np.float32)
        for k, layer in enumerate(layers):
            rdms[k] = rdm_from_gram(store.gram(layer), np.float32)
    return rdms
