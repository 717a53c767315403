"""Capture-loop hooks that keep systemd informed: readiness, watchdog pings and a status line.

``SystemdHooks`` implements ``RunHooks``. The watchdog pings come from the
capture loop itself: each time the loop takes a frame or comes back for the
next one, a ping goes out when half of ``WatchdogSec=`` has passed. So a
loop stuck in analysis or publishing stops pinging, and systemd kills and
restarts the service after ``WatchdogSec=``.

While the loop waits inside the source for its next frame (a live source
reconnecting with back-off, or a slow decode), a helper thread pings in its
place, because that wait is the source's own, bounded by its reconnect
back-off. The thread pings only while the loop is in that wait, and during
the shutdown flush, whose length the runner bounds.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable, Iterator, Optional, TypeVar

from edge_runtime.service.notify import SystemdNotifier

logger = logging.getLogger(__name__)

FrameT = TypeVar("FrameT")

# Seconds between two STATUS= updates while frames flow.
STATUS_INTERVAL_S = 5.0

# A wait for the source longer than this shows up in the status line.
SOURCE_WAIT_STATUS_S = 5.0


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class SystemdHooks:
    """``RunHooks`` that send READY, WATCHDOG, STATUS and STOPPING through ``notifier``.

    ``connected`` returns whether the MQTT broker connection is up; it goes
    into the status line. Call ``close()`` after the run to stop the helper thread.
    """

    def __init__(self, notifier: SystemdNotifier, connected: Callable[[], bool] = lambda: False) -> None:
        self.notifier = notifier
        self.connected = connected
        self._lock = threading.Lock()
        self._waiting_since: Optional[float] = None
        self._stopping = False
        self._closed = threading.Event()
        self._thread: Optional[threading.Thread] = None

        self._frames = 0
        self._faces = 0
        self._status_frames = 0
        self._status_at = time.monotonic()
        self._source_wait_reported = False
        self._status_due = False

    def started(self) -> None:
        """Send READY=1 and start the helper thread when a watchdog is configured."""
        self._status_at = time.monotonic()
        self.notifier.ready(status="running; waiting for the first frame")
        self.notifier.watchdog_if_due()
        interval = self.notifier.ping_interval_s
        if interval is not None and self._thread is None:
            self._thread = threading.Thread(
                target=self._ping_while_waiting, args=(interval,), name="systemd-watchdog", daemon=True
            )
            self._thread.start()

    def frames(self, source: Iterable[FrameT]) -> Iterator[FrameT]:
        """Yield the frames of ``source``, pinging the watchdog whenever the loop makes progress."""
        iterator = iter(source)
        while True:
            with self._lock:
                self._waiting_since = time.monotonic()
            try:
                frame = next(iterator)
            except StopIteration:
                return
            finally:
                with self._lock:
                    self._waiting_since = None
                    # After a reported wait the next analyzed frame replaces the status at once.
                    status_due = self._source_wait_reported
                    self._source_wait_reported = False
            if status_due:
                self._status_due = True
            self.notifier.watchdog_if_due()
            yield frame
            # The loop is back for the next frame, so it finished this one.
            self.notifier.watchdog_if_due()

    def analyzed(self, faces: int) -> None:
        """Count the frame and send a STATUS= line every ``STATUS_INTERVAL_S`` seconds."""
        self._frames += 1
        self._status_frames += 1
        self._faces = faces
        now = time.monotonic()
        elapsed = now - self._status_at
        if elapsed < STATUS_INTERVAL_S and self._frames > 1 and not self._status_due:
            return

        # A rate over less than a second (the first frame) would mislead.
        rate = f"{self._status_frames / elapsed:.1f} fps" if elapsed >= 1.0 else "first frames"
        broker = "broker connected" if self.connected() else "broker not connected"
        self.notifier.status(f"analyzing {rate}, {_plural(faces, 'face')}, {broker}")
        self._status_at = now
        self._status_frames = 0
        self._status_due = False

    def stopping(self, reason: str) -> None:
        """Send STOPPING=1; the helper thread keeps pinging through the bounded shutdown flush."""
        with self._lock:
            self._stopping = True
        self.notifier.stopping(status=f"stopping ({reason}); publishing the last window and flushing MQTT")

    def close(self) -> None:
        """Stop the helper thread and close the notification socket."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self.notifier.close()

    def _ping_while_waiting(self, interval_s: float) -> None:
        # Waking four times per ping interval keeps a ping late by at most a
        # quarter of it.
        while not self._closed.wait(interval_s / 4):
            with self._lock:
                waiting_since = self._waiting_since
                stopping = self._stopping
            if waiting_since is None and not stopping:
                continue

            self.notifier.watchdog_if_due()
            waited = time.monotonic() - waiting_since if waiting_since is not None else 0.0
            with self._lock:
                report = not stopping and waited >= SOURCE_WAIT_STATUS_S and not self._source_wait_reported
                if report:
                    self._source_wait_reported = True
            if report:
                logger.debug("no frame for %.0f s; the watchdog is pinged while the source recovers", waited)
                self.notifier.status(f"waiting for frames from the source (none for {waited:.0f} s)")
