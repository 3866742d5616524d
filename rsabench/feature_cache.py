"""A content-addressed cache of per-layer model RDMs of networks as built (before any training).

The frozen evaluation of one (network, image set) is the same forward pass whatever objective, target or
cell seed asks for it; the cache computes it once. An entry's key is the sha256 of everything its RDM
depends on (:func:`entry_key`): the digest of the network's state as built (weights, architecture, seed),
the backbone and its preprocessing, the image set (the dataset's content checksums, group and image
indices), the layer, the dtype, how it ran (device kind, batch size, memory layout: they change the last
bits) and the versions of the code that computes it. An entry is one safetensors file (no pickle) holding
the RDM's upper triangle in float32 with the key and the sha256 of its bytes in its metadata, written
atomically; an entry that does not parse, has another key or other bytes is reported once, removed and
recomputed — never used.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

FORMAT = "rsabench.feature-rdm/1"
SUFFIX = ".safetensors"
_CACHE_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR}
_SHARD = re.compile(r"[0-9a-f]{2}")
_ENTRY = re.compile(r"([0-9a-f]{64})\.safetensors")
_TEMP = re.compile(r"\.([0-9a-f]{64})\.safetensors\..+\.tmp")


def default_dir() -> Path:
    """``<cache dir>/features`` (``RSABENCH_CACHE``, else the user cache dir)."""
    from .digests import cache_dir

    return cache_dir() / "features"


def state_digest(model: Any) -> str:
    """sha256 over a model's state dict: each tensor's name, dtype, shape and bytes, in name order."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


def entry_key(parts: dict[str, Any], layer: str) -> str:
    """The key of one layer's RDM: sha256 of the canonical JSON of ``parts`` plus the layer."""
    from .records import canonical_json

    return hashlib.sha256(canonical_json({**parts, "layer": layer}).encode()).hexdigest()


def code_versions() -> dict[str, str]:
    """Versions of the code behind a feature RDM: rsabench's feature code and the libraries it runs."""
    import importlib.metadata as md

    from .features import FEATURES_VERSION
    from .images import PREPROCESS

    versions = {"features": str(FEATURES_VERSION), "preprocess": PREPROCESS}
    for package in ("torch", "torchvision", "timm"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = "absent"
    return versions


class FeatureCache:
    """Per-layer RDM entries under ``root``; ``hits`` and ``misses`` count image-set lookups."""

    def __init__(self, root: Path | None = None, note: Callable[[str], None] | None = None) -> None:
        self.root = Path(root) if root is not None else default_dir()
        self.note = note or (lambda message: None)
        self.hits = 0
        self.misses = 0
        self.unwritable = False
        self._entry_failed = False  # noted once: later entries that cannot be written are skipped quietly

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{SUFFIX}"

    def _read(self, key: str, n: int) -> np.ndarray | None:
        from safetensors import SafetensorError
        from safetensors.numpy import load

        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.note(f"feature cache entry {path}: unreadable ({exc.strerror}); recomputed")
            return None
        try:
            header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")]) if len(data) >= 8 else None
            meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
            tri = load(data)["rdm"]
            problem = None
            if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("key") != key:
                problem = "another format or key"
            elif tri.dtype != np.float32 or tri.shape != (n * (n - 1) // 2,):
                problem = f"an RDM of the wrong shape {tri.shape}"
            elif hashlib.sha256(tri.tobytes()).hexdigest() != meta.get("sha256"):
                problem = "bytes that do not match their digest"
        except (SafetensorError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            problem = f"not a safetensors file ({(str(exc).splitlines() or [type(exc).__name__])[0][:80]})"
        if problem:
            try:
                path.unlink(missing_ok=True)
                done = "removed and recomputed"
            except OSError as exc:
                done = f"recomputed (it cannot be removed: {exc.strerror})"
            self.note(f"feature cache entry {path}: {problem} (corrupt or truncated); {done}")
            return None
        rdm = np.zeros((n, n), dtype=np.float32)
        i, j = np.triu_indices(n, 1)
        rdm[i, j] = tri
        rdm[j, i] = tri
        return rdm

    def get(self, keys: list[str], n: int) -> np.ndarray | None:
        """The RDMs ``(len(keys), n, n)`` if every key has a sound entry, else None (a miss)."""
        rdms = []
        for key in keys:
            rdm = self._read(key, n)
            if rdm is None:
                self.misses += 1
                return None
            rdms.append(rdm)
        self.hits += 1
        return np.stack(rdms)

    def put(self, keys: list[str], rdms: np.ndarray, description: dict[str, Any]) -> None:
        """Store each layer's RDM (an RDM exactly symmetric with a zero diagonal: only its upper triangle is kept)."""
        from safetensors.numpy import save

        from .records import atomic_open

        if self.unwritable:
            return
        i, j = np.triu_indices(rdms.shape[-1], 1)
        for key, rdm in zip(keys, rdms, strict=True):
            tri = np.ascontiguousarray(rdm[i, j], dtype=np.float32)
            meta = {
                "format": FORMAT,
                "key": key,
                "sha256": hashlib.sha256(tri.tobytes()).hexdigest(),
                "description": json.dumps(description),
            }
            try:
                with atomic_open(self._path(key), "wb") as fh:
                    fh.write(save({"rdm": tri}, metadata=meta))
            except OSError as exc:
                if exc.errno in _CACHE_UNWRITABLE:  # the whole cache: stop trying for this process
                    self.unwritable = True
                    self.note(
                        f"feature cache {self.root}: cannot write ({exc.strerror}); features are computed without it"
                    )
                    return
                if not self._entry_failed:  # one entry (e.g. a folder in its place, a race): skip it
                    self._entry_failed = True
                    self.note(f"feature cache entry {self._path(key)}: cannot write ({exc.strerror}); not cached")

    def _own_files(self, temporary: bool) -> list[Path]:
        """Entry files (``ab/ab<62 hex>.safetensors``), or the temp files of unfinished writes of them;
        nothing else under ``root`` is ever counted or removed."""
        if not self.root.is_dir():
            return []
        pattern = _TEMP if temporary else _ENTRY
        return sorted(
            p
            for folder in self.root.iterdir()
            if _SHARD.fullmatch(folder.name) and folder.is_dir() and not folder.is_symlink()
            for p in folder.iterdir()
            if (m := pattern.fullmatch(p.name)) and m.group(1).startswith(folder.name) and p.is_file()
        )

    def entries(self) -> list[Path]:
        return self._own_files(temporary=False)

    def clear(self) -> tuple[int, int]:
        """Remove every entry (and leftover temp files of entries); returns (files, bytes) removed."""
        removed, size = 0, 0
        for path in [*self.entries(), *self._own_files(temporary=True)]:
            size += path.stat().st_size
            path.unlink(missing_ok=True)
            removed += 1
        for folder in self.root.iterdir() if self.root.is_dir() else []:
            if _SHARD.fullmatch(folder.name) and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        return removed, size
