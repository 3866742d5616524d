"""Training speed: batch-RDM trainer vs the two-branch Siamese reference (ARCHITECTURE.md, "Training"), CPU.

Setup (shared by the three benchmarks): the 92 Kriegeskorte images at 64 px (the smallest size at which
AlexNet's every layer is defined), torchvision AlexNet with random weights (seed 0), loss layer
``features.11`` (conv5 after ReLU, 256x3x3 = 2304 features), target = subject-mean hIT RDM, Adam lr 1e-4,
all parameters trainable. Every round starts from the same initial weights.

- ``test_epoch_two_branch``: one epoch of ``siamese_reference.two_branch_epoch`` over all 92*91/2 = 4186
  within-set pairs, as ONE minibatch of pairs (one optimizer step, the same update as the batch-RDM epoch),
  forwarded in chunks of 256 pairs (branch A: 256 images, branch B: 256 images) with accumulated gradients:
  8372 image-forwards and backwards.
- ``test_epoch_batch_rdm``: ``rsabench.training.train(epochs=1, batch_size=92)``: one batch of all 92 images,
  one forward, every one of the 4186 pairs in the loss, one optimizer step. The benchmark times the whole
  ``train`` call; the ratios use the epoch loop alone (first batch fetch to the end-of-epoch evaluation),
  which excludes ``train``'s once-per-run setup (initial evaluation and the copy of the initial state).
- ``test_fwd_bwd_pass``: the floor: plain ``model.features[:12]`` forward of the 92 images (no hooks) and
  backward of a scalar (mean of squares); no RDM, no optimizer.

``test_speed_ratios`` asserts: batch-RDM epoch >= 30x faster than the two-branch epoch, and <= 1.3x the
forward+backward pass. Times are the minimum over rounds (least disturbed by other load); the fwd+bwd time in
the second ratio is that of the paired fwd+bwd run just before each ``train`` call (same background load).

Run: ``pytest benchmarks/test_training_speed.py --benchmark-json=F``. On 2 cores shared with other jobs the
many small ops of an epoch (RDM loss, Adam step) suffer more from thread scheduling than the convolutions do, and
the second ratio can exceed 1.3x; use an idle machine or ``OMP_NUM_THREADS=1`` (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from rsabench.backbone import IMAGENET_MEAN, IMAGENET_STD, prepare_for_taps
from rsabench.builtin import kriegeskorte2008
from rsabench.builtin.basic_objectives import Dissim
from rsabench.images import preprocess
from rsabench.objective import training_target
from rsabench.training import TrainSettings, train


def _load_reference():
    name = "siamese_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("siamese_reference.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ref = _load_reference()

SIZE = 64
LAYER = "features.11"
LR = 1e-4
PAIRS_PER_FORWARD = 256
FAST_ROUNDS = 10
SLOW_ROUNDS = 2
MIN_SPEEDUP = 30.0
MAX_OVER_FWD_BWD = 1.3

TIMES: dict[str, list[float]] = {}
LOSSES: dict[str, float] = {}


class Setup:
    def __init__(self) -> None:
        ds = kriegeskorte2008.load()
        group = ds.groups["92"]
        self.x = preprocess(group.load_images(), SIZE, IMAGENET_MEAN, IMAGENET_STD)
        n = len(self.x)
        self.n = n
        rdms = ds.targets[0].rdms
        self.target = torch.from_numpy(training_target(rdms, "none", np.arange(n))).float()
        torch.manual_seed(0)
        self.model = prepare_for_taps(torchvision.models.alexnet(weights=None)).eval()
        self.init_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.pairs = ref.within_group_pairs({"92": range(n)})

    def fwd_bwd(self) -> None:
        """The floor: plain forward of the trunk up to the loss layer, backward of a scalar."""
        self.model.features[: int(LAYER.split(".")[1]) + 1](self.x).square().mean().backward()

    def reset(self) -> None:
        self.model.load_state_dict(self.init_state)
        for p in self.model.parameters():
            p.requires_grad_(True)
            p.grad = None


@pytest.fixture(scope="module")
def setup() -> Setup:
    return Setup()


def timed(name: str, fn):
    """Wrap ``fn`` to record its wall time in ``TIMES[name]`` and its process CPU time in ``TIMES[name + "_cpu"]``."""

    def run(*args, **kwargs):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        TIMES.setdefault(name, []).append(time.perf_counter() - t0)
        TIMES.setdefault(name + "_cpu", []).append(time.process_time() - c0)
        return out

    return run


def info(benchmark, s: Setup) -> None:
    benchmark.extra_info.update(
        image_size=SIZE, layer=LAYER, images=s.n, pairs=len(s.pairs), torch_threads=torch.get_num_threads()
    )


def test_fwd_bwd_pass(benchmark, setup):
    def prepare():
        setup.reset()
        return (), {}

    info(benchmark, setup)
    benchmark.pedantic(
        timed("fwd_bwd", setup.fwd_bwd), setup=prepare, rounds=FAST_ROUNDS, warmup_rounds=1, iterations=1
    )


def test_epoch_two_branch(benchmark, setup):
    assert len(setup.pairs) == setup.n * (setup.n - 1) // 2 == 4186

    def prepare():
        setup.reset()
        optimizer = torch.optim.Adam(setup.model.parameters(), lr=LR)
        return (optimizer,), {}

    def epoch(optimizer):
        LOSSES["two_branch"] = ref.two_branch_epoch(
            setup.model,
            LAYER,
            {"92": setup.x},
            {"92": setup.target},
            setup.pairs,
            optimizer,
            pairs_per_step=len(setup.pairs),
            pairs_per_forward=PAIRS_PER_FORWARD,
            generator=torch.Generator().manual_seed(0),
        )

    info(benchmark, setup)
    benchmark.extra_info.update(pairs_per_step=len(setup.pairs), pairs_per_forward=PAIRS_PER_FORWARD)
    benchmark.pedantic(timed("two_branch", epoch), setup=prepare, rounds=SLOW_ROUNDS, iterations=1)


class StampedImages(dict):
    """``train``'s image dict; records when the first batch is fetched (= the epoch loop starts)."""

    def __getitem__(self, key):
        TIMES.setdefault("_loop_start", []).append(time.perf_counter())
        TIMES.setdefault("_loop_start_cpu", []).append(time.process_time())
        return super().__getitem__(key)


def test_epoch_batch_rdm(benchmark, setup):
    settings = TrainSettings(epochs=1, batch_size=setup.n, lr=LR, optimizer="adam")

    def prepare():
        # a paired (untimed by pytest-benchmark) fwd+bwd right before each train() call: on a shared
        # machine, both then see the same background load
        setup.reset()
        timed("fwd_bwd_paired", setup.fwd_bwd)()
        setup.reset()
        return (), {}

    def evaluate(epoch: int) -> float:
        if epoch == 1:
            TIMES.setdefault("batch_rdm_epoch", []).append(time.perf_counter() - TIMES["_loop_start"][-1])
            TIMES.setdefault("batch_rdm_epoch_cpu", []).append(time.process_time() - TIMES["_loop_start_cpu"][-1])
        return 0.0

    def run_train():
        result = train(
            setup.model,
            LAYER,
            Dissim(),
            StampedImages({"92": setup.x}),
            {"92": np.arange(setup.n)},
            {"92": setup.target},
            settings,
            seed=0,
            evaluate=evaluate,
        )
        LOSSES["batch_rdm"] = result.train_loss[0]

    info(benchmark, setup)
    benchmark.extra_info.update(batch_size=setup.n, batches_per_epoch=1)
    benchmark.pedantic(
        timed("batch_rdm_train_call", run_train), setup=prepare, rounds=FAST_ROUNDS, warmup_rounds=1, iterations=1
    )
    benchmark.extra_info["epoch_loop_min_s"] = min(TIMES["batch_rdm_epoch"])


def test_speed_ratios(record_property):
    """Batch-RDM epoch >= 30x faster than two-branch and <= 1.3x one forward+backward (same process)."""
    needed = ("two_branch", "batch_rdm_epoch", "fwd_bwd_paired", "fwd_bwd")
    if any(k not in TIMES for k in needed):
        pytest.skip("run the three benchmarks of this file together to compare them")
    two_branch, epoch, fwd_bwd, fwd_bwd_alone = (min(TIMES[k]) for k in needed)
    train_call = min(TIMES["batch_rdm_train_call"])
    paired = np.median(np.array(TIMES["batch_rdm_epoch"]) / np.array(TIMES["fwd_bwd_paired"]))
    cpu_ratio = min(TIMES["batch_rdm_epoch_cpu"]) / min(TIMES["fwd_bwd_paired_cpu"])
    # both trainers computed the same loss over the same 4186 pairs from the same weights
    assert LOSSES["batch_rdm"] == pytest.approx(LOSSES["two_branch"], rel=1e-4)
    speedup, overhead = two_branch / epoch, epoch / fwd_bwd
    summary = " | ".join(
        [
            f"two-branch epoch {two_branch:.2f} s",
            f"batch-RDM epoch {epoch:.3f} s (whole train() call {train_call:.3f} s)",
            f"fwd+bwd {fwd_bwd:.3f} s (paired; alone {fwd_bwd_alone:.3f} s)",
            f"speed-up {speedup:.1f}x",
            f"epoch/fwd+bwd {overhead:.2f}x (median of paired ratios {paired:.2f}x, CPU time {cpu_ratio:.2f}x)",
            f"train()/fwd+bwd {train_call / fwd_bwd:.2f}x",
            f"loss {LOSSES['batch_rdm']:.6f}",
            f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        ]
    )
    print("\n" + summary)
    record_property("summary", summary)
    assert speedup >= MIN_SPEEDUP, summary
    assert overhead <= MAX_OVER_FWD_BWD, summary
