"""``edge-runtime analyze PATH``: detect and classify the faces of one image or video file.

The file is read before any model loads, so an unreadable file fails fast
with one line naming the file and the reason (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.models.store import ModelStore
from edge_runtime.profiles import detect_profile, load_profile
from edge_runtime.vision.analyzer import FaceAnalyzer
from edge_runtime.vision.image_io import VideoFrame, is_video, iter_video_frames, read_image
from edge_runtime.commands.options import add_profile_option, add_store_option
from edge_runtime.vision.types import FaceResult

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="detect faces in an image or video file and print emotion, age and gender",
        description=(
            "Detect the faces of an image or video file and classify each with the models of the device "
            "profile: emotion distribution, age and gender. Videos are analyzed frame by frame."
        ),
    )
    parser.add_argument("path", type=Path, metavar="PATH", help="image or video file (the format is read from the content)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--detector", metavar="NAME", help="face detector package, e.g. mtcnn (default: the profile's)")
    parser.add_argument(
        "--backend", metavar="NAME", help="run every model on this backend, e.g. onnxruntime (default: the profile's order)"
    )
    add_store_option(parser)
    add_profile_option(parser)
    parser.add_argument(
        "--every", type=int, default=1, metavar="N", help="video only: analyze every N-th frame (default: 1, all frames)"
    )
    parser.set_defaults(handler=run)


def _round(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def result_as_dict(result: FaceResult) -> dict[str, Any]:
    """Return a JSON-ready dict of one face: box, score, landmarks and every attribute present."""
    detection = result.detection
    landmarks = None if detection.landmarks is None else np.round(detection.landmarks.astype(float), 2).tolist()
    return {
        "box": [_round(v, 2) for v in detection.box],
        "score": _round(detection.score),
        "landmarks": landmarks,
        "emotions": None if result.emotions is None else {k: _round(v) for k, v in result.emotions.items()},
        "emotion": result.dominant_emotion,
        "valence": None if result.valence is None else _round(result.valence),
        "arousal": None if result.arousal is None else _round(result.arousal),
        "age": None if result.age is None else {"years": _round(result.age.years, 2), "spread": _round(result.age.spread, 2)},
        "gender": None if result.gender is None else {k: _round(v) for k, v in result.gender.items()},
        "ethnicity": None if result.ethnicity is None else {k: _round(v) for k, v in result.ethnicity.items()},
    }


def reading_order(result: FaceResult) -> tuple[float, float]:
    """Return the sort key of a face in the output: the box's left edge, then its top edge, in pixels."""
    x1, y1, _, _ = result.detection.box
    return (x1, y1)


def _format_distribution(distribution: dict[str, float]) -> str:
    ordered = sorted(distribution.items(), key=lambda item: -item[1])
    return ", ".join(f"{label} {probability:.2f}" for label, probability in ordered)


def _print_face(number: int, result: FaceResult) -> None:
    detection = result.detection
    x1, y1, x2, y2 = detection.box
    print(f"  face {number}: box ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}) score {detection.score:.3f}")
    if detection.landmarks is not None:
        points = " ".join(f"({x:.0f},{y:.0f})" for x, y in detection.landmarks)
        print(f"    landmarks: {points}")
    if result.emotions is not None:
        print(f"    emotion: {result.dominant_emotion} ({_format_distribution(result.emotions)})")
    if result.valence is not None:
        print(f"    valence: {result.valence:+.2f}")
    if result.arousal is not None:
        print(f"    arousal: {result.arousal:+.2f}")
    if result.age is not None:
        print(f"    age: {result.age.years:.1f} ± {result.age.spread:.1f} years")
    if result.gender is not None:
        label = max(result.gender, key=result.gender.get)
        print(f"    gender: {label} {result.gender[label]:.2f} ({_format_distribution(result.gender)})")
    if result.ethnicity is not None:
        print(f"    ethnicity: {_format_distribution(result.ethnicity)}")


def _print_frame(header: str, image: np.ndarray, results: list[FaceResult], timings: dict[str, float]) -> None:
    height, width = image.shape[:2]
    stages = ", ".join(f"{stage} {ms:.1f} ms" for stage, ms in timings.items())
    faces = "1 face" if len(results) == 1 else f"{len(results)} faces"
    print(f"{header}: {width}x{height}, {faces} ({stages})")
    for number, result in enumerate(results, start=1):
        _print_face(number, result)


def _frames(path: Path, every: int) -> tuple[str, Iterator[VideoFrame]]:
    """Open ``path`` as a video or an image and return its kind and its frames.

    The first frame is decoded here, before any model loads, so that an
    unreadable file fails at once.
    """
    if not is_video(path):
        return "image", iter([VideoFrame(0, 0.0, read_image(path))])

    frames = iter_video_frames(path, every_n=every)
    first = next(frames)

    def chained() -> Iterator[VideoFrame]:
        yield first
        yield from frames

    return "video", chained()


def _profile(name: Optional[str]):
    return load_profile(name) if name else detect_profile()


def run(args: argparse.Namespace) -> int:
    if args.every < 1:
        raise ConfigError(f"--every is {args.every}; it must be 1 or more")

    kind, frames = _frames(args.path, args.every)
    profile = _profile(args.profile)
    models = {"detector": args.detector} if args.detector else None

    with FaceAnalyzer.from_store(ModelStore(args.store), profile, models=models, backend=args.backend) as analyzer:
        frame_documents = []
        count = 0
        for frame in frames:
            # Detectors return faces by score; a user reads them left to right.
            results = sorted(analyzer.analyze(frame.image), key=reading_order)
            timings = {stage: round(ms, 2) for stage, ms in analyzer.last_timings_ms.items()}
            count += 1

            if args.json:
                height, width = frame.image.shape[:2]
                frame_documents.append(
                    {
                        "index": frame.index,
                        "time_s": round(frame.time_s, 3),
                        "width": width,
                        "height": height,
                        "timings_ms": timings,
                        "faces": [result_as_dict(result) for result in results],
                    }
                )
            elif kind == "image":
                _print_frame(str(args.path), frame.image, results, timings)
            else:
                _print_frame(f"frame {frame.index} ({frame.time_s:.2f} s)", frame.image, results, timings)

        if args.json:
            document = {
                "file": str(args.path),
                "kind": kind,
                "profile": profile.name,
                "models": analyzer.models,
                "frames": frame_documents,
            }
            print(json.dumps(document, indent=2))
        elif kind == "video":
            print(f"{args.path}: {count} frame(s) analyzed, every {args.every} frame(s)")
    return 0
