"""Cutting face crops out of a frame and resizing them to a model's input size.

Crop rules (the manifest's ``CropRule.rule``):

* ``box``: the detector box without margins, clipped to the frame. The
  HSEmotion models were trained on faces cropped by a detector without
  margins, so no margin is added unless the manifest sets ``margin``. With ``align_eyes`` the frame is first
  rotated around the box centre so that the eye line is horizontal.
* ``square_box``: the box grown to a square around its centre. The part of
  the square outside the frame is filled with black, so the face keeps its
  aspect ratio.
* ``aligned_chip``: a similarity transform that maps the detector's
  landmarks onto dlib's mean face shape with the manifest's
  ``chip_padding``, the chip the dlib age and gender networks expect.
* ``full_frame``: the whole frame.

Every crop is resized with ``cv2.INTER_AREA`` (or the manifest's
interpolation) when it shrinks and bilinearly when it grows. Plain bilinear
shrinking samples only a few source pixels per output pixel and aliases.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

import cv2
import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.manifest import CropRule, InputSpec
from edge_runtime.vision.types import Detection

logger = logging.getLogger(__name__)

_INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}

# dlib's mean face shape: points 17..67 of the iBUG 68-point scheme in a unit
# square, as get_face_chip_details in dlib/image_transforms/interpolation.h
# uses it. It fixes where aligned_chip places each facial point.
_MEAN_FACE_X = np.array([
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689,
])
_MEAN_FACE_Y = np.array([
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182,
])


def _mean_point(*ibug_indices: int) -> tuple[float, float]:
    rows = [i - 17 for i in ibug_indices]
    return float(_MEAN_FACE_X[rows].mean()), float(_MEAN_FACE_Y[rows].mean())


# Template positions of the points detectors report, in the unit square.
_EYE_IMAGE_LEFT = _mean_point(36, 37, 38, 39, 40, 41)
_EYE_IMAGE_RIGHT = _mean_point(42, 43, 44, 45, 46, 47)
_NOSE_TIP = _mean_point(30)
_MOUTH_IMAGE_LEFT = _mean_point(48)
_MOUTH_IMAGE_RIGHT = _mean_point(54)
_MOUTH_CENTRE = _mean_point(62, 66)

# Template for each landmark layout, keyed by the number of points: MTCNN's
# five (eyes, nose tip, mouth corners) and BlazeFace's six, whose ear
# tragions have no place in the frontal template and are left out.
CHIP_TEMPLATES = {
    5: np.array([_EYE_IMAGE_LEFT, _EYE_IMAGE_RIGHT, _NOSE_TIP, _MOUTH_IMAGE_LEFT, _MOUTH_IMAGE_RIGHT]),
    6: np.array([_EYE_IMAGE_LEFT, _EYE_IMAGE_RIGHT, _NOSE_TIP, _MOUTH_CENTRE]),
}


def clip_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """Round a float box outward to whole pixels and clip it to a ``width`` x ``height`` frame."""
    x1 = max(0, int(math.floor(box[0])))
    y1 = max(0, int(math.floor(box[1])))
    x2 = min(width, int(math.ceil(box[2])))
    y2 = min(height, int(math.ceil(box[3])))
    return x1, y1, x2, y2


def resize(image: np.ndarray, width: int, height: int, shrink_interpolation: str = "area") -> np.ndarray:
    """Resize ``image`` to ``width`` x ``height``: ``shrink_interpolation`` when either side shrinks, else bilinear."""
    source_h, source_w = image.shape[:2]
    if (source_w, source_h) == (width, height):
        return image
    if width < source_w or height < source_h:
        interpolation = _INTERPOLATIONS[shrink_interpolation]
    else:
        interpolation = cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def _grow(box: tuple[float, float, float, float], margin: float, square: bool) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    width, height = x2 - x1, y2 - y1
    if square:
        width = height = max(width, height)
    width *= 1.0 + 2.0 * margin
    height *= 1.0 + 2.0 * margin
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    return cx - width / 2.0, cy - height / 2.0, cx + width / 2.0, cy + height / 2.0


def eye_angle(landmarks: Optional[np.ndarray]) -> Optional[float]:
    """Return the angle in degrees of the line from the image-left eye to the image-right eye, or None.

    Both detectors put the eyes at landmark indexes 0 and 1. A positive angle
    means the right eye sits lower in the image (clockwise tilt on screen).
    """
    if landmarks is None or len(landmarks) < 2:
        return None
    dx, dy = (landmarks[1] - landmarks[0]).astype(np.float64)
    if dx == 0.0 and dy == 0.0:
        return None
    return math.degrees(math.atan2(dy, dx))


def box_crop(frame: np.ndarray, detection: Detection, margin: float = 0.0) -> np.ndarray:
    """Return the pixels of the detection box, grown by ``margin`` of each side, clipped to the frame.

    The result is a view of ``frame``.

    Raises:
        ValueError: the box lies entirely outside the frame.
    """
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = clip_box(_grow(detection.box, margin, square=False), width, height)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box {detection.box} lies outside the {width}x{height} frame, so it has no pixels to crop")
    return frame[y1:y2, x1:x2]


def _warp_region(
    frame: np.ndarray,
    centre: tuple[float, float],
    region_w: float,
    region_h: float,
    angle_deg: float,
    out_w: int,
    out_h: int,
    shrink_interpolation: str,
) -> np.ndarray:
    """Sample a ``region_w`` x ``region_h`` rectangle centred on ``centre`` and turned by ``angle_deg``.

    The rectangle is first warped at source resolution with bilinear
    sampling (black outside the frame) and then resized to ``out_w`` x
    ``out_h``, so shrinking still goes through ``shrink_interpolation``.
    """
    sample_w = max(1, int(round(region_w)))
    sample_h = max(1, int(round(region_h)))
    theta = math.radians(angle_deg)
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    scale_x = region_w / sample_w
    scale_y = region_h / sample_h

    # Map output pixel centres (u, v) to frame coordinates: the region's own
    # axes are the frame axes turned by theta.
    cx, cy = centre
    u0 = (sample_w - 1) / 2.0
    v0 = (sample_h - 1) / 2.0
    inverse = np.array(
        [
            [cos_t * scale_x, -sin_t * scale_y, cx - 0.5 - (cos_t * scale_x * u0 - sin_t * scale_y * v0)],
            [sin_t * scale_x, cos_t * scale_y, cy - 0.5 - (sin_t * scale_x * u0 + cos_t * scale_y * v0)],
        ]
    )
    patch = cv2.warpAffine(
        frame,
        inverse,
        (sample_w, sample_h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return resize(patch, out_w, out_h, shrink_interpolation)


def _similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Least-squares similarity (no reflection) from ``source`` to ``target`` points.

    Returns (scale, angle in radians, translation) such that
    ``target ~ scale * R(angle) @ source + translation``.
    """
    source_mean = source.mean(axis=0)
    target_mean = target.mean(axis=0)
    src = source - source_mean
    dst = target - target_mean

    # For a similarity, a = s*cos and b = s*sin solve a linear least-squares
    # problem in closed form.
    denominator = float((src**2).sum())
    a = float((src[:, 0] * dst[:, 0] + src[:, 1] * dst[:, 1]).sum()) / denominator
    b = float((src[:, 0] * dst[:, 1] - src[:, 1] * dst[:, 0]).sum()) / denominator
    scale = math.hypot(a, b)
    angle = math.atan2(b, a)
    rotation = np.array([[a, -b], [b, a]])
    translation = target_mean - rotation @ source_mean
    return scale, angle, translation


def aligned_chip(frame: np.ndarray, detection: Detection, size: int, padding: float, shrink_interpolation: str = "area") -> np.ndarray:
    """Return a ``size`` x ``size`` chip aligned on the detection's landmarks like dlib's get_face_chip.

    The landmarks are mapped onto dlib's mean face shape, which spans the
    unit square, and the chip covers that square plus ``padding`` of its side
    on every edge. With 5 points (MTCNN) all of them are used; with 6
    (BlazeFace) the eyes, nose tip and mouth centre are.

    Raises:
        ConfigError: the detection has no landmarks or an unknown layout.
    """
    points = detection.landmarks
    if points is None or len(points) not in CHIP_TEMPLATES:
        count = "no" if points is None else len(points)
        raise ConfigError(
            f"aligned_chip needs 5 (MTCNN) or 6 (BlazeFace) landmarks but the detection has {count}; "
            "use a detector that outputs landmarks"
        )

    template = CHIP_TEMPLATES[len(points)]
    source = np.asarray(points[: len(template)], dtype=np.float64)
    target = (template + padding) / (1.0 + 2.0 * padding)

    # The chip is the unit square (target space) seen through the inverse
    # similarity; sample it as a rotated rectangle of the frame.
    scale, angle, translation = _similarity(source, target)
    if scale <= 0.0:
        raise ConfigError("the detection's landmarks coincide, so no aligned chip can be cut; check the detector")
    side = 1.0 / scale
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = rotation.T @ (np.array([0.5, 0.5]) - translation) / scale
    return _warp_region(frame, (centre[0], centre[1]), side, side, -math.degrees(angle), size, size, shrink_interpolation)


def crop_face(frame: np.ndarray, detection: Detection, spec: InputSpec) -> np.ndarray:
    """Cut the face for a model with input ``spec`` and resize it to the input size; uint8 BGR out."""
    rule: CropRule = spec.crop
    width, height = spec.width, spec.height
    interpolation = spec.interpolation

    if rule.rule == "full_frame":
        return resize(frame, width, height, interpolation)

    if rule.rule == "aligned_chip":
        if width != height:
            raise ConfigError(f"aligned_chip needs a square input but the manifest gives {width}x{height}")
        return aligned_chip(frame, detection, width, rule.chip_padding, interpolation)

    angle = eye_angle(detection.landmarks) if rule.align_eyes else None

    if rule.rule == "box" and angle is None:
        return resize(np.ascontiguousarray(box_crop(frame, detection, rule.margin)), width, height, interpolation)

    if rule.rule == "box":
        # Rotate around the centre of the clipped box and keep its size, so
        # the crop still has no margin.
        frame_h, frame_w = frame.shape[:2]
        x1, y1, x2, y2 = clip_box(_grow(detection.box, rule.margin, square=False), frame_w, frame_h)
        region = ((x1 + x2) / 2.0, (y1 + y2) / 2.0), max(1, x2 - x1), max(1, y2 - y1)
    elif rule.rule == "square_box":
        x1, y1, x2, y2 = _grow(detection.box, rule.margin, square=True)
        region = ((x1 + x2) / 2.0, (y1 + y2) / 2.0), x2 - x1, y2 - y1
    else:
        raise ConfigError(f"crop rule {rule.rule!r} is unknown; use box, square_box, aligned_chip or full_frame")

    centre, region_w, region_h = region
    return _warp_region(frame, centre, region_w, region_h, angle or 0.0, width, height, interpolation)
