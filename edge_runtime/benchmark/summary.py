"""A compact summary of a benchmark run, published retained to ``<prefix>/<device_id>/bench``.

A fleet collects the summaries by subscribing to ``<prefix>/+/bench``: the
broker keeps the latest one per device. The summary names the board, the
pipeline fps and the p50/p90 latency of every detector and classifier
measurement. The full document stays in the JSON file on the device.

The summary goes out on its own short MQTT v5 connection, with client id
``edge-runtime-<device_id>-bench`` and no last will, so it neither takes
over the capture service's connection nor touches its availability topic.
The same kind of connection clears the retained messages that the
benchmark's own publishers leave under ``<prefix>/<device_id>-bench/``
(``clear_retained``), so that no phantom device stays on the broker.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Any, Mapping, Optional, Sequence

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.benchmark.records import BenchReport
from edge_runtime.capture.messages import encode, iso_utc
from edge_runtime.config import parse_broker_url
from edge_runtime.errors import ConfigError, PublishError

logger = logging.getLogger(__name__)

SUMMARY_SCHEMA = "edge-runtime-bench-summary/1"
TOPIC_LEAF = "bench"


def summary_topic(prefix: str, device_id: str) -> str:
    """Return ``<prefix>/<device_id>/bench``."""
    return f"{prefix.rstrip('/')}/{device_id}/{TOPIC_LEAF}"


def build_summary(report: BenchReport, device_id: str, now: Optional[float] = None) -> dict[str, Any]:
    """Return the compact summary of ``report`` (latencies in ms, rounded to 3 decimals)."""
    platform = report.platform
    pipeline = report.pipeline or {}

    def entry(measurement: Any) -> dict[str, Any]:
        return {
            "model": measurement.name,
            "backend": measurement.backend,
            "precision": measurement.precision,
            "batch": measurement.batch,
            "p50_ms": round(measurement.stats.p50_ms, 3),
            "p90_ms": round(measurement.stats.p90_ms, 3),
        }

    return {
        "schema": SUMMARY_SCHEMA,
        "device_id": device_id,
        "ts": iso_utc(time.time() if now is None else now),
        "started_utc": report.started_utc,
        "board": platform.get("board"),
        "cpu": platform.get("cpu"),
        "cpu_cores": platform.get("cpu_cores"),
        "arch": platform.get("arch"),
        "edge_runtime": platform.get("edge_runtime"),
        "profile": report.settings.get("profile"),
        "iterations": report.settings.get("iterations"),
        "pipeline_fps": pipeline.get("fps"),
        "process_peak_rss_mib": report.process_peak_rss_mib,
        "detect": [entry(measurement) for measurement in report.by_stage("detect")],
        "classify": [entry(measurement) for measurement in report.by_stage("classify")],
    }


def publish_summary(
    summary: dict[str, Any],
    broker: str,
    topic: str,
    *,
    client_id: str,
    timeout_s: float = 10.0,
) -> None:
    """Publish ``summary`` retained with QoS 1 to ``topic`` and wait for the broker's acknowledgement.

    Raises the errors of ``publish_retained``.
    """
    publish_retained(broker, {topic: encode(summary)}, client_id=client_id, timeout_s=timeout_s)
    logger.info("published the benchmark summary retained to %s on %s", topic, broker)


def clear_retained(broker: str, topics: Sequence[str], *, client_id: str, timeout_s: float = 10.0) -> None:
    """Delete the retained message of each topic in ``topics`` (an empty retained payload deletes it in MQTT).

    Raises the errors of ``publish_retained``.
    """
    publish_retained(broker, {topic: b"" for topic in topics}, client_id=client_id, timeout_s=timeout_s)
    logger.info("cleared the retained messages of %s on %s", ", ".join(topics), broker)


def publish_retained(
    broker: str,
    payloads: Mapping[str, bytes],
    *,
    client_id: str,
    timeout_s: float = 10.0,
) -> None:
    """Publish each payload retained with QoS 1 to its topic on one connection, and wait for every acknowledgement.

    NOTE: the connection carries no user name, password or client
    certificate, and ``mqtts://`` trusts the system CA store only, so a
    broker that requires credentials refuses it.

    Raises:
        ConfigError: the broker URL is invalid.
        PublishError: the connection failed or was refused, or an
            acknowledgement did not come within ``timeout_s`` seconds.
    """
    try:
        scheme, host, port = parse_broker_url(broker)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    if scheme == "mqtts":
        client.tls_set_context(ssl.create_default_context())

    connected = threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        outcome["reason"] = reason_code
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise PublishError(f"cannot connect to broker {broker}: {exc}; check the URL and that the broker runs") from None

    client.loop_start()
    try:
        if not connected.wait(timeout_s):
            raise PublishError(f"broker {broker} did not answer the connection within {timeout_s:g} s")
        if outcome["reason"].is_failure:
            raise PublishError(f"broker {broker} refused the connection: {outcome['reason']}")

        sent = [(topic, client.publish(topic, payload, qos=1, retain=True)) for topic, payload in payloads.items()]
        for topic, info in sent:
            info.wait_for_publish(timeout_s)
            if not info.is_published():
                raise PublishError(f"broker {broker} did not acknowledge the message on {topic} within {timeout_s:g} s")
    finally:
        client.disconnect()
        client.loop_stop()
