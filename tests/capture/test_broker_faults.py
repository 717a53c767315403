"""No message lost across a broker outage and a ``kill -9`` of the service.

A real Mosquitto broker with persistence, a persistent-session QoS 1
subscriber, and two ``edge-runtime run`` subprocesses that share one outbox
file: the broker stops mid-run, the first service is killed with SIGKILL
during the outage, a second one starts on the same outbox, and then the
broker comes back. A second outage follows while the second service runs,
so its client reconnects by itself. A second test kills the first
service while it is connected and publishing. After dropping duplicates
by ``(device_id, seq)``, every sequence number from the first to the last
must have arrived, in order. Each test logs the counts of messages
published, received, duplicated and lost.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import cv2
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.capture.conftest import load_astronaut, write_panning_video

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVICE_ID = "fault-test"
# 40 s of 12 fps video paced in real time: longer than the test needs, so
# each service runs until the test kills or stops it.
CLIP_FPS = 12.0
CLIP_FRAMES = 480
CLIP_SIZE = 256
STEP_TIMEOUT_S = 90.0


class PersistentSubscriber:
    """A QoS 1 subscriber with a persistent session (clean start false) that records every message.

    paho reconnects it after a broker restart, and the broker's persistence
    keeps its subscription and the messages queued for it meanwhile.
    """

    def __init__(self, host: str, port: int, topic_filter: str) -> None:
        self.messages: list[tuple[str, dict]] = []
        self._condition = threading.Condition()
        self._subscribed = threading.Event()
        self._topic_filter = topic_filter
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="fault-test-subscriber", protocol=paho.MQTTv5
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 600
        self._client.connect(host, port, keepalive=5, clean_start=False, properties=properties)
        self._client.loop_start()
        if not self._subscribed.wait(timeout=10):
            raise RuntimeError(f"subscription to {topic_filter} not acknowledged within 10 s")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not flags.session_present:
            client.subscribe(self._topic_filter, qos=1)

    def _on_message(self, client, userdata, message) -> None:
        leaf = message.topic.rsplit("/", 1)[-1]
        if leaf not in ("faces", "stats"):
            return
        with self._condition:
            self.messages.append((leaf, json.loads(message.payload)))
            self._condition.notify_all()

    def wait_for(self, predicate: Callable[[list[tuple[str, dict]]], bool], timeout: float = STEP_TIMEOUT_S) -> bool:
        deadline = time.monotonic() + timeout
        with self._condition:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(timeout=remaining)
        return True

    def snapshot(self) -> list[tuple[str, dict]]:
        with self._condition:
            return list(self.messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def outbox_state(path: Path) -> tuple[int, int]:
    """Return (messages waiting, last sequence number) of the device in the outbox file."""
    if not path.exists():
        return 0, 0
    connection = sqlite3.connect(path, timeout=10)
    try:
        waiting = connection.execute("SELECT COUNT(*) FROM messages WHERE device_id = ?", (DEVICE_ID,)).fetchone()[0]
        row = connection.execute("SELECT last_seq FROM sequences WHERE device_id = ?", (DEVICE_ID,)).fetchone()
    except sqlite3.OperationalError:
        # The service has not created the tables yet.
        return 0, 0
    finally:
        connection.close()
    return waiting, (row[0] if row else 0)


def wait_until(predicate: Callable[[], bool], timeout: float = STEP_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def max_seq(messages: list[tuple[str, dict]]) -> int:
    return max((document["seq"] for _, document in messages), default=0)


@pytest.fixture(scope="module")
def small_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40 s, 12 fps, 256x256 MP4 of the astronaut portrait panning slowly."""
    image = cv2.resize(load_astronaut(), (CLIP_SIZE, CLIP_SIZE), interpolation=cv2.INTER_AREA)
    return write_panning_video(tmp_path_factory.mktemp("fault-video") / "astronaut-40s.mp4", image, CLIP_FRAMES, CLIP_FPS, 0)


class FaultRun:
    """``edge-runtime run`` subprocesses of one device that share one outbox file and one broker.

    Each service reads the same real-time clip with 0.5 s windows and a
    stats message every second, so it publishes about three messages per
    second until the test kills or stops it.
    """

    def __init__(self, tmp_path: Path, broker, model_store, video: Path, *, qos: int = 1) -> None:
        self.tmp_path = tmp_path
        self.outbox_path = tmp_path / "outbox.sqlite"
        config = tmp_path / "config.yaml"
        config.write_text(
            "window_s: 0.5\n"
            "stats_interval_s: 1\n"
            "source:\n"
            "  realtime: true\n"
            "mqtt:\n"
            f"  qos: {qos}\n"
            "  keepalive_s: 5\n"
            "  reconnect_min_s: 1\n"
            "  reconnect_max_s: 1\n"
            "  flush_timeout_s: 20\n"
            f"  outbox_path: {self.outbox_path}\n",
            encoding="utf-8",
        )
        self.command = [
            sys.executable, "-m", "edge_runtime", "run", "--config", str(config), "--source", str(video),
            "--broker", broker.url, "--device-id", DEVICE_ID, "--store", str(model_store.root),
        ]
        self.processes: list[subprocess.Popen] = []
        self.log_paths: list[Path] = []

    def start_service(self) -> subprocess.Popen:
        log_path = self.tmp_path / f"service-{len(self.processes) + 1}.log"
        with log_path.open("w", encoding="utf-8") as log:
            process = subprocess.Popen(self.command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
        self.processes.append(process)
        self.log_paths.append(log_path)
        return process

    def outbox(self) -> tuple[int, int]:
        """Return (messages waiting, last sequence number) of the device in the shared outbox file."""
        return outbox_state(self.outbox_path)

    def logs(self) -> str:
        """Return the end of every service's log, for failure messages."""
        return "\n".join(path.read_text(encoding="utf-8", errors="replace")[-3000:] for path in self.log_paths)

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def check_every_seq_once(received: list[tuple[str, dict]], last_seq: int, services: int, name: str) -> None:
    """Drop duplicates by seq, log the counts, and assert that every number arrived in order, from ``services`` runs."""
    seen: set[int] = set()
    unique: list[tuple[str, dict]] = []
    for leaf, document in received:
        assert document["device_id"] == DEVICE_ID
        if document["seq"] not in seen:
            seen.add(document["seq"])
            unique.append((leaf, document))
    seqs = [document["seq"] for _, document in unique]
    published = last_seq - seqs[0] + 1
    duplicates = len(received) - len(unique)
    lost = published - len(unique)
    logger.info(
        "%s: %d messages published (seq %d..%d), %d received, %d duplicates, %d lost",
        name, published, seqs[0], last_seq, len(received), duplicates, lost,
    )

    assert lost == 0
    # In order: the first copy of each number arrives after every smaller number.
    assert seqs == sorted(seqs)
    # No gaps: every number from the first to the last the device allocated arrived.
    assert seqs == list(range(seqs[0], last_seq + 1))

    # Each service's windows count from 0 in order; the final stats come last.
    faces = [document for leaf, document in unique if leaf == "faces"]
    restarts = [index for index, document in enumerate(faces) if index and document["window"]["index"] == 0]
    assert len(restarts) == services - 1, [document["window"]["index"] for document in faces]
    bounds = [0, *restarts, len(faces)]
    for begin, end in zip(bounds, bounds[1:]):
        indexes = [document["window"]["index"] for document in faces[begin:end]]
        assert indexes == sorted(set(indexes)), indexes
    assert unique[-1][0] == "stats"
    assert unique[-1][1]["final"] is True
    assert unique[-1][1]["mqtt"]["dropped_total"] == 0
    assert unique[-1][1]["mqtt"]["expired_total"] == 0


def test_no_loss_across_outage_and_kill(tmp_path, model_store, small_video, mosquitto_factory) -> None:
    broker = mosquitto_factory(persistent=True).start()
    run = FaultRun(tmp_path, broker, model_store, small_video)
    subscriber = PersistentSubscriber(broker.host, broker.port, f"edge-runtime/{DEVICE_ID}/#")

    try:
        # 1. The first service publishes a few windows to the running broker.
        first = run.start_service()
        arrived = subscriber.wait_for(lambda messages: sum(leaf == "faces" for leaf, _ in messages) >= 5)
        assert arrived, run.logs()

        # 2. The broker stops; the service keeps storing windows in its outbox.
        broker.stop()
        before_outage, _ = run.outbox()
        assert wait_until(lambda: run.outbox()[0] >= before_outage + 8), run.logs()

        # 3. kill -9 during the outage, with messages in the outbox.
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        waiting_at_kill, last_seq_at_kill = run.outbox()
        assert waiting_at_kill >= 8

        # 4. A second service on the same outbox adds windows while the broker is still down.
        second = run.start_service()
        assert wait_until(lambda: run.outbox()[1] >= last_seq_at_kill + 8), run.logs()

        # 5. The broker comes back with the subscriber's session; the backlog and new windows flow.
        broker.start()
        _, last_seq_at_restart = run.outbox()
        arrived = subscriber.wait_for(lambda messages: max_seq(messages) >= last_seq_at_restart + 4)
        assert arrived, run.logs() + broker.log_text()[-3000:]

        # 6. A second outage while the second service runs; its own client reconnects when the broker is back.
        broker.stop()
        assert wait_until(lambda: run.outbox()[0] >= 4), run.logs()
        broker.start()
        _, last_seq_at_second_restart = run.outbox()
        arrived = subscriber.wait_for(lambda messages: max_seq(messages) >= last_seq_at_second_restart + 2)
        assert arrived, run.logs() + broker.log_text()[-3000:]

        # 7. A clean stop publishes the final window and stats and flushes.
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=STEP_TIMEOUT_S) == 0, run.logs()
        waiting_at_end, last_seq = run.outbox()
        assert subscriber.wait_for(lambda messages: max_seq(messages) >= last_seq, timeout=30), run.logs()
    finally:
        run.kill_all()
        subscriber.close()

    assert waiting_at_end == 0
    logger.info("fault test with outages: %d messages waited in the outbox at the kill", waiting_at_kill)
    check_every_seq_once(subscriber.snapshot(), last_seq, services=2, name="fault test with outages")


@pytest.mark.parametrize("qos", [1, 2])
def test_no_loss_across_kill_while_connected(tmp_path, model_store, small_video, mosquitto_factory, qos) -> None:
    broker = mosquitto_factory(persistent=True).start()
    run = FaultRun(tmp_path, broker, model_store, small_video, qos=qos)
    subscriber = PersistentSubscriber(broker.host, broker.port, f"edge-runtime/{DEVICE_ID}/#")

    try:
        # 1. kill -9 while the first service publishes to a running broker; an unacknowledged message stays in the outbox.
        first = run.start_service()
        arrived = subscriber.wait_for(lambda messages: sum(leaf == "faces" for leaf, _ in messages) >= 5)
        assert arrived, run.logs()
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        _, last_seq_at_kill = run.outbox()

        # 2. A second service sends what the first left, then its own windows.
        second = run.start_service()
        arrived = subscriber.wait_for(lambda messages: max_seq(messages) >= last_seq_at_kill + 4)
        assert arrived, run.logs()

        # 3. A clean stop.
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=STEP_TIMEOUT_S) == 0, run.logs()
        waiting_at_end, last_seq = run.outbox()
        assert subscriber.wait_for(lambda messages: max_seq(messages) >= last_seq, timeout=30), run.logs()
    finally:
        run.kill_all()
        subscriber.close()

    assert waiting_at_end == 0
    check_every_seq_once(
        subscriber.snapshot(), last_seq, services=2, name=f"fault test with a kill while connected, QoS {qos}"
    )
