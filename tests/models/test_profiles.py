"""Device profiles: the shipped files, validation, search order and board detection."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from edge_runtime.errors import ConfigError
from edge_runtime.profiles import (
    PROFILES_ENV,
    DeviceProfile,
    detect_profile,
    detect_profile_name,
    list_profiles,
    load_profile,
)
from tests.fixtures.models import builtin_catalog

REPO_PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"
SHIPPED = ["generic-aarch64", "generic-x86_64", "jetson-orin-nano", "raspberry-pi-4", "raspberry-pi-5"]


def test_shipped_profiles_found() -> None:
    assert set(SHIPPED) <= set(list_profiles())
    assert sorted(p.stem for p in REPO_PROFILES.glob("*.yaml")) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_is_consistent(name: str) -> None:
    profile = load_profile(name)
    catalog = builtin_catalog()

    assert profile.name == name
    assert profile.description
    for role in ("detector", "emotion", "age", "gender", "ethnicity"):
        model = getattr(profile.models, role)
        assert model is None or model in catalog, (role, model)
    assert catalog.get(profile.models.detector).manifest.task == "face_detection"
    for model in profile.overrides:
        assert model in catalog


def test_jetson_prefers_gpu_providers() -> None:
    options = load_profile("jetson-orin-nano").session_options("onnxruntime")

    providers = options.extra["providers"]
    assert providers[0] == "TensorrtExecutionProvider"
    assert providers[-1] == "CPUExecutionProvider"


def test_session_options_split_device() -> None:
    options = load_profile("generic-x86_64").session_options("openvino")

    assert options.device == "CPU"
    assert options.extra == {"INFERENCE_PRECISION_HINT": "f32"}
    assert load_profile("raspberry-pi-4").session_options("tflite").num_threads == 4


def _profile_data(**changes: object) -> dict:
    data = yaml.safe_load((REPO_PROFILES / "generic-x86_64.yaml").read_text())
    data.update(changes)
    return data


INVALID = [
    ("unknown-field", {"threads": 2}, "threads"),
    ("no-backends", {"backends": []}, "backends"),
    ("bad-precision", {"precisions": ["fp64"]}, "precisions"),
    ("negative-threads", {"num_threads": -1}, "num_threads"),
    ("duplicate-backend", {"backends": ["tflite", "tflite"]}, "twice"),
    ("stray-options", {"backend_options": {"coral": {"device": "usb"}}}, "coral"),
    ("no-detector", {"models": {"emotion": "fer-mini-xception"}}, "detector"),
]


@pytest.mark.parametrize("changes, expected", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_profile_rejected(tmp_path: Path, changes: dict, expected: str) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(_profile_data(name="custom", **changes)))

    with pytest.raises(ConfigError, match=expected):
        load_profile(path)


def test_env_dir_overrides_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _profile_data(backends=["tflite"], backend_options={}, description="site copy")
    (tmp_path / "generic-x86_64.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv(PROFILES_ENV, str(tmp_path))

    profile = load_profile("generic-x86_64")

    assert profile.description == "site copy"
    assert profile.backends == ["tflite"]


def test_profile_name_must_match_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(_profile_data(name="other")))
    monkeypatch.setenv(PROFILES_ENV, str(tmp_path))

    with pytest.raises(ConfigError, match="make them equal"):
        load_profile("board")


def test_unknown_profile_lists_available() -> None:
    with pytest.raises(ConfigError) as caught:
        load_profile("no-such-board")

    assert "raspberry-pi-4" in str(caught.value)


def _device_tree(tmp_path: Path, model: str) -> Path:
    path = tmp_path / "model"
    path.write_bytes(model.encode() + b"\x00")
    return path


@pytest.mark.parametrize(
    "model, expected",
    [
        ("Raspberry Pi 4 Model B Rev 1.4", "raspberry-pi-4"),
        ("Raspberry Pi 5 Model B Rev 1.0", "raspberry-pi-5"),
        ("Raspberry Pi Compute Module 4 Rev 1.0", "raspberry-pi-4"),
        ("Raspberry Pi 3 Model B Plus Rev 1.3", "raspberry-pi-4"),
    ],
)
def test_detect_raspberry_pi(tmp_path: Path, model: str, expected: str) -> None:
    name = detect_profile_name(
        device_tree_model=_device_tree(tmp_path, model), tegra_release=tmp_path / "absent", machine="aarch64"
    )

    assert name == expected


def test_detect_jetson(tmp_path: Path) -> None:
    tegra = tmp_path / "nv_tegra_release"
    tegra.write_text("# R36 (release), REVISION: 3.0\n")

    name = detect_profile_name(
        device_tree_model=_device_tree(tmp_path, "NVIDIA Jetson Orin Nano Developer Kit"),
        tegra_release=tegra,
        machine="aarch64",
    )

    assert name == "jetson-orin-nano"


@pytest.mark.parametrize(
    "machine, expected",
    [("x86_64", "generic-x86_64"), ("AMD64", "generic-x86_64"), ("aarch64", "generic-aarch64")],
)
def test_detect_by_architecture(tmp_path: Path, machine: str, expected: str) -> None:
    name = detect_profile_name(
        device_tree_model=tmp_path / "absent", tegra_release=tmp_path / "absent", machine=machine
    )

    assert name == expected


def test_detect_unknown_architecture_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge_runtime.profiles")

    name = detect_profile_name(device_tree_model=tmp_path / "a", tegra_release=tmp_path / "b", machine="riscv64")

    assert name == "generic-x86_64"
    assert "riscv64" in caplog.text


def test_detect_profile_on_this_machine() -> None:
    profile = detect_profile()

    assert isinstance(profile, DeviceProfile)
    assert profile.name == detect_profile_name()
