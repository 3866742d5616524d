"""torchvision classification networks as backbones: every ``torchvision.models`` classifier.

Layer sets are curated for AlexNet and VGG-16 (the layers the Algonauts devkit reports), follow the
architecture's stages for the other families, and fall back to evenly spaced parameterised leaves.
Preprocessing (mean/std) comes from the model's default weights enum. The network is constructed exactly
as torchvision constructs it for its ImageNet weights (GoogLeNet/Inception's ``transform_input``, ViT's
image size), whatever the weights, so a checkpoint saved from one build loads into every other build.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import os
import socket
from typing import Any, Callable

import torch
from torch import nn

from rsabench.backbone import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    BuiltModel,
    hub_checkpoint_path,
    load_checkpoint,
    offline_hint,
    prepare_for_taps,
    resolve_weights_path,
)
from rsabench.dataset import sha256_file
from rsabench.errors import UsageError

# Curated taps: ReLU outputs of the convolutional stages and fully connected layers (AlexNet), the five
# max-pools and fully connected layers (VGG-16) - the layers the Algonauts devkit reports.
CURATED_LAYERS: dict[str, list[str]] = {
    "alexnet": [
        "features.1",
        "features.4",
        "features.7",
        "features.9",
        "features.11",
        "classifier.2",
        "classifier.5",
        "classifier.6",
    ],
    "vgg16": [
        "features.4",
        "features.9",
        "features.16",
        "features.23",
        "features.30",
        "classifier.1",
        "classifier.4",
        "classifier.6",
    ],
}

MAX_STAGE_LAYERS = 8
# ImageNet checkpoints hold auxiliary heads that torchvision drops after loading (``aux_logits=False``).
_AUX_PREFIXES = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}


def offline() -> bool:
    """``RSABENCH_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``): use cached weights only, never download."""
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
        for k in ("RSABENCH_OFFLINE", "HF_HUB_OFFLINE")
    )


def unreachable(url: str) -> str | None:
    """Why ``url``'s host cannot be reached (its name does not resolve and no proxy is set), else None.

    A cheap check before a download, so that a machine without network fails at once instead of retrying.
    """
    from urllib.parse import urlparse

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    host = urlparse(url).hostname or ""
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        return f"cannot resolve {host}: {exc.strerror or type(exc).__name__}"
    return None


@functools.lru_cache(maxsize=1)
def model_names() -> tuple[str, ...]:
    """Every torchvision classification model name."""
    import torchvision.models as tvm

    return tuple(tvm.list_models(module=tvm))


def list_names(pattern: str = "*") -> list[str]:
    """Model names matching an fnmatch pattern (the ``torchvision:`` namespace lister)."""
    return [n for n in model_names() if fnmatch.fnmatch(n, pattern)]


def resolve(name: str) -> Callable[[], "TorchvisionBackbone"]:
    """Factory for ``torchvision:<name>``; UsageError with suggestions for an unknown name."""
    check_name(name)
    return functools.partial(TorchvisionBackbone, name)


def check_name(name: str) -> None:
    if name not in model_names():
        close = difflib.get_close_matches(name, model_names(), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr('torchvision:' + c) for c in close)}?" if close else ""
        raise UsageError(f"unknown torchvision model {name!r}{hint} (see `rsabench list backbones 'torchvision:*'`)")


def default_weights(name: str) -> Any:
    """The weights enum ``imagenet`` stands for (torchvision's ``DEFAULT``)."""
    import torchvision.models as tvm

    return tvm.get_model_weights(name).DEFAULT


def architecture_kwargs(name: str, weights: Any) -> dict[str, Any]:
    """Constructor options torchvision sets when it builds ``name`` with its ImageNet weights."""
    if name in ("googlenet", "inception_v3"):
        return {"transform_input": True, "aux_logits": False, "init_weights": True}
    if name.startswith("vit_"):
        return {"image_size": weights.meta["min_size"][0]}
    if name.startswith("maxvit"):
        return {"input_size": weights.meta["min_size"]}
    return {}


def construct(name: str, weights: Any | None = None) -> nn.Module:
    """The network, freshly initialised with the current torch RNG (the ImageNet-weights architecture)."""
    import torchvision.models as tvm

    weights = weights if weights is not None else default_weights(name)
    return tvm.get_model(name, weights=None, **architecture_kwargs(name, weights))


def imagenet_state_dict(weights: Any) -> dict[str, torch.Tensor]:
    """Load torchvision ImageNet weights from torch.hub's cache, downloading only if absent (and online).

    Offline with no cached file → UsageError naming the expected file (never silently random).
    """
    path = hub_checkpoint_path(weights.url)
    if not path.is_file():
        reason = "offline" if offline() else unreachable(weights.url)
        if reason:
            raise UsageError(
                f"ImageNet weights not available ({reason}): expected {path} (torchvision {weights}); "
                f"put the file there, {offline_hint()}"
            )
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)
        try:
            return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
        except Exception as exc:
            raise UsageError(
                f"ImageNet weights not available: expected {path} and the download failed "
                f"({type(exc).__name__}); put the file there, {offline_hint()}"
            ) from None
        finally:
            socket.setdefaulttimeout(previous)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(
            f"ImageNet weights file {path} is unreadable ({type(exc).__name__}); delete it or {offline_hint()}"
        ) from None


def preprocessing(weights: Any) -> dict[str, Any]:
    """The weights' own preprocessing (torchvision's ``ImageClassification`` transform settings)."""
    kw = dict(weights.transforms.keywords)
    interpolation = kw.get("interpolation")
    return {
        "mean": tuple(float(v) for v in kw.get("mean", IMAGENET_MEAN)),
        "std": tuple(float(v) for v in kw.get("std", IMAGENET_STD)),
        "crop_size": kw.get("crop_size"),
        "resize_size": kw.get("resize_size", 256),
        "interpolation": getattr(interpolation, "value", "bilinear"),
        "min_size": list(weights.meta.get("min_size", (1, 1))),
    }


class TorchvisionBackbone(Backbone):
    """Any ``torchvision.models`` classification network; layers default to a curated or stage set."""

    def __init__(self, name: str, layers: list[str] | None = None) -> None:
        check_name(name)
        self.name = name
        self.layers = layers

    def build(self, weights: str = "imagenet", seed: int = 0) -> BuiltModel:
        path = resolve_weights_path(weights)
        enum = default_weights(self.name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = construct(self.name, enum)
        if weights == "imagenet":
            state = imagenet_state_dict(enum)
            drop = _AUX_PREFIXES.get(self.name, ())
            try:
                model.load_state_dict({k: v for k, v in state.items() if not k.startswith(drop)} if drop else state)
            except RuntimeError:
                raise UsageError(
                    f"ImageNet weights file {hub_checkpoint_path(enum.url)} does not fit torchvision {self.name}; "
                    f"delete it or {offline_hint()}"
                ) from None
            digest = f"torchvision:{enum}:{hub_checkpoint_path(enum.url).name}"
        elif path is not None:
            load_checkpoint(model, path)
            digest = f"sha256:{sha256_file(path)}"
        else:
            digest = f"random-init:torchvision-{torch.__version__.split('+')[0]}:seed{seed}"
        model.eval()
        prepare_for_taps(model)
        layers = list(self.layers) if self.layers else stage_layers(self.name, model)
        prep = preprocessing(enum)
        info = {"source": "torchvision", "model": self.name, "weights_enum": str(enum), "preprocessing": prep}
        return BuiltModel(model, layers, prep["mean"], prep["std"], weights, digest, info)


# -- default layer sets -----------------------------------------------------------------------------
def evenly_spaced(names: list[str], k: int = MAX_STAGE_LAYERS) -> list[str]:
    """At most ``k`` of ``names``, evenly spaced, always keeping the first and the last."""
    if len(names) <= k:
        return list(names)
    step = (len(names) - 1) / (k - 1)
    return [names[round(i * step)] for i in range(k)]


def default_leaf_layers(model: nn.Module, max_layers: int = MAX_STAGE_LAYERS) -> list[str]:
    """Evenly spaced parameterised leaf modules, ending with the last one (a fallback layer set)."""
    leaves = [n for n, m in model.named_modules() if n and not list(m.children()) and list(m.parameters(recurse=False))]
    return evenly_spaced(leaves, max_layers)


def _children(model: nn.Module, prefix: str) -> list[str]:
    return [f"{prefix}.{n}" for n, _ in model.get_submodule(prefix).named_children()]


def _pools(model: nn.Module, prefix: str) -> list[str]:
    return [f"{prefix}.{n}" for n, m in model.get_submodule(prefix).named_children() if isinstance(m, nn.MaxPool2d)]


def _last_linear(model: nn.Module) -> list[str]:
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linear[-1:]


_FIXED_STAGES: dict[str, list[str]] = {
    "resnet": ["maxpool", "layer1", "layer2", "layer3", "layer4", "fc"],
    "resnext": ["maxpool", "layer1", "layer2", "layer3", "layer4", "fc"],
    "wide": ["maxpool", "layer1", "layer2", "layer3", "layer4", "fc"],
    "densenet": [
        "features.pool0",
        "features.transition1",
        "features.transition2",
        "features.transition3",
        "features.norm5",
        "classifier",
    ],
    "googlenet": ["maxpool1", "maxpool2", "maxpool3", "maxpool4", "inception5b", "fc"],
    "inception": ["maxpool1", "maxpool2", "Mixed_5d", "Mixed_6e", "Mixed_7c", "fc"],
    "shufflenet": ["maxpool", "stage2", "stage3", "stage4", "conv5", "fc"],
}
"""Stage outputs + logits of the families whose module names are fixed."""


def _vgg_stages(model: nn.Module) -> list[str]:  # max-pools, then fc6/fc7 after their ReLU, then the logits
    return _pools(model, "features") + ["classifier.1", "classifier.4", "classifier.6"]


def _alternate_stages(model: nn.Module) -> list[str]:  # convnext, swin: features = downsampling and stages alternately
    return _children(model, "features")[1::2] + _last_linear(model)


def _vit_stages(model: nn.Module) -> list[str]:
    blocks = _children(model, "encoder.layers")
    return ["conv_proj", *evenly_spaced(blocks, MAX_STAGE_LAYERS - 2), "heads.head"]


_FAMILY_STAGES: dict[str, Callable[[nn.Module], list[str]]] = {
    "regnet": lambda m: ["stem", *_children(m, "trunk_output"), "fc"],
    "squeezenet": lambda m: _pools(m, "features") + [_children(m, "features")[-1], "classifier"],
    "convnext": _alternate_stages,
    "swin": _alternate_stages,
    "maxvit": lambda m: ["stem", *_children(m, "blocks"), *_last_linear(m)],
    "vit": _vit_stages,
}
"""Stage outputs + logits of the families whose stages are read from the model."""


def _sequential_stages(model: nn.Module) -> list[str] | None:
    """Evenly spaced children of ``features`` or ``layers`` + logits (efficientnet, mobilenet, mnasnet)."""
    for container in ("features", "layers"):
        if isinstance(getattr(model, container, None), nn.Sequential):
            return evenly_spaced(_children(model, container), MAX_STAGE_LAYERS - 1) + _last_linear(model)
    return None


def stage_layers(name: str, model: nn.Module) -> list[str]:
    """The default layer set: curated, the architecture's stage outputs + logits, or evenly spaced leaves."""
    if name in CURATED_LAYERS:
        return list(CURATED_LAYERS[name])
    family = name.split("_")[0].rstrip("0123456789")
    if name.startswith("vgg"):
        return _vgg_stages(model)
    if family in _FIXED_STAGES:
        return list(_FIXED_STAGES[family])
    if family in _FAMILY_STAGES:
        return _FAMILY_STAGES[family](model)
    stages = _sequential_stages(model)
    return stages if stages is not None else default_leaf_layers(model)


def alexnet() -> TorchvisionBackbone:
    """AlexNet (Krizhevsky et al. 2012), torchvision; 5 conv ReLUs + fc6, fc7, fc8."""
    return TorchvisionBackbone("alexnet")


def vgg16() -> TorchvisionBackbone:
    """VGG-16 (Simonyan & Zisserman 2015), torchvision; 5 max-pools + fc6, fc7, fc8."""
    return TorchvisionBackbone("vgg16")
