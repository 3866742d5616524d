"""A run: command-line options → planned cells (resolved configs, hashed), checked before any runs.

A :class:`Session` resolves every (dataset, target, backbone, objective, seed) combination of a run into
a config that holds everything the cell's numbers depend on, checks what only a built network can tell,
and hands each cell to :func:`rsabench.cell.execute`. It shares a :class:`~rsabench.workspace.Workspace`
(plugins, dataset and image caches) across its cells.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .cell import Runtime, check_image_size, code_of, describe, execute, resolve_device
from .dataset import Dataset
from .errors import UsageError
from .feature_cache import FeatureCache
from .options import route_options
from .plugins import Plugins
from .protocol import split_images
from .records import config_hash, read_record, record_path
from .registry import accepted_options
from .scoring import BOOTSTRAP_SAMPLES
from .settings import DEFAULTS as D
from .settings import OPTION_FIELDS, TRAIN_FIELDS
from .workspace import Reporter, Workspace

__all__ = ["PlannedCell", "Reporter", "RunOptions", "Session", "describe", "resolve_device"]


# -- options and cells --------------------------------------------------------------------------
@dataclass(frozen=True)
class RunOptions:
    """Options shared by every cell of a run; names and defaults are :data:`rsabench.settings.SETTINGS`'.

    ``channels_last``, ``keep_checkpoints``, ``device``, ``cache_dir`` and ``no_cache`` say how cells run,
    not what they compute: they are never in a cell config.
    """

    weights: str = D["weights"]
    epochs: int = D["epochs"]
    image_size: int = D["image_size"]
    batch_size: int = D["batch_size"]
    lr: float = D["lr"]
    optimizer: str = D["optimizer"]
    weight_decay: float = D["weight_decay"]
    patience: int = D["patience"]
    trainable: str = D["trainable"]
    loss_layer: str = D["loss_layer"]
    layers: tuple[str, ...] = D["layers"]
    metric: str = D["metric"]
    val_fraction: float = D["val_fraction"]
    test_fraction: float = D["test_fraction"]
    split_seed: int = D["split_seed"]
    bootstrap_seed: int = D["bootstrap_seed"]
    device: str = D["device"]
    data_dir: str | None = D["data_dir"]
    dataset_options: tuple[tuple[str, str], ...] = D["dataset_options"]
    objective_options: tuple[tuple[str, str], ...] = D["objective_options"]
    lr_schedule: str = D["lr_schedule"]
    warmup_epochs: int = D["warmup_epochs"]
    lr_step: int = D["lr_step"]
    lr_gamma: float = D["lr_gamma"]
    grad_clip: float = D["grad_clip"]
    amp: str = D["amp"]
    adapt_bn: bool = D["adapt_bn"]
    channels_last: bool | None = D["channels_last"]
    keep_checkpoints: bool = D["keep_checkpoints"]
    cache_dir: str | None = D["cache_dir"]
    no_cache: bool = D["no_cache"]

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> RunOptions:
        """Options from parsed command-line values (keyed by setting name; others are ignored; a setting the
        command does not offer, such as ``plan``'s missing ``run_only`` ones, takes its default)."""
        out = {}
        for name in OPTION_FIELDS:
            value = values.get(name, D[name])
            out[name] = (
                tuple(value) if isinstance(value, (list, tuple)) else str(value) if isinstance(value, Path) else value
            )
        return cls(**out)

    def train_settings(self) -> Any:
        """The training hyper-parameters (:class:`rsabench.training.TrainSettings`) of these options."""
        from .training import TrainSettings

        return TrainSettings(**{name: getattr(self, name) for name in TRAIN_FIELDS})

    def validate(self) -> None:
        if self.image_size < 16:
            raise UsageError(f"--image-size must be >= 16 pixels, got {self.image_size}")
        if (
            not 0 < self.val_fraction < 1
            or not 0 <= self.test_fraction < 1
            or self.val_fraction + self.test_fraction >= 1
        ):
            raise UsageError("--val-fraction and --test-fraction must lie in (0, 1) and sum to less than 1")
        repeated = sorted({layer for layer in self.layers if self.layers.count(layer) > 1})
        if repeated:
            raise UsageError(f"--layer {repeated[0]}: given twice")
        kind, _, layer = self.trainable.partition(":")
        if not ((kind in ("all", "none") and not layer) or (kind in ("up-to", "from") and layer)):
            raise UsageError(
                f"invalid --trainable {self.trainable!r}: expected all, none, up-to:<layer> or from:<layer>"
            )
        self.train_settings().validate()
        device = resolve_device(self.device)  # a CUDA device that is not there is refused here, before any cell
        if self.amp != "off" and not device.startswith("cuda"):
            raise UsageError(f"--amp {self.amp} needs a CUDA device, and cells run on {device}; use --amp off")


@dataclass
class PlannedCell:
    """One (dataset, target, backbone, objective, seed) combination, resolved and hashed."""

    config: dict[str, Any]
    cell: str
    path: Path
    cached: bool


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


class Session(Workspace):
    """The cells of one run and what they share."""

    def __init__(
        self, plugins: Plugins, options: RunOptions, reporter: Reporter | None = None, force: bool = False
    ) -> None:
        super().__init__(plugins, options.data_dir, reporter)
        if not options.no_cache:
            self.feature_cache = FeatureCache(
                Path(options.cache_dir) if options.cache_dir else None, note=self.reporter.note
            )
        self.options = options
        self.force = force  # re-run cells that already have a record
        self.dataset_options: dict[str, dict[str, str]] = {}
        self.objective_options: dict[str, dict[str, str]] = {}

    @property
    def runtime(self) -> Runtime:
        o = self.options
        return Runtime(
            device=o.device, batch_size=o.batch_size, channels_last=o.channels_last, keep_checkpoints=o.keep_checkpoints
        )

    def dataset(self, name: str) -> Dataset:
        """The dataset ``name`` with this run's options for it."""
        name = self.plugins.datasets.canonical(name)
        return self.load_dataset(name, self.dataset_options.get(name, {}))

    def objective(self, name: str) -> Any:
        """The objective ``name`` built with this run's options for it."""
        return self.build_objective(name, self.objective_options.get(name, {}))

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
            "--objective-option",
            "objective",
            o.objective_options,
            {name: accepted_options(self.plugins.objectives.get(name)) for name in objectives},
        )
        self.dataset_options = route_options(
            "--dataset-option",
            "dataset",
            o.dataset_options,
            {name: accepted_options(self.plugins.datasets.get(name), skip=1) for name in datasets},
        )
        for name in objectives:  # fail on bad option values before anything runs
            self.objective(name)
        loaded = [self.dataset(name) for name in datasets]
        for ds in loaded:  # split sizes: a usage error now, not in every cell
            split_images(ds, o.split_seed, o.val_fraction, o.test_fraction if not ds.test_splits else 0.0)
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
                cached = self._has_record(path, cell)
                cells.append(PlannedCell(config, cell, path, cached))
        return cells

    def _has_record(self, path: Path, cell: str) -> bool:
        """Whether ``path`` holds a valid record of ``cell`` (a record of another cell there is not its record)."""
        doc = read_record(path, warn=lambda m: self.reporter.note(f"{m}; the cell will run again"))
        if doc is not None and doc["cell"] != cell:
            other = doc["cell"][:12]
            self.reporter.note(f"{path}: holds the record of another cell ({other}); the cell will run again")
            return False
        return doc is not None

    def resolve(
        self, ds: Dataset, target: str, backbone: str, objective: str, seed: int, metric: str
    ) -> dict[str, Any]:
        """The full resolved config of a cell: everything its numbers depend on."""
        from .backbone import resolve_weights_path
        from .digests import DigestCache

        o = self.options
        weights_path = resolve_weights_path(o.weights)
        obj = self.objective(objective)
        config = {
            "dataset": ds.name,
            "dataset_version": ds.version,
            "dataset_options": dict(sorted(self.dataset_options.get(ds.name, {}).items())),
            "data_checksums": self.data_checksums(ds),
            "target": target,
            "backbone": backbone,
            "weights": o.weights if weights_path is None else str(weights_path.resolve()),
            "weights_sha256": DigestCache().digest(weights_path) if weights_path else None,
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
            "split": {
                "seed": o.split_seed,
                "val_fraction": o.val_fraction,
                "test_fraction": o.test_fraction if not ds.test_splits else None,
            },
            "bootstrap": {"seed": o.bootstrap_seed, "samples": BOOTSTRAP_SAMPLES},
        }
        config["code"] = code_of(self.plugins, config)
        return config

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
            check_image_size(
                built, layers, o.image_size, backbone, o.batch_size, n_images, trains, resolve_device(o.device)
            )
        if runs_dir is not None and cells:
            check_writable(runs_dir, "--runs-dir")

    # -- running ----------------------------------------------------------------------------------
    def run(self, planned: PlannedCell) -> dict[str, Any]:
        """Run one cell (locked, written atomically; see :func:`rsabench.cell.execute`); returns its record."""
        return execute(planned.config, planned.path, self, self.runtime, force=self.force)


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
