"""Precedence of --profile, the override file and detection, and merging the override file."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from edge_runtime.errors import ConfigError
from edge_runtime.profiles import OVERRIDE_FILE_ENV, load_profile, profile_json_schema, resolve_profile
from tests.profiles.trees import PI4_CPUINFO, make_tree

REPO_PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"
PI4 = dict(device_tree_model="Raspberry Pi 4 Model B Rev 1.4", cpuinfo=PI4_CPUINFO)


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_override_file_merges_over_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "root", **PI4)
    override = _write(
        tmp_path / "site.yaml",
        {"num_threads": 2, "detection": {"interval": 3}, "tasks": {"age": ["onnxruntime"]}},
    )
    monkeypatch.setenv(OVERRIDE_FILE_ENV, str(override))

    choice = resolve_profile(root=root, machine="aarch64")
    profile = choice.profile
    shipped = load_profile("raspberry-pi-4")

    assert profile.name == "raspberry-pi-4"
    assert choice.source == "detected"
    assert choice.override_file == override
    assert profile.num_threads == 2
    assert profile.detection.interval == 3
    assert [p.backend for p in profile.preferences("age")] == ["onnxruntime"]
    assert profile.backends == shipped.backends
    assert profile.models == shipped.models
    assert profile.latency_budget_ms == shipped.latency_budget_ms


def test_nested_mapping_merges_key_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    override = _write(tmp_path / "site.yaml", {"models": {"emotion": None}, "latency_budget_ms": {"detect": 90}})
    monkeypatch.setenv(OVERRIDE_FILE_ENV, str(override))

    profile = resolve_profile("raspberry-pi-4", root=make_tree(tmp_path / "root")).profile

    assert profile.models.emotion is None
    assert profile.models.detector == "blazeface-full-range"
    assert profile.latency_budget_ms == {"detect": 90, "emotion": 30, "age": 30, "gender": 30, "frame": 250}


def test_override_base_beats_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OVERRIDE_FILE_ENV)
    root = make_tree(tmp_path, **PI4, override="base: raspberry-pi-5\nnum_threads: 3\n")
    override = tmp_path / "etc" / "edge-runtime" / "profile.yaml"

    choice = resolve_profile(root=root, machine="aarch64")

    assert choice.profile.name == "raspberry-pi-5"
    assert choice.source == "override file"
    assert choice.override_file == override
    assert choice.profile.num_threads == 3


def test_explicit_name_beats_override_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OVERRIDE_FILE_ENV)
    root = make_tree(tmp_path, **PI4, override="base: raspberry-pi-5\nnum_threads: 3\n")

    choice = resolve_profile("generic-aarch64", root=root, machine="aarch64")

    assert choice.profile.name == "generic-aarch64"
    assert choice.source == "--profile"
    # The override file's other keys still apply to an explicitly named profile.
    assert choice.profile.num_threads == 3


def test_default_override_file_under_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OVERRIDE_FILE_ENV)
    root = make_tree(tmp_path, **PI4, override="num_threads: 1\n")

    choice = resolve_profile(root=root, machine="aarch64")

    assert choice.override_file == root / "etc" / "edge-runtime" / "profile.yaml"
    assert choice.profile.num_threads == 1


def test_empty_variable_turns_override_off(tmp_path: Path) -> None:
    root = make_tree(tmp_path, **PI4, override="num_threads: 1\n")

    choice = resolve_profile(root=root, machine="aarch64")

    assert choice.override_file is None
    assert choice.profile.num_threads == 4


def test_missing_override_file_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OVERRIDE_FILE_ENV, str(tmp_path / "absent.yaml"))

    with pytest.raises(ConfigError, match=f"{OVERRIDE_FILE_ENV}=.*absent.yaml.*not found"):
        resolve_profile(root=make_tree(tmp_path / "root"), machine="x86_64")


def test_invalid_override_names_file_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    override = _write(tmp_path / "site.yaml", {"backends": [{"backend": "openvino", "num_streams": "many"}]})
    monkeypatch.setenv(OVERRIDE_FILE_ENV, str(override))

    with pytest.raises(ConfigError) as caught:
        resolve_profile("generic-x86_64", root=make_tree(tmp_path / "root"))

    message = str(caught.value)
    assert str(override) in message
    assert "backends.0" in message
    assert "num_streams" in message


def test_override_cannot_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OVERRIDE_FILE_ENV, str(_write(tmp_path / "site.yaml", {"name": "mine"})))

    with pytest.raises(ConfigError, match="base: NAME"):
        resolve_profile("generic-x86_64", root=make_tree(tmp_path / "root"))


def test_invalid_profile_names_file_and_key(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO_PROFILES / "jetson-orin-nano.yaml").read_text())
    data["backends"][0]["providers"][0]["options"] = "fp16"
    path = _write(tmp_path / "jetson-orin-nano.yaml", data)

    with pytest.raises(ConfigError) as caught:
        load_profile(path)

    message = str(caught.value)
    assert message.startswith(f"{path}: invalid device profile")
    assert "backends.0.providers.0" in message
    assert "options" in message


def test_schema_file_is_current() -> None:
    stored = json.loads((REPO_PROFILES / "profile.schema.json").read_text())

    assert stored == profile_json_schema(), (
        "device_profiles/profile.schema.json is stale; regenerate it with "
        "'edge-runtime profile --schema > device_profiles/profile.schema.json'"
    )


@pytest.mark.parametrize("path", sorted(REPO_PROFILES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_profile_valid_by_json_schema(path: Path) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text()), profile_json_schema())


def test_json_schema_rejects_unknown_key() -> None:
    data = yaml.safe_load((REPO_PROFILES / "raspberry-pi-4.yaml").read_text())
    data["backends"][0]["thread"] = 4

    with pytest.raises(jsonschema.ValidationError, match="thread"):
        jsonschema.validate(data, profile_json_schema())


def test_override_typo_names_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    override = tmp_path / "site.yaml"
    override.write_text("num_threads: 2\nlatency_budget_ms: {detekt: 5}\ndetection:\n  intervl: 3\n")
    monkeypatch.setenv(OVERRIDE_FILE_ENV, str(override))

    with pytest.raises(ConfigError) as caught:
        resolve_profile("generic-x86_64", root=make_tree(tmp_path / "root"))

    lines = str(caught.value).splitlines()
    assert lines[0] == f"{override} (merged over profile generic-x86_64): invalid device profile:"
    assert lines[1].startswith(f"  {override}:2: latency_budget_ms.detekt: 'detekt' is not an allowed key here")
    assert "'detect'" in lines[1]
    assert lines[2] == (
        f"  {override}:4: detection.intervl: unknown key; 'edge-runtime profile --schema' prints every key"
    )
