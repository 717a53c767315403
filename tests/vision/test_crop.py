"""Face crops: no margins, clipping, interpolation, eye alignment and dlib-style chips, on a real photo."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.manifest import CropRule, InputSpec
from edge_runtime.vision.crop import CHIP_TEMPLATES, aligned_chip, box_crop, clip_box, crop_face, eye_angle
from edge_runtime.vision.detectors import FaceDetector
from edge_runtime.vision.image_io import read_image
from edge_runtime.vision.types import Detection

# Eye-line angle left after alignment, in degrees: MTCNN landmarks on the
# re-detected crop carry a few pixels of noise over a ~40 pixel eye distance.
ALIGNED_ANGLE_TOLERANCE_DEG = 4.0
# Distance allowed between a re-detected landmark and its template position
# in a 256-pixel chip. MTCNN's eye centres and dlib's mean-shape eye centres
# are defined differently, so a few percent of the chip is expected.
CHIP_LANDMARK_TOLERANCE_PX = 0.06 * 256


@pytest.fixture(scope="module")
def astronaut(skimage_photos: dict[str, Path]) -> np.ndarray:
    return read_image(skimage_photos["astronaut.png"])


@pytest.fixture(scope="module")
def astronaut_face(mtcnn: FaceDetector, astronaut: np.ndarray) -> Detection:
    (face,) = mtcnn.detect(astronaut)
    return face


def _spec(width: int, height: int, rule: str = "box", **crop: object) -> InputSpec:
    return InputSpec(
        width=width, height=height, color="rgb", layout="nhwc", crop=CropRule(rule=rule, **crop)
    )


def test_box_crop_is_box_clipped_to_frame(astronaut: np.ndarray) -> None:
    detection = Detection(box=(-10.0, 20.0, 100.0, 130.0), score=1.0)

    crop = box_crop(astronaut, detection)

    np.testing.assert_array_equal(crop, astronaut[20:130, 0:100])


def test_box_crop_rounds_outward(astronaut: np.ndarray) -> None:
    detection = Detection(box=(10.4, 20.6, 50.2, 60.9), score=1.0)

    np.testing.assert_array_equal(box_crop(astronaut, detection), astronaut[20:61, 10:51])


def test_detected_face_crop_has_no_margin(astronaut: np.ndarray, astronaut_face: Detection) -> None:
    x1, y1, x2, y2 = clip_box(astronaut_face.box, 512, 512)

    crop = box_crop(astronaut, astronaut_face)

    np.testing.assert_array_equal(crop, astronaut[y1:y2, x1:x2])
    assert crop.shape[1] == pytest.approx(astronaut_face.width, abs=2)
    assert crop.shape[0] == pytest.approx(astronaut_face.height, abs=2)


def test_margin_grows_each_side(astronaut: np.ndarray) -> None:
    detection = Detection(box=(100.0, 100.0, 200.0, 180.0), score=1.0)

    crop = box_crop(astronaut, detection, margin=0.1)

    np.testing.assert_array_equal(crop, astronaut[92:188, 90:210])


def test_box_outside_frame_rejected(astronaut: np.ndarray) -> None:
    with pytest.raises(ValueError, match="outside"):
        box_crop(astronaut, Detection(box=(600.0, 600.0, 700.0, 700.0), score=1.0))


def test_shrinking_uses_area(astronaut: np.ndarray, astronaut_face: Detection) -> None:
    face = np.ascontiguousarray(box_crop(astronaut, astronaut_face))

    crop = crop_face(astronaut, astronaut_face, _spec(64, 64))

    np.testing.assert_array_equal(crop, cv2.resize(face, (64, 64), interpolation=cv2.INTER_AREA))
    assert not np.array_equal(crop, cv2.resize(face, (64, 64), interpolation=cv2.INTER_LINEAR))


def test_enlarging_uses_linear(astronaut: np.ndarray) -> None:
    detection = Detection(box=(200.0, 100.0, 230.0, 124.0), score=1.0)
    patch = np.ascontiguousarray(astronaut[100:124, 200:230])

    crop = crop_face(astronaut, detection, _spec(64, 64))

    np.testing.assert_array_equal(crop, cv2.resize(patch, (64, 64), interpolation=cv2.INTER_LINEAR))


def test_square_box_pads_with_black(astronaut: np.ndarray) -> None:
    # 40 wide, 80 high, at the left edge: the square spans x = -20..60, so its left 20 columns are outside.
    detection = Detection(box=(0.0, 100.0, 40.0, 180.0), score=1.0)

    crop = crop_face(astronaut, detection, _spec(80, 80, "square_box"))

    assert crop.shape == (80, 80, 3)
    assert crop[:, :20].max() == 0
    np.testing.assert_array_equal(crop[:, 20:], astronaut[100:180, 0:60])


def test_full_frame_rule(astronaut: np.ndarray) -> None:
    crop = crop_face(astronaut, Detection(box=(0.0, 0.0, 1.0, 1.0), score=1.0), _spec(128, 128, "full_frame"))
    np.testing.assert_array_equal(crop, cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA))


def _rotate(image: np.ndarray, centre: tuple[float, float], degrees: float) -> np.ndarray:
    matrix = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    return cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR)


def test_align_eyes_levels_eye_line(mtcnn: FaceDetector, astronaut: np.ndarray, astronaut_face: Detection) -> None:
    centre = ((astronaut_face.box[0] + astronaut_face.box[2]) / 2, (astronaut_face.box[1] + astronaut_face.box[3]) / 2)
    tilted = _rotate(astronaut, centre, 25.0)
    (face,) = mtcnn.detect(tilted)
    tilt = eye_angle(face.landmarks)
    assert abs(abs(tilt) - 25.0) < 8.0, "the detector sees the tilt that was applied"

    aligned = crop_face(tilted, face, _spec(256, 256, "box", align_eyes=True))
    plain = crop_face(tilted, face, _spec(256, 256, "box"))

    (aligned_face,) = mtcnn.detect(aligned)
    (plain_face,) = mtcnn.detect(plain)
    assert abs(eye_angle(aligned_face.landmarks)) < ALIGNED_ANGLE_TOLERANCE_DEG
    assert abs(eye_angle(plain_face.landmarks)) > 15.0


def test_aligned_chip_puts_landmarks_on_template(
    mtcnn: FaceDetector, astronaut: np.ndarray, astronaut_face: Detection
) -> None:
    size, padding = 256, 0.2
    tilted = _rotate(astronaut, (223.0, 116.0), -15.0)
    (face,) = mtcnn.detect(tilted)

    chip = aligned_chip(tilted, face, size, padding)
    (found,) = mtcnn.detect(chip)

    expected = (CHIP_TEMPLATES[5] + padding) / (1 + 2 * padding) * size
    distances = np.linalg.norm(found.landmarks - expected, axis=1)
    assert distances.max() < CHIP_LANDMARK_TOLERANCE_PX, distances


def test_aligned_chip_uses_manifest_padding(astronaut: np.ndarray, astronaut_face: Detection) -> None:
    tight = crop_face(astronaut, astronaut_face, _spec(64, 64, "aligned_chip", chip_padding=0.0))
    padded = crop_face(astronaut, astronaut_face, _spec(64, 64, "aligned_chip", chip_padding=0.5))

    # With padding 0.5 the template square covers the middle half of the chip.
    np.testing.assert_allclose(
        padded[16:48, 16:48].astype(float), cv2.resize(tight, (32, 32), interpolation=cv2.INTER_AREA).astype(float), atol=40
    )
    assert tight.shape == padded.shape == (64, 64, 3)


def test_aligned_chip_needs_landmarks(astronaut: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="landmarks"):
        aligned_chip(astronaut, Detection(box=(100.0, 100.0, 200.0, 200.0), score=1.0), 64, 0.2)


def test_blazeface_chip_close_to_mtcnn_chip(
    blazeface_full: FaceDetector, astronaut: np.ndarray, astronaut_face: Detection
) -> None:
    (face,) = blazeface_full.detect(astronaut)

    from_mtcnn = aligned_chip(astronaut, astronaut_face, 64, 0.2).astype(float)
    from_blazeface = aligned_chip(astronaut, face, 64, 0.2).astype(float)

    # Both map the same face onto one template, so the chips mostly overlap.
    assert np.abs(from_mtcnn - from_blazeface).mean() < 20.0
