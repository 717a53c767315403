"""Exclusive lock that lets only one process at a time use the rows of one device in an outbox file.

Two publishers of the same device on one outbox file would both hand out
and send the same rows. ``OutboxLock`` takes an exclusive ``flock`` on a
lock file next to the outbox, one per device id, so that publishers of
different devices can still share a file. The holder writes its PID into
the lock file so that the error of a second process can name it.

The kernel releases the lock when the file descriptor is closed, which
includes the end of the process for any reason (``kill -9`` too), so a
lock file left behind never blocks a restart. The lock file itself is
never deleted: deleting it could let a third process lock a new file
while the second one still holds the old one. The descriptor is not
inherited by child processes (Python opens files non-inheritable).

``flock`` works on local file systems. On NFS, Linux emulates it with
byte-range locks, and SQLite's WAL mode needs a local file system anyway.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
from pathlib import Path
from typing import BinaryIO, Optional

from edge_runtime.errors import OutboxError, OutboxInUseError

logger = logging.getLogger(__name__)

# Characters kept as they are in the lock file name; others become %XX.
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]")


def lock_path_for(path: Path, device_id: str) -> Path:
    """Return the lock file of ``device_id`` in the outbox ``path``: ``<path>.<device_id>.lock``.

    Characters other than letters, digits, ``_``, ``.`` and ``-`` are
    written as ``%XX``, so every device id maps to its own file name.
    """
    safe_id = _UNSAFE_NAME_CHARACTERS.sub(_percent_encode, device_id)
    return path.with_name(f"{path.name}.{safe_id}.lock")


class OutboxLock:
    """An exclusive lock on one device's rows of an outbox file, held until ``release``.

    Raises OutboxInUseError when another open ``Outbox`` holds it, in this
    process or another one, and OutboxError when the lock file cannot be
    opened.
    """

    def __init__(self, path: Path, device_id: str) -> None:
        self.path = lock_path_for(path, device_id)
        try:
            # A file object rather than a bare descriptor, so that an Outbox
            # dropped without close() still releases the lock when collected.
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._file: Optional[BinaryIO] = os.fdopen(descriptor, "r+b", buffering=0)
        except OSError as exc:
            raise OutboxError(
                f"cannot open the lock file {self.path} of outbox {path} ({exc.strerror}); make the directory "
                "writable for the service user, or set mqtt.outbox_path to a file in a writable directory"
            ) from None

        fd = self._file.fileno()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            self._file.close()
            self._file = None
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OutboxError(
                    f"cannot lock {self.path} for outbox {path} ({exc.strerror}); put the outbox on a local file "
                    "system with mqtt.outbox_path"
                ) from None
            raise OutboxInUseError(_in_use_message(path, device_id, holder)) from None

        # The PID is only informative, so a failed write does not fail the lock.
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            logger.debug("cannot write the PID into %s: %s", self.path, exc)

    @property
    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        """Release the lock; calling it again does nothing."""
        if self._file is None:
            return
        file, self._file = self._file, None
        # Closing the file releases the flock.
        file.close()


def _percent_encode(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode())


def _read_pid(fd: int) -> Optional[int]:
    """Return the PID written in the lock file, or None when it is missing or not a number."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _in_use_message(path: Path, device_id: str, holder: Optional[int]) -> str:
    if holder == os.getpid():
        return (
            f"outbox {path} is already open for device {device_id} in this process (PID {holder}); close the "
            "other Outbox of this file and device first"
        )
    holder_text = f"process {holder}" if holder is not None else "another process (PID unknown)"
    return (
        f"outbox {path} is in use for device {device_id} by {holder_text}, and two publishers of one device "
        "would send the same messages twice; stop the other edge-runtime process, or give this one its own "
        "outbox with mqtt.outbox_path or another state directory (STATE_DIRECTORY, or XDG_STATE_HOME outside "
        "systemd)"
    )
