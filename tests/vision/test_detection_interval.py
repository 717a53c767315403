"""Full face detection every k frames with MTCNN's O-Net track step between, on real video frames."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from edge_runtime.capture.runner import detection_interval
from edge_runtime.capture.tracking import IouTracker
from edge_runtime.config import parse_config
from edge_runtime.errors import ConfigError
from edge_runtime.loader import LoadedModel
from edge_runtime.models.store import ModelStore
from edge_runtime.profiles import load_profile
from edge_runtime.vision.analyzer import FaceAnalyzer
from edge_runtime.vision.detectors import MtcnnDetector, create_detector
from edge_runtime.vision.detectors.base import box_iou
from edge_runtime.vision.image_io import read_image

# Video of one person in front of a camera (640x360); see SOURCES.md of the test data.
VIDEO = "videos/WolfgangLanger_Pexels.mp4"
FRAMES = 12
# Over its first 48 frames (2 s) the face moves about 40 pixels to the right and back.
MOVING_FRAMES = 48


def read_frames(path: Path, count: int) -> list[np.ndarray]:
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    capture = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == count
    return frames


@pytest.fixture(scope="module")
def video_frames(shared_data: Path) -> list[np.ndarray]:
    return read_frames(shared_data / VIDEO, FRAMES)


@pytest.fixture(scope="module")
def moving_frames(shared_data: Path) -> list[np.ndarray]:
    return read_frames(shared_data / VIDEO, MOVING_FRAMES)


class CountingDetector:
    """Forward to a detector and count full ``detect`` and ``track`` calls."""

    def __init__(self, detector: MtcnnDetector) -> None:
        self.inner = detector
        self.model = detector.model
        self.detect_calls = 0
        self.track_calls = 0

    def detect(self, frame_bgr: np.ndarray):
        self.detect_calls += 1
        return self.inner.detect(frame_bgr)

    def track(self, frame_bgr: np.ndarray, previous):
        self.track_calls += 1
        return self.inner.track(frame_bgr, previous)

    def close(self) -> None:
        pass


class DetectOnly:
    """A detector without a track step."""

    def __init__(self, detector: MtcnnDetector) -> None:
        self.inner = detector
        self.model = detector.model
        self.detect_calls = 0

    def detect(self, frame_bgr: np.ndarray):
        self.detect_calls += 1
        return self.inner.detect(frame_bgr)

    def close(self) -> None:
        pass


@pytest.mark.shared_data
def test_track_follows_video_face(mtcnn: MtcnnDetector, video_frames: list[np.ndarray]) -> None:
    previous = mtcnn.detect(video_frames[0])
    assert len(previous) == 1

    for frame in video_frames[1:]:
        tracked = mtcnn.track(frame, previous)
        detected = mtcnn.detect(frame)

        assert len(tracked) == 1
        assert len(detected) == 1
        assert box_iou(np.asarray(tracked[0].box), np.asarray([detected[0].box]))[0] >= 0.8
        assert tracked[0].score >= 0.9
        assert tracked[0].landmarks.shape == (5, 2)
        previous = tracked


def test_track_drops_vanished_face(mtcnn: MtcnnDetector, skimage_photos: dict[str, Path]) -> None:
    astronaut = read_image(skimage_photos["astronaut.png"])
    previous = mtcnn.detect(astronaut)
    blank = np.full_like(astronaut, 128)

    assert len(previous) == 1
    assert mtcnn.track(blank, previous) == []
    assert mtcnn.track(astronaut, []) == []


@pytest.mark.shared_data
def test_interval_schedules_full_detection(
    load: Callable[..., LoadedModel], video_frames: list[np.ndarray]
) -> None:
    detector = CountingDetector(create_detector(load("mtcnn", "onnxruntime")))
    analyzer = FaceAnalyzer(detector, {}, detection_interval=4)

    full = []
    for frame in video_frames:
        faces = analyzer.analyze(frame)
        full.append(analyzer.last_detection_full)
        assert len(faces) == 1
        assert "detect" in analyzer.last_timings_ms

    # Frames 1, 5 and 9 of 12 run the full detector.
    assert full == [True, False, False, False] * 3
    assert detector.detect_calls == 3
    assert detector.track_calls == 9

    analyzer.reset_tracking()
    analyzer.analyze(video_frames[0])
    assert analyzer.last_detection_full


@pytest.mark.shared_data
def test_interval_keeps_track_ids(load: Callable[..., LoadedModel], moving_frames: list[np.ndarray]) -> None:
    detector = create_detector(load("mtcnn", "onnxruntime"))
    analyzer = FaceAnalyzer(detector, {}, detection_interval=4)
    tracking = parse_config({}).tracking
    tracker = IouTracker(tracking.min_iou, tracking.max_missed)

    track_ids = []
    overlaps = []
    centers = []
    for frame in moving_frames:
        faces = analyzer.analyze(frame)
        assert len(faces) == 1
        box = np.asarray(faces[0].detection.box)
        track_ids.extend(tracker.update([faces[0].detection.box]))

        # The box of every frame, tracked or not, matches a full detection on that frame.
        (full,) = detector.detect(frame)
        overlaps.append(box_iou(box, np.asarray([full.box]))[0])
        centers.append((box[:2] + box[2:]) / 2.0)

    assert track_ids == [1] * MOVING_FRAMES
    assert min(overlaps) >= 0.8
    # The face moved, so matching boxes means the tracked boxes followed it.
    shifts = np.linalg.norm(np.asarray(centers) - centers[0], axis=1)
    assert shifts.max() > 20.0


@pytest.mark.shared_data
def test_interval_one_detects_every_frame(
    load: Callable[..., LoadedModel], video_frames: list[np.ndarray]
) -> None:
    detector = CountingDetector(create_detector(load("mtcnn", "onnxruntime")))
    analyzer = FaceAnalyzer(detector, {})

    for frame in video_frames[:4]:
        analyzer.analyze(frame)

    assert detector.detect_calls == 4
    assert detector.track_calls == 0


@pytest.mark.shared_data
def test_detector_without_track_detects_every_frame(
    load: Callable[..., LoadedModel], video_frames: list[np.ndarray]
) -> None:
    detector = DetectOnly(create_detector(load("mtcnn", "onnxruntime")))
    analyzer = FaceAnalyzer(detector, {}, detection_interval=3)

    for frame in video_frames[:4]:
        analyzer.analyze(frame)

    assert detector.detect_calls == 4


@pytest.mark.shared_data
def test_interval_results_match_full_detection(model_store: ModelStore, video_frames: list[np.ndarray]) -> None:
    profile = load_profile("generic-x86_64")
    models = {"age": None, "gender": None}
    differences = []
    with FaceAnalyzer.from_store(model_store, profile, models=models, detection_interval=3) as tracked, \
            FaceAnalyzer.from_store(model_store, profile, models=models) as everyframe:
        assert tracked.detection_interval == 3
        for frame in video_frames:
            (fast,) = tracked.analyze(frame)
            (full,) = everyframe.analyze(frame)

            assert box_iou(np.asarray(fast.detection.box), np.asarray([full.detection.box]))[0] >= 0.8
            differences.append(max(abs(fast.emotions[label] - full.emotions[label]) for label in full.emotions))

    # The crops differ by a few pixels, so the probabilities move a little.
    assert max(differences) < 0.2


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_invalid_interval_rejected(mtcnn: MtcnnDetector, value: object) -> None:
    with pytest.raises(ConfigError, match="detection_interval"):
        FaceAnalyzer(mtcnn, {}, detection_interval=value)


def test_config_interval_resolution() -> None:
    profile = load_profile("generic-x86_64")

    assert detection_interval(parse_config({"detection_interval": 5}), profile) == 5
    assert detection_interval(parse_config({}), None) == 1
    expected = getattr(profile, "detection_interval", None) or 1
    assert detection_interval(parse_config({}), profile) == expected
    with pytest.raises(ConfigError, match="detection_interval"):
        parse_config({"detection_interval": 0})
