"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_data_path() -> Path:
    """Where the real reference data should be: ``RSABENCH_TEST_DATA``, default ``../shared/data``."""
    return Path(os.environ.get("RSABENCH_TEST_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data_or_none() -> Path | None:
    """The reference data folder, or None when absent (for tests that also run without it)."""
    path = shared_data_path()
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real reference data folder; skips when absent."""
    path = shared_data_path()
    if not path.is_dir():
        pytest.skip(f"reference data not found at {path} (set RSABENCH_TEST_DATA)")
    return path
