"""The capture service on a looping video file: windows keep advancing across the file's end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.capture.runner import open_service
from edge_runtime.cli import EXIT_CONFIG
from edge_runtime.config import parse_config

from tests.capture.conftest import ASTRONAUT_FPS, ASTRONAUT_FRAMES, ends_offline

REPO_ROOT = Path(__file__).resolve().parents[2]
WINDOW_S = 1.5
FRAMES = 2 * ASTRONAUT_FRAMES + 24


def test_looping_file_windows_keep_advancing(model_store, astronaut_video, mosquitto_broker, subscribe) -> None:
    device_id = "loop-test"
    config = parse_config(
        {
            "source": {"spec": str(astronaut_video), "loop": True},
            "store": str(model_store.root),
            "window_s": WINDOW_S,
            "mqtt": {"broker": mosquitto_broker.url, "device_id": device_id, "flush_timeout_s": 10},
        }
    )
    subscriber = subscribe(mosquitto_broker, f"edge-runtime/{device_id}/#")

    service = open_service(config)
    try:
        summary = service.runner.run(max_frames=FRAMES)
        loops = service.source.health.loops
    finally:
        service.close()
    assert subscriber.wait_for(ends_offline, timeout=20)

    windows = [received.json()["window"] for received in subscriber.on("faces")]
    status = subscriber.on("status")[0].json()

    # 120 frames at 12 fps are 10 s of source time: six full 1.5 s windows and a final 1 s one.
    assert summary.frames_analyzed == FRAMES
    assert loops == 2
    assert [window["index"] for window in windows] == list(range(7))
    assert [window["frames"] for window in windows] == [18] * 6 + [12]
    for index, window in enumerate(windows):
        assert window["media_start_s"] == pytest.approx(index * WINDOW_S, abs=1e-3)
    assert windows[-1]["media_end_s"] == pytest.approx(FRAMES / ASTRONAUT_FPS, abs=1e-3)
    assert all(received.json()["tracks"] for received in subscriber.on("faces"))
    assert status["config"]["loop"] is True
    assert status["source"]["health"]["state"] == "streaming"


def run_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime", "run", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_loop_flag_runs_past_file_end(model_store, astronaut_video, mosquitto_broker, subscribe) -> None:
    device_id = "loop-flag-test"
    subscriber = subscribe(mosquitto_broker, f"edge-runtime/{device_id}/#")

    completed = run_command(
        "--source", str(astronaut_video),
        "--loop",
        "--max-frames", str(FRAMES),
        "--window", str(WINDOW_S),
        "--broker", mosquitto_broker.url,
        "--device-id", device_id,
        "--store", str(model_store.root),
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert subscriber.wait_for(ends_offline, timeout=20)
    windows = [received.json()["window"] for received in subscriber.on("faces")]
    assert sum(window["frames"] for window in windows) == FRAMES
    assert windows[-1]["media_end_s"] == pytest.approx(FRAMES / ASTRONAUT_FPS, abs=1e-3)
    assert subscriber.on("status")[0].json()["config"]["loop"] is True


def test_loop_flag_rejects_stream(model_store) -> None:
    completed = run_command(
        "--source", "rtsp://127.0.0.1:9/cam",
        "--loop",
        "--broker", "mqtt://127.0.0.1:9",
        "--store", str(model_store.root),
    )

    assert completed.returncode == EXIT_CONFIG, completed.stderr[-3000:]
    assert "only a video file can loop" in completed.stderr
    assert "Traceback" not in completed.stderr
