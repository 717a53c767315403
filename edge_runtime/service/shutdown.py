"""A hard upper bound on the shutdown after SIGTERM or SIGINT.

The runner stops after the current frame, publishes the last window, and
the publisher flushes for at most ``mqtt.flush_timeout_s``. Should any of
that hang (a blocked camera driver, a stuck inference call), the deadline
ends the process before systemd's ``TimeoutStopSec=`` (30 s in the unit)
sends SIGKILL, and logs why.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Optional

logger = logging.getLogger(__name__)

# Seconds from the stop signal to the forced exit. The unit's
# TimeoutStopSec=30s must stay above it; tests/systemd checks that.
SHUTDOWN_TIMEOUT_S = 20.0

# Exit status of a shutdown that ran past SHUTDOWN_TIMEOUT_S.
EXIT_SHUTDOWN_TIMEOUT = 1


class ShutdownDeadline:
    """Exit the process with ``EXIT_SHUTDOWN_TIMEOUT`` when a started shutdown takes longer than ``timeout_s``."""

    def __init__(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._timer: Optional[threading.Timer] = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the countdown; later calls do nothing."""
        with self._lock:
            if self._timer is not None:
                return
            self._timer = threading.Timer(self.timeout_s, self._expire)
            self._timer.name = "shutdown-deadline"
            self._timer.daemon = True
            self._timer.start()
        logger.debug("shutdown deadline armed: %.0f s", self.timeout_s)

    def cancel(self) -> None:
        """Stop the countdown, once the shutdown finished."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def _expire(self) -> None:
        logger.error(
            "shutdown did not finish within %.0f s of the stop signal; exiting with status %d",
            self.timeout_s,
            EXIT_SHUTDOWN_TIMEOUT,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(EXIT_SHUTDOWN_TIMEOUT)
