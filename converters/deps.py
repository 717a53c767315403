"""Imports of the heavy conversion frameworks with an error that names the extra to install."""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

from converters.errors import CONVERT_EXTRA, MissingDependencyError

logger = logging.getLogger(__name__)


def require(module: str, purpose: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming the ``convert`` extra.

    ``purpose`` completes the sentence "needed to ...", and ``package`` is the
    pip name when it differs from the module name.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pip_name = package or module.split(".")[0]
        raise MissingDependencyError(
            f"the Python package {pip_name!r} is needed to {purpose} but cannot be imported ({exc}); "
            f"install the conversion extra: {CONVERT_EXTRA}"
        ) from exc


def available(module: str) -> bool:
    """Return True when ``module`` imports."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
