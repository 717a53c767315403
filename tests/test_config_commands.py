"""``edge-runtime config validate`` and ``edge-runtime config schema``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from edge_runtime.cli import EXIT_CONFIG, main

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "examples" / "config.yaml"
SKELETON = REPO_ROOT / "systemd" / "config.yaml"


def config_command(*args: str) -> int:
    return main(["--log-level", "WARNING", "config", *args])


def test_validate_prints_ok_and_summary(tmp_path, capsys) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "source:\n  spec: rtsp://viewer:pa55@127.0.0.1:8554/cam\nmqtt:\n  device_id: pi-7\n"
        "  username: edge\n  password_file: /etc/edge-runtime/pw\n",
        encoding="utf-8",
    )

    status = config_command("validate", "--config", str(path))

    output = capsys.readouterr().out
    assert status == 0
    assert output.startswith(f"OK: {path}\n")
    assert "source: rtsp://***@127.0.0.1:8554/cam (stream)" in output
    assert "as device pi-7" in output
    assert "user edge, password from /etc/edge-runtime/pw" in output
    assert "pa55" not in output


def test_validate_lists_errors_with_lines(tmp_path, capsys) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("source:\n  every_n: 0\nwindow: 5\n", encoding="utf-8")

    status = config_command("validate", str(path))

    captured = capsys.readouterr()
    assert status == EXIT_CONFIG
    assert captured.out == ""
    assert f"{path}:2: source.every_n:" in captured.err
    assert f"{path}:3: window: unknown key" in captured.err


def test_validate_file_given_twice_is_usage_error(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as raised:
        config_command("validate", str(EXAMPLE), "--config", str(SKELETON))

    assert raised.value.code == 2
    assert "not allowed with argument FILE" in capsys.readouterr().err


def test_validate_missing_file_exits_78(tmp_path, capsys) -> None:
    status = config_command("validate", "--config", str(tmp_path / "absent.yaml"))

    assert status == EXIT_CONFIG
    assert "absent.yaml not found" in capsys.readouterr().err


def test_validate_reads_credentials_directory(tmp_path, capsys) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt-password").write_text("not-printed\n")
    path = tmp_path / "config.yaml"
    path.write_text("mqtt:\n  username: edge\n  password_file: ${credential:mqtt-password}\n", encoding="utf-8")

    status = config_command("validate", "--config", str(path), "--credentials-directory", str(credentials))

    output = capsys.readouterr().out
    assert status == 0
    assert f"password from {credentials / 'mqtt-password'}" in output
    assert "not-printed" not in output


def test_validate_warns_about_long_flush(tmp_path, capsys) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("mqtt:\n  flush_timeout_s: 25\n", encoding="utf-8")

    status = config_command("validate", "--config", str(path))

    assert status == 0
    assert "mqtt.flush_timeout_s is 25 s" in capsys.readouterr().err


@pytest.mark.parametrize("path", [EXAMPLE, SKELETON], ids=["example", "skeleton"])
def test_shipped_configs_validate(path, capsys) -> None:
    assert config_command("validate", "--config", str(path)) == 0


@pytest.mark.parametrize("path", [EXAMPLE, SKELETON], ids=["example", "skeleton"])
def test_schema_accepts_shipped_configs(path, capsys) -> None:
    assert config_command("schema") == 0
    schema = json.loads(capsys.readouterr().out)

    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load(path.read_text()), schema, cls=jsonschema.Draft202012Validator)


def test_schema_rejects_unknown_key(tmp_path) -> None:
    output = tmp_path / "config.schema.json"

    completed = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "config", "schema", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    schema = json.loads(output.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors({"source": {"spec": "/dev/video0"}})) == []
    assert list(validator.iter_errors({"windwo_s": 3}))
    assert list(validator.iter_errors({"mqtt": {"qos": 3}}))


def test_validate_rejects_unknown_profile(tmp_path, capsys) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("profile: raspberry-pi-6\n", encoding="utf-8")

    status = config_command("validate", str(path))

    captured = capsys.readouterr()
    assert status == EXIT_CONFIG
    assert captured.out == ""
    assert "device profile 'raspberry-pi-6' not found" in captured.err
    assert "available profiles: " in captured.err
    assert "raspberry-pi-5" in captured.err


def test_validate_rejects_unknown_model(tmp_path, capsys) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("profile: generic-x86_64\nmodels:\n  detector: mtcn\n  emotion: {name: fer-mini-xceptio}\n")

    status = config_command("validate", str(path))

    captured = capsys.readouterr()
    assert status == EXIT_CONFIG
    assert captured.out == ""
    assert f"{path}:3: models.detector: model 'mtcn' is neither in the catalog nor installed" in captured.err
    assert "did you mean 'mtcnn'?" in captured.err
    assert f"{path}:4: models.emotion: model 'fer-mini-xceptio'" in captured.err
    assert "did you mean 'fer-mini-xception'?" in captured.err


def test_validate_warns_model_not_installed(tmp_path, capsys) -> None:
    store = tmp_path / "empty-store"
    path = tmp_path / "config.yaml"
    path.write_text(f"profile: generic-x86_64\nstore: {store}\nmodels:\n  detector: mtcnn\n", encoding="utf-8")

    status = config_command("validate", str(path))

    captured = capsys.readouterr()
    assert status == 0
    assert "profile: generic-x86_64 (--profile: named explicitly: generic-x86_64)" in captured.out
    assert (
        f"warning: {path}:4: models.detector: model 'mtcnn' is not installed in {store}; "
        f"run 'edge-runtime models pull mtcnn --store {store}'"
    ) in captured.err
    # The roles left to the profile are looked up too, since 'run' loads them as well.
    assert "profile generic-x86_64 models.emotion: model 'fer-mini-xception' is not installed" in captured.err


def test_validate_missing_positional_file(tmp_path, capsys) -> None:
    missing = tmp_path / "nonexist.yaml"

    status = config_command("validate", str(missing))

    error = capsys.readouterr().err
    assert status == EXIT_CONFIG
    assert f"config file {missing} not found; pass the path of an existing file" in error
    assert "--config" not in error
