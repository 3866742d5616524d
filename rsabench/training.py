"""The batch-RDM trainer (feature extraction lives in ``features.py``).

One forward pass per unique image: a batch of B images from one group yields all B(B-1)/2 pairs.

The trainer also owns the training engine's guarantees: learning-rate schedules (per epoch, a pure
function of the settings), gradient clipping, AMP on CUDA, frozen-or-adapting BatchNorm statistics, and
checkpoints written atomically after every epoch, from which a killed run resumes to bit-identical numbers.

:func:`train` runs as named stages of a ``_TrainingRun``: set up (settings, trainable parameters, optimizer,
gradient scaler, batch generator), start or resume, one epoch at a time (batches, steps, checks, evaluation,
checkpoint), finish (eval mode, best state, ``best.pt``).
"""

from __future__ import annotations

import hashlib
import math
import random
import shutil
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from .backbone import LayerTaps, checkpoint_load_problem, load_weights_only, set_bn_mode, trainable_parameters
from .errors import CellFailure, UsageError
from .features import to_device
from .objective import Objective
from .records import atomic_open
from .settings import AMP_MODES, LR_SCHEDULES, OPTIMIZERS
from .settings import DEFAULTS as D

CHECKPOINT_FORMAT = "rsabench.checkpoint/1"


# -- settings -----------------------------------------------------------------------------------------
@dataclass
class TrainSettings:
    """Hyper-parameters of one training run (all recorded in the cell config; see :meth:`config`).

    ``lr_schedule``: ``constant``, ``cosine`` (half cosine from ``lr`` towards 0 over the post-warm-up
    epochs) or ``step`` (× ``lr_gamma`` every ``lr_step`` epochs; 0 = a third of the post-warm-up epochs).
    ``warmup_epochs``: linear warm-up, epoch e <= W runs at ``lr·e/(W+1)``. ``grad_clip``: global L2 norm
    bound (0 = off). ``amp``: autocast dtype of training steps on CUDA (``off``, ``bf16``, ``fp16`` with a
    gradient scaler). ``adapt_bn``: BatchNorm layers of the trained part update their running statistics
    during training steps (default: frozen, the whole network stays in eval mode).
    """

    epochs: int = D["epochs"]
    batch_size: int = D["batch_size"]
    lr: float = D["lr"]
    optimizer: str = D["optimizer"]
    momentum: float | None = 0.9  # SGD only; not a command-line option
    weight_decay: float = D["weight_decay"]
    patience: int = D["patience"]
    trainable: str = D["trainable"]
    lr_schedule: str = D["lr_schedule"]
    warmup_epochs: int = D["warmup_epochs"]
    lr_step: int | None = D["lr_step"]  # 0 or None: a third of the post-warm-up epochs
    lr_gamma: float | None = D["lr_gamma"]
    grad_clip: float = D["grad_clip"]
    amp: str = D["amp"]
    adapt_bn: bool = D["adapt_bn"]

    def validate(self) -> None:
        """UsageError naming the first setting out of range (in field order)."""
        self._validate_run()
        self._validate_schedule()

    def _validate_run(self) -> None:
        """Length, batches, optimizer, early stopping."""
        if self.epochs < 0:
            raise UsageError(f"--epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 2:
            raise UsageError(f"--batch-size must be >= 2 (pairs need two images), got {self.batch_size}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.weight_decay < 0:
            raise UsageError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.patience < 0:
            raise UsageError(f"--patience must be >= 0, got {self.patience}")

    def _validate_schedule(self) -> None:
        """Learning-rate schedule, gradient clipping, AMP."""
        if self.lr_schedule not in LR_SCHEDULES:
            raise UsageError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.warmup_epochs < 0 or (self.epochs and self.warmup_epochs >= self.epochs):
            raise UsageError(
                f"--warmup-epochs must be >= 0 and smaller than --epochs ({self.epochs}), got {self.warmup_epochs}"
            )
        if self.lr_step is not None and self.lr_step < 0:
            raise UsageError(f"--lr-step must be >= 0, got {self.lr_step}")
        if self.lr_gamma is not None and not 0 < self.lr_gamma <= 1:
            raise UsageError(f"--lr-gamma must lie in (0, 1], got {self.lr_gamma}")
        if not self.grad_clip >= 0:
            raise UsageError(f"--grad-clip must be >= 0 (0 = off), got {self.grad_clip}")
        if self.amp not in AMP_MODES:
            raise UsageError(f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")

    def config(self) -> dict[str, Any]:
        """The resolved settings recorded in the cell config: values that cannot matter are ``None``
        (so they do not change the cell hash), the automatic step length is made explicit."""
        self.validate()
        out = asdict(self)
        out["momentum"] = self.momentum if self.optimizer == "sgd" else None
        if self.lr_schedule == "step":
            out["lr_step"] = self.lr_step or max(1, math.ceil((self.epochs - self.warmup_epochs) / 3))
            out["lr_gamma"] = 0.1 if self.lr_gamma is None else self.lr_gamma
        else:
            out["lr_step"] = out["lr_gamma"] = None
        return out


def lr_factor(epoch: int, s: TrainSettings) -> float:
    """Multiplier of ``s.lr`` during ``epoch`` (1-based)."""
    w = s.warmup_epochs
    if epoch <= w:
        return epoch / (w + 1)
    t, span = epoch - w - 1, max(1, s.epochs - w)
    if s.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t / span))
    if s.lr_schedule == "step":
        step = s.lr_step or max(1, math.ceil(span / 3))
        return (0.1 if s.lr_gamma is None else s.lr_gamma) ** (t // step)
    return 1.0


def make_optimizer(params: Iterable[torch.nn.Parameter], s: TrainSettings) -> torch.optim.Optimizer:
    params = list(params)
    if s.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=s.lr, momentum=0.9 if s.momentum is None else s.momentum, weight_decay=s.weight_decay
        )
    # the fused kernels (CPU and CUDA, torch >= 2.4) take one step for all tensors: ~15x faster on AlexNet
    fused = {"fused": True} if _fused_adam_supported(params) else {}
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay, **fused)
    return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay, **fused)


def _fused_adam_supported(params: list[torch.nn.Parameter]) -> bool:
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    devices = {p.device.type for p in params}
    return (major, minor) >= (2, 4) and devices <= {"cpu", "cuda"} and all(p.dtype.is_floating_point for p in params)


def bn_train_mode(model: torch.nn.Module, adapt: bool) -> int:
    """Put ``model`` in eval mode; with ``adapt``, the BatchNorm layers that train (a parameter requiring
    grad, or no affine parameters) go to train mode so their running statistics update; BatchNorm layers
    of frozen parts stay frozen. Returns how many adapt."""
    model.eval()
    if not adapt:
        return 0
    n = 0
    for name in set_bn_mode(model, True):
        module = model.get_submodule(name)
        params = list(module.parameters(recurse=False))
        if params and not any(p.requires_grad for p in params):
            module.eval()
        elif module.track_running_stats:
            n += 1
    return n


def epoch_batches(
    train_index: dict[str, np.ndarray], batch_size: int, generator: torch.Generator
) -> list[tuple[str, np.ndarray]]:
    """Shuffled within-group batches of near-equal size (each >= 2 images), in shuffled order."""
    batches: list[tuple[str, np.ndarray]] = []
    for group in sorted(train_index):
        idx = np.asarray(train_index[group])
        if len(idx) < 2:
            continue
        perm = idx[torch.randperm(len(idx), generator=generator).numpy()]
        n_batches = max(1, int(np.ceil(len(idx) / batch_size)))
        n_batches = min(n_batches, len(idx) // 2)
        batches.extend((group, chunk) for chunk in np.array_split(perm, n_batches))
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[k] for k in order]


# -- checkpoints ------------------------------------------------------------------------------------
class Checkpointer:
    """Per-cell checkpoint directory (``<record stem>.ckpt/``).

    ``state.pt`` holds the training state after the last finished epoch (optimizer, gradient scaler, RNG
    states, history, ``extra`` of the caller); ``model-e<N>.pt`` the model after epoch N, as the tensors
    that differ from the initial (freshly built) state: a resumed run rebuilds the network from the same
    config, and a fingerprint of the initial state guards that it is the same network. After every save
    only the models of the last and the best epoch remain. Files are written atomically (temp file, fsync,
    rename), the state after the model it points to, so a kill at any moment leaves a usable checkpoint.
    With ``keep``, the full best model is written as ``best.pt`` when training ends.
    ``get_extra``/``set_extra`` save and restore caller state (the runner's validation curves).
    """

    def __init__(
        self,
        directory: Path,
        cell: str,
        get_extra: Callable[[], Any] | None = None,
        set_extra: Callable[[Any], None] | None = None,
        note: Callable[[str], None] | None = None,
        keep: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.cell = cell
        self.get_extra = get_extra or (lambda: None)
        self.set_extra = set_extra or (lambda extra: None)
        self.note = note or (lambda message: None)
        self.keep = keep
        self._initial: dict[str, torch.Tensor] = {}
        self._fingerprint = ""
        self._changed: set[str] = set()

    @property
    def state_path(self) -> Path:
        return self.directory / "state.pt"

    def model_path(self, epoch: int) -> Path:
        return self.directory / f"model-e{epoch}.pt"

    def start(self, model: torch.nn.Module) -> dict[str, Any] | None:
        """Remember ``model``'s initial state; return the saved training state with its ``model`` state,
        or None (and an emptied directory) when there is nothing usable to resume from."""
        self._initial = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self._fingerprint = _fingerprint(self._initial)
        self._changed = set()
        if not self.state_path.is_file():
            self._clear()
            return None
        try:
            state = load_weights_only(self.state_path)
        except Exception as exc:  # a torn or foreign file: start over, never crash a sweep on it
            return self._unusable(checkpoint_load_problem(exc, self.state_path))
        try:
            if not (
                isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT and state.get("cell") == self.cell
            ):
                raise ValueError("another cell or format")
            if state["fingerprint"] != self._fingerprint:
                raise ValueError("the network as built differs from the one that was checkpointed")
            if not self.model_path(state["history"]["best_epoch"]).is_file():
                raise FileNotFoundError(self.model_path(state["history"]["best_epoch"]))
            self._changed = set(state["changed"])
            state["model"] = self.load_model(state["epoch"])
        except Exception as exc:  # another cell's, another network's, or a model file missing: start over
            return self._unusable(f"{type(exc).__name__}: {exc}")
        return state

    def _unusable(self, why: str) -> None:
        self.note(f"checkpoint in {self.directory} not usable ({why}); training from scratch")
        self._clear()

    def load_model(self, epoch: int) -> dict[str, torch.Tensor]:
        """The full model state after ``epoch``."""
        saved = load_weights_only(self.model_path(epoch))
        return {**self._initial, **saved["model"]}

    def save(self, epoch: int, model: torch.nn.Module, state: dict[str, Any]) -> None:
        """Write the model after ``epoch``, then the training state, then drop models no longer needed."""
        current = model.state_dict()
        for k, v in current.items():
            if k not in self._changed and not torch.equal(v.detach().cpu(), self._initial[k]):
                self._changed.add(k)
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = {k: current[k] for k in sorted(self._changed)}
        _save_atomic(
            {"format": CHECKPOINT_FORMAT, "cell": self.cell, "epoch": epoch, "model": partial}, self.model_path(epoch)
        )
        header = {
            "format": CHECKPOINT_FORMAT,
            "cell": self.cell,
            "epoch": epoch,
            "fingerprint": self._fingerprint,
            "changed": sorted(self._changed),
        }
        _save_atomic({**header, **state}, self.state_path)
        keep = {self.model_path(epoch).name, self.model_path(state["history"]["best_epoch"]).name, self.state_path.name}
        for path in self.directory.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def save_best(self, epoch: int, model_state: dict[str, torch.Tensor]) -> Path:
        """``best.pt``: the full model of the selected epoch (loadable with ``--weights PATH``)."""
        path = self.directory / "best.pt"
        _save_atomic({"format": CHECKPOINT_FORMAT, "cell": self.cell, "epoch": epoch, "model": model_state}, path)
        return path

    def _clear(self) -> None:
        if self.directory.is_dir():
            shutil.rmtree(self.directory)


def finish_checkpoints(directory: Path, keep: bool) -> Path | None:
    """After the record is written: remove the checkpoint directory, or with ``keep`` leave only
    ``best.pt`` (written by :func:`train`). Returns the path of what is kept."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    best = directory / "best.pt"
    if keep and best.is_file():
        for path in directory.iterdir():
            if path != best:
                path.unlink(missing_ok=True)
        return best
    shutil.rmtree(directory)
    return None


def _fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A digest of a model state: per tensor, its name, dtype, shape and the CRC-32 of its bytes."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        crc = zlib.crc32(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else 0
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}:{crc};".encode())
    return h.hexdigest()


def _save_atomic(obj: Any, path: Path) -> None:
    """Serialise in memory, then write atomically: a failing write (a full disk) raises the plain OSError."""
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    try:
        with atomic_open(path, "wb") as fh:
            fh.write(buffer.getbuffer())
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write checkpoint {path}: {exc.strerror or exc}") from None


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "batches": generator.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    generator.set_state(state["batches"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


# -- training ---------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    best_epoch: int
    best_value: float
    epochs_run: int
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    stopped_early: bool = False
    resumed_from_epoch: int | None = None
    bn_layers_adapted: int = 0
    best_state: dict[str, Any] | None = None

    def history(self) -> dict[str, Any]:
        """What a checkpoint keeps of the result (everything but the best state)."""
        return {
            k: v for k, v in asdict(self).items() if k not in ("best_state", "resumed_from_epoch", "bn_layers_adapted")
        }


def _grad_norm(params: list[torch.nn.Parameter], clip: float) -> float:
    """Global L2 norm of the gradients before clipping; with ``clip > 0`` rescales them to at most ``clip``."""
    if clip > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, clip))
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


def _grad_scaler() -> Any:
    amp = getattr(torch, "amp", None)
    if amp is not None and hasattr(amp, "GradScaler"):
        return amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()  # torch < 2.3


def check_amp(amp: str, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` on ``device``; UsageError where it cannot run."""
    if amp not in AMP_MODES:
        raise UsageError(f"--amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if amp == "off":
        return None
    if torch.device(device).type != "cuda":
        raise UsageError(f"--amp {amp} needs a CUDA device, but this cell runs on {device}; use --amp off on CPU")
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise UsageError("--amp bf16: this GPU has no bfloat16 support; use --amp fp16 or off")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def train(
    model: torch.nn.Module,
    loss_layer: str,
    objective: Objective,
    images: dict[str, torch.Tensor],
    train_index: dict[str, np.ndarray],
    targets: dict[str, torch.Tensor],
    settings: TrainSettings,
    seed: int,
    evaluate: Callable[[int], float],
    device: str | torch.device = "cpu",
    advance: Callable[[int], None] | None = None,
    *,
    checkpoint: Checkpointer | None = None,
    channels_last: bool = False,
) -> TrainResult:
    """Train ``model`` on ``objective`` at ``loss_layer``; ``evaluate(epoch)`` returns the validation value.

    The model stays in eval mode (BatchNorm statistics frozen unless ``settings.adapt_bn``, dropout off);
    gradients still flow. The best-on-validation state (epoch 0 = untrained included) is kept; early
    stopping after ``settings.patience`` epochs without improvement (0 = never). With ``checkpoint``,
    training resumes from its saved state and is saved after every epoch; the best state then lives on
    disk until the end. ``evaluate`` always sees the model in eval mode.

    Stages (:class:`_TrainingRun`): set up, start or resume, one epoch at a time, finish.
    """
    run = _TrainingRun.setup(
        model=model,
        loss_layer=loss_layer,
        objective=objective,
        images=images,
        train_index=train_index,
        targets=targets,
        settings=settings,
        seed=seed,
        evaluate=evaluate,
        device=device,
        advance=advance,
        checkpoint=checkpoint,
        channels_last=channels_last,
    )
    run.start()
    for epoch in range(run.result.epochs_run + 1, settings.epochs + 1):
        if run.result.stopped_early:
            break
        run.epoch(epoch)
    return run.finish()


@dataclass
class _TrainingRun:
    """The state of one :func:`train` run: its inputs, the engine (trainable parameters, optimizer, gradient
    scaler, layer taps, batch generator) and the result so far.

    Stages: :meth:`setup` builds the engine, :meth:`start` begins at epoch 0 or resumes from a checkpoint,
    :meth:`epoch` trains, checks, evaluates and checkpoints one epoch (each batch one :meth:`_step`),
    :meth:`finish` leaves the model in eval mode with frozen parameters and returns the result.
    """

    model: torch.nn.Module
    loss_layer: str
    objective: Objective
    images: dict[str, torch.Tensor]
    train_index: dict[str, np.ndarray]
    targets: dict[str, torch.Tensor]
    settings: TrainSettings
    evaluate: Callable[[int], float]
    device: torch.device
    advance: Callable[[int], None] | None
    checkpoint: Checkpointer | None
    channels_last: bool
    amp_dtype: torch.dtype | None
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scaler: Any
    taps: LayerTaps
    generator: torch.Generator
    result: TrainResult = field(init=False)
    best_state: dict[str, torch.Tensor] | None = None  # in memory without a checkpointer, else on disk

    # -- start or resume ----------------------------------------------------------------------------
    @classmethod
    def setup(
        cls,
        model: torch.nn.Module,
        loss_layer: str,
        objective: Objective,
        images: dict[str, torch.Tensor],
        train_index: dict[str, np.ndarray],
        targets: dict[str, torch.Tensor],
        settings: TrainSettings,
        seed: int,
        evaluate: Callable[[int], float],
        device: str | torch.device,
        advance: Callable[[int], None] | None,
        checkpoint: Checkpointer | None,
        channels_last: bool,
    ) -> _TrainingRun:
        """Validate the settings, pick the trainable parameters, build optimizer, scaler, taps, generator."""
        settings.validate()
        device = torch.device(device)
        amp_dtype = check_amp(settings.amp, device)
        model.eval()
        example = next(iter(images.values()))[:1].to(device)
        params = trainable_parameters(model, settings.trainable, example)
        if not params:
            raise UsageError(f"--trainable {settings.trainable!r} leaves no parameter to train")
        optimizer = make_optimizer(params, settings)
        scaler = _grad_scaler() if settings.amp == "fp16" else None
        taps = LayerTaps(model, [loss_layer])
        generator = torch.Generator().manual_seed(seed)
        return cls(
            model=model,
            loss_layer=loss_layer,
            objective=objective,
            images=images,
            train_index=train_index,
            targets=targets,
            settings=settings,
            evaluate=evaluate,
            device=device,
            advance=advance,
            checkpoint=checkpoint,
            channels_last=channels_last,
            amp_dtype=amp_dtype,
            params=params,
            optimizer=optimizer,
            scaler=scaler,
            taps=taps,
            generator=generator,
        )

    def start(self) -> None:
        """Resume from the checkpoint where there is a usable one, else evaluate (and save) epoch 0."""
        checkpoint = self.checkpoint
        saved = checkpoint.start(self.model) if checkpoint is not None else None
        if checkpoint is not None and saved is not None:
            self._resume(checkpoint, saved)
        else:
            self.result = TrainResult(best_epoch=0, best_value=self.evaluate(0), epochs_run=0)
            if checkpoint is None:
                self.best_state = self._snapshot()
            self._save(0)
        self.result.bn_layers_adapted = bn_train_mode(self.model, self.settings.adapt_bn)
        self.model.eval()  # (the count above is all that is needed here)

    def _resume(self, checkpoint: Checkpointer, saved: dict[str, Any]) -> None:
        """Restore model, optimizer, scaler, RNG states, history and the caller's extra state."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scaler is not None and saved["scaler"] is not None:
            self.scaler.load_state_dict(saved["scaler"])
        _set_rng_state(saved["rng"], self.generator, self.device)
        self.result = TrainResult(**saved["history"], resumed_from_epoch=saved["epoch"])
        checkpoint.set_extra(saved["extra"])
        checkpoint.note(f"resumed from the checkpoint of epoch {saved['epoch']} in {checkpoint.directory}")
        if self.advance:
            self.advance(self.result.epochs_run * sum(len(v) for v in self.train_index.values() if len(v) >= 2))

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def _save(self, epoch: int) -> None:
        """Checkpoint the state after ``epoch`` (nothing without a checkpointer)."""
        checkpoint = self.checkpoint
        if checkpoint is None:
            return
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": _rng_state(self.generator, self.device),
            "history": self.result.history(),
            "extra": checkpoint.get_extra(),
        }
        checkpoint.save(epoch, self.model, state)

    # -- one epoch ----------------------------------------------------------------------------------
    def epoch(self, epoch: int) -> None:
        """Train ``epoch`` over shuffled batches, check the weights, then record, evaluate and checkpoint it."""
        s = self.settings
        lr = s.lr * lr_factor(epoch, s)
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = lr
        bn_train_mode(self.model, s.adapt_bn)
        losses, norms = [], []
        for group, idx in epoch_batches(self.train_index, s.batch_size, self.generator):
            loss, norm = self._step(epoch, lr, group, idx)
            losses.append(loss)
            if math.isfinite(norm):
                norms.append(norm)
            if self.advance:
                self.advance(len(idx))
        self.model.eval()
        self._check_weights(epoch, lr)
        self._end_epoch(epoch, lr, losses, norms)

    def _step(self, epoch: int, lr: float, group: str, idx: np.ndarray) -> tuple[float, float]:
        """One optimizer step on batch ``idx`` of ``group``; returns its loss and gradient norm (before clipping)."""
        x = to_device(self.images[group][idx], self.device, self.channels_last)
        t = self.targets[group][idx][:, idx].to(self.device)
        loss = self.objective.loss(self._forward(x), t)
        self._check_loss(loss, epoch, lr)
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.scaler
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        norm = _grad_norm(self.params, self.settings.grad_clip)
        if scaler is not None:
            scaler.step(self.optimizer)  # skipped when the scaled gradients overflowed
            scaler.update()
        else:
            self.optimizer.step()
        return float(loss.detach()), norm

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The features at the loss layer."""
        if self.amp_dtype is None:
            return self.taps(x)[self.loss_layer]
        with torch.autocast(self.device.type, dtype=self.amp_dtype):  # the network only: float32 to the objective
            return self.taps(x)[self.loss_layer].float()

    def _check_loss(self, loss: torch.Tensor, epoch: int, lr: float) -> None:
        """CellFailure on a non-finite loss."""
        if not torch.isfinite(loss):
            hint = "try --amp bf16 or off" if self.settings.amp == "fp16" else "lower --lr or set --grad-clip"
            raise CellFailure(
                f"training diverged: objective {self.objective.name!r} returned a non-finite loss ({float(loss)}) at "
                f"epoch {epoch} (lr {lr:g}); {hint}"
            )

    def _check_weights(self, epoch: int, lr: float) -> None:
        """CellFailure on non-finite trainable weights."""
        bad = [n for n, p in self.model.named_parameters() if p.requires_grad and not bool(torch.isfinite(p).all())]
        if bad:
            raise CellFailure(
                f"training diverged: non-finite weights after epoch {epoch} (lr {lr:g}) in {len(bad)} tensor(s), first "
                f"{bad[0]}; lower --lr or set --grad-clip"
            )

    def _end_epoch(self, epoch: int, lr: float, losses: list[float], norms: list[float]) -> None:
        """Record the epoch's means, evaluate, keep the best, decide early stopping, checkpoint."""
        result, s = self.result, self.settings
        result.train_loss.append(float(np.mean(losses)) if losses else float("nan"))
        result.grad_norm.append(float(np.mean(norms)) if norms else float("nan"))
        result.lr.append(lr)
        result.epochs_run = epoch
        value = self.evaluate(epoch)
        if value > result.best_value:
            result.best_value, result.best_epoch = value, epoch
            if self.checkpoint is None:
                self.best_state = self._snapshot()
        elif s.patience and epoch - result.best_epoch >= s.patience and epoch < s.epochs:
            result.stopped_early = True
        self._save(epoch)

    # -- finish -------------------------------------------------------------------------------------
    def finish(self) -> TrainResult:
        """Eval mode, the best state in the result (``best.pt`` with ``keep``), parameters frozen again."""
        self.model.eval()
        checkpoint = self.checkpoint
        if checkpoint is not None:
            self.best_state = checkpoint.load_model(self.result.best_epoch)
            if checkpoint.keep:
                checkpoint.save_best(self.result.best_epoch, self.best_state)
        self.result.best_state = self.best_state
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self.result
