"""Dataset files on disk: ``rsabench data info|verify|import|fetch NAME``.

- :func:`info` — what a dataset needs, where rsabench looks, what is there.
- :func:`verify` — problems found: sha256 against the manifest shipped in the package
  (``rsabench/data/algonauts2019-sha256.txt``) and invariants (square, symmetric, zero diagonal, finite,
  one image per RDM row, readable images, equal subject counts).
- :func:`import_release` — copy a release (folder or .zip) into ``<data_dir>/algonauts2019/``: staged in a
  temporary folder next to it, verified, then swapped in by rename; on any error nothing changes.
- :func:`fetch` — Algonauts 2019 has no stable public URL with checksums: a UsageError says where to get it.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import shutil
import tempfile
import zipfile
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from .dataset import data_dir as default_data_dir
from .dataset import sha256_file
from .errors import DataError, UsageError

ALGONAUTS = ("algonauts-fmri", "algonauts-meg")
MANIFEST = "algonauts2019-sha256.txt"
RELEASE_PARTS = ("Training_Data", "Test_Data")
EMBEDDED = ("kriegeskorte2008",)


def _canonical(name: str) -> str:
    from .plugins import get_plugins

    return get_plugins().datasets.canonical(name)


def read_manifest(manifest: str = MANIFEST) -> dict[str, str]:
    """``{relative path: sha256}`` from a manifest in ``rsabench/data``."""
    text = resources.files("rsabench.data").joinpath(manifest).read_text(encoding="utf-8")
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        digest, rel = line.split(None, 1)
        out[rel.strip().lstrip("*")] = digest
    return out


def write_manifest(root: str | os.PathLike, out: str | os.PathLike) -> int:
    """Record sha256 of every file under ``root``'s release folders (maintainers); returns the count."""
    root = Path(root)
    files = sorted(
        p for part in RELEASE_PARTS if (root / part).is_dir() for p in (root / part).rglob("*") if p.is_file()
    )
    lines = [f"{sha256_file(p)}  {p.relative_to(root).as_posix()}" for p in files]
    Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


# -- info ------------------------------------------------------------------------------------------
def _dataset_module(name: str) -> Any:
    """The module behind a registered dataset factory (``lazy("pkg.mod:load")`` or a plain function)."""
    from .plugins import get_plugins

    factory = get_plugins().datasets.get(name)
    module = getattr(factory, "__module__", None)
    try:
        return importlib.import_module(module) if module else None
    except ImportError:
        return None


def _call_with_data_dir(fn: Any, data_dir: str | os.PathLike | None) -> Any:
    return fn(data_dir) if inspect.signature(fn).parameters else fn()


def info(name: str, data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """A description of dataset ``name``: files needed, where rsabench looks, what is present, licence, citation.

    Algonauts 2019 is described here; another dataset module may provide ``describe([data_dir])`` (and
    ``missing_files(data_dir)``), else the dataset is loaded and summarised.
    """
    name = _canonical(name)
    if name in ALGONAUTS:
        from .builtin import algonauts

        return algonauts.describe(data_dir, name)
    from .plugins import get_plugins

    registry = get_plugins().datasets
    out: dict[str, Any] = {"name": name, "summary": registry.summary(name), "looks_in": str(default_data_dir(data_dir))}
    module = _dataset_module(name)
    if name not in EMBEDDED and module is not None and callable(getattr(module, "describe", None)):
        described = dict(_call_with_data_dir(module.describe, data_dir))
        if described.get("directory"):
            out["looks_in"] = str(default_data_dir(data_dir) / described["directory"])
        if callable(getattr(module, "missing_files", None)):
            missing = list(module.missing_files(data_dir))
            described.setdefault("missing", missing)
            described.setdefault("present", not missing)
        return {**out, **described}
    try:
        ds = registry.get(name)(default_data_dir(data_dir))
    except DataError as exc:
        return {**out, "present": False, "error": str(exc)}
    if name in EMBEDDED:
        out["looks_in"] = "embedded in the rsabench package"
    return {
        **out,
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


# -- verify ----------------------------------------------------------------------------------------
def _verify_algonauts(root: Path, modalities: list[str], manifest: dict[str, str] | None) -> list[str]:
    from .builtin import algonauts

    problems: list[str] = []
    if not root.is_dir():
        return [f"{root}: Algonauts 2019 data not found (see `rsabench data info {modalities[0]}`)"]
    stems = {algonauts.modality_for(m).stem for m in modalities}
    other_stems = {m.stem for m in algonauts.MODALITIES.values()} - stems
    for rel, digest in sorted((manifest or {}).items()):
        stem = PurePosixPath(rel).stem.removesuffix("_TS2")
        if stem in other_stems:
            continue
        path = root / rel
        if path.is_file():
            got = sha256_file(path)
            if got != digest:
                problems.append(f"{path}: sha256 mismatch (expected {digest[:16]}..., got {got[:16]}...)")
    for m in modalities:
        mod = algonauts.modality_for(m)
        found = 0
        for layout in algonauts.GROUPS.values():
            path = root / layout.target_file(mod.stem)
            if not path.is_file():
                continue
            found += 1
            try:
                rdms = algonauts.read_target_file(path, mod)
            except DataError as exc:
                problems.append(str(exc))
                continue
            n = next(iter(rdms.values())).shape[-1]
            if layout.image_dir and (root / layout.image_dir).is_dir():
                try:
                    algonauts.check_images(root / layout.image_dir, n, path)
                except DataError as exc:
                    problems.append(str(exc))
        if not found:
            problems.append(
                f"{root}: no {mod.stem}*.mat found for {mod.name} (expected e.g. "
                f"{algonauts.GROUPS['92'].target_file(mod.stem)})"
            )
    problems.extend(_decode_images(root))
    return list(dict.fromkeys(problems))


def _decode_images(root: Path) -> list[str]:
    """Fully decode every image of the release (catches truncated files a header check misses)."""
    from PIL import Image

    from .builtin import algonauts

    problems = []
    for layout in algonauts.GROUPS.values():
        if layout.image_dir and (root / layout.image_dir).is_dir():
            for p in algonauts.image_files(root / layout.image_dir):
                try:
                    with Image.open(p) as im:
                        im.load()
                except Exception as exc:
                    problems.append(f"{p}: unreadable image ({type(exc).__name__}: {exc})")
    return problems


def verify(name: str, data_dir: str | os.PathLike | None = None, *, checksums: bool = True) -> list[str]:
    """Problems with dataset ``name``'s files (empty list: all good). Absent optional parts are not problems.

    ``checksums=False`` checks invariants only (for a release that differs from the recorded one).
    """
    name = _canonical(name)
    if name in ALGONAUTS:
        from .builtin import algonauts

        return _verify_algonauts(algonauts.release_root(data_dir), [name], read_manifest() if checksums else None)
    module = _dataset_module(name)
    if module is not None and callable(getattr(module, "verify", None)):
        return list(_call_with_data_dir(module.verify, data_dir))
    if module is not None and callable(getattr(module, "missing_files", None)):
        missing = list(module.missing_files(data_dir))
        if missing:
            described = (
                _call_with_data_dir(module.describe, data_dir) if callable(getattr(module, "describe", None)) else {}
            )
            base = default_data_dir(data_dir) / described.get("directory", "")
            return [f"{base / rel}: missing" for rel in missing]
    from .plugins import get_plugins

    try:
        ds = get_plugins().datasets.get(name)(default_data_dir(data_dir))
        ds.validate()
    except DataError as exc:
        return [str(exc)]
    return []


# -- import ----------------------------------------------------------------------------------------
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


def find_release_parts(folder: Path, max_depth: int = 3) -> dict[str, Path]:
    """The ``Training_Data`` / ``Test_Data`` folders inside ``folder`` (itself or up to 3 levels down)."""
    found: dict[str, list[Path]] = {}
    if folder.name in RELEASE_PARTS:
        return {folder.name: folder}
    stack = [(folder, 0)]
    while stack:
        d, depth = stack.pop()
        for child in sorted(d.iterdir()):
            if not child.is_dir() or child.name == "__MACOSX" or child.name.startswith("."):
                continue
            if child.name in RELEASE_PARTS:
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


def import_release(
    name: str, src: str | os.PathLike, data_dir: str | os.PathLike | None = None, *, checksums: bool = True
) -> dict[str, Any]:
    """Import an Algonauts 2019 release (a folder or .zip holding ``Training_Data/`` and/or ``Test_Data/``).

    Existing files under ``<data_dir>/algonauts2019`` are kept (a release shipped in parts can be imported
    part by part); files from ``src`` replace same-named ones. The merged tree is verified (checksums,
    invariants; ``name``'s modality must have at least one target file) before it replaces the old one.
    ``checksums=False`` skips the comparison with the recorded sha256 manifest (invariants still apply).
    Returns ``{"destination", "copied", "replaced"}``.
    """
    name = _canonical(name)
    if name not in ALGONAUTS:
        what = "is embedded in the package; nothing to import" if name in EMBEDDED else "has no importer here"
        raise UsageError(f"dataset {name!r} {what} (`rsabench data import` supports {', '.join(ALGONAUTS)})")
    from .builtin import algonauts

    src = Path(src).expanduser()
    if not src.exists():
        raise DataError(f"{src}: not found (expected the Algonauts 2019 release: a folder or .zip)")
    final = algonauts.release_root(data_dir)
    created = _missing_ancestors(final.parent)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--data-dir {final.parent}: cannot create ({exc.strerror or type(exc).__name__})") from None
    try:
        with _import_lock(final):
            _remove_stale_imports(final)
            return _import_locked(name, src, final, checksums)
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


def _import_locked(name: str, src: Path, final: Path, checksums: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.import-", dir=final.parent))
    try:
        if src.is_file():
            if not zipfile.is_zipfile(src):
                raise DataError(f"{src}: not a .zip archive or folder (expected the Algonauts 2019 release)")
            unpacked = work / "unpacked"
            unpacked.mkdir()
            _extract_zip(src, unpacked)
            if not any(unpacked.iterdir()):
                raise DataError(f"{src}: the .zip archive is empty (expected the Algonauts 2019 release)")
            src_root = unpacked
        else:
            src_root = src
        parts = find_release_parts(src_root)
        if not parts:
            raise DataError(
                f"{src}: no Training_Data/ or Test_Data/ folder found (expected the official release layout)"
            )
        staging = work / final.name
        existing = set(_copy_tree(final, staging)) if final.is_dir() else set()
        staging.mkdir(parents=True, exist_ok=True)
        copied = []
        for part, path in sorted(parts.items()):
            copied += [f"{part}/{rel}" for rel in _copy_tree(path, staging / part)]
        problems = _verify_algonauts(staging, [name], read_manifest() if checksums else None)
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            shown = "; ".join(p.replace(str(staging), str(final)) for p in problems[:3])
            raise DataError(f"{src}: import refused, nothing changed: {shown}{more}")
        backup = work / "previous"
        if final.exists():
            os.rename(final, backup)
        try:
            os.rename(staging, final)
        except OSError:
            if backup.exists():
                os.rename(backup, final)
            raise
        return {"destination": str(final), "copied": sorted(copied), "replaced": sorted(existing & set(copied))}
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- fetch -----------------------------------------------------------------------------------------
def fetch(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Make dataset ``name`` available; returns where it is. Algonauts 2019 cannot be downloaded automatically."""
    name = _canonical(name)
    if name in EMBEDDED:
        from .builtin import kriegeskorte2008

        return kriegeskorte2008.data_file().parent
    if name in ALGONAUTS:
        from .builtin import algonauts

        root = algonauts.release_root(data_dir)
        stem = algonauts.modality_for(name).stem
        if any((root / g.target_file(stem)).is_file() for g in algonauts.GROUPS.values()):
            return root
        raise UsageError(
            f"{name}: no stable public URL with checksums is known for Algonauts 2019, so rsabench cannot fetch it; "
            f"download the release from {algonauts.SOURCE}, then run `rsabench data import {name} PATH` "
            f"(a folder or .zip; files go to {root})"
        )
    raise UsageError(f"dataset {name!r}: no fetcher here; see `rsabench data info {name}`")
