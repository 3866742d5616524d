"""Content digests of the input files a cell reads, cached by file identity so hashing stays cheap.

A dataset lists the files it reads (``Dataset.files``: label -> paths); :func:`content_checksums` turns
them into sha256 digests that enter the cell config, so changing, replacing or swapping any input file
(images included) changes the cell hash. A digest is reused while the file's size, mtime, ctime and inode
are unchanged (a rename or a copy over the file changes ctime or inode); the cache is a JSON file in the
user cache dir (``RSABENCH_CACHE`` overrides), and where it cannot be written, digests are just recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable

from .dataset import sha256_file

CACHE_FORMAT = "rsabench.file-digests/1"


def cache_dir() -> Path:
    """``RSABENCH_CACHE``, else the user cache dir of rsabench."""
    if os.environ.get("RSABENCH_CACHE"):
        return Path(os.environ["RSABENCH_CACHE"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("rsabench"))


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


class DigestCache:
    """sha256 per file, remembered by absolute path and file identity."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else cache_dir() / "file-digests.json"
        self.entries: dict[str, list] = {}
        self.changed = False
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(doc, dict) and doc.get("format") == CACHE_FORMAT and isinstance(doc.get("files"), dict):
                self.entries = doc["files"]
        except (OSError, ValueError):
            pass

    def digest(self, path: Path) -> str:
        path = Path(path).resolve()
        st = path.stat()
        key, ident = str(path), _identity(st)
        hit = self.entries.get(key)
        if isinstance(hit, list) and len(hit) == 2 and hit[0] == ident and isinstance(hit[1], str):
            return hit[1]
        digest = sha256_file(path)
        if _identity(path.stat()) == ident:  # not modified while it was read
            self.entries[key] = [ident, digest]
            self.changed = True
        return digest

    def save(self) -> None:
        """Write the cache atomically; a cache that cannot be written is not an error."""
        if not self.changed:
            return
        from .records import atomic_open

        try:
            with atomic_open(self.path) as fh:
                json.dump({"format": CACHE_FORMAT, "files": self.entries}, fh)
            self.changed = False
        except OSError:
            pass


def content_checksums(
    files: dict[str, list[Path]], cache: DigestCache | None = None, advance: Callable[[int], None] | None = None
) -> dict[str, str]:
    """``{label: sha256}``: a one-file label gets that file's sha256; a list gets the sha256 of its
    ``name<TAB>sha256`` lines in the given order (the order is the RDM row order, so it matters)."""
    cache = cache or DigestCache()
    out: dict[str, str] = {}
    try:
        for label, paths in files.items():
            paths = list(paths)
            digests = []
            for p in paths:
                digests.append(cache.digest(p))
                if advance:
                    advance(1)
            if len(paths) == 1 and not label.endswith("/"):
                out[label] = digests[0]
            else:
                out[label] = _list_digest((Path(p).name for p in paths), digests)
    finally:
        cache.save()
    return out


def _list_digest(names: Iterable[str], digests: list[str]) -> str:
    h = hashlib.sha256()
    for name, digest in zip(names, digests, strict=True):
        h.update(f"{name}\t{digest}\n".encode())
    return h.hexdigest()
