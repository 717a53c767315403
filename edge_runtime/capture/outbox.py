"""Durable outbox of the MQTT publisher: an SQLite file that keeps messages until the broker acknowledges them.

One file can serve several device ids; every row belongs to one device,
and an ``Outbox`` only reads and writes the rows of its own device. Rows
are sent in the order of their row id (``INTEGER PRIMARY KEY
AUTOINCREMENT``, so an id is never reused, even after every row was
deleted). The same file keeps the last sequence number of each device.

Durability: the database runs in WAL mode with ``synchronous=FULL``, so
every commit is on disk before ``add`` returns. With ``synchronous=NORMAL``
a power cut can roll back the last commits of a WAL database. A rolled-back
sequence number that had already reached a subscriber would then be given
to a new message, and a subscriber that drops duplicates by
``(device_id, seq)`` would silently discard it. The price of FULL is one
fsync per added message and one per batch of deleted ones, which is small
at the rate of result messages (one per window and one per stats interval).

Bounds: ``max_messages`` and ``max_bytes`` (payload bytes) per device.
When an added message exceeds a bound, the oldest messages not yet handed
to the client are dropped and counted in ``dropped_total``. Messages
past their expiry time are deleted unsent and counted in ``expired_total``.
Both counts cover the lifetime of this object, not of the file.

Thread safety: every method may be called from any thread. A private lock
serializes access to the SQLite connection, and no method calls out of
this module while it holds the lock.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

from edge_runtime.capture.outbox_lock import OutboxLock
from edge_runtime.errors import OutboxError

logger = logging.getLogger(__name__)

OUTBOX_FILE_NAME = "outbox.sqlite"
FORMAT_VERSION = 1

# Seconds between two warnings about dropped or expired messages.
DROP_WARNING_INTERVAL_S = 60.0
# Seconds between two sweeps for expired messages while messages are added.
EXPIRY_SWEEP_INTERVAL_S = 60.0
# Seconds a write waits for another connection's lock on the file.
BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    seq INTEGER,
    created REAL NOT NULL,
    expires REAL
);
CREATE INDEX IF NOT EXISTS messages_by_device ON messages (device_id, id);
CREATE TABLE IF NOT EXISTS sequences (
    device_id TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
);
"""

PayloadSource = Union[bytes, Callable[[int], bytes]]


def default_outbox_path() -> Path:
    """Return the outbox file used when ``mqtt.outbox_path`` is not set.

    ``$STATE_DIRECTORY/outbox.sqlite`` when systemd sets STATE_DIRECTORY
    (``StateDirectory=`` in the unit; the first of several directories),
    else ``$XDG_STATE_HOME/edge-runtime/outbox.sqlite``, where
    XDG_STATE_HOME defaults to ``~/.local/state``.
    """
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / OUTBOX_FILE_NAME
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "edge-runtime" / OUTBOX_FILE_NAME


def first_seq(now: float) -> int:
    """Return the first sequence number of a device that has none in the file yet.

    The sequence starts at the UNIX time in milliseconds, so a device whose
    outbox file was deleted or replaced continues above its earlier numbers,
    provided its clock is right and it averaged fewer than 1000 messages per
    second before.
    """
    return max(1, int(now * 1000))


@dataclass(frozen=True)
class StoredMessage:
    """One message kept in the outbox; times are UNIX seconds."""

    id: int
    topic: str
    payload: bytes
    qos: int
    seq: Optional[int]
    created: float
    expires: Optional[float]

    def remaining_expiry_s(self, now: float) -> Optional[int]:
        """Return the whole seconds left until expiry (rounded up), or None when the message never expires."""
        if self.expires is None:
            return None
        return math.ceil(self.expires - now)

    def expired(self, now: float) -> bool:
        return self.expires is not None and self.expires <= now


class Outbox:
    """The rows of one device in an outbox file, with its sequence counter.

    ``add`` stores a message, ``next_unsent`` hands out stored messages in
    order, and ``delete`` removes them once the broker acknowledged them.
    Messages handed out by ``next_unsent`` are never dropped by a bound,
    because the client may still deliver them. A new ``Outbox`` on the same
    file hands out every stored row again, starting with the oldest.

    Only one open ``Outbox`` per file and device may exist at a time, across
    all processes (see ``outbox_lock``): a second one raises
    OutboxInUseError until the first is closed or its process ends.
    """

    def __init__(
        self,
        path: Path,
        device_id: str,
        *,
        max_messages: int,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path).expanduser()
        self.device_id = device_id
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()

        _create_directory(self.path)
        self._file_lock = OutboxLock(self.path, device_id)
        try:
            self._connection = _open_database(self.path)
        except BaseException:
            self._file_lock.release()
            raise

        # Row ids up to this one were handed out; only later rows are dropped by a bound.
        self._cursor = 0
        self._count = 0
        self._bytes = 0
        self._unsent = 0
        self._dropped = 0
        self._expired = 0
        self._last_drop_warning: Optional[float] = None
        self._last_sweep = 0.0
        self._closed = False

        try:
            self._count, self._bytes = self._connection.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages WHERE device_id = ?",
                (device_id,),
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            self._connection.close()
            self._file_lock.release()
            raise _invalid_file_error(self.path, exc) from None
        self._unsent = self._count

        if self._count:
            logger.info(
                "outbox %s contains %d messages (%d bytes) of device %s from an earlier run; they are sent first",
                self.path,
                self._count,
                self._bytes,
                device_id,
            )
        self.sweep_expired()

    @property
    def count(self) -> int:
        """Messages of this device in the file, including those handed out and not yet deleted."""
        with self._lock:
            return self._count

    @property
    def size_bytes(self) -> int:
        """Payload bytes of this device's messages in the file."""
        with self._lock:
            return self._bytes

    @property
    def unsent_count(self) -> int:
        """Messages that ``next_unsent`` has not handed out yet."""
        with self._lock:
            return self._unsent

    @property
    def dropped_total(self) -> int:
        """Messages dropped by a bound, or lost because the file could not be written."""
        with self._lock:
            return self._dropped

    @property
    def expired_total(self) -> int:
        """Messages deleted unsent because their expiry time had passed."""
        with self._lock:
            return self._expired

    def journal_mode(self) -> str:
        """Return SQLite's journal mode of the file (``wal`` once opened)."""
        with self._lock:
            return str(self._connection.execute("PRAGMA journal_mode").fetchone()[0])

    def add(
        self, topic: str, payload: PayloadSource, *, qos: int, expiry_s: Optional[int] = None
    ) -> Optional[StoredMessage]:
        """Store one message and return it; return None when it could not be stored.

        ``payload`` is either the bytes to send or a function that builds
        them from a new sequence number. The number is allocated in the same
        transaction as the row, so a failed write leaves no gap. ``expiry_s``
        sets the expiry time ``expiry_s`` seconds from now. A write failure
        (disk full, I/O error) is logged and counted as dropped instead of
        raised, so the caller never stops for the outbox.
        """
        now = self._clock()
        with self._lock:
            self._check_open()
            if now - self._last_sweep >= EXPIRY_SWEEP_INTERVAL_S:
                self._sweep_expired_locked(now)

            try:
                stored, dropped = self._insert_locked(topic, payload, qos, expiry_s, now)
            except sqlite3.Error as exc:
                self._rollback_locked()
                self._dropped += 1
                self._warn_dropped_locked(now, f"cannot write to outbox {self.path} ({exc}); dropped a {topic} message")
                return None

            if stored is None:
                self._dropped += 1
                self._warn_dropped_locked(
                    now,
                    f"a {topic} message is larger than mqtt.outbox_max_bytes ({self.max_bytes} bytes); dropped it",
                )
                return None

            self._count += 1 - len(dropped)
            self._bytes += len(stored.payload) - sum(dropped)
            self._unsent += 1 - len(dropped)
            if dropped:
                self._dropped += len(dropped)
                self._warn_dropped_locked(
                    now,
                    f"outbox {self.path} is full (mqtt.outbox_max_messages={self.max_messages}, "
                    f"mqtt.outbox_max_bytes={self.max_bytes}); dropped the {len(dropped)} oldest unsent messages. "
                    "Raise a bound to keep more during broker outages",
                )
            return stored

    def next_unsent(self) -> Optional[StoredMessage]:
        """Return the oldest message not handed out yet and mark it handed out; None when there is none.

        Expired messages on the way are deleted and counted. A read or
        write failure is logged and returns None.
        """
        now = self._clock()
        with self._lock:
            self._check_open()
            while self._unsent > 0:
                try:
                    row = self._connection.execute(
                        "SELECT id, topic, payload, qos, seq, created, expires FROM messages "
                        "WHERE device_id = ? AND id > ? ORDER BY id LIMIT 1",
                        (self.device_id, self._cursor),
                    ).fetchone()
                except sqlite3.Error as exc:
                    logger.error("cannot read outbox %s: %s", self.path, exc)
                    return None
                if row is None:
                    self._unsent = 0
                    return None

                message = StoredMessage(*row[:2], bytes(row[2]), *row[3:])
                self._cursor = message.id
                self._unsent -= 1
                if not message.expired(now):
                    return message
                self._delete_expired_locked(message, now)
            return None

    def delete(self, ids: Iterable[int]) -> None:
        """Delete acknowledged messages in one transaction; unknown ids are ignored."""
        ids = list(ids)
        if not ids:
            return
        with self._lock:
            if self._closed:
                return
            try:
                self._connection.execute("BEGIN IMMEDIATE")
                removed_count, removed_bytes = 0, 0
                for row_id in ids:
                    row = self._connection.execute(
                        "SELECT LENGTH(payload) FROM messages WHERE id = ? AND device_id = ?",
                        (row_id, self.device_id),
                    ).fetchone()
                    if row is None:
                        continue
                    self._connection.execute("DELETE FROM messages WHERE id = ?", (row_id,))
                    removed_count += 1
                    removed_bytes += row[0]
                self._connection.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback_locked()
                # The rows stay and are sent again after the next start; subscribers drop the copies by seq.
                logger.error("cannot delete %d acknowledged messages from outbox %s: %s", len(ids), self.path, exc)
                return
            self._count -= removed_count
            self._bytes -= removed_bytes

    def sweep_expired(self) -> int:
        """Delete every unsent message whose expiry time has passed; return how many."""
        now = self._clock()
        with self._lock:
            self._check_open()
            return self._sweep_expired_locked(now)

    def close(self) -> None:
        """Close the database and release the lock of this file and device; the counters stay readable."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._connection.close()
            finally:
                self._file_lock.release()

    # -- helpers; each needs self._lock

    def _insert_locked(
        self, topic: str, payload: PayloadSource, qos: int, expiry_s: Optional[int], now: float
    ) -> tuple[Optional[StoredMessage], list[int]]:
        """Insert a row, allocating a sequence number when ``payload`` is a function, and apply the bounds.

        Returns the stored message and the payload sizes of the older rows
        dropped for the bounds. A payload larger than ``max_bytes`` is not
        stored (None), but its sequence number stays used, so subscribers
        see the gap.
        """
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")

        seq: Optional[int] = None
        if callable(payload):
            row = connection.execute(
                "SELECT last_seq FROM sequences WHERE device_id = ?", (self.device_id,)
            ).fetchone()
            seq = first_seq(now) if row is None else row[0] + 1
            connection.execute(
                "INSERT INTO sequences (device_id, last_seq) VALUES (?, ?) "
                "ON CONFLICT (device_id) DO UPDATE SET last_seq = excluded.last_seq",
                (self.device_id, seq),
            )
            data = payload(seq)
        else:
            data = bytes(payload)

        if len(data) > self.max_bytes:
            connection.execute("COMMIT")
            return None, []

        expires = now + expiry_s if expiry_s is not None else None
        row_id = connection.execute(
            "INSERT INTO messages (device_id, topic, payload, qos, seq, created, expires) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.device_id, topic, data, qos, seq, now, expires),
        ).lastrowid
        stored = StoredMessage(row_id, topic, data, qos, seq, now, expires)

        # Drop the oldest unsent rows before the new one until both bounds hold.
        count = self._count + 1
        size = self._bytes + len(data)
        dropped: list[int] = []
        while count > self.max_messages or size > self.max_bytes:
            oldest = connection.execute(
                "SELECT id, LENGTH(payload) FROM messages WHERE device_id = ? AND id > ? AND id < ? "
                "ORDER BY id LIMIT 1",
                (self.device_id, self._cursor, row_id),
            ).fetchone()
            if oldest is None:
                # Only handed-out rows are older; they leave once acknowledged.
                break
            connection.execute("DELETE FROM messages WHERE id = ?", (oldest[0],))
            dropped.append(oldest[1])
            count -= 1
            size -= oldest[1]

        connection.execute("COMMIT")
        return stored, dropped

    def _sweep_expired_locked(self, now: float) -> int:
        self._last_sweep = now
        try:
            self._connection.execute("BEGIN IMMEDIATE")
            condition = "device_id = ? AND id > ? AND expires IS NOT NULL AND expires <= ?"
            arguments = (self.device_id, self._cursor, now)
            rows = self._connection.execute(
                f"SELECT LENGTH(payload) FROM messages WHERE {condition}", arguments
            ).fetchall()
            self._connection.execute(f"DELETE FROM messages WHERE {condition}", arguments)
            self._connection.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback_locked()
            logger.error("cannot delete expired messages from outbox %s: %s", self.path, exc)
            return 0
        if rows:
            self._count -= len(rows)
            self._unsent -= len(rows)
            self._bytes -= sum(row[0] for row in rows)
            self._expired += len(rows)
            self._warn_dropped_locked(now, f"deleted {len(rows)} expired messages from outbox {self.path} unsent")
        return len(rows)

    def _delete_expired_locked(self, message: StoredMessage, now: float) -> None:
        try:
            self._connection.execute("DELETE FROM messages WHERE id = ?", (message.id,))
        except sqlite3.Error as exc:
            logger.error("cannot delete expired message %d from outbox %s: %s", message.id, self.path, exc)
            return
        self._count -= 1
        self._bytes -= len(message.payload)
        self._expired += 1
        self._warn_dropped_locked(now, f"deleted an expired {message.topic} message from outbox {self.path} unsent")

    def _warn_dropped_locked(self, now: float, text: str) -> None:
        """Log a drop at WARNING, at most once per ``DROP_WARNING_INTERVAL_S``, with the running totals."""
        if self._last_drop_warning is not None and now - self._last_drop_warning < DROP_WARNING_INTERVAL_S:
            return
        self._last_drop_warning = now
        logger.warning(
            "%s (device %s: %d dropped, %d expired so far; repeats are logged at most every %.0f s)",
            text,
            self.device_id,
            self._dropped,
            self._expired,
            DROP_WARNING_INTERVAL_S,
        )

    def _rollback_locked(self) -> None:
        if self._connection.in_transaction:
            try:
                self._connection.execute("ROLLBACK")
            except sqlite3.Error:
                logger.debug("rollback of outbox %s failed", self.path, exc_info=True)

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError(f"outbox {self.path} is closed; open a new Outbox to use it again")


def _create_directory(path: Path) -> None:
    """Create the directory of the outbox file; raise OutboxError with the fix."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutboxError(
            f"cannot create the outbox directory {path.parent} ({exc.strerror}); create it writable for the "
            "service user, or set mqtt.outbox_path to a file in a writable directory"
        ) from None


def _open_database(path: Path) -> sqlite3.Connection:
    """Open or create the outbox file in WAL mode and check it; raise OutboxError with the fix."""
    try:
        connection = sqlite3.connect(
            str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise _unwritable_error(path, exc) from None

    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > FORMAT_VERSION:
            raise OutboxError(
                f"outbox {path} has format version {version}, newer than this edge-runtime supports "
                f"({FORMAT_VERSION}); upgrade edge-runtime, or set mqtt.outbox_path to another file"
            )
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutboxError(
                f"outbox {path} cannot use WAL mode (SQLite kept {mode!r}); put the file on a local file system "
                "with mqtt.outbox_path"
            )
        connection.execute("PRAGMA synchronous=FULL")
        connection.executescript(_SCHEMA)
        connection.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
        check = connection.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(check)
    except OutboxError:
        connection.close()
        raise
    except sqlite3.OperationalError as exc:
        connection.close()
        if _is_write_failure(exc):
            raise _unwritable_error(path, exc) from None
        raise _invalid_file_error(path, exc) from None
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise _invalid_file_error(path, exc) from None
    return connection


def _is_write_failure(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in ("readonly", "read-only", "unable to open", "disk i/o", "permission"))


def _unwritable_error(path: Path, exc: sqlite3.Error) -> OutboxError:
    return OutboxError(
        f"cannot open outbox {path} for writing ({exc}); make the file and its directory writable for the "
        "service user, or set mqtt.outbox_path to a writable location"
    )


def _invalid_file_error(path: Path, exc: sqlite3.Error) -> OutboxError:
    return OutboxError(
        f"outbox {path} is not a valid SQLite database ({exc}); move the file aside (the messages queued in it "
        "are lost) so a new outbox is created, or set mqtt.outbox_path to another file"
    )
