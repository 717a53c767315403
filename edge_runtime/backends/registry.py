"""Registry of inference backends.

Built-in backends and third-party ones are found through the
``edge_runtime.backends`` entry-point group, so a package can add a backend
by declaring an entry point that names a ``Backend`` subclass. A backend
whose framework fails to import is reported unavailable with the pip command
that fixes it; it never stops the others from loading.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import import_module, metadata
from typing import Optional

from edge_runtime.backends.base import Backend
from edge_runtime.errors import BackendUnavailableError, ConfigError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "edge_runtime.backends"

# Known even when the package metadata is absent (running from a source tree).
BUILTIN_BACKENDS = {
    "onnxruntime": "edge_runtime.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "edge_runtime.backends.openvino:OpenVinoBackend",
    "tflite": "edge_runtime.backends.tflite:TfliteBackend",
}


@dataclass(frozen=True)
class BackendInfo:
    """Availability of one backend on this machine."""

    name: str
    available: bool
    formats: tuple[str, ...]
    version: Optional[str]
    reason: Optional[str]
    install_hint: Optional[str]


def _load_class(target: str) -> type[Backend]:
    module_name, _, attribute = target.partition(":")
    cls = getattr(import_module(module_name), attribute)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise TypeError(f"{target} is not a subclass of edge_runtime.backends.base.Backend")
    return cls


def _targets() -> dict[str, str]:
    targets = dict(BUILTIN_BACKENDS)
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        targets[entry_point.name] = entry_point.value
    return targets


def backend_names() -> list[str]:
    """Return the names of every registered backend, available or not."""
    return sorted(_targets())


def backends_for_format(model_format: str) -> list[str]:
    """Return the registered backends that load ``model_format``, best first.

    A backend whose native (first) format it is ranks first, then by the
    format's position in ``formats``, then by name. Importing the backend
    classes does not import their frameworks, so a listed backend may still
    be unable to run here. A plugin whose class fails to import is
    left out; ``describe_backends`` reports it.
    """
    ranked = []
    for name, target in _targets().items():
        try:
            cls = _load_class(target)
        except Exception as exc:  # a broken plugin must not hide the others
            logger.debug("backend %s: cannot load %s: %s", name, target, exc)
            continue
        if model_format in cls.formats:
            ranked.append((cls.formats.index(model_format), name))
    return [name for _, name in sorted(ranked)]


def describe_backends() -> list[BackendInfo]:
    """Probe every registered backend and report whether it can run here."""
    infos = []
    for name, target in sorted(_targets().items()):
        try:
            cls = _load_class(target)
        except Exception as exc:  # a broken plugin must not hide the others
            infos.append(BackendInfo(name, False, (), None, f"cannot load {target}: {exc}", None))
            continue

        try:
            version = cls.check()
        except Exception as exc:  # ImportError, or an OSError from a missing shared library
            infos.append(BackendInfo(name, False, cls.formats, None, f"{type(exc).__name__}: {exc}", cls.install_hint))
            continue

        infos.append(BackendInfo(name, True, cls.formats, version, None, cls.install_hint))
    return infos


def get_backend(name: str) -> Backend:
    """Return a ready instance of the backend called ``name``.

    Raises:
        ConfigError: no backend has that name.
        BackendUnavailableError: its framework cannot be imported here.
    """
    targets = _targets()
    if name not in targets:
        raise ConfigError(f"unknown backend {name!r}; registered backends: {', '.join(sorted(targets))}")

    cls = _load_class(targets[name])
    try:
        version = cls.check()
    except Exception as exc:
        raise BackendUnavailableError(
            f"backend {name!r} is unavailable ({type(exc).__name__}: {exc}); install it with: {cls.install_hint}",
            install_hint=cls.install_hint,
        ) from exc

    logger.debug("backend %s available (version %s)", name, version)
    return cls()
