"""facenet-pytorch's MTCNN as the face detector of both reference pipelines.

facenet-pytorch 2.6.0 pins an old torch in its metadata, so it is installed
without its dependencies (``pip install --no-deps facenet-pytorch==2.6.0``)
over the ``convert`` extra's torch 2.9.1; it imports and runs there.
Settings are facenet-pytorch's defaults (minimum face 20 pixels, stage
thresholds 0.6, 0.7, 0.7, scale factor 0.709), the same pyramid and
thresholds as edge-runtime's MTCNN up to its O-Net threshold of 0.9, which
``FACE_PROBABILITY`` applies here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from bench.references.common import FACE_PROBABILITY, FrameTimings, clip_box

logger = logging.getLogger(__name__)


def load_mtcnn() -> Any:
    """Return facenet-pytorch's MTCNN on the CPU, keeping every face of a frame."""
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu")


def detect_faces(mtcnn: Any, frame_rgb: np.ndarray, timings: FrameTimings) -> list[tuple[int, int, int, int]]:
    """Detect faces in an RGB frame; return whole-pixel boxes without margin, and time the ``detect`` stage."""
    start = time.perf_counter()
    boxes, probabilities = mtcnn.detect(frame_rgb)
    timings.stages["detect"] = (time.perf_counter() - start) * 1000.0

    if boxes is None:
        return []
    height, width = frame_rgb.shape[:2]
    return [clip_box(box, width, height) for box, p in zip(boxes, probabilities) if p >= FACE_PROBABILITY]
