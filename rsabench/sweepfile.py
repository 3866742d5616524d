"""Sweep files: ``rsabench run --config sweep.toml``.

The keys are the command-line options' names without the dashes (``image-size`` or ``image_size``;
``dataset``, ``objective`` ... for the repeatable ones). A list for a repeatable option lists its values;
a list for any other option sweeps it: the sweep runs every combination. ``dataset-option`` and
``objective-option`` take a table (``{ subsample = 10 }``) or a list of ``"KEY=VALUE"``. An ``[executor]``
table names the executor (``name = "slurm"``) and its options. An option given on the command line
overrides the file's (an executor option given with ``--executor-option`` overrides the same key).
"""

from __future__ import annotations

import difflib
import itertools
import sys
from pathlib import Path
from typing import Any

import click

from .errors import UsageError
from .settings import SETTINGS

MAX_SWEEP_BYTES = 1 << 20
UNSWEPT = ("runs_dir", "data_dir", "cache_dir", "no_cache", "device", "executor", "channels_last", "keep_checkpoints")
"""Options that take one value in a sweep file (they say where and how cells run, not what they compute)."""


def _keys() -> dict[str, Any]:
    """Sweep-file key (dashes or underscores) → setting."""
    keys = {}
    for s in SETTINGS:
        if s.name == "config":
            continue
        flag = s.option[2:]
        keys[flag] = keys[flag.replace("-", "_")] = s
    return keys


def load(path: Path) -> dict[str, Any]:
    """The parsed TOML of ``path``; a usage error naming the file when it cannot be."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        if not path.is_file() or path.stat().st_size > MAX_SWEEP_BYTES:
            raise UsageError(f"--config {path}: not a sweep file (not a regular file of at most 1 MiB)")
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"--config {path}: cannot read ({why})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: not valid TOML ({exc})") from None


def apply(ctx: click.Context, values: dict[str, Any], path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Merge the sweep file into the command's ``values``: (one value dict per combination, executor table)."""
    doc = load(path)
    executor = doc.pop("executor", {})
    if not isinstance(executor, dict):
        raise UsageError(f'--config {path}: [executor] must be a table, e.g. [executor] name = "slurm"')
    keys, params = _keys(), {p.name: p for p in ctx.command.params}
    merged, axes = dict(values), {}
    for key, raw in doc.items():
        setting = keys.get(key)
        if setting is None or setting.name not in params:
            close = difflib.get_close_matches(key, list(keys), n=1)
            hint = f"; did you mean {close[0]!r}" if close else ""
            raise UsageError(f"--config {path}: unknown key {key!r}{hint}")
        param, swept = params[setting.name], isinstance(raw, list) and not setting.multiple
        if setting.multiple:
            value = _convert_many(ctx, param, setting, raw, path, key)
        elif swept:
            if setting.target == "sweep" or setting.name in UNSWEPT:
                raise UsageError(f"--config {path}: {key}: one value only (it says how the sweep runs, not what)")
            if not raw:
                raise UsageError(f"--config {path}: {key} = []: a swept option needs at least one value")
            value = [_convert(ctx, param, v, path, key) for v in raw]
        else:
            value = _convert(ctx, param, raw, path, key)
        if _given_on_command_line(ctx, setting.name):  # checked all the same: a bad file is refused
            continue
        if swept:
            axes[setting.name] = value
        else:
            merged[setting.name] = value
    names = list(axes)
    combos = [dict(merged, **dict(zip(names, combo, strict=True))) for combo in itertools.product(*axes.values())]
    return combos or [merged], _executor_table(executor, path)


def _given_on_command_line(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)


def _convert(ctx: click.Context, param: Any, raw: Any, path: Path, key: str) -> Any:
    if isinstance(raw, (dict, list)):
        raise UsageError(f"--config {path}: {key}: expected a single value, got {type(raw).__name__}")
    if param.is_flag and not param.secondary_opts:  # a plain flag
        if not isinstance(raw, bool):
            raise UsageError(f"--config {path}: {key} = {raw!r}: expected true or false")
        return raw
    try:
        return param.type.convert(raw if not isinstance(raw, bool) or param.is_flag else str(raw), param, ctx)
    except click.BadParameter as exc:
        raise UsageError(f"--config {path}: {key} = {raw!r}: {exc.format_message()}") from None


def _convert_many(ctx: click.Context, param: Any, setting: Any, raw: Any, path: Path, key: str) -> tuple:
    if setting.kind == "key-value":
        if isinstance(raw, dict):
            items = [f"{k}={v}" for k, v in raw.items()]
        elif isinstance(raw, list) and all(isinstance(v, str) for v in raw):
            items = list(raw)
        else:
            raise UsageError(f'--config {path}: {key}: expected a table or a list of "KEY=VALUE" strings')
        for item in items:
            if "=" not in item or not item.partition("=")[0].strip():
                raise UsageError(f"--config {path}: {key}: expected KEY=VALUE, got {item!r}")
        return tuple((k.strip(), v.strip()) for k, _, v in (item.partition("=") for item in items))
    values = raw if isinstance(raw, list) else [raw]
    return tuple(_convert(ctx, param, v, path, key) for v in values)


def _executor_table(table: dict[str, Any], path: Path) -> dict[str, Any]:
    """{"name": ..., "options": {...}} from the file's [executor] table."""
    table = dict(table)
    name = table.pop("name", None)
    for key, value in table.items():
        if isinstance(value, (dict, list)):
            raise UsageError(f"--config {path}: [executor] {key}: expected a single value")
    return {"name": name, "options": {k: v for k, v in table.items()}}
