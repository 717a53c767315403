"""Exception hierarchy of edge-runtime.

Every error names the value at fault and, where one exists, the fix. Callers
catch ``EdgeRuntimeError`` to report a clean message instead of a traceback.
"""

from __future__ import annotations


class EdgeRuntimeError(Exception):
    """Base class of every error raised on purpose by edge-runtime."""


class ConfigError(EdgeRuntimeError):
    """A configuration file, device profile or command-line value is invalid."""


class ManifestError(EdgeRuntimeError):
    """A model package's manifest is missing, unreadable or inconsistent."""


class IntegrityError(ManifestError):
    """A model file's sha256 or size differs from the value pinned for it."""


class ModelNotFoundError(EdgeRuntimeError):
    """A model is neither in the catalog nor in the local store."""


class FetchError(EdgeRuntimeError):
    """Downloading or extracting a model file failed."""


class BackendUnavailableError(EdgeRuntimeError):
    """An inference backend cannot be imported on this machine.

    ``install_hint`` is the pip command that installs the missing package.
    """

    def __init__(self, message: str, install_hint: str | None = None) -> None:
        super().__init__(message)
        self.install_hint = install_hint


class BackendError(EdgeRuntimeError):
    """An inference backend failed to load or run a model."""


class ImageReadError(EdgeRuntimeError):
    """An image or video file cannot be decoded."""


class SourceError(EdgeRuntimeError):
    """A frame source (camera, file, stream or pipeline) cannot be opened."""


class ConversionError(EdgeRuntimeError):
    """Converting a trained model into a model package failed (raised by ``converters``)."""


class UnpinnedFileError(IntegrityError):
    """A download has no pinned sha256 and the user neither pinned one nor accepted it unpinned."""


class OutboxError(EdgeRuntimeError):
    """The MQTT outbox file cannot be created, opened or read."""


class OutboxInUseError(OutboxError):
    """Another open outbox, in this process or another one, holds the lock of the same file and device."""


class PublishError(EdgeRuntimeError):
    """An MQTT message did not reach the broker: connection refused, timed out or rejected."""


class WarmUpError(BackendError):
    """A model loaded but its first inference on a zero input failed or returned NaN or infinity."""
