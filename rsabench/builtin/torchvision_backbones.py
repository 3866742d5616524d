"""torchvision classification networks as backbones (AlexNet, VGG-16 with curated layer sets)."""

from __future__ import annotations

import socket
from typing import Any

import torch

from rsabench.backbone import (
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
        "features.1", "features.4", "features.7", "features.9", "features.11",
        "classifier.2", "classifier.5", "classifier.6",
    ],
    "vgg16": [
        "features.4", "features.9", "features.16", "features.23", "features.30",
        "classifier.1", "classifier.4", "classifier.6",
    ],
}


def imagenet_state_dict(weights: Any) -> dict[str, torch.Tensor]:
    """Load torchvision ImageNet weights from torch.hub's cache, downloading only if absent.

    Offline with no cached file → UsageError naming the expected file (never silently random).
    """
    path = hub_checkpoint_path(weights.url)
    if not path.is_file():
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)
        try:
            return weights.get_state_dict(progress=False, check_hash=True)
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
        raise UsageError(f"ImageNet weights file {path} is unreadable ({type(exc).__name__}); delete it or {offline_hint()}") from None


class TorchvisionBackbone(Backbone):
    """Any ``torchvision.models`` classification network; layers default to a curated set or the leaves."""

    def __init__(self, name: str, layers: list[str] | None = None) -> None:
        import torchvision.models as tvm

        if name not in tvm.list_models(module=tvm):
            raise UsageError(f"unknown torchvision model {name!r} (see `rsabench list backbones 'torchvision:*'`)")
        self.name = name
        self.layers = layers if layers is not None else CURATED_LAYERS.get(name)

    def build(self, weights: str = "imagenet", seed: int = 0) -> BuiltModel:
        import torchvision.models as tvm

        path = resolve_weights_path(weights)
        torch.manual_seed(seed)
        model = tvm.get_model(self.name, weights=None)
        enum = tvm.get_model_weights(self.name).DEFAULT
        mean, std = tuple(enum.transforms.keywords.get("mean", (0.485, 0.456, 0.406))), tuple(
            enum.transforms.keywords.get("std", (0.229, 0.224, 0.225))
        )
        if weights == "imagenet":
            model.load_state_dict(imagenet_state_dict(enum))
            digest = f"torchvision:{enum}:{hub_checkpoint_path(enum.url).name}"
        elif path is not None:
            load_checkpoint(model, path)
            digest = f"sha256:{sha256_file(path)}"
        else:
            digest = f"random-init:torchvision-{torch.__version__.split('+')[0]}:seed{seed}"
        model.eval()
        prepare_for_taps(model)
        layers = self.layers or default_leaf_layers(model)
        return BuiltModel(model, layers, mean, std, weights, digest, {"source": "torchvision", "weights_enum": str(enum)})


def default_leaf_layers(model: torch.nn.Module, max_layers: int = 8) -> list[str]:
    """Evenly spaced parameterised leaf modules, ending with the last one (a fallback layer set)."""
    leaves = [n for n, m in model.named_modules() if n and not list(m.children()) and list(m.parameters(recurse=False))]
    if len(leaves) <= max_layers:
        return leaves
    step = (len(leaves) - 1) / (max_layers - 1)
    return [leaves[round(i * step)] for i in range(max_layers)]


def alexnet() -> TorchvisionBackbone:
    """AlexNet (Krizhevsky et al. 2012), torchvision; 5 conv ReLUs + fc6, fc7, fc8."""
    return TorchvisionBackbone("alexnet")


def vgg16() -> TorchvisionBackbone:
    """VGG-16 (Simonyan & Zisserman 2015), torchvision; 5 max-pools + fc6, fc7, fc8."""
    return TorchvisionBackbone("vgg16")
