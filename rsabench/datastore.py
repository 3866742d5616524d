"""Dataset files on disk: ``rsabench data info|verify|import|fetch NAME``, for every registered dataset.

Each command calls the :class:`~rsabench.dataset.DataSource` the dataset registered with its factory
(:func:`rsabench.dataset.with_data`); a dataset that registered none is loaded and checked
(:class:`~rsabench.dataset.LoadedDataSource`). Nothing here knows a particular dataset.

- :func:`info` — what a dataset needs, where rsabench looks, what is there.
- :func:`verify` — problems found (empty: all good).
- :func:`import_release` — the data source's importer; :func:`import_tree` is the staged, verified, all or
  nothing copy that importers build on (staged next to the destination, verified, swapped in by rename).
- :func:`fetch` — the data source's fetcher, where it has one.

Helpers for data sources: :func:`read_manifest` / :func:`write_manifest` (sha256 manifests shipped in a
package), :func:`checksum_problems`, :func:`find_folders`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable

from .dataset import DataSource, LoadedDataSource, data_source, sha256_file
from .dataset import data_dir as default_data_dir
from .errors import DataError, PluginError, UsageError


def _source(name: str) -> tuple[str, DataSource]:
    """The canonical name of dataset ``name`` and its data source."""
    from .plugins import get_plugins

    registry = get_plugins().datasets
    name = registry.canonical(name)
    factory = registry.get(name)
    try:
        source = data_source(factory)
    except Exception as exc:  # a broken plugin is named, never a crash
        raise PluginError(
            f"dataset {name!r} (plugin {registry.plugin_of(name)!r}): its data source cannot be loaded "
            f"({type(exc).__name__}: {exc})"
        ) from None
    return name, source if source is not None else LoadedDataSource(factory)


def info(name: str, data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """A description of dataset ``name``: files needed, where rsabench looks, what is present, licence, citation."""
    from .plugins import get_plugins

    name, source = _source(name)
    root = default_data_dir(data_dir)
    out: dict[str, Any] = {"name": name, "summary": get_plugins().datasets.summary(name), "looks_in": str(root)}
    return {**out, **dict(source.describe(root))}


def verify(name: str, data_dir: str | os.PathLike | None = None, *, checksums: bool = True) -> list[str]:
    """Problems with dataset ``name``'s files (empty list: all good). Absent optional parts are not problems.

    ``checksums=False`` checks invariants only (for a release that differs from the recorded one).
    """
    name, source = _source(name)
    return [str(p) for p in source.verify(default_data_dir(data_dir), checksums=checksums)]


def import_release(
    name: str, src: str | os.PathLike, data_dir: str | os.PathLike | None = None, *, checksums: bool = True
) -> dict[str, Any]:
    """Import a downloaded release of dataset ``name`` into the data directory (its data source's importer).

    Returns at least ``{"destination", "copied"}``; on any error nothing changes.
    """
    name, source = _source(name)
    importer = getattr(source, "import_release", None)
    if not callable(importer):
        raise UsageError(f"dataset {name!r} has no importer here (see `rsabench data info {name}`)")
    return dict(importer(Path(src).expanduser(), default_data_dir(data_dir), checksums=checksums))


def fetch(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Make dataset ``name`` available (its data source's fetcher); returns where it is."""
    name, source = _source(name)
    fetcher = getattr(source, "fetch", None)
    if not callable(fetcher):
        raise UsageError(f"dataset {name!r}: no fetcher here; see `rsabench data info {name}`")
    return Path(fetcher(default_data_dir(data_dir)))


# -- helpers for data sources ----------------------------------------------------------------------
def read_manifest(manifest: str, package: str = "rsabench.data") -> dict[str, str]:
    """``{relative path: sha256}`` from a ``sha256sum``-style manifest shipped in ``package``."""
    text = resources.files(package).joinpath(manifest).read_text(encoding="utf-8")
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        digest, rel = line.split(None, 1)
        out[rel.strip().lstrip("*")] = digest
    return out


def write_manifest(root: str | os.PathLike, out: str | os.PathLike, parts: Iterable[str]) -> int:
    """Record sha256 of every file under ``root``'s folders ``parts`` (maintainers); returns the count."""
    root = Path(root)
    files = sorted(p for part in parts if (root / part).is_dir() for p in (root / part).rglob("*") if p.is_file())
    lines = [f"{sha256_file(p)}  {p.relative_to(root).as_posix()}" for p in files]
    Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def checksum_problems(
    root: Path, manifest: dict[str, str], skip: Callable[[str], bool] = lambda rel: False
) -> list[str]:
    """A line per file under ``root`` whose sha256 differs from ``manifest`` (absent files are not checked)."""
    problems = []
    for rel, digest in sorted(manifest.items()):
        path = root / rel
        if skip(rel) or not path.is_file():
            continue
        got = sha256_file(path)
        if got != digest:
            problems.append(f"{path}: sha256 mismatch (expected {digest[:16]}..., got {got[:16]}...)")
    return problems


def _extract_zip(src: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(src) as zf:
            for member in zf.infolist():
                parts = PurePosixPath(member.filename.replace("\\", "/")).parts
                if member.filename.startswith("/") or ".." in parts:
                    raise DataError(f"{src}: unsafe path in archive: {member.filename!r}")
                if not parts or parts[0] == "__MACOSX" or member.is_dir():
                    continue
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as fin, open(target, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{src}: cannot read the .zip archive; truncated or corrupt? ({exc})") from None


def find_folders(folder: Path, names: Iterable[str], max_depth: int = 3) -> dict[str, Path]:
    """The folders called one of ``names`` inside ``folder`` (itself or up to ``max_depth`` levels down);
    DataError if one name is found twice."""
    names = tuple(names)
    found: dict[str, list[Path]] = {}
    if folder.name in names:
        return {folder.name: folder}
    stack = [(folder, 0)]
    while stack:
        d, depth = stack.pop()
        for child in sorted(d.iterdir()):
            if not child.is_dir() or child.name == "__MACOSX" or child.name.startswith("."):
                continue
            if child.name in names:
                found.setdefault(child.name, []).append(child)
            elif depth < max_depth:
                stack.append((child, depth + 1))
    for part, paths in found.items():
        if len(paths) > 1:
            raise DataError(
                f"{folder}: several {part}/ folders found ({', '.join(map(str, paths))}); import one release at a time"
            )
    return {part: paths[0] for part, paths in found.items()}


def _copy_tree(src: Path, dest: Path) -> list[str]:
    """Copy files (contents only: no permissions, so read-only sources stay writable here)."""
    copied = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = [d for d in dirnames if d != "__MACOSX" and not d.startswith(".")]
        rel = Path(dirpath).relative_to(src)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for f in filenames:
            if f.startswith("."):
                continue
            target = dest / rel / f
            if target.exists():
                target.unlink()
            shutil.copyfile(Path(dirpath) / f, target)
            copied.append((rel / f).as_posix())
    return copied


# -- staged import ---------------------------------------------------------------------------------
def import_tree(
    src: Path,
    final: Path,
    *,
    what: str,
    locate: Callable[[Path], dict[str, Path]],
    check: Callable[[Path], list[str]],
) -> dict[str, Any]:
    """Copy a release (folder or .zip ``src``) into ``final``, all or nothing.

    ``locate(unpacked)`` returns ``{destination subfolder: source folder}`` (raising DataError when the
    release is not there); existing files of ``final`` are kept and same-named ones replaced; ``check(staged)``
    lists problems of the merged tree, and any problem refuses the import. ``what`` names the release in
    messages. Returns ``{"destination", "copied", "replaced"}``.
    """
    if not src.exists():
        raise DataError(f"{src}: not found (expected {what}: a folder or .zip)")
    created = _missing_ancestors(final.parent)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--data-dir {final.parent}: cannot create ({exc.strerror or type(exc).__name__})") from None
    try:
        with _import_lock(final):
            _remove_stale_imports(final)
            return _import_locked(src, final, what, locate, check)
    except BaseException:
        for d in created:  # a refused import leaves no folder it created
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _import_lock(final: Path) -> Any:
    """A lock per destination, kept in the user cache dir (so the data dir holds nothing but data)."""
    import hashlib

    from filelock import FileLock

    from .digests import cache_dir

    name = hashlib.sha256(str(final.resolve()).encode()).hexdigest()[:16] + ".import.lock"
    try:
        (cache_dir() / "locks").mkdir(parents=True, exist_ok=True)
        return FileLock(str(cache_dir() / "locks" / name))
    except OSError:
        return FileLock(str(final.parent / f".{final.name}.import.lock"))


def _missing_ancestors(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    out = []
    for p in [path, *path.parents]:
        if p.exists():
            break
        out.append(p)
    return out


def _remove_stale_imports(final: Path) -> None:
    """Work folders of earlier imports that were killed (the import lock is held: none is running)."""
    for stale in final.parent.glob(f".{final.name}.import-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def _unpack(src: Path, work: Path, what: str) -> Path:
    """The folder holding the release: ``src`` itself, or ``src`` (a .zip) extracted under ``work``."""
    if not src.is_file():
        return src
    if not zipfile.is_zipfile(src):
        raise DataError(f"{src}: not a .zip archive or folder (expected {what})")
    unpacked = work / "unpacked"
    unpacked.mkdir()
    _extract_zip(src, unpacked)
    if not any(unpacked.iterdir()):
        raise DataError(f"{src}: the .zip archive is empty (expected {what})")
    return unpacked


def _stage(parts: dict[str, Path], final: Path, staging: Path) -> tuple[set[str], list[str]]:
    """The existing tree, then the release's parts, copied into ``staging``: (existing files, copied files)."""
    existing = set(_copy_tree(final, staging)) if final.is_dir() else set()
    staging.mkdir(parents=True, exist_ok=True)
    copied = []
    for part, path in sorted(parts.items()):
        copied += [f"{part}/{rel}" for rel in _copy_tree(path, staging / part)]
    return existing, copied


def _swap_in(staging: Path, final: Path, backup: Path) -> None:
    """Replace ``final`` by ``staging`` (renames; the old tree is restored if the second rename fails)."""
    if final.exists():
        os.rename(final, backup)
    try:
        os.rename(staging, final)
    except OSError:
        if backup.exists():
            os.rename(backup, final)
        raise


def _import_locked(
    src: Path,
    final: Path,
    what: str,
    locate: Callable[[Path], dict[str, Path]],
    check: Callable[[Path], list[str]],
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.import-", dir=final.parent))
    try:
        parts = locate(_unpack(src, work, what))
        staging = work / final.name
        existing, copied = _stage(parts, final, staging)
        problems = check(staging)
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            shown = "; ".join(p.replace(str(staging), str(final)) for p in problems[:3])
            raise DataError(f"{src}: import refused, nothing changed: {shown}{more}")
        _swap_in(staging, final, work / "previous")
        return {"destination": str(final), "copied": sorted(copied), "replaced": sorted(existing & set(copied))}
    finally:
        shutil.rmtree(work, ignore_errors=True)
