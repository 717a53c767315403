"""Log output on stderr, in the journal's format when stderr is connected to journald.

Under systemd with ``StandardError=journal`` (the unit sets it), journald
stamps each line with the time, the unit and the PID itself, and reads a
``<N>`` prefix as the syslog priority of the line when ``SyslogLevelPrefix=``
is on (its default). So there each line is ``<N>logger: message``, and
``journalctl -p warning`` filters by level. Elsewhere lines keep a timestamp
and the level name.

systemd sets ``$JOURNAL_STREAM`` to ``DEVICE:INODE`` of the stream it
connected (systemd.exec(5)). The variable is inherited, so only a match
with ``fstat()`` of stderr proves that stderr is still that stream and was
not redirected, e.g. by a child process started from a shell in the service.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Mapping, Optional, TextIO

logger = logging.getLogger(__name__)

TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"

# syslog(3) priorities of the logging levels; a level between two takes the
# priority of the next lower standard level.
SYSLOG_PRIORITIES = (
    (logging.CRITICAL, 2),  # LOG_CRIT
    (logging.ERROR, 3),  # LOG_ERR
    (logging.WARNING, 4),  # LOG_WARNING
    (logging.INFO, 6),  # LOG_INFO
)
LOG_ERR = 3
LOG_DEBUG = 7


def syslog_priority(levelno: int) -> int:
    """Return the syslog priority (0 emergency to 7 debug) of a logging level."""
    for level, priority in SYSLOG_PRIORITIES:
        if levelno >= level:
            return priority
    return LOG_DEBUG


class JournalFormatter(logging.Formatter):
    """Formats a record as ``<N>logger: message`` lines, with the priority on every line.

    journald splits the stream into one entry per line, so a traceback's
    continuation lines carry the prefix too and keep the record's priority.
    """

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return with_priority(super().format(record), syslog_priority(record.levelno))


def with_priority(text: str, priority: int) -> str:
    """Return ``text`` with the ``<priority>`` prefix on every line."""
    return "\n".join(f"<{priority}>{line}" for line in text.splitlines() or [""])


def stream_is_journal(stream: TextIO, environ: Optional[Mapping[str, str]] = None) -> bool:
    """Return True when ``stream`` is the journal stream named by ``$JOURNAL_STREAM``."""
    environ = os.environ if environ is None else environ
    value = environ.get("JOURNAL_STREAM", "")
    device, separator, inode = value.partition(":")
    if not separator or not device.isdigit() or not inode.isdigit():
        return False

    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        # A replaced stream without a file descriptor (pytest's capture, io.StringIO).
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


def configure_logging(level: str, stream: Optional[TextIO] = None, environ: Optional[Mapping[str, str]] = None) -> bool:
    """Send log records of ``level`` and above to ``stream`` (default stderr).

    Uses ``JournalFormatter`` when the stream is the journal stream and
    ``TERMINAL_FORMAT`` otherwise. Returns True for the journal format.
    Like ``logging.basicConfig``, it changes nothing, not even the level,
    when the root logger already has a handler (as under pytest).
    """
    stream = sys.stderr if stream is None else stream
    journal = stream_is_journal(stream, environ)
    root = logging.getLogger()
    if root.handlers:
        return journal

    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if journal else logging.Formatter(TERMINAL_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    return journal


def error_text(text: str, stream: Optional[TextIO] = None) -> str:
    """Return an error message for ``stream`` (default stderr): prefixed as ``LOG_ERR`` when it is the journal."""
    stream = sys.stderr if stream is None else stream
    return with_priority(text, LOG_ERR) if stream_is_journal(stream) else text
