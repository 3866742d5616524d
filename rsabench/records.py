"""Result records: one schema-versioned JSON document per cell, written atomically; config hashing; manifest."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

SCHEMA = "rsabench.cell/1"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the full resolved config."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def record_path(runs_dir: Path, config: dict[str, Any], cell: str) -> Path:
    """``<runs-dir>/<dataset>/<target>__<backbone>__<objective>__s<seed>__<hash12>.json``."""
    safe = lambda s: re.sub(r"[^A-Za-z0-9._-]+", "-", str(s))  # noqa: E731
    name = "__".join(safe(config[k]) for k in ("target", "backbone", "objective")) + f"__s{config['seed']}__{cell[:12]}.json"
    return Path(runs_dir) / safe(config["dataset"]) / name


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success fsync and rename it over ``path`` (and fsync the
    directory), on any error remove it: readers see the old file or the complete new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename durable too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_atomic(path: Path, document: dict[str, Any]) -> None:
    """Write a JSON document atomically (see :func:`atomic_open`)."""
    with atomic_open(path) as fh:
        json.dump(document, fh, indent=1, sort_keys=False, allow_nan=True)
        fh.write("\n")


def read_record(path: Path) -> dict[str, Any] | None:
    """A record, or None when the file is not a readable rsabench record."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("schema") == SCHEMA else None


def iter_records(runs_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(Path(runs_dir).rglob("*.json")):
        doc = read_record(path)
        if doc is not None:
            yield path, doc


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def manifest(device: str, plugin_versions: dict[str, str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Versions and environment of the run."""
    import numpy
    import scipy
    import torch

    from . import __version__

    info: dict[str, Any] = {
        "rsabench": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "plugins": dict(sorted(plugin_versions.items())),
        "git_commit": git_commit(),
    }
    info.update(extra or {})
    return info
