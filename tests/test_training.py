"""The training engine: lr schedules, gradient clipping, AMP refusal, BatchNorm modes, trainable-layer
policies, early stopping, checkpoints with bit-identical resume, and run-to-run determinism.

Most tests drive :func:`rsabench.training.train` on a tiny network (milliseconds); the resume and
determinism tests run whole cells through the Python API (kriegeskorte2008, AlexNet, random weights,
32-pixel images, the convolutional layers only: at 32 px AlexNet's classifier has no input left).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from precision import F64, U64
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from rsabench import training
from rsabench.errors import UsageError
from rsabench.objective import Objective
from rsabench.training import Checkpointer, TrainSettings, finish_checkpoints, lr_factor, train

LOSS_LAYER = "4"


class Killed(BaseException):
    """Stands in for SIGKILL / a node failure in the middle of an epoch."""


class PairMSE(Objective):
    """Reference loss written plainly: mean over i<j of (1 - pearson(f_i, f_j) - t_ij)^2.

    ``jitter`` draws from the global torch and numpy RNGs (as a stochastic objective would), so a resume
    that does not restore them gives different numbers. ``kill_at`` raises :class:`Killed` on that call.
    """

    name = "test-pair-mse"

    def __init__(self, jitter: bool = False, kill_at: int | None = None) -> None:
        self.jitter, self.kill_at, self.calls = jitter, kill_at, 0

    def loss(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.kill_at:
            raise Killed
        z = features.reshape(len(features), -1)
        z = z - z.mean(dim=1, keepdim=True)
        z = z / z.norm(dim=1, keepdim=True)
        d = 1 - z @ z.T
        i, j = torch.triu_indices(len(z), len(z), 1, device=z.device)
        loss = ((d[i, j] - target[i, j]) ** 2).mean()
        if self.jitter:
            loss = loss * (1 + 0.1 * torch.rand(()).to(loss) + 0.1 * float(np.random.rand()))
        return loss


def tiny_net(bn: bool = True, seed: int = 0) -> nn.Sequential:
    """conv - BatchNorm - ReLU - conv - ReLU; layers are named "0" … "4"."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6) if bn else nn.Identity(),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2),
        nn.ReLU(),
    )


def tiny_data(n: int = 12, size: int = 8, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, size, size, generator=g, dtype=dtype) * 2 + 0.5
    t = torch.rand(n, n, generator=g, dtype=dtype)
    t = (t + t.T) / 2
    t.fill_diagonal_(0)
    return {"g": x}, {"g": np.arange(n)}, {"g": t}


def run_tiny(model, settings, evaluate=lambda epoch: 0.0, objective=None, dtype=torch.float32, **kw):
    images, index, targets = tiny_data(dtype=dtype)
    return train(model, LOSS_LAYER, objective or PairMSE(), images, index, targets, settings, 0, evaluate, **kw)


def reseed(seed: int = 0) -> None:
    """What run_cell does at the start of a cell."""
    torch.manual_seed(seed)
    np.random.seed(seed)


# -- learning-rate schedules --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, expected",
    [
        ({"epochs": 4}, [1, 1, 1, 1]),
        ({"epochs": 5, "warmup_epochs": 2}, [1 / 3, 2 / 3, 1, 1, 1]),
        (
            {"epochs": 4, "lr_schedule": "cosine"},
            [1, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2],
        ),
        ({"epochs": 3, "warmup_epochs": 1, "lr_schedule": "cosine"}, [0.5, 1, 0.5]),
        ({"epochs": 6, "lr_schedule": "step", "lr_step": 2, "lr_gamma": 0.5}, [1, 1, 0.5, 0.5, 0.25, 0.25]),
        ({"epochs": 9, "lr_schedule": "step"}, [1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01]),  # auto: a third, x0.1
        ({"epochs": 4, "warmup_epochs": 1, "lr_schedule": "step", "lr_step": 1, "lr_gamma": 0.5}, [0.5, 1, 0.5, 0.25]),
    ],
)
def test_lr_schedule_sequences(kw, expected):
    s = TrainSettings(**kw)
    # factors <= 1 from a few float64 ops: cos of an argument off by <= 2πu, pow (0.1**2 vs 0.01: 1.6 ulps),
    # a division, each <= 1 ulp: within 8u absolute
    factors = [lr_factor(e, s) for e in range(1, s.epochs + 1)]
    assert factors == pytest.approx(expected, rel=0, abs=8 * U64)
    resolved = TrainSettings(**s.config())  # the recorded config gives the same sequence
    assert [lr_factor(e, resolved) for e in range(1, s.epochs + 1)] == factors  # same function, same inputs: exact


def test_optimizer_steps_with_the_scheduled_lr():
    seen: list[float] = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    try:
        s = TrainSettings(epochs=3, batch_size=4, lr=0.02, optimizer="sgd", warmup_epochs=1, lr_schedule="cosine")
        result = run_tiny(tiny_net(), s)
    finally:
        handle.remove()
    # lr · factor, factors within 8u absolute (see test_lr_schedule_sequences), one more rounding
    tol = 0.02 * 9 * U64
    assert seen == pytest.approx([0.01] * 3 + [0.02] * 3 + [0.01] * 3, rel=0, abs=tol)  # 12 images / batch 4 = 3 steps
    assert result.lr == pytest.approx([0.01, 0.02, 0.01], rel=0, abs=tol)


def test_schedule_options_that_cannot_matter_leave_the_config_alone():
    base = TrainSettings(epochs=3).config()
    assert TrainSettings(epochs=3, lr_gamma=0.5, lr_step=2).config() == base  # constant schedule: step options unused
    assert base["lr_step"] is None and base["lr_gamma"] is None and base["momentum"] is None
    step = TrainSettings(epochs=7, warmup_epochs=1, lr_schedule="step").config()
    assert (step["lr_step"], step["lr_gamma"]) == (2, 0.1)  # auto step made explicit: ceil((7 - 1) / 3)
    assert TrainSettings(optimizer="sgd").config()["momentum"] == 0.9


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"lr_schedule": "linear"}, "--lr-schedule"),
        ({"epochs": 3, "warmup_epochs": 3}, "--warmup-epochs"),
        ({"lr_gamma": 1.5}, "--lr-gamma"),
        ({"grad_clip": -1.0}, "--grad-clip"),
        ({"amp": "fp8"}, "--amp"),
    ],
)
def test_invalid_settings_are_usage_errors(kw, message):
    with pytest.raises(UsageError, match=message):
        TrainSettings(**kw).validate()


# -- gradient clipping --------------------------------------------------------------------------------
def reference_gradient(model: nn.Module, dtype=torch.float64) -> tuple[list[torch.Tensor], float]:
    """The full-batch gradient at the initial weights, computed outside the trainer."""
    images, _, targets = tiny_data(dtype=dtype)
    ref = copy.deepcopy(model)
    ref.eval()
    PairMSE().loss(ref(images["g"]), targets["g"]).backward()
    grads = [p.grad.clone() for p in ref.parameters()]
    return grads, math.sqrt(sum(float((g**2).sum()) for g in grads))


@pytest.mark.parametrize("clip_fraction", [0.0, 0.25])
def test_grad_clip_bounds_the_update(clip_fraction):
    """One SGD step on one full batch: the update is -lr * g, with g rescaled to norm ``clip`` when clipped."""
    model = tiny_net(bn=False).double()
    grads, g0 = reference_gradient(model)
    clip = clip_fraction * g0
    before = [p.detach().clone() for p in model.parameters()]
    lr = 0.1
    s = TrainSettings(epochs=1, batch_size=12, lr=lr, optimizer="sgd", grad_clip=clip)
    result = run_tiny(model, s, dtype=torch.float64)
    scale = clip / (g0 + 1e-6) if clip else 1.0  # torch's clip_grad_norm_ coefficient
    # float64: the trainer's gradient (its own batch order) and the reference are the same sums computed two
    # ways, |Δg| <= F64·g0; its clip coefficient uses its own norm (another F64 relative); b - lr·g rounds to
    # 1 ulp of |b|, which the subtraction p - b keeps
    for p, b, g in zip(model.parameters(), before, grads, strict=True):
        tol = lr * scale * 2 * F64 * g0 + 2 * U64 * float(b.abs().max())
        torch.testing.assert_close(p.detach() - b, -lr * scale * g, rtol=0, atol=tol)
    step = math.sqrt(sum(float(((p.detach() - b) ** 2).sum()) for p, b in zip(model.parameters(), before, strict=True)))
    b_norm = math.sqrt(sum(float((b**2).sum()) for b in before))
    assert step / lr == pytest.approx(scale * g0, rel=2 * F64 + 2 * U64 * b_norm / (lr * scale * g0))
    if clip:
        assert step / lr <= clip  # torch's +1e-6 puts it 1e-6/g0 relative below clip: 1e6 x F64
    assert result.grad_norm == pytest.approx([g0], rel=F64)  # the norm before clipping; |Δg| <= F64·g0
    assert clip < g0


# -- AMP ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cpu_is_refused(amp, capsys, tmp_path):
    with pytest.raises(UsageError, match=f"--amp {amp} needs a CUDA device"):
        run_tiny(tiny_net(), TrainSettings(epochs=1, amp=amp), device="cpu")
    from rsabench.runner import RunOptions

    with pytest.raises(UsageError, match=f"--amp {amp} needs a CUDA device"):
        RunOptions(amp=amp, device="cpu").validate()
    from rsabench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["plan", "--amp", amp, "--device", "cpu", "--weights", "random", "--runs-dir", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --amp {amp} needs a CUDA device") and "\n" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.skipif(torch.cuda.is_available(), reason="device auto is CUDA here")
def test_amp_with_device_auto_on_a_cpu_machine_fails_before_any_cell(tmp_path):
    from rsabench.plugins import get_plugins
    from rsabench.runner import RunOptions, Session

    session = Session(get_plugins(), RunOptions(weights="random", epochs=1, image_size=32, amp="bf16", device="auto"))
    with pytest.raises(UsageError, match="--amp bf16 needs a CUDA device, and cells run on cpu"):
        session.plan(["kriegeskorte2008"], ["alexnet"], ["frozen", "dissim"], [0], [], tmp_path)
    assert not list(tmp_path.rglob("*.json"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_amp_and_channels_last_train_on_cuda(amp):
    model = tiny_net().cuda()
    before = [p.detach().clone() for p in model.parameters()]
    s = TrainSettings(epochs=2, batch_size=4, lr=0.01, optimizer="sgd", amp=amp, grad_clip=1.0)
    result = run_tiny(model.to(memory_format=torch.channels_last), s, device="cuda", channels_last=True)
    assert all(math.isfinite(v) for v in result.train_loss)
    assert any(not torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before, strict=True))


# -- BatchNorm ----------------------------------------------------------------------------------------
def bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("adapt", [False, True])
def test_batchnorm_statistics_frozen_by_default_adapt_on_request(adapt):
    model = tiny_net()
    start = bn_buffers(model)
    modes: list[bool] = []

    def evaluate(epoch: int) -> float:
        modes.extend(m.training for m in model.modules())
        return 0.0

    weight = model[0].weight.detach().clone()
    result = run_tiny(model, TrainSettings(epochs=2, batch_size=4, lr=0.05, optimizer="sgd", adapt_bn=adapt), evaluate)
    after = bn_buffers(model)
    assert not torch.equal(model[0].weight, weight)  # it trained either way
    assert not any(modes) and not model.training  # scoring always sees eval mode
    if not adapt:
        assert all(torch.equal(start[k], after[k]) for k in start)
        assert result.bn_layers_adapted == 0
    else:
        assert int(after["1.num_batches_tracked"]) == 2 * 3  # one update per training step (2 epochs x 3 batches)
        assert not torch.equal(start["1.running_mean"], after["1.running_mean"])
        assert not torch.equal(start["1.running_var"], after["1.running_var"])
        assert result.bn_layers_adapted == 1


def test_adapt_bn_leaves_batchnorm_of_frozen_layers_alone():
    model = tiny_net()
    start = bn_buffers(model)
    run_tiny(model, TrainSettings(epochs=1, batch_size=4, lr=0.05, optimizer="sgd", adapt_bn=True, trainable="from:3"))
    assert all(torch.equal(v, bn_buffers(model)[k]) for k, v in start.items())


# -- trainable-layer policies -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def alexnet_batch():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 3, 64, 64, generator=g)
    t = torch.rand(8, 8, generator=g)
    t = (t + t.T) / 2
    t.fill_diagonal_(0)
    return {"g": x}, {"g": np.arange(8)}, {"g": t}


@pytest.mark.parametrize(
    "policy, trained",
    [
        ("up-to:features.3", {"features.0", "features.3"}),
        ("from:features.6", {"features.6", "features.8", "features.10"}),
    ],
)
def test_trainable_policy_leaves_other_parameters_bit_identical(policy, trained, alexnet_batch):
    from rsabench.plugins import get_plugins

    model = get_plugins().backbones.get("alexnet")().build(weights="random", seed=0).model
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    s = TrainSettings(epochs=1, batch_size=8, lr=1e-2, optimizer="adamw", weight_decay=0.5, trainable=policy)
    images, index, targets = alexnet_batch
    train(model, "features.11", PairMSE(), images, index, targets, s, 0, lambda epoch: 0.0)
    for name, p in model.named_parameters():
        module = name.rsplit(".", 1)[0]
        if module in trained:
            assert not torch.equal(p, before[name]), f"{name} should have trained under {policy}"
        else:
            assert torch.equal(p, before[name]), f"{name} changed under {policy}"  # not optimised: exact


def test_trainable_none_is_an_error():
    with pytest.raises(UsageError, match="no parameter to train"):
        run_tiny(tiny_net(), TrainSettings(epochs=1, trainable="none"))


# -- early stopping -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "patience, values, epochs_run, best_epoch",
    [
        (1, [0.1, 0.3, 0.2, 0.9, 1.0], 2, 1),  # stops as soon as validation stops improving
        (2, [0.1, 0.3, 0.2, 0.25, 0.9, 1.0], 3, 1),
        (2, [0.1, 0.3, 0.2, 0.4, 0.3, 0.2], 5, 3),
        (0, [0.1, 0.3, 0.2, 0.1, 0.0, 0.0], 5, 1),  # 0 = never stop
    ],
)
def test_early_stopping(patience, values, epochs_run, best_epoch):
    model = tiny_net()
    calls: list[int] = []
    states: dict[int, dict[str, torch.Tensor]] = {}

    def evaluate(epoch: int) -> float:
        calls.append(epoch)
        states[epoch] = copy.deepcopy(model.state_dict())
        return values[epoch]

    result = run_tiny(
        model, TrainSettings(epochs=5, batch_size=4, lr=0.05, optimizer="sgd", patience=patience), evaluate
    )
    assert calls == list(range(epochs_run + 1))
    assert (result.epochs_run, result.best_epoch, result.best_value) == (epochs_run, best_epoch, values[best_epoch])
    assert result.stopped_early == (epochs_run < 5)
    assert len(result.train_loss) == epochs_run
    assert all(torch.equal(result.best_state[k], v) for k, v in states[best_epoch].items())


# -- checkpoints and resume (train level) -------------------------------------------------------------
VALUES = {0: 0.1, 1: 0.3, 2: 0.2, 3: 0.25}  # best epoch 1: the best state must come back from disk


def resumable_settings() -> TrainSettings:
    return TrainSettings(
        epochs=3, batch_size=4, lr=0.05, optimizer="sgd", lr_schedule="cosine", adapt_bn=True, grad_clip=0.5
    )


def test_killed_training_resumes_bit_identically(tmp_path):
    reseed()
    straight = tiny_net()
    ref = run_tiny(straight, resumable_settings(), VALUES.__getitem__, PairMSE(jitter=True))

    reseed()
    killed = tiny_net()
    ckpt_dir = tmp_path / "cell.ckpt"
    with pytest.raises(Killed):  # 3 steps per epoch: dies in the middle of epoch 2
        run_tiny(
            killed,
            resumable_settings(),
            VALUES.__getitem__,
            PairMSE(jitter=True, kill_at=5),
            checkpoint=Checkpointer(ckpt_dir, "c" * 64),
        )
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["model-e1.pt", "state.pt"]

    reseed()  # a new process: same seeds, fresh model
    resumed = tiny_net()
    calls: list[int] = []
    notes: list[str] = []

    def evaluate(epoch: int) -> float:
        calls.append(epoch)
        return VALUES[epoch]

    out = run_tiny(
        resumed,
        resumable_settings(),
        evaluate,
        PairMSE(jitter=True),
        checkpoint=Checkpointer(ckpt_dir, "c" * 64, note=notes.append),
    )
    assert calls == [2, 3] and out.resumed_from_epoch == 1 and "resumed" in notes[0]
    # resumed from bitwise-restored weights, optimizer and RNG states, then the same operations in the same order on
    # the same machine: bit-identical, so exact comparisons
    assert (out.train_loss, out.lr, out.grad_norm) == (ref.train_loss, ref.lr, ref.grad_norm)
    assert (
        (out.best_epoch, out.best_value, out.epochs_run)
        == (ref.best_epoch, ref.best_value, ref.epochs_run)
        == (1, 0.3, 3)
    )
    for k, v in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
        assert torch.equal(out.best_state[k], ref.best_state[k]), k
    assert int(resumed.state_dict()["1.num_batches_tracked"]) == 9

    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["model-e1.pt", "model-e3.pt", "state.pt"]
    assert finish_checkpoints(ckpt_dir, keep=False) is None and not ckpt_dir.exists()


def test_checkpoint_files_hold_only_what_training_changed_and_best_pt_the_whole_model(tmp_path):
    ckpt_dir = tmp_path / "cell.ckpt"
    model = tiny_net()
    s = TrainSettings(epochs=2, batch_size=4, lr=0.05, optimizer="sgd", trainable="from:3")
    result = run_tiny(model, s, VALUES.__getitem__, checkpoint=Checkpointer(ckpt_dir, "c" * 64, keep=True))
    saved = torch.load(ckpt_dir / "model-e2.pt", weights_only=True)["model"]
    assert sorted(saved) == ["3.bias", "3.weight"]  # frozen conv and BatchNorm are rebuilt, not stored
    assert finish_checkpoints(ckpt_dir, keep=True) == ckpt_dir / "best.pt"
    assert [p.name for p in ckpt_dir.iterdir()] == ["best.pt"]
    best = torch.load(ckpt_dir / "best.pt", weights_only=True)
    assert best["epoch"] == result.best_epoch == 1
    assert sorted(best["model"]) == sorted(model.state_dict())
    assert all(torch.equal(best["model"][k], v) for k, v in result.best_state.items())


def test_resume_refuses_a_differently_built_network(tmp_path):
    ckpt_dir = tmp_path / "cell.ckpt"
    s = TrainSettings(epochs=1, batch_size=4)
    run_tiny(tiny_net(seed=0), s, checkpoint=Checkpointer(ckpt_dir, "c" * 64))
    notes: list[str] = []
    result = run_tiny(tiny_net(seed=1), s, checkpoint=Checkpointer(ckpt_dir, "c" * 64, note=notes.append))
    assert result.resumed_from_epoch is None and "differs" in notes[0]


def test_checkpointing_does_not_change_the_numbers(tmp_path):
    reseed()
    a = run_tiny(tiny_net(), resumable_settings(), VALUES.__getitem__, PairMSE(jitter=True))
    reseed()
    b = run_tiny(
        tiny_net(),
        resumable_settings(),
        VALUES.__getitem__,
        PairMSE(jitter=True),
        checkpoint=Checkpointer(tmp_path / "x", "c" * 64),
    )
    assert (a.train_loss, a.grad_norm, a.best_epoch) == (b.train_loss, b.grad_norm, b.best_epoch)  # same ops: exact
    assert b.resumed_from_epoch is None


@pytest.mark.parametrize("damage", ["garbage", "other-cell"])
def test_unusable_checkpoint_means_a_fresh_start(damage, tmp_path):
    ckpt_dir = tmp_path / "cell.ckpt"
    run_tiny(tiny_net(), TrainSettings(epochs=1, batch_size=4), checkpoint=Checkpointer(ckpt_dir, "a" * 64))
    if damage == "garbage":
        (ckpt_dir / "state.pt").write_bytes(b"not a checkpoint")
    notes: list[str] = []
    calls: list[int] = []
    cell = "a" * 64 if damage == "garbage" else "b" * 64
    result = run_tiny(
        tiny_net(),
        TrainSettings(epochs=1, batch_size=4),
        lambda e: calls.append(e) or 0.0,
        checkpoint=Checkpointer(ckpt_dir, cell, note=notes.append),
    )
    assert result.resumed_from_epoch is None and calls == [0, 1]
    assert len(notes) == 1 and notes[0].endswith("training from scratch")


# -- whole cells through the Python API ---------------------------------------------------------------
CELL_OPTIONS = dict(
    weights="random",
    epochs=3,
    image_size=32,
    batch_size=16,
    lr=1e-3,
    device="cpu",
    layers=("features.1", "features.4", "features.7", "features.11"),
    lr_schedule="cosine",
    grad_clip=1.0,
)


def run_once(runs_dir: Path, **extra):
    from rsabench.plugins import get_plugins
    from rsabench.runner import RunOptions, Session

    session = Session(get_plugins(), RunOptions(**{**CELL_OPTIONS, **extra}))
    [cell] = session.plan(["kriegeskorte2008"], ["alexnet"], ["dissim"], [0], [], runs_dir)
    return cell, session.run(cell)


def numbers(record: dict) -> str:
    """Everything a result depends on (NaN-safe through JSON), minus how the run got there."""
    train_info = {
        k: v for k, v in record["curves"]["training"].items() if k not in ("resumed_from_epoch", "checkpoint")
    }
    keys = ("cell", "config", "selection", "scores", "per_layer_final", "splits")
    return json.dumps(
        {**{k: record[k] for k in keys}, "validation": record["curves"]["validation"], "training": train_info},
        sort_keys=True,
    )


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("straight")
    cell, record = run_once(runs)
    return runs, cell, record


def test_same_command_twice_gives_identical_numbers(straight_run, tmp_path):
    runs, cell, record = straight_run
    again_cell, again = run_once(tmp_path)
    assert again_cell.cell == cell.cell
    assert numbers(again) == numbers(record)  # same seeds, same operations, same machine: bit-identical
    training_info = record["curves"]["training"]
    assert training_info["epochs_run"] == 3 and len(set(training_info["train_loss"])) == 3
    # cosine factors within 8u absolute (see test_lr_schedule_sequences), times 1e-3
    assert training_info["lr"] == pytest.approx([1e-3 * f for f in (1, 0.75, 0.25)], rel=0, abs=1e-3 * 9 * U64)
    assert training_info["resumed_from_epoch"] is None
    assert not cell.path.with_suffix(".ckpt").exists()  # checkpoints are removed once the record is written


def test_killed_cell_resumes_to_identical_record(straight_run, tmp_path, monkeypatch):
    _, cell, record = straight_run
    real = training.epoch_batches
    calls = {"n": 0}

    def dies_in_epoch_2(*args, **kwargs):
        batches = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] < 2:
            return batches

        def partial():
            yield batches[0]  # one optimizer step of epoch 2 happens, then the process dies
            raise Killed

        return partial()

    monkeypatch.setattr(training, "epoch_batches", dies_in_epoch_2)
    with pytest.raises(Killed):
        run_once(tmp_path)
    monkeypatch.setattr(training, "epoch_batches", real)
    ckpt_dir = tmp_path / cell.path.relative_to(cell.path.parents[1]).with_suffix(".ckpt")
    assert (ckpt_dir / "state.pt").is_file() and not ckpt_dir.with_suffix(".json").exists()

    resumed_cell, resumed = run_once(tmp_path, keep_checkpoints=True)  # not part of the cell hash
    assert resumed_cell.cell == cell.cell
    assert resumed["curves"]["training"]["resumed_from_epoch"] == 1
    assert numbers(resumed) == numbers(record)  # bitwise-restored state, same operations: bit-identical
    assert [p.name for p in ckpt_dir.iterdir()] == ["best.pt"]
    assert resumed["curves"]["training"]["checkpoint"] == f"{ckpt_dir.name}/best.pt"

    from rsabench.backbone import load_checkpoint
    from rsabench.plugins import get_plugins

    best = torch.load(ckpt_dir / "best.pt", weights_only=True)
    assert best["epoch"] == record["selection"]["epoch"]
    model = get_plugins().backbones.get("alexnet")().build(weights="random", seed=1).model
    load_checkpoint(model, ckpt_dir / "best.pt")  # usable as --weights PATH
    assert all(torch.equal(model.state_dict()[k], v) for k, v in best["model"].items())


def test_what_enters_the_cell_hash(tmp_path):
    from rsabench.plugins import get_plugins
    from rsabench.runner import RunOptions, Session

    plugins = get_plugins()

    def cell_of(**extra) -> str:
        options = RunOptions(**{**CELL_OPTIONS, "device": "auto", **extra})
        return Session(plugins, options).plan(["kriegeskorte2008"], ["alexnet"], ["dissim"], [0], [], tmp_path)[0].cell

    base = cell_of()
    for change in (
        {"grad_clip": 0.5},
        {"adapt_bn": True},
        {"lr_schedule": "constant"},
        {"warmup_epochs": 1},
    ):
        assert cell_of(**change) != base, change
    for same in ({"channels_last": True}, {"keep_checkpoints": True}, {"lr_gamma": 0.5}, {"device": "cpu"}):
        assert cell_of(**same) == base, same
    # --amp needs CUDA to plan at all; that it enters the hash is that it is in the config's train settings
    assert TrainSettings(amp="bf16").config()["amp"] == "bf16" != TrainSettings().config()["amp"]
    step = cell_of(lr_schedule="step")
    assert cell_of(lr_schedule="step", lr_step=1) == step  # the automatic step for 3 epochs is 1
    assert cell_of(lr_schedule="step", lr_gamma=0.5) != step
