"""``edge-runtime bench``: time every pipeline stage on every backend and precision variant of the store.

Writes ``<name>.json``, ``<name>.csv`` and ``<name>.png`` to
``--output-dir`` (default ``./bench-results``), replaces
``<state dir>/bench/latest.json`` with the JSON document (with ``--quick``
only when ``--latest`` is given, because ``selection: auto`` reads it and a
smoke run's numbers mean little), prints a table
on stdout and one progress line per measurement on stderr. With
``--publish`` it also publishes a compact summary, retained, to
``<prefix>/<device_id>/bench``. ``edge_runtime.benchmark`` describes
each stage.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from edge_runtime.backends import describe_backends
from edge_runtime.bench_latest import latest_path
from edge_runtime.benchmark.chart import write_chart
from edge_runtime.benchmark.inputs import BenchInput, load_image, load_video, make_clip
from edge_runtime.benchmark.platform_info import board_slug, describe_platform, slugify
from edge_runtime.benchmark.records import BenchReport
from edge_runtime.benchmark.stages import PRECISIONS, BenchSettings, StageBench, print_progress
from edge_runtime.benchmark.summary import build_summary, clear_retained, publish_summary, summary_topic
from edge_runtime.benchmark.timing import peak_rss_mib
from edge_runtime.benchmark.writers import output_stem, render_table, write_csv, write_json, write_latest
from edge_runtime.capture.messages import Topics
from edge_runtime.capture.runner import plural
from edge_runtime.commands.options import add_profile_option, add_store_option
from edge_runtime.config import DEFAULT_BROKER, MqttConfig, parse_broker_url
from edge_runtime.errors import ConfigError, PublishError
from edge_runtime.manifest import Task
from edge_runtime.models.store import ModelStore
from edge_runtime.profiles import DeviceProfile, detect_profile, load_profile
from edge_runtime.samples import fetch_sample

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = Path("bench-results")
DEFAULT_BATCHES = (1, 4)
BROKER_CHECK_TIMEOUT_S = 5.0

# Repetitions of a full run, and of --quick (enough to exercise every stage,
# too few for numbers worth comparing).
FULL = {"iterations": 50, "warmup": 5, "frames": 16, "pipeline_frames": 200}
QUICK = {"iterations": 5, "warmup": 1, "frames": 4, "pipeline_frames": 12}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time every pipeline stage on every backend and precision variant here",
        description=(
            "Time decode, detect, preprocess, classify, track, publish and the whole capture loop on this "
            "machine, with every backend and precision variant of the installed models side by side."
        ),
    )
    parser.add_argument(
        "--video", type=Path, metavar="FILE",
        help="video whose frames feed every stage and the pipeline (default: the astronaut sample photo)",
    )
    parser.add_argument("--frames", type=int, metavar="N",
                        help="frames decoded from --video for the detect and classify stages (default: 16)")
    parser.add_argument("--iterations", type=int, metavar="N", help="timed calls per measurement (default: 50)")
    parser.add_argument("--warmup", type=int, metavar="N", help="untimed calls before each measurement (default: 5)")
    parser.add_argument("--batches", type=int, nargs="+", metavar="N",
                        help="faces per call for preprocess and classify (default: 1 4)")
    parser.add_argument("--pipeline-frames", type=int, metavar="N",
                        help="frames the end-to-end capture loop analyzes (default: 200)")
    parser.add_argument("--quick", action="store_true",
                        help="5 timed calls after 1 warm-up, 4 frames, 12 pipeline frames: a smoke test, not a benchmark")

    parser.add_argument("--backends", nargs="+", metavar="NAME", help="backends to measure (default: every one that runs here)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, metavar="PRECISION",
                        help="variant precisions to measure (default: fp32 fp16 int8)")
    parser.add_argument("--detectors", nargs="+", metavar="MODEL",
                        help="detector packages (default: every installed face_detection package)")
    parser.add_argument("--classifiers", nargs="+", metavar="MODEL",
                        help="classifier packages (default: every other installed package)")
    add_store_option(parser)
    add_profile_option(parser)
    parser.add_argument("--threads", type=int, metavar="N",
                        help="intra-op threads per session (default: the profile's; 0 lets each framework decide)")

    parser.add_argument("--broker", metavar="URL",
                        help="MQTT broker for the publish and pipeline stages and --publish, e.g. "
                             "mqtt://127.0.0.1:1883, reached without credentials (default: none, so messages are "
                             "only encoded)")
    parser.add_argument("--prefix", default="edge-runtime", help="first topic levels (default: edge-runtime)")
    parser.add_argument("--device-id", metavar="ID", help="device id in the summary topic (default: from the host name)")
    parser.add_argument("--publish", action="store_true",
                        help="publish a compact summary, retained, to <prefix>/<device-id>/bench on --broker")

    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR, metavar="DIR",
                        help="where the JSON, CSV and PNG files go (default: ./bench-results)")
    parser.add_argument("--name", metavar="NAME",
                        help="file name of the results without extension (default: <board>-<UTC date and time>)")
    latest = parser.add_mutually_exclusive_group()
    latest.add_argument("--latest", action="store_true",
                        help="replace <state dir>/bench/latest.json even with --quick")
    latest.add_argument("--no-latest", action="store_true",
                        help="do not replace <state dir>/bench/latest.json, which backend selection reads "
                             "(the default with --quick)")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR", help="download cache of the sample photo")
    parser.add_argument("--note", metavar="TEXT",
                        help="free text stored in the settings, e.g. 'idle, fan on' or 'under load'")
    parser.set_defaults(handler=run)


def _count(args: argparse.Namespace, name: str, minimum: int) -> int:
    """Return the option ``name``, or its --quick or full-run default, after checking its minimum."""
    defaults = QUICK if args.quick else FULL
    value = getattr(args, name)
    chosen = defaults[name] if value is None else value
    if chosen < minimum:
        raise ConfigError(f"--{name.replace('_', '-')} is {chosen}; it must be {minimum} or more")
    return chosen


def _backends(requested: Optional[list[str]]) -> dict[str, tuple[str, ...]]:
    """Return the file formats of each backend that can run here, narrowed to ``requested``."""
    infos = describe_backends()
    available = {info.name: tuple(info.formats) for info in infos if info.available}
    if requested is None:
        return available

    known = {info.name for info in infos}
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise ConfigError(f"unknown backend(s) {', '.join(unknown)}; registered backends: {', '.join(sorted(known))}")
    missing = [name for name in requested if name not in available]
    if missing:
        raise ConfigError(
            f"backend(s) {', '.join(missing)} cannot run here; 'edge-runtime backends' lists each one's pip fix"
        )
    return {name: available[name] for name in requested}


def _models(store: ModelStore, requested: Optional[list[str]], detectors: bool) -> list[str]:
    """Return the detector packages to measure (``detectors``), or the classifier packages.

    Without ``requested``, that is every installed package of the kind.

    Raises:
        ModelNotFoundError: a requested package is not installed.
        ConfigError: a requested package is of the other kind.
    """
    option = "--detectors" if detectors else "--classifiers"
    if requested is None:
        return [
            package.name for package in store.installed()
            if (package.manifest.task == Task.FACE_DETECTION) == detectors
        ]

    for name in requested:
        # Manifests store enum values, so ``task`` is the plain string.
        task = store.open(name).manifest.task
        if (task == Task.FACE_DETECTION) != detectors:
            other = "--classifiers" if detectors else "--detectors"
            raise ConfigError(f"{option} {name}: the package's task is {task}; name it in {other} instead")
    return list(dict.fromkeys(requested))


def _mqtt_settings(args: argparse.Namespace) -> tuple[MqttConfig, str]:
    """Return the publisher settings of the publish and pipeline stages, and the device id of the summary.

    Those stages publish as ``<device id>-bench``, so their client id and
    topics never collide with a capture service running on this device.
    """
    try:
        device_id = MqttConfig(device_id=args.device_id, prefix=args.prefix).resolved_device_id
        mqtt = MqttConfig(
            broker=args.broker or DEFAULT_BROKER,
            prefix=args.prefix,
            device_id=f"{device_id[:58]}-bench",
            flush_timeout_s=5.0,
        )
    except ValidationError as exc:
        # pydantic starts the messages of custom validators with "Value error, ".
        message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"invalid MQTT option: {message}") from None
    return mqtt, device_id


def _check_broker_reachable(broker: str, timeout_s: float = BROKER_CHECK_TIMEOUT_S) -> None:
    """Open and close a TCP connection to the broker's host and port, so a wrong URL fails before the run.

    Raises:
        PublishError: the connection failed or timed out.
    """
    _, host, port = parse_broker_url(broker)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise PublishError(
            f"connection to broker {broker} failed: {exc}; start the broker, fix --broker, or leave --broker out"
        ) from None


def _prepare_output_dir(directory: Path) -> None:
    """Create ``directory`` and check that it is writable, so that a run never ends without its files.

    Raises:
        ConfigError: it cannot be created or is not writable.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--output-dir {directory}: cannot create the directory ({exc.strerror}); pass a writable directory"
        ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"--output-dir {directory}: the directory is not writable; pass a writable directory")


def _input(args: argparse.Namespace, frames: int) -> BenchInput:
    """Decode the frames of ``--video``, or the sample photo (downloaded once) without it."""
    if args.video is not None:
        return load_video(args.video, frames)
    return load_image(fetch_sample("astronaut", args.cache_dir))


def run(args: argparse.Namespace) -> int:
    """Check the options, run every stage, then write and print the results. Returns the exit status."""
    if args.publish and not args.broker:
        raise ConfigError("--publish needs --broker URL, e.g. --broker mqtt://127.0.0.1:1883")

    iterations = _count(args, "iterations", 1)
    warmup = _count(args, "warmup", 0)
    frames = _count(args, "frames", 1)
    pipeline_frames = _count(args, "pipeline_frames", 2)
    batches = tuple(dict.fromkeys(args.batches or DEFAULT_BATCHES))
    if min(batches) < 1:
        raise ConfigError(f"--batches {' '.join(map(str, batches))} contains a size below 1")
    if args.threads is not None and args.threads < 0:
        raise ConfigError(f"--threads is {args.threads}; it must be 0 (each framework decides) or more")

    if args.video is not None and not args.video.is_file():
        raise ConfigError(
            f"--video {args.video}: file not found; give the path of a video file, "
            "or leave --video out to run on the sample photo"
        )

    backends = _backends(args.backends)
    mqtt, device_id = _mqtt_settings(args)
    if args.broker:
        _check_broker_reachable(args.broker)

    store = ModelStore(args.store)
    detectors = _models(store, args.detectors, detectors=True)
    classifiers = _models(store, args.classifiers, detectors=False)
    if not detectors and not classifiers:
        raise ConfigError(
            f"no model is installed in {store.root}; run 'edge-runtime models pull --starter' or pass --store DIR"
        )
    profile: DeviceProfile = load_profile(args.profile) if args.profile else detect_profile()

    started = datetime.now(timezone.utc)
    clock = time.monotonic()
    platform = describe_platform()
    source = _input(args, frames)
    _prepare_output_dir(args.output_dir)

    with tempfile.TemporaryDirectory(prefix="edge-runtime-bench-") as scratch:
        pipeline_video = args.video or make_clip(source.frames[0], Path(scratch) / "clip-astronaut.mp4")
        settings = BenchSettings(
            source=source,
            pipeline_video=pipeline_video,
            scratch_dir=Path(scratch),
            backends=backends,
            detectors=detectors,
            classifiers=classifiers,
            mqtt=mqtt,
            use_broker=args.broker is not None,
            precisions=tuple(dict.fromkeys(args.precisions or PRECISIONS)),
            batches=batches,
            iterations=iterations,
            warmup=warmup,
            pipeline_frames=pipeline_frames,
            threads=args.threads,
        )
        report = BenchReport(
            platform=platform,
            settings=_settings_record(args, settings, profile, store),
            started_utc=started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        )
        print_progress(
            f"edge-runtime bench on {board_slug(platform)}: profile {profile.name}, backends "
            f"{', '.join(settings.backends) or 'none'}, {iterations} timed calls after {plural(warmup, 'warm-up call')}, "
            f"input {source.label} ({plural(len(source.frames), 'frame')})"
        )
        bench = StageBench(settings, store, profile, report)
        bench.make_plan()
        bench.run()

    report.duration_s = round(time.monotonic() - clock, 1)
    report.process_peak_rss_mib = round(max(bench.highest_rss_mib, peak_rss_mib()), 1)
    _write_outputs(args, report, started)
    if args.broker:
        _finish_mqtt(args, report, mqtt, device_id)
    return 0


def _settings_record(
    args: argparse.Namespace, settings: BenchSettings, profile: DeviceProfile, store: ModelStore
) -> dict[str, Any]:
    """Return the ``settings`` object of the result document."""
    source = settings.source
    return {
        "profile": profile.name,
        "store": str(store.root),
        "input": str(source.path),
        "input_kind": source.kind,
        "frames": len(source.frames),
        "pipeline_input": str(args.video) if args.video else f"clip panned over {source.label}",
        "backends": list(settings.backends),
        "precisions": list(settings.precisions),
        "detectors": list(settings.detectors),
        "classifiers": list(settings.classifiers),
        "batches": list(settings.batches),
        "iterations": settings.iterations,
        "warmup": settings.warmup,
        "pipeline_frames": settings.pipeline_frames,
        "threads": settings.threads if settings.threads is not None else profile.num_threads,
        "broker": args.broker,
        "quick": bool(args.quick),
        "note": args.note,
    }


def _write_outputs(args: argparse.Namespace, report: BenchReport, started: datetime) -> None:
    """Write the JSON, CSV and PNG files and ``latest.json``, and print the table."""
    platform = report.platform
    name = slugify(args.name) if args.name else output_stem(board_slug(platform), started)
    json_path = write_json(report, args.output_dir / f"{name}.json")
    csv_path = write_csv(report, args.output_dir / f"{name}.csv")
    fps = f", pipeline {report.pipeline['fps']:.1f} fps" if report.pipeline else ""
    title = f"edge-runtime bench: {board_slug(platform)}, {report.started_utc}{fps}; p50 bars, p90 whiskers"
    png_path = write_chart(report, args.output_dir / f"{name}.png", title)
    print(render_table(report), end="")
    print_progress(f"wrote {json_path}, {csv_path} and {png_path}")

    if _replaces_latest(args):
        print_progress(f"wrote {write_latest(report, latest_path())}")
    elif args.quick and not args.no_latest:
        print_progress(
            f"left {latest_path()} as it is, because --quick numbers mean little; pass --latest to replace it"
        )


def _replaces_latest(args: argparse.Namespace) -> bool:
    """Return True when the run replaces ``latest.json``: by default, but with --quick only when --latest is given."""
    if args.latest:
        return True
    return not args.quick and not args.no_latest


def _finish_mqtt(args: argparse.Namespace, report: BenchReport, mqtt: MqttConfig, device_id: str) -> None:
    """Clear the retained messages of the stage publishers, then publish the summary when ``--publish`` is set.

    The publish and pipeline stages leave a retained availability and
    status under ``<prefix>/<device_id>-bench/``. A failure to clear them
    is logged, because the results are already written.

    Raises:
        PublishError: the summary did not reach the broker.
    """
    client_id = f"edge-runtime-{device_id}-bench"
    stage_topics = Topics(mqtt.prefix, mqtt.resolved_device_id)
    try:
        clear_retained(args.broker, [stage_topics.availability, stage_topics.status], client_id=client_id)
    except PublishError as exc:
        logger.warning("clearing the retained messages under %s/%s/ failed: %s",
                       mqtt.prefix, mqtt.resolved_device_id, exc)

    if args.publish:
        topic = summary_topic(args.prefix, device_id)
        publish_summary(build_summary(report, device_id), args.broker, topic, client_id=client_id)
        print_progress(f"published the summary retained to {topic} on {args.broker}")
