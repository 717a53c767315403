"""An HSEmotion-style multi-task model from conversion to MQTT, with random weights.

A timm EfficientNet-B0 pickle shaped like HSEmotion's ``enet_b0_8_va_mtl``
(8 AffectNet emotion logits, then valence and arousal) is converted to an
fp32 ONNX package with a features output, under the input contract of that
catalog entry. The package goes into a model store beside the MTCNN
detector. The analyzer must then reproduce the source torch model on a
real face, and the capture service must publish valence and arousal per
track and never the features.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import cv2
import jsonschema
import numpy as np
import pytest

from edge_runtime.capture.messages import load_schema
from edge_runtime.capture.runner import open_service
from edge_runtime.config import parse_config
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.manifest import AFFECTNET_8, CANONICAL_EMOTIONS
from edge_runtime.samples import fetch_sample
from edge_runtime.vision.analyzer import FaceAnalyzer
from tests.capture.conftest import Received, Subscriber, ends_offline, write_panning_video
from tests.converters.conftest import require_torch
from tests.converters.test_timm_pickle import _b0
from tests.fixtures.models import copy_packages

pytestmark = pytest.mark.convert

PACKAGE = "hsemotion-b0-va-random"
CATALOG_ENTRY = "enet_b0_8_va_mtl"
CANONICAL_AFFECTNET = [CANONICAL_EMOTIONS[label.lower()] for label in AFFECTNET_8]
FEATURE_WIDTH = 1280
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# 24 frames at 12 fps with 1 s windows give two windows of 12 frames.
VIDEO_FPS = 12.0
VIDEO_FRAMES = 24
WINDOW_S = 1.0


@pytest.fixture(scope="module")
def astronaut_bgr() -> np.ndarray:
    """NASA's astronaut portrait (public domain), one frontal face, as BGR."""
    try:
        path = fetch_sample("astronaut")
    except EdgeRuntimeError as exc:
        pytest.skip(f"the astronaut sample photo cannot be downloaded: {exc}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"{path} cannot be decoded"
    return image


def imagenet_tensor(torch, crop_bgr: np.ndarray):
    """Return a (1, 3, 224, 224) float tensor of a BGR crop, normalized as timm's ImageNet models expect."""
    rgb = cv2.resize(crop_bgr, (224, 224), interpolation=cv2.INTER_AREA)[..., ::-1].astype(np.float32) / 255.0
    normalized = (rgb - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    return torch.from_numpy(np.ascontiguousarray(normalized.transpose(2, 0, 1)[np.newaxis]))


def recalibrate_batch_norm(torch, model, image_bgr: np.ndarray) -> None:
    """Re-estimate every BatchNorm's running statistics on random crops of ``image_bgr``.

    With the initial running statistics (mean 0, variance 1) the activations
    of a freshly built EfficientNet-B0 shrink block by block, so the pooled
    features end near 1e-5 and the logits barely depend on the input. A
    comparison within 1e-4 would then pass even for a wrong crop. Statistics
    measured on natural crops keep the features of a face near 0.1 to 1.
    The crops get the brightness and contrast range of the converter's
    parity augmentation, because channels that barely vary over the
    calibration batch would otherwise blow up on those crops.
    """
    rng = np.random.default_rng(0)
    height, width = image_bgr.shape[:2]
    crops = []
    for _ in range(32):
        side = int(rng.integers(96, min(height, width) - 16))
        x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
        crop = image_bgr[y:y + side, x:x + side].astype(np.float32)
        jittered = (crop - 128.0) * rng.uniform(0.7, 1.3) + 128.0 + rng.uniform(-40.0, 40.0)
        crops.append(imagenet_tensor(torch, np.clip(jittered, 0, 255).astype(np.uint8)))

    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.cat(crops))
    model.eval()


@pytest.fixture(scope="module")
def va_mtl_pickle(astronaut_bgr: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight EfficientNet-B0 with a 10-output head, saved with torch.save(model)."""
    require_torch()
    import timm
    import torch

    model = _b0(torch, timm, 10)
    recalibrate_batch_norm(torch, model, astronaut_bgr)
    path = tmp_path_factory.mktemp("hsemotion-pickle") / "enet_b0_8_va_mtl.pt"
    torch.save(model, path)
    return path


@pytest.fixture(scope="module")
def package_dir(va_mtl_pickle: Path, model_store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pickle converted by edge-convert to an fp32 ONNX package with a features output."""
    from converters.cli import main

    output = tmp_path_factory.mktemp("hsemotion-package") / PACKAGE
    exit_code = main([
        str(va_mtl_pickle), "-o", str(output), "--trust-pickle",
        "--catalog-entry", CATALOG_ENTRY, "--name", PACKAGE,
        "--features-output", "--targets", "onnx", "--precisions", "fp32",
        "--model-store", str(model_store.root),
        "--parity-count", "8", "--latency-runs", "1", "--no-progress", "--log-level", "WARNING",
    ])
    assert exit_code == 0, f"edge-convert exited with {exit_code}; see the captured log"
    return output


@pytest.fixture(scope="module")
def store(model_store, package_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A model store holding the starter MTCNN detector and the converted package."""
    store = copy_packages(model_store, tmp_path_factory.mktemp("hsemotion-store"), ["mtcnn"])
    store.import_package(package_dir)
    return store


@pytest.fixture(scope="module")
def analyzer(store) -> Iterator[FaceAnalyzer]:
    """MTCNN and the converted emotion model, with age and gender switched off."""
    analyzer = FaceAnalyzer.from_store(
        store, models={"detector": "mtcnn", "emotion": PACKAGE, "age": None, "gender": None}
    )
    yield analyzer
    analyzer.close()


def reference_outputs(pickle_path: Path, frame_bgr: np.ndarray, box: tuple[float, float, float, float], manifest):
    """Run the source torch model on the face cut and normalized by hand from the manifest's contract.

    Returns the 10 logits and the 1280 pooled features of the one face.
    """
    import torch

    spec = manifest.input
    assert spec.crop.rule == "box"
    assert spec.crop.margin == 0.0
    assert spec.crop.align_eyes is False
    assert (spec.color, spec.layout, spec.dtype) == ("rgb", "nchw", "float32")
    assert spec.interpolation == "area"

    # The box rounded outward to whole pixels and clipped to the frame.
    height, width = frame_bgr.shape[:2]
    x1, y1 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x2, y2 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    face = np.ascontiguousarray(frame_bgr[y1:y2, x1:x2])

    # The manifest's interpolation applies when a side shrinks; enlarging is always bilinear.
    shrinking = spec.width < face.shape[1] or spec.height < face.shape[0]
    flag = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    face = cv2.resize(face, (spec.width, spec.height), interpolation=flag)

    rgb = face[..., ::-1].astype(np.float32)
    normalization = spec.normalization
    scaled = rgb * np.float32(normalization.scale)
    tensor = (scaled - np.float32(normalization.mean)) / np.float32(normalization.std)
    batch = torch.from_numpy(np.ascontiguousarray(tensor.transpose(2, 0, 1)[np.newaxis]))

    model = torch.load(pickle_path, weights_only=False).eval()
    with torch.inference_mode():
        features = model.forward_head(model.forward_features(batch), pre_logits=True)
        logits = model.get_classifier()(features)
    return logits[0].numpy().astype(np.float64), features[0].numpy()


def softmax(values: np.ndarray) -> np.ndarray:
    exponentials = np.exp(values - values.max())
    return exponentials / exponentials.sum()


def test_package_takes_catalog_contract(store) -> None:
    manifest = store.open(PACKAGE).manifest
    heads = {head.name: head for head in manifest.outputs}

    assert (manifest.input.width, manifest.input.height) == (224, 224)
    assert manifest.input.normalization.scale == pytest.approx(1.0 / 255.0)
    assert manifest.input.normalization.mean == pytest.approx(IMAGENET_MEAN)
    assert manifest.input.normalization.std == pytest.approx(IMAGENET_STD)
    assert (manifest.input.color, manifest.input.layout) == ("rgb", "nchw")
    assert list(heads) == ["emotion", "valence", "arousal", "features"]
    assert heads["emotion"].labels == list(AFFECTNET_8)
    assert heads["emotion"].columns == (0, 8)
    assert heads["valence"].columns == (8, 9)
    assert heads["arousal"].columns == (9, 10)
    assert [(variant.format, variant.precision) for variant in manifest.variants] == [("onnx", "fp32")]


def test_analyzer_matches_source_model(analyzer, store, va_mtl_pickle, astronaut_bgr) -> None:
    faces = analyzer.analyze(astronaut_bgr)

    assert len(faces) == 1
    face = faces[0]
    assert list(face.emotions) == CANONICAL_AFFECTNET
    assert sum(face.emotions.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= p <= 1.0 for p in face.emotions.values())
    assert isinstance(face.valence, float)
    assert math.isfinite(face.valence)
    assert isinstance(face.arousal, float)
    assert math.isfinite(face.arousal)
    assert face.features is not None
    assert face.features.shape == (FEATURE_WIDTH,)
    assert face.age is None
    assert face.gender is None

    manifest = store.open(PACKAGE).manifest
    logits, features = reference_outputs(va_mtl_pickle, astronaut_bgr, face.detection.box, manifest)
    expected_emotions = softmax(logits[:8])
    np.testing.assert_allclose(list(face.emotions.values()), expected_emotions, atol=1e-4)
    assert face.valence == pytest.approx(logits[8], abs=1e-4)
    assert face.arousal == pytest.approx(logits[9], abs=1e-4)
    np.testing.assert_allclose(face.features, features, atol=1e-4)

    # A crop 4 pixels to the right must miss the reference by 10 times the tolerance, or the match proves little.
    x1, y1, x2, y2 = face.detection.box
    shifted_logits, _ = reference_outputs(va_mtl_pickle, astronaut_bgr, (x1 + 4, y1, x2 + 4, y2), manifest)
    assert np.abs(softmax(shifted_logits[:8]) - expected_emotions).max() > 1e-3


def numeric_lists(value: Any) -> Iterator[list]:
    """Yield every list of numbers nested anywhere in a decoded JSON value."""
    if isinstance(value, dict):
        for item in value.values():
            yield from numeric_lists(item)
    elif isinstance(value, list):
        if value and all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in value):
            yield value
        for item in value:
            yield from numeric_lists(item)


def json_keys(value: Any) -> Iterator[str]:
    """Yield every object key nested anywhere in a decoded JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from json_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_keys(item)


@pytest.fixture(scope="module")
def video(astronaut_bgr: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s, 12 fps MP4 of the astronaut portrait panning right by 2 pixels per frame."""
    path = tmp_path_factory.mktemp("hsemotion-video") / "astronaut.mp4"
    return write_panning_video(path, astronaut_bgr, VIDEO_FRAMES, VIDEO_FPS, 2)


@pytest.fixture(scope="module")
def service_run(store, video: Path, mosquitto_broker) -> list[Received]:
    """Run the capture service over the video with the converted emotion model; return what the broker delivered."""
    device_id = "hsemotion-test"
    subscriber = Subscriber(mosquitto_broker.host, mosquitto_broker.port, f"edge-runtime/{device_id}/#")
    try:
        config = parse_config({
            "source": {"spec": str(video)},
            "store": str(store.root),
            "window_s": WINDOW_S,
            "models": {"detector": "mtcnn", "emotion": PACKAGE, "age": False, "gender": False},
            "mqtt": {"broker": mosquitto_broker.url, "device_id": device_id, "flush_timeout_s": 10},
        })
        service = open_service(config)
        try:
            summary = service.runner.run()
        finally:
            service.close()

        assert summary.frames_analyzed == VIDEO_FRAMES
        assert subscriber.wait_for(ends_offline, timeout=20), [message.topic for message in subscriber.messages]
        return list(subscriber.messages)
    finally:
        subscriber.close()


def test_service_publishes_valence_arousal(service_run, analyzer, video: Path) -> None:
    faces_messages = [received.json() for received in service_run if received.leaf == "faces"]
    assert [message["window"]["frames"] for message in faces_messages] == [12, 12]

    # The same frames, decoded and analyzed here, give each window's per-track means.
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == VIDEO_FRAMES
    per_frame = [analyzer.analyze(frame) for frame in frames]
    assert all(len(faces) == 1 for faces in per_frame)

    start = 0
    for message in faces_messages:
        assert [track["track_id"] for track in message["tracks"]] == [1]
        track = message["tracks"][0]
        window_faces = [faces[0] for faces in per_frame[start:start + message["window"]["frames"]]]
        start += message["window"]["frames"]

        # Messages round scores to 4 decimals.
        assert track["valence"] == pytest.approx(np.mean([face.valence for face in window_faces]), abs=1e-4)
        assert track["arousal"] == pytest.approx(np.mean([face.arousal for face in window_faces]), abs=1e-4)
        assert list(track["emotions"]) == CANONICAL_AFFECTNET
        for label in CANONICAL_AFFECTNET:
            expected = np.mean([face.emotions[label] for face in window_faces])
            assert track["emotions"][label] == pytest.approx(expected, abs=1e-4), label


def test_service_faces_validate(service_run) -> None:
    validator = jsonschema.Draft202012Validator(load_schema("faces"), format_checker=jsonschema.FormatChecker())
    faces_messages = [received for received in service_run if received.leaf == "faces"]

    assert len(faces_messages) == 2
    for received in faces_messages:
        errors = [f"{list(error.path)}: {error.message}" for error in validator.iter_errors(received.json())]
        assert not errors, errors


def test_service_publishes_no_features(service_run) -> None:
    documents = [received.json() for received in service_run if received.leaf != "availability"]

    assert documents
    for document in documents:
        assert "features" not in set(json_keys(document))
        assert [len(values) for values in numeric_lists(document)] == []


def test_service_status_names_package(service_run) -> None:
    statuses = [received.json() for received in service_run if received.leaf == "status"]

    # One status when the run starts and one when the file source ends.
    assert [status["source"]["health"]["state"] for status in statuses] == ["streaming", "ended"]
    models = statuses[-1]["models"]
    assert set(models) == {"detector", "emotion"}
    assert models["detector"]["name"] == "mtcnn"
    assert models["emotion"]["name"] == PACKAGE
    assert models["emotion"]["precision"] == "fp32"
