"""Message payloads: schema validity, rounding and the absence of any image data or embedding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.capture.aggregation import WindowAggregator
from edge_runtime.capture.messages import (
    LatencySummary,
    Topics,
    encode,
    faces_message,
    iso_utc,
    stats_message,
    status_message,
    with_seq,
)
from edge_runtime.vision.types import AgeEstimate, Detection, FaceResult

# A descriptor value that no score in these tests has, so finding it in a
# payload proves that the descriptor leaked.
FEATURE_VALUE = 0.987654321


def full_face(track_box=(10.0, 20.0, 110.0, 140.0)) -> FaceResult:
    return FaceResult(
        detection=Detection(box=track_box, score=0.97, landmarks=np.arange(10, dtype=np.float32).reshape(5, 2)),
        emotions={"anger": 0.05, "happiness": 0.7, "neutral": 0.25},
        valence=0.4,
        arousal=0.1,
        age=AgeEstimate(years=27.5, spread=3.2),
        gender={"female": 0.9, "male": 0.1},
        ethnicity={"white": 0.5, "asian": 0.3, "black": 0.2},
        features=np.full(1280, FEATURE_VALUE, dtype=np.float32),
    )


def window_with_features():
    aggregator = WindowAggregator(window_s=10.0)
    for step in range(5):
        aggregator.add(step * 0.5, 1_700_000_000.0 + step * 0.5, [(1, full_face()), (2, full_face((300.0, 20.0, 400.0, 140.0)))])
    return aggregator.flush()


def all_numbers(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from all_numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from all_numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_faces_message_validates(validators) -> None:
    # The publisher adds seq when it stores the message in its outbox.
    message = with_seq(faces_message(window_with_features(), "pi-kitchen", now=1_700_000_010.0), 1_700_000_010_000)

    errors = list(validators["faces"].iter_errors(message))

    assert errors == []
    assert message["schema_version"] == 1
    assert message["device_id"] == "pi-kitchen"
    assert message["ts"] == "2023-11-14T22:13:30.000Z"
    assert list(message)[:4] == ["schema_version", "device_id", "ts", "seq"]


@pytest.mark.parametrize("schema", ["faces", "stats"])
def test_schema_requires_seq(validators, schema) -> None:
    if schema == "faces":
        message = faces_message(window_with_features(), "pi-kitchen")
    else:
        message = stats_message(
            "pi-kitchen", interval_s=1.0, uptime_s=1.0, frames_analyzed=1, frames_analyzed_total=1,
            frames_read_total=1, frames_dropped=0, frames_dropped_total=0, latency={}, source_queue_depth=0,
            mqtt_queue_depth=0, mqtt_dropped_total=0, mqtt_connected=True,
        )

    errors = [error.message for error in validators[schema].iter_errors(message)]

    assert errors == ["'seq' is a required property"]


def test_with_seq_replaces_existing_seq() -> None:
    stamped = with_seq({"schema_version": 1, "ts": "t", "seq": 3, "n": 0}, 4)

    assert stamped == {"schema_version": 1, "ts": "t", "seq": 4, "n": 0}
    assert list(stamped) == ["schema_version", "ts", "seq", "n"]


def test_faces_message_never_contains_features() -> None:
    window = window_with_features()
    message = faces_message(window, "pi-kitchen")
    text = encode(message).decode()

    assert "features" not in text
    assert "embedding" not in text
    assert "landmarks" not in text
    assert str(round(FEATURE_VALUE, 4)) not in text
    assert FEATURE_VALUE not in set(all_numbers(message))
    assert round(FEATURE_VALUE, 4) not in set(all_numbers(message))
    assert len(text) < 4000


def test_faces_message_fields_of_a_track() -> None:
    track = faces_message(window_with_features(), "pi-kitchen")["tracks"][0]

    assert set(track) == {
        "track_id", "frames", "seconds_seen", "first_media_s", "last_media_s", "emotions",
        "dominant_emotion", "emotion_stats", "valence", "arousal", "age", "gender", "ethnicity",
    }
    assert track["dominant_emotion"] == "happiness"
    assert track["emotion_stats"]["happiness"] == {"mean": 0.7, "max": 0.7, "min": 0.7, "std": 0.0}
    assert track["age"] == {"mean": 27.5, "std": 0.0, "spread_mean": 3.2, "frames": 5}


def test_faces_schema_rejects_extra_field(validators) -> None:
    message = faces_message(window_with_features(), "pi-kitchen")
    message["tracks"][0]["features"] = [0.1, 0.2]

    errors = list(validators["faces"].iter_errors(message))

    assert any("features" in error.message for error in errors)


def test_stats_message_validates(validators) -> None:
    message = stats_message(
        "pi-kitchen",
        interval_s=10.0,
        uptime_s=42.0,
        frames_analyzed=120,
        frames_analyzed_total=480,
        frames_read_total=500,
        frames_dropped=3,
        frames_dropped_total=20,
        latency={"detect": LatencySummary(12.3456, 20.0, 120), "emotion": LatencySummary(2.0, 3.1, 118)},
        source_queue_depth=1,
        mqtt_queue_depth=0,
        mqtt_dropped_total=2,
        mqtt_expired_total=1,
        mqtt_pending=4,
        mqtt_connected=True,
    )
    message = with_seq(message, 7)

    assert list(validators["stats"].iter_errors(message)) == []
    assert message["mqtt"] == {"connected": True, "dropped_total": 2, "expired_total": 1, "rejected_total": 0, "pending": 4}
    assert message["fps"] == 12.0
    assert message["latency_ms"]["detect"] == {"mean": 12.3456, "p95": 20.0, "count": 120}


def test_status_message_validates(validators) -> None:
    message = status_message(
        "pi-kitchen",
        started=1_700_000_000.0,
        profile="raspberry-pi-4",
        models={
            "detector": {"name": "mtcnn", "backend": "onnxruntime", "precision": "fp32", "sha256": {"pnet": "a" * 64}},
            "emotion": {"name": "fer-mini-xception", "backend": "tflite", "precision": "int8", "sha256": "b" * 64},
        },
        source={"description": "file clip.mp4", "kind": "file", "width": 640, "height": 360, "fps": 23.976},
        config={
            "window_s": 10.0,
            "stats_interval_s": 10.0,
            "min_track_frames": 1,
            "every_n": 1,
            "realtime": False,
            "qos": 1,
            "broker": "mqtt://127.0.0.1:1883",
            "outbox": {"max_messages": 100_000, "max_bytes": 64 * 1024 * 1024, "message_expiry_s": None},
            "tracking": {"min_iou": 0.3, "max_missed": 10},
        },
    )

    assert list(validators["status"].iter_errors(message)) == []


def test_encode_rejects_nan() -> None:
    with pytest.raises(ValueError):
        encode({"value": float("nan")})


def test_encode_is_compact_json() -> None:
    assert encode({"a": 1, "b": [1, 2]}) == b'{"a":1,"b":[1,2]}'
    assert json.loads(encode({"label": "ü"})) == {"label": "ü"}


def test_topics_under_prefix_and_device() -> None:
    topics = Topics("site/edge-runtime/", "pi-1")

    assert topics.availability == "site/edge-runtime/pi-1/availability"
    assert topics.status == "site/edge-runtime/pi-1/status"
    assert topics.faces == "site/edge-runtime/pi-1/faces"
    assert topics.stats == "site/edge-runtime/pi-1/stats"


def test_iso_utc_format() -> None:
    assert iso_utc(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1.2345) == "1970-01-01T00:00:01.234Z"
