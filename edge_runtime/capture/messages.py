"""MQTT payloads of the capture service and the topics they go to.

Topics sit under ``<prefix>/<device_id>/``:

- ``availability``: the plain text ``online`` or ``offline``, retained, and
  the client's last will (``offline``).
- ``status``: retained JSON (``status.schema.json``): version, profile,
  models, source with its state, and a configuration summary.
- ``faces``: one JSON message per aggregation window (``faces.schema.json``).
- ``stats``: periodic JSON counters and latencies (``stats.schema.json``).

Every JSON payload carries ``schema_version``, ``device_id`` and ``ts``
(ISO 8601 UTC time of the message). Faces and stats messages also carry
``seq``, the device's sequence number, which the publisher adds when it
stores the message in its outbox (see ``with_seq``).

Duplicates: the publisher delivers at least once. A message can reach a
subscriber twice, after a reconnect or a restart of the service, always
with the same ``seq``. A subscriber drops a message whose
``(device_id, seq)`` it has already seen; keeping the highest ``seq`` per
device is enough, since numbers only grow. A gap in ``seq`` means the
messages in between were dropped on the device (outbox bound or expiry,
counted in the stats message). Payloads contain labels, statistics of
the classifier outputs, counters and a description of the setup. No image,
crop, landmark or embedding is written. Every object with fixed fields sets
``additionalProperties: false`` in its schema, so a field added here without
a schema change fails validation.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import TYPE_CHECKING, Any, Mapping, Optional

from edge_runtime import __version__
from edge_runtime.capture.aggregation import AgeSummary, Statistics, TrackSummary, WindowSummary

if TYPE_CHECKING:
    from edge_runtime.capture.source import SourceHealth

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCHEMA_NAMES = ("faces", "stats", "status")

AVAILABILITY_ONLINE = b"online"
AVAILABILITY_OFFLINE = b"offline"

# Probabilities and other scores keep 4 decimals, seconds 3; more digits
# only make the messages longer.
SCORE_DIGITS = 4
SECONDS_DIGITS = 3


@dataclass(frozen=True)
class Topics:
    """Topic names of one device."""

    prefix: str
    device_id: str

    def _topic(self, leaf: str) -> str:
        return f"{self.prefix.rstrip('/')}/{self.device_id}/{leaf}"

    @property
    def availability(self) -> str:
        return self._topic("availability")

    @property
    def status(self) -> str:
        return self._topic("status")

    @property
    def faces(self) -> str:
        return self._topic("faces")

    @property
    def stats(self) -> str:
        return self._topic("stats")


@dataclass(frozen=True)
class LatencySummary:
    """Latency of one pipeline stage over a stats interval, in milliseconds."""

    mean_ms: float
    p95_ms: float
    count: int


def iso_utc(unix_time: float) -> str:
    """Format a UNIX time as ISO 8601 UTC with milliseconds and a ``Z`` suffix."""
    moment = datetime.fromtimestamp(unix_time, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(message: Mapping[str, Any]) -> bytes:
    """Serialize a message as compact UTF-8 JSON; NaN and infinity are rejected."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """Load the JSON Schema of ``faces``, ``stats`` or ``status``."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; expected one of {', '.join(SCHEMA_NAMES)}")
    text = resources.files("edge_runtime").joinpath("schemas", f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def with_seq(message: Mapping[str, Any], seq: int) -> dict[str, Any]:
    """Return a copy of a faces or stats message with ``seq`` placed after ``ts``."""
    stamped: dict[str, Any] = {}
    for key, value in message.items():
        if key == "seq":
            continue
        stamped[key] = value
        if key == "ts":
            stamped["seq"] = seq
    if "seq" not in stamped:
        stamped["seq"] = seq
    return stamped


def faces_message(window: WindowSummary, device_id: str, now: Optional[float] = None) -> dict[str, Any]:
    """Build the ``faces`` message of one closed window."""
    group: dict[str, Any] = {
        "face_count": {
            "mean": _score(window.face_count.mean),
            "max": int(window.face_count.max),
            "min": int(window.face_count.min),
        }
    }
    if window.group_emotions is not None:
        group["emotions"] = _distribution(window.group_emotions)

    return {
        **_envelope(device_id, now),
        "window": {
            "index": window.index,
            "final": window.final,
            "start": iso_utc(window.wall_start),
            "end": iso_utc(window.wall_end),
            "media_start_s": _seconds(window.media_start_s),
            "media_end_s": _seconds(window.media_end_s),
            "duration_s": _seconds(window.duration_s),
            "frames": window.frames,
            "frames_with_faces": window.frames_with_faces,
            "fps": _score(window.fps) if window.fps is not None else None,
        },
        "group": group,
        "tracks": [_track(track) for track in window.tracks],
    }


def stats_message(
    device_id: str,
    *,
    interval_s: float,
    uptime_s: float,
    frames_analyzed: int,
    frames_analyzed_total: int,
    frames_read_total: int,
    frames_dropped: int,
    frames_dropped_total: int,
    latency: Mapping[str, LatencySummary],
    source_queue_depth: int,
    mqtt_queue_depth: int,
    mqtt_dropped_total: int,
    mqtt_connected: bool,
    mqtt_expired_total: int = 0,
    mqtt_rejected_total: int = 0,
    mqtt_pending: int = 0,
    final: bool = False,
    now: Optional[float] = None,
) -> dict[str, Any]:
    """Build a ``stats`` message.

    ``frames_analyzed`` and ``frames_dropped`` count the last ``interval_s``
    seconds, the ``_total`` counters the whole run. ``fps`` is analyzed
    frames per second of wall time over the interval. ``mqtt_dropped_total``
    counts messages dropped by the outbox bounds, ``mqtt_expired_total``
    those that expired in the outbox and ``mqtt_rejected_total`` those the
    broker rejected. ``mqtt_pending`` is the number of faces and stats
    messages in the outbox file that the broker has not acknowledged yet.
    """
    fps = frames_analyzed / interval_s if interval_s > 0 else 0.0
    return {
        **_envelope(device_id, now),
        "final": final,
        "interval_s": _seconds(interval_s),
        "uptime_s": _seconds(uptime_s),
        "fps": _score(fps),
        "frames": {
            "analyzed": frames_analyzed,
            "analyzed_total": frames_analyzed_total,
            "read_total": frames_read_total,
            "dropped": frames_dropped,
            "dropped_total": frames_dropped_total,
        },
        "latency_ms": {
            stage: {"mean": _score(summary.mean_ms), "p95": _score(summary.p95_ms), "count": summary.count}
            for stage, summary in latency.items()
        },
        "queue_depth": {"source": source_queue_depth, "mqtt": mqtt_queue_depth},
        "mqtt": {
            "connected": mqtt_connected,
            "dropped_total": mqtt_dropped_total,
            "expired_total": mqtt_expired_total,
            "rejected_total": mqtt_rejected_total,
            "pending": mqtt_pending,
        },
    }


def status_message(
    device_id: str,
    *,
    started: float,
    profile: Optional[str],
    models: Mapping[str, Mapping[str, Any]],
    source: Mapping[str, Any],
    config: Mapping[str, Any],
    now: Optional[float] = None,
) -> dict[str, Any]:
    """Build the retained ``status`` message.

    ``models`` maps each role to ``{name, version, backend, precision, sha256}``,
    plus ``variant``, ``reason`` and ``skipped`` when the loader recorded its choice.
    ``source`` is ``{description, kind, width, height, fps}``, with any URL
    credentials already removed, plus an optional ``health`` made by
    ``source_health_fields``. ``config`` is the summary that the ``config``
    property of ``status.schema.json`` lists.
    """
    return {
        **_envelope(device_id, now),
        "version": __version__,
        "started": iso_utc(started),
        "profile": profile,
        "models": {role: dict(info) for role, info in models.items()},
        "source": dict(source),
        "config": dict(config),
    }


def source_health_fields(health: "SourceHealth") -> dict[str, Any]:
    """Return the ``source.health`` object of the status message: state, times as ISO 8601, counters, last error."""
    return {
        "state": health.state.value,
        "since": iso_utc(health.since),
        "reconnects": health.reconnects,
        "loops": health.loops,
        "hung_readers": health.hung_readers,
        "last_frame_at": iso_utc(health.last_frame_at) if health.last_frame_at is not None else None,
        "last_error": health.last_error,
        "last_error_at": iso_utc(health.last_error_at) if health.last_error_at is not None else None,
    }


def _envelope(device_id: str, now: Optional[float]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "device_id": device_id,
        "ts": iso_utc(time.time() if now is None else now),
    }


def _track(track: TrackSummary) -> dict[str, Any]:
    """Serialize one track summary field by field; nothing else of a face is reachable from here."""
    item: dict[str, Any] = {
        "track_id": track.track_id,
        "frames": track.frames,
        "seconds_seen": _seconds(track.seconds_seen),
        "first_media_s": _seconds(track.first_media_s),
        "last_media_s": _seconds(track.last_media_s),
    }
    if track.emotions is not None:
        item["emotions"] = _distribution(track.emotions)
        item["dominant_emotion"] = track.dominant_emotion
    if track.emotion_stats is not None:
        item["emotion_stats"] = {label: _statistics(stats) for label, stats in track.emotion_stats.items()}
    if track.valence is not None:
        item["valence"] = _score(track.valence)
    if track.arousal is not None:
        item["arousal"] = _score(track.arousal)
    if track.age is not None:
        item["age"] = _age(track.age)
    if track.gender is not None:
        item["gender"] = _distribution(track.gender)
    if track.ethnicity is not None:
        item["ethnicity"] = _distribution(track.ethnicity)
    return item


def _age(age: AgeSummary) -> dict[str, Any]:
    return {
        "mean": _score(age.mean),
        "std": _score(age.std),
        "spread_mean": _score(age.spread_mean),
        "frames": age.frames,
    }


def _statistics(stats: Statistics) -> dict[str, float]:
    return {"mean": _score(stats.mean), "max": _score(stats.max), "min": _score(stats.min), "std": _score(stats.std)}


def _distribution(distribution: Mapping[str, float]) -> dict[str, float]:
    return {str(label): _score(value) for label, value in distribution.items()}


def _score(value: float) -> float:
    return round(float(value), SCORE_DIGITS)


def _seconds(value: float) -> float:
    return round(float(value), SECONDS_DIGITS)
