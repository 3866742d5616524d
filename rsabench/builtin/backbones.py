"""Built-in backbones: the ``torchvision:`` and ``timm:`` namespaces and short aliases.

Registration only: torch, torchvision and timm are imported when a name is resolved, listed or built.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from rsabench.hookspecs import hookimpl
from rsabench.registry import lazy

TORCHVISION = "rsabench.builtin.torchvision_backbones"
TIMM = "rsabench.builtin.timm_backbones"

# alias -> summary; each resolves to ``torchvision:<alias>`` (kept here so registering imports nothing heavy)
TORCHVISION_ALIASES: dict[str, str] = {
    "alexnet": "AlexNet (torchvision), conv1-5 + fc6-8",
    "vgg16": "VGG-16 (torchvision), pool1-5 + fc6-8",
    "vgg19": "VGG-19 (torchvision), pool1-5 + fc6-8",
    "resnet18": "ResNet-18 (torchvision), stem + layer1-4 + fc",
    "resnet50": "ResNet-50 (torchvision), stem + layer1-4 + fc",
    "squeezenet1_1": "SqueezeNet 1.1 (torchvision), pools + last fire + classifier",
    "densenet121": "DenseNet-121 (torchvision), stem + transitions + norm5 + classifier",
    "googlenet": "GoogLeNet (torchvision), pools + inception5b + fc",
    "mobilenet_v3_large": "MobileNet-V3 large (torchvision), feature blocks + classifier",
    "efficientnet_b0": "EfficientNet-B0 (torchvision), stages + classifier",
    "convnext_tiny": "ConvNeXt-T (torchvision), stages + classifier",
}


def _call(path: str, *args: Any) -> Any:
    return lazy(path)(*args)


def _resolver(module: str) -> Callable[[str], Callable[..., Any]]:
    return functools.partial(_call, f"{module}:resolve")


def _lister(module: str) -> Callable[[str], list[str]]:
    return functools.partial(_call, f"{module}:list_names")


@hookimpl
def register_backbones(register):
    for alias, summary in TORCHVISION_ALIASES.items():
        factory = functools.partial(lazy(f"{TORCHVISION}:TorchvisionBackbone"), alias)
        register(f"torchvision:{alias}", factory, summary=summary, aliases=(alias,))
    register.namespace(
        "torchvision",
        _resolver(TORCHVISION),
        _lister(TORCHVISION),
        summary="any torchvision classification model (stage layers, weights-enum preprocessing)",
    )
    register.namespace(
        "timm",
        _resolver(TIMM),
        _lister(TIMM),
        summary="any timm model, name[.tag] (feature_info stages + head, pretrained-config preprocessing)",
    )
