"""Result records: one schema-versioned JSON document per cell, written atomically; config hashing; manifest."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

SCHEMA = "rsabench.cell/2"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the full resolved config."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def _safe_part(value: Any) -> str:
    """A file-name part: runs of anything but ``[A-Za-z0-9._-]`` become ``-``; never ``.``/``..``/hidden."""
    part = re.sub(r"[^A-Za-z0-9._-]+", "-", str(value)) or "-"
    return f"_{part}" if part.startswith(".") else part


def record_path(runs_dir: Path, config: dict[str, Any], cell: str) -> Path:
    """``<runs-dir>/<dataset>/<target>__<backbone>__<objective>__s<seed>__<hash12>.json`` (always inside runs-dir)."""
    name = (
        "__".join(_safe_part(config[k]) for k in ("target", "backbone", "objective"))
        + f"__s{config['seed']}__{cell[:12]}.json"
    )
    return Path(runs_dir) / _safe_part(config["dataset"]) / name


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success fsync and rename it over ``path`` (and fsync the
    directory), on any error remove it: readers see the old file or the complete new one, never half.
    The file gets the permissions a plain ``open`` would give (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
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


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) replaced by None and numpy scalars made plain."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)) and getattr(obj, "ndim", None) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_atomic(path: Path, document: dict[str, Any]) -> None:
    """Write a JSON document atomically (see :func:`atomic_open`), strict JSON: ``null``, never NaN."""
    text = json.dumps(strict_json(document), indent=1, sort_keys=False, allow_nan=False)
    with atomic_open(path) as fh:
        fh.write(text + "\n")


# -- reading and validating -----------------------------------------------------------------------
OTHER_SCHEMAS = ("rsabench.failure/", "rsabench.sweep/", "rsabench.slurm-submission/")
"""Other rsabench documents that may sit in a runs dir: not cell records, skipped without a word."""
SCHEMA_FILE = "schemas/cell-2.schema.json"
"""The JSON Schema of :data:`SCHEMA` records, shipped in the package."""


class InvalidRecord(ValueError):
    """A JSON file under a runs dir that is not a usable cell record; the message says why."""


@functools.lru_cache(maxsize=None)
def _validator(definition: str | None) -> Any:
    """A JSON Schema validator of a whole record, or (``definition``) of one of the schema's ``$defs``."""
    from importlib.resources import files

    schema = json.loads(files("rsabench").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))
    if definition is not None:
        schema = {"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}
    return _strict_validator()(schema)


def _strict_validator() -> Any:
    """Draft 2020-12 where an integer is a JSON integer: ``1.0`` is a number, not an integer (JSON Schema counts
    it as both; a float seed or epoch count would fail later, deep in numpy or torch)."""
    import jsonschema

    def is_integer(checker: Any, instance: Any) -> bool:
        return isinstance(instance, int) and not isinstance(instance, bool)

    base = jsonschema.Draft202012Validator
    return jsonschema.validators.extend(base, type_checker=base.TYPE_CHECKER.redefine("integer", is_integer))


def schema_problem(doc: Any, definition: str | None = None, root: str = "record") -> str | None:
    """The first way ``doc`` breaks the record schema (``config`` etc. for a ``$defs`` part), said in one
    line naming the key (``config.split lacks 'seed'``); None when it conforms."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator(definition).iter_errors(doc))
    if error is None:
        return None
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".") or root
    if error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        return f"{where} lacks {missing!r}"
    if error.validator == "type":
        return f"{where} has the wrong type ({type(error.instance).__name__}, expected {error.validator_value})"
    return f"{where}: {error.message}"


def validate_record(doc: Any) -> dict[str, Any]:
    """``doc`` if it is a :data:`SCHEMA` record (:data:`SCHEMA_FILE`) whose ``cell`` is the hash of its
    config, else InvalidRecord."""
    if not isinstance(doc, dict) or not isinstance(doc.get("schema"), str):
        raise InvalidRecord("not an rsabench record (no schema)")
    if doc["schema"] != SCHEMA:
        raise InvalidRecord(f"schema {doc['schema']!r}, expected {SCHEMA!r} (written by another rsabench version?)")
    problem = schema_problem(doc)
    if problem:
        raise InvalidRecord(problem)
    if config_hash(doc["config"]) != doc["cell"]:
        raise InvalidRecord("its cell hash does not match its config (edited or damaged)")
    return doc


def validate_config(doc: Any) -> dict[str, Any]:
    """``doc`` if it is a complete resolved cell config (everything :func:`rsabench.cell.run_cell` reads);
    else InvalidRecord naming the first missing or mistyped key."""
    problem = schema_problem(doc, "config", root="config")
    if problem:
        raise InvalidRecord(problem if problem.startswith("config") else f"config.{problem}")
    return doc


def parse_strict_json(text: str) -> Any:
    """Strict JSON: no NaN / Infinity tokens, no number that overflows to infinity, no key given twice in
    an object, no nesting deeper than Python can parse; ValueError naming the problem otherwise."""

    def refuse(token: str) -> Any:
        raise ValueError(f"non-standard JSON token {token}")

    def finite(token: str) -> float:
        value = float(token)
        if not math.isfinite(value):
            raise ValueError(f"number {token[:20]} overflows a float")
        return value

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            twice = next(k for k in out if sum(1 for key, _ in pairs if key == k) > 1)
            raise ValueError(f"key {twice!r} given twice in one object")
        return out

    try:
        return json.loads(text, parse_constant=refuse, parse_float=finite, object_pairs_hook=unique)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def load_record(path: Path) -> dict[str, Any]:
    """The validated record in ``path``; InvalidRecord (naming what is wrong) otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRecord(f"unreadable ({type(exc).__name__}: {exc})") from None
    try:
        doc = parse_strict_json(text)
    except ValueError:
        raise InvalidRecord("not valid JSON (truncated?)") from None
    return validate_record(doc)


def read_record(path: Path, warn: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The record in ``path``, or None when there is none; an invalid file is reported through ``warn``."""
    if not Path(path).exists():
        return None
    try:
        return load_record(path)
    except InvalidRecord as exc:
        if warn is not None:
            warn(f"{path}: {exc}")
        return None


def _is_other_document(path: Path) -> bool:
    try:
        schema = json.loads(path.read_text(encoding="utf-8")).get("schema", "")
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        return False
    return isinstance(schema, str) and schema.startswith(OTHER_SCHEMAS)


def iter_records(runs_dir: Path, warn: Callable[[str], None] | None = None) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every valid record under ``runs_dir``; other JSON files are reported through ``warn`` (named, with why)
    unless they are other rsabench documents. Hidden files and folders (temp files, locks) are skipped."""
    root = Path(runs_dir)
    for path in sorted(root.rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            yield path, load_record(path)
        except InvalidRecord as exc:
            if warn is not None and not _is_other_document(path):
                warn(f"{path}: skipped, {exc}")


# -- one process per cell -------------------------------------------------------------------------
@contextlib.contextmanager
def cell_lock(path: Path, note: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``.<record>.lock`` beside a record while its cell runs, so two runs sharing a runs dir never
    run (or checkpoint) the same cell at once; the second waits, then finds the record written.

    Once the record exists the lock file is removed (a process still waiting on it, or one that creates a
    new one, finds the record and runs nothing); after a failure it stays, empty and hidden.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(f".{path.name}.lock")
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if note is not None:
            note(f"another rsabench process is running this cell ({path.name}); waiting for it")
        lock.acquire()
    try:
        yield
        if path.exists():
            lock_path.unlink(missing_ok=True)
    finally:
        lock.release()


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
        "device_name": torch.cuda.get_device_name(0)
        if device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "plugins": dict(sorted(plugin_versions.items())),
        "git_commit": git_commit(),
    }
    info.update(extra or {})
    return info
