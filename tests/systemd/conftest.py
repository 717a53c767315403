"""Fixtures for the systemd unit and install script tests.

``install_into`` runs ``systemd/install.sh`` for real into a temporary image
root, skipping the steps that need the network or a service manager (the
virtual environment, the model pull and ``systemctl enable``).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Callable

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO_ROOT / "systemd"
INSTALL_SCRIPT = SYSTEMD_DIR / "install.sh"
UNIT_NAME = "edge-runtime.service"
EXEC_PATH = Path("opt/edge-runtime/venv/bin/edge-runtime")
SYSTEM_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    """Path of systemd-analyze; skips the test when it is not installed."""
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    return path


def run_install(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run install.sh with ``args`` and return the finished process (never raises on exit status)."""
    return subprocess.run(
        ["bash", str(INSTALL_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def add_system_units(root: Path) -> None:
    """Copy the host's unit directory into ``root``.

    ``systemd-analyze verify --root`` resolves the default dependencies
    (sysinit.target, basic.target, ...) inside the root, so they must exist there.
    """
    for source in SYSTEM_UNIT_DIRS:
        if (source / "sysinit.target").exists():
            target = root / "usr/lib/systemd/system"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source, target, symlinks=True)
            return
    pytest.skip("no systemd unit directory with sysinit.target on this machine")


def add_stub_executable(root: Path, relative: Path = EXEC_PATH) -> Path:
    """Create the unit's ExecStart binary at ``relative`` in ``root``, since the virtual environment is not built."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def install_into(tmp_path: Path) -> Callable[..., Path]:
    """Return a function that installs into a fresh image root and returns that root.

    Keyword ``board`` picks the board (default generic); extra positional
    arguments go to install.sh.
    """

    def install(*args: str, board: str = "generic") -> Path:
        root = tmp_path / f"root-{board}-{len(list(tmp_path.iterdir()))}"
        root.mkdir()
        result = run_install(
            "--prefix", str(root), "--board", board, "--no-venv", "--no-models", "--no-enable", *args
        )
        assert result.returncode == 0, result.stderr
        return root

    return install


@pytest.fixture
def guarded_path(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose PATH starts with stand-ins for commands that change the live system.

    Each stand-in appends its command line to the returned log file and
    fails, so the log records any call that should not have happened.
    """
    bin_dir = tmp_path / "guard-bin"
    bin_dir.mkdir()
    log = tmp_path / "guard.log"
    for name in ("systemctl", "systemd-run", "useradd", "pip", "python3"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 97\n')
        script.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    return env, log
