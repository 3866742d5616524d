"""Backbones: the plugin interface, layer taps through forward hooks, weights and trainable-layer policies.

Layers are named by their module's qualified name (``features.4``), which is also the torchvision FX
node name of that module's call. Taps run the model only as far as the deepest requested layer.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class BuiltModel:
    """A constructed network plus everything a cell must record about it."""

    model: "nn.Module"
    default_layers: list[str]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights: str = "random"
    weights_digest: str = ""
    info: dict[str, Any] = field(default_factory=dict)


class Backbone:
    """Base class for backbone plugins: subclasses implement :meth:`build`."""

    name: str = ""
    default_trainable: str = "all"

    def build(self, weights: str = "imagenet", seed: int = 0) -> BuiltModel:
        raise NotImplementedError


def prepare_for_taps(model: "nn.Module") -> "nn.Module":
    """Turn off in-place activations so a tapped output is never overwritten by the next layer."""
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    return model


def set_bn_mode(model: "nn.Module", adapt: bool) -> list[str]:
    """Freeze (``adapt=False``: eval mode, running statistics used and kept) or adapt BatchNorm statistics.

    ``adapt=True`` puts only the BatchNorm modules in train mode: they normalise with batch statistics and
    update their running averages. Call it after ``model.eval()`` (which would undo it); returns their names.
    """
    from torch.nn.modules.batchnorm import _BatchNorm

    names = []
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm):
            module.train(adapt)
            names.append(name)
    return names


def check_layers(model: "nn.Module", layers: Iterable[str], backbone: str = "") -> list[str]:
    """Validate layer names against the model's modules; UsageError with suggestions otherwise."""
    names = [n for n, _ in model.named_modules() if n]
    known = set(names)
    layers = list(layers)
    for layer in layers:
        if layer not in known:
            close = difflib.get_close_matches(layer, names, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UsageError(
                f"unknown layer {layer!r} for backbone {backbone or type(model).__name__}{hint} "
                f"(see `rsabench list layers {backbone}`)"
            )
    return layers


class _EnoughLayers(Exception):
    """Raised inside a hook to stop the forward pass once every requested layer is captured."""


class LayerTaps:
    """Callable returning ``{layer: output}`` for the requested layers; stops after the deepest one."""

    def __init__(self, model: "nn.Module", layers: Sequence[str]) -> None:
        self.model = model
        self.layers = list(dict.fromkeys(layers))
        self._modules = dict(model.named_modules())

    def __call__(self, x: "torch.Tensor") -> dict[str, "torch.Tensor"]:
        captured: dict[str, "torch.Tensor"] = {}
        wanted = set(self.layers)

        def make_hook(name: str):
            def hook(_module, _inputs, output):
                if name in captured:
                    return
                out = output[0] if isinstance(output, (tuple, list)) else output
                # a copy: later in-place ops (``out += identity`` in ResNet blocks, DenseNet's final
                # ``F.relu(inplace=True)``) would otherwise change the tapped values
                captured[name] = out.clone() if hasattr(out, "clone") else out
                if wanted.issubset(captured):
                    raise _EnoughLayers

            return hook

        handles = [self._modules[name].register_forward_hook(make_hook(name)) for name in self.layers]
        try:
            self.model(x)
        except _EnoughLayers:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = wanted.difference(captured)
        if missing:
            raise UsageError(f"layers {sorted(missing)} produced no output in a forward pass")
        return {name: captured[name] for name in self.layers}


def call_spans(model: "nn.Module", example: "torch.Tensor") -> dict[str, tuple[int, int]]:
    """For every named module: (start, end) event numbers of its first call in a forward pass."""
    import torch

    clock: list[int] = [0]
    starts: dict[str, int] = {}
    spans: dict[str, tuple[int, int]] = {}
    handles = []

    def tick() -> int:
        clock[0] += 1
        return clock[0]

    def on_start(name: str) -> None:  # hooks must return None, or they replace the module's input/output
        starts.setdefault(name, tick())

    def on_end(name: str) -> None:
        spans.setdefault(name, (starts[name], tick()))

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(lambda m, i, name=name: on_start(name)))
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: on_end(name)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return spans


def trainable_parameters(model: "nn.Module", policy: str, example: "torch.Tensor") -> list["torch.nn.Parameter"]:
    """Apply a trainable-layer policy (``all``, ``none``, ``up-to:<layer>``, ``from:<layer>``).

    Sets ``requires_grad`` on every parameter and returns the trainable ones. ``up-to:L`` trains the
    modules that finish no later than L; ``from:L`` those that start no earlier than L (both inclusive).
    """
    kind, _, layer = policy.partition(":")
    if kind in ("all", "none") and not layer:
        keep = lambda name: kind == "all"  # noqa: E731
    elif kind in ("up-to", "from") and layer:
        check_layers(model, [layer])
        spans = call_spans(model, example)
        if layer not in spans:
            raise UsageError(f"invalid --trainable {policy!r}: layer {layer!r} is not called in a forward pass")
        start, end = spans[layer]
        if kind == "up-to":
            keep = lambda name: name in spans and spans[name][1] <= end  # noqa: E731
        else:
            keep = lambda name: name in spans and spans[name][0] >= start  # noqa: E731
    else:
        raise UsageError(f"invalid --trainable {policy!r}: expected all, none, up-to:<layer> or from:<layer>")
    params = []
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            p.requires_grad_(bool(keep(name)))
            if p.requires_grad:
                params.append(p)
    return params


def resolve_weights_path(weights: str) -> Path | None:
    """``PATH`` weights → an existing file, else UsageError; ``imagenet``/``random`` → None."""
    if weights in ("imagenet", "random"):
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UsageError(f"--weights {weights}: file not found (expected imagenet, random or a checkpoint file)")
    return path


CHECKPOINT_EXPECTED = "expected a state dict of tensors saved with torch.save, or a .safetensors file"


def load_weights_only(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, torch's warnings (pickle protocol, ...) silenced in
    this call only; never unpickles. A failure is explained by :func:`checkpoint_load_problem`."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def _is_zip(path: Path | None) -> bool:
    """Whether ``path`` starts like a zip archive (what ``torch.save`` writes)."""
    if path is None:
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def checkpoint_load_problem(exc: BaseException, path: Path | None = None) -> str:
    """One line saying why the checkpoint ``path`` could not be loaded, without torch's advice to load it with
    ``weights_only=False`` (which would run whatever code the file holds: rsabench never does)."""
    import pickle

    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            return f"it holds a pickled Python object ({found.group(1)}), refused without unpickling"
        return "not a tensor checkpoint (a raw pickle or another format), refused without unpickling"
    if isinstance(exc, EOFError):
        return "empty or truncated"
    if "PytorchStreamReader" in text or "zip archive" in text or _is_zip(path):
        return "a damaged or truncated torch.save archive"
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    return f"{type(exc).__name__}: {lines[0][:160]}" if lines else type(exc).__name__


def _listed(names: list[str], most: int = 3) -> str:
    return ", ".join(names[:most]) + (f", ... ({len(names)} in all)" if len(names) > most else "")


def _shape(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return str(tuple(shape)) if shape is not None else f"a {type(value).__name__}"


def state_mismatch(model: "nn.Module", state: Mapping[str, Any]) -> str:
    """How ``state`` differs from ``model``'s state dict: the first few missing and unexpected keys and
    shape mismatches (empty when the keys and shapes agree)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]  # torch fills those
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {_shape(state[k])} vs {_shape(v)}" for k, v in own.items() if k in state and _shape(state[k]) != _shape(v)
    ]
    parts = [f"{len(missing)} missing: {_listed(missing)}"] if missing else []
    parts += [f"{len(unexpected)} unexpected: {_listed(unexpected)}"] if unexpected else []
    parts += [f"{len(shapes)} of another shape (file vs model): {_listed(shapes)}"] if shapes else []
    return "; ".join(parts)


def load_checkpoint(model: "nn.Module", path: Path) -> None:
    """Load a local checkpoint (a state dict, or a dict holding one under ``state_dict``/``model``)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = load_weights_only(path)
    except Exception as exc:
        why = checkpoint_load_problem(exc, path)
        raise UsageError(
            f"--weights {path}: not a readable PyTorch checkpoint ({why}); {CHECKPOINT_EXPECTED}"
        ) from None
    if isinstance(state, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
    if not isinstance(state, Mapping):
        raise UsageError(f"--weights {path}: holds a {type(state).__name__}, not a state dict; {CHECKPOINT_EXPECTED}")
    bad = [
        k
        for k, v in state.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise UsageError(
            f"--weights {path}: checkpoint holds NaN or inf in {len(bad)} tensor(s) (first: {bad[0]}); it cannot "
            "be scored"
        )
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        why = state_mismatch(model, state) or checkpoint_load_problem(exc)
        raise UsageError(
            f"--weights {path}: checkpoint does not fit this backbone ({type(model).__name__}: {why}); expected a "
            "state dict of this architecture"
        ) from None


def offline_hint() -> str:
    return "pass --weights PATH to a local checkpoint, or --weights random"


def hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub caches a downloaded checkpoint (``$TORCH_HOME/hub/checkpoints/<file>``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
