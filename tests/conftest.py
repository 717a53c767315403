"""Shared pytest fixtures.

Fixture modules live in ``tests/fixtures`` so that each concern (model
store, broker, data) stays in its own file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.mosquitto",
    "tests.fixtures.mosquitto_tls",
]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Directory of the labelled photos and videos; skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"labelled test data not found at {SHARED_DATA} (it sits beside the repository as shared/data)")
    return SHARED_DATA
