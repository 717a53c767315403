"""The SQLite outbox on its own: order, persistence, sequence numbers, bounds, expiry and bad files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.capture.outbox import Outbox, default_outbox_path, first_seq
from edge_runtime.capture.outbox_lock import lock_path_for
from edge_runtime.errors import OutboxError, OutboxInUseError

REPO_ROOT = Path(__file__).resolve().parents[2]

# A second process that opens an Outbox, reports "open" on stdout and keeps it open until stdin closes.
HOLDER_SCRIPT = """
import sys
from edge_runtime.capture.outbox import Outbox
outbox = Outbox(sys.argv[1], sys.argv[2], max_messages=10, max_bytes=1 << 20)
print("open", flush=True)
sys.stdin.read()
outbox.close()
"""


class Clock:
    """A settable wall clock in UNIX seconds."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_outbox(path: Path, device_id: str = "pi-1", *, clock=None, max_messages: int = 1000, max_bytes: int = 1 << 20):
    return Outbox(path, device_id, max_messages=max_messages, max_bytes=max_bytes, clock=clock or Clock())


def sequenced(text: str):
    """Return a payload builder that records the sequence number in the payload."""
    return lambda seq: f"{text}#{seq}".encode()


def drain(outbox: Outbox) -> list:
    messages = []
    while (message := outbox.next_unsent()) is not None:
        messages.append(message)
    return messages


def test_outbox_hands_out_in_insertion_order(tmp_path) -> None:
    outbox = open_outbox(tmp_path / "outbox.sqlite")
    for number in range(5):
        outbox.add("t/faces", f"m{number}".encode(), qos=1)

    messages = drain(outbox)

    assert [message.payload for message in messages] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert [message.id for message in messages] == sorted(message.id for message in messages)
    assert outbox.unsent_count == 0
    # Handed out is not deleted: they stay until the broker acknowledged them.
    assert outbox.count == 5
    outbox.close()


def test_outbox_delete_removes_acknowledged(tmp_path) -> None:
    outbox = open_outbox(tmp_path / "outbox.sqlite")
    for number in range(3):
        outbox.add("t/faces", f"m{number}".encode(), qos=1)
    first, second, third = drain(outbox)

    outbox.delete([first.id, third.id, 999_999])

    assert outbox.count == 1
    assert outbox.size_bytes == len(second.payload)
    outbox.close()


def test_outbox_persists_across_reopen(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    outbox = open_outbox(path)
    stored = [outbox.add("t/stats", sequenced(f"m{number}"), qos=1) for number in range(3)]
    # One was handed out before the "crash" but never acknowledged.
    assert outbox.next_unsent() == stored[0]
    outbox.close()

    reopened = open_outbox(path)
    assert reopened.count == 3
    assert reopened.unsent_count == 3
    assert drain(reopened) == stored
    reopened.close()


def test_seq_continues_after_reopen(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    clock = Clock()
    outbox = open_outbox(path, clock=clock)
    first = outbox.add("t/faces", sequenced("a"), qos=1)
    second = outbox.add("t/faces", sequenced("b"), qos=1)
    outbox.delete([message.id for message in drain(outbox)])
    outbox.close()

    reopened = open_outbox(path, clock=clock)
    third = reopened.add("t/faces", sequenced("c"), qos=1)

    assert first.seq == first_seq(clock.now)
    assert second.seq == first.seq + 1
    # Every row was deleted, and the number still is not reused.
    assert third.seq == first.seq + 2
    assert third.payload == f"c#{third.seq}".encode()
    assert third.id > second.id
    reopened.close()


def test_seq_is_per_device(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    clock = Clock()
    first = open_outbox(path, "pi-1", clock=clock)
    second = open_outbox(path, "pi-2", clock=clock)

    a1 = first.add("a/faces", sequenced("a"), qos=1)
    b1 = second.add("b/faces", sequenced("b"), qos=1)
    a2 = first.add("a/faces", sequenced("a"), qos=1)

    assert a2.seq == a1.seq + 1
    assert b1.seq == first_seq(clock.now)
    assert [message.topic for message in drain(second)] == ["b/faces"]
    assert first.count == 2
    first.close()
    second.close()


def test_raw_payload_has_no_seq(tmp_path) -> None:
    outbox = open_outbox(tmp_path / "outbox.sqlite")

    stored = outbox.add("t/raw", b"plain", qos=0)

    assert stored.seq is None
    assert stored.qos == 0
    outbox.close()


def test_first_seq_follows_clock() -> None:
    assert first_seq(1_700_000_000.5) == 1_700_000_000_500
    assert first_seq(0.0) == 1


def test_count_bound_drops_oldest_unsent(tmp_path, caplog) -> None:
    outbox = open_outbox(tmp_path / "outbox.sqlite", max_messages=3)
    for number in range(5):
        outbox.add("t/faces", f"m{number}".encode(), qos=1)

    assert outbox.count == 3
    assert outbox.dropped_total == 2
    assert [message.payload for message in drain(outbox)] == [b"m2", b"m3", b"m4"]
    warnings = [record for record in caplog.records if "is full (mqtt.outbox_max_messages=" in record.getMessage()]
    # Two drops within a minute give one warning line.
    assert len(warnings) == 1
    assert str(tmp_path / "outbox.sqlite") in warnings[0].getMessage()
    outbox.close()


def test_drop_warning_repeats_after_interval(tmp_path, caplog) -> None:
    clock = Clock()
    outbox = open_outbox(tmp_path / "outbox.sqlite", clock=clock, max_messages=1)
    outbox.add("t/faces", b"m0", qos=1)
    outbox.add("t/faces", b"m1", qos=1)
    clock.now += 61
    outbox.add("t/faces", b"m2", qos=1)

    warnings = [record for record in caplog.records if "is full (mqtt.outbox_max_messages=" in record.getMessage()]
    assert len(warnings) == 2
    assert "2 dropped" in warnings[1].getMessage()
    outbox.close()


def test_byte_bound_drops_oldest_unsent(tmp_path) -> None:
    outbox = open_outbox(tmp_path / "outbox.sqlite", max_bytes=100)
    for number in range(4):
        outbox.add("t/faces", bytes([number]) * 40, qos=1)

    assert outbox.size_bytes == 80
    assert outbox.dropped_total == 2
    assert [message.payload[0] for message in drain(outbox)] == [2, 3]
    outbox.close()


def test_bound_keeps_handed_out_messages(tmp_path) -> None:
    outbox = open_outbox(tmp_path / "outbox.sqlite", max_messages=3)
    outbox.add("t/faces", b"sent-0", qos=1)
    outbox.add("t/faces", b"sent-1", qos=1)
    in_flight = drain(outbox)
    for number in range(3):
        outbox.add("t/faces", f"new-{number}".encode(), qos=1)

    # sent-0 and sent-1 may still be delivered, so new-0 and new-1 went instead.
    assert outbox.dropped_total == 2
    assert outbox.count == 3
    assert [message.payload for message in drain(outbox)] == [b"new-2"]
    outbox.delete([message.id for message in in_flight])
    assert outbox.count == 1
    outbox.close()


def test_oversize_message_dropped_alone_leaving_gap(tmp_path) -> None:
    outbox = open_outbox(tmp_path / "outbox.sqlite", max_bytes=50)
    before = outbox.add("t/faces", sequenced("small"), qos=1)

    oversize = outbox.add("t/faces", lambda seq: b"x" * 51, qos=1)
    after = outbox.add("t/faces", sequenced("small"), qos=1)

    assert oversize is None
    assert outbox.dropped_total == 1
    assert outbox.count == 2
    # The dropped message used a number, so subscribers see a gap of one.
    assert after.seq == before.seq + 2
    outbox.close()


def test_expired_message_deleted_unsent(tmp_path) -> None:
    clock = Clock()
    outbox = open_outbox(tmp_path / "outbox.sqlite", clock=clock)
    expiring = outbox.add("t/faces", b"expiring", qos=1, expiry_s=10)
    outbox.add("t/faces", b"lasting", qos=1)

    clock.now += 4
    assert expiring.remaining_expiry_s(clock.now) == 6
    clock.now += 6

    messages = drain(outbox)

    assert [message.payload for message in messages] == [b"lasting"]
    assert messages[0].remaining_expiry_s(clock.now) is None
    assert outbox.expired_total == 1
    assert outbox.count == 1
    outbox.close()


def test_remaining_expiry_rounds_up(tmp_path) -> None:
    clock = Clock()
    outbox = open_outbox(tmp_path / "outbox.sqlite", clock=clock)
    stored = outbox.add("t/faces", b"m", qos=1, expiry_s=10)

    assert stored.remaining_expiry_s(clock.now + 0.5) == 10
    assert stored.remaining_expiry_s(clock.now + 9.9) == 1
    assert stored.expired(clock.now + 10)
    outbox.close()


def test_expired_messages_swept_on_open(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    clock = Clock()
    outbox = open_outbox(path, clock=clock)
    outbox.add("t/faces", b"old", qos=1, expiry_s=5)
    outbox.add("t/faces", b"new", qos=1, expiry_s=500)
    outbox.close()

    clock.now += 60
    reopened = open_outbox(path, clock=clock)

    assert reopened.expired_total == 1
    assert reopened.count == 1
    assert [message.payload for message in drain(reopened)] == [b"new"]
    reopened.close()


def test_outbox_uses_wal(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    outbox = open_outbox(path)
    outbox.add("t/faces", b"m", qos=1)

    assert outbox.journal_mode() == "wal"
    assert (tmp_path / "outbox.sqlite-wal").exists()
    # WAL mode is stored in the file, so every other connection uses it too.
    other = sqlite3.connect(path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()
    outbox.close()


def test_outbox_creates_missing_directories(tmp_path) -> None:
    path = tmp_path / "state" / "edge-runtime" / "outbox.sqlite"

    outbox = open_outbox(path)

    assert path.is_file()
    outbox.close()


def test_corrupted_file_names_path_and_fix(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"this is not an SQLite database, just text written by a test\n" * 100)

    with pytest.raises(OutboxError) as raised:
        open_outbox(path)

    message = str(raised.value)
    assert str(path) in message
    assert "not a valid SQLite database" in message
    assert "move the file aside" in message
    assert "mqtt.outbox_path" in message


def test_truncated_database_names_path(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    outbox = open_outbox(path)
    for number in range(200):
        outbox.add("t/faces", f"message-{number}".encode() * 20, qos=1)
    outbox.close()
    data = path.read_bytes()
    # Keep the header page, overwrite the rest with noise.
    path.write_bytes(data[:4096] + bytes(range(256)) * ((len(data) - 4096) // 256))
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

    with pytest.raises(OutboxError, match="not a valid SQLite database") as raised:
        open_outbox(path)

    assert str(path) in str(raised.value)


def test_directory_in_place_of_file_names_path(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    path.mkdir()

    with pytest.raises(OutboxError) as raised:
        open_outbox(path)

    message = str(raised.value)
    assert str(path) in message
    assert "mqtt.outbox_path" in message


def test_file_in_place_of_directory_names_directory(tmp_path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the outbox directory should be\n", encoding="utf-8")

    with pytest.raises(OutboxError) as raised:
        open_outbox(blocker / "outbox.sqlite")

    message = str(raised.value)
    assert f"cannot create the outbox directory {blocker}" in message
    assert "writable" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_read_only_file_names_path_and_fix(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    open_outbox(path).close()
    for leftover in tmp_path.iterdir():
        leftover.chmod(0o400)
    tmp_path.chmod(0o500)

    try:
        with pytest.raises(OutboxError) as raised:
            outbox = open_outbox(path)
            outbox.add("t/faces", b"m", qos=1)
    finally:
        tmp_path.chmod(0o700)

    assert str(path) in str(raised.value)
    assert "writable" in str(raised.value)


def test_newer_format_rejected(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 99")
    connection.commit()
    connection.close()

    with pytest.raises(OutboxError, match="format version 99"):
        open_outbox(path)


def test_closed_outbox_rejects_add(tmp_path) -> None:
    outbox = open_outbox(tmp_path / "outbox.sqlite")
    outbox.close()

    with pytest.raises(OutboxError, match="is closed"):
        outbox.add("t/faces", b"m", qos=1)


@pytest.mark.parametrize(
    "environment, expected",
    [
        ({"STATE_DIRECTORY": "/var/lib/edge-runtime"}, "/var/lib/edge-runtime/outbox.sqlite"),
        ({"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}, "/var/lib/a/outbox.sqlite"),
        ({"XDG_STATE_HOME": "/home/pi/.state"}, "/home/pi/.state/edge-runtime/outbox.sqlite"),
        ({"HOME": "/home/pi"}, "/home/pi/.local/state/edge-runtime/outbox.sqlite"),
    ],
)
def test_default_outbox_path(monkeypatch, environment, expected) -> None:
    for key in ("STATE_DIRECTORY", "XDG_STATE_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)

    assert default_outbox_path() == Path(expected)


def start_holder(path: Path, device_id: str) -> subprocess.Popen:
    """Start a process that keeps an Outbox of ``path`` and ``device_id`` open until its stdin closes."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, str(path), device_id],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    if line.strip() != "open":
        process.kill()
        raise AssertionError(f"holder process did not open the outbox: {line!r} {process.stderr.read()}")
    return process


def test_outbox_in_use_by_other_process(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    holder = start_holder(path, "pi-1")
    try:
        with pytest.raises(OutboxInUseError) as raised:
            open_outbox(path, "pi-1")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)

    message = str(raised.value)
    assert f"outbox {path} is in use for device pi-1 by process {holder.pid}" in message
    assert "stop the other edge-runtime process" in message
    assert "mqtt.outbox_path" in message
    assert "STATE_DIRECTORY" in message
    assert holder.returncode == 0

    # The holder closed the outbox, so the lock is free again.
    open_outbox(path, "pi-1").close()


def test_outbox_lock_released_by_kill(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    holder = start_holder(path, "pi-1")
    with pytest.raises(OutboxInUseError):
        open_outbox(path, "pi-1")

    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    holder.stdin.close()

    assert holder.returncode == -signal.SIGKILL
    # The lock file stays behind with the dead PID in it and does not block.
    assert lock_path_for(path, "pi-1").read_text().strip() == str(holder.pid)
    outbox = open_outbox(path, "pi-1")
    assert lock_path_for(path, "pi-1").read_text().strip() == str(os.getpid())
    outbox.close()


def test_other_device_may_share_locked_file(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    holder = start_holder(path, "pi-1")
    try:
        other = open_outbox(path, "pi-2")
        other.add("t/faces", b"m", qos=1)
        assert other.count == 1
        other.close()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_second_outbox_in_process_rejected(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    first = open_outbox(path, "pi-1")

    with pytest.raises(OutboxInUseError) as raised:
        open_outbox(path, "pi-1")

    assert f"outbox {path} is already open for device pi-1 in this process" in str(raised.value)
    first.close()
    open_outbox(path, "pi-1").close()


def test_failed_open_releases_lock(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"not a database\n" * 300)

    with pytest.raises(OutboxError, match="not a valid SQLite database"):
        open_outbox(path, "pi-1")

    path.unlink()
    open_outbox(path, "pi-1").close()


@pytest.mark.parametrize(
    "device_id, name",
    [
        ("pi-1", "outbox.sqlite.pi-1.lock"),
        ("cam_2.lab", "outbox.sqlite.cam_2.lab.lock"),
        ("a/b", "outbox.sqlite.a%2Fb.lock"),
        ("a%2Fb", "outbox.sqlite.a%252Fb.lock"),
    ],
)
def test_lock_path_per_device(device_id, name) -> None:
    assert lock_path_for(Path("/var/lib/edge-runtime/outbox.sqlite"), device_id) == Path(
        "/var/lib/edge-runtime", name
    )
