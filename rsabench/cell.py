"""One cell as a pure function of its resolved config: prepare → select → score the test sets → record.

:func:`run_cell` needs nothing but the config (and where the data lies): split, bootstrap and cell seeds,
weights, dataset and objective options all come from it, and the inputs it names are checked against what
is on disk (data checksums, the weights file's digest, code versions) before anything runs. How the cell
runs — device, extraction batch size, memory layout — is a :class:`Runtime`, recorded in the manifest
but not hashed. :func:`execute` adds the per-cell lock, the atomic record write and the checkpoint
clean-up; ``rsabench run`` and ``rsabench run-cell`` both go through it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .dataset import Dataset
from .errors import CellFailure, UsageError
from .feature_cache import FeatureCache, code_versions, entry_key, state_digest
from .protocol import VALIDATION_CONVENTION, make_scorer, split_images, test_sets
from .records import cell_lock, config_hash, manifest, read_record, validate_record, write_atomic
from .results import CellRecord, ScoreEntry
from .scoring import TargetScorer, model_rdm_problem
from .workspace import Workspace


@dataclass(frozen=True)
class Runtime:
    """How a cell runs, not what it computes: recorded in the manifest, never in the config or hash."""

    device: str = "auto"
    batch_size: int = 32  # feature extraction; training uses the config's train.batch_size
    channels_last: bool | None = None  # None: on with CUDA, off on CPU
    keep_checkpoints: bool = False  # keep <record>.ckpt/best.pt after the record is written

    def resolved_device(self) -> str:
        return resolve_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Runtime":
        return cls(**{k: doc[k] for k in ("device", "batch_size", "channels_last", "keep_checkpoints") if k in doc})


def check_image_size(
    built: Any,
    layers: list[str],
    size: int,
    backbone: str,
    batch_size: int = 1,
    n_images: int = 1,
    trains: bool = False,
    device: str = "cpu",
) -> None:
    """Shapes of a forward pass at ``size`` (meta device): UsageError if the network cannot take that size,
    or if a cell would need more memory than ``device`` has free."""
    from .memory import available_bytes, gib, needed_bytes, profile

    try:
        shapes = profile(built.model, layers, size)
    except (RuntimeError, ValueError, AssertionError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UsageError(
            f"--image-size {size}: backbone {backbone} cannot take {size}x{size} images through its layers ({first}); "
            "use a larger --image-size"
        ) from None
    need, free = needed_bytes(shapes, batch_size, n_images, trains), available_bytes(device)
    if free is not None and need > free:
        raise UsageError(
            f"--image-size {size} with --batch-size {batch_size}: a {backbone} cell needs at least {gib(need)} "
            f"of memory on {device} (activations, features of {n_images} images{', gradients' if trains else ''}), "
            f"{gib(free)} are free; use a smaller --image-size, --batch-size or fewer --layer"
        )


def resolve_device(option: str) -> str:
    """``auto`` → ``cuda`` where available, else ``cpu``; anything but ``auto``, ``cpu`` or ``cuda[:N]``, or
    a CUDA device that is not there, is a usage error."""
    import re

    import torch

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", option):
        raise UsageError(f"--device must be auto, cpu or cuda[:N], got {option!r}")
    if option == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if option.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return option


def describe(config: dict[str, Any]) -> str:
    """``dataset / target / backbone / objective / seed N``."""
    return (
        " / ".join(str(config[k]) for k in ("dataset", "target", "backbone", "objective")) + f" / seed {config['seed']}"
    )


# -- prepare --------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """Everything a cell's stages read: built from the config alone by :func:`prepare`."""

    config: dict[str, Any]
    cell: str
    workspace: Workspace
    runtime: Runtime
    device: str
    channels_last: bool
    dataset: Dataset
    metric: Any
    objective: Any
    built: Any
    layers: list[str]
    splits: dict[str, dict[str, np.ndarray]]
    groups: list[str]
    images: dict[str, Any]
    val_scorers: dict[str, TargetScorer]
    cache: FeatureCache | None = None
    as_built: bool = True  # the network is in its state as built: its RDMs may come from the feature cache
    timings: dict[str, float] = field(default_factory=dict)
    cache_stats: dict[str, Any] | None = None  # image-set lookups of this cell in the feature cache
    _network_parts: dict[str, Any] | None = None

    def rdms(self, group: str, idx: np.ndarray, stage: str) -> np.ndarray:
        """Per-layer model RDMs of ``group``'s images ``idx`` under the model's current state."""
        from .features import extract_rdms

        use_cache = self.cache is not None and self.as_built
        if use_cache:
            parts = self.cache_parts(group, idx)
            keys = [entry_key(parts, layer) for layer in self.layers]
            hit = self.cache.get(keys, len(idx))
            if hit is not None:
                return hit
        imgs = self.workspace.images(self.dataset, group, self.config["image_size"], self.built.mean, self.built.std)[
            idx
        ]
        with self.workspace.reporter.stage(stage, len(idx)) as advance:
            rdms = extract_rdms(
                self.built.model, self.layers, imgs, self.runtime.batch_size, self.device, advance, self.channels_last
            )
        if use_cache:
            description = {
                "dataset": self.dataset.name,
                "group": group,
                "n": len(idx),
                "backbone": self.config["backbone"],
                "image_size": self.config["image_size"],
                "weights": self.config["weights"],
            }
            self.cache.put(keys, rdms, description)
        return rdms

    def cache_parts(self, group: str, idx: np.ndarray) -> dict[str, Any]:
        """What an as-built RDM of ``group``'s images ``idx`` depends on (see :mod:`rsabench.feature_cache`)."""
        if self._network_parts is None:
            c, ds = self.config, self.dataset
            self._network_parts = {
                "network": state_digest(self.built.model),
                "backbone": c["backbone"],
                "backbone_info": self.built.info,
                "preprocessing": {"size": c["image_size"], "mean": list(self.built.mean), "std": list(self.built.std)},
                "dataset": {
                    "name": ds.name,
                    "version": ds.version,
                    "options": c["dataset_options"],
                    "data_checksums": c["data_checksums"],
                },
                "dtype": "float32",
                "code": code_versions(),
                "runtime": {
                    "device": self.device.split(":")[0],
                    "batch_size": self.runtime.batch_size,
                    "channels_last": self.channels_last,
                },
            }
        images = hashlib.sha256(np.asarray(idx, dtype="<i8").tobytes()).hexdigest()
        return {**self._network_parts, "group": group, "images": images, "n": len(idx)}


def check_inputs(config: dict[str, Any], workspace: Workspace, ds: Dataset) -> None:
    """UsageError unless the data, weights and code on this machine are those ``config`` was resolved with."""
    from .backbone import resolve_weights_path
    from .digests import DigestCache

    if ds.version != config["dataset_version"] or list(ds.conventions) != config["conventions"]:
        raise UsageError(
            f"config: dataset {ds.name!r} is version {ds.version} scored under {', '.join(ds.conventions)}; the config "
            f"says version {config['dataset_version']} under {', '.join(config['conventions'])}"
        )
    if config["target"] not in ds.target_names():
        raise UsageError(
            f"config: {config['target']!r} is not a target of dataset {ds.name!r} ({', '.join(ds.target_names())})"
        )
    have = workspace.data_checksums(ds)
    changed = sorted(
        k for k in set(have) | set(config["data_checksums"]) if have.get(k) != config["data_checksums"].get(k)
    )
    if changed:
        raise UsageError(
            f"dataset {ds.name!r}: {changed[0]} differs from what this cell's config was resolved with (data changed; "
            "plan the cell again)"
        )
    weights = resolve_weights_path(config["weights"])  # a file that is not there is a usage error
    if (weights is None) != (config["weights_sha256"] is None):
        raise UsageError(
            f"config: weights {config['weights']!r} and weights_sha256 disagree (a digest goes with a weights file "
            "only)"
        )
    if weights is not None and DigestCache().digest(weights) != config["weights_sha256"]:
        raise UsageError(
            f"--weights {config['weights']}: the file's sha256 differs from the cell config's weights_sha256"
        )
    code = code_of(workspace.plugins, config)
    if code != config["code"]:
        raise UsageError(f"this cell's config was resolved with code {config['code']}, this installation has {code}")


def load_dataset_of(config: dict[str, Any], workspace: Workspace) -> Dataset:
    """The dataset of ``config`` with its recorded options; UsageError for an option it does not take."""
    from .registry import accepted_options

    name, options = config["dataset"], config["dataset_options"]
    accepted = accepted_options(workspace.plugins.datasets.get(name), skip=1)
    unknown = [] if accepted is None else sorted(set(options) - set(accepted))
    if unknown:
        raise UsageError(
            f"config: dataset {name!r} takes no option {unknown[0]!r} (it takes: {', '.join(accepted) or 'none'})"
        )
    return workspace.load_dataset(name, options)


def check_config(config: dict[str, Any], workspace: Workspace, runtime: Runtime) -> tuple[Dataset, Any]:
    """Everything about ``config`` that can be checked without running the cell — names, options, inputs,
    code, splits — as usage errors, before its lock is taken or anything is written. Returns its dataset
    and objective."""
    from .training import check_amp

    ds = load_dataset_of(config, workspace)
    check_inputs(config, workspace, ds)
    objective = build_objective(config, workspace)
    workspace.plugins.backbones.get(config["backbone"])
    if config["train"]:
        check_amp(config["train"]["amp"], runtime.resolved_device())
    split = config["split"]
    split_images(ds, split["seed"], split["val_fraction"], split["test_fraction"] or 0.0)
    return ds, objective


def build_objective(config: dict[str, Any], workspace: Workspace) -> Any:
    """The objective of ``config`` rebuilt from its recorded options; UsageError unless they are exactly
    the options it resolves to (an unknown, missing or changed option)."""
    from .registry import accepted_options

    name, options = config["objective"], config["objective_options"]
    accepted = accepted_options(workspace.plugins.objectives.get(name))
    unknown = [] if accepted is None else sorted(set(options) - set(accepted))
    if unknown:
        raise UsageError(
            f"config: objective {name!r} takes no option {unknown[0]!r} (it takes: {', '.join(accepted) or 'none'})"
        )
    objective = workspace.build_objective(name, options)
    if objective.options() != options:
        raise UsageError(f"config: objective_options {options} of {name!r} resolve to {objective.options()}")
    if objective.trains != config["trains"]:
        raise UsageError(f"config: objective {name!r} {'trains' if objective.trains else 'does not train'}")
    return objective


def code_of(plugins: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The versions of the code a cell's numbers come from: rsabench and the plugins that provide its dataset,
    backbone, objective, metric and scoring conventions (``config["code"]``, so part of the cell hash)."""
    used = plugins.used_versions(
        dataset=config["dataset"], backbone=config["backbone"], objective=config["objective"],
        metric=config["metric"], convention=config["conventions"],
    )  # fmt: skip
    return {"rsabench": __version__, "plugins": used}


def seed_everything(seed: int, device: str) -> None:
    """Seed torch and numpy and ask for deterministic kernels (deterministic cuBLAS on CUDA)."""
    import os

    import torch

    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True, warn_only=True)


def prepare(
    config: dict[str, Any], workspace: Workspace, runtime: Runtime, cache: FeatureCache | None = None
) -> Prepared:
    """Dataset, inputs checked, network built and seeded, image splits, images and validation scorers."""
    import torch

    from .backbone import check_layers

    t_start = time.perf_counter()
    plugins = workspace.plugins
    device = runtime.resolved_device()
    ds, objective = check_config(config, workspace, runtime)
    channels_last = runtime.channels_last if runtime.channels_last is not None else device.startswith("cuda")
    seed_everything(config["seed"], device)
    built = plugins.backbones.get(config["backbone"])().build(weights=config["weights"], seed=config["seed"])
    built.model = built.model.to(device)
    if channels_last:
        built.model = built.model.to(memory_format=torch.channels_last)
    layers = list(config["layers"]) or built.default_layers
    check_layers(built.model, layers, config["backbone"])
    check_image_size(built, layers, config["image_size"], config["backbone"])
    split = config["split"]
    splits = split_images(ds, split["seed"], split["val_fraction"], split["test_fraction"] or 0.0)
    groups = [g for g in ds.train_groups if ds.target(config["target"], g) is not None]
    if not groups:
        raise UsageError(f"dataset {ds.name!r}: target {config['target']!r} has no training group with images")
    metric = plugins.metrics.get(config["metric"])()
    images = {g: workspace.images(ds, g, config["image_size"], built.mean, built.std) for g in groups}
    boot = config["bootstrap"]["seed"]
    val_scorers = {
        g: make_scorer(VALIDATION_CONVENTION, ds, config["target"], g, metric, splits[g]["validation"], boot)
        for g in groups
    }
    p = Prepared(
        config,
        config_hash(config),
        workspace,
        runtime,
        device,
        channels_last,
        ds,
        metric,
        objective,
        built,
        layers,
        splits,
        groups,
        images,
        val_scorers,
        cache=cache,
    )
    if cache is not None:
        p.cache_parts(groups[0], splits[groups[0]]["validation"])  # digest the network now, while it is as built
    p.timings["setup_s"] = time.perf_counter() - t_start
    return p


# -- select ---------------------------------------------------------------------------------------
class Validator:
    """``evaluate(epoch)``: the best layer's mean validation value over groups; keeps the curves."""

    def __init__(self, p: Prepared) -> None:
        self.p = p
        self.curves: list[dict[str, Any]] = []
        self.best_layer_at: dict[int, str] = {}
        self._untrained: float | None = None

    def __call__(self, epoch: int) -> float:
        if epoch == 0 and self._untrained is not None:  # asked twice when loss_layer=auto: computed once
            return self._untrained
        p = self.p
        per_layer = np.zeros(len(p.layers))
        for g in p.groups:
            rdms = p.rdms(g, p.splits[g]["validation"], f"validation {g} (epoch {epoch})")
            broken = [model_rdm_problem(r) for r in rdms]
            raw = np.full(len(p.layers), np.nan)
            ok = [k for k, problem in enumerate(broken) if problem is None]
            if ok:
                raw[ok] = p.val_scorers[g].raw_values(rdms[ok])
            per_layer += raw / len(p.groups)
            self.curves.extend(
                {"epoch": epoch, "group": g, "layer": layer, "raw": float(v)}
                for layer, v in zip(p.layers, raw, strict=True)
            )
        if np.all(np.isnan(per_layer)):
            why = next(problem for problem in broken if problem)
            cause = (
                f"training diverged or collapsed: after epoch {epoch}" if epoch else "the network as built: at epoch 0"
            )
            raise CellFailure(f"{cause} every layer's validation RDM {why}; nothing can be selected")
        excluded = [layer for layer, v in zip(p.layers, per_layer, strict=True) if np.isnan(v)]
        if excluded and epoch == 0:
            p.workspace.reporter.note(
                f"layer(s) {', '.join(excluded)}: constant or non-finite validation RDM at epoch 0, not selectable"
            )
        self.best_layer_at[epoch] = p.layers[int(np.nanargmax(per_layer))]
        value = float(np.nanmax(per_layer))
        if epoch == 0:
            self._untrained = value
        return value

    def state(self) -> dict[str, Any]:
        return {"curves": list(self.curves), "best_layer_at": dict(self.best_layer_at)}

    def restore(self, extra: dict[str, Any]) -> None:
        self.curves[:] = extra["curves"]
        self.best_layer_at = dict(extra["best_layer_at"])


@dataclass
class Selection:
    """What validation chose, the training summary, and the final-epoch test RDMs (trained cells)."""

    chosen: dict[str, Any]
    training: dict[str, Any] | None = None
    final_rdms: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    best_is_final: bool = False  # the selected state is the final one: its test RDMs are ``final_rdms``


def criterion(config: dict[str, Any]) -> str:
    return f"mean validation {config['metric']} over groups ({VALIDATION_CONVENTION})"


def select_frozen(p: Prepared, validate: Validator) -> Selection:
    """The network as built: the best validation layer at epoch 0."""
    value = validate(0)
    return Selection(
        {"criterion": criterion(p.config), "epoch": 0, "layer": validate.best_layer_at[0], "validation": value}
    )


def select_trained(p: Prepared, validate: Validator, checkpoint_dir: Path | None) -> Selection:
    """Fine-tune on the training images; keep the best-on-validation epoch (0 = untrained included)."""
    from .training import TrainSettings, train

    config = p.config
    loss_layer = choose_loss_layer(p, validate)
    targets, train_index = training_targets(p)
    settings = TrainSettings(**config["train"])
    settings.validate()
    checkpoint = checkpointer(p, validate, checkpoint_dir)
    validate(0)  # epoch 0 while the network is as built (from the cache where it has it); train() reuses it
    p.as_built = False
    n_train = sum(len(i) for i in train_index.values())
    stage = f"training {config['objective']} on {loss_layer}"
    with p.workspace.reporter.stage(stage, n_train * settings.epochs) as advance:
        result = train(
            p.built.model, loss_layer, p.objective, p.images, train_index, targets, settings, config["seed"],
            validate, p.device, advance, checkpoint=checkpoint, channels_last=p.channels_last,
        )  # fmt: skip
    final = {(name, g): p.rdms(g, idx, f"test features {g}") for name, g, idx in test_sets(p.dataset, p.splits)}
    p.built.model.load_state_dict(result.best_state)
    p.as_built = result.best_epoch == 0
    chosen = {
        "criterion": criterion(config),
        "epoch": result.best_epoch,
        "layer": validate.best_layer_at[result.best_epoch],
        "validation": result.best_value,
        "loss_layer": loss_layer,
    }
    training = training_summary(p, result, checkpoint_dir)
    return Selection(chosen, training, final, best_is_final=result.best_epoch == result.epochs_run)


def choose_loss_layer(p: Prepared, validate: Validator) -> str:
    """The config's loss layer, or with ``auto`` the best validation layer of the network as built."""
    from .backbone import check_layers

    loss_layer = p.config["loss_layer"]
    if loss_layer == "auto":
        validate(0)
        return validate.best_layer_at[0]
    check_layers(p.built.model, [loss_layer], p.config["backbone"])
    return loss_layer


def training_targets(p: Prepared) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Per group: the subject-mean target RDM (normalised on training pairs only) and the training images;
    the objective sees every training pair's target once (``setup``)."""
    import torch

    from .objective import training_target

    norm, splits = p.config["target_normalization"], p.splits
    train_index = {g: splits[g]["train"] for g in p.groups}
    targets = {
        g: torch.from_numpy(training_target(p.dataset.target(p.config["target"], g).rdms, norm, i)).float()
        for g, i in train_index.items()
    }
    pairs = [targets[g].numpy()[np.ix_(i, i)][np.triu_indices(len(i), 1)] for g, i in train_index.items()]
    p.objective.setup(np.concatenate(pairs))
    return targets, train_index


def checkpointer(p: Prepared, validate: Validator, checkpoint_dir: Path | None) -> Any:
    """Checkpoints in ``checkpoint_dir`` (None: none), carrying the validation curves."""
    from .training import Checkpointer

    if checkpoint_dir is None:
        return None
    return Checkpointer(
        checkpoint_dir, p.cell, get_extra=validate.state, set_extra=validate.restore,
        note=p.workspace.reporter.note, keep=p.runtime.keep_checkpoints,
    )  # fmt: skip


def training_summary(p: Prepared, result: Any, checkpoint_dir: Path | None) -> dict[str, Any]:
    """What the record says of the training (``curves.training``)."""
    kept = checkpoint_dir is not None and p.runtime.keep_checkpoints
    return {
        "epochs_run": result.epochs_run,
        "train_loss": result.train_loss,
        "lr": result.lr,
        "grad_norm": result.grad_norm,
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "bn_layers_adapted": result.bn_layers_adapted,
        "channels_last": p.channels_last,
        "target_normalization": p.config["target_normalization"],
        "checkpoint": f"{checkpoint_dir.name}/best.pt" if kept else None,
    }


# -- score the test sets --------------------------------------------------------------------------
def score_tests(p: Prepared, selection: Selection) -> tuple[list[ScoreEntry], list[ScoreEntry]]:
    """Each test set scored once, under every convention of the dataset: the selected layer (``scores``)
    and, selection-free, every layer at the final epoch (``per_layer_final``)."""
    scores: list[ScoreEntry] = []
    per_layer: list[ScoreEntry] = []
    for name, g, idx in test_sets(p.dataset, p.splits):
        if p.dataset.target(p.config["target"], g) is None:
            continue
        if selection.best_is_final:
            rdms = final = selection.final_rdms[(name, g)]
        else:
            rdms = p.rdms(g, idx, f"test features {g}")
            final = selection.final_rdms.get((name, g), rdms)
        chosen, more = score_test_set(p, selection, name, g, idx, rdms, final)
        scores.extend(chosen)
        per_layer.extend(more)
    return scores, per_layer


def score_test_set(
    p: Prepared, selection: Selection, name: str, g: str, idx: np.ndarray, rdms: np.ndarray, final: np.ndarray
) -> tuple[list[ScoreEntry], list[ScoreEntry]]:
    """The selected layer's score (``rdms``, the selected state) and every final-epoch layer's (``final``)
    on one test set, under each convention; a broken selected RDM is a CellFailure, a broken other layer
    an entry with its problem."""
    chosen = selection.chosen
    k_chosen = p.layers.index(chosen["layer"])
    problem = model_rdm_problem(rdms[k_chosen])
    if problem:
        raise CellFailure(
            f"the selected layer {chosen['layer']} (epoch {chosen['epoch']}): its {name} RDM on group {g} {problem}"
        )
    final_epoch = selection.training["epochs_run"] if selection.training else 0
    healthy = [k for k in range(len(p.layers)) if model_rdm_problem(final[k]) is None]
    scores, per_layer = [], []
    for convention in p.dataset.conventions:
        scorer = make_scorer(convention, p.dataset, p.config["target"], g, p.metric, idx, p.config["bootstrap"]["seed"])
        score = scorer.score(rdms[k_chosen])
        scores.append(ScoreEntry(name, g, convention, chosen["layer"], chosen["epoch"], score))
        layer_scores = dict(zip(healthy, scorer.score_many(final[healthy]), strict=True)) if healthy else {}
        for k, layer in enumerate(p.layers):
            problem = None if k in layer_scores else f"RDM {model_rdm_problem(final[k])}"
            per_layer.append(ScoreEntry(name, g, convention, layer, final_epoch, layer_scores.get(k), problem))
    return scores, per_layer


# -- the record -----------------------------------------------------------------------------------
def build_record(
    p: Prepared, selection: Selection, scores: list[ScoreEntry], per_layer: list[ScoreEntry], validate: Validator
) -> CellRecord:
    config = p.config
    seeds = {"cell": config["seed"], "split": config["split"]["seed"], "bootstrap": config["bootstrap"]["seed"]}
    extra = {
        "weights_digest": p.built.weights_digest,
        "backbone_info": p.built.info,
        "seeds": seeds,
        "data_checksums": p.workspace.data_checksums(p.dataset),
        "runtime": p.runtime.to_dict(),
        "feature_cache": p.cache_stats,
    }
    return CellRecord(
        cell=p.cell,
        config=config,
        selection=selection.chosen,
        scores=scores,
        per_layer_final=per_layer,
        curves={"validation": validate.curves, "training": selection.training},
        splits={g: {k: [int(i) for i in v] for k, v in s.items()} for g, s in p.splits.items()},
        timings=p.timings,
        manifest=manifest(p.device, p.workspace.plugins.versions, extra),
    )


def run_cell(
    config: dict[str, Any],
    *,
    workspace: Workspace | None = None,
    data_dir: str | Path | None = None,
    runtime: Runtime = Runtime(),
    checkpoint_dir: Path | None = None,
    cache: FeatureCache | None = None,
) -> dict[str, Any]:
    """Fine-tune (or not) and score the cell ``config``; returns its record (not written).

    ``workspace`` shares loaded datasets and images between cells (default: a new one on the installed
    plugins and ``data_dir``). With ``checkpoint_dir``, training is checkpointed there after every epoch
    and resumes from it. ``cache`` (default: the workspace's, if any) serves and keeps the RDMs of the
    network as built.
    """
    if workspace is None:
        from .plugins import get_plugins

        workspace = Workspace(get_plugins(), data_dir)
    t_start = time.perf_counter()
    cache = cache if cache is not None else workspace.feature_cache
    counts = (cache.hits, cache.misses) if cache is not None else (0, 0)
    p = prepare(config, workspace, runtime, cache)
    validate = Validator(p)
    t0 = time.perf_counter()
    selection = select_trained(p, validate, checkpoint_dir) if config["trains"] else select_frozen(p, validate)
    p.timings["train_select_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores, per_layer = score_tests(p, selection)
    p.timings["test_s"] = time.perf_counter() - t0
    p.timings["total_s"] = time.perf_counter() - t_start
    if cache is not None:
        p.cache_stats = {"dir": str(cache.root), "hits": cache.hits - counts[0], "misses": cache.misses - counts[1]}
    return build_record(p, selection, scores, per_layer, validate).to_dict()


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CPU or CUDA)."""
    text = str(exc).lower()
    return (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or "out of memory" in text
        or "can't allocate memory" in text
    )


def execute(
    config: dict[str, Any], path: Path, workspace: Workspace, runtime: Runtime, force: bool = False
) -> dict[str, Any]:
    """Run the cell ``config`` and write its record to ``path`` atomically; returns the record.

    The cell's lock is held meanwhile: another process sharing the runs dir waits, then (unless ``force``)
    takes the record this one wrote instead of running the cell again. Checkpoints live in
    ``<path>.ckpt/`` until the record is written.
    """
    from .training import finish_checkpoints

    cell = config_hash(config)
    check_config(config, workspace, runtime)  # a mistake in the config is a usage error, and no lock file stays
    with cell_lock(path, note=workspace.reporter.note):
        if not force:
            existing = read_record(path)
            if existing is not None and existing["cell"] == cell:
                return existing
        checkpoints = path.with_suffix(".ckpt")
        try:
            record = run_cell(config, workspace=workspace, runtime=runtime, checkpoint_dir=checkpoints)
        except CellFailure as exc:
            raise CellFailure(f"cell {describe(config)}: {exc}") from None
        except (MemoryError, RuntimeError) as exc:
            if not _out_of_memory(exc):
                raise
            raise CellFailure(
                f"cell {describe(config)}: out of memory on {runtime.resolved_device()} with --image-size "
                f"{config['image_size']} and --batch-size {runtime.batch_size} ({type(exc).__name__}); use smaller "
                "values"
            ) from None
        write_atomic(path, validate_record(record))  # what is written conforms to the shipped schema
        finish_checkpoints(checkpoints, runtime.keep_checkpoints)
    return record
