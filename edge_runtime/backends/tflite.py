"""TFLite backend: ``tflite-runtime`` where its wheel exists, else ``ai-edge-litert``.

Both packages expose the same ``Interpreter`` class. Quantized inputs and
outputs are handled here: float feeds are quantized with the tensor's scale
and zero point, and integer outputs are dequantized to float32. The model
code above therefore handles fp32 and int8 variants alike.
"""

from __future__ import annotations

import ctypes
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from edge_runtime.backends.base import Backend, Feeds, Session, SessionOptions, TensorSpec
from edge_runtime.backends.native_stderr import capture_native_stderr
from edge_runtime.errors import BackendError

logger = logging.getLogger(__name__)


EDGETPU_LIBRARY = "libedgetpu.so.1"

# Printed by the TFLite runtime's C++ logger when the process applies its
# first XNNPACK delegate, whatever the Python log level.
XNNPACK_NOTICE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."

# True until a load has printed the notice: loads capture native stderr only until then.
_xnnpack_notice_pending = True


def _interpreter_module():
    try:
        from tflite_runtime import interpreter  # type: ignore[import-not-found]
    except ImportError:
        from ai_edge_litert import interpreter  # type: ignore[import-not-found]
    return interpreter


def _allocate_tensors(interpreter) -> None:
    """Call ``allocate_tensors``, which applies the default XNNPACK delegate, and log its notice at INFO.

    TFLite's minimal logger prints the notice from C++ to stderr. It takes
    its threshold only from C++ (``MinimalLogger::SetMinimumLogSeverity``),
    which ai-edge-litert 2.3.0 does not expose to Python, and it ignores
    ``TF_CPP_MIN_LOG_LEVEL``. So until the notice has appeared once, this
    call runs with native stderr captured: the notice becomes an INFO record
    that ``--log-level`` filters, and every other line goes to stderr as it was.
    """
    global _xnnpack_notice_pending
    if not _xnnpack_notice_pending:
        interpreter.allocate_tensors()
        return

    with capture_native_stderr(frozenset({XNNPACK_NOTICE}), logger) as seen:
        interpreter.allocate_tensors()
    if seen:
        _xnnpack_notice_pending = False


def _delegate_settings(options: SessionOptions) -> tuple[Optional[int], list[tuple[str, dict[str, str]]]]:
    """Return the interpreter thread count and the external delegates ``(library, options)`` to load.

    ``extra["delegates"]`` lists mappings with ``name`` xnnpack (``threads``
    sets the interpreter's and XNNPACK's thread count), edgetpu (library
    libedgetpu.so.1 unless ``library`` is given) or external (``library``).
    """
    threads = options.num_threads if options.num_threads > 0 else None
    external = []
    for delegate in options.extra.get("delegates", []) or []:  # type: ignore[union-attr]
        name = delegate.get("name")
        if name == "xnnpack":
            if delegate.get("threads"):
                threads = int(delegate["threads"])
        elif name in ("edgetpu", "external"):
            library = delegate.get("library") or (EDGETPU_LIBRARY if name == "edgetpu" else None)
            if not library:
                raise BackendError(f"TFLite delegate {delegate}: 'library' is missing; name its shared library")
            external.append((str(library), {str(k): str(v) for k, v in (delegate.get("options") or {}).items()}))
        else:
            raise BackendError(f"unknown TFLite delegate {name!r}; use xnnpack, edgetpu or external")
    return threads, external


def _spec(detail: dict) -> TensorSpec:
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) else detail["shape"]
    shape = tuple(int(d) if d >= 0 else None for d in dims)
    return TensorSpec(detail["name"], shape, np.dtype(detail["dtype"]).name)


def _quantize(array: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if array.dtype == dtype:
        return array
    scale, zero_point = detail["quantization"]
    if dtype.kind in "iu" and scale:
        info = np.iinfo(dtype)
        quantized = np.round(array.astype(np.float32) / scale + zero_point)
        return np.clip(quantized, info.min, info.max).astype(dtype)
    return array.astype(dtype)


def _dequantize(array: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if array.dtype.kind in "iu" and scale:
        return (array.astype(np.float32) - zero_point) * scale
    return array


# Interpreters a session keeps for a graph with free height and width, one per input shape
# (an MTCNN image pyramid uses a handful of sizes per camera resolution).
MAX_SHAPES = 16


def has_free_spatial_axes(interpreter) -> bool:
    """Return True when an input of ``interpreter`` has a free axis other than the batch axis."""
    for detail in interpreter.get_input_details():
        signature = detail.get("shape_signature")
        if signature is not None and any(int(d) < 0 for d in list(signature)[1:]):
            return True
    return False


class TfliteSession(Session):
    """Runs one ``.tflite`` model; float feeds in, float outputs out, whatever the tensors' types.

    A graph whose inputs have a free height and width (MTCNN's P-Net) gets
    one interpreter per input shape, made by ``factory``. The session keeps
    the last MAX_SHAPES of them, so a pyramid level does not prepare the
    delegate again on every frame.
    """

    backend_name = "tflite"

    def __init__(self, interpreter, path: Path, factory: Optional[Callable[[], object]] = None) -> None:
        self._interpreter = interpreter
        self._path = path
        self._batch = 1
        self._loop_batches = False
        self._factory = factory
        # The interpreter made at load time is not allocated yet when shapes are free, so the first shape takes it.
        self._spare = interpreter if factory is not None else None
        self._by_shape: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self._refresh()

    def _refresh(self) -> None:
        self._input_details = self._interpreter.get_input_details()
        self._output_details = self._interpreter.get_output_details()
        self._inputs = [_spec(d) for d in self._input_details]
        self._outputs = [_spec(d) for d in self._output_details]

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self._outputs

    def _resize(self, batch: int) -> bool:
        """Resize every input to ``batch``; return False when the graph refuses."""
        try:
            for detail in self._input_details:
                shape = list(detail["shape"])
                shape[0] = batch
                self._interpreter.resize_tensor_input(detail["index"], shape, strict=False)
            self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            logger.debug("%s: cannot resize the batch to %d (%s); running per sample", self._path, batch, exc)
            for detail in self._input_details:
                shape = list(detail["shape"])
                shape[0] = 1
                self._interpreter.resize_tensor_input(detail["index"], shape, strict=False)
            self._interpreter.allocate_tensors()
            self._batch = 1
            self._refresh()
            return False
        self._batch = batch
        self._refresh()
        return True

    def _invoke(self, named: dict[str, np.ndarray]) -> list[np.ndarray]:
        for detail in self._input_details:
            self._interpreter.set_tensor(detail["index"], _quantize(named[detail["name"]], detail))
        self._interpreter.invoke()
        return [_dequantize(self._interpreter.get_tensor(d["index"]).copy(), d) for d in self._output_details]

    def _select_shape(self, shape: tuple[int, ...]) -> None:
        """Make the interpreter for input ``shape`` current, creating and allocating it on first use."""
        key = tuple(int(d) for d in shape)
        interpreter = self._by_shape.pop(key, None)
        if interpreter is None:
            interpreter = self._spare if self._spare is not None else self._factory()
            self._spare = None
            try:
                for detail in interpreter.get_input_details():
                    interpreter.resize_tensor_input(detail["index"], list(key), strict=False)
                _allocate_tensors(interpreter)
            except (RuntimeError, ValueError) as exc:
                raise BackendError(
                    f"{self._path}: the TFLite graph failed to allocate an input of shape {list(key)}: {exc}. "
                    "Feed an image large enough for its convolutions"
                ) from exc
        self._by_shape[key] = interpreter
        while len(self._by_shape) > MAX_SHAPES:
            self._by_shape.popitem(last=False)
        self._interpreter = interpreter
        self._batch = key[0]
        self._refresh()

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        if self._interpreter is None:
            raise BackendError("TFLite session is closed; load the model again")
        named = self._feeds_by_name(feeds)
        if self._factory is not None:
            self._select_shape(next(iter(named.values())).shape)
            return self._invoke(named)
        batch = next(iter(named.values())).shape[0]

        if batch != self._batch and not self._loop_batches:
            if not self._resize(batch):
                self._loop_batches = True

        if batch == self._batch:
            return self._invoke(named)

        if self._batch != 1:
            self._resize(1)
        parts = [self._invoke({k: v[i : i + 1] for k, v in named.items()}) for i in range(batch)]
        return [np.concatenate([p[j] for p in parts], axis=0) for j in range(len(self._outputs))]

    def close(self) -> None:
        self._interpreter = None
        self._spare = None
        self._by_shape.clear()


class TfliteBackend(Backend):
    """Runs ``.tflite`` files with the TFLite interpreter and its default XNNPACK delegate.

    ``SessionOptions.extra["delegates"]`` adds external delegates such as the
    Edge TPU (see ``_delegate_settings``).
    """

    name = "tflite"
    formats = ("tflite",)
    install_hint = (
        "pip install 'edge-runtime[tflite]' (from a checkout: pip install '.[tflite]'), "
        "or pip install ai-edge-litert (tflite-runtime on armv7l)"
    )

    @classmethod
    def check(cls) -> str:
        try:
            import tflite_runtime  # type: ignore[import-not-found]

            return f"tflite-runtime {tflite_runtime.__version__}"
        except ImportError:
            import ai_edge_litert  # type: ignore[import-not-found]

            version = getattr(ai_edge_litert, "__version__", None)
            if version is None:
                from importlib import metadata

                version = metadata.version("ai-edge-litert")
            return f"ai-edge-litert {version}"

    def load(self, path: Path, options: SessionOptions = SessionOptions()) -> Session:
        module = _interpreter_module()
        threads, external = _delegate_settings(options)

        delegates = []
        for library, delegate_options in external:
            try:
                # Opening the library first gives a clean error: ai-edge-litert 2.x's load_delegate leaves a
                # half-built Delegate whose __del__ prints a traceback when the library is missing.
                ctypes.CDLL(library)
                delegates.append(module.load_delegate(library, delegate_options))
            except (ValueError, OSError, RuntimeError) as exc:
                hint = " (install the Edge TPU runtime, libedgetpu1-std)" if library == EDGETPU_LIBRARY else ""
                raise BackendError(
                    f"cannot load TFLite delegate {library}{hint}: {exc}; or remove the delegate from the device profile"
                ) from exc

        def make_interpreter():
            return module.Interpreter(model_path=str(path), num_threads=threads, experimental_delegates=delegates or None)

        factory = None
        try:
            interpreter = make_interpreter()
            if has_free_spatial_axes(interpreter):
                # Tensors are allocated per input shape on the first run with that shape.
                factory = make_interpreter
                logger.debug("%s: input height and width are free; one interpreter per input shape", path)
            else:
                _allocate_tensors(interpreter)
        except Exception as exc:
            raise BackendError(f"{path}: the TFLite interpreter cannot load the model: {exc}") from exc
        if delegates:
            logger.info("%s: TFLite delegates %s applied", path, [library for library, _ in external])
        return TfliteSession(interpreter, Path(path), factory)
