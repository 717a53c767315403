"""The face detector interface and the box arithmetic its implementations share.

Every detector takes a uint8 BGR frame of shape (H, W, 3) and returns
``Detection`` objects in frame pixels, boxes clipped to the frame, sorted by
score with the highest first. Boxes are ``(x1, y1, x2, y2)`` with
``x2 - x1`` the width, so a box covering pixel columns 10..19 is
``(10, ..., 20, ...)``.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.loader import LoadedModel
from edge_runtime.vision.types import Detection

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorOptions:
    """Options every detector accepts.

    Attributes:
        min_face_size: smallest face reported, in frame pixels, compared with
            the longer side of the clipped box. MTCNN also starts its image
            pyramid from it, so a smaller value finds smaller faces and costs
            more time.
        score_threshold: lowest face probability reported, 0..1; None uses the
            detector's own default.
        nms_threshold: IoU above which two boxes count as the same face; None
            uses the detector's own default.
        max_faces: keep at most this many faces (the highest scores); None
            keeps all.
    """

    min_face_size: float = 20.0
    score_threshold: Optional[float] = None
    nms_threshold: Optional[float] = None
    max_faces: Optional[int] = None

    def __post_init__(self) -> None:
        if self.min_face_size <= 0:
            raise ConfigError(f"min_face_size is {self.min_face_size}; it must be a positive number of pixels")
        for name in ("score_threshold", "nms_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} is {value}; it must lie between 0 and 1")
        if self.max_faces is not None and self.max_faces < 1:
            raise ConfigError(f"max_faces is {self.max_faces}; it must be 1 or more, or None for no limit")


class FaceDetector(abc.ABC):
    """A face detector created from a loaded model package.

    The detector owns the ``LoadedModel`` it was given: ``close()`` closes it.
    """

    def __init__(self, model: LoadedModel, options: DetectorOptions) -> None:
        self.model = model
        self.options = options

    @property
    def name(self) -> str:
        """Name of the model package this detector runs."""
        return self.model.manifest.name

    @abc.abstractmethod
    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        """Find the faces in a uint8 BGR frame of shape (H, W, 3), highest score first."""

    def close(self) -> None:
        """Release the model's sessions; the detector is unusable afterwards."""
        self.model.close()

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_frame(frame: np.ndarray) -> None:
    """Raise ValueError unless ``frame`` is a non-empty uint8 array of shape (H, W, 3)."""
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise ValueError(f"expected a uint8 BGR frame of shape (H, W, 3), got shape {shape} and dtype {dtype}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"the frame is empty (shape {frame.shape}); it needs at least one pixel")


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Return the IoU of one ``(4,)`` box with each row of an ``(N, 4)`` array."""
    inter_w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0.0, None)
    inter_h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0.0, None)
    intersection = inter_w * inter_h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Return the indices of the boxes kept by greedy NMS, highest score first.

    With ``mode`` "union" the overlap is divided by the union (IoU). With
    "min" it is divided by the smaller area, which also removes a small box
    lying inside a large one.
    """
    if mode not in ("union", "min"):
        raise ValueError(f"NMS mode is {mode!r}; use 'union' or 'min'")

    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        best = order[0]
        keep.append(best)
        rest = order[1:]

        inter_w = np.clip(np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0]), 0, None)
        inter_h = np.clip(np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1]), 0, None)
        intersection = inter_w * inter_h
        if mode == "union":
            denominator = areas[best] + areas[rest] - intersection
        else:
            denominator = np.minimum(areas[best], areas[rest])
        overlap = np.divide(intersection, denominator, out=np.zeros_like(intersection), where=denominator > 0)

        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def make_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    landmarks: Optional[np.ndarray],
    frame_shape: Sequence[int],
    options: DetectorOptions,
) -> list[Detection]:
    """Clip boxes to the frame, drop those under ``min_face_size`` and return Detections sorted by score.

    ``boxes`` is (N, 4) in frame pixels, ``scores`` (N,), ``landmarks``
    (N, K, 2) or None. Landmarks are not clipped: a point of a face cut by
    the frame edge may lie outside the frame.
    """
    height, width = frame_shape[:2]
    clipped = np.empty_like(boxes, dtype=np.float64)
    clipped[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0.0, width)
    clipped[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0.0, height)

    sides = np.maximum(clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1])
    valid = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1]) & (sides >= options.min_face_size)

    order = [i for i in np.argsort(-scores, kind="stable") if valid[i]]
    if options.max_faces is not None:
        order = order[: options.max_faces]

    detections = []
    for i in order:
        points = None if landmarks is None else np.asarray(landmarks[i], dtype=np.float32)
        box = tuple(float(v) for v in clipped[i])
        detections.append(Detection(box=box, score=float(scores[i]), landmarks=points))
    return detections
