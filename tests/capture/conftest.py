"""Helpers of the capture tests.

An MQTT subscriber that records what arrives, schema validators, and a
video made from a real photo.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import cv2
import jsonschema
import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.capture.messages import load_schema
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.samples import fetch_sample
from tests.conftest import SHARED_DATA


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    @property
    def leaf(self) -> str:
        return self.topic.rsplit("/", 1)[-1]

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A paho client subscribed to one topic filter, recording every message in arrival order."""

    def __init__(self, host: str, port: int, topic_filter: str) -> None:
        self.topic_filter = topic_filter
        self.messages: list[Received] = []
        self._condition = threading.Condition()
        self._subscribed = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-subscriber-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(timeout=10):
            raise RuntimeError(f"subscription to {topic_filter} on {host}:{port} not acknowledged within 10 s")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe(self.topic_filter, qos=1)

    def _on_message(self, client, userdata, message) -> None:
        with self._condition:
            self.messages.append(Received(message.topic, bytes(message.payload), bool(message.retain)))
            self._condition.notify_all()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate(messages)`` holds; return False on timeout."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(timeout=remaining)
        return True

    def on(self, leaf: str) -> list[Received]:
        with self._condition:
            return [message for message in self.messages if message.leaf == leaf]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def ends_offline(messages: list[Received]) -> bool:
    """Return True when the last message received is ``offline``."""
    return bool(messages) and messages[-1].payload == b"offline"


@pytest.fixture
def subscribe() -> Iterator[Callable[..., Subscriber]]:
    """Open subscribers with ``subscribe(broker, topic_filter)``; all are closed after the test."""
    opened: list[Subscriber] = []

    def make(broker: Any, topic_filter: str) -> Subscriber:
        subscriber = Subscriber(broker.host, broker.port, topic_filter)
        opened.append(subscriber)
        return subscriber

    yield make
    for subscriber in opened:
        subscriber.close()


@pytest.fixture(scope="session")
def validators() -> dict[str, jsonschema.Draft202012Validator]:
    """JSON Schema validators of the faces, stats and status messages, with format checks."""
    return {
        name: jsonschema.Draft202012Validator(load_schema(name), format_checker=jsonschema.FormatChecker())
        for name in ("faces", "stats", "status")
    }


def validate_payload(validators: dict[str, jsonschema.Draft202012Validator], received: Received) -> Optional[dict]:
    """Validate one received message against its schema; availability must be online/offline."""
    if received.leaf == "availability":
        assert received.payload in (b"online", b"offline"), received.payload
        return None
    document = received.json()
    errors = sorted(validators[received.leaf].iter_errors(document), key=str)
    assert not errors, f"{received.topic}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors)
    return document


# --------------------------------------------------------------------------
# A video the tests make from a real photo


ASTRONAUT_FPS = 12.0
ASTRONAUT_FRAMES = 48
ASTRONAUT_PAN_PX = 2


def load_astronaut() -> np.ndarray:
    """Return NASA's astronaut portrait (public domain) as BGR, or skip when it cannot be had.

    The labelled data copy is used when present; otherwise the photo is
    taken from the scikit-image wheel on the package index (cached).
    """
    local = SHARED_DATA / "faces" / "astronaut.png"
    if local.is_file():
        path = local
    else:
        try:
            path = fetch_sample("astronaut")
        except EdgeRuntimeError as exc:
            pytest.skip(f"astronaut photo unavailable: not in {local} and the download failed: {exc}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"{path} cannot be decoded"
    return image


def write_panning_video(path: Path, image: np.ndarray, frames: int, fps: float, pan_px: int) -> Path:
    """Write ``frames`` frames of ``image`` moving ``pan_px`` pixels right per frame (MPEG-4 Part 2)."""
    height, width = image.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened(), f"cv2.VideoWriter cannot write {path}"
    for index in range(frames):
        shift = np.float32([[1, 0, index * pan_px], [0, 1, 0]])
        writer.write(cv2.warpAffine(image, shift, (width, height), borderMode=cv2.BORDER_REPLICATE))
    writer.release()
    return path


@pytest.fixture(scope="session")
def astronaut_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4 s, 12 fps, 512x512 MP4 of the astronaut portrait panning slowly to the right."""
    directory = tmp_path_factory.mktemp("videos")
    return write_panning_video(
        directory / "astronaut.mp4", load_astronaut(), ASTRONAUT_FRAMES, ASTRONAUT_FPS, ASTRONAUT_PAN_PX
    )
