"""Running the command line in-process in tests."""

from __future__ import annotations

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
