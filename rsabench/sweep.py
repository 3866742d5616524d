"""A sweep: the planned cells of one command, run by an executor as jobs, with a manifest and a summary.

The manifest (``<runs-dir>/sweeps/<id>.json``, schema ``rsabench.sweep/1``) lists the sweep's cells, the
resolved options and the executor; ``rsabench status`` reads it to tell done, failed, running and pending
cells apart. The id hashes the sorted cell hashes, so rerunning the same command rewrites the same file.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import UsageError
from .jobs import CellJob, Outcome, cell_status, read_failure
from .records import read_record, write_atomic

SWEEP_SCHEMA = "rsabench.sweep/1"
STATUSES = ("done", "failed", "running", "pending")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``i/n`` (1 <= i <= n) → (i, n); None → None."""
    if text is None:
        return None
    i, sep, n = str(text).partition("/")
    try:
        shard = (int(i), int(n))
    except ValueError:
        shard = (0, 0)
    if not sep or not 1 <= shard[0] <= shard[1]:
        raise UsageError(f"--shard {text}: expected i/n with 1 <= i <= n, e.g. 2/4")
    return shard


def select_shard(cells: list, shard: tuple[int, int] | None) -> list:
    """The cells of shard ``i/n``: every n-th cell in the order of their hashes, from the i-th (the same cells
    whatever order the options were given in; the n shards partition the sweep)."""
    if shard is None:
        return cells
    i, n = shard
    ordered = sorted(cells, key=lambda c: c.cell)
    chosen = {c.cell for k, c in enumerate(ordered) if k % n == i - 1}
    return [c for c in cells if c.cell in chosen]


def jobs_of(session: Any, cells: Iterable[Any], force: bool = False) -> list[CellJob]:
    """The jobs of planned cells (those without a record, unless ``force``)."""
    o = session.options
    runtime = session.runtime.to_dict()
    return [
        CellJob(
            config=c.config,
            cell=c.cell,
            path=str(Path(c.path).resolve()),
            runtime=runtime,
            data_dir=str(session.data_dir),
            cache_dir=o.cache_dir,
            no_cache=o.no_cache,
            force=force,
        )
        for c in cells
        if force or not c.cached
    ]


# -- the manifest --------------------------------------------------------------------------------
def sweep_id(cells: Iterable[Any]) -> str:
    return hashlib.sha256("\n".join(sorted(c.cell for c in cells)).encode()).hexdigest()[:16]


def write_manifest(runs_dir: Path, cells: list, resolved: dict[str, Any], executor: dict[str, Any]) -> Path:
    """Write the sweep's manifest beside its records; returns its path."""
    runs_dir = Path(runs_dir)
    path = runs_dir / "sweeps" / f"{sweep_id(cells)}.json"
    doc = {
        "schema": SWEEP_SCHEMA,
        "id": sweep_id(cells),
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv[1:],
        "options": _json_safe(resolved),
        "executor": _json_safe(executor),
        "cells": [
            {
                "cell": c.cell,
                "record": str(Path(c.path).resolve().relative_to(runs_dir.resolve())),
                **{k: c.config[k] for k in ("dataset", "target", "backbone", "objective", "seed")},
            }
            for c in cells
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, doc)
    return path


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def read_manifests(runs_dir: Path) -> list[dict[str, Any]]:
    """Every sweep manifest under ``runs_dir``, oldest first."""
    docs = []
    for path in sorted((Path(runs_dir) / "sweeps").glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(doc, dict) and doc.get("schema") == SWEEP_SCHEMA and isinstance(doc.get("cells"), list):
            docs.append(doc)
    return sorted(docs, key=lambda d: str(d.get("written", "")))


def sweep_status(runs_dir: Path) -> list[tuple[dict[str, Any], str]]:
    """(cell entry, status) for every cell of every sweep under ``runs_dir`` (each cell once)."""
    seen: dict[str, tuple[dict[str, Any], str]] = {}
    for doc in read_manifests(runs_dir):
        for entry in doc["cells"]:
            if isinstance(entry, dict) and entry.get("cell") not in seen:
                record = Path(runs_dir) / str(entry.get("record", ""))
                seen[entry["cell"]] = (entry, cell_status(record, entry["cell"]))
    return list(seen.values())


# -- running -------------------------------------------------------------------------------------
@dataclass
class SweepSummary:
    """What a sweep's jobs came to."""

    total: int
    done: list[Outcome] = field(default_factory=list)
    failed: list[tuple[CellJob, Outcome]] = field(default_factory=list)
    stopped: bool = False  # --fail-fast stopped it

    @property
    def not_run(self) -> int:
        return self.total - len(self.done) - len(self.failed)


def run_sweep(
    jobs: list[CellJob],
    executor: Any,
    print_line: Callable[[str], None],
    fail_fast: bool = False,
    workspace: Any = None,
) -> SweepSummary:
    """Hand ``jobs`` to ``executor``; one line per job as it ends; stop after a failure with ``fail_fast``."""
    summary = SweepSummary(len(jobs))

    def report(job: CellJob, outcome: Outcome) -> bool:
        k = len(summary.done) + len(summary.failed) + 1
        if outcome.status == "done":
            summary.done.append(outcome)
            print_line(
                f"[{k}/{len(jobs)}] [green]✓[/] {job.label}: {_selection(outcome.path)} ({outcome.seconds:.1f} s)"
            )
            return True
        summary.failed.append((job, outcome))
        print_line(f"[{k}/{len(jobs)}] [red]✗[/] {job.label}: {outcome.error}")
        if fail_fast:
            summary.stopped = True
        return not fail_fast

    executor.run(jobs, report, workspace=workspace)
    return summary


def _selection(record_path: str) -> str:
    doc = read_record(Path(record_path))
    if doc is None:
        return "record written"
    sel = doc.get("selection", {})
    return f"layer {sel.get('layer')}, epoch {sel.get('epoch')}"


def failures_under(runs_dir: Path, cells: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The failure records under ``runs_dir`` of cells that have no record (only ``cells`` if given)."""
    wanted = set(cells) if cells is not None else None
    out = []
    for path in sorted(Path(runs_dir).rglob("*.failed.json")):
        record = path.with_name(path.name[: -len(".failed.json")] + ".json")
        doc = read_failure(record)
        if doc is None or (wanted is not None and doc.get("cell") not in wanted):
            continue
        if cell_status(record, str(doc.get("cell"))) == "failed":
            out.append({**doc, "failure_record": str(path)})
    return out
