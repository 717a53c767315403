"""``edge-runtime run``: the capture service.

It reads frames from a camera, file, stream or GStreamer pipeline, analyzes
the faces, and publishes per-window aggregates, stats and status over MQTT.
A file source returns when the file ends, after the last window, the final
stats and ``offline`` are published. SIGTERM and SIGINT stop it the same
way, and a process still shutting down ``SHUTDOWN_TIMEOUT_S`` after the
signal exits 1; a second SIGINT interrupts the flush. Under systemd
(``$NOTIFY_SOCKET`` set) it reports readiness after the analyzer warm-up,
pings the watchdog from the capture loop and keeps a status line
(``edge_runtime.service.supervision``). ``EXIT_STATUS_HELP`` lists the
exit statuses.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from edge_runtime.capture.runner import RunSummary, open_service, plural
from edge_runtime.capture.source import SourceKind
from edge_runtime.commands.options import add_profile_option, add_store_option
from edge_runtime.config import Config, LoggingConfig, apply_overrides, load_config
from edge_runtime.service.journal import error_text
from edge_runtime.service.notify import SystemdNotifier
from edge_runtime.service.shutdown import SHUTDOWN_TIMEOUT_S, ShutdownDeadline
from edge_runtime.service.supervision import SystemdHooks
from edge_runtime.service.warmup import warm_up

logger = logging.getLogger(__name__)

EXIT_MESSAGES_LOST = 3

EXIT_STATUS_HELP = f"""\
exit status:
  0    the run ended and no MQTT message was lost; messages that could not
       reach the broker wait in the outbox file and are sent on the next start
  1    an error stopped the run, e.g. a missing source, repeated analysis
       failures or an outbox file that another process uses for the same
       device id, or the shutdown after a stop signal took longer than
       {SHUTDOWN_TIMEOUT_S:.0f} s; the message is on stderr
  2    invalid command-line arguments
  3    MQTT messages were lost: the outbox reached mqtt.outbox_max_messages
       or mqtt.outbox_max_bytes, messages expired (mqtt.message_expiry_s) or
       the broker rejected them; a camera, stream or pipeline stopped by
       SIGTERM or SIGINT exits 0 and only logs the loss
  65   a model is missing from the store, or its manifest or file
       checksums are invalid
  78   the configuration (file or flags) is invalid
  130  a second SIGINT interrupted the final flush
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the capture service: frames -> faces -> MQTT",
        description=(
            "Analyze the faces of a camera, video file, stream or GStreamer pipeline and\n"
            "publish per-window aggregates, stats and status to an MQTT broker. Flags\n"
            "override the config file."
        ),
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML config file (see examples/config.yaml)")

    # Source and analysis.
    parser.add_argument(
        "--source",
        metavar="SPEC",
        help="camera index (0), video file, stream URL (rtsp://...) or GStreamer pipeline (default: 0)",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        default=None,
        help="pace a video file at its fps and drop frames that the pipeline cannot keep up with",
    )
    parser.add_argument(
        "--loop",
        action="store_true",
        default=None,
        help="restart a video file at frame 0 when it ends, with timestamps that keep growing (files only)",
    )
    parser.add_argument("--every-n", type=positive_int, metavar="N", help="analyze every N-th frame (default: 1)")
    parser.add_argument(
        "--window", type=float, metavar="SECONDS", help="aggregation window in seconds of source time (default: 10)"
    )
    parser.add_argument(
        "--max-frames", type=positive_int, metavar="N", help="stop after N analyzed frames (default: no limit)"
    )

    # Models.
    add_profile_option(parser)
    add_store_option(parser)

    # MQTT.
    parser.add_argument(
        "--broker", metavar="URL", help="broker URL mqtt://HOST:PORT or mqtts://HOST:PORT (default: mqtt://127.0.0.1:1883)"
    )
    parser.add_argument("--device-id", metavar="ID", help="device id in topics and client id (default: host name)")

    parser.set_defaults(handler=run, sysexits=True)


def positive_int(text: str) -> int:
    """Parse a command-line integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def build_config(args: argparse.Namespace) -> Config:
    """Load ``--config`` (or the defaults) and apply the command-line flags over it."""
    config = load_config(args.config) if args.config else Config()
    return apply_overrides(
        config,
        {
            "source.spec": args.source,
            "source.realtime": args.realtime,
            "source.loop": args.loop,
            "source.every_n": args.every_n,
            "mqtt.broker": args.broker,
            "mqtt.device_id": args.device_id,
            "window_s": args.window,
            "profile": args.profile,
            "store": args.store,
        },
    )


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    apply_logging(config.logging)

    service = open_service(config)
    hooks = SystemdHooks(SystemdNotifier.from_environment(), connected=lambda: service.publisher.connected)
    service.runner.hooks = hooks
    deadline = ShutdownDeadline(SHUTDOWN_TIMEOUT_S)

    def stop(reason: str) -> None:
        deadline.start()
        service.runner.stop(reason)

    restore = install_stop_handlers(stop)
    try:
        # READY=1 goes out when the runner starts, so the warm-up counts as start-up.
        warm_up(service.analyzer, service.source.width or 0, service.source.height or 0)
        summary = service.runner.run(max_frames=args.max_frames)
    finally:
        restore()
        service.close()
        hooks.close()
        deadline.cancel()

    for stage, latency in sorted(summary.latency_ms.items()):
        logger.info("latency %-10s mean %7.2f ms  p95 %7.2f ms  (%d samples)", stage, latency.mean_ms, latency.p95_ms, latency.count)

    # Messages still in the outbox file are not lost: the next start sends them first.
    if summary.messages_pending:
        logger.info(
            "%s wait in the outbox for broker %s and are sent on the next start",
            plural(summary.messages_pending, "MQTT message"),
            config.mqtt.broker,
        )
    if lost_messages_fail_run(summary, service.source.kind):
        was = "was" if summary.messages_lost == 1 else "were"
        print(
            error_text(
                f"edge-runtime: error: {plural(summary.messages_lost, 'MQTT message')} {was} lost (dropped by an "
                f"outbox bound, expired or rejected by broker {config.mqtt.broker}); check that the broker is "
                "running and reachable, or raise mqtt.outbox_max_messages, mqtt.outbox_max_bytes or "
                "mqtt.message_expiry_s"
            ),
            file=sys.stderr,
        )
        return EXIT_MESSAGES_LOST
    return 0


def lost_messages_fail_run(summary: RunSummary, kind: SourceKind) -> bool:
    """Return True when lost MQTT messages make the run fail with ``EXIT_MESSAGES_LOST``.

    Only ``messages_lost`` counts: dropped, expired or rejected messages.
    Messages left in the outbox file (``messages_pending``) are sent on the
    next start, so they never fail a run. A live source stopped by a signal is the normal end of a service, and
    systemd would mark the unit failed on a non-zero status, so it exits 0
    even when the broker was unreachable at that moment.
    """
    if summary.messages_lost == 0:
        return False
    return not (kind.is_live and summary.stopped)


def apply_logging(settings: LoggingConfig) -> None:
    """Set the root and per-logger levels from the config file's ``logging`` section."""
    if settings.level is not None:
        logging.getLogger().setLevel(settings.level)
    for name, level in settings.loggers.items():
        logging.getLogger(name).setLevel(level)


def install_stop_handlers(stop: Callable[[str], None]) -> Callable[[], None]:
    """Make SIGTERM and SIGINT call ``stop``; return a function that restores the old handlers.

    After the first signal the previous handlers come back, so a second
    SIGINT raises KeyboardInterrupt. Outside the main thread nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    signals = (signal.SIGTERM, signal.SIGINT)
    previous: dict[int, Any] = {number: signal.getsignal(number) for number in signals}

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    def handle(number: int, frame: Optional[Any]) -> None:
        name = signal.Signals(number).name
        logger.info("%s received; publishing the last window and stopping", name)
        restore()
        stop(f"{name} received")

    for number in signals:
        signal.signal(number, handle)
    return restore
