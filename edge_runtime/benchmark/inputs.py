"""Benchmark inputs: real frames from a video file, or the sample photo when no video is given.

The frames feed the detect, preprocess and classify stages, and the decode
stage times how these frames are made: one video frame read with OpenCV,
or one decode of the photo file. Without a video, the pipeline stage runs
on a short clip made from the photo (``make_clip``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from edge_runtime.errors import EdgeRuntimeError, ImageReadError
from edge_runtime.vision.image_io import iter_video_frames, read_image

logger = logging.getLogger(__name__)

# The clip made from the photo when no video is given: the photo panned
# across a 640x480 frame at 25 fps for 4.8 s.
CLIP_SIZE = (640, 480)
CLIP_FPS = 25.0
CLIP_FRAMES = 120


@dataclass
class BenchInput:
    """Decoded frames of one input file.

    ``kind`` is ``video`` or ``image``. ``frames`` are BGR ``uint8`` arrays:
    up to the requested count spread evenly over a video, or the one photo.
    ``fps`` is the video's nominal frame rate (None for a photo).
    """

    path: Path
    kind: str
    frames: list[np.ndarray]
    fps: Optional[float] = None

    @property
    def label(self) -> str:
        """File name shown in tables and stored in the ``input`` field."""
        return self.path.name

    @property
    def size(self) -> str:
        """``<width>x<height>`` of the frames."""
        height, width = self.frames[0].shape[:2]
        return f"{width}x{height}"


def load_video(path: Path, count: int) -> BenchInput:
    """Decode ``count`` frames spread evenly over the video at ``path``.

    Raises:
        ImageReadError: the file is missing or no frame decodes.
        ValueError: ``count`` is below 1.
    """
    if count < 1:
        raise ValueError(f"frame count is {count}; it must be 1 or more")

    capture = cv2.VideoCapture(str(path))
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    finally:
        capture.release()

    # The container's frame count is an estimate, so the step is too; a
    # short file simply gives fewer frames.
    step = max(1, total // count) if total > 0 else 1
    frames = []
    for frame in iter_video_frames(path, every_n=step):
        frames.append(frame.image)
        if len(frames) >= count:
            break
    logger.info("decoded %d frames of %s, every %d-th", len(frames), path, step)
    return BenchInput(path=path, kind="video", frames=frames, fps=fps if fps > 0 else None)


def load_image(path: Path) -> BenchInput:
    """Decode the photo at ``path`` (raises ImageReadError when it cannot be read)."""
    return BenchInput(path=path, kind="image", frames=[read_image(path)])


class FrameDecoder:
    """Decodes one frame per ``decode()`` call: the next video frame, or the whole photo file again.

    A video starts over from its first frame when it ends, so any number of
    calls can be timed.
    """

    def __init__(self, source: BenchInput) -> None:
        self.source = source
        self._capture: Optional[cv2.VideoCapture] = None

    def decode(self, index: int = 0) -> np.ndarray:
        """Return the next frame; ``index`` is unused and accepted for ``time_calls``."""
        if self.source.kind == "image":
            return read_image(self.source.path)

        if self._capture is None:
            self._capture = self._open()
        ok, frame = self._capture.read()
        if not ok:
            self._capture.release()
            self._capture = self._open()
            ok, frame = self._capture.read()
            if not ok:
                raise ImageReadError(f"{self.source.path}: no frame decodes after reopening the video")
        return frame

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.source.path))
        if not capture.isOpened():
            raise ImageReadError(f"{self.source.path}: OpenCV cannot open the video")
        return capture

    def close(self) -> None:
        """Release the video; later ``decode()`` calls open it again."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def make_clip(image: np.ndarray, path: Path) -> Path:
    """Write an MP4 to ``path`` that pans a 640x480 window across ``image``; return ``path``.

    The face stays in view and moves, so the tracker and the aggregator do
    real work. The clip replaces a camera, so it measures the loop's
    overhead and gives no numbers for real footage.

    Raises:
        EdgeRuntimeError: OpenCV has no mp4v encoder here.
    """
    width, height = CLIP_SIZE
    scale = max(width / image.shape[1], height / image.shape[0]) * 1.25
    canvas = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    spare_x = canvas.shape[1] - width
    spare_y = canvas.shape[0] - height

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), CLIP_FPS, CLIP_SIZE)
    if not writer.isOpened():
        raise EdgeRuntimeError(f"OpenCV cannot write {path} with the mp4v codec; pass --video FILE instead")
    try:
        for index in range(CLIP_FRAMES):
            phase = 0.5 - 0.5 * np.cos(2 * np.pi * index / CLIP_FRAMES)
            x = int(round(spare_x * phase))
            y = int(round(spare_y * phase))
            writer.write(np.ascontiguousarray(canvas[y : y + height, x : x + width]))
    finally:
        writer.release()
    return path
