"""Every option of ``rsabench run`` / ``plan``, declared once: name, type, default, choices, help and group.

The Click options (``cli.run_options``), :class:`rsabench.runner.RunOptions` and the training settings
(:class:`rsabench.training.TrainSettings`) are all derived from :data:`SETTINGS`; nothing here imports
torch, so ``--help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GROUPS = ("data", "model", "training", "protocol", "output", "execution")
"""Sections of ``rsabench run --help``, in order."""

OPTIMIZERS = ("adam", "sgd", "adamw")
LR_SCHEDULES = ("constant", "cosine", "step")
AMP_MODES = ("off", "bf16", "fp16")
SEED_MAX = 2**63 - 1  # what torch, numpy and python all accept as a seed


@dataclass(frozen=True)
class Setting:
    """One option. ``kind``: int, float, seed, choice, str, flag, bool-pair (``--x/--no-x``), path, dir,
    key-value (``KEY=VALUE``, repeatable). ``low``/``high`` bound numbers (``open`` excludes the bound).
    ``target`` says where the value goes: ``options`` (a :class:`RunOptions` field), ``train`` (also a
    :class:`TrainSettings` field), ``plan`` (a list of names the run plans over) or ``sweep`` (how the
    sweep as a whole runs: read by the command, never part of a cell). ``plan`` does not offer ``run_only``
    options."""

    name: str
    kind: str
    default: Any
    help: str
    group: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    metavar: str | None = None
    multiple: bool = False
    flag: str | None = None  # default: --<name with - for _>
    target: str = "options"
    run_only: bool = False  # an option of ``run`` alone: it changes how cells execute, not what ``plan`` shows

    @property
    def option(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


def _s(name: str, kind: str, default: Any, help: str, group: str, **kw: Any) -> Setting:
    return Setting(name, kind, default, help, group, **kw)


SETTINGS: tuple[Setting, ...] = (
    # -- data
    _s(
        "datasets",
        "str",
        (),
        "dataset (repeatable; default kriegeskorte2008; `rsabench list datasets`)",
        "data",
        flag="--dataset",
        multiple=True,
        metavar="NAME",
        target="plan",
    ),
    _s(
        "targets",
        "str",
        (),
        "only these targets (repeatable; default: all of each dataset)",
        "data",
        flag="--target",
        multiple=True,
        metavar="NAME",
        target="plan",
    ),
    _s(
        "dataset_options",
        "key-value",
        (),
        "dataset option (repeatable); KEY alone goes to every dataset of the run that takes it",
        "data",
        flag="--dataset-option",
        multiple=True,
        metavar="[DATASET.]KEY=VALUE",
    ),
    _s("data_dir", "path", None, "data directory (else $RSABENCH_DATA, else the user cache dir)", "data"),
    _s("image_size", "int", 224, "images are resized to PX x PX", "data", low=16, metavar="PX"),
    # -- model
    _s(
        "backbones",
        "str",
        (),
        "backbone (repeatable; default alexnet; `rsabench list backbones`)",
        "model",
        flag="--backbone",
        multiple=True,
        metavar="NAME",
        target="plan",
    ),
    _s(
        "weights",
        "str",
        "imagenet",
        "initial weights: the library's ImageNet weights, random (seeded) or a checkpoint file",
        "model",
        metavar="imagenet|random|PATH",
    ),
    _s(
        "layers",
        "str",
        (),
        "layers to score (repeatable; default: the backbone's layer set; `rsabench list layers BACKBONE`)",
        "model",
        flag="--layer",
        multiple=True,
        metavar="NAME",
    ),
    # -- training
    _s(
        "objectives",
        "str",
        (),
        "objective (repeatable; default frozen and dissim; `rsabench list objectives`)",
        "training",
        flag="--objective",
        multiple=True,
        metavar="NAME",
        target="plan",
    ),
    _s(
        "objective_options",
        "key-value",
        (),
        "objective option (repeatable); KEY alone goes to every objective of the run that takes it",
        "training",
        flag="--objective-option",
        multiple=True,
        metavar="[OBJECTIVE.]KEY=VALUE",
    ),
    _s(
        "seeds",
        "seed",
        (),
        "training seed, 0 to 2^63-1 (repeatable; default 0)",
        "training",
        flag="--seed",
        multiple=True,
        metavar="N",
        target="plan",
    ),
    _s(
        "epochs",
        "int",
        10,
        "training epochs of objectives that train (0 = score the initial network)",
        "training",
        low=0,
        target="train",
    ),
    _s(
        "batch_size",
        "int",
        32,
        "images per forward pass (training batches come from one group)",
        "training",
        low=2,
        target="train",
    ),
    _s("lr", "float", 1e-4, "learning rate", "training", low=0, low_open=True, target="train"),
    _s(
        "optimizer",
        "choice",
        "adam",
        "optimizer of the trainable parameters",
        "training",
        choices=OPTIMIZERS,
        target="train",
    ),
    _s("weight_decay", "float", 0.0, "L2 weight decay (decoupled with adamw)", "training", low=0, target="train"),
    _s(
        "patience",
        "int",
        0,
        "early stopping after N epochs without validation gain (0 = off)",
        "training",
        low=0,
        target="train",
    ),
    _s(
        "trainable",
        "str",
        "all",
        "parameters trained: all | none | up-to:<layer> | from:<layer>",
        "training",
        metavar="POLICY",
        target="train",
    ),
    _s(
        "loss_layer",
        "str",
        "auto",
        "layer the objective trains (auto = best frozen layer on validation)",
        "training",
        metavar="NAME",
    ),
    _s(
        "lr_schedule",
        "choice",
        "constant",
        "per-epoch learning-rate schedule after warm-up",
        "training",
        choices=LR_SCHEDULES,
        target="train",
    ),
    _s("warmup_epochs", "int", 0, "linear warm-up: epoch e <= N runs at lr*e/(N+1)", "training", low=0, target="train"),
    _s(
        "lr_step",
        "int",
        0,
        "step schedule: epochs between decays (0 = a third of the post-warm-up epochs)",
        "training",
        low=0,
        metavar="EPOCHS",
        target="train",
    ),
    _s(
        "lr_gamma",
        "float",
        0.1,
        "step schedule: lr factor per decay",
        "training",
        low=0,
        high=1,
        low_open=True,
        target="train",
    ),
    _s(
        "grad_clip",
        "float",
        0.0,
        "clip the global gradient L2 norm (0 = off)",
        "training",
        low=0,
        metavar="NORM",
        target="train",
    ),
    _s(
        "amp",
        "choice",
        "off",
        "mixed precision for training steps (CUDA only; scores are always float32)",
        "training",
        choices=AMP_MODES,
        target="train",
    ),
    _s(
        "adapt_bn",
        "flag",
        False,
        "let BatchNorm running statistics of the trained layers adapt during training (default: frozen)",
        "training",
        target="train",
    ),
    # -- protocol
    _s("metric", "str", "spearman", "RDM comparison metric (`rsabench list metrics`)", "protocol", metavar="NAME"),
    _s(
        "val_fraction",
        "float",
        0.2,
        "fraction of training images held out for validation",
        "protocol",
        low=0,
        high=1,
        low_open=True,
        high_open=True,
    ),
    _s(
        "test_fraction",
        "float",
        0.25,
        "fraction of images held out for test (datasets without a test set)",
        "protocol",
        low=0,
        high=1,
        high_open=True,
    ),
    _s("split_seed", "seed", 0, "seed of the train/validation/test image split", "protocol"),
    _s("bootstrap_seed", "seed", 0, "seed of the bootstrap resamples of the intervals", "protocol"),
    # -- output
    _s(
        "runs_dir",
        "dir",
        "runs",
        "where cell records and checkpoints are written (and found again)",
        "output",
        target="plan",
    ),
    _s(
        "keep_checkpoints",
        "flag",
        False,
        "keep <record>.ckpt/best.pt (the selected model) after a cell finishes; else checkpoints are deleted",
        "output",
        run_only=True,
    ),
    # -- execution
    _s(
        "device", "str", "auto", "where cells run (auto: CUDA when available)", "execution", metavar="auto|cpu|cuda[:N]"
    ),
    _s(
        "executor",
        "str",
        "local",
        "where cells run (`rsabench list executors`)",
        "execution",
        metavar="NAME",
        target="plan",
    ),
    _s(
        "channels_last",
        "bool-pair",
        None,
        "NHWC memory layout (default: on with CUDA, off on CPU; not part of the cell hash)",
        "execution",
        run_only=True,
    ),
    _s(
        "cache_dir",
        "dir",
        None,
        "feature cache of networks as built (default: $RSABENCH_CACHE/features, else the user cache dir)",
        "execution",
    ),
    _s("no_cache", "flag", False, "compute every RDM; neither read nor write the feature cache", "execution"),
    _s(
        "jobs",
        "int",
        1,
        "cells at once (local: worker processes, each with its share of the CPU threads; slurm: array tasks)",
        "execution",
        low=1,
        target="sweep",
        run_only=True,
    ),
    _s(
        "executor_options",
        "key-value",
        (),
        "an option of the executor, KEY=VALUE (repeatable; `rsabench list executors` names them)",
        "execution",
        flag="--executor-option",
        multiple=True,
        metavar="KEY=VALUE",
        target="sweep",
    ),
    _s(
        "shard",
        "str",
        None,
        "run only shard I of N: every N-th cell in the order of the cell hashes (1 <= I <= N)",
        "execution",
        metavar="I/N",
        target="sweep",
    ),
    _s(
        "fail_fast",
        "flag",
        False,
        "stop the sweep at the first failing cell (default: record the failure and go on)",
        "execution",
        target="sweep",
        run_only=True,
    ),
    _s(
        "detach",
        "flag",
        False,
        "return once the cells are submitted (slurm); `rsabench status` or the same command collects them",
        "execution",
        target="sweep",
        run_only=True,
    ),
    _s(
        "config",
        "path",
        None,
        "a sweep file (TOML): the options' keys, lists for every combination, an [executor] table; "
        "options given on the command line override it",
        "execution",
        metavar="SWEEP.toml",
        target="sweep",
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS}
TRAIN_FIELDS: tuple[str, ...] = tuple(s.name for s in SETTINGS if s.target == "train")
OPTION_FIELDS: tuple[str, ...] = tuple(s.name for s in SETTINGS if s.target in ("options", "train"))
