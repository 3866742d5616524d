"""timm models as backbones (``timm:<name>``, ``timm:<name>.<pretrained tag>``).

Default layers: the model's ``feature_info`` stage outputs (at most eight, evenly spaced) plus the
classifier. Preprocessing comes from the pretrained configuration (``timm.data.resolve_data_config``).
``imagenet`` weights are the model's default pretrained weights, read from the Hugging Face cache (or
torch.hub's cache for URL-hosted weights); offline and not cached → UsageError naming what is missing.
"""

from __future__ import annotations

import difflib
import functools
import re
import socket
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from rsabench.backbone import (
    Backbone,
    BuiltModel,
    hub_checkpoint_path,
    load_checkpoint,
    offline_hint,
    prepare_for_taps,
    resolve_weights_path,
)
from rsabench.builtin.torchvision_backbones import (
    MAX_STAGE_LAYERS,
    default_leaf_layers,
    evenly_spaced,
    offline,
    unreachable,
)
from rsabench.dataset import sha256_file
from rsabench.errors import UsageError

_HF_WEIGHTS = "pytorch_model.bin"


def _timm():
    try:
        import timm
    except ImportError:
        raise UsageError("timm backbones need the timm package (pip install timm)") from None
    return timm


@functools.lru_cache(maxsize=1)
def model_names() -> tuple[str, ...]:
    """Every timm architecture name (no pretrained tags)."""
    return tuple(_timm().list_models())


def list_names(pattern: str = "*") -> list[str]:
    """Names matching an fnmatch pattern (the ``timm:`` lister); a pattern with a ``.`` lists pretrained tags."""
    timm = _timm()
    return list(timm.list_models(pattern, pretrained="." in pattern))


def check_name(name: str) -> None:
    """UsageError with suggestions for an unknown architecture or pretrained tag."""
    timm = _timm()
    arch, _, tag = name.partition(".")
    if arch not in model_names():
        close = difflib.get_close_matches(arch, model_names(), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr('timm:' + c) for c in close)}?" if close else ""
        raise UsageError(f"unknown timm model {name!r}{hint} (see `rsabench list backbones 'timm:*'`)")
    if tag:
        tags = timm.list_pretrained(f"{arch}.*")
        if name not in tags:
            known = ", ".join(t.partition(".")[2] for t in tags) or "none"
            raise UsageError(f"timm model {arch!r} has no pretrained tag {tag!r} (known tags: {known})")


def resolve(name: str) -> Callable[[], "TimmBackbone"]:
    """Factory for ``timm:<name>``."""
    check_name(name)
    return functools.partial(TimmBackbone, name)


# -- pretrained weights from the caches -------------------------------------------------------------
def _weight_files(cfg: dict[str, Any]) -> list[str]:
    """Files timm would fetch from the Hugging Face hub, in its order (safetensors alternatives first)."""
    name = cfg.get("hf_hub_filename") or _HF_WEIGHTS
    if name.endswith(".safetensors"):
        return [name]
    if name == _HF_WEIGHTS:
        return ["model.safetensors", name]
    if name == "open_clip_pytorch_model.bin":
        return ["open_clip_model.safetensors", name]
    return ([name[:-4] + ".safetensors"] if name.endswith(".bin") else []) + [name]


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def cached_weights(cfg: dict[str, Any]) -> tuple[Path | None, str]:
    """The cached pretrained file for a pretrained config, and a description of where it was looked for."""
    expected = []
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = hub_id.partition("@")
        files = _weight_files(cfg)
        for filename in files:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found), ""
        expected.append(f"Hugging Face repo {repo} ({' or '.join(files)}) in {_hf_cache_dir()}")
    url = cfg.get("url")
    if url:
        path = hub_checkpoint_path(url)
        if path.is_file():
            return path, ""
        expected.append(str(path))
    return None, " or ".join(expected)


def _download_url(cfg: dict[str, Any]) -> str:
    if cfg.get("hf_hub_id"):
        from huggingface_hub import constants

        return str(constants.ENDPOINT)
    return str(cfg.get("url") or "")


def file_digest(path: Path) -> str:
    """sha256 of a weights file (a Hugging Face cache blob is named by its sha256 already)."""
    real = Path(path).resolve()
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
        return f"sha256:{real.name}"
    return f"sha256:{sha256_file(real)}"


def pretrained_model(name: str) -> tuple[nn.Module, Path]:
    """The model with its default pretrained weights, from cache, else downloaded when online."""
    timm = _timm()
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg is not None else {}
    if not (cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file")):
        raise UsageError(f"timm model {name!r} has no pretrained weights; use --weights random or --weights PATH")
    path, expected = cached_weights(cfg)
    if path is None:
        reason = "offline" if offline() else unreachable(_download_url(cfg))
        if reason:
            raise UsageError(
                f"timm:{name} pretrained weights are not cached ({reason}): expected {expected}; {offline_hint()}"
            )
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)
        try:
            model = timm.create_model(name, pretrained=True)  # downloads into timm's own cache
        except Exception as exc:
            raise UsageError(
                f"timm:{name} pretrained weights are not cached and the download failed ({type(exc).__name__}): "
                f"expected {expected}; {offline_hint()}"
            ) from None
        finally:
            socket.setdefaulttimeout(previous)
        path, expected = cached_weights(cfg)
        if path is None:
            raise UsageError(
                f"timm:{name}: downloaded weights not found in the cache (expected {expected}); {offline_hint()}"
            )
        return model, path
    try:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    except Exception as exc:
        raise UsageError(
            f"timm:{name}: cached weights {path} could not be loaded ({type(exc).__name__}); delete the file or "
            f"{offline_hint()}"
        ) from None
    return model, path


# -- the backbone -----------------------------------------------------------------------------------
def stage_layers(model: nn.Module) -> list[str]:
    """``feature_info`` stage outputs (evenly spaced, at most eight) + the classifier; leaves as a fallback."""
    modules = dict(model.named_modules())
    stages = [info.get("module") for info in getattr(model, "feature_info", None) or [] if isinstance(info, dict)]
    stages = [m for m in dict.fromkeys(stages) if m in modules]
    head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    head = head[0] if isinstance(head, (tuple, list)) else head
    heads = [head] if head in modules and not isinstance(modules[head], nn.Identity) else []
    if not stages:
        return default_leaf_layers(model)
    return evenly_spaced(stages, MAX_STAGE_LAYERS) + [h for h in heads if h not in stages]


def data_config(model: nn.Module) -> dict[str, Any]:
    """timm's resolved preprocessing for the model's pretrained configuration."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


class TimmBackbone(Backbone):
    """Any ``timm.create_model`` name (optionally with a pretrained tag)."""

    def __init__(self, name: str, layers: list[str] | None = None) -> None:
        check_name(name)
        self.name = name
        self.layers = layers

    def build(self, weights: str = "imagenet", seed: int = 0) -> BuiltModel:
        timm = _timm()
        path = resolve_weights_path(weights)
        info: dict[str, Any] = {"source": "timm", "model": self.name, "timm": timm.__version__}
        if weights == "imagenet":
            model, file = pretrained_model(self.name)
            cfg = model.pretrained_cfg
            digest = f"timm:{cfg.get('architecture', self.name)}.{cfg.get('tag', '')}:{file_digest(file)}"
            info["weights_file"] = str(file)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = timm.create_model(self.name, pretrained=False)
            if path is not None:
                load_checkpoint(model, path)
                digest = f"sha256:{sha256_file(path)}"
            else:
                digest = f"random-init:timm-{timm.__version__}:torch-{torch.__version__.split('+')[0]}:seed{seed}"
        cfg = model.pretrained_cfg or {}
        info.update(pretrained_tag=cfg.get("tag"), hf_hub_id=cfg.get("hf_hub_id"), preprocessing=data_config(model))
        info["fixed_input_size"] = bool(cfg.get("fixed_input_size", False))
        model.eval()
        prepare_for_taps(model)
        layers = list(self.layers) if self.layers else stage_layers(model)
        prep = info["preprocessing"]
        mean = tuple(float(v) for v in prep["mean"])
        std = tuple(float(v) for v in prep["std"])
        return BuiltModel(model, layers, mean, std, weights, digest, info)
