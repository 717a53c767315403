"""``edge-runtime service install|uninstall|status`` into a staging root, checked with systemd-analyze."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.cli import EXIT_CONFIG, EXIT_MODEL, main
from edge_runtime.config import load_config
from edge_runtime.models import STARTER_MODELS
from edge_runtime.service.files import default_executable
from tests.fixtures.models import copy_packages
from tests.systemd.conftest import EXEC_PATH, SYSTEMD_DIR, UNIT_NAME, add_stub_executable, add_system_units
from tests.systemd.test_unit import MAX_EXPOSURE, exposure, verify

UNIT_PATH = Path("etc/systemd/system") / UNIT_NAME
DROPIN_DIR = Path("etc/systemd/system") / f"{UNIT_NAME}.d"
CONFIG_PATH = Path("etc/edge-runtime/config.yaml")
CREDENTIALS_DIR = Path("etc/edge-runtime/credentials")
WANTS_LINK = Path("etc/systemd/system/multi-user.target.wants") / UNIT_NAME
# The ExecStart= executable of the template, which systemd/install.sh creates.
SCRIPT_EXECUTABLE = "/" + str(EXEC_PATH)


def service(*args: str) -> int:
    return main(["--log-level", "WARNING", "service", *args])


def test_install_writes_unit_config_and_credentials_dir(tmp_path, capsys) -> None:
    root = tmp_path / "image"

    status = service("install", "--root", str(root), "--board", "jetson", "--no-enable")

    assert status == 0
    template = (SYSTEMD_DIR / UNIT_NAME).read_text()
    expected = template.replace(f"ExecStart={SCRIPT_EXECUTABLE} ", f"ExecStart={default_executable()} ")
    assert (root / UNIT_PATH).read_text() == expected
    assert (root / DROPIN_DIR / "jetson.conf").read_bytes() == (SYSTEMD_DIR / "drop-ins/jetson.conf").read_bytes()
    # OpenVINO is installed in the test environment, so its JIT drop-in comes along.
    assert (root / DROPIN_DIR / "openvino.conf").is_file()
    assert stat.S_IMODE((root / UNIT_PATH).stat().st_mode) == 0o644
    assert stat.S_IMODE((root / CREDENTIALS_DIR).stat().st_mode) == 0o700
    assert load_config(root / CONFIG_PATH).source.spec == "/dev/video0"
    assert not (root / WANTS_LINK).exists()
    assert "not enabled (--no-enable)" in capsys.readouterr().out


def test_install_dry_run_writes_nothing(tmp_path, capsys) -> None:
    root = tmp_path / "image"

    status = service("install", "--root", str(root), "--board", "pi", "--dry-run")

    assert status == 0
    assert not root.exists()
    output = capsys.readouterr().out
    assert f"write {root / UNIT_PATH}" in output
    assert f"--root={root} enable {UNIT_NAME}" in output


def test_reinstall_keeps_edited_config(tmp_path, capsys) -> None:
    root = tmp_path / "image"
    service("install", "--root", str(root), "--board", "pi", "--no-enable")
    config = root / CONFIG_PATH
    config.write_text(config.read_text().replace("/dev/video0", "/dev/video2"))

    status = service("install", "--root", str(root), "--board", "pi", "--no-enable")

    assert status == 0
    assert "keep the existing" in capsys.readouterr().out
    assert "/dev/video2" in config.read_text()


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl not installed")
def test_install_enables_in_root_and_uninstall_removes(tmp_path, capsys) -> None:
    root = tmp_path / "image"

    installed = service("install", "--root", str(root), "--board", "pi")

    assert installed == 0, capsys.readouterr().out
    assert (root / WANTS_LINK).is_symlink()

    removed = service("uninstall", "--root", str(root))

    assert removed == 0, capsys.readouterr().out
    assert not (root / WANTS_LINK).exists()
    assert not (root / UNIT_PATH).exists()
    assert not (root / DROPIN_DIR).exists()
    assert (root / CONFIG_PATH).is_file()


def test_installed_unit_verifies_and_scores(systemd_analyze, tmp_path) -> None:
    root = tmp_path / "image"
    assert service("install", "--root", str(root), "--board", "jetson", "--no-enable", "--exec", SCRIPT_EXECUTABLE) == 0
    add_system_units(root)
    add_stub_executable(root)

    result = verify(systemd_analyze, root)
    score, rating, report = exposure(systemd_analyze, root)

    assert result.returncode == 0, result.stderr
    assert [line for line in (result.stdout + result.stderr).splitlines() if "edge-runtime" in line] == []
    assert score <= MAX_EXPOSURE, report
    assert rating == "OK", report


def test_status_reports_missing_models(tmp_path, capsys) -> None:
    root = tmp_path / "image"
    service("install", "--root", str(root), "--board", "pi", "--no-enable")
    capsys.readouterr()

    status = service("status", "--root", str(root))

    output = capsys.readouterr().out
    assert status == EXIT_MODEL
    assert f"unit: {root / UNIT_PATH} installed" in output
    assert f"config: {root / CONFIG_PATH} valid" in output
    assert "models pull --starter" in output


def test_status_verifies_model_store(tmp_path, model_store, capsys) -> None:
    root = tmp_path / "image"
    service("install", "--root", str(root), "--board", "pi", "--no-enable")
    copy_packages(model_store, root / "var/lib/edge-runtime/models", STARTER_MODELS)
    capsys.readouterr()

    healthy = service("status", "--root", str(root))
    healthy_output = capsys.readouterr().out

    broken_file = next((root / "var/lib/edge-runtime/models" / "mtcnn").glob("*.onnx"))
    broken_file.unlink()
    broken_file.write_bytes(b"\x00" * 16)
    broken = service("status", "--root", str(root))
    broken_output = capsys.readouterr().out

    assert healthy == 0, healthy_output
    assert "models: mtcnn: ok" in healthy_output
    assert broken == EXIT_MODEL
    assert "models: mtcnn: " in broken_output
    assert "models: mtcnn: ok" not in broken_output


def test_status_names_invalid_config(tmp_path, capsys) -> None:
    root = tmp_path / "image"
    service("install", "--root", str(root), "--board", "pi", "--no-enable")
    config = root / CONFIG_PATH
    config.write_text(config.read_text() + "windwo_s: 3\n")

    status = service("status", "--root", str(root))

    captured = capsys.readouterr()
    assert status == 78
    assert f"config: {config} invalid" in captured.out
    assert "windwo_s: unknown key" in captured.err


def test_install_script_and_command_share_unit(install_into, tmp_path) -> None:
    script_root = install_into(board="pi")
    command_root = tmp_path / "command"

    service("install", "--root", str(command_root), "--board", "pi", "--no-enable", "--exec", SCRIPT_EXECUTABLE)

    assert (script_root / UNIT_PATH).read_bytes() == (command_root / UNIT_PATH).read_bytes()
    assert (script_root / CONFIG_PATH).read_bytes() == (command_root / CONFIG_PATH).read_bytes()


def test_service_help_lists_actions() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "service", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 0
    for action in ("install", "uninstall", "status"):
        assert action in completed.stdout


def test_default_exec_verifies_from_any_venv(systemd_analyze, tmp_path) -> None:
    root = tmp_path / "image"
    assert service("install", "--root", str(root), "--board", "generic", "--no-enable") == 0
    add_system_units(root)
    add_stub_executable(root, default_executable().relative_to("/"))

    result = verify(systemd_analyze, root)

    assert f"ExecStart={default_executable()} run" in (root / UNIT_PATH).read_text()
    assert result.returncode == 0, result.stderr
    assert [line for line in (result.stdout + result.stderr).splitlines() if "edge-runtime" in line] == []


def test_install_exec_option_sets_exec_start(tmp_path, capsys) -> None:
    root = tmp_path / "image"
    executable = "/usr/local/bin/edge-runtime"

    status = service("install", "--root", str(root), "--board", "pi", "--no-enable", "--exec", executable)

    output = capsys.readouterr().out
    assert status == 0
    assert f"ExecStart={executable} run --config /etc/edge-runtime/config.yaml\n" in (root / UNIT_PATH).read_text()
    assert f"warning: {root}{executable} does not exist yet" in output


def test_install_rejects_missing_exec(tmp_path, capsys) -> None:
    missing = tmp_path / "venv/bin/edge-runtime"

    status = service("install", "--dry-run", "--board", "pi", "--no-enable", "--exec", str(missing))

    captured = capsys.readouterr()
    assert status == EXIT_CONFIG
    assert f"--exec {missing} does not exist or is not executable" in captured.err
    assert "write " not in captured.out


@pytest.mark.parametrize(
    "executable, fragment",
    [("bin/edge-runtime", "is relative"), ("/opt/my venv/bin/edge-runtime", "contains whitespace")],
)
def test_install_rejects_unusable_exec(tmp_path, capsys, executable, fragment) -> None:
    status = service("install", "--root", str(tmp_path / "image"), "--no-enable", "--exec", executable)

    assert status == EXIT_CONFIG
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "image" / UNIT_PATH).exists()


def test_status_without_config_names_install(tmp_path, capsys) -> None:
    root = tmp_path / "image"

    status = service("status", "--root", str(root))

    error = capsys.readouterr().err
    assert status == EXIT_CONFIG
    assert f"config file {root / CONFIG_PATH} not found" in error
    assert f"edge-runtime service install --root {root}" in error
    assert "--config" not in error


def test_status_rejects_unknown_model(tmp_path, capsys) -> None:
    root = tmp_path / "image"
    service("install", "--root", str(root), "--board", "pi", "--no-enable")
    config = root / CONFIG_PATH
    config.write_text(config.read_text().replace("  detector: null", "  detector: mtcn"))

    status = service("status", "--root", str(root))

    captured = capsys.readouterr()
    assert status == EXIT_CONFIG
    assert f"config: {config} invalid" in captured.out
    assert "models.detector: model 'mtcn' is neither in the catalog" in captured.err
    assert "did you mean 'mtcnn'?" in captured.err


def test_status_names_model_to_pull(tmp_path, model_store, capsys) -> None:
    root = tmp_path / "image"
    service("install", "--root", str(root), "--board", "pi", "--no-enable")
    store = root / "var/lib/edge-runtime/models"
    copy_packages(model_store, store, ["mtcnn"])
    config = root / CONFIG_PATH
    config.write_text(config.read_text().replace("  detector: null", "  detector: blazeface-short-range"))
    capsys.readouterr()

    status = service("status", "--root", str(root))

    output = capsys.readouterr().out
    assert status == EXIT_MODEL
    assert "models: mtcnn: ok" in output
    assert f"edge-runtime models pull blazeface-short-range --store {store}" in output
