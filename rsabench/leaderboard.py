"""Leaderboards rendered from a directory of cell records: rows, paired Δ vs ``frozen``, and formats."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable

from .records import iter_records
from .results import CellRecord
from .scoring import paired_delta

FORMATS = ("table", "markdown", "csv", "json")
COLUMNS = [
    "dataset",
    "target",
    "split",
    "group",
    "backbone",
    "objective",
    "seed",
    "layer",
    "epoch",
    "raw",
    "ceiling_lower",
    "ceiling_upper",
    "normalized",
    "ci_low",
    "ci_high",
    "delta_vs_frozen",
    "delta_ci_low",
    "delta_ci_high",
    "convention",
    "metric",
    "weights",
    "n_subjects",
    "n_images",
    "cell",
]
# what must match for a paired comparison with the frozen baseline
PAIR_KEYS = (
    "dataset",
    "target",
    "split",
    "group",
    "convention",
    "metric",
    "backbone",
    "seed",
    "weights",
    "image_size",
    "layers_key",
    "split_key",
)


def _number(x: float) -> float | None:
    """A score value as the record holds it: NaN (e.g. no ceiling from one subject) is None."""
    return None if math.isnan(x) else x


def rows_from_record(record: CellRecord) -> list[dict[str, Any]]:
    """One leaderboard row per score of the selected layer (split, group, convention)."""
    config = record.config
    rows = []
    for entry in record.scores:
        s = entry.score
        assert s is not None  # the selected layer always has a score (a broken one fails the cell)
        rows.append(
            {
                "dataset": config["dataset"],
                "target": config["target"],
                "split": entry.split,
                "group": entry.group,
                "backbone": config["backbone"],
                "objective": config["objective"],
                "seed": config["seed"],
                "layer": entry.layer,
                "epoch": entry.epoch,
                "raw": _number(s.raw),
                "ceiling_lower": _number(s.ceiling_lower),
                "ceiling_upper": _number(s.ceiling_upper),
                "normalized": _number(s.normalized),
                "ci_low": _number(s.ci_low),
                "ci_high": _number(s.ci_high),
                "delta_vs_frozen": None,
                "delta_ci_low": None,
                "delta_ci_high": None,
                "convention": s.convention,
                "metric": s.metric,
                "weights": config["weights"],
                "n_subjects": s.n_subjects,
                "n_images": s.n_images,
                "cell": record.cell,
                # private keys, for pairing
                "_score": s,
                "image_size": config["image_size"],
                "layers_key": tuple(config["layers"]),
                "split_key": json.dumps(config["split"], sort_keys=True),
                "_bootstrap_seed": config["bootstrap"]["seed"],
            }
        )
    return rows


def add_deltas(rows: list[dict[str, Any]]) -> None:
    """Paired Δ of each objective against ``frozen`` (same subjects, same bootstrap resamples)."""
    frozen = {tuple(r[k] for k in PAIR_KEYS): r for r in rows if r["objective"] == "frozen"}
    for r in rows:
        base = frozen.get(tuple(r[k] for k in PAIR_KEYS))
        if base is None or r["objective"] == "frozen":
            continue
        a, b = r["_score"], base["_score"]
        if len(a.per_subject) != len(b.per_subject):
            continue
        r["delta_vs_frozen"], r["delta_ci_low"], r["delta_ci_high"] = paired_delta(a, b, seed=r["_bootstrap_seed"])


def collect_rows(
    runs_dir: Path, cells: Iterable[str] | None = None, warn: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Leaderboard rows for every valid record under ``runs_dir`` (or only the given cells), sorted;
    every other JSON file there is reported through ``warn``."""
    wanted = set(cells) if cells is not None else None
    rows, seen = [], {}
    for path, doc in iter_records(runs_dir, warn=warn):
        if doc["cell"] in seen:  # a copy of a record (another folder, another name): one row set per cell
            if warn is not None:
                warn(f"{path}: skipped, a copy of the record of cell {doc['cell'][:12]} in {seen[doc['cell']]}")
            continue
        seen[doc["cell"]] = path
        if wanted is None or doc["cell"] in wanted:
            rows.extend(rows_from_record(CellRecord.from_dict(doc)))
    add_deltas(rows)
    rows.sort(
        key=lambda r: (
            r["dataset"],
            r["target"],
            r["split"],
            r["group"],
            r["convention"],
            r["backbone"],
            r["objective"] != "frozen",
            r["objective"],
            r["seed"],
        )
    )
    return [{k: r[k] for k in COLUMNS} for r in rows]


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


DISPLAY = [
    ("dataset", "dataset"),
    ("target", "target"),
    ("split", "split"),
    ("group", "group"),
    ("backbone", "backbone"),
    ("objective", "objective"),
    ("seed", "seed"),
    ("layer", "layer"),
    ("epoch", "ep"),
    ("raw", "raw"),
    ("ci", "95% CI"),
    ("ceiling", "ceiling [lo, up]"),
    ("normalized", "% ceiling"),
    ("delta", "Δ vs frozen [95% CI]"),
    ("convention", "convention"),
]


def display_values(row: dict[str, Any]) -> dict[str, str]:
    out = {k: _fmt(row.get(k)) for k, _ in DISPLAY}
    out["ci"] = f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"
    out["ceiling"] = f"[{_fmt(row['ceiling_lower'])}, {_fmt(row['ceiling_upper'])}]"
    out["normalized"] = _fmt(row["normalized"], 1)
    out["delta"] = (
        ""
        if row["delta_vs_frozen"] is None
        else f"{row['delta_vs_frozen']:+.4f} [{row['delta_ci_low']:+.4f}, {row['delta_ci_high']:+.4f}]"
    )
    return out


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    """Render rows as ``markdown``, ``csv`` or ``json`` text (``table`` is rendered by :func:`rich_table`)."""
    if fmt == "json":  # strict JSON: NaN (e.g. no ceiling from one subject) becomes null
        clean = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows]
        return json.dumps(clean, indent=1, allow_nan=False) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(h for _, h in DISPLAY) + " |", "|" + "---|" * len(DISPLAY)]
        for r in rows:
            v = display_values(r)
            lines.append("| " + " | ".join(v[k] for k, _ in DISPLAY) + " |")
        return "\n".join(lines) + "\n"
    raise ValueError(fmt)


def rich_table(rows: list[dict[str, Any]], title: str = "rsabench leaderboard"):
    """A rich Table; columns whose value is the same in every row move into the caption."""
    from rich.table import Table

    values = [display_values(r) for r in rows]
    constant = [(k, h) for k, h in DISPLAY[:8] + DISPLAY[-1:] if len({v[k] for v in values}) == 1 and len(values) > 1]
    shown = [(k, h) for k, h in DISPLAY if (k, h) not in constant and any(v[k] for v in values)]
    caption = "  ".join(f"{h}: {values[0][k]}" for k, h in constant) if values else None
    table = Table(title=title, caption=caption, show_lines=False)
    for key, header in shown:
        table.add_column(
            header, justify="right" if key in ("raw", "seed", "epoch", "normalized") else "left", no_wrap=True
        )
    for v in values:
        table.add_row(*(v[k] for k, _ in shown))
    return table
