"""Shared test fixtures: where the real reference data is, and a private cache dir for every test run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_data_path() -> Path | None:
    """The real reference data: ``RSABENCH_TEST_DATA`` if set, else the first ``shared/data`` beside the
    checkout or beside one of its parent folders (``../shared/data`` for a checkout next to it, and also
    for a fresh clone made in a folder below the project's home)."""
    if os.environ.get("RSABENCH_TEST_DATA"):
        return Path(os.environ["RSABENCH_TEST_DATA"]).expanduser()
    for folder in ROOT.parents:
        candidate = folder / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def pytest_configure(config: pytest.Config) -> None:
    path = os.environ.get("RSABENCH_TEST_DATA")
    if path and not Path(path).expanduser().is_dir():
        raise pytest.UsageError(f"RSABENCH_TEST_DATA={path}: no such directory (unset it to skip the real-data tests)")


def pytest_report_header(config: pytest.Config) -> str:
    path = shared_data_path()
    if path is None:
        return "reference data: NOT FOUND (no shared/data set RSABENCH_TEST_DATA): real-data tests skip"
    return f"reference data: {path}"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if shared_data_path() is None:
        skipped = len(terminalreporter.stats.get("skipped", []))
        terminalreporter.write_line(
            f"WARNING: reference data not found (set RSABENCH_TEST_DATA): the real-data tests were skipped ({skipped} "
            "skips in all)",
            yellow=True,
            bold=True,
        )


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory):
    """File-digest and lock files go to a temporary cache dir, not the user's (subprocesses inherit it)."""
    previous = os.environ.get("RSABENCH_CACHE")
    os.environ["RSABENCH_CACHE"] = str(tmp_path_factory.mktemp("rsabench-cache"))
    yield
    if previous is None:
        os.environ.pop("RSABENCH_CACHE", None)
    else:
        os.environ["RSABENCH_CACHE"] = previous


@pytest.fixture(scope="session")
def shared_data_or_none() -> Path | None:
    """The reference data folder, or None when absent (for tests that also run without it)."""
    return shared_data_path()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real reference data folder; skips when absent."""
    path = shared_data_path()
    if path is None:
        pytest.skip("reference data not found (no shared/data beside the checkout; set RSABENCH_TEST_DATA)")
    return path
