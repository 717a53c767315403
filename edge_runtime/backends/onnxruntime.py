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


# Whether this process has registered its shared CPU arena with ONNX Runtime's environment.
_cpu_arena_registered = False


def _register_shared_cpu_arena(onnxruntime) -> bool:
    """Register one CPU arena allocator in ONNX Runtime's process-wide environment, once.

    Sessions that set ``session.use_env_allocators`` draw their tensors from
    this arena, so a process holding several models (MTCNN's three nets
    and the classifiers) grows one arena instead of one per session.
    Returns whether the arena is registered.
    """
    global _cpu_arena_registered
    if _cpu_arena_registered:
        return True

    memory = onnxruntime.OrtMemoryInfo("Cpu", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, onnxruntime.OrtMemType.DEFAULT)
    # -1 keeps ONNX Runtime's default for each arena setting.
    arena = onnxruntime.OrtArenaCfg(0, -1, -1, -1)
    try:
        onnxruntime.create_and_register_allocator(memory, arena)
    except Exception as exc:  # noqa: BLE001 - any failure leaves each session with its own arena
        logger.info("ONNX Runtime did not accept a shared CPU arena (%s); every session keeps its own", exc)
        return False
    _cpu_arena_registered = True
    return True


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

    @property
    def providers(self) -> list[str]:
        """Execution providers of the session in priority order, as ONNX Runtime reports them."""
        return list(self._session.get_providers()) if self._session is not None else []

    def close(self) -> None:
        self._session = None


def _provider_entries(requested: object) -> list[tuple[str, dict]]:
    """Return ``(name, options)`` per provider from names, ``[name, options]`` pairs or ``{name, options}`` maps."""
    entries = []
    for item in requested:  # type: ignore[attr-defined]
        if isinstance(item, str):
            entries.append((item, {}))
        elif isinstance(item, dict):
            entries.append((str(item["name"]), dict(item.get("options") or {})))
        else:
            name, options = item
            entries.append((str(name), dict(options or {})))
    return entries


def _make_cache_dirs(name: str, options: dict) -> None:
    """Create the directories of options such as ``trt_engine_cache_path``, which providers expect to exist."""
    for key, value in options.items():
        if key.endswith("_cache_path") and value:
            try:
                Path(str(value)).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BackendError(
                    f"{name} option {key}={value}: cannot create the directory: {exc}; "
                    "point it at a writable directory in the device profile"
                ) from exc


class OnnxRuntimeBackend(Backend):
    """Loads ``.onnx`` files with ONNX Runtime.

    ``SessionOptions.extra["providers"]`` selects execution providers in
    order, each a name or a ``[name, provider_options]`` pair, e.g.
    ``[["TensorrtExecutionProvider", {"trt_fp16_enable": True}], "CPUExecutionProvider"]``.
    Providers that this onnxruntime build lacks are dropped with an INFO log.
    ``SessionOptions.extra["session_config"]`` maps ONNX Runtime session
    config keys to values and overrides the defaults set here.
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
        config: dict[str, str] = {}
        # One arena for all sessions: MTCNN, B0 emotion, age and gender on the CPU provider
        # peaked at 251 instead of 281 MiB RSS over 20 video frames (onnxruntime 1.32, x86-64).
        if _register_shared_cpu_arena(onnxruntime):
            config["session.use_env_allocators"] = "1"
        # Idle intra-op threads sleep instead of spinning, so they leave the cores to decoding,
        # detector post-processing and other processes. With MTCNN and B0 on a 2-core x86-64 VM
        # under a load average of 11, the pipeline ran at 17-35 fps instead of 3-7 fps.
        config["session.intra_op.allow_spinning"] = "0"
        # On x86 CPUs without VNNI, u8s8 int8 kernels add pairs of products in 16 bits with
        # saturation, and this option makes ONNX Runtime use u8u8 for weights that could overflow.
        # bench/int8_x64.py on an AVX2-only EPYC: plain int8 top-1 agreement with fp32 went from
        # 0.59 to 0.94 (dlib age) and 0.81 to 0.96 (fer), for p50 1.11 -> 1.16 and 0.59 -> 0.68 ms.
        # ONNX Runtime applies it only on x86 without VNNI.
        config["session.x64quantprecision"] = "1"
        for key, value in dict(options.extra.get("session_config") or {}).items():
            # ONNX Runtime reads flags as "0" and "1", while YAML gives booleans.
            config[str(key)] = str(int(value)) if isinstance(value, bool) else str(value)
        # Each key is added once, because ONNX Runtime warns when a key is added twice.
        for key, text in config.items():
            session_options.add_session_config_entry(key, text)

        available = onnxruntime.get_available_providers()
        requested = _provider_entries(options.extra.get("providers", ["CPUExecutionProvider"]))
        providers = [(name, opts) for name, opts in requested if name in available]
        dropped = [name for name, _ in requested if name not in available]
        if not providers:
            raise BackendError(
                f"none of the requested ONNX Runtime providers {[name for name, _ in requested]} is available "
                f"here (available: {available}); fix 'providers' in the device profile"
            )
        if dropped:
            logger.info("%s: ONNX Runtime providers %s are not in this build (available: %s); using %s",
                        path, dropped, available, [name for name, _ in providers])
        for name, provider_options in providers:
            _make_cache_dirs(name, provider_options)

        try:
            session = onnxruntime.InferenceSession(
                str(path),
                session_options,
                providers=[name for name, _ in providers],
                provider_options=[opts for _, opts in providers],
            )
        except Exception as exc:
            raise BackendError(f"{path}: ONNX Runtime cannot load the model: {exc}") from exc

        logger.debug("loaded %s with providers %s", path, session.get_providers())
        return OnnxRuntimeSession(session)
