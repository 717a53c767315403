"""systemd/install.sh: dry runs, installs into an image root, argument errors."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from edge_runtime.config import load_config
from tests.systemd.conftest import REPO_ROOT, SYSTEMD_DIR, UNIT_NAME, run_install

UNIT_PATH = Path("etc/systemd/system") / UNIT_NAME
DROPIN_DIR = Path("etc/systemd/system") / f"{UNIT_NAME}.d"
CONFIG_PATH = Path("etc/edge-runtime/config.yaml")


def command_lines(stdout: str) -> list[str]:
    """Return the commands a dry run printed, without the leading '+ '."""
    return [line[2:] for line in stdout.splitlines() if line.startswith("+ ")]


def test_dry_run_writes_nothing(tmp_path, guarded_path):
    env, guard_log = guarded_path
    root = tmp_path / "image"

    result = run_install("--dry-run", "--prefix", str(root), "--board", "pi", env=env)

    assert result.returncode == 0, result.stderr
    assert not root.exists()
    assert not guard_log.exists(), guard_log.read_text()


def test_dry_run_plans_every_step(tmp_path, guarded_path):
    env, _ = guarded_path
    root = tmp_path / "image"

    result = run_install("--dry-run", "--prefix", str(root), "--board", "pi", env=env)
    commands = command_lines(result.stdout)

    venv = root / "opt/edge-runtime/venv"
    assert commands[0] == f"python3 -m venv {venv}"
    assert any(
        re.fullmatch(rf"{venv}/bin/python -m pip install {re.escape(str(REPO_ROOT))}\\\[onnx\\,tflite\\\]", line)
        for line in commands
    ), commands
    assert f"install -D -m 0644 {SYSTEMD_DIR / UNIT_NAME} {root / UNIT_PATH}" in commands
    assert f"install -D -m 0644 {SYSTEMD_DIR / 'config.yaml'} {root / CONFIG_PATH}" in commands

    pulls = [line for line in commands if " models pull " in line]
    private_dir = root / "var/lib/private/edge-runtime"
    assert pulls == [f"env STATE_DIRECTORY={private_dir} {venv}/bin/edge-runtime models pull --starter"]
    assert f"ln -sfn private/edge-runtime {root}/var/lib/edge-runtime" in commands

    assert commands[-1] == f"systemctl --root={root} enable {UNIT_NAME}"


def test_dry_run_live_system_uses_service_user():
    result = run_install("--dry-run", "--board", "generic")
    commands = command_lines(result.stdout)

    assert result.returncode == 0, result.stderr
    pull = next(line for line in commands if " models pull " in line)
    assert pull.startswith("systemd-run ")
    assert "--property=DynamicUser=yes" in pull
    assert "--property=StateDirectory=edge-runtime" in pull
    assert commands[-2:] == ["systemctl daemon-reload", f"systemctl enable --now {UNIT_NAME}"]


@pytest.mark.parametrize(
    ("board", "extras", "dropins"),
    [
        ("pi", "onnx\\,tflite", []),
        ("jetson", "onnx\\,tflite", ["jetson.conf"]),
        ("generic", "all", ["openvino.conf"]),
    ],
)
def test_board_picks_extras_and_dropins(tmp_path, board, extras, dropins):
    result = run_install("--dry-run", "--prefix", str(tmp_path / "image"), "--board", board)
    commands = command_lines(result.stdout)

    assert any(line.endswith(f"\\[{extras}\\]") and " pip install " in line for line in commands), commands
    installed_dropins = sorted(Path(line.split()[-1]).name for line in commands if f"{UNIT_NAME}.d/" in line)
    assert installed_dropins == dropins


def test_models_option_lists_names(tmp_path):
    result = run_install(
        "--dry-run", "--prefix", str(tmp_path / "image"), "--board", "pi", "--models", "mtcnn fer-mini-xception"
    )
    commands = command_lines(result.stdout)

    pull = next(line for line in commands if " models pull " in line)
    assert pull.endswith(" models pull mtcnn fer-mini-xception")


def test_extras_option_overrides_board(tmp_path):
    result = run_install("--dry-run", "--prefix", str(tmp_path / "image"), "--board", "pi", "--extras", "onnx,openvino")
    commands = command_lines(result.stdout)

    assert any(line.endswith("\\[onnx\\,openvino\\]") for line in commands), commands
    assert any(line.endswith(f"{UNIT_NAME}.d/openvino.conf") for line in commands)


def test_install_into_prefix_places_files(install_into):
    root = install_into(board="generic")

    for relative in (UNIT_PATH, CONFIG_PATH, DROPIN_DIR / "openvino.conf"):
        path = root / relative
        assert path.is_file(), relative
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, relative

    assert (root / UNIT_PATH).read_bytes() == (SYSTEMD_DIR / UNIT_NAME).read_bytes()
    assert not (root / "opt").exists()
    assert not (root / "var").exists()


def test_installed_config_is_valid(install_into):
    root = install_into(board="pi")

    config = load_config(root / CONFIG_PATH)

    assert config.source.spec == "/dev/video0"
    assert config.store is None
    assert config.mqtt.broker == "mqtt://127.0.0.1:1883"


def test_reinstall_keeps_edited_config(install_into, tmp_path):
    root = install_into(board="pi")
    config = root / CONFIG_PATH
    config.write_text(config.read_text().replace("/dev/video0", "/dev/video2"))

    result = run_install("--prefix", str(root), "--board", "pi", "--no-venv", "--no-models", "--no-enable")

    assert result.returncode == 0, result.stderr
    assert "keeping the existing" in result.stdout
    assert "/dev/video2" in config.read_text()


def test_unknown_board_rejected(tmp_path):
    result = run_install("--dry-run", "--prefix", str(tmp_path), "--board", "beaglebone")

    assert result.returncode == 1
    assert "unknown board 'beaglebone'" in result.stderr


def test_unknown_option_rejected(tmp_path):
    result = run_install("--dry-run", "--frobnicate")

    assert result.returncode == 1
    assert "unknown option '--frobnicate'" in result.stderr
    assert "Usage:" in result.stderr


def test_missing_config_rejected(tmp_path):
    result = run_install("--dry-run", "--prefix", str(tmp_path), "--config", str(tmp_path / "absent.yaml"))

    assert result.returncode == 1
    assert "absent.yaml not found" in result.stderr
