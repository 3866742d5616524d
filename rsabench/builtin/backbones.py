"""Built-in backbones (registration only: torch is imported when a backbone is built)."""

from rsabench.hookspecs import hookimpl
from rsabench.registry import lazy


@hookimpl
def register_backbones(register):
    register("alexnet", lazy("rsabench.builtin.torchvision_backbones:alexnet"), summary="AlexNet (torchvision), conv1-5 + fc6-8")
    register("vgg16", lazy("rsabench.builtin.torchvision_backbones:vgg16"), summary="VGG-16 (torchvision), pool1-5 + fc6-8")
