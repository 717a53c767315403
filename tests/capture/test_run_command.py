"""``edge-runtime run`` as a user starts it: a subprocess, real models, a real broker."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.capture.runner import RunSummary
from edge_runtime.capture.source import SourceKind
from edge_runtime.commands.run import lost_messages_fail_run

from tests.capture.conftest import ASTRONAUT_FRAMES, ends_offline, validate_payload

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIP = "videos/WolfgangLanger_Pexels.mp4"
CLIP_FRAMES = 472
RUN_TIMEOUT_S = 300

# Keys and sizes that would betray image data, crops or embeddings in a payload.
FORBIDDEN_KEYS = {"image", "images", "crop", "crops", "pixels", "jpeg", "png", "features", "embedding", "embeddings", "landmarks"}
MAX_STRING_LENGTH = 200
MAX_LIST_LENGTH = 64
MAX_PAYLOAD_BYTES = 16_000


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_runtime", "run", *args]


def assert_no_image_data(document, path: str = "$") -> None:
    if isinstance(document, dict):
        for key, value in document.items():
            assert key not in FORBIDDEN_KEYS, f"{path}.{key}"
            assert_no_image_data(value, f"{path}.{key}")
    elif isinstance(document, list):
        assert len(document) <= MAX_LIST_LENGTH, f"{path} has {len(document)} items"
        for index, value in enumerate(document):
            assert_no_image_data(value, f"{path}[{index}]")
    elif isinstance(document, str):
        assert len(document) <= MAX_STRING_LENGTH, f"{path} is a {len(document)}-character string"


@pytest.mark.shared_data
def test_run_on_real_clip(shared_data, model_store, mosquitto_broker, subscribe, validators) -> None:
    clip = shared_data / CLIP
    if not clip.is_file():
        pytest.skip(f"{clip} not present")
    subscriber = subscribe(mosquitto_broker, "edge-runtime/clip-test/#")

    completed = subprocess.run(
        command("--source", str(clip), "--broker", mosquitto_broker.url, "--device-id", "clip-test",
                "--store", str(model_store.root)),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert subscriber.wait_for(ends_offline)
    for received in subscriber.messages:
        assert len(received.payload) <= MAX_PAYLOAD_BYTES, received.topic
        document = validate_payload(validators, received)
        if document is not None:
            assert_no_image_data(document)

    faces = [received.json() for received in subscriber.on("faces")]
    assert [message["window"]["index"] for message in faces] == [0, 1]
    assert faces[-1]["window"]["final"] is True
    assert sum(message["window"]["frames"] for message in faces) == CLIP_FRAMES
    assert subscriber.on("stats")[-1].json()["frames"]["analyzed_total"] == CLIP_FRAMES

    for message in faces:
        # One young woman fills the clip, so one track carries nearly every frame.
        main = max(message["tracks"], key=lambda track: track["frames"])
        assert main["frames"] >= 0.9 * message["window"]["frames"]
        assert 18 <= main["age"]["mean"] <= 45
        assert main["gender"]["female"] > 0.5
        assert sum(main["emotions"].values()) == pytest.approx(1.0, abs=1e-2)

    # The clip ends with a broad smile.
    assert max(message["tracks"][0]["emotions"]["happiness"] for message in faces) > 0.5


def test_run_stops_cleanly_on_sigterm(model_store, astronaut_video, mosquitto_broker, subscribe, validators) -> None:
    subscriber = subscribe(mosquitto_broker, "edge-runtime/sigterm-test/#")
    process = subprocess.Popen(
        command("--source", str(astronaut_video), "--realtime", "--broker", mosquitto_broker.url,
                "--device-id", "sigterm-test", "--store", str(model_store.root), "--window", "1"),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = subscriber.wait_for(lambda messages: any(m.leaf == "status" for m in messages), timeout=60)
        assert started, "no status message from the service"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, stderr[-3000:]
    assert "SIGTERM received" in stderr
    assert subscriber.wait_for(ends_offline)
    for received in subscriber.messages:
        validate_payload(validators, received)
    final_stats = subscriber.on("stats")[-1].json()
    assert final_stats["final"] is True
    assert final_stats["frames"]["analyzed_total"] < ASTRONAUT_FRAMES


def test_run_without_models_explains_pull(tmp_path, astronaut_video) -> None:
    completed = subprocess.run(
        command("--source", str(astronaut_video), "--store", str(tmp_path / "empty"), "--broker", "mqtt://127.0.0.1:9"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )

    assert completed.returncode == 1
    assert "edge-runtime models pull --starter" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_run_with_invalid_config_names_key(tmp_path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("source:\n  spec: clip.mp4\nwindow: 5\n", encoding="utf-8")

    completed = subprocess.run(command("--config", str(config)), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    assert completed.returncode == 1
    assert f"{config}:3: window: unknown key" in completed.stderr


def test_run_with_missing_source_names_it(tmp_path, model_store) -> None:
    missing = tmp_path / "absent.mp4"

    completed = subprocess.run(
        command("--source", str(missing), "--store", str(model_store.root), "--broker", "mqtt://127.0.0.1:9"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )

    assert completed.returncode == 1
    assert f"video file {missing} not found" in completed.stderr


def test_run_help_lists_flags() -> None:
    completed = subprocess.run(command("--help"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    assert completed.returncode == 0
    for flag in ("--config", "--source", "--broker", "--device-id", "--window", "--profile", "--store",
                 "--realtime", "--max-frames"):
        assert flag in completed.stdout


def test_run_without_broker_exits_3(tmp_path, model_store, astronaut_video, mosquitto_factory) -> None:
    stopped = mosquitto_factory()
    config = tmp_path / "config.yaml"
    config.write_text("mqtt:\n  flush_timeout_s: 0.5\n", encoding="utf-8")

    completed = subprocess.run(
        command("--config", str(config), "--source", str(astronaut_video), "--store", str(model_store.root),
                "--broker", stopped.url, "--device-id", "lost-test", "--max-frames", "3"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )

    assert completed.returncode == 3, completed.stderr[-3000:]
    last_line = completed.stderr.strip().splitlines()[-1]
    assert last_line.startswith("edge-runtime: error: 5 MQTT messages were not delivered")
    assert stopped.url in last_line
    assert "window 0 queued" in completed.stderr
    assert "1 window: 0 delivered, 1 lost" in completed.stderr
    assert "ERROR edge_runtime.capture.mqtt.paho" not in completed.stderr
    assert "Traceback" not in completed.stderr


def test_missing_source_reported_before_models(tmp_path) -> None:
    missing = tmp_path / "absent.mp4"

    completed = subprocess.run(
        command("--source", str(missing), "--store", str(tmp_path / "empty"), "--broker", "mqtt://127.0.0.1:9"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )

    assert completed.returncode == 1
    assert f"video file {missing} not found" in completed.stderr
    assert "models pull" not in completed.stderr


def test_invalid_device_id_names_value_and_characters() -> None:
    completed = subprocess.run(command("--device-id", "pi/7"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    assert completed.returncode == 1
    assert "device id 'pi/7' is invalid" in completed.stderr
    assert "letters, digits, '_', '.' or '-'" in completed.stderr
    assert "pattern" not in completed.stderr


def test_run_help_lists_exit_statuses() -> None:
    completed = subprocess.run(command("--help"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    assert completed.returncode == 0
    assert "exit status:" in completed.stdout
    for status in ("0", "1", "2", "3", "130"):
        assert re.search(rf"^  {status} +\S", completed.stdout, re.MULTILINE), status


@pytest.mark.parametrize(
    "kind, stopped, lost, fails",
    [
        (SourceKind.FILE, False, 5, True),
        (SourceKind.FILE, True, 5, True),
        (SourceKind.CAMERA, False, 5, True),
        (SourceKind.CAMERA, True, 5, False),
        (SourceKind.STREAM, True, 1, False),
        (SourceKind.FILE, False, 0, False),
    ],
)
def test_lost_messages_fail_run(kind, stopped, lost, fails) -> None:
    summary = RunSummary(
        reason="test", frames_analyzed=1, frames_read=1, frames_dropped=0, windows_published=1,
        wall_s=1.0, fps=1.0, messages_lost=lost, stopped=stopped,
    )

    assert lost_messages_fail_run(summary, kind) is fails
