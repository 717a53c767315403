"""The capture loop in-process: real models, a video made from a real photo, a real broker."""

from __future__ import annotations

import logging
import time

import pytest

from edge_runtime.capture.runner import open_service
from edge_runtime.config import parse_config
from edge_runtime.errors import ModelNotFoundError, SourceError

from tests.capture.conftest import ASTRONAUT_FPS, ASTRONAUT_FRAMES, Subscriber, ends_offline, validate_payload

WINDOW_S = 1.5


def service_config(video, model_store, broker_url: str, device_id: str, **extra):
    data = {
        "source": {"spec": str(video)},
        "store": str(model_store.root),
        "window_s": WINDOW_S,
        "mqtt": {"broker": broker_url, "device_id": device_id, "flush_timeout_s": 10},
    }
    data.update(extra)
    return parse_config(data)


@pytest.fixture(scope="module")
def astronaut_run(model_store, astronaut_video, mosquitto_broker, request):
    """Run the service once over the astronaut video and keep what the broker delivered."""
    subscriber = Subscriber(mosquitto_broker.host, mosquitto_broker.port, "edge-runtime/runner-test/#")
    request.addfinalizer(subscriber.close)

    service = open_service(service_config(astronaut_video, model_store, mosquitto_broker.url, "runner-test"))
    try:
        summary = service.runner.run()
    finally:
        service.close()

    arrived = subscriber.wait_for(ends_offline, timeout=20)
    assert arrived, [message.topic for message in subscriber.messages]
    return summary, subscriber


def test_runner_analyzes_every_frame(astronaut_run) -> None:
    summary, _ = astronaut_run

    assert summary.reason == "source ended"
    assert summary.frames_analyzed == ASTRONAUT_FRAMES
    assert summary.frames_dropped == 0
    assert summary.windows_published == 3
    assert summary.windows_delivered == 3
    assert summary.messages_lost == 0
    assert summary.delivered is True
    assert {"read", "detect", "total", "frame"} <= set(summary.latency_ms)


def test_runner_messages_validate(astronaut_run, validators) -> None:
    _, subscriber = astronaut_run

    for received in subscriber.messages:
        validate_payload(validators, received)
    leaves = [received.leaf for received in subscriber.messages]
    assert leaves[0] == "availability"
    assert leaves[-1] == "availability"
    # One status at start, one when the file ends.
    assert leaves.count("status") == 2
    assert leaves.count("faces") == 3


def test_runner_windows_cover_the_video(astronaut_run) -> None:
    _, subscriber = astronaut_run
    windows = [received.json()["window"] for received in subscriber.on("faces")]

    assert [window["index"] for window in windows] == [0, 1, 2]
    assert [window["final"] for window in windows] == [False, False, True]
    # 12 fps: frames 0-17 fall before 1.5 s, 18-35 before 3.0 s, 36-47 after.
    assert [window["frames"] for window in windows] == [18, 18, 12]
    assert windows[2]["media_end_s"] == pytest.approx(ASTRONAUT_FRAMES / ASTRONAUT_FPS, abs=1e-3)
    assert windows[2]["fps"] == pytest.approx(ASTRONAUT_FPS, rel=1e-3)


def test_runner_tracks_one_face_throughout(astronaut_run) -> None:
    _, subscriber = astronaut_run

    for received in subscriber.on("faces"):
        message = received.json()
        assert message["group"]["face_count"] == {"mean": 1.0, "max": 1, "min": 1}
        assert [track["track_id"] for track in message["tracks"]] == [1]
        assert message["tracks"][0]["frames"] == message["window"]["frames"]


def test_runner_attributes_are_plausible(astronaut_run) -> None:
    _, subscriber = astronaut_run

    for received in subscriber.on("faces"):
        track = received.json()["tracks"][0]
        assert sum(track["emotions"].values()) == pytest.approx(1.0, abs=1e-2)
        assert 20 <= track["age"]["mean"] <= 70
        # The photo shows astronaut Eileen Collins, a woman.
        assert track["gender"]["female"] > 0.5


def test_runner_status_and_final_stats(astronaut_run) -> None:
    _, subscriber = astronaut_run
    status = subscriber.on("status")[0].json()
    final_stats = subscriber.on("stats")[-1].json()

    assert status["source"]["kind"] == "file"
    assert status["config"]["window_s"] == WINDOW_S
    assert set(status["models"]) >= {"detector", "emotion", "age", "gender"}
    assert all(info["backend"] for info in status["models"].values())
    assert final_stats["final"] is True
    assert final_stats["frames"]["analyzed_total"] == ASTRONAUT_FRAMES
    assert final_stats["frames"]["dropped_total"] == 0
    assert final_stats["latency_ms"]["detect"]["count"] >= 1


def test_runner_retained_status_says_ended(astronaut_run, mosquitto_broker, subscribe) -> None:
    _, subscriber = astronaut_run
    states = [received.json()["source"]["health"]["state"] for received in subscriber.on("status")]

    # A subscriber that arrives after the run gets only the retained messages.
    late = subscribe(mosquitto_broker, "edge-runtime/runner-test/#")
    assert late.wait_for(lambda messages: {"status", "availability"} <= {m.leaf for m in messages})
    retained_status = late.on("status")[-1]
    retained_availability = late.on("availability")[-1]

    assert states == ["streaming", "ended"]
    assert retained_status.retain is True
    assert retained_status.json()["source"]["health"]["state"] == "ended"
    assert retained_availability.payload == b"offline"


def test_runner_without_broker_still_returns(model_store, astronaut_video, mosquitto_factory, caplog) -> None:
    caplog.set_level(logging.INFO, logger="edge_runtime.capture")
    stopped = mosquitto_factory()
    config = service_config(astronaut_video, model_store, stopped.url, "runner-nobroker")
    config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"flush_timeout_s": 0.5})})

    service = open_service(config)
    started = time.monotonic()
    try:
        summary = service.runner.run(max_frames=5)
    finally:
        service.close()
    elapsed_s = time.monotonic() - started

    assert summary.frames_analyzed == 5
    assert summary.reason == "max frames (5) reached"
    assert summary.delivered is False
    assert elapsed_s < 30

    # One window (5 frames of 12 fps fit in 1.5 s); it only waited in the outbox.
    assert summary.windows_published == 1
    assert summary.windows_delivered == 0
    # The window and the final stats wait in the outbox file for the next start, so nothing is lost.
    assert summary.messages_lost == 0
    assert summary.messages_pending == 2
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("window 0 queued") for message in messages), messages
    assert not any(message.startswith("window 0 published") for message in messages)
    assert any("1 window: 0 delivered, 1 not delivered" in message for message in messages), messages
    assert any("MQTT: 0 messages lost, 2 kept in the outbox" in message for message in messages), messages


def test_runner_fps_excludes_flush(model_store, astronaut_video, mosquitto_factory) -> None:
    stopped = mosquitto_factory()
    config = service_config(astronaut_video, model_store, stopped.url, "runner-flush")
    config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"flush_timeout_s": 1.0})})

    service = open_service(config)
    started = time.monotonic()
    try:
        summary = service.runner.run(max_frames=3)
    finally:
        service.close()
    elapsed_s = time.monotonic() - started

    # The flush waits the whole flush_timeout_s for the unreachable broker.
    assert summary.flush_s >= 1.0
    assert summary.wall_s + summary.flush_s <= elapsed_s
    assert summary.fps == pytest.approx(summary.frames_analyzed / summary.wall_s)


def test_missing_models_tell_how_to_pull(tmp_path, astronaut_video) -> None:
    config = parse_config({"source": {"spec": str(astronaut_video)}, "store": str(tmp_path / "empty-store")})

    with pytest.raises(ModelNotFoundError, match=r"edge-runtime models pull --starter --store"):
        open_service(config)


def test_missing_source_fails_before_models_load(tmp_path) -> None:
    # The store is empty, so loading the models first would raise ModelNotFoundError.
    config = parse_config({"source": {"spec": str(tmp_path / "absent.mp4")}, "store": str(tmp_path / "empty-store")})

    with pytest.raises(SourceError, match="absent.mp4"):
        open_service(config)
