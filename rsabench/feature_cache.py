"""A content-addressed cache of per-layer model RDMs of networks as built (before any training).

The frozen evaluation of one (network, image set) is the same forward pass whatever objective, target or
cell seed asks for it; the cache computes it once. An entry's key is the sha256 of everything its RDM
depends on (:func:`entry_key`): the digest of the network's state as built (weights, architecture, seed),
the backbone and its preprocessing, the image set (the dataset's content checksums, group and image
indices), the layer, the dtype, how it ran (device kind, batch size, memory layout: they change the last
bits) and the versions of the code that computes it. An entry is one safetensors file (no pickle) holding
the RDM's upper triangle in float32 with the key and the sha256 of its bytes in its metadata, written
atomically. Before an entry is read it must be a regular file (not a folder, link, FIFO or device) no
larger than its key's image count allows (:func:`max_entry_bytes`); an entry that is not, does not parse,
has another key or other bytes is reported once per process, removed and recomputed — never used.

A cache folder that cannot be made because a file is in its way is a usage error; one that cannot be read or
written (permissions, a read-only file system, a full disk) is noted once and the run goes on without it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import UsageError

FORMAT = "rsabench.feature-rdm/1"
SUFFIX = ".safetensors"
HEADER_BYTES = 1 << 20
"""The most safetensors header (JSON: key, digest, format, a description of at most
:data:`DESCRIPTION_BYTES`) an entry may carry: ~100x what rsabench writes."""
DESCRIPTION_BYTES = 64 << 10
_READ_ONLY = {errno.EACCES, errno.EPERM, errno.EROFS}
_CACHE_UNWRITABLE = _READ_ONLY | {errno.ENOSPC, errno.EDQUOT}
_SHARD = re.compile(r"[0-9a-f]{2}")
_ENTRY = re.compile(r"([0-9a-f]{64})\.safetensors")
_TEMP = re.compile(r"\.([0-9a-f]{64})\.safetensors\..+\.tmp")


_REPORTED: set[tuple] = set()
"""Damaged entries (path and file identity) and unreadable caches already reported in this process."""


def max_entry_bytes(n: int) -> int:
    """The largest sound entry of an ``n``-image RDM: the 8-byte header length, the header, n(n−1)/2 float32."""
    return 8 + HEADER_BYTES + 4 * (n * (n - 1) // 2)


def _check_root(root: Path, given: bool) -> None:
    """UsageError when ``root`` can never be a folder: it, or its nearest existing ancestor, is not one."""
    for path in (root, *root.parents):
        try:
            st = path.stat()  # follows links: a link to a folder is a folder
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return  # cannot tell here (permissions): noted once when the cache is used
        if not stat.S_ISDIR(st.st_mode):
            where = "--cache-dir" if given else "feature cache (RSABENCH_CACHE or the user cache dir)"
            which = "it" if path == root else str(path)
            raise UsageError(
                f"{where} {root}: {which} is a file, not a folder (expected a folder for the feature cache)"
            )
        return


def _remove(path: Path, st: os.stat_result) -> None:
    """Remove what is at ``path`` (a folder and its contents; a link itself, never its target)."""
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


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
        _check_root(self.root, given=root is not None)
        self.note = note or (lambda message: None)
        self.hits = 0
        self.misses = 0
        self.unwritable = False
        self.unreadable = False
        self._entry_failed = False  # noted once: later entries that cannot be written are skipped quietly

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{SUFFIX}"

    def _note_once(self, what: tuple, message: str) -> None:
        if what not in _REPORTED:
            _REPORTED.add(what)
            self.note(message)

    def _unusable(self, exc: OSError) -> None:
        """The cache cannot be read (e.g. a folder without permission): off for this process, noted once."""
        self.unreadable = self.unwritable = True
        message = f"feature cache {self.root}: cannot read ({exc.strerror}); features are computed without it"
        self._note_once(("cache", str(self.root), exc.errno), message)

    def _damaged(self, path: Path, st: os.stat_result, problem: str) -> None:
        """Report a damaged entry once per process and remove it (a read-only cache is then not written)."""
        try:
            _remove(path, st)
            done = "removed and recomputed"
        except OSError as exc:
            if exc.errno in _READ_ONLY:
                self.unwritable = True
                done = f"recomputed; it cannot be removed ({exc.strerror}), so nothing is written to this cache"
            else:
                done = f"recomputed (it cannot be removed: {exc.strerror})"
        identity = (str(path), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)
        self._note_once(identity, f"feature cache entry {path}: {problem}; {done}")

    def _bytes(self, path: Path, limit: int) -> tuple[bytes | None, str | None, os.stat_result]:
        """An entry's bytes, or why not; never follows a link, blocks on a FIFO or reads past ``limit``."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        with os.fdopen(os.open(path, flags), "rb") as fh:
            st = os.fstat(fh.fileno())  # what was opened: a file swapped in since the lstat is checked again
            if not stat.S_ISREG(st.st_mode):
                return None, "not a regular file (a FIFO, socket or device)", st
            data = fh.read(limit + 1)
        if len(data) > limit:
            return None, f"more than the {limit} bytes an entry of this RDM can hold", st
        return data, None, st

    def _entry(self, path: Path, n: int) -> tuple[bytes | None, str | None, os.stat_result | None]:
        """``(bytes, None, stat)`` of an entry to parse, ``(None, problem, stat)`` of one that is not an
        entry file at all (checked before reading), ``(None, None, None)``: nothing to read (a miss)."""
        try:
            st = path.lstat()
        except (FileNotFoundError, NotADirectoryError):  # no entry (or a file where its shard folder goes)
            return None, None, None
        except OSError as exc:
            self._unusable(exc)
            return None, None, None
        limit = max_entry_bytes(n)
        if stat.S_ISDIR(st.st_mode):
            return None, "a folder, not an entry file", st
        if stat.S_ISLNK(st.st_mode):
            return None, "a symbolic link, not an entry file", st
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file (a FIFO, socket or device)", st
        if st.st_size > limit:
            return None, f"{st.st_size} bytes, more than the {limit} an entry of {n} images can hold", st
        try:
            return self._bytes(path, limit)
        except FileNotFoundError:  # removed since (another process): a miss
            return None, None, None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # replaced by a link since
                return None, "a symbolic link, not an entry file", st
            message = f"feature cache entry {path}: unreadable ({exc.strerror}); recomputed"
            self._note_once((str(path), st.st_ino, st.st_mtime_ns, exc.errno), message)
            return None, None, None

    def _read(self, key: str, n: int) -> np.ndarray | None:
        from safetensors import SafetensorError
        from safetensors.numpy import load

        path = self._path(key)
        data, problem, st = self._entry(path, n)
        if problem:
            self._damaged(path, st, problem)
        if data is None:
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
            self._damaged(path, st, f"{problem} (corrupt or truncated)")
            return None
        rdm = np.zeros((n, n), dtype=np.float32)
        i, j = np.triu_indices(n, 1)
        rdm[i, j] = tri
        rdm[j, i] = tri
        return rdm

    def get(self, keys: list[str], n: int) -> np.ndarray | None:
        """The RDMs ``(len(keys), n, n)`` if every key has a sound entry, else None (a miss)."""
        if self.unreadable:
            self.misses += 1
            return None
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
        text = json.dumps(description)
        if len(text) > DESCRIPTION_BYTES:  # informative only: never let it push an entry past max_entry_bytes
            text = json.dumps({"omitted": f"description longer than {DESCRIPTION_BYTES} bytes"})
        for key, rdm in zip(keys, rdms, strict=True):
            tri = np.ascontiguousarray(rdm[i, j], dtype=np.float32)
            meta = {
                "format": FORMAT,
                "key": key,
                "sha256": hashlib.sha256(tri.tobytes()).hexdigest(),
                "description": text,
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
        """Whatever is at an entry's place (``ab/ab<62 hex>.safetensors``: a file, or a folder, link or FIFO
        in its place), or the temp files of unfinished writes of them; nothing else under ``root`` is ever
        counted or removed."""
        if not self.root.is_dir():
            return []
        pattern = _TEMP if temporary else _ENTRY
        return sorted(
            p
            for folder in self.root.iterdir()
            if _SHARD.fullmatch(folder.name) and folder.is_dir() and not folder.is_symlink()
            for p in folder.iterdir()
            if (m := pattern.fullmatch(p.name)) and m.group(1).startswith(folder.name)
        )

    def entries(self) -> list[Path]:
        """The entry files (regular files only: a folder or link in an entry's place is not an entry)."""
        return [p for p in self._own_files(temporary=False) if stat.S_ISREG(p.lstat().st_mode)]

    def clear(self) -> tuple[int, int]:
        """Remove every entry, whatever is in an entry's place, and leftover temp files of entries; returns
        (files, bytes) removed (a folder counts as one, its size as 0)."""
        removed, size = 0, 0
        for path in [*self._own_files(temporary=False), *self._own_files(temporary=True)]:
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            size += st.st_size if stat.S_ISREG(st.st_mode) else 0
            _remove(path, st)
            removed += 1
        for folder in self.root.iterdir() if self.root.is_dir() else []:
            if _SHARD.fullmatch(folder.name) and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        return removed, size
