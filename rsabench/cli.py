"""The ``rsabench`` command line (Click + rich). Heavy modules are imported inside commands."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .errors import CellFailure, Interrupted, PluginError, SweepFailed, UsageError
from .settings import BY_NAME, SEED_MAX

DEFAULT_DATASET = "kriegeskorte2008"
DEFAULT_BACKBONE = "alexnet"
DEFAULT_OBJECTIVES = ("frozen", "dissim")
LIST_KINDS = ("datasets", "backbones", "objectives", "metrics", "executors", "conventions", "layers")


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, width=200)  # pipes and logs: don't squeeze tables
    return console


SEED = click.IntRange(0, SEED_MAX)


class PathArg(click.Path):
    """A path that is never the empty string (which would silently mean the current folder)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(path_type=Path, **kwargs)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("expected a path, got an empty string", param, ctx)
        return super().convert(value, param, ctx)


class FiniteFloat(click.ParamType):
    """A finite float (never NaN or inf) within optional bounds."""

    name = "float"

    def __init__(
        self, low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False
    ) -> None:
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        too_low = self.low is not None and (x <= self.low if self.low_open else x < self.low)
        too_high = self.high is not None and (x >= self.high if self.high_open else x > self.high)
        if too_low or too_high:
            lo = "" if self.low is None else f"{self.low:g} {'<' if self.low_open else '<='} "
            hi = "" if self.high is None else f" {'<' if self.high_open else '<='} {self.high:g}"
            self.fail(f"{value!r} is not in the range {lo}x{hi}", param, ctx)
        return x


def _key_value(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        out.append((key.strip(), value.strip()))
    return tuple(out)


class GroupedOption(click.Option):
    """An option that knows its section of ``--help`` (one of :data:`rsabench.settings.GROUPS`)."""

    def __init__(self, *args: Any, group: str = "other", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group


class GroupedCommand(click.Command):
    """A command whose ``--help`` lists its options by group (data, model, training, ...)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from .settings import GROUPS

        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record:
                sections.setdefault(getattr(param, "group", "other"), []).append(record)
        for group in (*GROUPS, "other"):
            if group in sections:
                with formatter.section(f"{group.capitalize()} options"):
                    formatter.write_dl(sections[group])


def _param_type(setting: Any) -> Any:
    s = setting
    types = {
        "int": lambda: click.IntRange(min=s.low, max=s.high),
        "float": lambda: FiniteFloat(s.low, s.high, s.low_open, s.high_open),
        "seed": lambda: SEED,
        "choice": lambda: click.Choice(list(s.choices)),
        "path": lambda: PathArg(),
        "dir": lambda: PathArg(file_okay=False),
    }
    return types[s.kind]() if s.kind in types else None


def _float_range(s: Any) -> str:
    """`` [0<x<=1]`` for a bounded float option (Click shows integer ranges itself)."""
    if s.kind != "float" or (s.low is None and s.high is None):
        return ""
    lo = "" if s.low is None else f"{s.low:g}{'<' if s.low_open else '<='}"
    hi = "" if s.high is None else f"{'<' if s.high_open else '<='}{s.high:g}"
    return f"  [{lo}x{hi}]"


def click_option(setting: Any) -> Callable:
    """The Click option of one :class:`rsabench.settings.Setting`."""
    s = setting
    decls = [f"{s.option}/--no-{s.option[2:]}"] if s.kind == "bool-pair" else [s.option]
    metavar = s.metavar or ("N" if s.kind in ("int", "seed") else None)
    kwargs: dict[str, Any] = {
        "help": s.help + _float_range(s),
        "group": s.group,
        "cls": GroupedOption,
        "metavar": metavar,
    }
    if s.kind == "flag":
        kwargs.update(is_flag=True)
    else:
        default = Path(s.default) if s.kind == "dir" and s.default is not None else s.default
        show = default is not None and default != () and default is not False
        kwargs.update(type=_param_type(s), default=None if s.multiple else default, show_default=show)
    if s.multiple:
        kwargs.update(multiple=True)
    if s.kind == "key-value":
        kwargs.update(callback=_key_value)
    return click.option(*decls, s.name, **{k: v for k, v in kwargs.items() if v is not None or k == "default"})


def run_options(func: Callable, plan: bool = False) -> Callable:
    """The options of ``run`` (or, with ``plan``, of ``plan``), from :data:`rsabench.settings.SETTINGS`."""
    from .settings import SETTINGS

    for setting in reversed(SETTINGS):
        if not (plan and setting.run_only):
            func = click_option(setting)(func)
    return func


def plan_options(func: Callable) -> Callable:
    """The options of ``plan``: those of ``run`` less the ones that only change how cells execute."""
    return run_options(func, plan=True)


def _session(kw: dict[str, Any]):
    from .runner import RunOptions, Session

    return Session(_plugins(), RunOptions.from_values(kw), reporter=RichReporter())


def _plan(session, kw: dict[str, Any]):
    return session.plan(
        list(kw["datasets"]) or [DEFAULT_DATASET],
        list(kw["backbones"]) or [DEFAULT_BACKBONE],
        list(kw["objectives"]) or list(DEFAULT_OBJECTIVES),
        list(kw["seeds"]) or [0],
        list(kw["targets"]),
        kw["runs_dir"],
    )


_WARNED: set[int] = set()


def _plugins():
    """The process's plugins; the first call reports every plugin that was skipped, and why."""
    from .plugins import get_plugins

    plugins = get_plugins()
    if id(plugins) not in _WARNED:  # once per plugin set (a process has one; tests build others)
        _WARNED.add(id(plugins))
        for name, errors in plugins.load_errors.items():
            for error in errors:
                _warn(f"plugin {name!r} skipped: {error}")
    return plugins


def _warn(message: str) -> None:
    _console(stderr=True).print(f"[yellow]warning:[/] {_escape(message)}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


class RichReporter:
    """Progress bars (stderr) for feature extraction and training."""

    def __init__(self) -> None:
        self.console = _console(stderr=True)
        self.quiet = not self.console.is_terminal and os.environ.get("RSABENCH_PROGRESS") != "1"

    @contextlib.contextmanager
    def stage(self, description: str, total: int):
        if self.quiet:
            yield lambda n: None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        ) as progress:
            task = progress.add_task(description, total=total)
            yield lambda n: progress.advance(task, n)

    def note(self, message: str) -> None:
        self.console.print(f"[yellow]note:[/] {message}")


# -- commands -----------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(package_name="rsabench")
def cli() -> None:
    """rsabench: fine-tune and score vision networks against brain RDMs, honestly.

    \b
    Quick start (offline, embedded data):
      rsabench run --weights random --image-size 64 --epochs 2
      rsabench leaderboard
    """


@cli.command(cls=GroupedCommand)
@run_options
@click.option(
    "--force", is_flag=True, cls=GroupedOption, group="output", help="re-run cells that already have a record"
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "markdown", "csv", "json"]),
    default="table",
    show_default=True,
    cls=GroupedOption,
    group="output",
    help="format of the summary printed at the end",
)
def run(force: bool, fmt: str, **kw: Any) -> None:
    """Fine-tune and score every combination of the given datasets, backbones, objectives and seeds."""
    from .leaderboard import collect_rows
    from .sweep import jobs_of, run_sweep, write_manifest

    sweep = _plan_sweep(kw)
    executor = sweep.executor(jobs=kw["jobs"], detach=kw["detach"])
    jobs = []
    for session, cells in sweep.parts:
        session.force = force
        todo = [c for c in cells if force or not c.cached]
        session.preflight(todo, sweep.runs_dir)
        jobs += jobs_of(session, todo, force)
    console = _console(stderr=True)
    write_manifest(sweep.runs_dir, sweep.cells, sweep.resolved, sweep.executor_doc(kw["jobs"]))
    at_once = f" ({kw['jobs']} at once)" if kw["jobs"] > 1 else ""
    console.print(
        f"{len(sweep.cells)} cell(s), {len(sweep.cells) - len(jobs)} cached, {len(jobs)} to run on "
        f"{sweep.executor_name}{at_once} → {sweep.runs_dir}"
    )
    summary = run_sweep(jobs, executor, console.print, kw["fail_fast"], workspace=sweep.parts[0][0])
    if kw["detach"]:
        console.print(f"submitted {len(jobs)} cell(s); `rsabench status --runs-dir {sweep.runs_dir}` shows progress")
        return
    cells = [c.cell for c in sweep.cells]
    _print_rows(collect_rows(sweep.runs_dir, cells=cells, warn=_warn), fmt)
    _print_failures(sweep.runs_dir, cells, fmt)
    if summary.failed:
        raise SweepFailed(_failure_summary(summary, len(jobs), sweep.runs_dir))


def _failure_summary(summary: Any, n_jobs: int, runs_dir: Path) -> str:
    """The last line of a sweep with failures: the cause itself when one cell failed."""
    _, first = summary.failed[0]
    not_run = f", {summary.not_run} not run (--fail-fast)" if summary.stopped else ""
    if len(summary.failed) == 1 and n_jobs == 1:
        return f"{first.error} (failure record {first.path}; rerun the same command to retry)"
    return (
        f"{len(summary.failed)} of {n_jobs} cells failed{not_run}, the first: {first.error}; failure records beside "
        f"the records (`rsabench status --runs-dir {runs_dir}`); rerun the same command to retry them"
    )


class Sweep:
    """The cells of one command, across the combinations a sweep file asks for, and its executor."""

    def __init__(self, kw: dict[str, Any]) -> None:
        from .sweep import parse_shard, select_shard
        from .sweepfile import apply

        ctx = click.get_current_context()
        combos, table = ([kw], {"name": None, "options": {}})
        if kw.get("config") is not None:
            combos, table = apply(ctx, kw, Path(kw["config"]))
        given = ctx.get_parameter_source("executor") == click.core.ParameterSource.COMMANDLINE
        self.executor_name = kw["executor"] if given or not table["name"] else str(table["name"])
        self.executor_options = {**table["options"], **dict(kw["executor_options"])}
        shard = parse_shard(combos[0]["shard"])
        self.runs_dir = Path(combos[0]["runs_dir"])
        self.parts: list[tuple[Any, list]] = []
        seen: set[str] = set()
        for values in combos:
            session = _session(values)
            cells = [c for c in _plan(session, values) if c.cell not in seen]
            seen.update(c.cell for c in cells)
            self.parts.append((session, cells))
        chosen = {c.cell for c in select_shard([c for _, cells in self.parts for c in cells], shard)}
        self.parts = [(session, [c for c in cells if c.cell in chosen]) for session, cells in self.parts]
        self.cells = [c for _, cells in self.parts for c in cells]
        self.resolved = {"combinations": [{k: v for k, v in values.items() if k != "config"} for values in combos]}
        self.factory = self.parts[0][0].plugins.executors.get(self.executor_name)

    def executor(self, jobs: int = 1, detach: bool = False) -> Any:
        try:
            return self.factory(jobs=jobs, log_dir=self.runs_dir / "logs", detach=detach, **self.executor_options)
        except ModuleNotFoundError as exc:
            raise UsageError(
                f"--executor {self.executor_name}: needs the Python package {exc.name!r} "
                f"(pip install 'rsabench[{self.executor_name}]')"
            ) from None

    def executor_doc(self, jobs: int) -> dict[str, Any]:
        return {"name": self.executor_name, "options": self.executor_options, "jobs": jobs}


def _plan_sweep(kw: dict[str, Any]) -> Sweep:
    return Sweep(kw)


def _print_failures(runs_dir: Path, cells: list[str] | None = None, fmt: str = "table") -> None:
    """A table of the failed cells (of ``cells``, else all under ``runs_dir``), if any; one line on stderr
    beside a machine-readable format (its output stays the rows alone)."""
    from rich.table import Table

    from .cell import describe
    from .sweep import failures_under

    failures = failures_under(runs_dir, cells)
    if not failures:
        return
    if fmt != "table":
        _warn(f"{len(failures)} failed cell(s) have no row; `rsabench status --runs-dir {runs_dir}` lists them")
        return
    table = Table(title=f"failed cells ({len(failures)})", title_style="bold red")
    for col in ("cell", "error", "failure record"):
        table.add_column(col, overflow="fold")
    for doc in failures:
        config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
        label = describe(config) if config else str(doc.get("cell", ""))[:12]
        table.add_row(label, str(doc.get("error", {}).get("line", "")), doc["failure_record"])
    _console().print(table)


MAX_CONFIG_BYTES = 64 << 20  # a record of a cell with many layers and curves is well under 1 MiB


@cli.command("run-cell", hidden=True)
@click.argument("config_file", metavar="CONFIG.json", type=PathArg(dir_okay=False))
@click_option(BY_NAME["runs_dir"])
@click_option(BY_NAME["data_dir"])
@click.option(
    "--device",
    default=None,
    metavar="auto|cpu|cuda[:N]",
    help="where the cell runs (default: the record's runtime, else auto)",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="feature-extraction batch size (default: the record's runtime, else 32)",
)
@click_option(BY_NAME["cache_dir"])
@click_option(BY_NAME["no_cache"])
@click.option("--force", is_flag=True, help="run even if the runs dir already has this cell's record")
def run_cell_cmd(
    config_file: Path,
    runs_dir: Path,
    data_dir: Path | None,
    device: str | None,
    batch_size: int | None,
    cache_dir: Path | None,
    no_cache: bool,
    force: bool,
) -> None:
    """Run one cell from its resolved config (a record, or the config alone) and write its record.

    The unit an executor ships to a worker: everything the cell's numbers depend on is in the config.
    How it runs (device, extraction batch size) comes from the options, else from the record's manifest.
    """
    from .cell import Runtime, describe, execute
    from .feature_cache import FeatureCache
    from .records import InvalidRecord, config_hash, parse_strict_json, record_path, validate_config, validate_record
    from .runner import check_writable
    from .workspace import Workspace

    try:
        if not config_file.is_file() or config_file.stat().st_size > MAX_CONFIG_BYTES:
            what = "not a regular file" if not config_file.is_file() else f"larger than {_size(MAX_CONFIG_BYTES)}"
            raise UsageError(f"{config_file}: not a cell config or record ({what})")
        doc = parse_strict_json(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{config_file}: cannot read ({exc.strerror if isinstance(exc, OSError) else 'not UTF-8 text'})"
        ) from None
    except ValueError as exc:
        raise UsageError(f"{config_file}: not valid JSON ({exc})") from None
    is_record = isinstance(doc, dict) and "schema" in doc
    config = doc.get("config") if is_record else doc
    try:
        validate_record(doc) if is_record else validate_config(config)  # a record: its schema and hash too
    except InvalidRecord as exc:
        raise UsageError(f"{config_file}: not a cell config or record: {exc}") from None
    recorded = doc.get("manifest", {}).get("runtime", {}) if is_record and isinstance(doc.get("manifest"), dict) else {}
    runtime = Runtime.from_dict(recorded if isinstance(recorded, dict) else {})
    runtime = Runtime(
        device=device or runtime.device,
        batch_size=batch_size or runtime.batch_size,
        channels_last=runtime.channels_last,
    )
    runtime.resolved_device()  # a malformed or absent device is refused before anything is written
    path = record_path(runs_dir, config, config_hash(config))
    check_writable(path.parent, "--runs-dir")
    reporter = RichReporter()
    cache = None if no_cache else FeatureCache(cache_dir, note=reporter.note)
    workspace = Workspace(_plugins(), data_dir, reporter, cache)
    record = execute(config, path, workspace, runtime, force=force)
    sel = record["selection"]
    _console(stderr=True).print(f"[green]✓[/] {describe(config)}: layer {sel['layer']}, epoch {sel['epoch']} → {path}")


@cli.group()
def cache() -> None:
    """The feature cache: per-layer RDMs of networks as built, shared by the cells that need them."""


CACHE_DIR_OPTION = click_option(BY_NAME["cache_dir"])


@cache.command("info")
@CACHE_DIR_OPTION
def cache_info(cache_dir: Path | None) -> None:
    """Where the feature cache is, how many entries it holds and their size."""
    from .feature_cache import FeatureCache

    store = FeatureCache(cache_dir)
    if not store.root.is_dir():
        click.echo(f"feature cache: {store.root} (does not exist yet: it is made when a run first writes to it)")
        return
    entries = store.entries()
    size = sum(p.stat().st_size for p in entries)
    click.echo(f"feature cache: {store.root}\nentries: {len(entries)} layer RDM(s), {_size(size)}")


@cache.command("clear")
@CACHE_DIR_OPTION
def cache_clear(cache_dir: Path | None) -> None:
    """Remove every entry of the feature cache (they are recomputed when next needed)."""
    from .feature_cache import FeatureCache

    store = FeatureCache(cache_dir)
    if not store.root.is_dir():
        click.echo(f"nothing to clear: {store.root} does not exist")
        return
    try:
        removed, size = store.clear()
    except OSError as exc:
        raise UsageError(f"--cache-dir {store.root}: cannot clear ({exc.strerror})") from None
    click.echo(f"removed {removed} file(s), {_size(size)} from {store.root}")


def _size(n_bytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"


@cli.command(cls=GroupedCommand)
@plan_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    cls=GroupedOption,
    group="output",
    help="a table with estimates, or the planned cells as JSON (cell hash, names, record path, cached)",
)
@click.option(
    "--no-probe",
    is_flag=True,
    cls=GroupedOption,
    group="execution",
    help="skip the timed probe of each network (no time estimates; memory and passes only)",
)
def plan(fmt: str, no_probe: bool, **kw: Any) -> None:
    """Show the cells a run would execute: cached or not, passes, memory, estimated time, what is missing."""
    from .estimate import PROBES, estimate_cells, render_plan

    sweep = _plan_sweep(kw)
    sweep.executor()  # an unknown executor or executor option is an error here too, as in run
    cells = sweep.cells
    if fmt == "json":
        keys = ("dataset", "target", "backbone", "objective", "seed")
        doc = [
            {"cell": c.cell, **{k: c.config[k] for k in keys}, "record": str(c.path), "cached": c.cached} for c in cells
        ]
        click.echo(json.dumps(doc, indent=1))
        return
    estimates = [
        e for session, part in sweep.parts for e in estimate_cells(session, part, probe=not no_probe, probes=PROBES)
    ]
    render_plan(_console(), cells, estimates)


@cli.command()
@click_option(BY_NAME["runs_dir"])
@click.option("--all", "show_all", is_flag=True, help="list every cell, done ones included")
def status(runs_dir: Path, show_all: bool) -> None:
    """Done, failed, running and pending cells of the sweeps recorded under a runs dir."""
    from rich.table import Table

    from .jobs import read_failure
    from .sweep import STATUSES, read_manifests, sweep_status

    if not runs_dir.is_dir():
        raise UsageError(f"--runs-dir {runs_dir}: no such directory (run `rsabench run` first)")
    if not read_manifests(runs_dir):
        raise UsageError(
            f"--runs-dir {runs_dir}: no sweep manifests in {runs_dir / 'sweeps'} (run `rsabench run` first)"
        )
    rows = sweep_status(runs_dir)
    counts = {state: sum(1 for _, s in rows if s == state) for state in STATUSES}
    shown = [(entry, state) for entry, state in rows if show_all or state != "done"]
    if shown:
        table = Table(title=f"rsabench status: {runs_dir}")
        for col in ("status", "dataset", "target", "backbone", "objective", "seed", "cell", "detail"):
            table.add_column(col, overflow="fold")
        order = {state: k for k, state in enumerate(("failed", "running", "pending", "done"))}
        for entry, state in sorted(shown, key=lambda row: order[row[1]]):
            record = runs_dir / str(entry.get("record", ""))
            failure = read_failure(record) if state == "failed" else None
            detail = failure["error"]["line"] if failure else str(entry.get("record", "")) if state == "done" else ""
            style = {"failed": "red", "running": "yellow", "done": "green"}.get(state, "")
            cells = [str(entry.get(k, "")) for k in ("dataset", "target", "backbone", "objective", "seed")]
            table.add_row(f"[{style}]{state}[/]" if style else state, *cells, str(entry["cell"])[:12], detail)
        _console().print(table)
    summary = ", ".join(f"{counts[state]} {state}" for state in STATUSES)
    _console().print(f"{len(rows)} cell(s): {summary}")


@cli.command("list")
@click.argument("kind", required=False, type=click.Choice(LIST_KINDS))
@click.argument("pattern", required=False, default="*")
def list_cmd(kind: str | None, pattern: str) -> None:
    """List registered plugins (wildcards allowed: rsabench list backbones 'vgg*').

    \b
    rsabench list layers BACKBONE   lists the layers a backbone exposes.
    """
    from rich.table import Table

    plugins = _plugins()
    console = _console()
    if kind == "layers":
        _list_layers(plugins, pattern, console)
        return
    for k in [kind] if kind else [k for k in LIST_KINDS if k != "layers"]:
        registry = plugins[k[:-1]]
        table = Table(title=k, title_justify="left")
        table.add_column("name")
        table.add_column("summary")
        table.add_column("plugin")
        for row in _list_rows(registry, pattern):
            table.add_row(*row)
        console.print(table)


def _list_rows(registry, pattern: str) -> list[tuple[str, str, str]]:
    """(name, summary, plugin) rows: entries matching by name or alias, then namespace members.

    ``*`` shows each namespace as one row; ``prefix:PATTERN`` lists that namespace's members; any other
    pattern also searches every namespace (which imports the libraries behind them).
    """
    import fnmatch

    rows: dict[str, tuple[str, str, str]] = {}
    for name, entry in sorted(registry.entries.items()):
        if fnmatch.fnmatch(name, pattern) or any(fnmatch.fnmatch(a, pattern) for a in entry.aliases):
            rows[name] = (
                name + (f" ({', '.join(entry.aliases)})" if entry.aliases else ""),
                entry.summary,
                entry.plugin,
            )
    head, colon, rest = pattern.partition(":")
    for prefix, ns in sorted(registry.namespaces.items()):
        if pattern == "*":
            rows[f"{prefix}:"] = (f"{prefix}:<name>", ns.summary, ns.plugin)
        elif not colon or fnmatch.fnmatch(prefix, head):
            for name in ns.lister((rest or "*") if colon else pattern):
                rows.setdefault(f"{prefix}:{name}", (f"{prefix}:{name}", "", ns.plugin))
    return list(rows.values())


def _list_layers(plugins, backbone: str, console) -> None:
    if backbone == "*":
        raise UsageError("rsabench list layers BACKBONE: name a backbone (e.g. alexnet)")
    built = plugins.backbones.get(backbone)().build(weights="random", seed=0)
    default = set(built.default_layers)
    for name, module in built.model.named_modules():
        if name:
            mark = "*" if name in default else " "
            console.print(f"{mark} {name}  [dim]{type(module).__name__}[/]")
    console.print(
        f"[dim]* = default layer set ({len(built.default_layers)} layers: {', '.join(built.default_layers)})[/]"
    )


OUTPUT_FORMATS = {".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".json": "json"}


@cli.command()
@click.option(
    "--runs-dir",
    type=PathArg(),
    default=Path("runs"),
    show_default=True,
    help="directory of cell records",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "markdown", "csv", "json"]),
    default=None,
    help="output format (default: table on the terminal; with --output, from its suffix, else markdown)",
)
@click.option(
    "--output",
    type=PathArg(dir_okay=False),
    default=None,
    help="write to a file instead of stdout (written atomically)",
)
def leaderboard(runs_dir: Path, fmt: str | None, output: Path | None) -> None:
    """Render the leaderboard from a directory of cell records (invalid records are named and skipped)."""
    from .leaderboard import collect_rows, render
    from .runner import check_writable

    if not runs_dir.is_dir():
        raise UsageError(f"--runs-dir {runs_dir}: no such directory (run `rsabench run` first)")
    rows = collect_rows(runs_dir, warn=_warn)
    if not rows:
        raise UsageError(f"--runs-dir {runs_dir}: no rsabench records found")
    if output is None:
        _print_rows(rows, fmt or "table")
        _print_failures(runs_dir, None, fmt or "table")
        return
    if fmt in (None, "table"):
        fmt = OUTPUT_FORMATS.get(output.suffix.lower(), "markdown")
    text = render(rows, fmt)
    check_writable(output.parent, "--output")
    try:
        _write_text_atomic(output, text)
    except OSError as exc:
        raise UsageError(f"--output {output}: cannot write ({exc.strerror or type(exc).__name__})") from None
    _console(stderr=True).print(f"wrote {len(rows)} rows ({fmt}) to {output}")


def _print_rows(rows: list[dict[str, Any]], fmt: str) -> None:
    from .leaderboard import render, rich_table

    if fmt == "table":
        _console().print(rich_table(rows))
    else:
        click.echo(render(rows, fmt), nl=False)


def _write_text_atomic(path: Path, text: str) -> None:
    from .records import atomic_open

    with atomic_open(path) as fh:
        fh.write(text)


@cli.command()
@click.argument("submission", type=PathArg())
@click.option("--dataset", required=True, metavar="NAME", help="dataset the submission answers")
@click.option("--split", default=None, metavar="NAME", help="split or group scored (e.g. test, test2, train-92)")
@click.option(
    "--convention",
    "conventions",
    multiple=True,
    metavar="NAME",
    help="scoring convention (repeatable; default: the dataset's)",
)
@click_option(BY_NAME["metric"])
@click_option(BY_NAME["data_dir"])
@click_option(BY_NAME["bootstrap_seed"])
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="output format of the scores",
)
def score(
    submission: Path,
    dataset: str,
    split: str | None,
    conventions: tuple[str, ...],
    metric: str,
    data_dir: Path | None,
    bootstrap_seed: int,
    fmt: str,
) -> None:
    """Score precomputed RDMs (Algonauts submit_*.mat/.npy format) against a dataset's targets."""
    from .runner import RunOptions, Session
    from .submission import score_submission

    if not submission.is_file():
        raise UsageError(f"{submission}: submission file not found")
    plugins = _plugins()
    plugins.metrics.canonical(metric)
    session = Session(plugins, RunOptions(data_dir=str(data_dir) if data_dir else None), reporter=RichReporter())
    ds = session.dataset(dataset)
    rows = score_submission(submission, ds, split, conventions or None, metric=metric, bootstrap_seed=bootstrap_seed)
    if fmt == "json":
        import json

        click.echo(json.dumps(rows, indent=1))
        return
    columns = [
        "convention",
        "target",
        "raw",
        "rho",
        "normalized",
        "ceiling_lower",
        "ceiling_upper",
        "ci_low",
        "ci_high",
        "p_value",
    ]
    if fmt == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    from rich.table import Table

    table = Table(title=f"{ds.name}: {submission.name} ({split or 'default split'})")
    for col in columns:
        table.add_column(col, justify="left" if col in ("convention", "target") else "right")
    fmt_value = lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    for row in rows:
        table.add_row(*(fmt_value(row.get(c)) for c in columns))
    _console().print(table)
    _console().print(
        "raw: R² under algonauts2019 (mean over subjects of squared Spearman), mean correlation under computed; "
        "normalized: % of the upper ceiling"
    )


@cli.group()
def data() -> None:
    """Dataset files: info, verify, import, fetch."""
    _plugins()


@data.command("info")
@click.argument("name")
@click_option(BY_NAME["data_dir"])
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True, help="output format"
)
def data_info(name: str, data_dir: Path | None, fmt: str) -> None:
    """What a dataset needs, where rsabench looks, what is present, licence and citation."""
    from .datastore import info

    described = info(name, data_dir)
    if fmt == "json":
        import json

        click.echo(json.dumps(described, indent=1, default=str))
        return
    console = _console()
    for key, value in described.items():
        if isinstance(value, dict):
            console.print(f"[bold]{key}[/]:")
            for k, v in value.items():
                console.print(f"  {k}: {v}")
        elif isinstance(value, (list, tuple)):
            console.print(f"[bold]{key}[/]:")
            for v in value:
                console.print(f"  - {v}")
        else:
            console.print(f"[bold]{key}[/]: {value}")


@data.command("verify")
@click.argument("name")
@click_option(BY_NAME["data_dir"])
@click.option("--no-checksums", is_flag=True, help="check invariants only, not the recorded sha256 manifest")
def data_verify(name: str, data_dir: Path | None, no_checksums: bool) -> None:
    """Check files against the recorded checksums and the RDM invariants; exit 2 on problems (bad input files)."""
    from .datastore import verify

    problems = verify(name, data_dir, checksums=not no_checksums)
    if problems:
        for p in problems:
            click.echo(f"problem: {p}", err=True)
        click.echo(f"{name}: {len(problems)} problem(s)", err=True)
        sys.exit(2)
    click.echo(f"{name}: OK")


@data.command("import")
@click.argument("name")
@click.argument("source", type=PathArg())
@click_option(BY_NAME["data_dir"])
@click.option(
    "--no-checksums", is_flag=True, help="accept files that differ from the recorded release (invariants still apply)"
)
def data_import(name: str, source: Path, data_dir: Path | None, no_checksums: bool) -> None:
    """Verify an extracted release folder or its .zip, then place it in the data directory."""
    from .datastore import import_release

    result = import_release(name, source, data_dir, checksums=not no_checksums)
    click.echo(f"imported {len(result['copied'])} file(s) into {result['destination']}")


@data.command("fetch")
@click.argument("name")
@click_option(BY_NAME["data_dir"])
def data_fetch(name: str, data_dir: Path | None) -> None:
    """Download a dataset where a stable public URL exists; otherwise say where to get it."""
    from .datastore import fetch

    path = fetch(name, data_dir)
    click.echo(f"{name}: available at {path}")


# -- error handling -----------------------------------------------------------------------------
RECEIVED_SIGNALS: list[int] = []


def _on_signal(signum: int, _frame: Any) -> None:
    """SIGINT and SIGTERM: unwind (temp files removed, the running cell keeps its checkpoints), then exit."""
    RECEIVED_SIGNALS.append(signum)
    raise Interrupted(signum)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes → one line on stderr, exit 2; failures → one line, exit 1;
    SIGINT/SIGTERM → "interrupted", exit 130/143 (a cell in progress writes no record; rerun to resume)."""
    RECEIVED_SIGNALS.clear()
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            previous[signum] = signal.signal(signum, _on_signal)
    try:
        _main(argv)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _main(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="rsabench", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        where = f"{exc.ctx.command_path}: " if getattr(exc, "ctx", None) is not None else ""
        click.echo(f"error: {where}{_one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except UsageError as exc:
        click.echo(f"error: {_one_line(exc)}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, Interrupted, click.Abort) as exc:
        _interrupted(exc)
    except (CellFailure, PluginError, SweepFailed) as exc:
        click.echo(f"failed: {_one_line(exc)}", err=True)
        sys.exit(1)
    except Exception as exc:  # a bug or an environment failure, not a user mistake
        if RECEIVED_SIGNALS:  # a signal that surfaced wrapped in another exception (e.g. inside torch)
            _interrupted(Interrupted(RECEIVED_SIGNALS[-1]))
        if os.environ.get("RSABENCH_DEBUG"):
            raise
        where = (
            f"{exc.filename}: "
            if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in str(exc)
            else ""
        )
        click.echo(
            f"failed: {type(exc).__name__}: {where}{_one_line(exc)} (set RSABENCH_DEBUG=1 for a traceback)", err=True
        )
        sys.exit(1)


def _interrupted(exc: BaseException) -> None:
    signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    click.echo(
        f"interrupted ({signal.Signals(signum).name}); completed cells are kept, rerun the command to resume", err=True
    )
    sys.exit(128 + signum)


if __name__ == "__main__":
    main()
