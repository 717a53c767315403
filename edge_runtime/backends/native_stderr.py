"""Capture what native code writes to file descriptor 2, to turn known notices into log records.

Native libraries such as the TFLite runtime print to the process's stderr
directly, past Python's logging and its level. ``capture_native_stderr``
points descriptor 2 at a temporary file for the duration of one call, then
writes every captured line back to stderr unchanged, except the lines named
in ``notices``, which it logs at INFO on the caller's logger instead.
Nothing is dropped: an unknown line, an error or another thread's output
written in that window reaches stderr, only later.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator

logger = logging.getLogger(__name__)

STDERR_FD = 2


@contextmanager
def capture_native_stderr(notices: frozenset[str], notice_logger: logging.Logger) -> Iterator[list[str]]:
    """Redirect descriptor 2 inside the block; log lines in ``notices`` at INFO and write the rest back.

    Yields a list that, once the block has ended, holds the notices seen.

    When descriptor 2 cannot be duplicated (closed, as in some daemons) or no
    temporary file can be made, the block runs without capture.

    NOTE: a crash of the native code inside the block loses what it wrote to
    stderr in the block, because that sits in the temporary file. Keep the
    block to the single call that prints the notice.
    """
    seen: list[str] = []
    _flush_python_stderr()
    try:
        captured = tempfile.TemporaryFile()
    except OSError as exc:
        logger.debug("stderr not captured: no temporary file (%s)", exc)
        yield seen
        return
    try:
        saved_fd = os.dup(STDERR_FD)
    except OSError as exc:
        captured.close()
        logger.debug("stderr not captured: descriptor %d cannot be duplicated (%s)", STDERR_FD, exc)
        yield seen
        return

    try:
        os.dup2(captured.fileno(), STDERR_FD)
        try:
            yield seen
        finally:
            # Restore and replay even when the block raised: its output may explain the error.
            _flush_python_stderr()
            os.dup2(saved_fd, STDERR_FD)
            captured.seek(0)
            seen.extend(_replay(captured.read(), notices, notice_logger))
    finally:
        os.close(saved_fd)
        captured.close()


def _flush_python_stderr() -> None:
    if sys.stderr is not None:
        sys.stderr.flush()


def _replay(output: bytes, notices: frozenset[str], notice_logger: logging.Logger) -> list[str]:
    """Log the lines of ``output`` that are in ``notices``, write the others to descriptor 2 as they were.

    Returns the notices found, in order.
    """
    found: list[str] = []
    other_lines: list[bytes] = []
    for line in output.splitlines(keepends=True):
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if text in notices:
            notice_logger.info("%s", text.removeprefix("INFO: "))
            found.append(text)
        else:
            other_lines.append(line)

    remaining = b"".join(other_lines)
    while remaining:
        written = os.write(STDERR_FD, remaining)
        remaining = remaining[written:]
    return found
