"""Input tensors built from real face crops follow the manifest's colour, normalization, layout and dtype."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.manifest import InputSpec, Normalization
from edge_runtime.vision.image_io import read_image
from edge_runtime.vision.preprocess import prepare_batch


@pytest.fixture(scope="module")
def crops(skimage_photos: dict[str, Path]) -> list[np.ndarray]:
    """Two 32x32 BGR crops of the astronaut photo: the face and the shoulder patch."""
    image = read_image(skimage_photos["astronaut.png"])
    face = cv2.resize(image[60:175, 180:268], (32, 32), interpolation=cv2.INTER_AREA)
    patch = cv2.resize(image[300:400, 100:200], (32, 32), interpolation=cv2.INTER_AREA)
    return [face, patch]


def _spec(**fields: object) -> InputSpec:
    values = {"width": 32, "height": 32, "color": "rgb", "layout": "nhwc"}
    values.update(fields)
    return InputSpec(**values)


def test_rgb_nchw_normalized(crops: list[np.ndarray]) -> None:
    normalization = Normalization(scale=1.0, mean=[122.78, 117.0, 104.3], std=[256.0, 256.0, 256.0])

    tensor = prepare_batch(crops, _spec(layout="nchw", normalization=normalization))

    assert tensor.shape == (2, 3, 32, 32)
    assert tensor.dtype == np.float32
    rgb = np.stack(crops)[..., ::-1].astype(np.float32)
    expected = ((rgb - np.array([122.78, 117.0, 104.3], np.float32)) / 256.0).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(tensor, expected, rtol=1e-6)


def test_gray_nhwc_scaled(crops: list[np.ndarray]) -> None:
    normalization = Normalization(scale=1 / 255, mean=[0.5], std=[0.5])

    tensor = prepare_batch(crops, _spec(color="gray", normalization=normalization))

    assert tensor.shape == (2, 32, 32, 1)
    gray = cv2.cvtColor(crops[0], cv2.COLOR_BGR2GRAY).astype(np.float32)
    np.testing.assert_allclose(tensor[0, :, :, 0], (gray / 255 - 0.5) / 0.5, atol=1e-6)
    assert tensor.min() >= -1.0
    assert tensor.max() <= 1.0


def test_bgr_order_kept(crops: list[np.ndarray]) -> None:
    tensor = prepare_batch(crops, _spec(color="bgr", normalization=Normalization(scale=1.0, mean=[0.0], std=[1.0])))
    np.testing.assert_array_equal(tensor, np.stack(crops).astype(np.float32))


def test_float16_dtype(crops: list[np.ndarray]) -> None:
    tensor = prepare_batch(crops, _spec(dtype="float16"))
    assert tensor.dtype == np.float16
    np.testing.assert_allclose(tensor.astype(np.float32), np.stack(crops)[..., ::-1] / 255.0, atol=1e-3)


def test_uint8_identity_gets_raw_pixels(crops: list[np.ndarray]) -> None:
    identity = Normalization(scale=1.0, mean=[0.0], std=[1.0])

    tensor = prepare_batch(crops, _spec(dtype="uint8", normalization=identity))

    assert tensor.dtype == np.uint8
    np.testing.assert_array_equal(tensor, np.stack(crops)[..., ::-1])


def test_preprocessing_in_graph_passes_bgr_through(crops: list[np.ndarray]) -> None:
    tensor = prepare_batch(crops, _spec(layout="nchw", preprocessing_in_graph=True))

    assert tensor.dtype == np.uint8
    np.testing.assert_array_equal(tensor, np.stack(crops))


def test_wrong_crop_size_rejected(crops: list[np.ndarray]) -> None:
    with pytest.raises(ValueError, match="32, 32, 3"):
        prepare_batch([crops[0][:16]], _spec())


def test_empty_batch(crops: list[np.ndarray]) -> None:
    assert prepare_batch([], _spec(layout="nchw")).shape == (0, 3, 32, 32)
