"""The frame loop, stage timing and result record that both reference pipelines share.

A reference pipeline decodes the video with OpenCV inside the timed loop,
as edge-runtime's capture loop does, so decoding counts in every row's fps.
It reports per-stage milliseconds (``decode``, ``detect``, ``preprocess``
for crop and tensor building, ``classify`` for the model run), the
classifier's milliseconds per face (preprocess plus classify, divided by
the faces of the frame) and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np

from bench.timing import LatencyStats, peak_rss_mib

logger = logging.getLogger(__name__)

STAGES = ("decode", "detect", "preprocess", "classify")
# Detections under this MTCNN probability are dropped, as HSEmotion's
# video example does with facenet-pytorch's MTCNN.
FACE_PROBABILITY = 0.9


@dataclass
class FrameTimings:
    """Milliseconds per stage and the faces of one frame."""

    stages: dict[str, float] = field(default_factory=dict)
    faces: int = 0


def clip_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Round a float (x1, y1, x2, y2) box to whole pixels inside a ``width`` x ``height`` frame, without margin."""
    x1 = min(max(int(box[0]), 0), width - 1)
    y1 = min(max(int(box[1]), 0), height - 1)
    x2 = min(max(int(box[2]), x1 + 1), width)
    y2 = min(max(int(box[3]), y1 + 1), height)
    return x1, y1, x2, y2


def run_video(
    video: Path,
    frames: int,
    process: Callable[[np.ndarray, FrameTimings], None],
    warmup: Callable[[np.ndarray], None],
) -> tuple[list[FrameTimings], float]:
    """Decode up to ``frames`` frames of ``video`` and call ``process(frame_bgr, timings)`` on each.

    ``warmup`` runs once on the first frame before the clock starts, so the
    first timed frame does not pay for lazy initialisation. Returns the
    timings of every processed frame and the wall time of the loop in
    seconds.

    Raises:
        FileNotFoundError: the video cannot be opened or has no frame.
    """
    capture = cv2.VideoCapture(str(video))
    ok, first = capture.read() if capture.isOpened() else (False, None)
    capture.release()
    if not ok:
        raise FileNotFoundError(f"cannot read a frame from {video}; check the path and that OpenCV can decode it")
    warmup(first)

    capture = cv2.VideoCapture(str(video))
    records: list[FrameTimings] = []
    started = time.perf_counter()
    try:
        while len(records) < frames:
            decode_start = time.perf_counter()
            ok, frame = capture.read()
            if not ok:
                break
            timings = FrameTimings()
            timings.stages["decode"] = (time.perf_counter() - decode_start) * 1000.0
            process(frame, timings)
            records.append(timings)
    finally:
        capture.release()
    return records, time.perf_counter() - started


def summarize(
    name: str,
    description: str,
    records: list[FrameTimings],
    wall_s: float,
    details: dict[str, Any],
) -> dict[str, Any]:
    """Build the result record of one pipeline run, in the layout ``bench.compare`` reads."""
    frame_ms = [sum(record.stages.values()) for record in records]
    stages = {}
    for stage in STAGES:
        samples = [record.stages[stage] for record in records if stage in record.stages]
        if samples:
            stages[stage] = LatencyStats.from_samples(samples).mean_ms

    with_faces = [record for record in records if record.faces > 0]
    per_face = [
        (record.stages.get("preprocess", 0.0) + record.stages.get("classify", 0.0)) / record.faces
        for record in with_faces
    ]
    return {
        "name": name,
        "description": description,
        "frames": len(records),
        "wall_s": wall_s,
        "fps": len(records) / wall_s if wall_s > 0 else 0.0,
        "frame_ms": LatencyStats.from_samples(frame_ms).__dict__ if frame_ms else None,
        "stage_ms": stages,
        "classifier_ms_per_face": float(np.mean(per_face)) if per_face else None,
        "classifier_ms_per_face_p50": float(np.median(per_face)) if per_face else None,
        "faces_per_frame": float(np.mean([record.faces for record in records])) if records else 0.0,
        "frames_with_faces": len(with_faces),
        "peak_rss_mib": peak_rss_mib(),
        "python": platform.python_version(),
        "details": details,
    }


def reference_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """Return the command-line parser both reference modules use."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--video", type=Path, required=True, help="video file to analyze")
    parser.add_argument("--frames", type=int, default=200, help="frames to process (default: 200)")
    parser.add_argument("--cache", type=Path, required=True, help="stand-in cache built by bench.references.stand_in")
    parser.add_argument("--output", type=Path, help="write the result record here as JSON (default: stdout)")
    parser.add_argument(
        "--torch-threads", type=int, help="torch intra-op threads (default: torch's own choice, one per core)"
    )
    return parser


def set_torch_threads(threads: Optional[int]) -> None:
    """Set torch's intra-op thread count unless ``threads`` is None.

    Raises:
        ValueError: ``threads`` is below 1.
    """
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--torch-threads is {threads}; pass 1 or more, or leave it out for torch's default")

    import torch

    torch.set_num_threads(threads)


def write_result(result: dict[str, Any], output: Optional[Path]) -> None:
    """Write a result record as JSON to ``output``, or to stdout when it is None."""
    text = json.dumps(result, indent=2)
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        output.write_text(text + "\n", encoding="utf-8")
