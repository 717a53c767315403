"""The systemd unit: syntax, sandbox exposure and the settings the service relies on."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from edge_runtime.cli import EXIT_CONFIG, EXIT_MODEL
from edge_runtime.config import MqttConfig, TlsConfig, load_config
from edge_runtime.service.shutdown import SHUTDOWN_TIMEOUT_S
from tests.systemd.conftest import SYSTEMD_DIR, UNIT_NAME, add_stub_executable, add_system_units
from tests.systemd.sandbox import read_service_section

# Exposure ceiling on the 0-10 scale of systemd-analyze security, which
# rates 1.8 (the unit's score with systemd 252, with or without the OpenVINO
# drop-in) as "OK".
MAX_EXPOSURE = 2.0

EXPOSURE_LINE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)")


def verify(systemd_analyze: str, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [systemd_analyze, "verify", f"--root={root}", UNIT_NAME],
        capture_output=True,
        text=True,
        timeout=120,
    )


def exposure(systemd_analyze: str, root: Path) -> tuple[float, str, str]:
    """Return the overall exposure, its rating and the full report of the unit installed in ``root``."""
    result = subprocess.run(
        [systemd_analyze, "security", "--offline=true", f"--root={root}", UNIT_NAME],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    match = EXPOSURE_LINE.search(result.stdout)
    assert match, f"no exposure line in:\n{result.stdout}"
    return float(match.group(1)), match.group(2), result.stdout


@pytest.fixture
def verify_root(install_into):
    def make(board: str) -> Path:
        root = install_into(board=board)
        add_system_units(root)
        add_stub_executable(root)
        return root

    return make


@pytest.mark.parametrize("board", ["pi", "jetson", "generic"])
def test_verify_reports_nothing(systemd_analyze, verify_root, board):
    root = verify_root(board)

    result = verify(systemd_analyze, root)

    # verify exits 0 even for unknown keys, so any line about the unit or a
    # drop-in (unknown key, bad value, missing executable) counts as a failure.
    assert result.returncode == 0, result.stderr
    unit_lines = [line for line in (result.stdout + result.stderr).splitlines() if "edge-runtime" in line]
    assert unit_lines == []


def test_verify_catches_misspelt_key(systemd_analyze, verify_root):
    root = verify_root("pi")
    unit = root / "etc/systemd/system" / UNIT_NAME
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))

    result = verify(systemd_analyze, root)

    assert "Unknown key 'ProtectSytem'" in result.stderr


def test_verify_catches_missing_executable(systemd_analyze, install_into):
    root = install_into(board="pi")
    add_system_units(root)

    result = verify(systemd_analyze, root)

    assert result.returncode != 0
    assert "opt/edge-runtime/venv/bin/edge-runtime" in result.stderr


@pytest.mark.parametrize("board", ["pi", "jetson", "generic"])
def test_exposure_below_ceiling(systemd_analyze, verify_root, board):
    root = verify_root(board)

    score, rating, report = exposure(systemd_analyze, root)

    assert score <= MAX_EXPOSURE, report
    assert rating == "OK", report


def test_openvino_dropin_lifts_mdwe(systemd_analyze, verify_root):
    pi_score, _, pi_report = exposure(systemd_analyze, verify_root("pi"))
    generic_score, _, generic_report = exposure(systemd_analyze, verify_root("generic"))

    assert re.search(r"✓ MemoryDenyWriteExecute=", pi_report)
    assert re.search(r"✗ MemoryDenyWriteExecute=", generic_report)
    assert pi_score <= generic_score <= MAX_EXPOSURE


def test_unit_runs_the_service_command():
    settings = read_service_section([SYSTEMD_DIR / UNIT_NAME])

    assert settings["ExecStart"] == [
        "/opt/edge-runtime/venv/bin/edge-runtime run --config /etc/edge-runtime/config.yaml"
    ]
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert settings["DynamicUser"] == ["yes"]
    assert settings["StateDirectory"] == ["edge-runtime"]
    assert "video" in settings["SupplementaryGroups"][0].split()


def test_unit_restarts_with_backoff():
    text = (SYSTEMD_DIR / UNIT_NAME).read_text()
    settings = read_service_section([SYSTEMD_DIR / UNIT_NAME])

    assert settings["Restart"] == ["on-failure"]
    assert settings["RestartSec"] == ["10s"]
    assert re.search(r"^\[Unit\][^\[]*^StartLimitIntervalSec=600$", text, re.M | re.S)
    assert re.search(r"^\[Unit\][^\[]*^StartLimitBurst=5$", text, re.M | re.S)


def test_stop_timeout_covers_mqtt_flush():
    settings = read_service_section([SYSTEMD_DIR / UNIT_NAME])
    config_text = (SYSTEMD_DIR / "config.yaml").read_text()
    flush = float(re.search(r"^\s*flush_timeout_s:\s*([\d.]+)", config_text, re.M).group(1))

    stop_timeout = float(settings["TimeoutStopSec"][0].rstrip("s"))

    # Closing the camera and the MQTT connection also takes time, so the
    # flush may use at most half of the stop timeout.
    assert flush <= stop_timeout / 2


def test_config_skeleton_lists_mqtt_keys():
    """The skeleton shows every mqtt key with its default, except the discouraged plain-text password."""
    document = yaml.safe_load((SYSTEMD_DIR / "config.yaml").read_text(encoding="utf-8"))
    config = load_config(SYSTEMD_DIR / "config.yaml")

    listed = set(document["mqtt"])
    assert listed == set(MqttConfig.model_fields) - {"password"}
    assert set(document["mqtt"]["tls"]) == set(TlsConfig.model_fields)
    # The broker stays at its loopback default, so every mqtt value is the default.
    assert config.mqtt == MqttConfig()


def test_device_policy_closed_with_cameras():
    settings = read_service_section([SYSTEMD_DIR / UNIT_NAME])

    assert settings["DevicePolicy"] == ["closed"]
    assert "char-video4linux rw" in settings["DeviceAllow"]
    assert settings["CapabilityBoundingSet"] == []


def seconds(value: str) -> float:
    """Parse a systemd time span of the forms used in the unit: ``30s``, ``3min`` or a bare number."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|min)?", value)
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_restart_skips_config_and_model_errors():
    settings = read_service_section([SYSTEMD_DIR / UNIT_NAME])

    assert sorted(settings["RestartPreventExitStatus"][0].split()) == sorted([str(EXIT_MODEL), str(EXIT_CONFIG)])


def test_stop_timeout_above_shutdown_bound():
    settings = read_service_section([SYSTEMD_DIR / UNIT_NAME])

    stop_timeout = seconds(settings["TimeoutStopSec"][0])

    # The process exits on its own before systemd sends SIGKILL, with time
    # left for the interpreter to unload.
    assert SHUTDOWN_TIMEOUT_S + 5 <= stop_timeout


def test_watchdog_and_start_timeout():
    settings = read_service_section([SYSTEMD_DIR / UNIT_NAME])

    watchdog = seconds(settings["WatchdogSec"][0])
    start_timeout = seconds(settings["TimeoutStartSec"][0])

    assert 10 <= watchdog <= 120
    # Model loading and warm-up happen before READY=1 and need the longer budget.
    assert start_timeout >= 2 * watchdog


def test_every_credential_has_fallback():
    settings = read_service_section([SYSTEMD_DIR / UNIT_NAME])

    loaded = {value.split(":", 1)[0]: value.split(":", 1)[1] for value in settings["LoadCredential"]}
    fallbacks = {value.split(":", 1)[0] for value in settings["SetCredential"]}

    assert set(loaded) == {"mqtt-password", "mqtt-tls-key"}
    assert fallbacks == set(loaded)
    for name, path in loaded.items():
        assert path == f"/etc/edge-runtime/credentials/{name}"


def test_verify_accepts_credential_fallback(systemd_analyze, verify_root):
    root = verify_root("pi")

    result = verify(systemd_analyze, root)

    # systemd 252 rejects an empty SetCredential= value as "Invalid syntax".
    assert "Invalid syntax" not in result.stderr
    assert "SetCredential" not in result.stderr
