"""Image and video reading on real photos, files derived from them, and the odd files of the labelled data."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from edge_runtime.errors import ImageReadError
from edge_runtime.vision.image_io import is_video, iter_video_frames, read_image

EXIF_ORIENTATION_TAG = 0x0112
# Mean absolute difference allowed where a lossy JPEG round trip sits between two images.
JPEG_MEAN_ABS_TOLERANCE = 4.0


@pytest.fixture(scope="module")
def astronaut(skimage_photos: dict[str, Path]) -> Path:
    return skimage_photos["astronaut.png"]


@pytest.fixture(scope="module")
def astronaut_bgr(astronaut: Path) -> np.ndarray:
    return cv2.imread(str(astronaut), cv2.IMREAD_COLOR)


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _assert_clear_error(excinfo: pytest.ExceptionInfo, path: Path, *reason_words: str) -> None:
    message = str(excinfo.value)
    assert str(path) in message
    for word in reason_words:
        assert word in message, f"{word!r} missing from: {message}"


def test_png_matches_opencv(astronaut: Path, astronaut_bgr: np.ndarray) -> None:
    image = read_image(astronaut)

    assert image.dtype == np.uint8
    assert image.shape == (512, 512, 3)
    assert image.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(image, astronaut_bgr)


def test_content_decides_format(astronaut: Path, astronaut_bgr: np.ndarray, tmp_path: Path) -> None:
    misnamed = tmp_path / "photo.jpg"
    shutil.copyfile(astronaut, misnamed)

    np.testing.assert_array_equal(read_image(misnamed), astronaut_bgr)


def test_gray_expanded_to_three_channels(astronaut_bgr: np.ndarray, tmp_path: Path) -> None:
    gray = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
    path = tmp_path / "gray.png"
    cv2.imwrite(str(path), gray)

    image = read_image(path)

    assert image.shape == (512, 512, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], gray)


def test_16bit_rgb_scaled_to_8bit(astronaut_bgr: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "rgb16.png"
    cv2.imwrite(str(path), astronaut_bgr.astype(np.uint16) * 257)

    np.testing.assert_array_equal(read_image(path), astronaut_bgr)


def test_16bit_gray_scaled_to_8bit(astronaut_bgr: np.ndarray, tmp_path: Path) -> None:
    gray = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
    path = tmp_path / "gray16.png"
    samples = np.minimum(gray.astype(np.uint32) * 257 + 100, 65535).astype(np.uint16)
    cv2.imwrite(str(path), samples)

    image = read_image(path)

    # (v * 257 + 100) / 257 rounds back to v.
    np.testing.assert_array_equal(image[:, :, 0], gray)


def test_alpha_dropped_without_compositing(astronaut_bgr: np.ndarray, tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 255, 512).astype(np.uint8), (512, 1))
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), np.dstack([astronaut_bgr, ramp]))

    np.testing.assert_array_equal(read_image(path), astronaut_bgr)


def test_exif_orientation_applied(astronaut: Path, tmp_path: Path) -> None:
    upright = Image.open(astronaut).convert("RGB").crop((0, 0, 512, 384))
    # Orientation 6 means "rotate 90 degrees clockwise to display", so store the pixels turned the other way.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    path = tmp_path / "orientation6.jpg"
    stored.save(path, quality=95, exif=exif)

    image = read_image(path)

    assert image.shape == (384, 512, 3)
    expected = np.asarray(upright)[:, :, ::-1]
    assert _mean_abs(image, expected) < JPEG_MEAN_ABS_TOLERANCE


def test_cmyk_jpeg_converted(astronaut: Path, tmp_path: Path) -> None:
    rgb = Image.open(astronaut).convert("RGB")
    path = tmp_path / "cmyk.jpg"
    rgb.convert("CMYK").save(path, quality=95)

    image = read_image(path)

    assert image.shape == (512, 512, 3)
    assert _mean_abs(image, np.asarray(rgb)[:, :, ::-1]) < JPEG_MEAN_ABS_TOLERANCE


def test_empty_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")

    with pytest.raises(ImageReadError) as excinfo:
        read_image(path)
    _assert_clear_error(excinfo, path, "empty")


def test_text_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this file holds a shopping list, not pixels\n")

    with pytest.raises(ImageReadError) as excinfo:
        read_image(path)
    _assert_clear_error(excinfo, path, "not a recognised image format")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image_rejected(astronaut: Path, tmp_path: Path, suffix: str) -> None:
    buffer = io.BytesIO()
    Image.open(astronaut).convert("RGB").save(buffer, format="PNG" if suffix == ".png" else "JPEG")
    path = tmp_path / f"truncated{suffix}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])

    with pytest.raises(ImageReadError) as excinfo:
        read_image(path)
    _assert_clear_error(excinfo, path, "truncated or corrupt")


def test_missing_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "absent.png"
    with pytest.raises(ImageReadError) as excinfo:
        read_image(path)
    _assert_clear_error(excinfo, path, "not found")


def test_directory_rejected(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError) as excinfo:
        read_image(tmp_path)
    _assert_clear_error(excinfo, tmp_path, "directory")


def test_pixel_limit_names_size_and_limit(astronaut: Path) -> None:
    pixels = 512 * 512

    with pytest.raises(ImageReadError) as excinfo:
        read_image(astronaut, max_pixels=pixels - 1)
    _assert_clear_error(excinfo, astronaut, "512x512", "limit")

    assert read_image(astronaut, max_pixels=pixels).shape == (512, 512, 3)


def _write_video(path: Path, frames: list[np.ndarray], fourcc: str, fps: float = 10.0) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"this OpenCV build cannot write {fourcc} to {path.suffix}"
    for frame in frames:
        writer.write(frame)
    writer.release()


@pytest.fixture(scope="module")
def astronaut_clip(astronaut_bgr: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-frame MJPEG AVI of the astronaut photo panning right by 4 pixels per frame."""
    frames = [np.roll(astronaut_bgr, 4 * i, axis=1) for i in range(12)]
    path = tmp_path_factory.mktemp("clip") / "pan.avi"
    _write_video(path, frames, "MJPG")
    return path


def test_video_detected_by_content(astronaut_clip: Path, astronaut: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "clip.png"
    shutil.copyfile(astronaut_clip, renamed)

    assert is_video(astronaut_clip)
    assert is_video(renamed)
    assert not is_video(astronaut)


def test_video_frames_every_n(astronaut_clip: Path) -> None:
    frames = list(iter_video_frames(astronaut_clip, every_n=5))

    assert [frame.index for frame in frames] == [0, 5, 10]
    assert [round(frame.time_s, 3) for frame in frames] == [0.0, 0.5, 1.0]
    for frame in frames:
        assert frame.image.shape == (512, 512, 3)
        assert frame.image.dtype == np.uint8


def test_video_every_n_must_be_positive(astronaut_clip: Path) -> None:
    with pytest.raises(ValueError):
        next(iter_video_frames(astronaut_clip, every_n=0))


def test_still_image_is_not_a_video(astronaut: Path) -> None:
    with pytest.raises(ImageReadError) as excinfo:
        next(iter_video_frames(astronaut))
    _assert_clear_error(excinfo, astronaut, "still image")


def test_truncated_mp4_names_missing_index(astronaut_bgr: np.ndarray, tmp_path: Path) -> None:
    whole = tmp_path / "whole.mp4"
    _write_video(whole, [np.roll(astronaut_bgr, 8 * i, axis=0) for i in range(20)], "mp4v")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])

    assert len(list(iter_video_frames(whole))) == 20
    with pytest.raises(ImageReadError) as excinfo:
        next(iter_video_frames(truncated))
    _assert_clear_error(excinfo, truncated, "moov")


def test_video_read_as_image_rejected(astronaut_clip: Path) -> None:
    with pytest.raises(ImageReadError) as excinfo:
        read_image(astronaut_clip)
    _assert_clear_error(excinfo, astronaut_clip, "video")


# ---------------------------------------------------------------------------
# The odd files of the labelled data

ODD_ERRORS = {
    "truncated_lisa1.jpg": "truncated or corrupt",
    "corrupt_scan_lisa2.jpg": "truncated or corrupt",
    "empty_zero_bytes.jpg": "empty",
    "not_an_image.jpg": "not a recognised image format",
    "truncated_single_face.mp4": "video",
}
ODD_SHAPES = {
    "png_data_with_jpg_extension.jpg": (512, 512, 3),
    "one_pixel_1x1.png": (1, 1, 3),
    "huge_blank_8000x6000.png": (6000, 8000, 3),
    "astronaut_cmyk.jpg": (512, 512, 3),
    "astronaut_rgb16.png": (512, 512, 3),
    "astronaut_gray16.png": (512, 512, 3),
    "astronaut_rgba_alpha.png": (512, 512, 3),
    "astronaut_gray_1ch.jpg": (512, 512, 3),
    "lisa1_exif_orientation6.jpg": (800, 600, 3),
    "astronaut_rotated180.jpg": (512, 512, 3),
    "astronaut_rotated90cw.jpg": (512, 512, 3),
    "astronaut_lowlight.jpg": (512, 512, 3),
    "astronaut.webp": (512, 512, 3),
    "astronaut_256.bmp": (256, 256, 3),
}


@pytest.mark.shared_data
def test_odd_table_covers_every_file(shared_data: Path) -> None:
    on_disk = {path.name for path in (shared_data / "odd").iterdir()}
    assert on_disk == set(ODD_ERRORS) | set(ODD_SHAPES)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(ODD_ERRORS))
def test_odd_file_clear_error(shared_data: Path, name: str) -> None:
    path = shared_data / "odd" / name
    with pytest.raises(ImageReadError) as excinfo:
        read_image(path)
    _assert_clear_error(excinfo, path, ODD_ERRORS[name])


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(ODD_SHAPES))
def test_odd_file_valid_image(shared_data: Path, name: str) -> None:
    image = read_image(shared_data / "odd" / name)

    assert image.shape == ODD_SHAPES[name]
    assert image.dtype == np.uint8


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name, tolerance",
    [
        ("png_data_with_jpg_extension.jpg", 0.0),
        ("astronaut_rgb16.png", 0.0),
        ("astronaut_rgba_alpha.png", 0.0),
        ("astronaut_cmyk.jpg", JPEG_MEAN_ABS_TOLERANCE),
        ("astronaut.webp", JPEG_MEAN_ABS_TOLERANCE),
    ],
)
def test_odd_file_matches_original(shared_data: Path, name: str, tolerance: float) -> None:
    original = read_image(shared_data / "faces" / "astronaut.png")
    assert _mean_abs(read_image(shared_data / "odd" / name), original) <= tolerance


@pytest.mark.shared_data
def test_odd_exif_rotation_matches_upright(shared_data: Path) -> None:
    upright = read_image(shared_data / "faces" / "lisa1.jpg")
    rotated = read_image(shared_data / "odd" / "lisa1_exif_orientation6.jpg")
    assert _mean_abs(rotated, upright) < JPEG_MEAN_ABS_TOLERANCE


@pytest.mark.shared_data
def test_odd_huge_image_over_custom_limit(shared_data: Path) -> None:
    path = shared_data / "odd" / "huge_blank_8000x6000.png"
    with pytest.raises(ImageReadError) as excinfo:
        read_image(path, max_pixels=10_000_000)
    _assert_clear_error(excinfo, path, "8000x6000", "48.0 Mpx", "10.0 Mpx")


@pytest.mark.shared_data
def test_odd_truncated_mp4_clear_error(shared_data: Path) -> None:
    path = shared_data / "odd" / "truncated_single_face.mp4"

    assert is_video(path)
    with pytest.raises(ImageReadError) as excinfo:
        next(iter_video_frames(path))
    _assert_clear_error(excinfo, path, "truncated", "moov")


@pytest.mark.shared_data
def test_hevc_quicktime_decodes(shared_data: Path) -> None:
    frames = list(iter_video_frames(shared_data / "videos" / "face_then_noface.mov", every_n=20))

    # 169 frames in the file: indexes 0, 20, ... 160.
    assert [frame.index for frame in frames] == list(range(0, 169, 20))
    assert frames[0].image.shape == (540, 960, 3)
