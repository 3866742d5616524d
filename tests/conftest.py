"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real reference data folder (``RSABENCH_TEST_DATA``, default ``../shared/data``); skips when absent."""
    path = Path(os.environ.get("RSABENCH_TEST_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"reference data not found at {path} (set RSABENCH_TEST_DATA)")
    return path
