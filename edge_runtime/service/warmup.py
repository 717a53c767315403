"""Analyzer warm-up before the service reports itself ready.

The first inference of a session is slower than the rest: ONNX Runtime and
TFLite allocate their buffers, OpenVINO finishes compiling, and MTCNN sees
each pyramid size of the frame for the first time. Running the detector on
one blank frame of the source's size and every classifier on one synthetic
face moves that cost before ``READY=1``, so the first real frame is not the
slowest one the watchdog has to cover.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.vision.types import Detection

logger = logging.getLogger(__name__)

# Frame size used when the source does not report one (pixels).
DEFAULT_SIZE = (640, 480)


def synthetic_face(width: int, height: int) -> Detection:
    """Return a centered square detection with five landmarks in MTCNN order (eyes, nose, mouth corners)."""
    side = max(2.0, min(width, height) / 2)
    left = (width - side) / 2
    top = (height - side) / 2
    relative = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]], dtype=np.float32)
    landmarks = relative * side + np.array([left, top], dtype=np.float32)
    return Detection(box=(left, top, left + side, top + side), score=1.0, landmarks=landmarks)


def warm_up(analyzer: Any, width: int = 0, height: int = 0) -> float:
    """Run the detector once on a blank ``width`` x ``height`` frame and the classifiers on a synthetic face.

    Resets the analyzer's face tracking afterwards, so the first real frame
    runs the full detector. Returns the seconds it took. A failure is logged at WARNING and not
    raised, because the warm-up input is synthetic and the real frames
    report real errors.
    """
    if width <= 0 or height <= 0:
        width, height = DEFAULT_SIZE
    frame = np.zeros((height, width, 3), dtype=np.uint8)

    started = time.perf_counter()
    try:
        analyzer.analyze(frame)
        classify = getattr(analyzer, "classify", None)
        if classify is not None:
            classify(frame, [synthetic_face(width, height)])
    except EdgeRuntimeError as exc:
        logger.warning("analyzer warm-up on a %dx%d frame failed: %s", width, height, exc)

    # The blank frame must not count as the frame before the first real one.
    reset_tracking = getattr(analyzer, "reset_tracking", None)
    if reset_tracking is not None:
        reset_tracking()
    seconds = time.perf_counter() - started

    logger.info("analyzer warmed up on a %dx%d frame in %.2f s", width, height, seconds)
    return seconds
