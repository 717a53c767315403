"""``${...}`` substitution in configuration files, credentials, and the plain-text password warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_runtime.config import load_config
from edge_runtime.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_variable_and_default_substituted(tmp_path) -> None:
    path = write(
        tmp_path,
        "source:\n  spec: ${CAMERA}\nwindow_s: ${WINDOW:-7.5}\nmqtt:\n  broker: mqtt://127.0.0.1:${PORT:-1883}\n",
    )

    config = load_config(path, environ={"CAMERA": "/dev/video2", "PORT": "1999"})

    assert config.source.spec == "/dev/video2"
    assert config.window_s == 7.5
    assert config.mqtt.broker == "mqtt://127.0.0.1:1999"


def test_default_used_for_empty_variable(tmp_path) -> None:
    path = write(tmp_path, "window_s: ${WINDOW:-4}\n")

    config = load_config(path, environ={"WINDOW": ""})

    assert config.window_s == 4.0


def test_plain_scalar_typed_again(tmp_path) -> None:
    path = write(tmp_path, "models:\n  ethnicity: ${ETHNICITY:-false}\nsource:\n  every_n: ${EVERY}\n")

    config = load_config(path, environ={"EVERY": "3"})

    assert config.models.ethnicity is False
    assert config.source.every_n == 3


def test_quoted_scalar_stays_string(tmp_path) -> None:
    path = write(tmp_path, "models:\n  detector: '${DETECTOR:-false}'\n")

    config = load_config(path, environ={})

    assert config.models.detector is not None
    assert config.models.detector.name == "false"


def test_value_cannot_change_structure(tmp_path) -> None:
    path = write(tmp_path, "mqtt:\n  device_id: ${DEVICE}\n")

    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={"DEVICE": "pi: {evil: 1} # x"})

    # The whole value reaches the validator as one string, which rejects it.
    assert "device id 'pi: {evil: 1} # x' is invalid" in str(raised.value)


def test_missing_variable_names_it_and_line(tmp_path) -> None:
    path = write(tmp_path, "source:\n  spec: /dev/video0\nmqtt:\n  broker: mqtt://${BROKER_HOST}:1883\n")

    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})

    message = str(raised.value)
    assert f"{path}:4: mqtt.broker:" in message
    assert "environment variable BROKER_HOST is not set" in message
    assert "${BROKER_HOST:-default}" in message


def test_invalid_expression_rejected(tmp_path) -> None:
    path = write(tmp_path, "source:\n  spec: ${not valid}\n")

    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})

    assert f"{path}:2: source.spec: '${{not valid}}' is not a valid substitution" in str(raised.value)


def test_dollar_escape_and_comments(tmp_path) -> None:
    path = write(tmp_path, "# ${IGNORED} in a comment\nmqtt:\n  prefix: price$$list\n")

    config = load_config(path, environ={})

    assert config.mqtt.prefix == "price$list"


def test_alias_substituted_once(tmp_path) -> None:
    path = write(tmp_path, "source:\n  spec: &camera a$$b\nmqtt:\n  prefix: *camera\n")

    config = load_config(path, environ={})

    assert config.source.spec == "a$b"
    assert config.mqtt.prefix == "a$b"


def test_credential_gives_path(tmp_path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt-password").write_text("s3cret\n")
    path = write(tmp_path, "mqtt:\n  username: edge\n  password_file: ${credential:mqtt-password}\n")

    config = load_config(path, environ={"CREDENTIALS_DIRECTORY": str(credentials)})

    assert config.mqtt.password_file == credentials / "mqtt-password"
    assert "s3cret" not in config.model_dump_json()


def test_credential_directory_argument(tmp_path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt-tls-key").write_text("-----BEGIN PRIVATE KEY-----\n")
    path = write(
        tmp_path,
        "mqtt:\n  tls:\n    cert_file: /etc/ssl/client.pem\n    key_file: ${credential:mqtt-tls-key}\n",
    )

    config = load_config(path, environ={}, credentials_directory=credentials)

    assert config.mqtt.tls.key_file == credentials / "mqtt-tls-key"


def test_credential_without_directory_explained(tmp_path) -> None:
    path = write(tmp_path, "mqtt:\n  password_file: ${credential:mqtt-password}\n")

    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})

    message = str(raised.value)
    assert f"{path}:2: mqtt.password_file:" in message
    assert "CREDENTIALS_DIRECTORY is not set" in message
    assert "LoadCredential=mqtt-password" in message


def test_missing_credential_names_file(tmp_path) -> None:
    path = write(tmp_path, "mqtt:\n  password_file: ${credential:mqtt-password}\n")

    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})

    assert "credential mqtt-password not found" in str(raised.value)


def test_blank_credential_names_source_file(tmp_path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    # What the unit's SetCredential=mqtt-password:\n fallback passes.
    (credentials / "mqtt-password").write_text("\n")
    path = write(tmp_path, "mqtt:\n  password_file: ${credential:mqtt-password}\n")

    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={"CREDENTIALS_DIRECTORY": str(credentials)})

    message = str(raised.value)
    assert "credential mqtt-password is blank" in message
    assert "/etc/edge-runtime/credentials/mqtt-password" in message


@pytest.mark.parametrize("credential_id", ["../etc/shadow", "a/b", ".."])
def test_credential_id_cannot_leave_directory(tmp_path, credential_id) -> None:
    path = write(tmp_path, f"mqtt:\n  password_file: ${{credential:{credential_id}}}\n")

    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})

    assert "is invalid" in str(raised.value)


def test_plaintext_password_warns_without_secret(tmp_path, caplog) -> None:
    path = write(tmp_path, "mqtt:\n  username: edge\n  password: hunter2-secret\n")

    with caplog.at_level(logging.WARNING, logger="edge_runtime.config"):
        config = load_config(path, environ={})

    assert config.mqtt.password.get_secret_value() == "hunter2-secret"
    assert "hunter2-secret" not in repr(config)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"{path}:3: mqtt.password contains the broker password in plain text" in warnings[0]
    assert "${credential:mqtt-password}" in warnings[0]
    assert "hunter2-secret" not in caplog.text


def test_password_from_variable_does_not_warn(tmp_path, caplog) -> None:
    path = write(tmp_path, "mqtt:\n  username: edge\n  password: ${MQTT_PASSWORD}\n")

    with caplog.at_level(logging.WARNING, logger="edge_runtime.config"):
        config = load_config(path, environ={"MQTT_PASSWORD": "from-env"})

    assert config.mqtt.password.get_secret_value() == "from-env"
    assert caplog.records == []


def test_password_and_file_exclusive(tmp_path) -> None:
    path = write(tmp_path, "mqtt:\n  password: a\n  password_file: /etc/edge-runtime/pw\n")

    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})

    assert "mqtt.password and mqtt.password_file are both set" in str(raised.value)


def test_all_missing_variables_in_one_error(tmp_path) -> None:
    path = write(tmp_path, "source:\n  spec: ${CAMERA}\nmqtt:\n  broker: mqtt://${BROKER_HOST}:${BROKER_PORT}\n")

    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={"CAMERA_X": "1"})

    lines = str(raised.value).splitlines()
    assert lines[0] == "3 substitutions failed:"
    assert lines[1].startswith(f"  {path}:2: source.spec: environment variable CAMERA is not set")
    assert lines[2].startswith(f"  {path}:4: mqtt.broker: environment variable BROKER_HOST is not set")
    assert lines[3].startswith(f"  {path}:4: mqtt.broker: environment variable BROKER_PORT is not set")
