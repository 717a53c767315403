"""Test-loading a model file once before the store installs it.

A sha256 proves only that a file is the one that was pinned. For a file
accepted without a pin, or a package built elsewhere, loading it once with a
backend shows that it is a model at all. The check parses the file and
builds a session, but runs no inference.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from edge_runtime.backends.base import SessionOptions
from edge_runtime.backends.registry import backends_for_format, get_backend
from edge_runtime.errors import BackendError, BackendUnavailableError

logger = logging.getLogger(__name__)

# The check only parses the file, so one thread avoids starting a pool per core.
_CHECK_OPTIONS = SessionOptions(num_threads=1)


def check_loadable(path: Path, model_format: str, *, label: str, next_step: str) -> Optional[str]:
    """Load ``path`` as a ``model_format`` model on the best backend that can run here.

    Returns the name of the backend that loaded the file, or None when no
    backend can test it here. In that case a WARNING lists the install
    commands when registered backends load ``model_format`` but none of them
    can run, and an INFO line reports formats that no backend loads (keras
    and torch files are inputs of the converters). Only the first backend
    that can run here is tried. ``label`` names the file in messages (the
    user's path, not a staging copy), and ``next_step`` ends the error message.

    Raises:
        BackendError: the backend failed to parse the file.
    """
    names = backends_for_format(model_format)
    if not names:
        logger.info("%s: not test-loaded, because no backend loads %s files", label, model_format)
        return None

    hints = []
    for name in names:
        try:
            backend = get_backend(name)
        except BackendUnavailableError as exc:
            hints.append(f"{name}: {exc.install_hint}")
            continue

        try:
            session = backend.load(Path(path), _CHECK_OPTIONS)
        except BackendError as exc:
            # The framework's own message, without the staging path that the backend puts in front of it.
            detail = exc.__cause__ if exc.__cause__ is not None else exc
            raise BackendError(
                f"{label} is not a loadable {model_format} model: {name} failed to parse it ({detail}). {next_step}"
            ) from exc
        session.close()

        logger.info("%s: test-loaded as %s with %s", label, model_format, name)
        return name

    logger.warning(
        "%s: not test-loaded, because no backend that loads %s files can run here, so a damaged file "
        "shows only when a model is loaded; install a backend to check such files: %s",
        label, model_format, "; ".join(hints),
    )
    return None
