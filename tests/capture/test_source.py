"""Frame sources on real video files: timestamps, skipping, pacing with drops, looping, reconnects, states, errors."""

from __future__ import annotations

import os
import re
import sys
import threading
import time

import cv2
import pytest

from edge_runtime.capture.source import FrameSource, SourceKind, SourceState, classify_spec, describe_spec
from edge_runtime.errors import ConfigError, SourceError

from tests.capture.conftest import ASTRONAUT_FPS, ASTRONAUT_FRAMES


@pytest.mark.parametrize(
    "spec, kind",
    [
        ("0", SourceKind.CAMERA),
        ("12", SourceKind.CAMERA),
        ("/dev/video2", SourceKind.CAMERA),
        ("clip.mp4", SourceKind.FILE),
        ("/data/video 1.mov", SourceKind.FILE),
        ("rtsp://127.0.0.1:8554/cam", SourceKind.STREAM),
        ("HTTP://127.0.0.1/stream.mjpg", SourceKind.STREAM),
        ("v4l2src device=/dev/video0 ! videoconvert ! appsink", SourceKind.GSTREAMER),
    ],
)
def test_classify_spec(spec, kind) -> None:
    assert classify_spec(spec) is kind


def test_describe_spec_hides_credentials() -> None:
    described = describe_spec("rtsp://admin:secret@127.0.0.1:554/stream1")

    assert described == "rtsp://***@127.0.0.1:554/stream1"
    assert describe_spec("rtsp://127.0.0.1/stream1") == "rtsp://127.0.0.1/stream1"
    assert describe_spec("clip.mp4") == "clip.mp4"


def test_file_source_reads_every_frame(astronaut_video) -> None:
    with FrameSource(str(astronaut_video)) as source:
        frames = list(source)

    assert len(frames) == ASTRONAUT_FRAMES
    assert [frame.index for frame in frames] == list(range(ASTRONAUT_FRAMES))
    assert source.fps == pytest.approx(ASTRONAUT_FPS)
    assert (source.width, source.height) == (512, 512)
    assert frames[0].image.shape == (512, 512, 3)
    assert frames[0].image.dtype.name == "uint8"
    assert source.stats.frames_dropped == 0


def test_file_source_timestamps_are_media_time(astronaut_video) -> None:
    started = time.time()
    with FrameSource(str(astronaut_video)) as source:
        frames = list(source)

    for frame in frames:
        assert frame.media_s == pytest.approx(frame.index / ASTRONAUT_FPS, abs=1e-3)
    assert all(frame.wall_time >= started for frame in frames)
    assert frames[-1].wall_time - frames[0].wall_time < ASTRONAUT_FRAMES / ASTRONAUT_FPS


def test_every_n_skips_without_dropping(astronaut_video) -> None:
    with FrameSource(str(astronaut_video), every_n=4) as source:
        indices = [frame.index for frame in source]

    assert indices == list(range(0, ASTRONAUT_FRAMES, 4))
    assert source.stats.frames_read == ASTRONAUT_FRAMES
    assert source.stats.frames_dropped == 0
    assert source.nominal_interval_s == pytest.approx(4 / ASTRONAUT_FPS)


def test_realtime_file_is_paced_and_drops(astronaut_video) -> None:
    started = time.monotonic()
    with FrameSource(str(astronaut_video), realtime=True) as source:
        delivered = []
        for frame in source:
            delivered.append(frame.index)
            time.sleep(0.25)
    elapsed = time.monotonic() - started
    stats = source.stats

    assert elapsed >= (ASTRONAUT_FRAMES - 1) / ASTRONAUT_FPS
    assert stats.frames_read == ASTRONAUT_FRAMES
    assert stats.frames_dropped > 0
    assert len(delivered) + stats.frames_dropped == ASTRONAUT_FRAMES
    assert delivered == sorted(delivered)
    assert delivered[-1] == ASTRONAUT_FRAMES - 1


def test_stop_from_other_thread_ends_iteration(astronaut_video) -> None:
    with FrameSource(str(astronaut_video), realtime=True) as source:
        threading.Timer(0.5, source.stop).start()
        count = sum(1 for _ in source)

    assert 0 < count < ASTRONAUT_FRAMES


def test_live_source_reconnects_after_failure(astronaut_video) -> None:
    # A file read as a stream fails at its end like a dropped camera, and is reopened.
    with FrameSource(str(astronaut_video), kind=SourceKind.STREAM, reconnect_min_s=0.05, reconnect_max_s=0.1) as source:
        media = []
        for frame in source:
            media.append(frame.media_s)
            if source.stats.reconnects >= 2 and len(media) > 5:
                break

    assert source.stats.reconnects >= 2
    assert source.stats.frames_read > 2 * ASTRONAUT_FRAMES
    assert media == sorted(media)


def test_missing_file_names_it_and_the_fix(tmp_path) -> None:
    missing = tmp_path / "absent.mp4"

    with pytest.raises(SourceError) as caught:
        FrameSource(str(missing)).open()

    assert str(missing) in str(caught.value)
    assert "pass an existing file" in str(caught.value)


def test_undecodable_file_is_rejected(tmp_path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not a video" * 100)

    with pytest.raises(SourceError, match="cannot open file .*broken.mp4"):
        FrameSource(str(broken)).open()


def test_truncated_video_is_rejected(shared_data) -> None:
    truncated = shared_data / "odd" / "truncated_single_face.mp4"
    if not truncated.is_file():
        pytest.skip(f"{truncated} not present")

    with pytest.raises(SourceError, match="cannot open"):
        FrameSource(str(truncated)).open()


def test_unreachable_stream_is_rejected() -> None:
    # Port 9 (discard) on loopback has no listener here, so the connection is refused at once.
    with pytest.raises(SourceError, match=r"cannot open stream rtsp://\*\*\*@127\.0\.0\.1:9/"):
        FrameSource("rtsp://user:pw@127.0.0.1:9/stream").open()


@pytest.mark.skipif(
    re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()) is not None,
    reason="this OpenCV has GStreamer, so a pipeline may open",
)
def test_gstreamer_without_support_explains_fix() -> None:
    with pytest.raises(SourceError, match="no GStreamer support"):
        FrameSource("videotestsrc ! videoconvert ! appsink").open()


def test_iterating_closed_source_fails(astronaut_video) -> None:
    source = FrameSource(str(astronaut_video))

    with pytest.raises(SourceError, match="not open"):
        iter(source)


def test_check_rejects_missing_and_undecodable_files(tmp_path) -> None:
    missing = tmp_path / "absent.mp4"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not a video" * 100)

    with pytest.raises(SourceError, match="video file .*absent.mp4 not found"):
        FrameSource(str(missing)).check()
    with pytest.raises(SourceError, match="cannot open file .*broken.mp4"):
        FrameSource(str(broken)).check()


def test_check_keeps_nothing_open(astronaut_video) -> None:
    source = FrameSource(str(astronaut_video))

    source.check()

    with pytest.raises(SourceError, match="not open"):
        iter(source)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="camera nodes are checked on Linux only")
def test_check_rejects_absent_camera() -> None:
    node = next(f"/dev/video{index}" for index in range(90, 200) if not os.path.exists(f"/dev/video{index}"))

    with pytest.raises(SourceError, match=f"{node} not found"):
        FrameSource(node.removeprefix("/dev/video")).check()


def test_looping_file_keeps_timestamps_growing(astronaut_video) -> None:
    expected_count = 2 * ASTRONAUT_FRAMES + 10
    with FrameSource(str(astronaut_video), loop=True) as source:
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == expected_count:
                break
        health = source.health

    media = [frame.media_s for frame in frames]
    gaps = [later - earlier for earlier, later in zip(media, media[1:])]
    assert [frame.index for frame in frames] == list(range(expected_count))
    assert health.loops == 2
    assert health.state is SourceState.STREAMING
    # Every step, the two across the loop ends included, is one frame interval.
    assert all(gap == pytest.approx(1 / ASTRONAUT_FPS, abs=1e-3) for gap in gaps), gaps
    assert media[-1] == pytest.approx((expected_count - 1) / ASTRONAUT_FPS, abs=1e-3)
    assert not any(frame.image is frames[0].image for frame in frames[1:])


def test_looping_file_with_every_n(astronaut_video) -> None:
    with FrameSource(str(astronaut_video), loop=True, every_n=5) as source:
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 25:
                break

    media = [frame.media_s for frame in frames]
    assert source.health.loops >= 2
    assert all(later > earlier for earlier, later in zip(media, media[1:]))
    assert [frame.index for frame in frames] == list(range(0, 125, 5))
    assert media[-1] == pytest.approx(120 / ASTRONAUT_FPS, abs=1e-3)


def test_loop_is_rejected_for_live_sources() -> None:
    with pytest.raises(ConfigError, match="only a video file can loop"):
        FrameSource("rtsp://127.0.0.1:8554/cam", loop=True)


def test_file_states_streaming_then_ended(astronaut_video) -> None:
    reported = []
    with FrameSource(str(astronaut_video)) as source:
        source.add_state_listener(lambda health: reported.append(health.state))
        assert source.state is SourceState.STREAMING
        count = sum(1 for _ in source)
        ended = source.health

    assert count == ASTRONAUT_FRAMES
    assert ended.state is SourceState.ENDED
    assert ended.last_frame_at is not None
    assert ended.since >= ended.last_frame_at
    assert reported == [SourceState.ENDED]


def test_failed_open_sets_failed_state(tmp_path) -> None:
    source = FrameSource(str(tmp_path / "absent.mp4"))

    with pytest.raises(SourceError):
        source.open()

    assert source.health.state is SourceState.FAILED
    assert "not found" in (source.health.last_error or "")


def test_listener_errors_do_not_stop_the_source(astronaut_video, caplog) -> None:
    def broken(health) -> None:
        raise RuntimeError("listener bug")

    with FrameSource(str(astronaut_video)) as source:
        source.add_state_listener(broken)
        count = sum(1 for _ in source)

    assert count == ASTRONAUT_FRAMES
    assert "state listener" in caplog.text
