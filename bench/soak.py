"""``python -m bench.soak``: run the capture loop for a long time and measure how its memory grows.

The loop is the service's own ``Runner``: a video file read with
``source.loop`` so it never ends, the device profile's models, the IoU
tracker, the window aggregator and an ``MqttPublisher`` with its outbox
file. The publisher sends to ``--broker``. Without that option, the soak
starts its own Mosquitto on a free 127.0.0.1 port when the binary is
installed. Otherwise, or with ``--no-broker``, it only encodes the messages.

A sampler in the main thread reads the process's resident set size
(``VmRSS`` of ``/proc/self/status``, Linux only) every ``--sample-interval``
seconds. Memory growth is the least-squares slope of RSS over time after
``--warmup`` seconds, in MiB per hour, because the first minutes include
allocator and model warm-up that a leak must not be confused with. The
record goes to ``bench/results/soak/<board>-<UTC time>.json``.

Example (3 minutes on the sample clip, then 8 hours on a real video)::

    .venv/bin/python -m bench.soak --duration 3m
    .venv/bin/python -m bench.soak --duration 8h --video clip.mp4 --note "idle board"
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from edge_runtime.benchmark.inputs import make_clip
from edge_runtime.benchmark.pipeline import EncodeOnlyPublisher
from edge_runtime.benchmark.platform_info import board_slug, describe_platform
from edge_runtime.capture.mqtt import MqttPublisher
from edge_runtime.capture.runner import Runner, RunSummary, open_analyzer
from edge_runtime.capture.source import FrameSource
from edge_runtime.config import Config, MqttConfig, SourceConfig
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.samples import fetch_sample

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "soak"
DEVICE_ID = "soak"
MOSQUITTO_BINARIES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
MOSQUITTO_START_TIMEOUT_S = 10.0
# Seconds the runner may take to flush and return after it is asked to stop.
STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class MemorySample:
    """One reading of the process: seconds since the loop started, RSS in MiB, counters at that time."""

    elapsed_s: float
    rss_mib: float
    frames_delivered: int
    loops: int
    python_objects: int


@dataclass(frozen=True)
class MemoryGrowth:
    """Least-squares growth of RSS over the samples taken after ``warmup_s``.

    ``mib_per_hour`` is None when fewer than two samples follow the
    warm-up. ``late_mib_per_hour`` is the slope of the later half of those
    samples only: a leak keeps it near ``mib_per_hour``, while growth that
    levels off (allocator pools, caches filling up) makes it much smaller.
    ``first_mib`` and ``last_mib`` are the first and last samples after the
    warm-up, ``peak_mib`` the largest of all samples.
    """

    warmup_s: float
    samples_used: int
    mib_per_hour: Optional[float]
    late_mib_per_hour: Optional[float]
    first_mib: Optional[float]
    last_mib: Optional[float]
    peak_mib: float


def parse_duration(text: str) -> float:
    """Parse ``90``, ``90s``, ``15m`` or ``8h`` into seconds (above 0)."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}; give seconds (90), or a number with s, m or h (15m, 8h)"
        ) from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} must be above 0")
    return seconds


def read_rss_mib() -> float:
    """Return the resident set size of this process in MiB.

    Raises:
        RuntimeError: ``/proc/self/status`` has no ``VmRSS`` line (not Linux).
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("/proc/self/status has no VmRSS line; the soak benchmark needs Linux")


def memory_growth(samples: Sequence[MemorySample], warmup_s: float) -> MemoryGrowth:
    """Fit RSS against time over the samples after ``warmup_s`` and return the slope in MiB per hour."""
    used = [sample for sample in samples if sample.elapsed_s >= warmup_s]
    peak = max((sample.rss_mib for sample in samples), default=0.0)
    if len(used) < 2:
        return MemoryGrowth(warmup_s, len(used), None, None, None, None, peak)

    times = np.array([sample.elapsed_s for sample in used])
    rss = np.array([sample.rss_mib for sample in used])
    later = len(used) // 2
    late_rate = _slope_per_hour(times[later:], rss[later:]) if len(used) - later >= 2 else None
    return MemoryGrowth(
        warmup_s=warmup_s,
        samples_used=len(used),
        mib_per_hour=_slope_per_hour(times, rss),
        late_mib_per_hour=late_rate,
        first_mib=float(rss[0]),
        last_mib=float(rss[-1]),
        peak_mib=peak,
    )


def _slope_per_hour(times_s: np.ndarray, rss_mib: np.ndarray) -> float:
    return float(np.polyfit(times_s, rss_mib, 1)[0]) * 3600.0


class LocalMosquitto:
    """A Mosquitto broker on a free 127.0.0.1 port, with its configuration in ``directory``."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @classmethod
    def find_binary(cls) -> Optional[str]:
        """Return the mosquitto executable, or None when it is not installed."""
        for candidate in MOSQUITTO_BINARIES:
            found = shutil.which(candidate)
            if found:
                return found
        return None

    def start(self) -> None:
        """Start the broker and wait until it accepts connections.

        Raises:
            RuntimeError: it exited or did not accept connections within 10 s.
        """
        config_path = self.directory / "mosquitto.conf"
        config_path.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        log = (self.directory / "mosquitto.log").open("wb")
        self.process = subprocess.Popen([self.binary, "-c", str(config_path)], stdout=log, stderr=subprocess.STDOUT)
        log.close()

        deadline = time.monotonic() + MOSQUITTO_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.process.returncode}; see {self.directory / 'mosquitto.log'}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not accept connections on 127.0.0.1:{self.port} within 10 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Run the capture loop on a looping video with real models and report RSS growth in MiB/h.",
    )
    parser.add_argument(
        "--duration", type=parse_duration, default=600.0, metavar="TIME",
        help="how long the loop runs: seconds, or a number with s, m or h (default: 10m)",
    )
    parser.add_argument(
        "--sample-interval", type=parse_duration, default=5.0, metavar="TIME",
        help="time between two RSS samples (default: 5 s)",
    )
    parser.add_argument(
        "--warmup", type=parse_duration, metavar="TIME",
        help="samples before this time are left out of the growth fit (default: a quarter of --duration, at most 5m)",
    )

    parser.add_argument(
        "--video", type=Path, metavar="FILE",
        help="video to loop (default: a 640x480 clip panning across the astronaut sample photo)",
    )
    broker = parser.add_mutually_exclusive_group()
    broker.add_argument("--broker", metavar="URL", help="publish to this broker, e.g. mqtt://127.0.0.1:1883")
    broker.add_argument("--no-broker", action="store_true", help="only encode the messages; open no connection")

    parser.add_argument("--profile", metavar="NAME", help="device profile (default: detected)")
    parser.add_argument("--store", type=Path, metavar="DIR", help="model store directory (default: $EDGE_RUNTIME_MODELS, else the user's data directory)")
    parser.add_argument("--window", type=float, default=10.0, metavar="SECONDS", help="aggregation window in seconds of source time (default: 10)")

    parser.add_argument(
        "--output-dir", type=Path, default=RESULTS_DIR, metavar="DIR", help="where the record goes (default: bench/results/soak)"
    )
    parser.add_argument("--name", metavar="NAME", help="first part of the file name (default: this board's name)")
    parser.add_argument("--note", default="", help="free text stored in the record, e.g. how loaded the machine was")
    parser.add_argument(
        "--log-level", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"], default="WARNING",
        help="log level (default: WARNING)",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.video is not None and not args.video.is_file():
        print(f"error: video {args.video} not found; pass an existing file to --video", file=sys.stderr)
        return 2

    warmup_s = args.warmup if args.warmup is not None else min(args.duration / 4.0, 300.0)
    try:
        with tempfile.TemporaryDirectory(prefix="edge-runtime-soak-") as scratch_name:
            scratch = Path(scratch_name)
            video = args.video or make_clip(
                cv2.imread(str(fetch_sample("astronaut")), cv2.IMREAD_COLOR), scratch / "clip.mp4"
            )
            record = run_soak(args, video, warmup_s, scratch)
    except (EdgeRuntimeError, RuntimeError) as exc:
        print(f"error: soak failed: {exc}", file=sys.stderr)
        return 1

    args.output_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    path = args.output_dir / f"{args.name or record['board']}-{stamp}.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    growth = record["memory"]
    rate = growth["mib_per_hour"]
    print(
        f"soak: {record['elapsed_s']:.0f} s, {record['frames_analyzed']} frames ({record['fps']:.1f} fps), "
        f"{record['loops']} loops of {args.video or 'the sample clip'}; RSS {growth['first_mib']} -> "
        f"{growth['last_mib']} MiB after {warmup_s:.0f} s warm-up, peak {growth['peak_mib']:.1f} MiB; "
        f"growth {format_rate(rate)}, later half {format_rate(growth['late_mib_per_hour'])}"
    )
    print(f"record: {path}")
    return 0


def format_rate(mib_per_hour: Optional[float]) -> str:
    return "n/a (too few samples)" if mib_per_hour is None else f"{mib_per_hour:+.1f} MiB/h"


def run_soak(args: argparse.Namespace, video: Path, warmup_s: float, scratch: Path) -> dict[str, Any]:
    """Run the loop for ``args.duration`` seconds while sampling RSS; return the record to write."""
    broker: Optional[LocalMosquitto] = None
    broker_url = args.broker
    if broker_url is None and not args.no_broker:
        binary = LocalMosquitto.find_binary()
        if binary is None:
            logger.warning("mosquitto is not installed, so the soak only encodes the messages (as --no-broker)")
        else:
            broker = LocalMosquitto(binary, scratch)
            broker.start()
            broker_url = broker.url

    mqtt = MqttConfig(
        broker=broker_url or "mqtt://127.0.0.1:1883",
        device_id=DEVICE_ID,
        outbox_path=scratch / "outbox.sqlite",
        flush_timeout_s=10.0,
    )
    config = Config(
        source=SourceConfig(spec=str(video), loop=True),
        profile=args.profile,
        store=args.store,
        window_s=args.window,
        mqtt=mqtt,
    )
    load_at_start = os.getloadavg()
    analyzer, profile_name = open_analyzer(config)
    try:
        source = FrameSource(str(video), loop=True)
        source.open()
        try:
            publisher = MqttPublisher(mqtt) if broker_url else EncodeOnlyPublisher(mqtt)
            runner = Runner(config, analyzer, source, publisher, profile_name=profile_name)
            summary, samples = sample_while_running(runner, source, args.duration, args.sample_interval)
            health = source.health
        finally:
            source.close()
        models = {role: dict(info) for role, info in analyzer.models.items()}
    finally:
        analyzer.close()
        if broker is not None:
            broker.stop()

    platform = describe_platform()
    growth = memory_growth(samples, warmup_s)
    return {
        "kind": "soak",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "board": board_slug(platform),
        "platform": platform,
        "cpu_count": os.cpu_count(),
        "load_average_start": [round(value, 2) for value in load_at_start],
        "load_average_end": [round(value, 2) for value in os.getloadavg()],
        "note": args.note,
        "video": {
            "path": str(args.video) if args.video else "astronaut sample clip (edge_runtime.benchmark.inputs.make_clip)",
            "width": source.width,
            "height": source.height,
            "fps": source.fps,
            "frames": source.frame_count,
        },
        "profile": profile_name,
        "models": models,
        "mqtt": {
            "mode": "broker" if broker_url else "encode only",
            "own_broker": broker is not None,
            "messages_lost": summary.messages_lost,
        },
        "duration_s": args.duration,
        "elapsed_s": summary.wall_s,
        "frames_analyzed": summary.frames_analyzed,
        "fps": summary.fps,
        "windows": summary.windows_published,
        "loops": health.loops,
        "stop_reason": summary.reason,
        "sample_interval_s": args.sample_interval,
        "memory": asdict(growth),
        "samples": [asdict(sample) for sample in samples],
    }


def sample_while_running(
    runner: Runner, source: FrameSource, duration_s: float, interval_s: float
) -> tuple[RunSummary, list[MemorySample]]:
    """Run ``runner`` in a thread for ``duration_s`` seconds and sample RSS every ``interval_s`` seconds.

    Raises:
        RuntimeError: the runner raised, ended before the duration, or did not return after being stopped.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["summary"] = runner.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="soak-runner", daemon=True)
    started = time.monotonic()
    thread.start()
    samples: list[MemorySample] = []
    next_sample = started
    while thread.is_alive():
        elapsed = time.monotonic() - started
        if elapsed >= duration_s:
            break
        if time.monotonic() >= next_sample:
            samples.append(take_sample(source, elapsed))
            next_sample += interval_s
            logger.info("soak sample at %.0f s: RSS %.1f MiB", elapsed, samples[-1].rss_mib)
        thread.join(timeout=max(0.0, min(next_sample, started + duration_s) - time.monotonic()))

    if thread.is_alive():
        samples.append(take_sample(source, time.monotonic() - started))
    runner.stop("soak duration reached")
    thread.join(timeout=STOP_TIMEOUT_S)

    if "error" in outcome:
        raise RuntimeError(f"the capture loop failed: {outcome['error']}") from outcome["error"]
    if thread.is_alive():
        raise RuntimeError(f"the capture loop did not return within {STOP_TIMEOUT_S:.0f} s of the stop request")
    summary: RunSummary = outcome["summary"]
    if not summary.stopped:
        raise RuntimeError(f"the capture loop ended by itself before the duration: {summary.reason}")
    return summary, samples


def take_sample(source: FrameSource, elapsed_s: float) -> MemorySample:
    return MemorySample(
        elapsed_s=round(elapsed_s, 3),
        rss_mib=round(read_rss_mib(), 2),
        frames_delivered=source.stats.frames_delivered,
        loops=source.health.loops,
        python_objects=len(gc.get_objects()),
    )


if __name__ == "__main__":
    sys.exit(main())
