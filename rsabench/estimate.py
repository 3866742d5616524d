"""What the planned cells of a run will cost, before anything runs (``rsabench plan``).

Per cell, :func:`estimate_cells` says

- whether its record is cached (nothing runs) and whether the RDMs of the network *as built* (the frozen
  pass) come from the feature cache: entries on disk now (``hit``), written by an earlier cell of the same
  plan (``in plan``), or computed (``miss``). The keys are the cell's own: the network is built by
  :func:`rsabench.cell.prepare` from the cell's config, keys by :meth:`rsabench.cell.Prepared.cache_parts`;
- how many images go forward through the network and how many backward, counted from what
  :mod:`rsabench.cell` and :mod:`rsabench.training` do (:func:`count_passes`; trained cells: the maximum,
  every epoch run, no early stop, the selected epoch not the final one);
- the memory of parameters, gradients and optimizer state, from the real parameter tensors of the built
  network (:func:`optimizer_state_bytes`; gradients only reach the parameters used up to the loss layer),
  and of the activations of one batch (:func:`activation_profile`);
- an estimated wall time from short timed probes of the real code on the cell's device
  (:func:`probe_extraction`, :func:`probe_training`), cached per backbone, weights, image size, trains and
  device (:class:`ProbeCache`), with the measured set-up of a cell (``prepare``);
- what is missing: dataset files (the dataset's :class:`~rsabench.dataset.DataSource`), a ``--weights``
  file, pretrained weights absent from the torch.hub / Hugging Face caches, or why ``prepare`` refuses.

``--loss-layer auto`` is chosen at run time on the validation images of the network as built. The
estimate makes that choice the same way (:class:`rsabench.cell.Validator`, epoch 0) when those RDMs are in
the feature cache or the probe says computing them takes at most :data:`AUTO_LAYER_SECONDS`; otherwise it
assumes the deepest layer (the costliest choice). Nothing here downloads anything, writes a record or
writes to the feature cache; the training probe writes one temporary file (to time a checkpoint write)
and removes it.

:func:`render_plan` prints the estimates as a rich table, a totals line and a note of how the time was
estimated.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .errors import UsageError

if TYPE_CHECKING:
    import torch

    from .runner import PlannedCell, Session

PROBE_SMALL = 2
"""Images in the first timed probe call (after one warm-up call of as many)."""

PROBE_SECONDS = 2.0
"""About how long the timed calls of one probe take in all (after the warm-up)."""

PROBE_CALL_SECONDS = 3.0
"""The longest single probe call: the larger calls have fewer images where the cells' would take longer."""

AUTO_LAYER_SECONDS = 10.0
"""The longest validation pass the estimate runs to learn which layer ``--loss-layer auto`` picks."""

WRITE_PROBE_BYTES = 32 << 20
"""Size of the file written (atomically, with fsync, as checkpoints are) to measure the write rate."""


# -- what a cell does -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lookup:
    """One call of ``Prepared.rdms``: the images of ``group`` at ``idx`` through the network."""

    stage: str  # validation (epoch N) | test (final) | test (selected)
    group: str
    idx: np.ndarray
    as_built: bool  # the network is as built here: the feature cache can serve it

    @property
    def n(self) -> int:
        return len(self.idx)


@dataclass(frozen=True)
class Passes:
    """Images through the network (forward) and back (backward) in one cell.

    ``validation`` and ``test`` are extraction forwards (no gradients), ``train`` the training steps' forwards,
    each followed by a backward; ``other`` a one-image forward that maps an ``up-to:``/``from:`` policy.
    ``cached``: of the extraction forwards, images whose RDMs the feature cache serves. ``test_reselect``:
    of ``test``, the selected epoch's test pass of a trained cell, which does not run when the selected epoch
    is the final one (its RDMs are the final ones), and is served by the feature cache when the selected
    epoch is 0 and the frozen test RDMs are cached.
    """

    validation: int = 0
    test: int = 0
    train: int = 0
    other: int = 0
    cached: int = 0
    test_reselect: int = 0
    extraction_batches: int = 0  # batches of the extraction forwards that run (not served by the cache)
    train_steps: int = 0
    epochs: int = 0

    @property
    def forward(self) -> int:
        """Every image forward pass, cached ones included."""
        return self.validation + self.test + self.train + self.other

    @property
    def backward(self) -> int:
        return self.train

    @property
    def run_forward(self) -> int:
        """Forward passes that run (those the feature cache serves left out)."""
        return self.forward - self.cached


def cell_lookups(ds: Any, config: dict[str, Any]) -> tuple[list[Lookup], dict[str, np.ndarray], list[str]]:
    """The extraction calls of a cell, in the order :mod:`rsabench.cell` makes them (trained: every epoch),
    the training images per group and the cell's groups."""
    from .protocol import split_images, test_sets

    split = config["split"]
    splits = split_images(ds, split["seed"], split["val_fraction"], split["test_fraction"] or 0.0)
    groups = [g for g in ds.train_groups if ds.target(config["target"], g) is not None]
    tests = test_sets(ds, splits)
    scored = [(name, g, idx) for name, g, idx in tests if ds.target(config["target"], g) is not None]
    val = [Lookup("validation (epoch 0)", g, splits[g]["validation"], True) for g in groups]
    if not config["trains"]:
        return val + [Lookup("test", g, idx, True) for _, g, idx in scored], {}, groups
    epochs = config["train"]["epochs"]
    out = list(val)
    for epoch in range(1, epochs + 1):
        out += [Lookup(f"validation (epoch {epoch})", g, splits[g]["validation"], False) for g in groups]
    out += [Lookup("test (final)", g, idx, False) for _, g, idx in tests]  # every test set, scored or not
    if epochs:  # the selected epoch's test RDMs, unless it is the final epoch (with 0 epochs it always is)
        out += [Lookup("test (selected)", g, idx, False) for _, g, idx in scored]
    return out, {g: splits[g]["train"] for g in groups}, groups


def train_steps(train_index: dict[str, np.ndarray], batch_size: int) -> tuple[int, int]:
    """(images, optimizer steps) of one epoch, as :func:`rsabench.training.epoch_batches` batches them."""
    images = steps = 0
    for idx in train_index.values():
        if len(idx) < 2:
            continue
        images += len(idx)
        steps += min(max(1, math.ceil(len(idx) / batch_size)), len(idx) // 2)
    return images, steps


def count_passes(
    ds: Any, config: dict[str, Any], extraction_batch: int, cached: Callable[[int], bool] = lambda j: False
) -> Passes:
    """Forward and backward image passes of the cell ``config`` (extraction in batches of ``extraction_batch``);
    ``cached(j)``: whether the feature cache serves the ``j``-th extraction of :func:`cell_lookups`."""
    lookups, train_index, _ = cell_lookups(ds, config)
    kinds: Counter = Counter()
    for j, lookup in enumerate(lookups):
        kind = lookup.stage.split(" ")[0]
        kinds[kind] += lookup.n
        if lookup.stage == "test (selected)":
            kinds["reselect"] += lookup.n
        if cached(j):
            kinds["cached"] += lookup.n
        else:
            kinds["batches"] += math.ceil(lookup.n / extraction_batch)
    epochs = config["train"]["epochs"] if config["trains"] else 0
    images, steps = train_steps(train_index, config["train"]["batch_size"]) if config["trains"] else (0, 0)
    policy = config["train"]["trainable"] if config["trains"] else "all"
    other = 1 if policy.split(":")[0] in ("up-to", "from") else 0  # trainable_parameters maps the call order
    return Passes(
        validation=kinds["validation"],
        test=kinds["test"],
        train=epochs * images,
        other=other,
        cached=kinds["cached"],
        test_reselect=kinds["reselect"],
        extraction_batches=kinds["batches"] + other,
        train_steps=epochs * steps,
        epochs=epochs,
    )


# -- memory ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActivationProfile:
    """Bytes of module outputs for one image (batch 1) of one forward pass up to the deepest wanted layer.

    ``kept``: the outputs of every leaf module (a module without children) that ran, which is what autograd
    keeps for the backward pass to a good approximation: a convolution or linear layer saves its input (the
    previous leaf's output), an activation its output. Not counted: tensors of functional operations between
    modules (``torch.flatten``, residual additions), autograd's own workspace, the input image. ``largest``:
    the largest leaf output; ``tapped``: each wanted layer's output; ``order``: the wanted layers in the
    order they produced output (the last is the deepest); ``ran``: the modules that started (their
    parameters are the ones a loss at the deepest wanted layer can reach).
    """

    kept: int
    largest: int
    tapped: dict[str, int]
    order: list[str]
    ran: frozenset[str] = frozenset()  # every module whose forward started before the pass stopped

    def extraction_batch(self, batch: int) -> int:
        """An extraction batch's activations: the largest output, its input, and every tapped copy."""
        return batch * (2 * self.largest + sum(self.tapped.values()))


class _Stop(Exception):
    pass


def activation_profile(model: "torch.nn.Module", layers: Sequence[str], size: int) -> ActivationProfile:
    """:class:`ActivationProfile` of ``model`` on a ``size`` x ``size`` image, measured by forward hooks on a
    meta-device forward pass (shapes and dtypes, no memory, no compute; a real batch-1 forward on the CPU for
    models with operations the meta device lacks), stopped once every one of ``layers`` has an output."""
    import torch

    modules = dict(model.named_modules())
    leaves = {n for n, m in modules.items() if n and not any(True for _ in m.children())}
    wanted = set(layers)
    kept: dict[str, int] = {}
    tapped: dict[str, int] = {}
    order: list[str] = []
    ran: set[str] = set()

    def hook(name: str, out: Any) -> None:
        out = out[0] if isinstance(out, (tuple, list)) and out else out
        nbytes = int(out.numel() * out.element_size()) if isinstance(out, torch.Tensor) else 0
        if name in leaves:
            kept.setdefault(name, nbytes)
        if name in wanted and name not in tapped:
            tapped[name] = nbytes
            order.append(name)
            if wanted <= tapped.keys():
                raise _Stop

    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: hook(n, o)) for n in sorted(leaves | wanted)]
    handles += [m.register_forward_pre_hook(lambda m, i, n=n: ran.add(n)) for n, m in modules.items()]
    try:
        try:
            state = {k: torch.empty_like(v, device="meta") for k, v in model.state_dict(keep_vars=True).items()}
            with torch.no_grad():
                torch.func.functional_call(model, state, (torch.empty(1, 3, size, size, device="meta"),), strict=False)
        except _Stop:
            pass
        except NotImplementedError:
            for partial in (kept, tapped, order, ran):
                partial.clear()
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            try:
                with torch.no_grad():
                    model(torch.zeros(1, 3, size, size, device=device))
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    return ActivationProfile(sum(kept.values()), max(kept.values(), default=0), tapped, order, frozenset(ran))


def tensor_bytes(tensors: Any) -> int:
    return int(sum(t.numel() * t.element_size() for t in tensors))


def optimizer_state_bytes(params: Sequence["torch.Tensor"], optimizer: str, momentum: float | None = 0.9) -> int:
    """Bytes of optimizer state for ``params`` once it has stepped, as :func:`rsabench.training.make_optimizer`
    builds it: Adam/AdamW two moments per parameter (``exp_avg``, ``exp_avg_sq``, each like the parameter)
    and one float32 ``step`` scalar per tensor; SGD one momentum buffer per parameter (none without momentum)."""
    total = tensor_bytes(params)
    if optimizer in ("adam", "adamw"):
        return 2 * total + 4 * len(params)
    if optimizer == "sgd":
        return total if (0.9 if momentum is None else momentum) else 0
    raise UsageError(f"unknown optimizer {optimizer!r}")


# -- timed probes ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtractionTiming:
    """Seconds of :func:`rsabench.features.extract_rdms` (forward, taps, checks, unit features, RDM) per image
    and per batch on ``device``, from calls of ``batches`` images."""

    device: str
    per_image: float
    per_batch: float
    batches: tuple[int, int]


@dataclass(frozen=True)
class TrainingTiming:
    """Seconds of training on ``device``: a step's forward and backward per image, the rest of a step (its
    fixed part, the gradient norm and the optimizer step), from steps of ``batches`` images; one pass of the
    finite-weights check after each epoch; a copy of the state to the CPU, its fingerprint and a comparison
    with that copy (what checkpoints do); and the rate checkpoints are written at (bytes per second)."""

    device: str
    per_image: float
    per_step: float
    check: float
    copy: float
    fingerprint: float
    compare: float
    write_rate: float
    batches: tuple[int, int]


class ProbeCache:
    """Probe results by key: (backbone, weights, image size, trains, device, and what else the timed pass
    depends on: layers, loss layer, trainable policy, optimizer, AMP, batch size, memory layout). ``runs``
    counts the probes made, by kind (``extraction``, ``training``)."""

    def __init__(self) -> None:
        self.entries: dict[tuple, Any] = {}
        self.runs: Counter = Counter()
        self.write_rates: dict[str, float] = {}

    def get(self, key: tuple, make: Callable[..., Any], *args: Any) -> Any:
        """The entry of ``key``, made by ``make(*args)`` the first time."""
        if key not in self.entries:
            self.entries[key] = make(*args)
            self.runs["training" if key[3] else "extraction"] += 1
        return self.entries[key]


PROBES = ProbeCache()
"""The process's probe cache: a sweep, or several plans in one process, probe each key once."""


def _timer(device: str) -> Callable[[Callable[[], Any]], float]:
    import torch

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    def timed(fn: Callable[[], Any]) -> float:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    return timed


def _linear(fn: Callable[[int], Any], device: str, typical: int) -> tuple[float, float, tuple[int, int]]:
    """(seconds per image, seconds per call, the two sizes) of ``fn(n)``: after one warm-up call of
    :data:`PROBE_SMALL` images, calls of as many and of ``typical`` images (the size of the cells' calls;
    fewer where one would take over :data:`PROBE_CALL_SECONDS`), alternately, as often as fit in
    :data:`PROBE_SECONDS` (1 to 5 times each), averaged: the mean, not the best, since a run's time is the
    sum of its calls, slow ones included (on a shared machine single calls vary several-fold)."""
    timed = _timer(device)
    small = min(PROBE_SMALL, typical)
    timed(lambda: fn(small))  # warm-up
    first = timed(lambda: fn(small))
    guess = max(first / small, 1e-6)  # seconds per image, roughly
    big = max(min(typical, int(PROBE_CALL_SECONDS / guess)), small)
    if big < 2 * small:
        return first / small, 0.0, (small, small)
    repeats = max(1, min(5, int(PROBE_SECONDS / (guess * (small + big)))))
    t_small, t_big = first / repeats, 0.0
    for r in range(repeats):
        t_small += timed(lambda: fn(small)) / repeats if r else 0.0
        t_big += timed(lambda: fn(big)) / repeats
    per_image = (t_big - t_small) / (big - small)
    if per_image <= 0:  # noise larger than the images' cost: all of it per call
        return 0.0, (t_small + t_big) / 2, (small, big)
    if t_small < small * per_image:
        return t_big / big, 0.0, (small, big)
    return per_image, t_small - small * per_image, (small, big)


class _Images:
    """Random probe images of one size, as many as asked (made once, grown when more are asked)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.x: Any = None

    def __call__(self, n: int) -> "torch.Tensor":
        import torch

        if self.x is None or len(self.x) < n:
            generator = torch.Generator().manual_seed(0)
            self.x = torch.randn(n, 3, self.size, self.size, generator=generator)
        return self.x[:n]


def probe_extraction(
    model: "torch.nn.Module", layers: list[str], size: int, device: str, channels_last: bool, typical: int
) -> ExtractionTiming:
    """Time :func:`rsabench.features.extract_rdms` of ``model`` on random images, in single batches of
    :data:`PROBE_SMALL` and of ``typical`` images (the cells' calls: their image sets, at most a batch)."""
    from .features import extract_rdms

    images = _Images(size)
    per_image, per_batch, batches = _linear(
        lambda n: extract_rdms(model, layers, images(n), n, device, channels_last=channels_last), device, typical
    )
    return ExtractionTiming(device, per_image, per_batch, batches)


def probe_training(
    model: "torch.nn.Module",
    loss_layer: str,
    train: dict[str, Any],
    size: int,
    device: str,
    channels_last: bool,
    typical: int,
    write_rate: float,
) -> TrainingTiming | None:
    """Time training steps of ``model`` at ``loss_layer`` as :mod:`rsabench.training` takes them (trainable
    policy, optimizer, AMP, gradient norm; a mean of squares stands in for the objective's loss) in batches
    of :data:`PROBE_SMALL` and ``typical`` images (the cells' training batches), and the per-epoch work on
    the weights. ``model`` is changed (trained). None: the policy trains nothing."""
    import torch

    from .backbone import LayerTaps, trainable_parameters
    from .features import to_device
    from .training import TrainSettings, _fingerprint, _grad_norm, check_amp, make_optimizer

    settings = TrainSettings(**train)
    images = _Images(size)
    params = trainable_parameters(model, settings.trainable, images(1).to(device))
    if not params:
        return None
    optimizer = make_optimizer(params, settings)
    taps = LayerTaps(model, [loss_layer])
    amp = check_amp(settings.amp, device)
    timed = _timer(device)

    def forward_backward(n: int) -> None:
        x = to_device(images(n), device, channels_last)
        with torch.autocast(torch.device(device).type, dtype=amp, enabled=amp is not None):
            out = taps(x)[loss_layer].float()
        optimizer.zero_grad(set_to_none=True)
        out.pow(2).mean().backward()

    def update() -> None:
        _grad_norm(params, settings.grad_clip)
        optimizer.step()

    forward_backward(PROBE_SMALL)
    update()  # the first step allocates the optimizer state
    per_image, per_call, batches = _linear(forward_backward, device, typical)
    per_step = per_call + sum(timed(update) for _ in range(3)) / 3
    trainable = [p for p in model.parameters() if p.requires_grad]
    check = sum(timed(lambda: [bool(torch.isfinite(p).all()) for p in trainable]) for _ in range(2)) / 2
    initial: dict[str, torch.Tensor] = {}
    copy = timed(lambda: initial.update({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}))
    fingerprint = timed(lambda: _fingerprint(initial))
    state = model.state_dict()
    compare = sum(
        timed(lambda: [torch.equal(v.detach().cpu(), initial[k]) for k, v in state.items()]) for _ in range(2)
    )
    compare /= 2
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return TrainingTiming(device, per_image, per_step, check, copy, fingerprint, compare, write_rate, batches)


def write_rate(directory: Path | None) -> float:
    """Bytes per second of an atomic, fsynced checkpoint write of :data:`WRITE_PROBE_BYTES` in ``directory``
    (where checkpoints go, if it exists and is writable; else the temp dir)."""
    import torch

    from .training import _save_atomic

    data = {"probe": torch.zeros(WRITE_PROBE_BYTES // 4)}
    for where in ([directory] if directory is not None and directory.is_dir() else []) + [None]:
        try:
            with tempfile.TemporaryDirectory(prefix=".rsabench-estimate-", dir=where) as tmp:
                t0 = time.perf_counter()
                _save_atomic(data, Path(tmp) / "probe.pt")
                return WRITE_PROBE_BYTES / max(time.perf_counter() - t0, 1e-6)
        except OSError:
            continue
    return float("inf")


# -- missing inputs -------------------------------------------------------------------------------
def pretrained_missing(backbone: Any) -> str | None:
    """What is missing for ``imagenet`` weights of a backbone object, or None (present, or cannot tell).

    A backbone may answer itself (``missing_weights("imagenet") -> str | None``); the built-in torchvision
    and timm backbones are asked through the cache helpers of their own modules (no download)."""
    own = getattr(backbone, "missing_weights", None)
    if callable(own):
        return own("imagenet")
    module = sys.modules.get(type(backbone).__module__)
    name = getattr(backbone, "name", "")
    try:
        if hasattr(module, "default_weights") and hasattr(module, "hub_checkpoint_path"):  # torchvision
            path = module.hub_checkpoint_path(module.default_weights(name).url)
            return None if path.is_file() else f"ImageNet weights {path}"
        if hasattr(module, "cached_weights"):  # timm
            from timm.models import get_pretrained_cfg

            cfg = get_pretrained_cfg(name)
            cfg = cfg.to_dict() if cfg is not None else {}
            if not (cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file")):
                return f"timm:{name} has no pretrained weights"
            path, expected = module.cached_weights(cfg)
            return None if path is not None else f"pretrained weights ({expected})"
    except Exception as exc:  # a question about a cache never breaks a plan
        return f"pretrained weights: cannot tell ({type(exc).__name__})"
    return None


def data_missing(session: "Session", name: str) -> list[str]:
    """What the data source of dataset ``name`` reports absent (``present`` false, or a ``missing`` list)."""
    from .dataset import data_source

    try:
        source = data_source(session.plugins.datasets.get(name))
        info = source.describe(session.data_dir) if source is not None else {}
    except Exception as exc:
        return [f"data of {name}: cannot tell ({type(exc).__name__})"]
    missing = list(info.get("missing") or [])
    if missing:
        return [f"{len(missing)} data file(s) of {name} (e.g. {missing[0]}; see `rsabench data info {name}`)"]
    if info.get("present") is False:
        return [f"data of {name} in {info.get('looks_in', session.data_dir)} (see `rsabench data info {name}`)"]
    return []


def weights_missing(weights: str) -> str | None:
    if weights in ("imagenet", "random") or Path(weights).expanduser().is_file():
        return None
    return f"weights file {weights}"


# -- the estimate ---------------------------------------------------------------------------------
@dataclass
class CellEstimate:
    """What one planned cell will cost (see the module docstring). Byte and time fields are None for a cell
    that does not run (its record is cached) or where they could not be measured."""

    cell: "PlannedCell"
    runs: bool
    feature_cache: str  # off | hit | in plan | partial | miss | unknown (not built) | - (does not run)
    passes: Passes
    loss_layer: str | None = None  # trained cells: the loss layer the estimate assumes
    loss_layer_from: str | None = None  # given | validation (what auto picks) | assumed (auto: the deepest)
    param_bytes: int | None = None
    grad_bytes: int | None = None
    optimizer_bytes: int | None = None
    activation_bytes: int | None = None  # one batch: training (kept for backward) or extraction
    activation_batch: int | None = None
    seconds: float | None = None
    seconds_parts: dict[str, float] = field(default_factory=dict)
    extraction: ExtractionTiming | None = None
    training: TrainingTiming | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def memory_bytes(self) -> int | None:
        """Parameters, gradients, optimizer state and one batch's activations."""
        parts = (self.param_bytes, self.grad_bytes, self.optimizer_bytes, self.activation_bytes)
        return None if self.param_bytes is None else sum(p or 0 for p in parts)


@dataclass(frozen=True)
class PlanTotals:
    cells: int
    to_run: int
    forward: int  # forward passes that run (feature-cache hits left out)
    backward: int
    cached_forward: int
    seconds: float | None  # None: a cell that runs has no time estimate
    peak_bytes: int | None  # the largest cell's memory
    missing: int  # cells with something missing


def totals(estimates: Sequence[CellEstimate]) -> PlanTotals:
    running = [e for e in estimates if e.runs]
    times = [e.seconds for e in running]
    peaks = [e.memory_bytes for e in running if e.memory_bytes is not None]
    return PlanTotals(
        cells=len(estimates),
        to_run=len(running),
        forward=sum(e.passes.run_forward for e in running),
        backward=sum(e.passes.backward for e in running),
        cached_forward=sum(e.passes.cached for e in running),
        seconds=None if any(t is None for t in times) else float(sum(t or 0.0 for t in times)),
        peak_bytes=max(peaks, default=None),
        missing=sum(1 for e in estimates if e.missing),
    )


@dataclass
class _Network:
    """One backbone as built for its first cells: memory is measured and probes are timed on it."""

    built: Any
    setup_s: list[float] = field(default_factory=list)
    digest_s: list[float] = field(default_factory=list)
    profiles: dict[tuple, ActivationProfile] = field(default_factory=dict)
    trainable: dict[str, list] = field(default_factory=dict)  # policy -> trainable parameter tensors

    def layers(self, config: dict[str, Any]) -> list[str]:
        return list(config["layers"]) or list(self.built.default_layers)

    def profile(self, layers: Sequence[str], size: int) -> ActivationProfile:
        key = (tuple(layers), size)
        if key not in self.profiles:
            self.profiles[key] = activation_profile(self.built.model, layers, size)
        return self.profiles[key]

    def deepest(self, config: dict[str, Any]) -> str:
        layers = self.layers(config)
        order = self.profile(layers, config["image_size"]).order
        return order[-1] if order else layers[-1]

    def trained_params(self, policy: str, loss_layer: str, size: int) -> list:
        """The parameters a step changes: trainable under ``policy`` and used up to ``loss_layer``."""
        import torch

        from .backbone import trainable_parameters

        if policy not in self.trainable:
            model = self.built.model
            flags = [p.requires_grad for p in model.parameters()]
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            self.trainable[policy] = trainable_parameters(model, policy, torch.zeros(1, 3, size, size, device=device))
            for p, flag in zip(model.parameters(), flags, strict=True):
                p.requires_grad_(flag)
        ran = self.profile([loss_layer], size).ran
        used = {id(p) for name, m in self.built.model.named_modules() if name in ran for p in m.parameters(False)}
        return [p for p in self.trainable[policy] if id(p) in used]


class _GlobalState:
    """Keeps the RNG states and torch's determinism settings as they were around ``prepare`` (which seeds
    and asks for deterministic kernels, as a cell does)."""

    def __enter__(self) -> "_GlobalState":
        import torch

        self.numpy = np.random.get_state()
        self.deterministic = torch.are_deterministic_algorithms_enabled()
        self.warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        self.benchmark = torch.backends.cudnn.benchmark
        self.fork = torch.random.fork_rng(devices=list(range(torch.cuda.device_count())))
        self.fork.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        self.fork.__exit__(None, None, None)
        np.random.set_state(self.numpy)
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.warn_only)
        torch.backends.cudnn.benchmark = self.benchmark


class _Estimator:
    """The state of one :func:`estimate_cells` call."""

    def __init__(self, session: "Session", cells: Sequence["PlannedCell"], probe: bool, probes: ProbeCache) -> None:
        from .cell import resolve_device

        self.session, self.cells, self.probe, self.probes = session, list(cells), probe, probes
        self.device = resolve_device(session.options.device)
        rt = session.runtime
        self.channels_last = rt.channels_last if rt.channels_last is not None else self.device.startswith("cuda")
        self.batch = rt.batch_size
        self.cache = session.feature_cache
        self.runs = [session.force or not c.cached for c in self.cells]
        self.keys: dict[int, dict[int, tuple[str, ...]]] = {}  # cell -> as-built lookup -> entry keys
        self.loss_layers: dict[int, tuple[str, str]] = {}  # cell -> (layer, given | validation)
        self.problems: dict[int, list[str]] = {}  # cell -> why prepare refused it
        self.networks: dict[str, _Network] = {}
        self.missing: dict[str, list[str]] = {}  # by dataset / backbone

    def dataset(self, config: dict[str, Any]) -> Any:
        return self.session.load_dataset(config["dataset"], config["dataset_options"])

    # -- missing inputs ------------------------------------------------------------------------
    def missing_of(self, k: int) -> list[str]:
        config = self.cells[k].config
        if config["dataset"] not in self.missing:
            self.missing[config["dataset"]] = data_missing(self.session, config["dataset"])
        out = list(self.missing[config["dataset"]])
        ds = self.dataset(config)
        out += [
            f"images of group {g} of {ds.name}"
            for g in ds.train_groups
            if ds.target(config["target"], g) is not None and ds.groups[g].load_images is None
        ]
        if config["weights"] == "imagenet":
            key = f"backbone:{config['backbone']}"
            if key not in self.missing:
                problem = pretrained_missing(self.session.plugins.backbones.get(config["backbone"])())
                self.missing[key] = [problem] if problem else []
            out += self.missing[key]
        elif (problem := weights_missing(config["weights"])) is not None:
            out.append(problem)
        return out + self.problems.get(k, [])

    # -- builds: cache keys, loss layers, memory, probes -----------------------------------------
    def measure(self) -> None:
        """Per backbone with cells to run: prepare each (weights, seed, dataset) network that cache keys or an
        ``auto`` loss layer need (and at least one), as the cells will; then probe on the first (the training
        probe, which changes its weights, last)."""
        running = [k for k, r in enumerate(self.runs) if r]
        for backbone in dict.fromkeys(self.cells[k].config["backbone"] for k in running):
            ours = [k for k in running if self.cells[k].config["backbone"] == backbone]
            for members in self._by_network(ours).values():
                first = backbone not in self.networks
                if self.missing_of(members[0]) or not (first or self.cache is not None or self._auto(members)):
                    continue
                p = self._prepare(members)
                if p is None:
                    continue
                network = self.networks.setdefault(backbone, _Network(p.built))
                network.setup_s.append(p.timings["setup_s"])
                if self.cache is not None:
                    self._cache_keys(p, members, network)
                if self.probe:
                    self._probe_extraction(backbone, network, ours)
                    self._auto_layers(p, members, network)
                del p
            if backbone not in self.networks:  # no cell could be built as it will run: shapes from random weights
                self.networks[backbone] = self._random_network(backbone, self.cells[ours[0]].config["seed"])
            if self.probe:
                self._probe_extraction(backbone, self.networks[backbone], ours)
                self._probe_training(backbone, self.networks[backbone], ours)

    def _auto(self, members: list[int]) -> bool:
        return any(self.cells[k].config["trains"] and self.cells[k].config["loss_layer"] == "auto" for k in members)

    def _by_network(self, members: list[int]) -> dict[tuple, list[int]]:
        out: dict[tuple, list[int]] = {}
        for k in members:
            c = self.cells[k].config
            out.setdefault((c["weights"], c["seed"], c["dataset"], repr(c["dataset_options"])), []).append(k)
        return out

    def _prepare(self, members: list[int]) -> Any:
        """:func:`rsabench.cell.prepare` of the first member (without the feature cache); None where it refuses
        (the reason goes to the members' missing inputs)."""
        from .cell import prepare
        from .errors import DataError

        try:
            with _GlobalState():
                return prepare(self.cells[members[0]].config, self.session, self.session.runtime, cache=None)
        except (UsageError, DataError) as exc:
            for k in members:
                self.problems[k] = [str(exc)]
            return None

    def _random_network(self, backbone: str, seed: int) -> _Network:
        import torch

        with _GlobalState():
            torch.manual_seed(seed)
            built = self.session.plugins.backbones.get(backbone)().build(weights="random", seed=seed)
        built.model = built.model.to(self.device)
        if self.channels_last:
            built.model = built.model.to(memory_format=torch.channels_last)
        return _Network(built)

    def _cache_keys(self, p: Any, members: list[int], network: _Network) -> None:
        """The feature-cache keys of every as-built lookup of ``members`` (cells of the network ``p``)."""
        from .feature_cache import entry_key

        t0 = time.perf_counter()
        p.cache_parts(p.groups[0], p.splits[p.groups[0]]["validation"])  # digests the network, as prepare does
        network.digest_s.append(time.perf_counter() - t0)
        for k in members:
            lookups, _, _ = cell_lookups(p.dataset, self.cells[k].config)
            self.keys[k] = {
                j: tuple(entry_key(p.cache_parts(lookup.group, lookup.idx), layer) for layer in p.layers)
                for j, lookup in enumerate(lookups)
                if lookup.as_built
            }

    def _typical(self, members: Sequence[int], trains: bool) -> int:
        """The images of the cells' usual call: the largest extraction (at most a batch) or training batch."""
        most = PROBE_SMALL
        for k in members:
            config = self.cells[k].config
            lookups, train_index, _ = cell_lookups(self.dataset(config), config)
            if not trains:
                most = max([most] + [min(x.n, self.batch) for x in lookups])
            elif config["trains"]:
                bs = config["train"]["batch_size"]
                for idx in train_index.values():
                    images, steps = train_steps({"": idx}, bs)
                    most = max(most, math.ceil(images / steps) if steps else 0)
        return most

    def _extraction_key(self, backbone: str, network: _Network, config: dict[str, Any]) -> tuple:
        base = (backbone, config["weights"], config["image_size"], False, self.device)
        return (*base, tuple(network.layers(config)), self.batch, self.channels_last)

    def _training_key(self, backbone: str, config: dict[str, Any], loss_layer: str) -> tuple:
        t = config["train"]
        base = (backbone, config["weights"], config["image_size"], True, self.device, loss_layer)
        return (*base, t["trainable"], t["optimizer"], t["amp"], t["adapt_bn"], t["batch_size"], self.channels_last)

    def _probe_extraction(self, backbone: str, network: _Network, members: list[int]) -> None:
        for k in members:
            config = self.cells[k].config
            key = self._extraction_key(backbone, network, config)
            if key not in self.probes.entries:
                same = [j for j in members if self._extraction_key(backbone, network, self.cells[j].config) == key]
                args = (network.layers(config), config["image_size"], self.device, self.channels_last)
                self.probes.get(key, probe_extraction, network.built.model, *args, self._typical(same, False))

    def _probe_training(self, backbone: str, network: _Network, members: list[int]) -> None:
        for k in members:
            config = self.cells[k].config
            if not config["trains"]:
                continue
            loss_layer = self.loss_layer(k, network)
            key = self._training_key(backbone, config, loss_layer)
            if key not in self.probes.entries:
                args = (network.built.model, loss_layer, config["train"], config["image_size"], self.device)
                typical = self._typical(members, True)
                self.probes.get(key, probe_training, *args, self.channels_last, typical, self._write_rate())

    def _write_rate(self) -> float:
        """Measured where checkpoints go: the first cell's folder, else the one above it (else the temp dir)."""
        folder = self.cells[0].path.parent
        directory = next((d for d in (folder, folder.parent) if d.is_dir()), None)
        if str(directory) not in self.probes.write_rates:
            self.probes.write_rates[str(directory)] = write_rate(directory)
        return self.probes.write_rates[str(directory)]

    def _auto_layers(self, p: Any, members: list[int], network: _Network) -> None:
        """What ``--loss-layer auto`` picks for each trained member: :class:`rsabench.cell.Validator` at
        epoch 0 on ``p`` (the network as built), its validation RDMs from the feature cache or computed (not
        stored) where the probe says that takes at most :data:`AUTO_LAYER_SECONDS`."""
        import dataclasses

        from .cell import Prepared, Validator
        from .errors import CellFailure
        from .protocol import VALIDATION_CONVENTION, make_scorer

        memo: dict[tuple, np.ndarray] = {}

        def rdms(group: str, idx: np.ndarray, stage: str) -> np.ndarray:
            key = (group, np.asarray(idx).tobytes())
            if key not in memo:
                memo[key] = self._cached_rdms(p, group, idx)
                if memo[key] is None:
                    memo[key] = Prepared.rdms(p, group, idx, f"plan: {stage} (to choose the loss layer)")
            return memo[key]

        for k in members:
            config = self.cells[k].config
            if not config["trains"] or config["loss_layer"] != "auto" or not self._affordable(p, k, network):
                continue
            groups = [g for g in p.dataset.train_groups if p.dataset.target(config["target"], g) is not None]
            scorers = {
                g: make_scorer(
                    VALIDATION_CONVENTION, p.dataset, config["target"], g, p.metric, p.splits[g]["validation"],
                    config["bootstrap"]["seed"],
                )
                for g in groups
            }  # fmt: skip
            view = dataclasses.replace(p, config=config, groups=groups, val_scorers=scorers)
            view.rdms = rdms  # the RDMs of the network as built, shared by the members
            validate = Validator(view)
            try:
                validate(0)
            except CellFailure:
                continue  # the cell fails at run time; the estimate assumes the deepest layer
            self.loss_layers[k] = (validate.best_layer_at[0], "validation")

    def _cached_rdms(self, p: Any, group: str, idx: np.ndarray) -> np.ndarray | None:
        if self.cache is None:
            return None
        from .feature_cache import entry_key

        keys = [entry_key(p.cache_parts(group, idx), layer) for layer in p.layers]
        if not all(self.cache._path(key).is_file() for key in keys):
            return None
        return self.cache.get(keys, len(idx))

    def _affordable(self, p: Any, k: int, network: _Network) -> bool:
        """Whether the epoch-0 validation RDMs of cell ``k`` are cached or take at most AUTO_LAYER_SECONDS."""
        config = self.cells[k].config
        timing = self.probes.entries.get(self._extraction_key(config["backbone"], network, config))
        if timing is None:
            return False
        lookups, _, _ = cell_lookups(p.dataset, config)
        todo = [x for j, x in enumerate(lookups) if x.stage == "validation (epoch 0)" and not self._hit(k, j)]
        return sum(x.n * timing.per_image + math.ceil(x.n / self.batch) * timing.per_batch for x in todo) <= (
            AUTO_LAYER_SECONDS
        )

    def _hit(self, k: int, j: int) -> bool:
        keys = self.keys.get(k, {}).get(j)
        return self.cache is not None and keys is not None and all(self.cache._path(key).is_file() for key in keys)

    def loss_layer(self, k: int, network: _Network) -> str:
        """The loss layer of trained cell ``k``: given, what ``auto`` picks, or the deepest layer (assumed)."""
        config = self.cells[k].config
        if config["loss_layer"] != "auto":
            return config["loss_layer"]
        return self.loss_layers[k][0] if k in self.loss_layers else network.deepest(config)

    # -- per cell --------------------------------------------------------------------------------
    def statuses(self) -> list[dict[int, str]]:
        """Per cell, per as-built lookup: hit (on disk), plan (an earlier cell of this plan writes it) or miss."""
        written: set[tuple[str, ...]] = set()
        out: list[dict[int, str]] = []
        for k in range(len(self.cells)):
            status: dict[int, str] = {}
            for j, keys in self.keys.get(k, {}).items():
                if self._hit(k, j):
                    status[j] = "hit"
                elif keys in written:
                    status[j] = "plan"
                else:
                    status[j] = "miss"
                    written.add(keys)
            out.append(status)
        return out

    def estimate(self, k: int, status: dict[int, str]) -> CellEstimate:
        cell, config = self.cells[k], self.cells[k].config
        ds = self.dataset(config)
        missing = self.missing_of(k)
        served = {j for j, s in status.items() if s in ("hit", "plan")}
        passes = count_passes(ds, config, self.batch, served.__contains__)
        if not self.runs[k]:
            return CellEstimate(cell, False, "-", passes, missing=missing)
        est = CellEstimate(cell, True, self._summary(k, status), passes, missing=missing)
        network = self.networks.get(config["backbone"])
        if network is not None:
            if config["trains"]:
                est.loss_layer = self.loss_layer(k, network)
                given = config["loss_layer"] != "auto"
                est.loss_layer_from = "given" if given else "validation" if k in self.loss_layers else "assumed"
            self._memory(est, network, config)
            if self.probe:
                self._time(est, network, config)
        return est

    def _summary(self, k: int, status: dict[int, str]) -> str:
        if self.cache is None:
            return "off"
        kinds = set(status.values())
        if k not in self.keys:
            return "unknown"
        if kinds == {"hit"}:
            return "hit"
        if kinds <= {"hit", "plan"}:
            return "in plan"
        return "miss" if kinds == {"miss"} else "partial"

    def _memory(self, est: CellEstimate, network: _Network, config: dict[str, Any]) -> None:
        size = config["image_size"]
        est.param_bytes = tensor_bytes(network.built.model.parameters())
        est.grad_bytes = est.optimizer_bytes = 0
        if config["trains"]:
            train = config["train"]
            if train["epochs"] > 0:  # gradients and optimizer state exist once a step is taken
                params = network.trained_params(train["trainable"], est.loss_layer, size)
                est.grad_bytes = tensor_bytes(params)
                est.optimizer_bytes = optimizer_state_bytes(params, train["optimizer"], train["momentum"])
            est.activation_batch = train["batch_size"]
            est.activation_bytes = network.profile([est.loss_layer], size).kept * train["batch_size"]
        else:
            est.activation_batch = self.batch
            est.activation_bytes = network.profile(network.layers(config), size).extraction_batch(self.batch)

    def _time(self, est: CellEstimate, network: _Network, config: dict[str, Any]) -> None:
        x = self.probes.entries.get(self._extraction_key(config["backbone"], network, config))
        if x is None:
            return
        est.extraction = x
        p = est.passes
        digest = min(network.digest_s, default=0.0) if self.cache is not None else 0.0
        parts = {"setup": min(network.setup_s, default=0.0) + digest}
        parts["extraction"] = (p.run_forward - p.train) * x.per_image + p.extraction_batches * x.per_batch
        if config["trains"]:
            t = self.probes.entries.get(self._training_key(config["backbone"], config, est.loss_layer))
            if t is None:
                return
            est.training = t
            parts.update(_training_seconds(t, est, p))
        est.seconds_parts = parts
        est.seconds = float(sum(parts.values()))


def _training_seconds(t: TrainingTiming, est: CellEstimate, p: Passes) -> dict[str, float]:
    """Steps, and the work on the weights as :class:`rsabench.training.Checkpointer` and ``train`` do it: at
    the start a copy of the state and its fingerprint, then a checkpoint of epoch 0 (a comparison with the
    copy); after each epoch the finite-weights check and a checkpoint: a comparison of the tensors not yet
    changed (all of them after epochs 0 and 1, the unchanged ones after that), a write of the changed
    weights and the optimizer state; at the end the selected weights read back and loaded."""
    changed = est.grad_bytes or 0
    unchanged = 1.0 - changed / est.param_bytes if est.param_bytes else 0.0
    compares = (1 + min(p.epochs, 1)) * t.compare + max(p.epochs - 1, 0) * unchanged * t.compare
    writes = p.epochs * (changed + (est.optimizer_bytes or 0)) / t.write_rate
    finish = (t.copy + changed / t.write_rate) if p.epochs else 0.0
    return {
        "training steps": p.train * t.per_image + p.train_steps * t.per_step,
        "weights": t.copy + t.fingerprint + compares + p.epochs * t.check + writes + finish,
    }


def estimate_cells(
    session: "Session", cells: Sequence["PlannedCell"], *, probe: bool = True, probes: ProbeCache | None = None
) -> list[CellEstimate]:
    """A :class:`CellEstimate` per planned cell, in order (:func:`totals` sums them).

    Prepares each network that has cells to run (each (weights, seed, dataset) once where the feature cache
    is on, for its keys), measures memory on the first of each backbone, and with ``probe`` times it on the
    session's device (``probes``: default the process's :data:`PROBES`). A cell whose record is cached (and
    ``session.force`` off) runs nothing: only its passes and missing inputs are given.
    """
    estimator = _Estimator(session, cells, probe, PROBES if probes is None else probes)
    estimator.measure()
    return [estimator.estimate(k, status) for k, status in enumerate(estimator.statuses())]


# -- rendering ------------------------------------------------------------------------------------
def format_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def format_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _memory_cell(e: CellEstimate) -> str:
    if e.param_bytes is None:
        return "-"
    extra = (e.grad_bytes or 0) + (e.optimizer_bytes or 0)
    return format_bytes(e.param_bytes) + (f" + {format_bytes(extra)}" if extra else "")


def probe_note(estimates: Sequence[CellEstimate]) -> str:
    """How the times were estimated: the probes behind them (device, batch sizes, seconds per image), and
    where the loss layer of ``auto`` cells came from."""
    seen: dict[tuple, list[str]] = {}
    for e in estimates:
        if e.extraction is None:
            continue
        c, x = e.cell.config, e.extraction
        texts = seen.setdefault(
            (c["backbone"], c["image_size"]),
            [
                f"{c['backbone']} {c['image_size']} px: extraction {x.per_image:.3g} s/image + {x.per_batch:.3g} "
                f"s/batch (batches of {x.batches[0]} and {x.batches[1]})"
            ],
        )
        if e.training is not None:
            t = e.training
            text = (
                f"training at {e.loss_layer} {t.per_image:.3g} s/image + {t.per_step:.3g} s/step (batches of "
                f"{t.batches[0]} and {t.batches[1]})"
            )
            if text not in texts:
                texts.append(text)
    if not seen:
        return "est. time: not probed"
    device = next(e.extraction.device for e in estimates if e.extraction is not None)
    note = (
        f"est. time: timed probes on {device} after one warm-up: "
        + "; ".join(", ".join(texts) for texts in seen.values())
        + "; plus the measured set-up, weight checks and checkpoints; scoring not included"
    )
    sources = Counter(e.loss_layer_from for e in estimates if e.runs and e.cell.config.get("loss_layer") == "auto")
    if sources:
        how = {"validation": "picked on the validation images as at run time", "assumed": "assumed the deepest layer"}
        note += ". --loss-layer auto: " + ", ".join(f"{how.get(k, k)} ({n} cell(s))" for k, n in sources.items() if k)
    return note


def render_plan(console: Any, cells: Sequence["PlannedCell"], estimates: Sequence[CellEstimate]) -> None:
    """Print the plan: a table of the cells with their estimates, a totals line and the note on the probe."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="rsabench plan")
    columns = ("dataset", "target", "backbone", "objective", "seed", "status", "feature cache", "passes fwd/bwd")
    for col in (*columns, "params + grad/opt", "activations", "est. time", "missing"):
        table.add_column(col, justify="right" if col in ("seed", "passes fwd/bwd", "est. time") else "left")
    for cell, e in zip(cells, estimates, strict=True):
        c = cell.config
        passes = f"{e.passes.run_forward:,} / {e.passes.backward:,}" if e.runs else "-"
        activations = f"{format_bytes(e.activation_bytes)} (b={e.activation_batch})" if e.activation_bytes else "-"
        table.add_row(
            escape(str(c["dataset"])), escape(str(c["target"])), escape(str(c["backbone"])),
            escape(str(c["objective"])), str(c["seed"]), "to run" if e.runs else "cached", e.feature_cache, passes,
            _memory_cell(e), activations, format_seconds(e.seconds) if e.runs else "-",
            escape("; ".join(e.missing)) or "-",
        )  # fmt: skip
    console.print(table)
    t = totals(estimates)
    served = f" ({t.cached_forward:,} served by the feature cache)" if t.cached_forward else ""
    device = next((e.extraction.device for e in estimates if e.extraction is not None), None)
    when = f"est. {format_seconds(t.seconds)}" + (f" on {device}" if device else "") if t.seconds is not None else ""
    console.print(
        f"{t.cells} cell(s): {t.cells - t.to_run} cached, {t.to_run} to run; {t.forward:,} forward and "
        f"{t.backward:,} backward image passes{served}"
        + (f"; {when}" if when else "")
        + (f"; largest cell {format_bytes(t.peak_bytes)}" if t.peak_bytes else "")
        + (f"; {t.missing} cell(s) miss inputs" if t.missing else "")
    )
    console.print(escape(probe_note(estimates)), style="dim")
