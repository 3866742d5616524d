"""`rsabench plan`'s estimates (rsabench.estimate): image passes counted against a real run's forward and
backward calls, memory against the real tensors, the probe cache, missing inputs, the rendered plan."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from rich.console import Console

from rsabench import estimate
from rsabench.estimate import ProbeCache, estimate_cells, optimizer_state_bytes, render_plan, totals
from rsabench.plugins import get_plugins
from rsabench.runner import RunOptions, Session
from rsabench.training import TrainSettings, make_optimizer

# two groups of 16 images (4 test, 3 validation, 9 training each); small batches: several steps per epoch
SYNTHETIC = (("n_per_group", "16"),)
FAST = dict(weights="random", image_size=64, device="cpu", dataset_options=SYNTHETIC, batch_size=4)
LAYERS = ("features.1", "features.4")


def session(tmp_path: Path, **options) -> Session:
    opts = {**FAST, "layers": LAYERS, "epochs": 2, **options}
    opts.setdefault("cache_dir", str(tmp_path / "cache"))
    return Session(get_plugins(), RunOptions(**opts), force=True)


@contextlib.contextmanager
def counted_passes():
    """Images through every AlexNet forward on a real device (meta-device shape passes left out), those with
    gradients, and the backward calls."""
    counts = {"forward": 0, "grad_forward": 0, "backward": 0}

    def pre_hook(module, args):
        x = args[0] if args else None
        if type(module).__name__ == "AlexNet" and isinstance(x, torch.Tensor) and x.device.type != "meta":
            counts["forward"] += len(x)
            counts["grad_forward"] += len(x) if torch.is_grad_enabled() else 0

    real_backward = torch.Tensor.backward

    def backward(self, *args, **kwargs):
        counts["backward"] += 1
        return real_backward(self, *args, **kwargs)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(pre_hook)
    torch.Tensor.backward = backward
    try:
        yield counts
    finally:
        handle.remove()
        torch.Tensor.backward = real_backward


def test_passes_are_the_forward_and_backward_calls_of_the_run(tmp_path):
    """frozen then dissim on two groups, with the feature cache: dissim's epoch-0 validation comes from the
    frozen cell's entries (``in plan``), and after the run every as-built pass is a hit."""
    s = session(tmp_path)
    cells = s.plan(["synthetic"], ["alexnet"], ["frozen", "dissim"], [0], ["late"], tmp_path / "runs")
    frozen, dissim = estimate_cells(s, cells, probe=False)
    assert (frozen.feature_cache, dissim.feature_cache) == ("miss", "in plan")
    assert frozen.passes.validation == 2 * 3 and frozen.passes.test == 2 * 4 and frozen.passes.backward == 0
    # dissim: validation at epochs 0, 1, 2; test at the final and the selected epoch; 2 epochs x 18 images
    assert (dissim.passes.validation, dissim.passes.test, dissim.passes.train) == (3 * 6, 2 * 8, 2 * 18)
    assert dissim.passes.cached == 6 and dissim.passes.train_steps == 2 * 2 * 3  # 9 images in batches of 4: 3 steps
    for cell, est in zip(cells, (frozen, dissim), strict=True):
        with counted_passes() as counts:
            record = s.run(cell)
        expected = est.passes.forward - est.passes.cached
        if cell.config["trains"]:
            selected, final = record["selection"]["epoch"], record["curves"]["training"]["epochs_run"]
            if selected in (final, 0):  # the selected epoch's test RDMs: the final ones, or the cached frozen ones
                expected -= est.passes.test_reselect
        assert counts["forward"] == expected, cell.config["objective"]
        assert counts["grad_forward"] == est.passes.backward
        assert counts["backward"] == est.passes.train_steps
    again = estimate_cells(session(tmp_path), cells, probe=False)
    assert [e.feature_cache for e in again] == ["hit", "hit"]


def test_memory_is_the_real_tensors(tmp_path):
    s = session(tmp_path, loss_layer="features.4", no_cache=True)
    cells = s.plan(["synthetic"], ["alexnet"], ["frozen", "dissim"], [0], ["late"], tmp_path / "runs")
    frozen, dissim = estimate_cells(s, cells, probe=False)
    model = get_plugins().backbones.get("alexnet")().build(weights="random", seed=0).model
    assert frozen.param_bytes == dissim.param_bytes == sum(p.numel() * p.element_size() for p in model.parameters())
    assert frozen.grad_bytes == frozen.optimizer_bytes == 0
    # the gradients of a real step with the loss at features.4 reach conv1 and conv2 only
    x = torch.randn(2, 3, 64, 64)
    model.features[:5](x).pow(2).mean().backward()
    grads = [p for p in model.parameters() if p.grad is not None]
    assert dissim.grad_bytes == sum(p.numel() * p.element_size() for p in grads) > 0
    assert dissim.optimizer_bytes == 2 * dissim.grad_bytes + 4 * len(grads)  # adam: two moments and a step each
    # activations: batch-1 leaf outputs up to features.4 (conv, relu, pool, conv, relu), times the batch size
    shapes = [(64, 15, 15), (64, 15, 15), (64, 7, 7), (192, 7, 7), (192, 7, 7)]
    assert dissim.activation_bytes == 4 * sum(a * b * c for a, b, c in shapes) * 4


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizer_state_is_what_the_optimizer_keeps(name):
    model = torch.nn.Sequential(torch.nn.Linear(8, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    optimizer = make_optimizer(model.parameters(), TrainSettings(optimizer=name))
    model(torch.randn(4, 8)).sum().backward()
    optimizer.step()
    kept = sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values())
    assert optimizer_state_bytes(list(model.parameters()), name, 0.9) == kept


def test_adam_keeps_twice_the_state_of_sgd(tmp_path):
    per = {}
    for name in ("adam", "sgd"):
        s = session(tmp_path, optimizer=name, loss_layer="features.4", no_cache=True)
        [cell] = s.plan(["synthetic"], ["alexnet"], ["dissim"], [0], ["late"], tmp_path / "runs")
        [per[name]] = estimate_cells(s, [cell], probe=False)
    adam, sgd = per["adam"], per["sgd"]
    assert adam.grad_bytes == sgd.grad_bytes == sgd.optimizer_bytes > 0
    assert adam.optimizer_bytes == 2 * sgd.optimizer_bytes + 4 * 4  # conv1 and conv2: weight and bias


def test_each_backbone_is_probed_once(tmp_path, monkeypatch):
    monkeypatch.setattr(estimate, "PROBE_SECONDS", 0.05)
    probes = ProbeCache()
    s = session(tmp_path, layers=(), loss_layer="features.1", no_cache=True)
    backbones = ["alexnet", "squeezenet1_1"]
    cells = s.plan(["synthetic"], backbones, ["frozen", "dissim"], [0, 1], ["late"], tmp_path / "runs")
    estimates = estimate_cells(s, cells, probes=probes)
    assert dict(probes.runs) == {"extraction": 2, "training": 2}  # 8 cells: one of each per backbone
    again = estimate_cells(s, cells, probes=probes)
    assert dict(probes.runs) == {"extraction": 2, "training": 2}
    assert all(e.seconds and e.seconds > 0 for e in estimates + again)
    assert totals(estimates).seconds == pytest.approx(sum(e.seconds for e in estimates))
    console = Console(record=True, width=250)
    render_plan(console, cells, estimates)
    text = console.export_text()
    assert "8 cell(s): 0 cached, 8 to run" in text and "timed probes on cpu" in text
    assert text.count("to run") >= 8 and "squeezenet1_1" in text


def test_missing_inputs_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    s = session(tmp_path, data_dir=str(tmp_path / "data"), no_cache=True)
    assert "weights file" in estimate.weights_missing(str(tmp_path / "nope.pt"))
    assert estimate.weights_missing("random") is None
    problem = estimate.pretrained_missing(get_plugins().backbones.get("alexnet")())
    assert problem is not None and str(tmp_path / "torch") in problem
    assert estimate.data_missing(s, "nsd") and "rsabench data info nsd" in estimate.data_missing(s, "nsd")[0]
    assert estimate.data_missing(s, "kriegeskorte2008") == []
    # a cell on ImageNet weights that are not cached: named, nothing downloaded, memory from the architecture
    s = session(tmp_path, weights="imagenet", data_dir=str(tmp_path / "data"))
    cells = s.plan(["synthetic"], ["alexnet"], ["frozen"], [0], ["late"], tmp_path / "runs")
    [e] = estimate_cells(s, cells, probe=False)
    assert e.missing == [problem] and e.feature_cache == "unknown" and e.param_bytes > 0
