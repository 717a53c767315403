"""Running edge-runtime as a systemd service.

``notify`` is the sd_notify client and ``hooks`` the interface through
which the capture loop reports its progress. ``supervision`` is the systemd
implementation of that interface (readiness, watchdog pings, status text),
and ``warmup`` the analyzer warm-up that precedes readiness. ``shutdown``
bounds the shutdown after SIGTERM, ``journal`` sets the log format on the
journal stream, and ``files`` locates the unit and configuration templates
that ``edge-runtime service install`` writes.
"""
