"""Core data model: stimulus groups, targets and datasets, with invariant checks and the data directory.

Also the dataset plugin's data interface: a :class:`DataSource` (what ``rsabench data info|verify|import|fetch``
do with a dataset's files), registered with the factory through :func:`with_data`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import DataError, PluginError

ImageLoader = Callable[[], np.ndarray]
"""Returns a group's images as uint8 ``(n, H, W, 3)``; called only when pixels are needed."""


@dataclass
class StimulusGroup:
    """Ordered images that share RDMs (pairs exist only within a group)."""

    name: str
    ids: list[str]
    load_images: ImageLoader | None = None

    @property
    def n(self) -> int:
        return len(self.ids)


@dataclass
class Target:
    """One brain measurement for one group: RDMs shaped ``(subjects, repeats, n, n)``."""

    name: str
    group: str
    rdms: np.ndarray
    kind: str = "1-pearson"
    source: str = ""

    @property
    def n_subjects(self) -> int:
        return int(self.rdms.shape[0])


@dataclass
class Dataset:
    """Stimuli, targets and the protocol for splitting them.

    ``train_groups`` are split by image into train/validation (and test, when ``test_splits`` is
    empty: held-out images). ``test_splits`` maps a split name to the groups scored whole as test.
    """

    name: str
    groups: dict[str, StimulusGroup]
    targets: list[Target]
    train_groups: list[str]
    test_splits: dict[str, list[str]] = field(default_factory=dict)
    citation: str = ""
    license: str = ""
    description: str = ""
    target_normalization: str = "none"
    conventions: tuple[str, ...] = ("computed",)
    checksums: dict[str, str] = field(default_factory=dict)
    """Digests the dataset computed itself (generated arrays, selected blocks of large files)."""
    files: dict[str, list[Path]] = field(default_factory=dict)
    """Every input file the dataset reads, by label (a folder label ends in ``/``; list order = RDM row
    order). rsabench hashes their content into the cell config (:mod:`rsabench.digests`)."""
    version: str = "1"
    notes: list[str] = field(default_factory=list)
    """Things the user should know once (absent files, dropped groups); shown by the CLI, not errors."""
    named_splits: dict[str, list[str]] = field(default_factory=dict)
    """Extra split names for ``rsabench score --split`` (``train-92`` -> the 92 group), beside ``test_splits``."""
    submission_keys: dict[str, str] = field(default_factory=dict)
    """The variable of a submission file holding each target's model RDM (default ``<target>_RDMs``)."""

    def submission_key(self, target: str) -> str:
        """The submission variable for ``target`` (``EVC_RDMs`` for Algonauts EVC; default ``<target>_RDMs``)."""
        return self.submission_keys.get(target, f"{target}_RDMs")

    def target_names(self) -> list[str]:
        return sorted({t.name for t in self.targets}, key=[t.name for t in self.targets].index)

    def target(self, name: str, group: str) -> Target | None:
        for t in self.targets:
            if t.name == name and t.group == group:
                return t
        return None

    def validate(self) -> None:
        """Check every invariant; raise DataError naming the target and what is wrong."""
        if not self.targets:
            raise DataError(f"dataset {self.name!r}: no targets")
        clash = sorted(set(self.checksums) & set(self.files))
        if clash:  # both end up in the cell's data_checksums: one would silently replace the other
            raise PluginError(
                f"dataset {self.name!r}: {clash[0]!r} is both a checksums key and a files label; rename one"
            )
        for name in self.train_groups + [g for gs in self.test_splits.values() for g in gs]:
            if name not in self.groups:
                raise DataError(f"dataset {self.name!r}: split refers to unknown group {name!r}")
        for t in self.targets:
            where = t.source or f"dataset {self.name!r}, target {t.name!r}, group {t.group!r}"
            if t.group not in self.groups:
                raise DataError(f"{where}: unknown group {t.group!r}")
            validate_rdms(t.rdms, where, n=self.groups[t.group].n)


def validate_rdms(rdms: np.ndarray, where: str, n: int | None = None) -> None:
    """Check a ``(subjects, repeats, n, n)`` stack: square, size n, finite, symmetric, zero diagonal.

    The checks are :func:`rsabench.matio.check_rdms`'s, one subject at a time (bounded memory).
    """
    from .matio import check_rdms

    if rdms.ndim != 4 or rdms.shape[-1] != rdms.shape[-2]:
        raise DataError(f"{where}: expected RDMs shaped (subjects, repeats, n, n), got {rdms.shape}")
    if n is not None and rdms.shape[-1] != n:
        raise DataError(f"{where}: RDMs are {rdms.shape[-1]}x{rdms.shape[-1]} but there are {n} images")
    for subject in rdms:
        check_rdms(subject, where, ndim=3, zero_diagonal=True)


def data_dir(option: str | os.PathLike | None = None) -> Path:
    """The data directory: ``--data-dir``, else ``RSABENCH_DATA``, else the user cache dir."""
    if option:
        return Path(option).expanduser()
    if os.environ.get("RSABENCH_DATA"):
        return Path(os.environ["RSABENCH_DATA"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("rsabench")) / "data"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def group_image_ids(paths: Sequence[Path]) -> list[str]:
    """Image ids are file stems in sorted file-name order (row i of every RDM is image i)."""
    return [p.stem for p in sorted(paths, key=lambda p: p.name)]


# -- the data interface of a dataset plugin --------------------------------------------------------
class DataSource(ABC):
    """How ``rsabench data info|verify|import|fetch NAME`` handle one dataset's files.

    Register it with the dataset's factory: ``register(name, with_data(factory, source), summary=...)``.
    Every method receives the resolved data directory (``--data-dir``, else ``RSABENCH_DATA``, else the user
    cache dir). Required: :meth:`describe` and :meth:`verify`. Optional (absent: the CLI says there is none):

    - ``import_release(src: Path, data_dir: Path, *, checksums: bool = True) -> dict`` places a downloaded
      release (folder or archive) in the data directory and returns at least ``{"destination": str,
      "copied": [relative paths]}``; on any error nothing changes (:func:`rsabench.datastore.import_tree`).
    - ``fetch(data_dir: Path) -> Path`` downloads the data (or finds it) and returns where it is.
    """

    @abstractmethod
    def describe(self, data_dir: Path) -> dict[str, Any]:
        """What ``rsabench data info`` prints: ``looks_in`` (where it looks), the files it expects, ``present``
        (whether they are found), licence, citation, how to get them. Reads little; never raises for bad files."""

    @abstractmethod
    def verify(self, data_dir: Path, *, checksums: bool = True) -> list[str]:
        """Problems with the files, one line each naming the file (empty: all good); changes nothing.
        ``checksums=False``: check invariants only, not recorded digests."""


def dataset_summary(ds: Dataset) -> dict[str, Any]:
    """A loaded dataset described for ``rsabench data info``: targets, groups, splits, licence, citation."""
    return {
        "present": True,
        "description": ds.description,
        "targets": ds.target_names(),
        "groups": {
            g: {
                "images": s.n,
                "has_images": s.load_images is not None,
                "subjects": max((t.n_subjects for t in ds.targets if t.group == g), default=0),
            }
            for g, s in ds.groups.items()
        },
        "splits": {"train": ds.train_groups, **ds.test_splits},
        "conventions": list(ds.conventions),
        "license": ds.license,
        "citation": ds.citation,
        "checksums": dict(ds.checksums),
        "notes": list(ds.notes),
    }


class LoadedDataSource(DataSource):
    """The data source of a dataset that registers none: it is loaded (with default options) and checked."""

    def __init__(self, load: Callable[..., Dataset], looks_in: str | None = None) -> None:
        self.load = load
        self.looks_in = looks_in

    def describe(self, data_dir: Path) -> dict[str, Any]:
        try:
            ds = self.load(data_dir)
        except DataError as exc:
            return {"present": False, "error": str(exc)}
        return {**({"looks_in": self.looks_in} if self.looks_in else {}), **dataset_summary(ds)}

    def verify(self, data_dir: Path, *, checksums: bool = True) -> list[str]:
        try:
            self.load(data_dir).validate()
        except DataError as exc:
            return [str(exc)]
        return []


class DatasetFactory:
    """A dataset factory carrying its data source (made by :func:`with_data`); calls go to ``factory``."""

    def __init__(self, factory: Callable[..., Dataset], data: DataSource | str) -> None:
        if not callable(factory):
            raise TypeError(f"with_data: the factory must be callable, got {type(factory).__name__}")
        if not isinstance(data, (DataSource, str)):
            raise TypeError(f"with_data: data must be a DataSource or 'module:attr', got {type(data).__name__}")
        functools.update_wrapper(self, factory)  # name, doc and signature stay the factory's
        self.factory = factory
        self.data = data

    def __call__(self, *args: Any, **kwargs: Any) -> Dataset:
        return self.factory(*args, **kwargs)

    def target(self) -> Callable[..., Dataset]:
        """The implementation behind the factory (for option introspection)."""
        inner = getattr(self.factory, "target", None)
        return inner() if callable(inner) else self.factory

    def data_source(self) -> DataSource:
        """The data source (a ``"module:attr"`` path is imported now)."""
        if isinstance(self.data, str):
            module, _, attr = self.data.partition(":")
            self.data = getattr(importlib.import_module(module), attr)
        for method in ("describe", "verify"):
            if not callable(getattr(self.data, method, None)):
                raise TypeError(f"its data source {type(self.data).__name__} has no {method}() method")
        return self.data


def with_data(factory: Callable[..., Dataset], data: DataSource | str) -> DatasetFactory:
    """``factory`` with the :class:`DataSource` behind ``rsabench data ...``: an instance, or ``"module:attr"``
    naming one (imported only when a data command needs it, so registration stays cheap)."""
    return DatasetFactory(factory, data)


def data_source(factory: Callable[..., Any]) -> DataSource | None:
    """The data source registered with a dataset factory (None: it registered none)."""
    resolve = getattr(factory, "data_source", None)
    return resolve() if callable(resolve) else None
