"""Core data model: stimulus groups, targets and datasets, with invariant checks and the data directory."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import DataError

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
        for name in self.train_groups + [g for gs in self.test_splits.values() for g in gs]:
            if name not in self.groups:
                raise DataError(f"dataset {self.name!r}: split refers to unknown group {name!r}")
        for t in self.targets:
            where = t.source or f"dataset {self.name!r}, target {t.name!r}, group {t.group!r}"
            if t.group not in self.groups:
                raise DataError(f"{where}: unknown group {t.group!r}")
            validate_rdms(t.rdms, where, n=self.groups[t.group].n)


def validate_rdms(rdms: np.ndarray, where: str, n: int | None = None, atol: float = 1e-5) -> None:
    """Check a ``(subjects, repeats, n, n)`` stack: square, size n, finite, symmetric, zero diagonal."""
    if rdms.ndim != 4 or rdms.shape[-1] != rdms.shape[-2]:
        raise DataError(f"{where}: expected RDMs shaped (subjects, repeats, n, n), got {rdms.shape}")
    if n is not None and rdms.shape[-1] != n:
        raise DataError(f"{where}: RDMs are {rdms.shape[-1]}x{rdms.shape[-1]} but there are {n} images")
    if rdms.shape[-1] < 3:
        raise DataError(f"{where}: RDMs need at least 3 images, got {rdms.shape[-1]}")
    if not np.all(np.isfinite(rdms)):
        raise DataError(f"{where}: RDMs contain NaN or inf")
    scale = max(1.0, float(np.abs(rdms).max()))
    if not np.allclose(rdms, np.swapaxes(rdms, -1, -2), atol=atol * scale):
        raise DataError(f"{where}: RDMs are not symmetric")
    diag = np.diagonal(rdms, axis1=-2, axis2=-1)
    if not np.allclose(diag, 0.0, atol=atol * scale):
        raise DataError(f"{where}: RDMs have a non-zero diagonal")


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
