"""Service configuration: YAML loading, error messages with lines, flag overrides, the example file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from edge_runtime.config import (
    Config,
    ModelChoice,
    apply_overrides,
    device_id_from_hostname,
    load_config,
    parse_broker_url,
    parse_config,
)
from edge_runtime.commands import run as run_command
from edge_runtime.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_point_at_loopback_and_camera() -> None:
    config = Config()

    assert config.source.spec == "0"
    assert config.mqtt.broker == "mqtt://127.0.0.1:1883"
    assert config.mqtt.qos == 1
    assert config.window_s == 10.0


def test_load_config_reads_nested_keys(tmp_path) -> None:
    path = write(
        tmp_path,
        "source:\n  spec: clip.mp4\n  every_n: 2\n"
        "models:\n  emotion: fer-mini-xception\n  age: false\n  detector: {name: mtcnn, backend: onnxruntime}\n"
        "mqtt:\n  device_id: pi-4\n  prefix: site/a\n",
    )

    config = load_config(path)

    assert config.source.spec == "clip.mp4"
    assert config.source.every_n == 2
    assert config.models.detector == ModelChoice(name="mtcnn", backend="onnxruntime")
    assert config.models.role_models() == {"detector": "mtcnn", "emotion": "fer-mini-xception", "age": None}
    assert config.models.role_backends() == {"detector": "onnxruntime"}
    assert config.mqtt.resolved_device_id == "pi-4"
    assert config.mqtt.prefix == "site/a"


def test_unknown_key_names_key_and_line(tmp_path) -> None:
    path = write(tmp_path, "source:\n  spec: clip.mp4\nmqtt:\n  broker: mqtt://127.0.0.1:1883\n  devce_id: pi\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = str(caught.value)
    assert f"{path}:5" in message
    assert "mqtt.devce_id" in message
    assert "unknown key" in message


def test_invalid_value_names_key_and_line(tmp_path) -> None:
    path = write(tmp_path, "window_s: 10\nsource:\n  every_n: 0\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert f"{path}:3: source.every_n" in str(caught.value)


def test_invalid_model_mapping_reports_only_its_field(tmp_path) -> None:
    path = write(tmp_path, "models:\n  emotion:\n    name: fer\n    precison: int8\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    lines = str(caught.value).splitlines()[1:]
    assert len(lines) == 1
    assert "models.emotion.precison" in lines[0]
    assert f"{path}:4" in lines[0]


def test_invalid_yaml_names_line(tmp_path) -> None:
    path = write(tmp_path, "source:\n  spec: [unclosed\nwindow_s: 3\n")

    with pytest.raises(ConfigError, match=r"config\.yaml:\d+: invalid YAML"):
        load_config(path)


def test_missing_file_names_the_flag(tmp_path) -> None:
    with pytest.raises(ConfigError, match="--config"):
        load_config(tmp_path / "absent.yaml")


def test_empty_file_gives_defaults(tmp_path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


def test_top_level_list_is_rejected() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        parse_config(["source"])


@pytest.mark.parametrize(
    "url, expected",
    [
        ("mqtt://127.0.0.1:1883", ("mqtt", "127.0.0.1", 1883)),
        ("mqtt://localhost", ("mqtt", "localhost", 1883)),
        ("mqtts://127.0.0.1", ("mqtts", "127.0.0.1", 8883)),
        ("mqtt://[::1]:1884", ("mqtt", "::1", 1884)),
    ],
)
def test_parse_broker_url(url, expected) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("tcp://127.0.0.1:1883", "mqtt://"),
        ("mqtt://", "no host"),
        ("mqtt://127.0.0.1:99999", "invalid port"),
        ("mqtt://user:secret@127.0.0.1", "credentials"),
        ("mqtt://127.0.0.1/topic", "path"),
    ],
)
def test_invalid_broker_url(url, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_config({"mqtt": {"broker": url}})


@pytest.mark.parametrize("device_id", ["a/b", "a+b", "#", "", "with space", "-lead", "x" * 65])
def test_invalid_device_id(device_id) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"mqtt": {"device_id": device_id}})

    message = str(caught.value)
    assert "mqtt.device_id" in message
    assert f"device id {device_id!r} is invalid" in message
    assert "letters, digits, '_', '.' or '-'" in message
    assert "pattern" not in message
    assert "Value error" not in message


@pytest.mark.parametrize("prefix", ["", "site/#", "a+b", "with space"])
def test_invalid_topic_prefix(prefix) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"mqtt": {"prefix": prefix}})

    message = str(caught.value)
    assert f"mqtt.prefix: topic prefix {prefix!r} is invalid" in message
    assert "pattern" not in message


def test_device_id_from_hostname() -> None:
    assert device_id_from_hostname("pi-kitchen.local") == "pi-kitchen.local"
    assert device_id_from_hostname("host name/1") == "host-name-1"
    assert device_id_from_hostname("///") == "device"


def test_overrides_replace_file_values(tmp_path) -> None:
    config = load_config(write(tmp_path, "source:\n  spec: file.mp4\n  every_n: 3\nwindow_s: 5\n"))

    changed = apply_overrides(
        config,
        {"source.spec": "other.mp4", "mqtt.broker": "mqtt://127.0.0.1:1999", "window_s": None, "source.realtime": True},
    )

    assert changed.source.spec == "other.mp4"
    assert changed.source.every_n == 3
    assert changed.source.realtime is True
    assert changed.window_s == 5
    assert changed.mqtt.broker == "mqtt://127.0.0.1:1999"


def test_invalid_override_names_key() -> None:
    with pytest.raises(ConfigError, match="window_s"):
        apply_overrides(Config(), {"window_s": -1})


def test_example_config_loads() -> None:
    assert load_config(EXAMPLE) == Config()


def _field_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths |= _field_paths(annotation, f"{prefix}{name}.")
        else:
            paths.add(f"{prefix}{name}")
    return paths


def _yaml_paths(data: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in data.items():
        if isinstance(value, dict) and value:
            paths |= _yaml_paths(value, f"{prefix}{key}.")
        else:
            paths.add(f"{prefix}{key}")
    return paths


def test_example_config_header_lists_every_flag() -> None:
    subparsers = argparse.ArgumentParser().add_subparsers()
    run_command.register(subparsers)
    run_parser = subparsers.choices["run"]
    flags = {
        option
        for action in run_parser._actions
        for option in action.option_strings
        if option.startswith("--") and option not in ("--help", "--config")
    }
    header = EXAMPLE.read_text(encoding="utf-8").split("\n\n", 1)[0]

    assert flags
    assert {flag for flag in flags if flag not in header} == set()


def test_example_config_documents_every_key() -> None:
    documented = _yaml_paths(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")))

    assert documented == _field_paths(Config)


def test_wrong_type_shows_value_and_fix(tmp_path) -> None:
    path = write(tmp_path, "source:\n  every_n: two\n  realtime: maybe\nwindow_s: 10s\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = str(caught.value)
    assert f"{path}:2: source.every_n: 'two' is not an integer; write a whole number" in message
    assert f"{path}:3: source.realtime: 'maybe' is not a boolean; write true or false" in message
    assert f"{path}:4: window_s: '10s' is not a number" in message
    assert "Input should be" not in message


def test_errors_sorted_by_line(tmp_path) -> None:
    path = write(tmp_path, "mqtt:\n  qos: 5\nwindow_s: 0\nsource:\n  every_n: 0\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    lines = str(caught.value).splitlines()[1:]
    assert [line.split(": ")[0] for line in lines] == [f"  {path}:2", f"  {path}:3", f"  {path}:5"]
    assert "mqtt.qos: 5 is not one of 0, 1 or 2" in lines[0]
    assert "window_s: 0 is too small; give a value > 0" in lines[1]


def test_unknown_key_suggests_close_key(tmp_path) -> None:
    path = write(tmp_path, "source:\n  relatime: true\nwindow: 5\nzzz: 1\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    lines = str(caught.value).splitlines()[1:]
    assert "source.relatime: unknown key; did you mean `realtime`?" in lines[0]
    assert "`edge-runtime config schema` prints every key" in lines[0]
    assert "window: unknown key; did you mean `window_s`?" in lines[1]
    assert "zzz: unknown key; the keys here are source, models, profile" in lines[2]
    assert "examples/config.yaml" not in str(caught.value)


def test_scalar_section_shows_expected_form(tmp_path) -> None:
    path = write(tmp_path, "source: 0\nmqtt: mqtt://127.0.0.1:1884\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = str(caught.value)
    assert f"{path}:1: source: 0 is a single value, but source takes a mapping" in message
    assert 'write it as source: {spec: "0"}' in message
    assert 'write it as mqtt: {broker: "mqtt://127.0.0.1:1884"}' in message


@pytest.mark.parametrize("url", ["mqtt://127.0.0.1:99999", "mqtt://127.0.0.1:port", "mqtt://127.0.0.1:0"])
def test_broker_port_error_names_fix(url) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"mqtt": {"broker": url}})

    message = str(caught.value)
    assert f"broker URL {url!r} has an invalid port" in message
    assert "give a port from 1 to 65535, e.g. mqtt://127.0.0.1:1883" in message
