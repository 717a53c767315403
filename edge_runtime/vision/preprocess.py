"""Turning uint8 BGR face crops into the input tensor a model's manifest describes.

The manifest's ``InputSpec`` fixes the colour order, the normalization
``x = (pixel * scale - mean) / std`` (per channel, in the input's colour
order), the layout and the dtype. Crops must already have the input's width
and height; ``edge_runtime.vision.crop`` cuts and resizes them.
"""

from __future__ import annotations

import logging
from typing import Sequence

import cv2
import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.manifest import InputSpec, Normalization

logger = logging.getLogger(__name__)


def convert_color(batch_bgr: np.ndarray, color: str) -> np.ndarray:
    """Convert an (N, H, W, 3) uint8 BGR batch to ``color`` ("bgr", "rgb" or "gray"), keeping NHWC.

    Gray uses OpenCV's BGR2GRAY weights (0.299 R + 0.587 G + 0.114 B) and
    returns (N, H, W, 1).
    """
    if color == "bgr":
        return batch_bgr
    if color == "rgb":
        return np.ascontiguousarray(batch_bgr[..., ::-1])
    if color == "gray":
        gray = [cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_BGR2GRAY) for crop in batch_bgr]
        return np.stack(gray)[..., np.newaxis] if gray else np.empty(batch_bgr.shape[:3] + (1,), np.uint8)
    raise ConfigError(f"input colour {color!r} is not supported; the manifest must say rgb, bgr or gray")


def normalize(pixels: np.ndarray, normalization: Normalization) -> np.ndarray:
    """Apply ``(pixel * scale - mean) / std`` on the last axis and return float32."""
    mean = np.asarray(normalization.mean, dtype=np.float32)
    std = np.asarray(normalization.std, dtype=np.float32)
    scaled = pixels.astype(np.float32) * np.float32(normalization.scale)
    return (scaled - mean) / std


def _is_identity(normalization: Normalization) -> bool:
    return (
        normalization.scale == 1.0
        and all(m == 0.0 for m in normalization.mean)
        and all(s == 1.0 for s in normalization.std)
    )


def prepare_batch(crops: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Stack uint8 BGR crops of the input size into one input tensor following ``spec``.

    With ``spec.preprocessing_in_graph`` the crops pass through unchanged as
    a uint8 NHWC BGR batch. A uint8 input whose normalization is the identity
    receives the raw pixels. Any other uint8 or int8 input receives float32
    values: the TFLite backend quantizes them with the tensor's own scale and
    zero point.

    Raises:
        ValueError: a crop is not uint8 of shape (spec.height, spec.width, 3).
    """
    expected = (spec.height, spec.width, 3)
    for index, crop in enumerate(crops):
        if crop.shape != expected or crop.dtype != np.uint8:
            raise ValueError(
                f"crop {index} has shape {crop.shape} and dtype {crop.dtype}; the model input needs "
                f"uint8 crops of shape {expected}, so resize them with edge_runtime.vision.crop first"
            )

    batch = np.stack(crops) if len(crops) else np.empty((0,) + expected, dtype=np.uint8)
    if spec.preprocessing_in_graph:
        return batch

    pixels = convert_color(batch, spec.color)

    if spec.dtype == "uint8" and _is_identity(spec.normalization):
        tensor = pixels
    else:
        tensor = normalize(pixels, spec.normalization)
        if spec.dtype == "float16":
            tensor = tensor.astype(np.float16)

    if spec.layout == "nchw":
        tensor = tensor.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(tensor)
