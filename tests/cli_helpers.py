"""Running the command line in-process in tests."""

from __future__ import annotations

from pathlib import Path

from rsabench.cli import main


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    """``rsabench ARGV`` through ``main``: (exit code, stdout, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def record_files(runs: Path) -> list[Path]:
    """The cell records under a runs dir (not sweep manifests, executor logs or failure records)."""
    runs = Path(runs)
    if not runs.exists():
        return []
    return sorted(
        p
        for p in runs.rglob("*.json")
        if p.relative_to(runs).parts[0] not in ("sweeps", "logs") and not p.name.endswith(".failed.json")
    )
