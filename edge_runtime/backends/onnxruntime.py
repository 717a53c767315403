"""ONNX Runtime backend (CPU provider, or the providers a device profile names)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from edge_runtime.backends.base import Backend, Feeds, Session, SessionOptions, TensorSpec
from edge_runtime.errors import BackendError

logger = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
}


def _spec(node) -> TensorSpec:
    shape = tuple(dim if isinstance(dim, int) else None for dim in node.shape)
    return TensorSpec(node.name, shape, _ORT_TYPES.get(node.type, node.type))


class OnnxRuntimeSession(Session):
    backend_name = "onnxruntime"

    def __init__(self, session) -> None:
        self._session = session
        self._inputs = [_spec(node) for node in session.get_inputs()]
        self._outputs = [_spec(node) for node in session.get_outputs()]

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self._outputs

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        if self._session is None:
            raise BackendError("onnxruntime session is closed; load the model again")
        return self._session.run(None, self._feeds_by_name(feeds))

    def close(self) -> None:
        self._session = None


class OnnxRuntimeBackend(Backend):
    """Loads ``.onnx`` files with ONNX Runtime.

    ``SessionOptions.extra["providers"]`` selects execution providers, e.g.
    ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` on a Jetson.
    """

    name = "onnxruntime"
    formats = ("onnx",)
    install_hint = (
        "pip install 'edge-runtime[onnx]' (from a checkout: pip install '.[onnx]'), or pip install onnxruntime"
    )

    @classmethod
    def check(cls) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def load(self, path: Path, options: SessionOptions = SessionOptions()) -> Session:
        import onnxruntime

        session_options = onnxruntime.SessionOptions()
        if options.num_threads > 0:
            session_options.intra_op_num_threads = options.num_threads
        # One stream of batches at a time: extra inter-op threads only contend.
        session_options.inter_op_num_threads = 1

        available = onnxruntime.get_available_providers()
        requested = list(options.extra.get("providers", ["CPUExecutionProvider"]))
        providers = [p for p in requested if p in available]
        if not providers:
            raise BackendError(
                f"none of the requested ONNX Runtime providers {requested} is available here "
                f"(available: {available}); fix 'providers' in the device profile"
            )

        try:
            session = onnxruntime.InferenceSession(str(path), session_options, providers=providers)
        except Exception as exc:
            raise BackendError(f"{path}: ONNX Runtime cannot load the model: {exc}") from exc

        logger.debug("loaded %s with providers %s", path, session.get_providers())
        return OnnxRuntimeSession(session)
