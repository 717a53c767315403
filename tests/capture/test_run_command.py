"""``edge-runtime run`` as a user starts it: a subprocess, real models, a real broker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.capture.runner import RunSummary
from edge_runtime.capture.source import SourceKind
from edge_runtime.capture.outbox import Outbox
from edge_runtime.cli import EXIT_CONFIG, EXIT_ERROR, EXIT_MODEL
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

    assert completed.returncode == EXIT_MODEL
    assert "edge-runtime models pull --starter" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_run_with_invalid_config_names_key(tmp_path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("source:\n  spec: clip.mp4\nwindow: 5\n", encoding="utf-8")

    completed = subprocess.run(command("--config", str(config)), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    assert completed.returncode == EXIT_CONFIG
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


def test_run_without_broker_keeps_outbox_for_next_start(
    tmp_path, model_store, astronaut_video, mosquitto_factory, subscribe
) -> None:
    broker = mosquitto_factory()
    config = tmp_path / "config.yaml"
    config.write_text("mqtt:\n  flush_timeout_s: 0.5\n", encoding="utf-8")
    arguments = ("--config", str(config), "--source", str(astronaut_video), "--store", str(model_store.root),
                 "--broker", broker.url, "--device-id", "pending-test", "--max-frames", "3")

    offline = subprocess.run(command(*arguments), cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)

    assert offline.returncode == 0, offline.stderr[-3000:]
    assert "window 0 queued" in offline.stderr
    assert "1 window: 0 delivered, 1 not delivered" in offline.stderr
    assert "MQTT: 0 messages lost, 2 kept in the outbox" in offline.stderr
    assert f"2 MQTT messages wait in the outbox for broker {broker.url}" in offline.stderr
    assert "ERROR edge_runtime.capture.mqtt.paho" not in offline.stderr
    assert "Traceback" not in offline.stderr

    broker.start()
    subscriber = subscribe(broker, "edge-runtime/pending-test/#")
    online = subprocess.run(command(*arguments), cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)

    assert online.returncode == 0, online.stderr[-3000:]
    assert "2 messages waiting" in online.stderr
    assert subscriber.wait_for(ends_offline)
    sent = [(received.leaf, received.json()) for received in subscriber.messages if received.leaf in ("faces", "stats")]
    # The first run's window and final stats arrive first, then the second run's, with consecutive seq.
    assert [leaf for leaf, _ in sent] == ["faces", "stats", "faces", "stats"]
    seqs = [document["seq"] for _, document in sent]
    assert seqs == list(range(seqs[0], seqs[0] + 4))
    assert all(document["final"] for leaf, document in sent if leaf == "stats")


def test_run_exits_3_when_outbox_bound_drops(tmp_path, model_store, astronaut_video, mosquitto_factory) -> None:
    stopped = mosquitto_factory()
    config = tmp_path / "config.yaml"
    config.write_text("mqtt:\n  flush_timeout_s: 0.5\n  outbox_max_messages: 1\n", encoding="utf-8")

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
    assert last_line.startswith("edge-runtime: error: 1 MQTT message was lost")
    assert stopped.url in last_line
    assert "mqtt.outbox_max_messages" in last_line
    assert "is full (mqtt.outbox_max_messages=1," in completed.stderr
    assert "MQTT: 1 message lost, 1 kept in the outbox" in completed.stderr
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

    assert completed.returncode == EXIT_CONFIG
    assert "device id 'pi/7' is invalid" in completed.stderr
    assert "letters, digits, '_', '.' or '-'" in completed.stderr
    assert "pattern" not in completed.stderr


def test_second_run_on_same_outbox_exits_1(tmp_path, astronaut_video) -> None:
    outbox_path = tmp_path / "outbox.sqlite"
    config = tmp_path / "config.yaml"
    config.write_text(f"mqtt:\n  outbox_path: {outbox_path}\n  device_id: twin\n", encoding="utf-8")
    # This test process plays the first service: it has the outbox of device "twin" open.
    first = Outbox(outbox_path, "twin", max_messages=10, max_bytes=1 << 20)

    try:
        completed = subprocess.run(
            command("--config", str(config), "--source", str(astronaut_video), "--store", str(tmp_path / "empty"),
                    "--broker", "mqtt://127.0.0.1:9"),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
    finally:
        first.close()

    # Not 78: systemd restarts the service, and the restart succeeds once the other process has stopped.
    assert completed.returncode == EXIT_ERROR
    last_line = completed.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"edge-runtime: error: outbox {outbox_path} is in use for device twin")
    assert f"by process {os.getpid()}" in last_line
    assert "mqtt.outbox_path" in last_line
    assert "Traceback" not in completed.stderr
    # The outbox is checked before the models load, so the empty store is never reached.
    assert "models pull" not in completed.stderr


def test_run_help_lists_exit_statuses() -> None:
    completed = subprocess.run(command("--help"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    assert completed.returncode == 0
    assert "exit status:" in completed.stdout
    for status in ("0", "1", "2", "3", "65", "78", "130"):
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
