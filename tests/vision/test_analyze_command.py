"""``edge-runtime analyze`` run as a user would: real files, the real store, text and JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.cli import EXIT_ERROR, main
from edge_runtime.models.store import ModelStore
from edge_runtime.vision.image_io import read_image

PROFILE = "generic-x86_64"


def _analyze(store: ModelStore, *arguments: str) -> int:
    return main(["--log-level", "WARNING", "analyze", "--store", str(store.root), "--profile", PROFILE, *arguments])


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("edge-runtime:")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_json_for_image(model_store: ModelStore, skimage_photos: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    photo = skimage_photos["astronaut.png"]

    status = _analyze(model_store, str(photo), "--json")

    assert status == 0
    document = json.loads(capsys.readouterr().out)
    assert document["kind"] == "image"
    assert document["profile"] == PROFILE
    (frame,) = document["frames"]
    assert (frame["width"], frame["height"]) == (512, 512)
    (face,) = frame["faces"]
    assert face["emotion"] == "happiness"
    assert face["gender"]["female"] > 0.5
    assert len(face["landmarks"]) == 5
    assert set(face["age"]) == {"years", "spread"}
    assert set(frame["timings_ms"]) == {"detect", "emotion", "age", "gender", "total"}
    assert document["models"]["detector"]["name"] == "mtcnn"
    assert set(document["models"]["detector"]["sha256"]) == {"pnet", "rnet", "onet"}


def test_text_for_image(model_store: ModelStore, skimage_photos: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    status = _analyze(model_store, str(skimage_photos["astronaut.png"]), "--detector", "blazeface-full-range")

    output = capsys.readouterr().out
    assert status == 0
    assert "1 face" in output
    assert "face 1: box (" in output
    assert "emotion: happiness" in output
    assert "gender: female" in output
    assert " ± " in output
    assert "years" in output


def test_video_every_n(
    model_store: ModelStore, skimage_photos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    image = read_image(skimage_photos["astronaut.png"])
    clip = tmp_path / "pan.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (512, 512))
    for i in range(12):
        writer.write(np.roll(image, 4 * i, axis=1))
    writer.release()

    status = _analyze(model_store, str(clip), "--json", "--every", "5", "--detector", "blazeface-full-range")

    assert status == 0
    document = json.loads(capsys.readouterr().out)
    assert document["kind"] == "video"
    assert [frame["index"] for frame in document["frames"]] == [0, 5, 10]
    assert all(len(frame["faces"]) == 1 for frame in document["frames"])


def test_unreadable_file_exits_1(model_store: ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")

    status = _analyze(model_store, str(empty))

    captured = capsys.readouterr()
    assert status == EXIT_ERROR
    assert captured.out == ""
    line = _one_error_line(captured.err)
    assert str(empty) in line
    assert "empty" in line


def test_every_must_be_positive(model_store: ModelStore, skimage_photos: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    status = _analyze(model_store, str(skimage_photos["astronaut.png"]), "--every", "0")

    assert status == EXIT_ERROR
    assert "--every" in _one_error_line(capsys.readouterr().err)


def test_missing_model_named(skimage_photos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = main(["--log-level", "WARNING", "analyze", str(skimage_photos["astronaut.png"]), "--store", str(tmp_path),
                   "--profile", PROFILE])

    assert status == EXIT_ERROR
    line = _one_error_line(capsys.readouterr().err)
    assert "mtcnn" in line
    assert "models pull" in line


@pytest.mark.shared_data
@pytest.mark.parametrize("mirrored", [False, True], ids=["original", "mirrored"])
def test_faces_in_reading_order(
    model_store: ModelStore, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, mirrored: bool
) -> None:
    # The detector ranks the two faces by score; mirroring swaps which one is on the left.
    path = shared_data / "faces" / "two_people.jpg"
    if mirrored:
        path = tmp_path / "two_people_mirrored.png"
        assert cv2.imwrite(str(path), cv2.flip(read_image(shared_data / "faces" / "two_people.jpg"), 1))

    json_status = _analyze(model_store, str(path), "--json")
    (frame,) = json.loads(capsys.readouterr().out)["frames"]
    text_status = _analyze(model_store, str(path))
    text = capsys.readouterr().out

    assert json_status == 0
    assert text_status == 0
    lefts = [face["box"][0] for face in frame["faces"]]
    assert len(lefts) == 2
    assert lefts == sorted(lefts)
    assert text.index(f"face 1: box ({lefts[0]:.0f},") < text.index(f"face 2: box ({lefts[1]:.0f},")


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name, reason",
    [
        ("truncated_lisa1.jpg", "truncated or corrupt"),
        ("corrupt_scan_lisa2.jpg", "truncated or corrupt"),
        ("empty_zero_bytes.jpg", "empty"),
        ("not_an_image.jpg", "not a recognised image format"),
        ("truncated_single_face.mp4", "moov"),
    ],
)
def test_odd_unreadable_files(
    model_store: ModelStore, shared_data: Path, capsys: pytest.CaptureFixture, name: str, reason: str
) -> None:
    path = shared_data / "odd" / name

    status = _analyze(model_store, str(path))

    captured = capsys.readouterr()
    assert status == EXIT_ERROR
    line = _one_error_line(captured.err)
    assert str(path) in line
    assert reason in line


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name, faces",
    [
        ("one_pixel_1x1.png", 0),
        ("huge_blank_8000x6000.png", 0),
        ("png_data_with_jpg_extension.jpg", 1),
        ("astronaut_rgb16.png", 1),
        ("astronaut_gray16.png", 1),
        ("astronaut_rgba_alpha.png", 1),
        ("lisa1_exif_orientation6.jpg", 1),
        ("astronaut_256.bmp", 1),
    ],
)
def test_odd_readable_files(
    model_store: ModelStore, shared_data: Path, capsys: pytest.CaptureFixture, name: str, faces: int
) -> None:
    # BlazeFace letterboxes every frame to 192x192, so the 48 Mpx blank image stays fast.
    status = _analyze(model_store, str(shared_data / "odd" / name), "--json", "--detector", "blazeface-full-range")

    assert status == 0
    (frame,) = json.loads(capsys.readouterr().out)["frames"]
    assert len(frame["faces"]) == faces
