"""What the cells of one process share: plugin lookups and the dataset, checksum and image caches.

Nothing here decides a number: a dataset is built from its name and options, its checksums are its
files' content digests, and images are the dataset's images preprocessed at a size. A cell reads all of
these through a :class:`Workspace`, so cells run in one process load each dataset and image set once.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping

from .dataset import Dataset
from .dataset import data_dir as resolve_data_dir
from .errors import PluginError, UsageError
from .feature_cache import FeatureCache
from .plugins import Plugins


class Reporter:
    """Progress reporting; the CLI subclasses it with rich progress bars."""

    def stage(self, description: str, total: int) -> ContextManager[Callable[[int], None]]:
        return contextlib.nullcontext(lambda n: None)

    def note(self, message: str) -> None:
        pass


def _options_key(options: Mapping[str, Any] | None) -> tuple:
    return tuple(sorted((options or {}).items()))


class Workspace:
    """Plugins, a data directory and the caches of what cells load from them."""

    def __init__(
        self,
        plugins: Plugins,
        data_dir: str | Path | None = None,
        reporter: Reporter | None = None,
        feature_cache: FeatureCache | None = None,
    ) -> None:
        self.plugins = plugins
        self.data_dir = resolve_data_dir(data_dir)
        self.reporter = reporter or Reporter()
        self.feature_cache = feature_cache  # None: every RDM is computed
        self._datasets: dict[tuple, Dataset] = {}
        self._checksums: dict[int, dict[str, str]] = {}  # by id() of a dataset that _datasets keeps alive
        self._images: dict[tuple, Any] = {}

    def load_dataset(self, name: str, options: Mapping[str, Any] | None = None) -> Dataset:
        """The dataset ``name`` built with ``options`` (once per name and options), validated."""
        name = self.plugins.datasets.canonical(name)
        key = (name, _options_key(options))
        if key not in self._datasets:
            factory = self.plugins.datasets.get(name)
            ds = factory(self.data_dir, **dict(options or {}))
            plugin = self.plugins.datasets.plugin_of(name)
            if not isinstance(ds, Dataset):
                raise PluginError(
                    f"dataset {name!r} (plugin {plugin!r}): its factory returned {type(ds).__name__}, expected "
                    "rsabench.dataset.Dataset"
                )
            if ds.name != name:
                raise PluginError(
                    f"dataset {name!r} (plugin {plugin!r}): its factory returned a Dataset named {ds.name!r}"
                )
            ds.validate()
            for note in getattr(ds, "notes", []) or []:
                self.reporter.note(f"{name}: {note}")
            self._datasets[key] = ds
        return self._datasets[key]

    def data_checksums(self, ds: Dataset) -> dict[str, str]:
        """Content digests of everything ``ds`` reads (its own digests + every listed input file)."""
        from .digests import content_checksums

        if id(ds) not in self._checksums:
            n = sum(len(paths) for paths in ds.files.values())
            with self.reporter.stage(f"checksums {ds.name}", n) as advance:
                self._checksums[id(ds)] = {**ds.checksums, **content_checksums(ds.files, advance=advance)}
        return self._checksums[id(ds)]

    def build_objective(self, name: str, options: Mapping[str, Any] | None = None) -> Any:
        """A fresh objective ``name`` built with ``options`` (objectives hold training state: never shared)."""
        return self.plugins.objectives.get(name)(**dict(options or {}))

    def images(self, dataset: Dataset, group: str, size: int, mean: tuple, std: tuple) -> Any:
        """``group``'s images of ``dataset`` preprocessed at ``size`` (a float32 tensor, cached)."""
        from .images import preprocess

        key = (id(dataset), group, size, tuple(mean), tuple(std))
        if key not in self._images:
            loader = dataset.groups[group].load_images
            if loader is None:
                raise UsageError(f"dataset {dataset.name!r}: group {group!r} has no images")
            self._images[key] = preprocess(loader(), size, mean, std)
        return self._images[key]
