"""Backend plugins that fail to load a model or fail its first inference, registered by entry point in the tests.

The run-time failures wrap the real ONNX Runtime backend, so loading
succeeds and only the run goes wrong, as with a provider that accepts a
graph and then fails to execute it or a numerically broken fp16 engine.
``RaisingLoadBackend`` raises its framework's own exception type from
``load``, as a third-party plugin may.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edge_runtime.backends.base import Feeds, Session, SessionOptions, TensorSpec
from edge_runtime.backends.onnxruntime import OnnxRuntimeBackend


class _WrappedSession(Session):
    def __init__(self, inner: Session) -> None:
        self._inner = inner

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self._inner.inputs

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self._inner.outputs

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        return self._inner.run(feeds)

    def close(self) -> None:
        self._inner.close()


class _RaisingSession(_WrappedSession):
    def run(self, feeds: Feeds) -> list[np.ndarray]:
        raise RuntimeError("kernel Conv has no implementation for this device")


class _NanSession(_WrappedSession):
    def run(self, feeds: Feeds) -> list[np.ndarray]:
        return [np.full_like(output, np.nan, dtype=np.float32) for output in self._inner.run(feeds)]


class RaisingRunBackend(OnnxRuntimeBackend):
    name = "raising-run"

    def load(self, path: Path, options: SessionOptions = SessionOptions()) -> Session:
        return _RaisingSession(super().load(path, options))


class NanOutputBackend(OnnxRuntimeBackend):
    name = "nan-output"

    def load(self, path: Path, options: SessionOptions = SessionOptions()) -> Session:
        return _NanSession(super().load(path, options))


class RaisingLoadBackend(OnnxRuntimeBackend):
    name = "raising-load"

    def load(self, path: Path, options: SessionOptions = SessionOptions()) -> Session:
        raise RuntimeError(f"cannot allocate 512 MiB of device memory for {path.name}")
