"""A minimal sd_notify client: readiness, watchdog, status and stopping messages to systemd.

systemd passes ``$NOTIFY_SOCKET`` to a ``Type=notify`` service: the path of
an AF_UNIX datagram socket, where a leading ``@`` means the Linux abstract
namespace. Each message is one datagram of newline-separated ``KEY=VALUE``
assignments (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=...``), as
described in sd_notify(3).

``$WATCHDOG_USEC`` is the unit's ``WatchdogSec=`` in microseconds, and
``$WATCHDOG_PID``, when set, names the process it is meant for. sd_notify(3)
recommends a ping at half the interval. Outside systemd every method does
nothing and logs at DEBUG, so the same code runs in a terminal.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Mapping, Optional

logger = logging.getLogger(__name__)

# Repeated send failures are logged once per this many seconds.
SEND_ERROR_LOG_INTERVAL_S = 60.0


def socket_address(path: str) -> Optional[str]:
    """Return the address to send to for a ``$NOTIFY_SOCKET`` value, or None when it is unsupported.

    A leading ``@`` becomes a NUL byte, which Linux reads as an abstract
    socket name. Only absolute paths and abstract names are supported;
    ``vsock:`` addresses (systemd 253 and later, for virtual machines) are not.
    """
    if path.startswith("@"):
        return "\0" + path[1:]
    if path.startswith("/"):
        return path
    return None


def watchdog_interval_s(environ: Mapping[str, str], pid: Optional[int] = None) -> Optional[float]:
    """Return ``$WATCHDOG_USEC`` in seconds, or None when no watchdog applies to process ``pid``.

    ``pid`` defaults to this process. A ``$WATCHDOG_PID`` naming another
    process, or a missing, zero or invalid ``$WATCHDOG_USEC``, means no watchdog.
    """
    usec_text = environ.get("WATCHDOG_USEC")
    if not usec_text:
        return None
    try:
        usec = int(usec_text)
    except ValueError:
        logger.warning("WATCHDOG_USEC=%r is not an integer; the systemd watchdog is not served", usec_text)
        return None
    if usec <= 0:
        return None

    pid_text = environ.get("WATCHDOG_PID")
    if pid_text:
        own_pid = os.getpid() if pid is None else pid
        try:
            if int(pid_text) != own_pid:
                logger.debug("WATCHDOG_PID=%s is not this process (%d); no watchdog pings", pid_text, own_pid)
                return None
        except ValueError:
            logger.warning("WATCHDOG_PID=%r is not an integer; the systemd watchdog is not served", pid_text)
            return None
    return usec / 1_000_000


class SystemdNotifier:
    """Send sd_notify messages to one socket; every method is a no-op when ``address`` is None.

    Sending never raises, because a service must keep running when the
    service manager goes away; failures are logged at WARNING, at most once
    per ``SEND_ERROR_LOG_INTERVAL_S``. Safe to call from several threads.
    """

    def __init__(self, address: Optional[str], watchdog_s: Optional[float] = None) -> None:
        self.address = address
        # The full WatchdogSec= interval; pings go out at half of it.
        self.watchdog_s = watchdog_s if address is not None else None
        self._socket: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._last_ping = float("-inf")
        self._send_errors = 0
        self._last_error_log = float("-inf")

    @classmethod
    def from_environment(cls, environ: Optional[Mapping[str, str]] = None) -> "SystemdNotifier":
        """Build a notifier from ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``."""
        environ = os.environ if environ is None else environ
        path = environ.get("NOTIFY_SOCKET")
        if not path:
            logger.debug("NOTIFY_SOCKET is not set; not running under systemd, so no sd_notify messages")
            return cls(None)

        address = socket_address(path)
        if address is None:
            logger.warning("NOTIFY_SOCKET=%r is neither an absolute path nor an abstract name; sd_notify is off", path)
            return cls(None)

        watchdog_s = watchdog_interval_s(environ)
        logger.debug(
            "sd_notify socket %s, watchdog %s",
            path,
            f"{watchdog_s:.1f} s" if watchdog_s is not None else "off",
        )
        return cls(address, watchdog_s)

    @property
    def enabled(self) -> bool:
        """True when a notification socket is configured."""
        return self.address is not None

    @property
    def ping_interval_s(self) -> Optional[float]:
        """Seconds between two watchdog pings (half of ``WatchdogSec=``), or None without a watchdog."""
        return self.watchdog_s / 2 if self.watchdog_s is not None else None

    def ready(self, status: Optional[str] = None) -> bool:
        """Send ``READY=1`` (with an optional status line): start-up is complete."""
        return self._send_fields(("READY=1",), status)

    def watchdog(self) -> bool:
        """Send ``WATCHDOG=1`` now, regardless of the ping interval."""
        sent = self._send_fields(("WATCHDOG=1",), None)
        with self._lock:
            self._last_ping = time.monotonic()
        return sent

    def watchdog_if_due(self) -> bool:
        """Send ``WATCHDOG=1`` when half the watchdog interval has passed since the last ping.

        Returns True when a ping went out. Without a watchdog it does nothing.
        """
        interval = self.ping_interval_s
        if interval is None:
            return False
        with self._lock:
            now = time.monotonic()
            if now - self._last_ping < interval:
                return False
            self._last_ping = now
        return self._send_fields(("WATCHDOG=1",), None)

    def stopping(self, status: Optional[str] = None) -> bool:
        """Send ``STOPPING=1`` (with an optional status line): the service is shutting down."""
        return self._send_fields(("STOPPING=1",), status)

    def status(self, text: str) -> bool:
        """Send ``STATUS=text``, the one-line state that ``systemctl status`` shows."""
        return self._send_fields((), text)

    def close(self) -> None:
        """Close the socket; later calls open it again."""
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def _send_fields(self, fields: tuple[str, ...], status: Optional[str]) -> bool:
        if status is not None:
            # A newline would start a new assignment in the datagram.
            fields = (*fields, "STATUS=" + " ".join(status.splitlines()))
        return self.send("\n".join(fields))

    def send(self, message: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; return True when it was sent."""
        if self.address is None:
            logger.debug("sd_notify skipped (not under systemd): %s", message.replace("\n", " "))
            return False

        payload = message.encode("utf-8")
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.sendto(payload, self.address)
            except OSError as exc:
                self._send_errors += 1
                now = time.monotonic()
                if now - self._last_error_log >= SEND_ERROR_LOG_INTERVAL_S:
                    self._last_error_log = now
                    logger.warning(
                        "sd_notify to %s failed (%d failures so far): %s",
                        self.address.replace("\0", "@"),
                        self._send_errors,
                        exc,
                    )
                return False
        logger.debug("sd_notify: %s", message.replace("\n", " "))
        return True
