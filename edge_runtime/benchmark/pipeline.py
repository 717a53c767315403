"""The whole capture loop end to end: ``Runner`` on a video with the device profile's models.

The loop reads the video as fast as it decodes (not paced at the video's
frame rate), analyzes every frame, tracks and aggregates faces, and hands
each message to a publisher. With a broker, that is a real
``MqttPublisher``. Without one, ``EncodeOnlyPublisher`` serializes each
message and drops it, so the loop still pays for building and encoding
the messages but not for the outbox file or the network.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from edge_runtime.benchmark.timing import LatencyStats
from edge_runtime.capture.messages import encode
from edge_runtime.capture.mqtt import MqttPublisher
from edge_runtime.capture.runner import Runner, RunSummary
from edge_runtime.capture.source import FrameSource
from edge_runtime.config import Config, MqttConfig, SourceConfig
from edge_runtime.vision.analyzer import FaceAnalyzer
from edge_runtime.vision.types import FaceResult

logger = logging.getLogger(__name__)


class EncodeOnlyPublisher(MqttPublisher):
    """An ``MqttPublisher`` that never connects: it encodes every message to JSON and drops it.

    Only ``start``, ``publish`` and ``delivered_count`` differ from the real
    publisher, so every counter ``Runner`` reads stays available.
    ``bytes_encoded`` counts the payload bytes produced. The outbox file of
    ``settings.outbox_path`` is opened and stays empty, so point it at a
    scratch file.
    """

    def __init__(self, settings: MqttConfig) -> None:
        super().__init__(settings)
        self.bytes_encoded = 0
        self._encoded_by_topic: collections.Counter[str] = collections.Counter()

    def start(self) -> None:
        """Do nothing; there is no connection to open."""

    def publish(self, topic: str, payload: bytes, *, qos: Optional[int] = None, retain: bool = False) -> None:
        """Count the payload, which ``publish_json`` has encoded, and drop it."""
        self.bytes_encoded += len(payload)
        self._encoded_by_topic[topic] += 1

    def publish_json(self, topic: str, message: Mapping[str, Any], *, retain: bool = False) -> None:
        """Encode ``message`` (without the ``seq`` field the real publisher adds) and drop it."""
        self.publish(topic, encode(message), retain=retain)

    def delivered_count(self, topic: str) -> int:
        """Return how many messages on ``topic`` were encoded."""
        return self._encoded_by_topic[topic]


class TimedAnalyzer:
    """Wraps a FaceAnalyzer for the run loop and records when each ``analyze`` call starts.

    The gaps between successive starts are the loop's full period per
    frame: decoding, analysis, tracking, aggregation and publishing.
    """

    def __init__(self, analyzer: FaceAnalyzer) -> None:
        self.analyzer = analyzer
        self.call_starts: list[float] = []

    @property
    def last_timings_ms(self) -> dict[str, float]:
        return self.analyzer.last_timings_ms

    @property
    def models(self) -> Mapping[str, Mapping[str, Any]]:
        return self.analyzer.models

    def analyze(self, frame_bgr: np.ndarray) -> list[FaceResult]:
        self.call_starts.append(time.perf_counter())
        return self.analyzer.analyze(frame_bgr)

    def close(self) -> None:
        """Leave the analyzer open; its owner closes it."""


@dataclass(frozen=True)
class PipelineRun:
    """Result of one run of the capture loop.

    ``periods`` summarizes the milliseconds between the starts of two
    analyzed frames after the warm-up frames. ``summary`` is the runner's
    own summary, whose ``fps`` counts every analyzed frame over the loop's
    wall time without the final MQTT flush.
    """

    summary: RunSummary
    periods: Optional[LatencyStats]
    mqtt: dict[str, Any]


def run_pipeline(
    video: Path,
    analyzer: FaceAnalyzer,
    profile_name: str,
    mqtt: MqttConfig,
    *,
    max_frames: int,
    warmup_frames: int,
    use_broker: bool,
) -> PipelineRun:
    """Run the capture loop over ``video`` for at most ``max_frames`` frames and time each frame.

    The analyzer stays open for the caller. With ``use_broker`` the messages
    go to the broker in ``mqtt``; otherwise they are only encoded.

    Raises:
        SourceError: the video cannot be opened.
        EdgeRuntimeError: 50 frames in a row failed to analyze.
    """
    config = Config(source=SourceConfig(spec=str(video)), profile=profile_name, mqtt=mqtt)
    publisher = MqttPublisher(mqtt) if use_broker else EncodeOnlyPublisher(mqtt)
    timed = TimedAnalyzer(analyzer)

    source = FrameSource(str(video))
    source.open()
    try:
        runner = Runner(config, timed, source, publisher, profile_name=profile_name)  # type: ignore[arg-type]
        summary = runner.run(max_frames=max_frames)
    finally:
        source.close()

    periods_ms = list(np.diff(timed.call_starts) * 1000.0)[warmup_frames:]
    periods = LatencyStats.from_samples(periods_ms) if periods_ms else None

    if use_broker:
        mqtt_info = {
            "mode": "broker",
            "broker": mqtt.broker,
            "delivered": summary.delivered,
            "windows_delivered": summary.windows_delivered,
            "messages_lost": summary.messages_lost,
        }
    else:
        mqtt_info = {"mode": "encode only", "bytes_encoded": publisher.bytes_encoded}  # type: ignore[union-attr]
    return PipelineRun(summary=summary, periods=periods, mqtt=mqtt_info)
