"""Backbones: namespaces and aliases, default layer sets, taps, preprocessing, weights, BatchNorm and dropout.

Everything runs with random weights on tiny images; ImageNet weights are exercised through fake cache
entries (torch.hub and Hugging Face layouts) so no test ever touches the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from precision import network_tolerance
from torch import nn

from rsabench.backbone import LayerTaps, set_bn_mode
from rsabench.builtin.backbones import TORCHVISION_ALIASES
from rsabench.errors import UsageError
from rsabench.plugins import build_plugins

ROOT = Path(__file__).resolve().parents[1]
# AlexNet's last max-pool needs >= 63 px (torchvision's meta["min_size"]); everything else runs at 32 px.
SIZE = {"alexnet": 64}


@pytest.fixture(scope="module")
def plugins():
    return build_plugins()


def build(plugins, name: str, weights: str = "random", seed: int = 0):
    return plugins.backbones.get(name)().build(weights=weights, seed=seed)


_SHARED: dict[str, object] = {}


def shared(plugins, name: str):
    """A random-weights (seed 0) build shared by the tests that only read it (building VGG costs seconds)."""
    if name not in _SHARED:
        _SHARED[name] = build(plugins, name)
    return _SHARED[name]


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- registration, names, listing ---------------------------------------------------------------------
def test_registration_imports_neither_torchvision_nor_timm():
    code = (
        "import sys; from rsabench.plugins import build_plugins; p = build_plugins(); "
        "assert {'timm', 'torchvision'} <= set(p.backbones.namespaces); "
        "mods = ['torchvision', 'timm', 'rsabench.builtin.torchvision_backbones', 'rsabench.builtin.timm_backbones']; "
        "print([m for m in mods if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("alias", sorted(TORCHVISION_ALIASES))
def test_alias_resolves_to_namespace_builds_and_taps(plugins, alias):
    import torchvision.models as tvm

    assert plugins.backbones.canonical(alias) == f"torchvision:{alias}"
    built = shared(plugins, alias)
    assert not any(m.training for m in built.model.modules()), "backbones are built in eval mode"
    size = SIZE.get(alias, 32)
    with torch.no_grad():
        out = LayerTaps(built.model, built.default_layers)(images(2, size))
    assert list(out) == built.default_layers and 4 <= len(out) <= 10
    for layer, value in out.items():
        assert value.shape[0] == 2 and torch.isfinite(value).all(), layer
    assert out[built.default_layers[-1]].reshape(2, -1).shape[1] == 1000, "the last default layer is the logits"
    reference = tvm.get_model_weights(alias).DEFAULT.transforms()  # the weights' own preprocessing
    assert built.mean == tuple(reference.mean) and built.std == tuple(reference.std)
    assert built.info["preprocessing"]["crop_size"] == reference.crop_size[0]


def test_curated_and_stage_layer_sets(plugins):
    vgg = shared(plugins, "vgg16")
    assert vgg.default_layers == [
        "features.4",
        "features.9",
        "features.16",
        "features.23",
        "features.30",
        "classifier.1",
        "classifier.4",
        "classifier.6",
    ]
    assert all(isinstance(vgg.model.get_submodule(n), nn.MaxPool2d) for n in vgg.default_layers[:5])
    assert shared(plugins, "resnet18").default_layers == ["maxpool", "layer1", "layer2", "layer3", "layer4", "fc"]
    timm_resnet = shared(plugins, "timm:resnet18")
    assert timm_resnet.default_layers == ["act1", "layer1", "layer2", "layer3", "layer4", "fc"]  # feature_info + head


# One member of every torchvision family not covered by an alias; built on the meta device (no memory, no
# init cost), so the forward pass checks each default layer is called and the last one is the logits.
FAMILIES = {
    "vgg11_bn": 32,
    "resnext50_32x4d": 32,
    "wide_resnet50_2": 32,
    "squeezenet1_0": 32,
    "inception_v3": 75,
    "shufflenet_v2_x0_5": 32,
    "mnasnet0_5": 32,
    "mobilenet_v2": 32,
    "efficientnet_v2_s": 33,
    "swin_t": 224,
    "swin_v2_t": 256,
    "maxvit_t": 224,
    "vit_b_32": 224,
    "vit_h_14": 518,
    "convnext_small": 32,
    "densenet161": 32,
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_torchvision_family_has_a_stage_layer_set(name):
    from rsabench.builtin import torchvision_backbones as tb

    with torch.device("meta"):
        model = tb.construct(name).eval()
    layers = tb.stage_layers(name, model)
    assert layers != tb.default_leaf_layers(model), "a family rule, not the fallback"
    with torch.no_grad():
        out = LayerTaps(model, layers)(torch.zeros(1, 3, FAMILIES[name], FAMILIES[name], device="meta"))
    assert out[layers[-1]].numel() == 1000


def test_regnet_stage_layers():
    from rsabench.builtin import torchvision_backbones as tb

    model = tb.construct("regnet_y_400mf").eval()  # regnet cannot be built on the meta device
    layers = tb.stage_layers("regnet_y_400mf", model)
    assert layers == [
        "stem",
        "trunk_output.block1",
        "trunk_output.block2",
        "trunk_output.block3",
        "trunk_output.block4",
        "fc",
    ]
    with torch.no_grad():
        assert LayerTaps(model, layers)(images(1, 32))["fc"].shape == (1, 1000)


def test_namespaced_backbones_build_and_tap(plugins):
    for name in ("timm:resnet18", "torchvision:squeezenet1_1"):
        built = shared(plugins, name)
        with torch.no_grad():
            out = LayerTaps(built.model, built.default_layers)(images(2, 32))
        assert set(out) == set(built.default_layers)
        assert all(torch.isfinite(v).all() for v in out.values())
    assert shared(plugins, "torchvision:squeezenet1_1").default_layers == [
        "features.2",
        "features.5",
        "features.8",
        "features.12",
        "classifier",
    ]


def test_timm_preprocessing_comes_from_the_pretrained_config(plugins):
    built = build(plugins, "timm:test_vit")  # timm's tiny test ViT: (0.5, 0.5, 0.5) normalisation, 160 px
    assert built.mean == (0.5, 0.5, 0.5) and built.std == (0.5, 0.5, 0.5)
    assert built.info["preprocessing"]["input_size"] == [3, 160, 160] and built.info["fixed_input_size"] is True
    assert built.default_layers[-1] == "head" and all(
        layer.startswith("blocks.") for layer in built.default_layers[:-1]
    )
    assert shared(plugins, "timm:resnet18").mean == (0.485, 0.456, 0.406)


def test_wildcard_listing(plugins):
    timm_names = plugins.backbones.namespaces["timm"].lister("res*")
    assert "resnet18" in timm_names and "resnet50" in timm_names and all(n.startswith("res") for n in timm_names)
    assert plugins.backbones.namespaces["torchvision"].lister("vgg1?") == ["vgg11", "vgg13", "vgg16", "vgg19"]
    assert "resnet18.tv_in1k" in plugins.backbones.namespaces["timm"].lister("resnet18.*")


def test_cli_lists_namespace_members_once():
    from click.testing import CliRunner

    from rsabench.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["list", "backbones", "timm:resnet1*"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "timm:resnet18 " in result.output and "timm:resnet50" not in result.output
    result = runner.invoke(cli, ["list", "backbones", "torchvision:vgg1*"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.output.count("torchvision:vgg16 ") == 1 and "torchvision:vgg11_bn" in result.output
    result = runner.invoke(cli, ["list", "layers", "timm:resnet18"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("* layer1 ") for line in lines) and any(line.startswith("  conv1 ") for line in lines)


@pytest.mark.parametrize(
    "name, hint",
    [
        ("timm:resnet181", "timm:resnet18"),
        ("torchvision:resnet19", "torchvision:resnet18"),
        ("alexnt", "alexnet"),
        ("timm:resnet18.no_such_tag", "tv_in1k"),
    ],
)
def test_unknown_backbone_is_a_usage_error_with_suggestions(plugins, name, hint):
    with pytest.raises(UsageError, match=hint):
        plugins.backbones.get(name)


# -- taps and in-place pitfalls ------------------------------------------------------------------------
def test_tapped_conv_before_inplace_relu_is_the_pre_activation(plugins):
    built = shared(plugins, "alexnet")  # features.0 (conv1) is followed by ReLU(inplace=True) in torchvision
    x = images(2, 64)
    with torch.no_grad():
        tapped = LayerTaps(built.model, ["features.0", "features.4"])(x)["features.0"]
        direct = built.model.features[0](x)
    assert (tapped < 0).any(), "a rectified tap would have no negative values"
    # the same conv on the same tensor (same shapes, kernel and threads): bit-identical
    torch.testing.assert_close(tapped, direct, rtol=0, atol=0)


def test_tap_is_not_changed_by_later_inplace_ops(plugins):
    # ResNet blocks do ``out += identity`` on bn2's output; DenseNet applies F.relu(inplace=True) to norm5's
    built = shared(plugins, "resnet18")
    m, x = built.model, images(2, 32)
    with torch.no_grad():
        tapped = LayerTaps(m, ["layer1.0.bn2", "fc"])(x)["layer1.0.bn2"]
        block, h = m.layer1[0], m.maxpool(m.relu(m.bn1(m.conv1(x))))
        direct = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h)))))
    # the same modules called in the same order on the same tensors: bit-identical (an overwritten tap is not)
    torch.testing.assert_close(tapped, direct, rtol=0, atol=0)
    dense = shared(plugins, "densenet121").model
    with torch.no_grad():
        norm5 = LayerTaps(dense, ["features.norm5", "classifier"])(x)["features.norm5"]
        torch.testing.assert_close(norm5, dense.features(x), rtol=0, atol=0)
    assert (norm5 < 0).any()


def test_dropout_is_off_features_are_repeatable(plugins):
    built = shared(plugins, "alexnet")  # classifier.0 and classifier.3 are Dropout(0.5)
    assert any(isinstance(m, nn.Dropout) for m in built.model.modules())
    x = images(3, 64)
    with torch.no_grad():
        a = LayerTaps(built.model, ["classifier.5"])(x)["classifier.5"]
        b = LayerTaps(built.model, ["classifier.5"])(x)["classifier.5"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # the same forward twice: bit-identical unless dropout is on


def test_batchnorm_frozen_by_default_and_adaptable(plugins):
    model = build(plugins, "resnet18").model
    bn_names = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    x = images(4, 32)
    before = model.bn1.running_mean.clone()
    with torch.no_grad():
        batch = LayerTaps(model, ["layer2"])(x)["layer2"]
        alone = LayerTaps(model, ["layer2"])(x[:1])["layer2"]
    # float32 through 10 convs, batch 4 vs 1 (other conv blocking): the bound of that computation
    tol = network_tolerance(model, x[:1], "layer2")
    torch.testing.assert_close(batch[:1], alone, rtol=0, atol=tol)  # batch-independent
    assert torch.equal(model.bn1.running_mean, before)

    assert set_bn_mode(model, adapt=True) == bn_names and len(bn_names) == 20
    assert all(m.training == isinstance(m, nn.BatchNorm2d) for m in model.modules() if m is not model)
    with torch.no_grad():
        batch = LayerTaps(model, ["layer2"])(x)["layer2"]
    assert not torch.equal(model.bn1.running_mean, before), "adapting BatchNorm updates running statistics"
    assert not torch.allclose(batch[:1], alone, atol=1e-3), "adapting BatchNorm normalises with batch statistics"
    # the bug the frozen check guards against (batch statistics) moves the output far beyond its tolerance
    assert float((batch[:1] - alone).abs().max()) > 10 * tol

    set_bn_mode(model, adapt=False)
    assert not any(m.training for m in model.modules())


# -- weights --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet18", "timm:resnet18"])
def test_random_init_is_seeded_and_leaves_the_global_rng_alone(plugins, name):
    state = torch.random.get_rng_state()
    builds = [build(plugins, name, seed=s) for s in (7, 7, 8)]
    assert torch.equal(torch.random.get_rng_state(), state)
    a, b, c = (x.model.state_dict() for x in builds)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])
    assert builds[0].weights_digest.endswith("seed7") and builds[2].weights_digest.endswith("seed8")


@pytest.mark.parametrize(
    "name, suffix", [("resnet18", ".pt"), ("timm:resnet18", ".pt"), ("timm:resnet18", ".safetensors")]
)
def test_local_checkpoint_round_trips(plugins, tmp_path, name, suffix):
    source = build(plugins, name, seed=3).model
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    else:
        torch.save({"state_dict": source.state_dict()}, path)
    loaded = build(plugins, name, weights=str(path), seed=0)
    assert loaded.weights_digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    x = images(2, 32)
    with torch.no_grad():
        want = LayerTaps(source, loaded.default_layers)(x)
        got = LayerTaps(loaded.model, loaded.default_layers)(x)
        fresh = LayerTaps(shared(plugins, name).model, ["fc"])(x)["fc"]
    for layer in loaded.default_layers:  # the same weights (a bitwise copy) and input: bit-identical outputs
        torch.testing.assert_close(got[layer], want[layer], rtol=0, atol=0)
    assert not torch.allclose(fresh, got["fc"])  # other weights (seed 0 vs 3): O(|y|) apart, not rounding


def test_checkpoint_for_another_model_is_a_usage_error(plugins, tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save(shared(plugins, "resnet18").model.state_dict(), path)
    for name in ("squeezenet1_1", "timm:efficientnet_b0"):
        with pytest.raises(UsageError, match="does not fit this backbone"):
            build(plugins, name, weights=str(path))
    with pytest.raises(UsageError, match="file not found"):
        build(plugins, "resnet18", weights=str(tmp_path / "missing.pt"))


def test_torchvision_imagenet_offline_names_the_expected_file(plugins, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("RSABENCH_OFFLINE", "1")
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(UsageError) as info:
        build(plugins, "resnet18", weights="imagenet")
    message = str(info.value)
    assert str(expected) in message and "--weights PATH" in message and "--weights random" in message


def test_timm_model_without_pretrained_weights_is_a_usage_error(plugins):
    with pytest.raises(UsageError, match="has no pretrained weights"):
        build(plugins, "timm:test_mambaout", weights="imagenet")


def test_torchvision_imagenet_loads_from_the_hub_cache(plugins, tmp_path, monkeypatch):
    import torchvision.models as tvm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("RSABENCH_OFFLINE", "1")
    torch.manual_seed(11)
    # the checkpoint in torchvision's format: GoogLeNet's ImageNet file carries the auxiliary heads
    source = tvm.googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=True).eval()
    path = tmp_path / "hub" / "checkpoints" / Path(tvm.GoogLeNet_Weights.DEFAULT.url).name
    path.parent.mkdir(parents=True)
    torch.save(source.state_dict(), path)
    built = build(plugins, "googlenet", weights="imagenet")
    assert built.model.transform_input is True and built.model.aux1 is None
    assert path.name in built.weights_digest
    x = images(2, 32)
    with torch.no_grad():  # the same weights (a bitwise copy), input and operations: bit-identical
        torch.testing.assert_close(built.model(x), source(x), rtol=0, atol=0)


TIMM_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys, torch
    from pathlib import Path
    from rsabench.builtin.timm_backbones import TimmBackbone
    from rsabench.errors import UsageError
    report = {}
    try:
        TimmBackbone("resnet18").build(weights="imagenet")
    except UsageError as exc:
        report["error"] = str(exc)
    # a Hugging Face cache entry as hf_hub_download leaves it: refs/main -> snapshots/<commit>/file
    import timm
    from safetensors.torch import save_file
    torch.manual_seed(5)
    source = timm.create_model("resnet18").eval()
    repo = Path(sys.argv[1]) / "models--timm--resnet18.a1_in1k"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    file = repo / "snapshots" / commit / "model.safetensors"
    file.parent.mkdir(parents=True)
    save_file(source.state_dict(), file)
    built = TimmBackbone("resnet18").build(weights="imagenet")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        report["max_diff"] = float((built.model(x) - source(x)).abs().max())
    report["digest"] = built.weights_digest
    report["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
    report["tag"] = built.info["pretrained_tag"]
    print(json.dumps(report))
    """
)


def test_timm_imagenet_weights_offline_from_the_hugging_face_cache(tmp_path):
    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1", TORCH_HOME=str(tmp_path / "torch")
    )
    out = subprocess.run(
        [sys.executable, "-c", TIMM_OFFLINE_SCRIPT, str(hub)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    error = report["error"]
    assert "timm/resnet18.a1_in1k" in error and "model.safetensors" in error and str(hub) in error
    assert "--weights PATH" in error and "--weights random" in error
    # same weights (the safetensors round trip is bitwise), input and operations: bit-identical
    assert report["max_diff"] == 0.0 and report["tag"] == "a1_in1k"
    assert report["digest"].endswith("sha256:" + report["sha256"])


def test_unresolvable_host_fails_fast_unless_a_proxy_is_set(monkeypatch):
    import socket

    from rsabench.builtin import torchvision_backbones as tb

    def no_dns(host, port, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    assert (
        tb.unreachable("https://download.pytorch.org/models/x.pth")
        == "cannot resolve download.pytorch.org: Name or service not known"
    )
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert tb.unreachable("https://download.pytorch.org/models/x.pth") is None
