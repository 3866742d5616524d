"""The honest protocol (DESIGN §6) and the execution of one cell.

Images (never pairs) are split into train / validation / test with a recorded seed. Layer, epoch and the
loss layer are chosen on validation images only; the test images are scored once, after every choice is
frozen. The per-layer test table at the final epoch is kept as the selection-free number.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import numpy as np

from . import __version__
from .dataset import Dataset, data_dir as resolve_data_dir
from .errors import CellFailure, PluginError, UsageError
from .options import route_options
from .plugins import Plugins
from .records import SCHEMA, cell_lock, config_hash, manifest, read_record, record_path, write_atomic
from .registry import accepted_options
from .scoring import TargetScorer, model_rdm_problem

VALIDATION_CONVENTION = "computed"


# -- options and cells --------------------------------------------------------------------------
@dataclass(frozen=True)
class RunOptions:
    """Options shared by every cell of a run (CLI flags)."""

    weights: str = "imagenet"
    epochs: int = 10
    image_size: int = 224
    batch_size: int = 32
    lr: float = 1e-4
    optimizer: str = "adam"
    weight_decay: float = 0.0
    patience: int = 0
    trainable: str = "all"
    loss_layer: str = "auto"
    layers: tuple[str, ...] = ()
    metric: str = "spearman"
    val_fraction: float = 0.2
    test_fraction: float = 0.25
    split_seed: int = 0
    bootstrap_seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    dataset_options: tuple[tuple[str, str], ...] = ()
    objective_options: tuple[tuple[str, str], ...] = ()
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    lr_step: int = 0
    lr_gamma: float = 0.1
    grad_clip: float = 0.0
    amp: str = "off"
    adapt_bn: bool = False
    channels_last: bool | None = None  # None: on with CUDA, off on CPU; a memory layout, not in the config
    keep_checkpoints: bool = False  # keep <record>.ckpt/best.pt after the record is written; not in the config

    def train_settings(self) -> Any:
        """The training hyper-parameters (:class:`rsabench.training.TrainSettings`) of these options."""
        from .training import TrainSettings

        return TrainSettings(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer,
            weight_decay=self.weight_decay, patience=self.patience, trainable=self.trainable,
            lr_schedule=self.lr_schedule, warmup_epochs=self.warmup_epochs, lr_step=self.lr_step,
            lr_gamma=self.lr_gamma, grad_clip=self.grad_clip, amp=self.amp, adapt_bn=self.adapt_bn,
        )

    def validate(self) -> None:
        if self.image_size < 16:
            raise UsageError(f"--image-size must be >= 16 pixels, got {self.image_size}")
        if not 0 < self.val_fraction < 1 or not 0 <= self.test_fraction < 1 or self.val_fraction + self.test_fraction >= 1:
            raise UsageError("--val-fraction and --test-fraction must lie in (0, 1) and sum to less than 1")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise UsageError(f"--device must be auto, cpu or cuda[:N], got {self.device!r}")
        repeated = sorted({layer for layer in self.layers if self.layers.count(layer) > 1})
        if repeated:
            raise UsageError(f"--layer {repeated[0]}: given twice")
        kind, _, layer = self.trainable.partition(":")
        if not ((kind in ("all", "none") and not layer) or (kind in ("up-to", "from") and layer)):
            raise UsageError(f"invalid --trainable {self.trainable!r}: expected all, none, up-to:<layer> or from:<layer>")
        self.train_settings().validate()
        if self.amp != "off" and self.device == "cpu":
            raise UsageError(f"--amp {self.amp} needs a CUDA device; use --amp off with --device cpu")


@dataclass
class PlannedCell:
    """One (dataset, target, backbone, objective, seed) combination, resolved and hashed."""

    config: dict[str, Any]
    cell: str
    path: Path
    cached: bool


class Reporter:
    """Progress reporting; the CLI subclasses it with rich progress bars."""

    def stage(self, description: str, total: int) -> ContextManager[Callable[[int], None]]:
        return contextlib.nullcontext(lambda n: None)

    def note(self, message: str) -> None:
        pass


# -- protocol: splits ---------------------------------------------------------------------------
def split_images(dataset: Dataset, seed: int, val_fraction: float, test_fraction: float) -> dict[str, dict[str, np.ndarray]]:
    """Per training group: sorted image indices for ``train``, ``validation`` and (held-out datasets) ``test``."""
    holdout = not dataset.test_splits
    splits: dict[str, dict[str, np.ndarray]] = {}
    for group in dataset.train_groups:
        n = dataset.groups[group].n
        rng = np.random.default_rng([seed, zlib.crc32(group.encode())])
        perm = rng.permutation(n)
        n_test = int(round(n * test_fraction)) if holdout else 0
        n_val = int(round(n * val_fraction))
        parts = {"test": perm[:n_test], "validation": perm[n_test : n_test + n_val], "train": perm[n_test + n_val :]}
        if holdout and n_test < 3 or n_val < 3 or len(parts["train"]) < 2:
            raise UsageError(
                f"dataset {dataset.name!r}, group {group!r}: {n} images are too few for the split fractions "
                "(need >= 3 validation, >= 3 test and >= 2 training images)"
            )
        splits[group] = {k: np.sort(v) for k, v in parts.items() if len(v) or k != "test"}
    return splits


def test_sets(dataset: Dataset, splits: dict[str, dict[str, np.ndarray]]) -> list[tuple[str, str, np.ndarray]]:
    """(split name, group, image indices) scored once at the end."""
    if not dataset.test_splits:
        return [("test", g, s["test"]) for g, s in splits.items()]
    out = []
    for name, groups in dataset.test_splits.items():
        for g in groups:
            if dataset.groups[g].load_images is not None:
                out.append((name, g, np.arange(dataset.groups[g].n)))
    return out


# -- scorers --------------------------------------------------------------------------------------
def make_scorer(convention: str, dataset: Dataset, target: str, group: str, metric: Any, index: np.ndarray, bootstrap_seed: int) -> TargetScorer:
    """A scorer for one target/group/images under a named convention."""
    rdms = dataset.target(target, group).rdms
    if convention == "computed":
        return TargetScorer(rdms, metric, index, bootstrap_seed=bootstrap_seed)
    from .conventions import scorer_for

    return scorer_for(convention, dataset=dataset, target=target, group=group, rdms=rdms, metric=metric, index=index, bootstrap_seed=bootstrap_seed)


# -- the session: caches shared by the cells of one run ----------------------------------------------
def _unique(option: str, names: list, canonical: Callable[[Any], Any] = lambda x: x) -> list:
    """``names`` resolved by ``canonical``; the same one given twice (alias included) is a usage error."""
    out: dict[Any, Any] = {}
    for name in names:
        key = canonical(name)
        if key in out:
            same = f" (= {out[key]})" if out[key] != name else ""
            raise UsageError(f"{option} {name}: given twice{same}")
        out[key] = name
    return list(out)


@dataclass
class Session:
    plugins: Plugins
    options: RunOptions
    reporter: Reporter = field(default_factory=Reporter)
    _datasets: dict[str, Dataset] = field(default_factory=dict)
    _images: dict[tuple, Any] = field(default_factory=dict)
    _checksums: dict[str, dict[str, str]] = field(default_factory=dict)
    dataset_options: dict[str, dict[str, str]] = field(default_factory=dict)
    objective_options: dict[str, dict[str, str]] = field(default_factory=dict)
    force: bool = False  # re-run cells that already have a record

    def dataset(self, name: str) -> Dataset:
        name = self.plugins.datasets.canonical(name)
        if name not in self._datasets:
            factory = self.plugins.datasets.get(name)
            ds = factory(resolve_data_dir(self.options.data_dir), **self.dataset_options.get(name, {}))
            plugin = self.plugins.datasets.plugin_of(name)
            if not isinstance(ds, Dataset):
                raise PluginError(f"dataset {name!r} (plugin {plugin!r}): its factory returned {type(ds).__name__}, expected rsabench.dataset.Dataset")
            if ds.name != name:
                raise PluginError(f"dataset {name!r} (plugin {plugin!r}): its factory returned a Dataset named {ds.name!r}")
            ds.validate()
            for note in getattr(ds, "notes", []) or []:
                self.reporter.note(f"{name}: {note}")
            self._datasets[name] = ds
        return self._datasets[name]

    def data_checksums(self, ds: Dataset) -> dict[str, str]:
        """Content digests of everything ``ds`` reads (its own digests + every listed input file)."""
        from .digests import content_checksums

        if ds.name not in self._checksums:
            n = sum(len(paths) for paths in ds.files.values())
            with self.reporter.stage(f"checksums {ds.name}", n) as advance:
                self._checksums[ds.name] = {**ds.checksums, **content_checksums(ds.files, advance=advance)}
        return self._checksums[ds.name]

    def objective(self, name: str) -> Any:
        """The objective ``name`` built with this run's options for it."""
        return self.plugins.objectives.get(name)(**self.objective_options.get(name, {}))

    def images(self, dataset: Dataset, group: str, size: int, mean: tuple, std: tuple):
        from .images import preprocess

        key = (dataset.name, group, size, mean, std)
        if key not in self._images:
            loader = dataset.groups[group].load_images
            if loader is None:
                raise UsageError(f"dataset {dataset.name!r}: group {group!r} has no images")
            self._images[key] = preprocess(loader(), size, mean, std)
        return self._images[key]

    # -- planning ---------------------------------------------------------------------------------
    def plan(
        self,
        datasets: list[str],
        backbones: list[str],
        objectives: list[str],
        seeds: list[int],
        targets: list[str],
        runs_dir: Path,
    ) -> list[PlannedCell]:
        """Resolve and hash every combination; nothing is trained. Unknown or repeated names are usage errors."""
        o = self.options
        o.validate()
        metric_name = self.plugins.metrics.canonical(o.metric)
        datasets = _unique("--dataset", datasets, self.plugins.datasets.canonical)
        backbones = _unique("--backbone", backbones, self.plugins.backbones.canonical)
        for b in backbones:  # resolves timm:/torchvision: names now, so a typo fails before any cell runs
            self.plugins.backbones.get(b)
        objectives = _unique("--objective", objectives, self.plugins.objectives.canonical)
        seeds = _unique("--seed", seeds)
        targets = _unique("--target", targets)
        self.objective_options = route_options(
            "--objective-option", "objective", o.objective_options,
            {name: accepted_options(self.plugins.objectives.get(name)) for name in objectives},
        )
        self.dataset_options = route_options(
            "--dataset-option", "dataset", o.dataset_options,
            {name: accepted_options(self.plugins.datasets.get(name), skip=1) for name in datasets},
        )
        for name in objectives:  # fail on bad option values before anything runs
            self.objective(name)
        loaded = [self.dataset(name) for name in datasets]
        unknown = [t for t in targets if not any(t in ds.target_names() for ds in loaded)]
        if unknown:
            have = "; ".join(f"dataset {ds.name!r} has targets {', '.join(ds.target_names())}" for ds in loaded)
            raise UsageError(f"--target {unknown[0]}: not a target of this run ({have})")
        cells = []
        for ds in loaded:
            names = ds.target_names()
            if targets and not set(targets) & set(names):
                raise UsageError(f"--target {', '.join(targets)}: dataset {ds.name!r} has targets {', '.join(names)}")
            chosen = [t for t in names if not targets or t in targets]
            for target, backbone, objective, seed in itertools.product(chosen, backbones, objectives, seeds):
                config = self.resolve(ds, target, backbone, objective, seed, metric_name)
                cell = config_hash(config)
                path = record_path(runs_dir, config, cell)
                cached = read_record(path, warn=lambda m: self.reporter.note(f"{m}; the cell will run again")) is not None
                cells.append(PlannedCell(config, cell, path, cached))
        return cells

    def resolve(self, ds: Dataset, target: str, backbone: str, objective: str, seed: int, metric: str) -> dict[str, Any]:
        """The full resolved config of a cell: everything its numbers depend on."""
        from .backbone import resolve_weights_path
        from .dataset import sha256_file

        o = self.options
        weights_path = resolve_weights_path(o.weights)
        obj = self.objective(objective)
        return {
            "dataset": ds.name,
            "dataset_version": ds.version,
            "dataset_options": dict(sorted(self.dataset_options.get(ds.name, {}).items())),
            "data_checksums": self.data_checksums(ds),
            "target": target,
            "backbone": backbone,
            "weights": o.weights if weights_path is None else str(weights_path),
            "weights_sha256": sha256_file(weights_path) if weights_path else None,
            "objective": objective,
            "objective_options": obj.options(),
            "trains": obj.trains,
            "seed": seed,
            "image_size": o.image_size,
            "layers": list(o.layers),
            "loss_layer": o.loss_layer if obj.trains else None,
            "train": o.train_settings().config() if obj.trains else None,
            "target_normalization": obj.target_normalization(ds.target_normalization) if obj.trains else None,
            "metric": metric,
            "conventions": list(ds.conventions),
            "split": {"seed": o.split_seed, "val_fraction": o.val_fraction, "test_fraction": o.test_fraction if not ds.test_splits else None},
            "bootstrap": {"seed": o.bootstrap_seed, "samples": 1000},
            "code": {"rsabench": __version__, "plugins": self.plugins.used_versions(dataset=ds.name, backbone=backbone, objective=objective, metric=metric)},
        }

    def preflight(self, cells: list[PlannedCell], runs_dir: Path | None = None) -> None:
        """Check what only a built network can tell (weights available and finite, layer names, image size,
        memory) and that ``runs_dir`` is writable, before any cell runs."""
        from .backbone import check_layers

        o = self.options
        for backbone in dict.fromkeys(c.config["backbone"] for c in cells):
            built = self.plugins.backbones.get(backbone)().build(weights=o.weights, seed=0)
            ours = [c for c in cells if c.config["backbone"] == backbone]
            trains = any(c.config["trains"] for c in ours)
            named = list(o.layers)
            if trains:
                named += [o.loss_layer] if o.loss_layer != "auto" else []
                named += [o.trainable.partition(":")[2]] if ":" in o.trainable else []
            check_layers(built.model, named, backbone)
            layers = list(o.layers) or built.default_layers
            n_images = max(g.n for c in ours for g in self.dataset(c.config["dataset"]).groups.values())
            check_image_size(built, layers, o.image_size, backbone, o.batch_size, n_images, trains, resolve_device(o.device))
        if runs_dir is not None and cells:
            check_writable(runs_dir, "--runs-dir")

    # -- running ----------------------------------------------------------------------------------
    def run(self, planned: PlannedCell) -> dict[str, Any]:
        """Run one cell and write its record atomically; returns the record.

        The cell's lock is held meanwhile: another process sharing the runs dir waits, then (unless
        ``self.force``) takes the record this one wrote instead of running the cell again.
        """
        from .training import finish_checkpoints

        with cell_lock(planned.path, note=self.reporter.note):
            if not self.force:
                existing = read_record(planned.path)
                if existing is not None and existing["cell"] == planned.cell:
                    return existing
            checkpoints = planned.path.with_suffix(".ckpt")
            try:
                record = run_cell(self, planned.config, planned.cell, checkpoint_dir=checkpoints)
            except CellFailure as exc:
                raise CellFailure(f"cell {describe(planned.config)}: {exc}") from None
            except (MemoryError, RuntimeError) as exc:
                if not _out_of_memory(exc):
                    raise
                o = self.options
                raise CellFailure(
                    f"cell {describe(planned.config)}: out of memory on {resolve_device(o.device)} with --image-size "
                    f"{o.image_size} and --batch-size {o.batch_size} ({type(exc).__name__}); use smaller values"
                ) from None
            write_atomic(planned.path, record)
            finish_checkpoints(checkpoints, self.options.keep_checkpoints)
        return record


def describe(config: dict[str, Any]) -> str:
    """``dataset / target / backbone / objective / seed N``."""
    return " / ".join(str(config[k]) for k in ("dataset", "target", "backbone", "objective")) + f" / seed {config['seed']}"


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CPU or CUDA)."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text or "can't allocate memory" in text


def check_writable(directory: Path, option: str) -> None:
    """Create ``directory`` (and parents) and write a probe file there; UsageError naming ``option`` if that fails."""
    import tempfile

    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".rsabench-probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"{option} {directory}: not a writable directory ({reason})") from None


def check_image_size(built: Any, layers: list[str], size: int, backbone: str, batch_size: int = 1, n_images: int = 1,
                     trains: bool = False, device: str = "cpu") -> None:
    """Shapes of a forward pass at ``size`` (meta device): UsageError if the network cannot take that size,
    or if a cell would need more memory than ``device`` has free."""
    from .memory import available_bytes, gib, needed_bytes, profile

    try:
        shapes = profile(built.model, layers, size)
    except (RuntimeError, ValueError, AssertionError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UsageError(f"--image-size {size}: backbone {backbone} cannot take {size}x{size} images through its layers ({first}); use a larger --image-size") from None
    need, free = needed_bytes(shapes, batch_size, n_images, trains), available_bytes(device)
    if free is not None and need > free:
        raise UsageError(
            f"--image-size {size} with --batch-size {batch_size}: a {backbone} cell needs at least {gib(need)} of memory "
            f"on {device} (activations, features of {n_images} images{', gradients' if trains else ''}), {gib(free)} are free; "
            "use a smaller --image-size, --batch-size or fewer --layer"
        )


def resolve_device(option: str) -> str:
    import torch

    if option == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if option.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return option


def run_cell(session: Session, config: dict[str, Any], cell: str, checkpoint_dir: Path | None = None) -> dict[str, Any]:
    """Fine-tune (or not) and score one cell; returns its result record.

    With ``checkpoint_dir``, training is checkpointed there after every epoch and resumes from it.
    """
    import os

    import torch

    from .training import Checkpointer, TrainSettings, check_amp, extract_rdms, train
    from .objective import training_target

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    o = session.options
    plugins = session.plugins
    reporter = session.reporter
    device = resolve_device(o.device)
    ds = session.dataset(config["dataset"])
    target = config["target"]
    metric = plugins.metrics.get(config["metric"])()
    objective = session.objective(config["objective"])
    seed = config["seed"]

    if config["train"]:
        check_amp(config["train"]["amp"], device)  # refuse before anything is built
    channels_last = o.channels_last if o.channels_last is not None else device.startswith("cuda")
    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.backends.cudnn.benchmark = False

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True, warn_only=True)

    built = plugins.backbones.get(config["backbone"])().build(weights=o.weights, seed=seed)
    model = built.model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    layers = list(config["layers"]) or built.default_layers
    from .backbone import check_layers

    check_layers(model, layers, config["backbone"])

    splits = split_images(ds, o.split_seed, o.val_fraction, o.test_fraction)
    groups = [g for g in ds.train_groups if ds.target(target, g) is not None]
    if not groups:
        raise UsageError(f"dataset {ds.name!r}: target {target!r} has no training group with images")
    images = {g: session.images(ds, g, config["image_size"], built.mean, built.std) for g in groups}
    val_scorers = {g: make_scorer(VALIDATION_CONVENTION, ds, target, g, metric, splits[g]["validation"], o.bootstrap_seed) for g in groups}
    timings["setup_s"] = time.perf_counter() - t_start

    curves: list[dict[str, Any]] = []
    best_layer_at: dict[int, str] = {}

    untrained: dict[str, float] = {}

    def evaluate(epoch: int) -> float:
        if epoch == 0 and "value" in untrained:  # asked twice when loss_layer=auto: compute once
            return untrained["value"]
        per_layer = np.zeros(len(layers))
        for g in groups:
            idx = splits[g]["validation"]
            with reporter.stage(f"validation {g} (epoch {epoch})", len(idx)) as advance:
                rdms = extract_rdms(model, layers, images[g][idx], o.batch_size, device, advance, channels_last)
            broken = [model_rdm_problem(r) for r in rdms]
            raw = np.full(len(layers), np.nan)
            ok = [k for k, problem in enumerate(broken) if problem is None]
            if ok:
                raw[ok] = val_scorers[g].raw_values(rdms[ok])
            per_layer += raw / len(groups)
            curves.extend({"epoch": epoch, "group": g, "layer": layer, "raw": float(v)} for layer, v in zip(layers, raw))
        if np.all(np.isnan(per_layer)):
            why = next(p for p in broken if p)
            cause = f"training diverged or collapsed: after epoch {epoch}" if epoch else "the network as built: at epoch 0"
            raise CellFailure(f"{cause} every layer's validation RDM {why}; nothing can be selected")
        excluded = [layer for layer, v in zip(layers, per_layer) if np.isnan(v)]
        if excluded and epoch == 0:
            reporter.note(f"layer(s) {', '.join(excluded)}: constant or non-finite validation RDM at epoch 0, not selectable")
        best_layer_at[epoch] = layers[int(np.nanargmax(per_layer))]
        value = float(np.nanmax(per_layer))
        if epoch == 0:
            untrained["value"] = value
        return value

    t0 = time.perf_counter()
    selection: dict[str, Any] = {"criterion": f"mean validation {config['metric']} over groups ({VALIDATION_CONVENTION})"}
    train_info: dict[str, Any] | None = None
    final_state_rdms: dict[tuple[str, str], np.ndarray] = {}
    tests = test_sets(ds, splits)
    if not objective.trains:
        value = evaluate(0)
        selection.update(epoch=0, layer=best_layer_at[0], validation=value)
    else:
        loss_layer = config["loss_layer"]
        if loss_layer == "auto":
            evaluate(0)
            loss_layer = best_layer_at[0]
        else:
            check_layers(model, [loss_layer], config["backbone"])
        norm = config["target_normalization"]
        targets = {
            g: torch.from_numpy(training_target(ds.target(target, g).rdms, norm, splits[g]["train"])).float() for g in groups
        }
        pairs = np.concatenate([t.numpy()[np.ix_(splits[g]["train"], splits[g]["train"])][np.triu_indices(len(splits[g]["train"]), 1)] for g, t in targets.items()])
        objective.setup(pairs)
        settings = TrainSettings(**config["train"])
        settings.validate()
        n_train = sum(len(splits[g]["train"]) for g in groups)

        def restore(extra: dict[str, Any]) -> None:
            curves[:] = extra["curves"]
            best_layer_at.clear()
            best_layer_at.update(extra["best_layer_at"])

        checkpoint = None
        if checkpoint_dir is not None:
            checkpoint = Checkpointer(
                checkpoint_dir, cell, get_extra=lambda: {"curves": list(curves), "best_layer_at": dict(best_layer_at)},
                set_extra=restore, note=reporter.note, keep=o.keep_checkpoints,
            )
        with reporter.stage(f"training {config['objective']} on {loss_layer}", n_train * settings.epochs) as advance:
            result = train(
                model, loss_layer, objective, images, {g: splits[g]["train"] for g in groups}, targets, settings, seed, evaluate,
                device, advance, checkpoint=checkpoint, channels_last=channels_last,
            )
        # selection-free numbers: the final epoch, every layer
        final_state_rdms = {(name, g): _test_rdms(session, ds, g, idx, built, layers, config, device, channels_last) for name, g, idx in tests}
        model.load_state_dict(result.best_state)
        selection.update(epoch=result.best_epoch, layer=best_layer_at[result.best_epoch], validation=result.best_value, loss_layer=loss_layer)
        train_info = {
            "epochs_run": result.epochs_run, "train_loss": result.train_loss, "lr": result.lr, "grad_norm": result.grad_norm,
            "stopped_early": result.stopped_early, "resumed_from_epoch": result.resumed_from_epoch,
            "bn_layers_adapted": result.bn_layers_adapted, "channels_last": channels_last, "target_normalization": norm,
            "checkpoint": f"{checkpoint_dir.name}/best.pt" if checkpoint_dir is not None and o.keep_checkpoints else None,
        }
    timings["train_select_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    chosen = layers.index(selection["layer"])
    scores: list[dict[str, Any]] = []
    per_layer: list[dict[str, Any]] = []
    for name, g, idx in tests:
        if ds.target(target, g) is None:
            continue
        rdms = _test_rdms(session, ds, g, idx, built, layers, config, device, channels_last)
        final = final_state_rdms.get((name, g), rdms)
        problem = model_rdm_problem(rdms[chosen])
        if problem:
            raise CellFailure(f"the selected layer {selection['layer']} (epoch {selection['epoch']}): its {name} RDM on group {g} {problem}")
        healthy = [k for k in range(len(layers)) if model_rdm_problem(final[k]) is None]
        final_epoch = train_info["epochs_run"] if train_info else 0
        for convention in ds.conventions:
            scorer = make_scorer(convention, ds, target, g, metric, idx, o.bootstrap_seed)
            s = scorer.score(rdms[chosen])
            scores.append({"split": name, "group": g, "convention": convention, "layer": selection["layer"], "epoch": selection["epoch"], "score": s.to_dict()})
            layer_scores = dict(zip(healthy, scorer.score_many(final[healthy]))) if healthy else {}
            for k, layer in enumerate(layers):
                entry = {"split": name, "group": g, "convention": convention, "layer": layer, "epoch": final_epoch}
                if k in layer_scores:
                    per_layer.append({**entry, "score": layer_scores[k].to_dict()})
                else:
                    per_layer.append({**entry, "score": None, "problem": f"RDM {model_rdm_problem(final[k])}"})
    timings["test_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start

    return {
        "schema": SCHEMA,
        "cell": cell,
        "config": config,
        "selection": selection,
        "scores": scores,
        "per_layer_final": per_layer,
        "curves": {"validation": curves, "training": train_info},
        "splits": {g: {k: [int(i) for i in v] for k, v in s.items()} for g, s in splits.items()},
        "timings": timings,
        "manifest": manifest(device, plugins.versions, {"weights_digest": built.weights_digest, "backbone_info": built.info, "seeds": {"cell": seed, "split": o.split_seed, "bootstrap": o.bootstrap_seed}, "data_checksums": session.data_checksums(ds)}),
    }


def _test_rdms(session: Session, ds: Dataset, group: str, idx: np.ndarray, built: Any, layers: list[str], config: dict, device: str, channels_last: bool = False) -> np.ndarray:
    from .training import extract_rdms

    imgs = session.images(ds, group, config["image_size"], built.mean, built.std)[idx]
    with session.reporter.stage(f"test features {group}", len(idx)) as advance:
        return extract_rdms(built.model, layers, imgs, session.options.batch_size, device, advance, channels_last)
