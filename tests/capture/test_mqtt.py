"""MQTT publisher against a real Mosquitto broker on loopback."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from edge_runtime.capture.mqtt import MqttPublisher
from edge_runtime.config import MqttConfig
from edge_runtime.errors import ConfigError

from tests.capture.conftest import Received


def settings(broker_url: str, **overrides) -> MqttConfig:
    values = {"broker": broker_url, "keepalive_s": 5, "reconnect_min_s": 1, "reconnect_max_s": 2, "flush_timeout_s": 5}
    values.update(overrides)
    return MqttConfig(**values)


def payloads(messages: list[Received]) -> list[bytes]:
    return [message.payload for message in messages]


def test_publisher_online_then_offline_on_close(mosquitto_broker, subscribe) -> None:
    subscriber = subscribe(mosquitto_broker, "edge-runtime/close-test/#")
    publisher = MqttPublisher(settings(mosquitto_broker.url), "close-test")
    publisher.start()

    for number in range(3):
        publisher.publish(publisher.topics.faces, f"faces-{number}".encode())
    delivered = publisher.close()

    assert delivered is True
    assert subscriber.wait_for(lambda messages: any(m.payload == b"offline" for m in messages))
    assert payloads(subscriber.on("availability")) == [b"online", b"offline"]
    assert payloads(subscriber.on("faces")) == [b"faces-0", b"faces-1", b"faces-2"]
    leaves = [message.leaf for message in subscriber.messages]
    assert leaves.index("faces") > leaves.index("availability")
    assert leaves[-1] == "availability"


def test_availability_is_retained(mosquitto_broker, subscribe) -> None:
    publisher = MqttPublisher(settings(mosquitto_broker.url), "retain-test")
    publisher.start()
    assert publisher.flush(timeout_s=10)

    late = subscribe(mosquitto_broker, "edge-runtime/retain-test/availability")
    assert late.wait_for(lambda messages: len(messages) >= 1)
    assert late.messages[0].payload == b"online"
    assert late.messages[0].retain is True

    publisher.close()


def test_last_will_after_kill(mosquitto_broker, subscribe) -> None:
    subscriber = subscribe(mosquitto_broker, "edge-runtime/will-test/availability")
    script = textwrap.dedent(
        f"""
        import sys, time
        from edge_runtime.capture.mqtt import MqttPublisher
        from edge_runtime.config import MqttConfig
        publisher = MqttPublisher(MqttConfig(broker={mosquitto_broker.url!r}, keepalive_s=5), "will-test")
        publisher.start()
        publisher.flush(timeout_s=10)
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        assert subscriber.wait_for(lambda messages: payloads(messages) == [b"online"])

        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

        assert subscriber.wait_for(lambda messages: payloads(messages)[-1:] == [b"offline"], timeout=15), (
            payloads(subscriber.messages)
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()

    late = subscribe(mosquitto_broker, "edge-runtime/will-test/availability")
    assert late.wait_for(lambda messages: len(messages) >= 1)
    assert late.messages[0].payload == b"offline"
    assert late.messages[0].retain is True


def test_queued_messages_arrive_in_order_after_broker_starts(mosquitto_factory, subscribe) -> None:
    broker = mosquitto_factory()
    # The first reconnect waits reconnect_min_s, which leaves time to
    # subscribe between the broker start and the publisher's connect.
    publisher = MqttPublisher(
        settings(broker.url, reconnect_min_s=2, reconnect_max_s=2, queue_max=10), "outage-test"
    )
    publisher.start()
    for number in range(12):
        publisher.publish(publisher.topics.faces, f"faces-{number:02d}".encode())

    # The outbox held the retained "online" and faces-00..11; the three oldest were dropped.
    assert publisher.connected is False
    assert publisher.dropped_total == 3
    assert publisher.queue_depth == 10

    time.sleep(0.5)
    broker.start()
    subscriber = subscribe(broker, "edge-runtime/outage-test/#")
    assert publisher.connected is False, "the publisher connected before the test subscribed"

    expected = [f"faces-{number:02d}".encode() for number in range(2, 12)]
    arrived = subscriber.wait_for(lambda messages: len([m for m in messages if m.leaf == "faces"]) >= 10, timeout=20)
    assert arrived, broker.log_text()
    assert payloads(subscriber.on("faces")) == expected
    assert payloads(subscriber.on("availability"))[0] == b"online"
    assert publisher.close() is True


def test_messages_survive_broker_restart(mosquitto_factory, subscribe) -> None:
    broker = mosquitto_factory().start()
    publisher = MqttPublisher(settings(broker.url, reconnect_min_s=3, reconnect_max_s=3), "restart-test")
    publisher.start()
    assert publisher.flush(timeout_s=10)

    broker.process.kill()
    broker.process.wait()
    deadline = time.monotonic() + 10
    while publisher.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert publisher.connected is False

    for number in range(5):
        publisher.publish(publisher.topics.stats, f"stats-{number}".encode())
    broker.start()
    subscriber = subscribe(broker, "edge-runtime/restart-test/#")
    assert publisher.connected is False, "the publisher reconnected before the test subscribed"

    assert subscriber.wait_for(lambda messages: len([m for m in messages if m.leaf == "stats"]) >= 5, timeout=20)
    assert payloads(subscriber.on("stats")) == [f"stats-{number}".encode() for number in range(5)]
    assert payloads(subscriber.on("availability")) == [b"online"]
    publisher.close()


def test_close_without_broker_is_bounded(mosquitto_factory) -> None:
    broker = mosquitto_factory()
    publisher = MqttPublisher(settings(broker.url, flush_timeout_s=0.5), "nobroker-test")
    publisher.start()
    publisher.publish(publisher.topics.faces, b"faces-0")
    publisher.publish(publisher.topics.faces, b"faces-1")

    started = time.monotonic()
    delivered = publisher.close()

    assert delivered is False
    assert time.monotonic() - started < 5
    assert publisher.delivered_count(publisher.topics.faces) == 0
    # online, faces-0, faces-1 and offline never left the outbox.
    assert publisher.lost_total == 4


def test_delivered_count_per_topic(mosquitto_broker, subscribe) -> None:
    subscriber = subscribe(mosquitto_broker, "edge-runtime/count-test/#")
    publisher = MqttPublisher(settings(mosquitto_broker.url), "count-test")
    publisher.start()
    for number in range(3):
        publisher.publish(publisher.topics.faces, f"faces-{number}".encode())
    publisher.publish(publisher.topics.stats, b"stats-0", qos=0)

    assert publisher.close() is True
    assert subscriber.wait_for(lambda messages: len(messages) >= 6)
    assert publisher.delivered_count(publisher.topics.faces) == 3
    assert publisher.delivered_count(publisher.topics.stats) == 1
    assert publisher.delivered_count(publisher.topics.availability) == 2
    assert publisher.lost_total == 0


def _failure_lines(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """Return the publisher's own lines about failed connection attempts."""
    return [
        record for record in records
        if record.name == "edge_runtime.capture.mqtt" and "attempt" in record.getMessage()
    ]


def test_unreachable_broker_logs_one_line_per_backoff_step(mosquitto_factory, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_runtime.capture.mqtt")
    broker = mosquitto_factory()
    publisher = MqttPublisher(settings(broker.url, reconnect_min_s=1, reconnect_max_s=2), "backoff-test")

    publisher.start()
    # paho logs "Connection failed" once per failed attempt; wait for the third.
    # The attempts come at about 0 s, 3 s (1 s + 2 s at the first failure) and 5 s.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        failures = [
            record for record in caplog.records
            if record.name.endswith(".paho") and "Connection failed" in record.getMessage()
        ]
        if len(failures) >= 3:
            break
        time.sleep(0.1)
    publisher.close(timeout_s=0)

    assert len(failures) >= 3, [record.getMessage() for record in caplog.records]
    paho_records = [record for record in caplog.records if record.name == "edge_runtime.capture.mqtt.paho"]
    assert paho_records
    assert {record.levelno for record in paho_records} == {logging.DEBUG}

    lines = _failure_lines(caplog.records)
    assert len(lines) == 2, [record.getMessage() for record in lines]
    assert lines[0].levelno == logging.WARNING
    assert "attempt 1" in lines[0].getMessage()
    assert "next attempt in 3 s" in lines[0].getMessage()
    assert lines[1].levelno == logging.INFO
    assert "attempt 2" in lines[1].getMessage()
    assert "next attempt in 2 s" in lines[1].getMessage()
    # The announced delays are the ones paho waited: 3 s, then 2 s.
    first_gap_s = failures[1].created - failures[0].created
    second_gap_s = failures[2].created - failures[1].created
    assert 2.8 <= first_gap_s <= 4.5, first_gap_s
    assert 1.8 <= second_gap_s <= 3.5, second_gap_s


def test_client_id_derives_from_device_id() -> None:
    publisher = MqttPublisher(MqttConfig(broker="mqtt://127.0.0.1:1"), "pi-7")

    assert publisher.client_id == "edge-runtime-pi-7"
    assert publisher.topics.availability == "edge-runtime/pi-7/availability"


def test_missing_password_file_names_the_key(tmp_path) -> None:
    config = MqttConfig(broker="mqtt://127.0.0.1:1", username="edge", password_file=tmp_path / "missing")

    with pytest.raises(ConfigError, match="mqtt.password_file"):
        MqttPublisher(config, "pi-7")
