"""What a cell needs in memory, measured on the meta device (shapes only: no memory, no compute), against
what the machine has. Used before any cell runs, so ``--image-size 10000`` is a usage error naming the
option rather than an out-of-memory crash in the middle of a sweep.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from torch import nn

FLOAT_BYTES = 4  # features, activations and parameters are float32


@dataclass(frozen=True)
class Profile:
    """Per-image element counts of one forward pass at a given image size."""

    tapped: dict[str, int]  # flattened feature size of each tapped layer
    activations: int  # every module output (what a backward pass keeps)
    largest: int  # the largest single module output
    parameters: int


class _Enough(Exception):
    """Raised in a hook once every requested layer has an output (as extraction stops there too)."""


def profile(model: "nn.Module", layers: Sequence[str], size: int) -> Profile:
    """Shapes of the module outputs for one ``size``×``size`` image, up to the deepest of ``layers``, from a
    meta-device forward pass (falls back to a real one for models with operations the meta device lacks).
    Raises what the forward pass raises when the network cannot take that size."""
    import torch

    outputs: dict[str, int] = {}
    wanted = set(layers)
    modules = dict(model.named_modules())
    leaves = {n for n, m in modules.items() if n and not any(True for _ in m.children())}

    def hook(_m, _i, out, name: str) -> None:
        out = out[0] if isinstance(out, (tuple, list)) else out
        if hasattr(out, "numel"):
            outputs.setdefault(name, int(out[0].numel()) if out.dim() else 1)
        if wanted <= outputs.keys():
            raise _Enough

    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: hook(m, i, o, n)) for n in sorted(leaves | wanted)]
    try:
        try:
            state = {k: torch.empty_like(v, device="meta") for k, v in model.state_dict(keep_vars=True).items()}
            with torch.no_grad():
                torch.func.functional_call(
                    model.eval(), state, (torch.empty(1, 3, size, size, device="meta"),), strict=False
                )
        except _Enough:
            pass
        except NotImplementedError:
            outputs.clear()
            try:
                with torch.no_grad():
                    model.eval()(torch.zeros(1, 3, size, size))
            except _Enough:
                pass
    finally:
        for h in handles:
            h.remove()
    return Profile(
        tapped={layer: outputs.get(layer, 0) for layer in layers},
        activations=sum(v for n, v in outputs.items() if n in leaves),
        largest=max(outputs.values(), default=0),
        parameters=sum(p.numel() for p in model.parameters()),
    )


def needed_bytes(p: Profile, batch_size: int, n_images: int, trains: bool) -> int:
    """A lower bound on a cell's peak memory: parameters (x4 with gradients and Adam moments when it trains),
    the unit features of every tapped layer for ``n_images``, and per batch either the largest activations
    (inference) or every activation (training keeps them for the backward pass)."""
    params = p.parameters * (4 if trains else 1)
    features = n_images * sum(p.tapped.values())
    batch = batch_size * (p.activations if trains else 2 * p.largest + sum(p.tapped.values()))
    return FLOAT_BYTES * (params + features + batch)


def available_bytes(device: str) -> int | None:
    """Free memory on ``device`` (CUDA: the driver's free bytes; CPU: MemAvailable within the cgroup limit)."""
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index
        return int(torch.cuda.mem_get_info(index if index is not None else torch.cuda.current_device())[0])
    free: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if free is None and hasattr(os, "sysconf"):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            free = None
    limit = _cgroup_limit()
    return min(x for x in (free, limit) if x is not None) if free or limit else None


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            usage = Path(path).with_name("memory.current" if path.endswith("max") else "memory.usage_in_bytes")
            try:
                return int(text) - int(usage.read_text().strip())
            except (OSError, ValueError):
                return int(text)
    return None


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"
