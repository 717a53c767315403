"""Device profiles: the shipped files, validation and search order (detection is in tests/profiles)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge_runtime.errors import ConfigError
from edge_runtime.profiles import (
    PROFILES_ENV,
    list_profiles,
    load_profile,
)
from tests.fixtures.models import builtin_catalog

REPO_PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"
SHIPPED = [
    "generic-aarch64",
    "generic-x86_64",
    "intel-x86_64-openvino",
    "jetson-nano",
    "jetson-orin-nano",
    "raspberry-pi-4",
    "raspberry-pi-5",
]


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
    assert profile.match is not None, "every shipped profile must be reachable by detection"


@pytest.mark.parametrize("name", ["jetson-nano", "jetson-orin-nano"])
def test_jetson_prefers_tensorrt_fp16(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "cache"))
    profile = load_profile(name)
    first = profile.backends[0]

    providers = profile.session_options(first).extra["providers"]

    assert providers[0][0] == "TensorrtExecutionProvider"
    assert providers[0][1]["trt_fp16_enable"] is True
    assert providers[0][1]["trt_engine_cache_path"] == str(tmp_path / "cache" / "tensorrt")
    assert providers[-1] == "CPUExecutionProvider"
    assert profile.precision_order(first)[0] == "fp16"


def test_session_options_split_device() -> None:
    options = load_profile("generic-x86_64").session_options("openvino")

    assert options.device == "CPU"
    assert options.extra == {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    assert load_profile("raspberry-pi-4").session_options("tflite").num_threads == 4


def test_old_profile_format_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "old",
                "backends": ["openvino", "onnxruntime"],
                "precisions": ["fp32"],
                "num_threads": 2,
                "backend_options": {"openvino": {"device": "CPU", "INFERENCE_PRECISION_HINT": "f32"}},
                "models": {"detector": "mtcnn"},
            }
        )
    )

    profile = load_profile(path)
    options = profile.session_options("openvino")

    assert [p.backend for p in profile.backends] == ["openvino", "onnxruntime"]
    assert (options.device, options.num_threads) == ("CPU", 2)
    assert options.extra == {"INFERENCE_PRECISION_HINT": "f32"}
    assert profile.match is None


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
    ("option-of-other-backend", {"backends": [{"backend": "tflite", "providers": ["CPUExecutionProvider"]}]}, "providers"),
    ("bad-hint", {"backends": [{"backend": "openvino", "performance_hint": "FAST"}]}, "performance_hint"),
    ("edgetpu-threads", {"backends": [{"backend": "tflite", "delegates": [{"name": "edgetpu", "threads": 2}]}]}, "threads"),
    ("bad-regex", {"match": {"device_tree_model_regex": "Raspberry ("}}, "device_tree_model_regex"),
    ("unknown-role", {"tasks": {"face": ["tflite"]}}, "tasks.face"),
    ("zero-interval", {"detection": {"interval": 0}}, "detection.interval"),
    ("negative-budget", {"latency_budget_ms": {"detect": -5}}, "latency_budget_ms"),
    ("unknown-budget-stage", {"latency_budget_ms": {"detection": 50}}, r"latency_budget_ms\.detection.*'detect'"),
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
    data = _profile_data(backends=["tflite"], backend_options={}, overrides={}, description="site copy")
    (tmp_path / "generic-x86_64.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv(PROFILES_ENV, str(tmp_path))

    profile = load_profile("generic-x86_64")

    assert profile.description == "site copy"
    assert [p.backend for p in profile.backends] == ["tflite"]


def test_profile_name_must_match_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(_profile_data(name="other")))
    monkeypatch.setenv(PROFILES_ENV, str(tmp_path))

    with pytest.raises(ConfigError, match="make them equal"):
        load_profile("board")


def test_unknown_profile_lists_available() -> None:
    with pytest.raises(ConfigError) as caught:
        load_profile("no-such-board")

    assert "raspberry-pi-4" in str(caught.value)
