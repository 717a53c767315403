"""The sd_notify client and the capture-loop hooks against a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from edge_runtime.service.notify import SystemdNotifier, socket_address, watchdog_interval_s
from edge_runtime.service.supervision import SystemdHooks


class NotifySocket:
    """A bound datagram socket that records what arrives, as systemd's notification socket does."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(address)
        self.socket.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def texts(self) -> list[str]:
        with self._lock:
            return [text for _, text in self.messages]

    def times_of(self, text: str) -> list[float]:
        with self._lock:
            return [at for at, message in self.messages if message == text]

    def wait_for(self, predicate, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.texts()):
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.socket.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(str(tmp_path / "notify.sock"))
    yield listener
    listener.close()


def test_messages_arrive_as_datagrams(notify_socket) -> None:
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": notify_socket.address})

    assert notifier.ready(status="loaded")
    assert notifier.status("analyzing\nsecond line")
    assert notifier.watchdog()
    assert notifier.stopping()
    notifier.close()

    assert notify_socket.wait_for(lambda texts: len(texts) == 4)
    assert notify_socket.texts() == [
        "READY=1\nSTATUS=loaded",
        "STATUS=analyzing second line",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_abstract_socket_name(tmp_path) -> None:
    name = f"edge-runtime-test-{uuid.uuid4().hex}"
    listener = NotifySocket("\0" + name)
    try:
        notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": "@" + name})

        assert notifier.ready()
        assert listener.wait_for(lambda texts: texts == ["READY=1"])
    finally:
        listener.close()


def test_without_socket_does_nothing(caplog) -> None:
    notifier = SystemdNotifier.from_environment({})

    with caplog.at_level("DEBUG", logger="edge_runtime.service.notify"):
        sent = notifier.ready()

    assert sent is False
    assert not notifier.enabled
    assert notifier.ping_interval_s is None
    assert "not under systemd" in caplog.text


def test_vanished_socket_does_not_raise(tmp_path, caplog) -> None:
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})

    assert notifier.ready() is False
    assert notifier.ready() is False
    # Repeated failures are logged once per interval.
    assert caplog.text.count("sd_notify to") == 1


def test_socket_address_forms() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abstract") == "\0abstract"
    assert socket_address("vsock:2:1234") is None


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_from_environment(environ, expected) -> None:
    assert watchdog_interval_s(environ) == expected


def test_watchdog_pings_rate_limited(notify_socket) -> None:
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "400000"})

    assert notifier.ping_interval_s == pytest.approx(0.2)
    sent = [notifier.watchdog_if_due() for _ in range(50)]
    time.sleep(0.25)
    sent.append(notifier.watchdog_if_due())

    assert sent.count(True) == 2
    assert notify_socket.wait_for(lambda texts: texts.count("WATCHDOG=1") == 2)


def slow_source(frames: int, wait_s: float) -> Iterator[int]:
    """A source that makes its consumer wait ``wait_s`` before each frame, like a reconnecting camera."""
    for index in range(frames):
        time.sleep(wait_s)
        yield index


def test_hooks_ping_while_loop_waits_for_source(notify_socket) -> None:
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "400000"})
    hooks = SystemdHooks(notifier)

    hooks.started()
    started = time.monotonic()
    received = list(hooks.frames(slow_source(frames=2, wait_s=1.0)))
    hooks.close()

    assert received == [0, 1]
    pings = [at - started for at in notify_socket.times_of("WATCHDOG=1")]
    # Two waits of 1 s each; a ping every 0.2 s (plus up to a quarter of it).
    assert len(pings) >= 6, pings
    gaps = [later - earlier for earlier, later in zip(pings, pings[1:])]
    assert max(gaps) < 0.4, gaps


def test_hooks_stop_pinging_when_loop_hangs(notify_socket) -> None:
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "400000"})
    hooks = SystemdHooks(notifier)

    hooks.started()
    frames = hooks.frames(iter(range(3)))
    next(frames)
    hung_from = time.monotonic()
    time.sleep(1.0)  # the loop keeps the frame, as a hung analysis would
    hung_until = time.monotonic()
    next(frames)
    hooks.close()

    during_hang = [at for at in notify_socket.times_of("WATCHDOG=1") if hung_from + 0.05 < at < hung_until]
    assert during_hang == []
    assert notify_socket.times_of("WATCHDOG=1")[-1] >= hung_until


def test_hooks_status_and_stopping(notify_socket) -> None:
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": notify_socket.address})
    connected = {"value": True}
    hooks = SystemdHooks(notifier, connected=lambda: connected["value"])

    hooks.started()
    hooks.analyzed(faces=1)
    hooks.stopping("SIGTERM received")
    hooks.close()

    assert notify_socket.wait_for(lambda texts: len(texts) == 3)
    texts = notify_socket.texts()
    assert texts[0].startswith("READY=1\n")
    assert texts[1] == "STATUS=analyzing first frames, 1 face, broker connected"
    assert texts[2].startswith("STOPPING=1\nSTATUS=stopping (SIGTERM received)")
