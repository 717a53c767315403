"""Fuzzed inputs through decode -> detect -> classify with the real starter models.

1,000 examples in all, because the ``max_examples`` below add up to it.
The inputs are random bytes, damaged JPEG/PNG/WebP/BMP files made here from
a real photo, and truncated or damaged videos read through ``FrameSource``.
Then come images of odd shapes and sample types, random frames with and
without a face (all-black, all-white and 0/255 checkerboards included) and
classification of arbitrary boxes. ``derandomize=True`` makes every run draw
the same examples, so a failure reproduces in CI.

Only documented errors may come out: ``ImageReadError`` from ``read_image``,
``SourceError`` from ``FrameSource.open`` and the ``ValueError`` of
``check_frame`` for an array that is not a uint8 BGR frame. Anything else, or a result that breaks the output contract,
fails the test.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from edge_runtime.capture.source import FrameSource, SourceState
from edge_runtime.errors import ConfigError, ImageReadError, SourceError
from edge_runtime.profiles import load_profile
from edge_runtime.vision.analyzer import FaceAnalyzer
from edge_runtime.vision.crop import clip_box
from edge_runtime.vision.image_io import read_image
from edge_runtime.vision.types import Detection, FaceResult

from tests.capture.conftest import load_astronaut

# Seed images are small so that one example stays fast on a board-sized CPU.
SEED_SIZE = 160
# Side of the random frames; the extremes below add 1xN and Nx1 shapes.
FRAME_MAX_SIDE = 320
# Seed videos: frames, frame rate, and the most frames analyzed from one damaged copy, because a
# damaged index can make a container report more frames than it holds.
VIDEO_FRAMES = 8
VIDEO_FPS = 10.0
VIDEO_MAX_FRAMES = 16


def fuzz_settings(examples: int):
    return settings(
        max_examples=examples * int(os.environ.get("FUZZ_EXPLORE", "1")),
        derandomize=not os.environ.get("FUZZ_EXPLORE"),
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def face_photo() -> np.ndarray:
    """The astronaut portrait as a SEED_SIZE square BGR image (one face)."""
    image = load_astronaut()
    return cv2.resize(image, (SEED_SIZE, SEED_SIZE), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def seeds(face_photo: np.ndarray) -> dict[str, bytes]:
    """The face photo in several encodings: JPEG (baseline, progressive, with EXIF orientation), PNG (8 and 16 bit), WebP, BMP, GIF and TIFF."""
    rgb = Image.fromarray(cv2.cvtColor(face_photo, cv2.COLOR_BGR2RGB))
    encoded = {
        "jpeg": cv2.imencode(".jpg", face_photo, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes(),
        "png": cv2.imencode(".png", face_photo)[1].tobytes(),
        "png-16bit": cv2.imencode(".png", face_photo.astype(np.uint16) * 257)[1].tobytes(),
        "bmp": cv2.imencode(".bmp", face_photo)[1].tobytes(),
        "tiff": cv2.imencode(".tiff", face_photo)[1].tobytes(),
    }
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display.
    pillow_formats = {
        "jpeg-progressive": ("JPEG", {"progressive": True}),
        "jpeg-exif": ("JPEG", {"exif": exif.tobytes()}),
        "webp": ("WEBP", {"quality": 80}),
        "gif": ("GIF", {}),
    }
    for name, (image_format, options) in pillow_formats.items():
        buffer = io.BytesIO()
        rgb.save(buffer, format=image_format, **options)
        encoded[name] = buffer.getvalue()
    return encoded


@pytest.fixture(scope="module")
def video_seeds(face_photo: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Short clips of the face photo, keyed by file extension: MPEG-4 Part 2 in MP4 and Motion JPEG in AVI."""
    directory = tmp_path_factory.mktemp("video-seeds")
    height, width = face_photo.shape[:2]
    encoded = {}
    for extension, fourcc in (("mp4", "mp4v"), ("avi", "MJPG")):
        path = directory / f"seed.{extension}"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), VIDEO_FPS, (width, height))
        assert writer.isOpened(), f"cv2.VideoWriter cannot write {fourcc} to {path}"
        for index in range(VIDEO_FRAMES):
            writer.write(np.roll(face_photo, 4 * index, axis=1))
        writer.release()
        encoded[extension] = path.read_bytes()
    return encoded


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def mtcnn_analyzer(model_store) -> Iterator[FaceAnalyzer]:
    """MTCNN with the emotion, age and gender models of the x86-64 profile."""
    with FaceAnalyzer.from_store(model_store, load_profile("generic-x86_64")) as analyzer:
        yield analyzer


@pytest.fixture(scope="module")
def blazeface_analyzer(model_store) -> Iterator[FaceAnalyzer]:
    """BlazeFace (full range, TFLite) with the Raspberry Pi 4 profile's classifiers."""
    with FaceAnalyzer.from_store(model_store, load_profile("raspberry-pi-4")) as analyzer:
        yield analyzer


def decode(data: bytes, path: Path) -> np.ndarray | None:
    """Write ``data`` to ``path`` and decode it; None when read_image raises ImageReadError."""
    path.write_bytes(data)
    try:
        frame = read_image(path)
    except ImageReadError as exc:
        assert str(path) in str(exc)
        return None
    check_bgr(frame)
    return frame


def check_bgr(frame: np.ndarray) -> None:
    assert frame.dtype == np.uint8
    assert frame.ndim == 3
    assert frame.shape[2] == 3
    assert frame.shape[0] >= 1
    assert frame.shape[1] >= 1
    assert frame.flags.c_contiguous


def check_results(results: list[FaceResult], frame: np.ndarray, *, detected: bool = True) -> None:
    """Assert the output contract of analyze()/classify() for every face."""
    height, width = frame.shape[:2]
    for result in results:
        x1, y1, x2, y2 = result.detection.box
        assert all(math.isfinite(value) for value in (x1, y1, x2, y2, result.detection.score))
        if detected:
            assert 0.0 <= result.detection.score <= 1.0
            assert x1 <= x2
            assert y1 <= y2
            # Detected boxes may reach past the frame edge, but not far beyond it.
            assert x1 >= -width
            assert x2 <= 2 * width
            assert y1 >= -height
            assert y2 <= 2 * height
        if result.emotions is not None:
            assert sum(result.emotions.values()) == pytest.approx(1.0, abs=1e-3)
            assert all(0.0 <= value <= 1.0 for value in result.emotions.values())
        if result.gender is not None:
            assert sum(result.gender.values()) == pytest.approx(1.0, abs=1e-3)
        if result.age is not None:
            assert math.isfinite(result.age.years)
            assert 0.0 <= result.age.years <= 120.0
            assert math.isfinite(result.age.spread)


def random_frame(seed: int, height: int, width: int, pattern: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if pattern == "noise":
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if pattern == "constant":
        return np.full((height, width, 3), rng.integers(0, 256), dtype=np.uint8)
    if pattern == "black":
        return np.zeros((height, width, 3), dtype=np.uint8)
    if pattern == "white":
        return np.full((height, width, 3), 255, dtype=np.uint8)
    if pattern == "checker":
        # Neighbouring pixels alternate between 0 and 255, the largest contrast a frame can have.
        rows, columns = np.indices((height, width))
        return np.repeat(((rows + columns) % 2 * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    if pattern == "gradient":
        ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        return np.ascontiguousarray(np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8))
    # Blocks of random colours, which give edges that detectors react to.
    blocks = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    return cv2.resize(blocks, (width, height), interpolation=cv2.INTER_NEAREST)


FRAME_PATTERNS = ["noise", "constant", "black", "white", "checker", "gradient", "blocks"]
frame_sides = st.one_of(st.integers(1, FRAME_MAX_SIDE), st.sampled_from([1, 2, 3, 11, 12, 13, 2000]))


# --------------------------------------------------------------------------
# Decoding


@fuzz_settings(100)
@given(data=st.binary(min_size=0, max_size=4096))
def test_random_bytes_decode_or_raise(data: bytes, scratch: Path, mtcnn_analyzer: FaceAnalyzer) -> None:
    frame = decode(data, scratch / "random.bin")

    if frame is not None:
        check_results(mtcnn_analyzer.analyze(frame), frame)


@st.composite
def damaged(draw, seeds: dict[str, bytes]) -> tuple[str, bytes]:
    """One seed file with a truncation, bit flips, overwritten bytes, an insertion or a cut."""
    name = draw(st.sampled_from(sorted(seeds)))
    data = bytearray(seeds[name])
    damage = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "cut"]))
    if damage == "truncate":
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif damage == "flip":
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=16)):
            data[position] ^= 1 << draw(st.integers(0, 7))
    elif damage == "overwrite":
        start = draw(st.integers(0, len(data) - 1))
        patch = draw(st.binary(min_size=1, max_size=64))
        data[start : start + len(patch)] = patch
    elif damage == "insert":
        start = draw(st.integers(0, len(data)))
        data[start:start] = draw(st.binary(min_size=1, max_size=64))
    else:
        start = draw(st.integers(0, len(data) - 1))
        del data[start : start + draw(st.integers(1, 256))]
    return f"{name} {damage}", bytes(data)


@fuzz_settings(250)
@given(data=st.data())
def test_damaged_images_decode_or_raise(data, seeds, scratch: Path, mtcnn_analyzer: FaceAnalyzer) -> None:
    label, content = data.draw(damaged(seeds), label="damaged file")
    frame = decode(content, scratch / "damaged.img")

    if frame is not None:
        check_results(mtcnn_analyzer.analyze(frame), frame)


@fuzz_settings(100)
@given(data=st.data())
def test_damaged_videos_read_or_raise(data, video_seeds, scratch: Path, mtcnn_analyzer: FaceAnalyzer) -> None:
    label, content = data.draw(damaged(video_seeds), label="damaged video")
    path = scratch / f"damaged.{label.split()[0]}"
    path.write_bytes(content)
    source = FrameSource(str(path))

    try:
        source.open()
    except SourceError as exc:
        assert str(path) in str(exc)
        assert source.state is SourceState.FAILED
        event("video: open raised SourceError")
        return

    count = 0
    try:
        for count, frame in enumerate(source, start=1):
            check_bgr(frame.image)
            assert math.isfinite(frame.media_s)
            check_results(mtcnn_analyzer.analyze(frame.image), frame.image)
            if count == VIDEO_MAX_FRAMES:
                break
    finally:
        source.close()
    event(f"video: {'no' if count == 0 else 'some'} frames decoded")
    assert source.state is SourceState.ENDED


ODD_SHAPES = [(1, 1), (1, 7), (7, 1), (1, 1500), (1500, 1), (2, 3000), (3000, 2), (5, 900), (17, 3)]


@st.composite
def odd_images(draw) -> tuple[np.ndarray, str]:
    """An image of an odd shape, sample type and channel count, and a format that can store it."""
    if draw(st.booleans()):
        height, width = draw(st.sampled_from(ODD_SHAPES))
    else:
        height, width = draw(st.integers(1, 96)), draw(st.integers(1, 96))
    channels = draw(st.sampled_from([1, 2, 3, 4]))
    dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = rng.integers(0, np.iinfo(dtype).max + 1, (height, width, channels), dtype=np.uint64).astype(dtype)

    # Formats that hold this sample type and channel count.
    if channels == 2:
        formats = ["png-la"]
    elif dtype == np.uint16:
        formats = [".png", ".tiff"]
    else:
        formats = [".png", ".tiff", ".bmp", ".jpg", ".webp"] if channels != 4 else [".png", ".tiff", ".webp"]
    if channels == 1 and ".webp" in formats:
        formats.remove(".webp")
    return image, draw(st.sampled_from(formats))


def encode_odd(image: np.ndarray, extension: str) -> bytes:
    if extension == "png-la":
        buffer = io.BytesIO()
        Image.fromarray(image.astype(np.uint8) if image.dtype != np.uint8 else image, mode="LA").save(buffer, "PNG")
        return buffer.getvalue()
    if extension == ".webp" and max(image.shape[:2]) > 16383:
        extension = ".png"
    ok, buffer = cv2.imencode(extension, image if image.shape[2] != 1 else image[:, :, 0])
    assert ok, f"OpenCV cannot encode a {image.shape} {image.dtype} image as {extension}"
    return buffer.tobytes()


@fuzz_settings(150)
@given(case=odd_images())
def test_odd_images_decode_to_bgr(case, scratch: Path, mtcnn_analyzer: FaceAnalyzer) -> None:
    image, extension = case
    content = encode_odd(image, extension)
    frame = decode(content, scratch / "odd.img")

    assert frame is not None, f"{image.shape} {image.dtype} as {extension} did not decode"
    assert frame.shape[:2] == image.shape[:2]
    check_results(mtcnn_analyzer.analyze(frame), frame)


# --------------------------------------------------------------------------
# Frames straight into the analyzer


@fuzz_settings(150)
@given(
    seed=st.integers(0, 2**32 - 1),
    height=frame_sides,
    width=frame_sides,
    pattern=st.sampled_from(FRAME_PATTERNS),
    face_scale=st.one_of(st.none(), st.floats(0.05, 3.0)),
    offset=st.tuples(st.floats(-0.9, 0.9), st.floats(-0.9, 0.9)),
)
def test_random_frames_mtcnn(seed, height, width, pattern, face_scale, offset, face_photo, mtcnn_analyzer) -> None:
    frame = compose(random_frame(seed, height, width, pattern), face_photo, face_scale, offset)

    check_results(mtcnn_analyzer.analyze(frame), frame)


@fuzz_settings(100)
@given(
    seed=st.integers(0, 2**32 - 1),
    height=frame_sides,
    width=frame_sides,
    pattern=st.sampled_from(FRAME_PATTERNS),
    face_scale=st.one_of(st.none(), st.floats(0.05, 3.0)),
    offset=st.tuples(st.floats(-0.9, 0.9), st.floats(-0.9, 0.9)),
)
def test_random_frames_blazeface(seed, height, width, pattern, face_scale, offset, face_photo, blazeface_analyzer) -> None:
    frame = compose(random_frame(seed, height, width, pattern), face_photo, face_scale, offset)

    check_results(blazeface_analyzer.analyze(frame), frame)


def compose(frame: np.ndarray, face: np.ndarray, scale: float | None, offset: tuple[float, float]) -> np.ndarray:
    """Paste ``face`` scaled by ``scale`` (relative to the frame's shorter side) at ``offset``, clipped."""
    if scale is None:
        return frame
    height, width = frame.shape[:2]
    side = max(1, int(round(min(height, width) * scale)))
    resized = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA if side < face.shape[0] else cv2.INTER_LINEAR)
    top = int(round((height - side) / 2 + offset[1] * height))
    left = int(round((width - side) / 2 + offset[0] * width))
    y1, y2 = max(0, top), min(height, top + side)
    x1, x2 = max(0, left), min(width, left + side)
    if y1 < y2 and x1 < x2:
        frame[y1:y2, x1:x2] = resized[y1 - top : y2 - top, x1 - left : x2 - left]
    return frame


@st.composite
def boxes(draw, height: int, width: int) -> Detection:
    """A box that may be tiny, empty, partly or wholly outside the frame, with optional landmarks."""
    x1 = draw(st.floats(-2.0 * width, 2.0 * width))
    y1 = draw(st.floats(-2.0 * height, 2.0 * height))
    box_width = draw(st.one_of(st.just(0.0), st.floats(0.0, 3.0 * width)))
    box_height = draw(st.one_of(st.just(0.0), st.floats(0.0, 3.0 * height)))
    landmarks = None
    if draw(st.booleans()):
        points = draw(st.lists(st.tuples(st.floats(-width, 2 * width), st.floats(-height, 2 * height)), min_size=5, max_size=5))
        landmarks = np.asarray(points, dtype=np.float32)
    score = draw(st.floats(0.0, 1.0))
    return Detection(box=(x1, y1, x1 + box_width, y1 + box_height), score=score, landmarks=landmarks)


def has_no_pixels(detection: Detection, height: int, width: int) -> bool:
    x1, y1, x2, y2 = clip_box(detection.box, width, height)
    return x2 <= x1 or y2 <= y1


@fuzz_settings(150)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), height=frame_sides, width=frame_sides)
def test_classify_arbitrary_boxes(data, seed, height, width, face_photo, mtcnn_analyzer) -> None:
    frame = compose(random_frame(seed, height, width, "blocks"), face_photo, 0.8, (0.0, 0.0))
    detections = data.draw(st.lists(boxes(height, width), min_size=1, max_size=4), label="detections")

    # classify() documents two errors for boxes no detector returns: a box without pixels in the
    # frame (ValueError) and a box without landmarks for a model cropping an aligned chip (ConfigError).
    try:
        results = mtcnn_analyzer.classify(frame, detections)
    except ValueError as exc:
        assert "has no pixels to crop" in str(exc)
        assert any(has_no_pixels(detection, height, width) for detection in detections)
        return
    except ConfigError as exc:
        assert "aligned_chip needs" in str(exc) or "landmarks coincide" in str(exc)
        assert any(detection.landmarks is None for detection in detections) or "coincide" in str(exc)
        return

    assert [result.detection for result in results] == detections
    check_results(results, frame, detected=False)


def test_malformed_arrays_raise_value_error(mtcnn_analyzer: FaceAnalyzer) -> None:
    for array in (
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 4), np.uint8),
        np.zeros((8, 8, 3), np.uint16),
        np.zeros((8, 8, 3), np.float32),
    ):
        with pytest.raises(ValueError, match="frame"):
            mtcnn_analyzer.analyze(array)
