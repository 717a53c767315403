"""Keep the tests of this directory independent of profile files and override files on the machine."""

from __future__ import annotations

import pytest

from edge_runtime.profiles import OVERRIDE_FILE_ENV, PROFILES_ENV


@pytest.fixture(autouse=True)
def isolated_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use only the shipped profiles and no override file unless a test sets one."""
    monkeypatch.delenv(PROFILES_ENV, raising=False)
    monkeypatch.setenv(OVERRIDE_FILE_ENV, "")
