"""The real service command inside the unit's sandbox (see ``tests/systemd/sandbox.py``).

Each test runs ``edge-runtime run`` on a video file with the starter models
from ``$STATE_DIRECTORY/models`` and a real Mosquitto broker on loopback,
under the seccomp filters, capability drop and read-only file system the
unit sets up. They need root (for the mount namespace) and libseccomp.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from edge_runtime.models import STARTER_MODELS
from tests.fixtures.models import copy_packages
from tests.systemd.conftest import REPO_ROOT, SYSTEMD_DIR, UNIT_NAME

VIDEO = "videos/WolfgangLanger_Pexels.mp4"
EVERY_N = 12  # 472 frames -> 40 analyzed, about 20 s of video
RUN_TIMEOUT_S = 240
EDGE_RUNTIME = Path(sys.executable).with_name("edge-runtime")


@pytest.fixture(scope="module")
def sandbox_supported(systemd_analyze) -> None:
    """Skip unless this process can build the sandbox: root, mount namespaces, libseccomp."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root for its private mount namespace")
    if ctypes.util.find_library("seccomp") is None:
        pytest.skip("libseccomp not installed (apt-get install libseccomp2)")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a mount namespace here: {probe.stderr.strip()}")
    if not EDGE_RUNTIME.exists():
        pytest.skip(f"{EDGE_RUNTIME} not found; install the package with pip install -e .")


class Subscriber:
    """Collects every message under the device's topics from the loopback broker."""

    def __init__(self, host: str, port: int, device_id: str) -> None:
        self.device_id = device_id
        self.messages: list[tuple[str, bytes]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sandbox-test-subscriber")
        self.client.on_connect = lambda client, *args: client.subscribe(f"edge-runtime/{device_id}/#", qos=1)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = lambda client, userdata, message: self.messages.append(
            (message.topic, message.payload)
        )
        self.client.connect(host, port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription to the test broker timed out"

    def payloads(self, leaf: str) -> list[dict]:
        topic = f"edge-runtime/{self.device_id}/{leaf}"
        return [json.loads(payload) for name, payload in self.messages if name == topic]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run_service(tmp_path: Path, model_store, broker, shared_data: Path, profile: str, dropins: list[str]):
    """Run the service once in the sandbox; return the process and the collected messages.

    The device id is unique per test, so a retained status of an earlier
    test never counts.
    """
    device_id = f"sandbox-{tmp_path.name}"
    state_dir = tmp_path / "state"
    copy_packages(model_store, state_dir / "models", STARTER_MODELS)

    config = {
        "source": {"spec": str((shared_data / VIDEO).resolve()), "every_n": EVERY_N},
        "profile": profile,
        "window_s": 5.0,
        "mqtt": {"broker": broker.url, "device_id": device_id, "flush_timeout_s": 5.0},
    }
    config_path = state_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))

    units = [str(SYSTEMD_DIR / UNIT_NAME)] + [str(SYSTEMD_DIR / "drop-ins" / name) for name in dropins]
    command = [
        sys.executable, "-m", "tests.systemd.sandbox", "--state-dir", str(state_dir),
        "--read-only", str((shared_data / VIDEO).resolve().parent), *units,
        "--", str(EDGE_RUNTIME), "run", "--config", str(config_path),
    ]

    subscriber = Subscriber(broker.host, broker.port, device_id)
    try:
        process = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        time.sleep(0.5)  # let the last QoS 1 deliveries reach the subscriber
    finally:
        subscriber.close()
    return process, subscriber


@pytest.mark.parametrize("profile", ["raspberry-pi-4", "generic-x86_64"])
def test_profile_runs_with_wx_enforced(profile, sandbox_supported, tmp_path, model_store, mosquitto_broker, shared_data):
    process, subscriber = run_service(tmp_path, model_store, mosquitto_broker, shared_data, profile, dropins=[])

    assert "MemoryDenyWriteExecute" in process.stderr.splitlines()[0]
    assert process.returncode == 0, process.stderr[-3000:]
    faces = subscriber.payloads("faces")
    assert faces, process.stderr[-3000:]
    assert any(message["tracks"] for message in faces)
    status = subscriber.payloads("status")[0]
    backends = {role: model["backend"] for role, model in status["models"].items()}
    assert set(backends.values()) <= {"tflite", "onnxruntime"}


def test_openvino_fails_without_dropin(sandbox_supported, tmp_path, model_store, mosquitto_broker, shared_data):
    process, subscriber = run_service(
        tmp_path, model_store, mosquitto_broker, shared_data, "intel-x86_64-openvino", dropins=[]
    )

    # The loader falls back to the next backend, so the service still runs,
    # but every OpenVINO compile fails under W^X.
    assert "can't protect" in process.stderr
    assert process.returncode == 0, process.stderr[-3000:]
    status = subscriber.payloads("status")[0]
    assert all(model["backend"] != "openvino" for model in status["models"].values())


def test_openvino_runs_with_dropin(sandbox_supported, tmp_path, model_store, mosquitto_broker, shared_data):
    process, subscriber = run_service(
        tmp_path, model_store, mosquitto_broker, shared_data, "intel-x86_64-openvino", dropins=["openvino.conf"]
    )

    assert "MemoryDenyWriteExecute" not in process.stderr.splitlines()[0]
    assert "can't protect" not in process.stderr
    assert process.returncode == 0, process.stderr[-3000:]
    assert subscriber.payloads("faces"), process.stderr[-3000:]
    status = subscriber.payloads("status")[0]
    assert status["models"]["detector"]["backend"] == "openvino"
