"""A backend plugin whose framework is not installed, as on a board that lacks its wheel."""

from __future__ import annotations

import importlib
from pathlib import Path

from edge_runtime.backends.base import Backend, Session, SessionOptions


class MissingFrameworkBackend(Backend):
    name = "missing-framework"
    formats = ("onnx", "tflite")
    install_hint = "pip install edge-runtime-missing-framework"

    @classmethod
    def check(cls) -> str:
        framework = importlib.import_module("edge_runtime_missing_framework")
        return str(framework)

    def load(self, path: Path, options: SessionOptions = SessionOptions()) -> Session:
        raise AssertionError("a backend that fails its check must never load a model")
