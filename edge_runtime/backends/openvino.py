"""OpenVINO backend: loads OpenVINO IR (``.xml`` + ``.bin``), ONNX and TFLite files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from edge_runtime.backends.base import Backend, Feeds, Session, SessionOptions, TensorSpec
from edge_runtime.errors import BackendError

logger = logging.getLogger(__name__)


def _spec(port, index: int) -> TensorSpec:
    shape = tuple(dim.get_length() if dim.is_static else None for dim in port.get_partial_shape())
    try:
        name = port.get_any_name()
    except RuntimeError:  # converted graphs may leave a tensor unnamed
        name = f"output_{index}"
    return TensorSpec(name, shape, port.get_element_type().to_dtype().name)


class OpenVinoSession(Session):
    backend_name = "openvino"

    def __init__(self, compiled, inputs: list[TensorSpec], outputs: list[TensorSpec], batch_static: bool) -> None:
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._inputs = inputs
        self._outputs = outputs
        self._batch_static = batch_static

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self._outputs

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self._request.infer(feeds)
        # Copy: the request reuses its output buffers on the next call.
        return [np.array(results[port], copy=True) for port in self._compiled.outputs]

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        if self._compiled is None:
            raise BackendError("OpenVINO session is closed; load the model again")
        named = self._feeds_by_name(feeds)

        batch = next(iter(named.values())).shape[0]
        if not self._batch_static or batch == 1:
            return self._infer(named)

        # The graph kept a static batch of 1 (its reshape failed), so run per sample.
        parts = [self._infer({k: v[i : i + 1] for k, v in named.items()}) for i in range(batch)]
        return [np.concatenate([p[j] for p in parts], axis=0) for j in range(len(self._outputs))]

    def compiled_property(self, name: str) -> object:
        """Return a property of the compiled model, e.g. ``PERFORMANCE_HINT`` or ``NUM_STREAMS``."""
        if self._compiled is None:
            raise BackendError("OpenVINO session is closed; load the model again")
        return self._compiled.get_property(name)

    def close(self) -> None:
        self._request = None
        self._compiled = None


class OpenVinoBackend(Backend):
    """Compiles models with OpenVINO on ``SessionOptions.device`` (CPU by default)."""

    name = "openvino"
    formats = ("openvino", "onnx", "tflite")
    install_hint = (
        "pip install 'edge-runtime[openvino]' (from a checkout: pip install '.[openvino]'), or pip install openvino"
    )

    @classmethod
    def check(cls) -> str:
        import openvino

        return openvino.__version__ if hasattr(openvino, "__version__") else openvino.get_version()

    def load(self, path: Path, options: SessionOptions = SessionOptions()) -> Session:
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:
            raise BackendError(f"{path}: OpenVINO cannot read the model: {exc}") from exc

        # Make the batch axis dynamic so that all faces of a frame run at once.
        batch_static = False
        shapes = {}
        for port in model.inputs:
            shape = port.get_partial_shape()
            if shape.rank.is_static and shape.rank.get_length() >= 1 and shape[0].is_static:
                shape[0] = ov.Dimension(-1)
                shapes[port] = shape
        if shapes:
            try:
                model.reshape(shapes)
            except Exception as exc:
                logger.debug("%s: keeping a static batch, reshape failed: %s", path, exc)
                batch_static = True
                model = core.read_model(str(path))

        config: dict[str, object] = {}
        if options.device.upper() == "CPU":
            # OpenVINO picks bf16 on CPUs with AVX-512 BF16/AMX, which moves fp32
            # outputs by about 1e-2 (measured on the age model). Keep fp32 unless
            # the device profile sets another hint.
            config["INFERENCE_PRECISION_HINT"] = "f32"
            # Unpinned threads move off cores that other processes keep busy. MTCNN and B0 on a
            # 2-core x86-64 VM under a load average of 5 ran at 18 fps unpinned against 14 pinned.
            config["ENABLE_CPU_PINNING"] = False
            # The thread count is a property of the CPU plugin, so other devices keep their defaults.
            if options.num_threads > 0:
                config["INFERENCE_NUM_THREADS"] = options.num_threads
        elif options.num_threads > 0:
            logger.debug("%s: num_threads=%d applies to the CPU device only, not to %s",
                         path, options.num_threads, options.device)
        for key, value in options.extra.items():
            config[str(key)] = value

        try:
            compiled = core.compile_model(model, options.device, config)
        except Exception as exc:
            raise BackendError(
                f"{path}: OpenVINO cannot compile the model for device {options.device!r} "
                f"(available: {core.available_devices}): {exc}"
            ) from exc

        inputs = [_spec(port, i) for i, port in enumerate(model.inputs)]
        outputs = [_spec(port, i) for i, port in enumerate(model.outputs)]
        return OpenVinoSession(compiled, inputs, outputs, batch_static)
