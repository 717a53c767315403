"""The interface every inference backend implements.

A backend only calls its framework: it loads a model file into a session,
describes the session's tensors and runs a batch. Pre- and post-processing
belong to the model code in ``edge_runtime.vision``, so a new backend is a
small module.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Mapping, Optional, Sequence, Union

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one model input or output.

    ``shape`` contains ``None`` for a dynamic dimension.
    """

    name: str
    shape: tuple[Optional[int], ...]
    dtype: str


@dataclass(frozen=True)
class SessionOptions:
    """Settings a backend applies when it loads a model.

    Attributes:
        num_threads: intra-op threads; 0 lets the framework decide.
        device: backend-specific device name, e.g. ``CPU`` or ``GPU`` for OpenVINO.
        extra: backend-specific options taken from the device profile.
    """

    num_threads: int = 0
    device: str = "CPU"
    extra: Mapping[str, object] = field(default_factory=dict)


Feeds = Union[np.ndarray, Mapping[str, np.ndarray]]


class Session(abc.ABC):
    """A loaded model ready to run. ``close()`` may be called more than once."""

    backend_name: ClassVar[str] = ""

    @property
    @abc.abstractmethod
    def inputs(self) -> Sequence[TensorSpec]:
        """Input tensors in model order."""

    @property
    @abc.abstractmethod
    def outputs(self) -> Sequence[TensorSpec]:
        """Output tensors in model order."""

    @abc.abstractmethod
    def run(self, feeds: Feeds) -> list[np.ndarray]:
        """Run one batch and return the outputs in the order of ``outputs``.

        ``feeds`` is either one array for the first input or a mapping from
        input name to array. The leading axis is the batch; a session whose
        model has a fixed batch of 1 still accepts any batch size.
        """

    def close(self) -> None:
        """Release the framework objects."""

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _feeds_by_name(self, feeds: Feeds) -> dict[str, np.ndarray]:
        if isinstance(feeds, np.ndarray):
            return {self.inputs[0].name: feeds}
        unknown = set(feeds) - {spec.name for spec in self.inputs}
        if unknown:
            names = ", ".join(spec.name for spec in self.inputs)
            raise KeyError(f"unknown input(s) {sorted(unknown)}; the model's inputs are: {names}")
        return dict(feeds)


class Backend(abc.ABC):
    """Factory of sessions for one inference framework.

    Subclasses set ``name`` (the key used in device profiles), ``formats``
    (the variant formats they load) and ``install_hint`` (the pip command
    that installs the framework), and implement ``check`` and ``load``.
    """

    name: ClassVar[str] = ""
    formats: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""

    @classmethod
    @abc.abstractmethod
    def check(cls) -> str:
        """Import the framework and return its version.

        Raises:
            ImportError: the framework is not installed or fails to import.
        """

    @abc.abstractmethod
    def load(self, path: Path, options: SessionOptions = SessionOptions()) -> Session:
        """Load the model file at ``path`` into a new session.

        The caller has already checked the file's sha256 against its manifest.

        Raises:
            BackendError: the framework rejects the file.
        """
