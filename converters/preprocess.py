"""Turn face crops into model input tensors as the manifest's input contract describes.

Crops are uint8 BGR images (OpenCV's order), cut from frames by the face
detector. The steps match the runtime's own preprocessing: resize to the
input size (``interpolation`` when shrinking, linear when enlarging), convert
the colour order, apply ``(pixel * scale - mean) / std`` and lay the batch out
as NCHW or NHWC. With ``preprocessing_in_graph`` only the resize happens here
and the graph receives the uint8 NHWC BGR crop.
"""

from __future__ import annotations

import logging
from typing import Sequence

import cv2
import numpy as np

from edge_runtime.manifest import InputSpec

logger = logging.getLogger(__name__)

_INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def resize_crop(crop: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    """Resize a crop to ``width`` x ``height`` pixels; enlarging always uses linear."""
    shrinking = crop.shape[1] > width or crop.shape[0] > height
    flag = _INTERPOLATION[interpolation] if shrinking else cv2.INTER_LINEAR
    return cv2.resize(crop, (width, height), interpolation=flag)


def to_color(crop: np.ndarray, color: str) -> np.ndarray:
    """Convert a BGR (or already gray) uint8 crop to ``color`` (rgb, bgr or gray)."""
    if crop.ndim == 2:
        crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    if color == "rgb":
        return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    if color == "gray":
        return cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)[:, :, None]
    return crop


def normalize(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Apply ``(pixel * scale - mean) / std`` per channel; returns float32 HWC."""
    norm = spec.normalization
    mean = np.asarray(norm.mean, dtype=np.float32)
    std = np.asarray(norm.std, dtype=np.float32)
    return ((pixels.astype(np.float32) * np.float32(norm.scale)) - mean) / std


def make_batch(crops: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Return the input batch for ``crops`` under the input contract ``spec``.

    The result is uint8 NHWC BGR when ``spec.preprocessing_in_graph`` is set,
    otherwise float32 in ``spec.layout``.
    """
    resized = [resize_crop(crop, spec.width, spec.height, spec.interpolation) for crop in crops]

    if spec.preprocessing_in_graph:
        return np.stack([to_color(crop, "bgr") for crop in resized]).astype(np.uint8)

    samples = [normalize(to_color(crop, spec.color), spec) for crop in resized]
    batch = np.stack(samples).astype(np.float32)
    if spec.layout == "nchw":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch)
