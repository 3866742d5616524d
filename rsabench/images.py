"""Image preprocessing: uint8 ``(n, H, W, 3)`` → normalised float tensors ``(n, 3, S, S)``."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

PREPROCESS = "uint8 HWC -> /255 -> resize bilinear antialias (align_corners=False) -> (x - mean) / std, float32; v1"
"""What :func:`preprocess` does, in words: part of every feature-cache key (change it when the pixels would change)."""


def preprocess(images: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Resize (bilinear, antialiased) to ``size``×``size``, scale to [0, 1] and normalise per channel."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous()
