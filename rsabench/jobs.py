"""A cell as a job: what an executor ships to a worker, what the worker writes, what the driver learns.

A :class:`CellJob` is plain data (JSON-serialisable): the cell's config, where its record goes and how it
runs. :func:`run_job` runs one in the calling process — the driver (``local``), a worker process
(``local --jobs N``), a Slurm array task or a Ray task — and writes only that cell's files: its record
(atomically, under the cell's lock) or, when the cell raises, a failure record and a traceback file beside
where the record would go. It returns an :class:`Outcome`; the driver never rewrites a record.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import CellFailure, PluginError, UsageError
from .workspace import Reporter

FAILURE_SCHEMA = "rsabench.failure/1"
QUIET_STAGES = "RSABENCH_QUIET_STAGES"  # "1": a worker reports notes, not each stage (local workers share a terminal)
CLUSTER_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")


@dataclass(frozen=True)
class CellJob:
    """One cell to run: its resolved config, its record path, and how it runs (never part of its hash)."""

    config: dict[str, Any]
    cell: str  # the config's hash
    path: str  # where the record goes
    runtime: dict[str, Any]  # rsabench.cell.Runtime.to_dict()
    data_dir: str | None = None
    cache_dir: str | None = None
    no_cache: bool = False
    force: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "CellJob":
        return cls(**doc)

    @property
    def label(self) -> str:
        from .cell import describe

        return describe(self.config)


@dataclass
class Outcome:
    """What became of a job: ``done`` (its record was written, or found written by another process) or
    ``failed`` (its failure record was written; ``error`` is one line: the exception's type and message)."""

    cell: str
    status: str
    path: str
    seconds: float
    error: str | None = None
    out_of_memory: bool = False
    host: str = field(default_factory=socket.gethostname)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def failure_path(record: str | Path) -> Path:
    """``<record>.failed.json``: the failure record of the cell whose record would be ``record``."""
    record = Path(record)
    return record.with_name(record.stem + ".failed.json")


def traceback_path(record: str | Path) -> Path:
    record = Path(record)
    return record.with_name(record.stem + ".traceback.txt")


# -- the worker side -----------------------------------------------------------------------------
_WORKSPACES: dict[tuple, Any] = {}


def worker_workspace(job: CellJob, reporter: Any = None) -> Any:
    """The workspace of this process for the job's data and cache folders (built once per process)."""
    from .feature_cache import FeatureCache
    from .plugins import get_plugins
    from .workspace import Workspace

    key = (job.data_dir, None if job.no_cache else job.cache_dir, job.no_cache)
    if key not in _WORKSPACES:
        reporter = reporter or LineReporter()
        folder = Path(job.cache_dir) if job.cache_dir else None
        cache = None if job.no_cache else FeatureCache(folder, note=reporter.note)
        _WORKSPACES[key] = Workspace(get_plugins(), job.data_dir, reporter, cache)
    return _WORKSPACES[key]


def run_job(job: CellJob | dict[str, Any], workspace: Any = None) -> Outcome:
    """Run one cell here; write its record, or its failure record when it raises (Exception, not a signal).

    ``workspace``: the caller's (a driver running cells in-process shares its dataset and image caches),
    else this process's own.
    """
    from .cell import Runtime, execute

    job = CellJob.from_dict(job) if isinstance(job, dict) else job
    path = Path(job.path)
    start = time.perf_counter()
    try:
        execute(job.config, path, workspace or worker_workspace(job), Runtime.from_dict(job.runtime), force=job.force)
    except Exception as exc:  # noqa: BLE001 - every failure of one cell is recorded, and the sweep goes on
        return write_failure(job, exc, time.perf_counter() - start, traceback.format_exc())
    for stale in (failure_path(path), traceback_path(path)):  # an earlier failure of this cell is history now
        stale.unlink(missing_ok=True)
    return Outcome(job.cell, "done", str(path), time.perf_counter() - start)


class LostWorker(Exception):
    """The process running a cell died without a word (killed by a signal: the out-of-memory killer, a user)."""


def write_lost_worker_failure(job: CellJob, detail: str = "") -> Outcome:
    """The failure record of a job whose worker died, written by the driver."""
    message = "the worker process running this cell died (killed by a signal, e.g. the out-of-memory killer)"
    return write_failure(job, LostWorker(message + (f": {detail}" if detail else "")), 0.0, "")


def write_failure(job: CellJob, exc: BaseException, seconds: float, trace: str) -> Outcome:
    """Write the job's failure record and traceback file; the outcome that says so."""
    from .records import write_atomic

    path = Path(job.path)
    failure = failure_record(job, exc, seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    traceback_path(path).write_text(trace or f"{failure['error']['line']}\n", encoding="utf-8")
    write_atomic(failure_path(path), failure)
    error = failure["error"]
    return Outcome(job.cell, "failed", str(failure_path(path)), seconds, error["line"], error["out_of_memory"])


def failure_record(job: CellJob, exc: BaseException, seconds: float) -> dict[str, Any]:
    """The failure record of ``job``: what raised, where and when, with the config to rerun it."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    kinds = ((UsageError, "usage"), (CellFailure, "cell"), (PluginError, "plugin"), (LostWorker, "lost worker"))
    kind = next((name for cls, name in kinds if isinstance(exc, cls)), "error")
    return {
        "schema": FAILURE_SCHEMA,
        "cell": job.cell,
        "error": {
            "type": type(exc).__name__,
            "kind": kind,
            "message": message,
            "line": message if kind != "error" else f"{type(exc).__name__}: {message}",  # rsabench's own say enough
            "out_of_memory": "out of memory" in message.lower(),
        },
        "traceback_file": traceback_path(job.path).name,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "cluster": {k: os.environ[k] for k in CLUSTER_VARIABLES if k in os.environ},
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "runtime": job.runtime,
        "config": job.config,
    }


def read_failure(record: str | Path) -> dict[str, Any] | None:
    """The failure record of the cell whose record would be ``record``, or None."""
    import json

    path = failure_path(record)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) and doc.get("schema") == FAILURE_SCHEMA else None


def cell_status(record: str | Path, cell: str) -> str:
    """``done`` (a valid record of ``cell``), ``running`` (another process holds its lock), ``failed`` (a
    failure record and no record) or ``pending``. Reads only: no lock file is created."""
    from filelock import FileLock, Timeout

    from .records import read_record

    record = Path(record)
    doc = read_record(record)
    if doc is not None and doc.get("cell") == cell:
        return "done"
    lock_path = record.with_name(f".{record.name}.lock")
    if lock_path.exists():
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0)
            lock.release()
        except Timeout:
            return "running"
        except OSError:
            pass
    return "failed" if read_failure(record) is not None else "pending"


class LineReporter(Reporter):
    """Progress as plain lines on stderr (a worker's output goes to a log, or interleaves with others')."""

    def __init__(self, prefix: str = "", stages: bool | None = None) -> None:
        self.prefix = prefix
        self.stages = os.environ.get(QUIET_STAGES) != "1" if stages is None else stages

    def stage(self, description: str, total: int):
        import contextlib

        if self.stages:
            print(f"{self.prefix}{description} ({total})", file=sys.stderr, flush=True)
        return contextlib.nullcontext(lambda n: None)

    def note(self, message: str) -> None:
        print(f"{self.prefix}note: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m rsabench.jobs JOB.json``: run one job (a :meth:`CellJob.to_dict` document) in this process
    and print its :class:`Outcome` as JSON — the command a batch system runs for an executor that ships jobs as
    files. Exit 0 when the cell is done, 1 when it failed (its failure record is written), 2 for a bad job file."""
    import json

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m rsabench.jobs JOB.json", file=sys.stderr)
        return 2
    from .records import config_hash, parse_strict_json, validate_config

    try:
        job = CellJob.from_dict(parse_strict_json(Path(args[0]).read_text(encoding="utf-8")))
        validate_config(job.config)  # the shipped schema, as run-cell checks it
        if config_hash(job.config) != job.cell:
            raise ValueError("its cell is not the hash of its config")
    except (OSError, ValueError, TypeError, UnicodeDecodeError) as exc:
        print(f"error: {args[0]}: not a job file ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    outcome = run_job(job)
    print(json.dumps(outcome.to_dict()))
    return 0 if outcome.status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
