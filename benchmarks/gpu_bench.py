"""GPU (CUDA) benchmark of rsabench: throughput, one dissim epoch, scoring all layers; figures vs the card's bf16 peak.

Run it through ``benchmarks/gpu.sh`` (which sets up an environment and the time budget); directly:
``python benchmarks/gpu_bench.py [--cpu-smoke] [--compile] [--budget-s S] [--json PATH]``.

Parts, in this order (each skipped with a line when the budget is nearly spent; every figure is written to the
JSON file as soon as it is measured, so a run cut short keeps what it measured):

1. ``flops``: forward FLOPs per image (``torch.utils.flop_counter.FlopCounterMode``, one image) of AlexNet and
   VGG-16, of the whole network and up to the loss layers and extraction layers used below; fwd+bwd = 3x forward.
2. ``throughput``: images/s of a forward+backward step (torchvision AlexNet / VGG-16, random weights, eval mode,
   loss = mean of the squared logits, no optimizer), fp32 and bf16 autocast, channels-last off and on; warm-up
   steps, then the median of a few timed repeats of several steps each (CUDA synchronised around each repeat).
3. ``dissim``: one epoch of ``rsabench.training.train`` with the ``Dissim`` objective (rsabench's own trainer:
   batches of ``--batch-size`` 32, Adam, AMP and channels-last as a cell runs them, ``rsabench.cell.seed_everything``
   first: deterministic kernels as in a cell) on the 92 embedded Kriegeskorte images and on 118 synthetic images
   (``rsabench.builtin.synthetic``, group A, target ``late``), at 224 px. Timed from the first batch fetch to the
   end-of-epoch evaluation (the epoch loop) and the whole ``train`` call.
4. ``scoring``: ``rsabench.features.extract_rdms`` over the 13 ReLU layers of VGG-16 ``features`` on 500 random images
   at 112 px (the set-up of benchmarks/test_extraction_memory.py, default memory budget), then ``TargetScorer``
   (Spearman, ``computed``: ceilings, bootstrap) on 4 synthetic subjects, ``score_many`` over the 13 layers.
5. ``compile`` (only with ``--compile``): part 2's bf16 channels-last step under ``torch.compile``.

Achieved TFLOP/s = images/s x FLOPs per image (fwd+bwd: 3x forward); % of the card's dense bf16 peak (table below).
``--cpu-smoke``: the same code paths on CPU at tiny sizes (64 px, 2 steps, a dozen images) to test the script.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s at boost clock, from NVIDIA's product datasheets (their
# "with sparsity" figures halved). Approximate: sustained clocks are lower under load; on the H200 lent here an
# 8192^3 bf16 matrix product measured ~770-800 TFLOP/s (/work/.library/device/KINDS.md). First substring match of
# torch.cuda.get_device_name() wins, so longer names come first.
BF16_PEAK_TFLOPS: list[tuple[str, float]] = [
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("RTX 4090", 165.0),
]
PEAK_SOURCE = "NVIDIA datasheets, dense bf16 tensor-core peak at boost clock (sparsity figures halved); approximate"

MODELS = ("alexnet", "vgg16")
# Loss layers of the dissim epoch: the deepest convolutional stage of rsabench's curated layer sets.
LOSS_LAYERS = {"alexnet": "features.11", "vgg16": "features.30"}
VGG16_RELU_LAYERS = [f"features.{i}" for i in (1, 3, 6, 8, 11, 13, 15, 18, 20, 22, 25, 27, 29)]
FWD_BWD_FACTOR = 3.0  # backward ~ 2x forward
GIB = 2**30


@dataclass
class Sizes:
    size: int
    batches: dict[str, int]
    warmup: int
    iters: int
    repeats: int
    dissim_images: int | None  # None: all of each set
    dissim_warmup: int
    dissim_repeats: int
    score_images: int
    score_size: int
    score_subjects: int
    budget_s: float
    # rough seconds a unit of each part needs, for the skip decisions
    est: dict[str, float] = field(default_factory=dict)


GPU_SIZES = Sizes(
    size=224,
    batches={"alexnet": 64, "vgg16": 32},
    warmup=5,
    iters=20,
    repeats=5,
    dissim_images=None,
    dissim_warmup=1,
    dissim_repeats=3,
    score_images=500,
    score_size=112,
    score_subjects=4,
    budget_s=450.0,
    est={"flops": 15, "throughput": 10, "dissim": 25, "scoring": 120, "compile": 150},
)
SMOKE_SIZES = Sizes(
    size=64,
    batches={"alexnet": 4, "vgg16": 2},
    warmup=1,
    iters=2,
    repeats=2,
    dissim_images=8,
    dissim_warmup=1,
    dissim_repeats=1,
    score_images=24,
    score_size=64,
    score_subjects=4,
    budget_s=110.0,
    est={"flops": 5, "throughput": 4, "dissim": 12, "scoring": 10, "compile": 60},
)


# -- bookkeeping --------------------------------------------------------------------------------------
class Budget:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def allows(self, need: float, what: str) -> bool:
        left = self.left()
        if left >= need:
            return True
        say(f"SKIP {what}: budget nearly spent ({left:.0f} s left of {self.seconds:.0f} s, needs ~{need:.0f} s)")
        return False


class Report:
    """Every figure, written to ``path`` (atomically) whenever one is added."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "meta": meta,
            "parts": {},
            "flops": {},
            "throughput": [],
            "dissim_epoch": [],
            "scoring": {},
        }
        self.errors = 0
        self.write()

    def add(self, section: str, entry: dict[str, Any]) -> None:
        self.data[section].append(entry)
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        tmp.replace(self.path)


T0 = time.monotonic()


def say(line: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {line}", flush=True)


@dataclass
class Ctx:
    device: torch.device
    sizes: Sizes
    budget: Budget
    report: Report
    peak: float | None  # TFLOP/s
    args: argparse.Namespace

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def peak_text(self, tflops: float) -> tuple[str, float | None]:
        if self.peak is None:
            return f"{tflops:.2f} TFLOP/s (no bf16 peak known for this device)", None
        pct = 100.0 * tflops / self.peak
        return f"{tflops:.2f} TFLOP/s = {pct:.1f}% of the bf16 peak {self.peak:.0f}", pct


def run_part(ctx: Ctx, name: str, need: float, fn: Callable[[Ctx], None]) -> None:
    """Run one part unless the budget is nearly spent; record its status and elapsed time."""
    parts = ctx.report.data["parts"]
    if not ctx.budget.allows(need, f"part {name!r}"):
        parts[name] = {"status": "skipped", "reason": "budget nearly spent", "budget_left_s": ctx.budget.left()}
        ctx.report.write()
        return
    say(f"== part {name} (needs ~{need:.0f} s; {ctx.budget.left():.0f} s of the budget left)")
    t0 = time.perf_counter()
    status = "ok"
    try:
        fn(ctx)
    except Exception as exc:  # one broken part must not cost the others
        status = f"error: {type(exc).__name__}: {exc}"
        ctx.report.errors += 1
        traceback.print_exc()
    elapsed = time.perf_counter() - t0
    parts[name] = {"status": status, "elapsed_s": round(elapsed, 2)}
    ctx.report.write()
    say(f"-- part {name}: {status}, {elapsed:.1f} s")


def build(name: str, ctx: Ctx):
    """rsabench's torchvision backbone, random weights (seed 0), on the device."""
    from rsabench.builtin.torchvision_backbones import TorchvisionBackbone

    built = TorchvisionBackbone(name).build(weights="random", seed=0)
    built.model.to(ctx.device)
    return built


def free(ctx: Ctx) -> None:
    if ctx.cuda:
        torch.cuda.empty_cache()


def set_layout(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def max_mem_gib(ctx: Ctx) -> float | None:
    return round(torch.cuda.max_memory_allocated(ctx.device) / GIB, 3) if ctx.cuda else None


def reset_mem(ctx: Ctx) -> None:
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)


# -- part 1: FLOPs ------------------------------------------------------------------------------------
def count_forward_flops(model: torch.nn.Module, x: torch.Tensor, layer: str | None = None) -> int:
    """Forward FLOPs of one pass of ``x`` (the whole network, or rsabench's ``LayerTaps`` up to ``layer``)."""
    from torch.utils.flop_counter import FlopCounterMode

    from rsabench.backbone import LayerTaps

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        if layer is None:
            model(x)
        else:
            LayerTaps(model, [layer])(x)
    return int(counter.get_total_flops())


def part_flops(ctx: Ctx) -> None:
    s = ctx.sizes
    flops = ctx.report.data["flops"]
    for name in MODELS:
        model = build(name, ctx).model
        one = torch.randn(1, 3, s.size, s.size, device=ctx.device)
        entry = {"image_size": s.size, "forward": count_forward_flops(model, one)}
        entry[f"forward_to_{LOSS_LAYERS[name]}"] = count_forward_flops(model, one, LOSS_LAYERS[name])
        if name == "vgg16":
            small = torch.randn(1, 3, s.score_size, s.score_size, device=ctx.device)
            entry[f"forward_to_{VGG16_RELU_LAYERS[-1]}_at_{s.score_size}px"] = count_forward_flops(
                model, small, VGG16_RELU_LAYERS[-1]
            )
        flops[name] = entry
        ctx.report.write()
        say(
            f"{name}: forward {entry['forward'] / 1e9:.3f} GFLOP/image at {s.size} px "
            f"(fwd+bwd ~{FWD_BWD_FACTOR:.0f}x = {FWD_BWD_FACTOR * entry['forward'] / 1e9:.3f} GFLOP); "
            + ", ".join(f"{k} {v / 1e9:.3f} GFLOP" for k, v in entry.items() if k.startswith("forward_to"))
        )
        del model
        free(ctx)


def flops_of(ctx: Ctx, name: str, key: str = "forward") -> float | None:
    """Counted forward FLOPs per image (counted now if part 1 did not run)."""
    entry = ctx.report.data["flops"].get(name)
    if entry is None:
        part_flops(ctx)
        entry = ctx.report.data["flops"][name]
    return entry.get(key)


# -- parts 2 and 5: forward+backward throughput ------------------------------------------------------
def time_steps(ctx: Ctx, step: Callable[[], None], warmup: int, iters: int, repeats: int) -> list[float]:
    """Seconds per step of each timed repeat (``iters`` steps), after ``warmup`` steps."""
    for _ in range(warmup):
        step()
    ctx.sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        ctx.sync()
        out.append((time.perf_counter() - t0) / iters)
    return out


def make_step(ctx: Ctx, model: Callable, x: torch.Tensor, amp: torch.dtype | None, params: list) -> Callable[[], None]:
    def step() -> None:
        for p in params:
            p.grad = None
        with torch.autocast(ctx.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            out = model(x)
        out.float().square().mean().backward()

    return step


def throughput_one(ctx: Ctx, name: str, model: torch.nn.Module, dtype: str, cl: bool, compiled: bool) -> None:
    s = ctx.sizes
    batch = s.batches[name]
    amp = torch.bfloat16 if dtype == "bf16" else None
    set_layout(model, cl)
    x = torch.randn(batch, 3, s.size, s.size, device=ctx.device)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    fn = model
    compile_s = None
    if compiled:
        fn = torch.compile(model)
        t0 = time.perf_counter()
        make_step(ctx, fn, x, amp, params)()  # compiles forward and backward
        ctx.sync()
        compile_s = time.perf_counter() - t0
    reset_mem(ctx)
    times = time_steps(ctx, make_step(ctx, fn, x, amp, params), s.warmup, s.iters, s.repeats)
    step_s = statistics.median(times)
    ips = batch / step_s
    fwd = flops_of(ctx, name)
    tflops = ips * FWD_BWD_FACTOR * fwd / 1e12
    text, pct = ctx.peak_text(tflops)
    entry = {
        "model": name,
        "batch": batch,
        "image_size": s.size,
        "dtype": dtype,
        "channels_last": cl,
        "compiled": compiled,
        "compile_s": None if compile_s is None else round(compile_s, 2),
        "images_per_s": round(ips, 2),
        "step_ms_median": round(1e3 * step_s, 3),
        "step_ms_repeats": [round(1e3 * t, 3) for t in times],
        "steps_per_repeat": s.iters,
        "warmup_steps": s.warmup,
        "tflops": round(tflops, 3),
        "pct_of_bf16_peak": None if pct is None else round(pct, 2),
        "max_memory_gib": max_mem_gib(ctx),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
    ctx.report.add("throughput", entry)
    extra = f", compile {compile_s:.1f} s" if compile_s is not None else ""
    say(
        f"fwd+bwd {name:8s} b{batch} {s.size}px {dtype:4s} channels-last {'on ' if cl else 'off'}"
        f"{' compiled' if compiled else ''}: {ips:9.1f} img/s (step {1e3 * step_s:.2f} ms, median of "
        f"{s.repeats}x{s.iters}{extra}) -> {text}"
    )


def throughput_configs(ctx: Ctx, configs: list[tuple[str, bool]], compiled: bool, need: float, tag: str) -> None:
    for name in MODELS:
        model = None
        for dtype, cl in configs:
            what = f"{tag} {name} {dtype} channels-last {'on' if cl else 'off'}"
            if not ctx.budget.allows(need, what):
                continue
            if model is None:
                model = build(name, ctx).model
            try:
                throughput_one(ctx, name, model, dtype, cl, compiled)
            except Exception as exc:
                ctx.report.errors += 1
                ctx.report.add("throughput", {"model": name, "dtype": dtype, "channels_last": cl, "error": repr(exc)})
                say(f"ERROR {what}: {type(exc).__name__}: {exc}")
                free(ctx)
        del model
        free(ctx)


def part_throughput(ctx: Ctx) -> None:
    configs = [(d, cl) for d in ("fp32", "bf16") for cl in (False, True)]
    throughput_configs(ctx, configs, False, ctx.sizes.est["throughput"], "throughput")


def part_compile(ctx: Ctx) -> None:
    # the settings of part 2 (the dissim and scoring parts run with a cell's deterministic kernels)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = ctx.args.cudnn_benchmark
    throughput_configs(ctx, [("bf16", True)], True, ctx.sizes.est["compile"], "compile")


# -- part 3: one dissim epoch through rsabench.training.train --------------------------------------------
class StampedImages(dict):
    """``train``'s image dict: the first batch fetch (after a CUDA sync) marks the start of the epoch loop."""

    clock: EpochClock

    def __getitem__(self, key):
        if self.clock.start is None:
            self.clock.ctx.sync()
            self.clock.start = time.perf_counter()
        return super().__getitem__(key)


class EpochClock:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.start: float | None = None
        self.epoch_s: float | None = None

    def images(self, images: dict[str, torch.Tensor]) -> StampedImages:
        self.start, self.epoch_s = None, None
        out = StampedImages(images)
        out.clock = self
        return out

    def evaluate(self, epoch: int) -> float:
        if epoch == 1 and self.start is not None:
            self.ctx.sync()
            self.epoch_s = time.perf_counter() - self.start
        return 0.0


def image_sets(ctx: Ctx) -> list[tuple[str, np.ndarray, np.ndarray, str]]:
    """(set name, uint8 images (n, H, W, 3), subject RDMs (S, R, n, n), source) of the two training sets."""
    from rsabench.builtin import kriegeskorte2008, synthetic

    n_cap = ctx.sizes.dissim_images
    ds = kriegeskorte2008.load()
    images = ds.groups["92"].load_images()
    n = len(images) if n_cap is None else min(n_cap, len(images))
    out = [("92", images[:n], ds.targets[0].rdms[..., :n, :n], "kriegeskorte2008 (embedded), target hIT")]
    n118 = 118 if n_cap is None else min(n_cap, 118)
    t0 = time.perf_counter()
    data = synthetic.generate(seed=0, n_per_group=n118, image_size=ctx.sizes.size, subjects=4)
    say(f"generated {n118} synthetic images at {ctx.sizes.size} px in {time.perf_counter() - t0:.1f} s")
    out.append(("118", data.images["A"], data.subject_rdms["late", "A"], "synthetic (rsabench), group A, target late"))
    return out


DISSIM_MODES = [("off", False), ("off", True), ("bf16", False), ("bf16", True)]  # (--amp, channels-last)


def dissim_one(ctx: Ctx, name: str, built: Any, init: dict, set_name: str, x: torch.Tensor, rdms, mode) -> dict:
    """Warm-up and timed ``train(epochs=1)`` calls, each from the weights as built (``init``)."""
    from rsabench.builtin.basic_objectives import Dissim
    from rsabench.cell import seed_everything
    from rsabench.objective import training_target
    from rsabench.training import TrainSettings, train

    amp, cl = mode
    n = len(x)
    layer = LOSS_LAYERS[name]
    seed_everything(0, str(ctx.device))  # as a cell: seeded, deterministic kernels (cudnn.benchmark off on CUDA)
    set_layout(built.model, cl)
    settings = TrainSettings(epochs=1, batch_size=ctx.args.batch_size, amp=amp)
    target = {set_name: torch.from_numpy(training_target(rdms, "none", np.arange(n))).float()}
    clock = EpochClock(ctx)
    epochs, calls, losses = [], [], []
    reset_mem(ctx)
    for k in range(ctx.sizes.dissim_warmup + ctx.sizes.dissim_repeats):
        built.model.load_state_dict(init)  # every call from the same weights: the losses must agree
        ctx.sync()
        t0 = time.perf_counter()
        result = train(
            built.model, layer, Dissim(), clock.images({set_name: x}), {set_name: np.arange(n)}, target,
            settings, seed=0, evaluate=clock.evaluate, device=ctx.device, channels_last=cl,
        )  # fmt: skip
        ctx.sync()
        if k >= ctx.sizes.dissim_warmup:
            calls.append(time.perf_counter() - t0)
            epochs.append(clock.epoch_s)
            losses.append(result.train_loss[0])
    epoch_s = statistics.median(epochs)
    ips = n / epoch_s
    tflops = ips * FWD_BWD_FACTOR * flops_of(ctx, name, f"forward_to_{layer}") / 1e12
    text, pct = ctx.peak_text(tflops)
    entry = {
        "model": name,
        "set": set_name,
        "images": n,
        "image_size": ctx.sizes.size,
        "loss_layer": layer,
        "batch_size": settings.batch_size,
        "batches": math.ceil(n / settings.batch_size),
        "amp": amp,
        "channels_last": cl,
        "epoch_s_median": round(epoch_s, 4),
        "epoch_s_repeats": [round(t, 4) for t in epochs],
        "train_call_s_median": round(statistics.median(calls), 4),
        "images_per_s": round(ips, 2),
        "tflops_to_loss_layer": round(tflops, 3),
        "pct_of_bf16_peak": None if pct is None else round(pct, 2),
        "train_loss": losses[-1],
        "train_loss_repeats": losses,
        "max_memory_gib": max_mem_gib(ctx),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
    say(
        f"dissim epoch {name:8s} {n} images ({set_name}) {ctx.sizes.size}px amp {amp:4s} channels-last "
        f"{'on ' if cl else 'off'}: epoch {epoch_s:.3f} s (train() {entry['train_call_s_median']:.3f} s; median of "
        f"{len(epochs)}) = {ips:.1f} img/s -> {text}; loss {losses[-1]:.5f}"
    )
    return entry


def dissim_modes(ctx: Ctx, name: str, built: Any, init: dict, set_name: str, x: torch.Tensor, rdms, source: str):
    for mode in DISSIM_MODES:
        what = f"dissim {name} {set_name} amp {mode[0]} channels-last {'on' if mode[1] else 'off'}"
        if mode[0] != "off" and not ctx.cuda:
            say(f"SKIP {what}: rsabench's --amp runs on CUDA only")
            continue
        if not ctx.budget.allows(ctx.sizes.est["dissim"] / len(DISSIM_MODES), what):
            continue
        try:
            entry = {**dissim_one(ctx, name, built, init, set_name, x, rdms, mode), "source": source}
        except Exception as exc:
            ctx.report.errors += 1
            entry = {"model": name, "set": set_name, "amp": mode[0], "channels_last": mode[1], "error": repr(exc)}
            say(f"ERROR {what}: {type(exc).__name__}: {exc}")
        ctx.report.add("dissim_epoch", entry)


def part_dissim(ctx: Ctx) -> None:
    from rsabench.images import preprocess

    sets = image_sets(ctx)
    for name in MODELS:
        if not ctx.budget.allows(ctx.sizes.est["dissim"], f"dissim {name}"):
            continue
        built = build(name, ctx)
        init = {k: v.detach().to("cpu", copy=True) for k, v in built.model.state_dict().items()}
        for set_name, images, rdms, source in sets:
            x = preprocess(images, ctx.sizes.size, built.mean, built.std)  # on the CPU, as a cell keeps them
            dissim_modes(ctx, name, built, init, set_name, x, rdms, source)
        del built
        free(ctx)


# -- part 4: extraction of all VGG-16 ReLU layers and scoring ------------------------------------------
def part_scoring(ctx: Ctx) -> None:
    from rsabench.backbone import LayerTaps
    from rsabench.builtin import synthetic
    from rsabench.features import FEATURE_BUDGET_BYTES, extract_rdms
    from rsabench.images import preprocess
    from rsabench.rsa import SpearmanMetric, correlation_rdm_numpy
    from rsabench.scoring import TargetScorer

    s = ctx.sizes
    n, size, batch = s.score_images, s.score_size, 32
    cl = ctx.cuda  # a cell's default: channels-last on CUDA
    built = build("vgg16", ctx)
    set_layout(built.model, cl)
    rng = np.random.default_rng(0)
    x = preprocess(rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8), size, built.mean, built.std)
    with torch.no_grad():  # warm-up: the first forward pass's kernel selection is not part of the figure
        LayerTaps(built.model, VGG16_RELU_LAYERS)(x[:batch].to(ctx.device))
    ctx.sync()
    reset_mem(ctx)
    t0 = time.perf_counter()
    rdms = extract_rdms(built.model, VGG16_RELU_LAYERS, x, batch_size=batch, device=ctx.device, channels_last=cl)
    ctx.sync()
    extract_s = time.perf_counter() - t0
    mem = max_mem_gib(ctx)
    del built
    free(ctx)
    subjects = synthetic.subject_rdms(correlation_rdm_numpy(rng.standard_normal((n, 8))), s.score_subjects, 1.0, rng)
    t0 = time.perf_counter()
    scorer = TargetScorer(subjects, SpearmanMetric(), np.arange(n))
    build_s = time.perf_counter() - t0
    score_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        scores = scorer.score_many(rdms)
        score_times.append(time.perf_counter() - t0)
    fwd = flops_of(ctx, "vgg16", f"forward_to_{VGG16_RELU_LAYERS[-1]}_at_{size}px")
    ips = n / extract_s
    text, pct = ctx.peak_text(ips * fwd / 1e12)
    ctx.report.data["scoring"] = {
        "model": "vgg16",
        "layers": VGG16_RELU_LAYERS,
        "images": n,
        "image_size": size,
        "extraction_batch": batch,
        "channels_last": cl,
        "feature_budget_bytes": FEATURE_BUDGET_BYTES,
        "extract_s": round(extract_s, 3),
        "extract_images_per_s": round(ips, 2),
        "extract_forward_tflops": round(ips * fwd / 1e12, 4),
        "pct_of_bf16_peak": None if pct is None else round(pct, 3),
        "extract_max_memory_gib": mem,
        "subjects": s.score_subjects,
        "scorer_build_s": round(build_s, 3),
        "score_many_s_median": round(statistics.median(score_times), 4),
        "score_many_s_repeats": [round(t, 4) for t in score_times],
        "total_s": round(extract_s + build_s + statistics.median(score_times), 3),
        "raw": [sc.raw for sc in scores],
    }
    ctx.report.write()
    say(
        f"scoring: extract_rdms of {len(VGG16_RELU_LAYERS)} VGG-16 ReLU layers, {n} images at {size} px: "
        f"{extract_s:.2f} s ({ips:.1f} img/s, forward {text}); TargetScorer build ({s.score_subjects} subjects) "
        f"{build_s:.2f} s, score_many {statistics.median(score_times):.3f} s (median of 3)"
    )


# -- main --------------------------------------------------------------------------------------------
def peak_for(name: str) -> float | None:
    return next((tflops for key, tflops in BF16_PEAK_TFLOPS if key in name), None)


def device_meta(device: torch.device) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta.update(
            device_name=torch.cuda.get_device_name(device),
            capability=".".join(map(str, torch.cuda.get_device_capability(device))),
            multiprocessors=props.multi_processor_count,
            memory_gib=round(props.total_memory / GIB, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    else:
        meta["device_name"] = f"cpu ({platform.processor() or platform.machine()})"
    return meta


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU (tests the script; no figures)")
    p.add_argument("--compile", action="store_true", help="also time the bf16 channels-last step under torch.compile")
    p.add_argument("--budget-s", type=float, default=None, help="seconds for all parts (default 450; smoke 110)")
    p.add_argument("--json", type=Path, default=None, help="output file (default $OUT/gpu-bench.json, else ./)")
    p.add_argument("--parts", default="flops,throughput,dissim,scoring,compile", help="comma-separated parts to run")
    p.add_argument("--alexnet-batch", type=int, default=None, help="throughput batch of AlexNet (default 64)")
    p.add_argument("--vgg16-batch", type=int, default=None, help="throughput batch of VGG-16 (default 32)")
    p.add_argument("--batch-size", type=int, default=None, help="dissim training batch (default: rsabench's, 32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; smoke: 1)")
    p.add_argument("--cudnn-benchmark", action="store_true", help="cudnn.benchmark on for the throughput parts")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # rsabench's cells set this before CUDA starts (deterministic cuBLAS); set here for every part alike
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if args.cpu_smoke:
        device, sizes = torch.device("cpu"), SMOKE_SIZES
        # one thread: on a small shared machine two threads wait on each other (4x slower here under load)
        torch.set_num_threads(args.threads or 1)
    elif not torch.cuda.is_available():
        print(
            "error: no CUDA device visible (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda}); use --cpu-smoke to test the script on CPU",
            file=sys.stderr,
        )
        return 2
    else:
        device, sizes = torch.device("cuda", torch.cuda.current_device()), GPU_SIZES
        if args.threads:
            torch.set_num_threads(args.threads)
    from rsabench.settings import DEFAULTS

    sizes.batches["alexnet"] = args.alexnet_batch or sizes.batches["alexnet"]
    sizes.batches["vgg16"] = args.vgg16_batch or sizes.batches["vgg16"]
    args.batch_size = args.batch_size or DEFAULTS["batch_size"]
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    out_dir = os.environ.get("OUT")
    path = args.json or (Path(out_dir) / "gpu-bench.json" if out_dir else Path("gpu-bench.json"))
    meta = device_meta(device)  # after the thread setting: it records torch's threads
    peak = None if device.type == "cpu" else peak_for(meta["device_name"])
    meta.update(
        mode="cpu-smoke" if args.cpu_smoke else "cuda",
        argv=sys.argv[1:] if argv is None else argv,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        bf16_peak_tflops=peak,
        bf16_peak_source=PEAK_SOURCE,
        fwd_bwd_flops_factor=FWD_BWD_FACTOR,
        sizes={k: v for k, v in vars(sizes).items() if k != "est"},
    )
    budget = Budget(args.budget_s if args.budget_s is not None else sizes.budget_s)
    ctx = Ctx(device, sizes, budget, Report(path, meta), peak, args)
    say(
        f"device {meta['device_name']} | torch {torch.__version__} | bf16 peak "
        f"{'%.0f TFLOP/s' % peak if peak else 'unknown'} | budget {budget.seconds:.0f} s | JSON {path}"
    )
    if device.type == "cuda":  # "fp32" convolutions use TF32 tensor cores where cuDNN allows it (torch's default)
        say(
            f"cuDNN TF32 {meta['cudnn_allow_tf32']}, matmul TF32 {meta['matmul_allow_tf32']}, "
            f"cudnn.benchmark {args.cudnn_benchmark}"
        )
    wanted = {p.strip() for p in args.parts.split(",") if p.strip()}
    steps = [
        ("flops", part_flops),
        ("throughput", part_throughput),
        ("dissim", part_dissim),
        ("scoring", part_scoring),
    ]
    if args.compile:
        steps.append(("compile", part_compile))
    for name, fn in steps:
        if name in wanted:
            run_part(ctx, name, sizes.est[name], fn)
    ctx.report.data["meta"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    ctx.report.data["meta"]["elapsed_s"] = round(time.monotonic() - T0, 1)
    ctx.report.write()
    say(f"done: {ctx.report.errors} error(s); figures in {path}")
    return 1 if ctx.report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
