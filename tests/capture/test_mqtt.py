"""MQTT publisher and its outbox file against a real Mosquitto broker on loopback."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.capture.mqtt import MqttPublisher
from edge_runtime.config import MqttConfig
from edge_runtime.errors import ConfigError, OutboxError

from tests.capture.conftest import Received, ends_offline
from tests.fixtures.mosquitto_tls import TLS_PASSWORD, TLS_USER


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
        settings(broker.url, reconnect_min_s=2, reconnect_max_s=2, outbox_max_messages=10), "outage-test"
    )
    publisher.start()
    for number in range(12):
        publisher.publish(publisher.topics.faces, f"faces-{number:02d}".encode())

    # The outbox file held faces-00..11 and dropped the two oldest; "online" waits in memory.
    assert publisher.connected is False
    assert publisher.dropped_total == 2
    assert publisher.lost_total == 2
    assert publisher.pending_total == 10
    assert publisher.queue_depth == 11

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
    # faces-0 and faces-1 wait in the outbox file for the next start, so nothing is lost.
    assert publisher.lost_total == 0
    assert publisher.pending_total == 2


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
    # The first wait is longer than reconnect_max_s, so the message bounds only the later ones.
    assert "later attempts wait at most 2 s (mqtt.reconnect_max_s)" in lines[0].getMessage()
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


@pytest.mark.parametrize("credentials", [{"password": "secret"}, {"password_file": "/etc/edge-runtime/pw"}])
def test_password_without_username_rejected(credentials) -> None:
    with pytest.raises(ValueError, match="mqtt.username is missing, but a password is set"):
        MqttConfig(broker="mqtt://127.0.0.1:1", **credentials)


# --------------------------------------------------------------------------
# The durable outbox, sequence numbers and message expiry


class PropertySubscriber:
    """A paho MQTT v5 subscriber that keeps each message's payload and message expiry interval."""

    def __init__(self, broker, topic_filter: str) -> None:
        self.received: list[tuple[bytes, object]] = []
        self._subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"expiry-{os.getpid()}", protocol=paho.MQTTv5)
        self._client.on_connect = lambda client, *args: client.subscribe(topic_filter, qos=1)
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port, keepalive=30)
        self._client.loop_start()
        assert self._subscribed.wait(timeout=10), f"subscription to {topic_filter} not acknowledged"

    def _on_message(self, client, userdata, message) -> None:
        expiry = getattr(message.properties, "MessageExpiryInterval", None)
        self.received.append((bytes(message.payload), expiry))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def wait_until(predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_publish_json_adds_increasing_seq(mosquitto_broker, subscribe) -> None:
    subscriber = subscribe(mosquitto_broker, "edge-runtime/seq-test/#")
    publisher = MqttPublisher(settings(mosquitto_broker.url), "seq-test")
    publisher.start()
    publisher.publish_json(publisher.topics.status, {"schema_version": 1, "device_id": "seq-test", "ts": "t"}, retain=True)
    for number in range(3):
        publisher.publish_json(publisher.topics.stats, {"schema_version": 1, "device_id": "seq-test", "ts": "t", "n": number})

    assert publisher.close() is True
    assert subscriber.wait_for(ends_offline)
    stats = [message.json() for message in subscriber.on("stats")]
    assert [document["n"] for document in stats] == [0, 1, 2]
    seqs = [document["seq"] for document in stats]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    assert list(stats[0]) == ["schema_version", "device_id", "ts", "seq", "n"]
    assert "seq" not in subscriber.on("status")[0].json()


def test_outbox_replayed_after_publisher_restart(mosquitto_factory, subscribe) -> None:
    broker = mosquitto_factory()
    first = MqttPublisher(settings(broker.url, flush_timeout_s=0.2), "replay-test")
    first.start()
    for number in range(3):
        first.publish_json(first.topics.faces, {"n": number})
    assert first.close() is False
    assert first.lost_total == 0
    assert first.pending_total == 3

    broker.start()
    subscriber = subscribe(broker, "edge-runtime/replay-test/#")
    second = MqttPublisher(settings(broker.url), "replay-test")
    assert second.pending_total == 3
    second.start()
    second.publish_json(second.topics.faces, {"n": 3})

    assert second.close() is True
    assert subscriber.wait_for(ends_offline)
    faces = [message.json() for message in subscriber.on("faces")]
    assert [document["n"] for document in faces] == [0, 1, 2, 3]
    seqs = [document["seq"] for document in faces]
    assert seqs == list(range(seqs[0], seqs[0] + 4))
    assert second.pending_total == 0
    assert second.delivered_count(second.topics.faces) == 4


def test_message_expiry_carries_time_left(mosquitto_factory) -> None:
    broker = mosquitto_factory()
    publisher = MqttPublisher(
        settings(broker.url, reconnect_min_s=2, reconnect_max_s=2, message_expiry_s=100), "expiry-test"
    )
    publisher.start()
    publisher.publish_json(publisher.topics.faces, {"n": 0})
    time.sleep(2.5)

    broker.start()
    subscriber = PropertySubscriber(broker, "edge-runtime/expiry-test/faces")
    try:
        assert wait_until(lambda: len(subscriber.received) >= 1), broker.log_text()
        publisher.publish_json(publisher.topics.faces, {"n": 1})
        assert wait_until(lambda: len(subscriber.received) >= 2)
    finally:
        publisher.close()
        subscriber.close()

    (old_payload, old_expiry), (new_payload, new_expiry) = subscriber.received
    assert json.loads(old_payload)["n"] == 0
    # Stored at least 2.5 s before it could be sent.
    assert old_expiry is not None
    assert 90 <= old_expiry <= 98
    assert json.loads(new_payload)["n"] == 1
    assert 99 <= new_expiry <= 100


def test_expired_message_never_sent(mosquitto_factory, subscribe) -> None:
    broker = mosquitto_factory()
    publisher = MqttPublisher(
        settings(broker.url, reconnect_min_s=2, reconnect_max_s=2, message_expiry_s=1), "expired-test"
    )
    publisher.start()
    publisher.publish_json(publisher.topics.faces, {"n": 0})
    time.sleep(1.5)

    broker.start()
    subscriber = subscribe(broker, "edge-runtime/expired-test/#")
    assert wait_until(lambda: publisher.connected)
    publisher.publish_json(publisher.topics.faces, {"n": 1})

    assert publisher.close() is True
    assert subscriber.wait_for(ends_offline)
    assert [message.json()["n"] for message in subscriber.on("faces")] == [1]
    assert publisher.expired_total == 1
    assert publisher.lost_total == 1
    assert publisher.pending_total == 0


def test_qos0_messages_leave_outbox_once_written(mosquitto_broker, subscribe) -> None:
    subscriber = subscribe(mosquitto_broker, "edge-runtime/qos0-test/#")
    publisher = MqttPublisher(settings(mosquitto_broker.url, qos=0), "qos0-test")
    publisher.start()
    for number in range(3):
        publisher.publish_json(publisher.topics.stats, {"n": number})

    assert publisher.flush(timeout_s=10) is True
    assert publisher.pending_total == 0
    assert publisher.close() is True
    assert subscriber.wait_for(ends_offline)
    assert [message.json()["n"] for message in subscriber.on("stats")] == [0, 1, 2]


def test_unusable_outbox_path_names_it(tmp_path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x\n", encoding="utf-8")
    config = MqttConfig(broker="mqtt://127.0.0.1:1", outbox_path=blocker / "outbox.sqlite")

    with pytest.raises(OutboxError, match=f"cannot create the outbox directory {blocker}"):
        MqttPublisher(config, "pi-7")


def test_outbox_path_defaults_to_state_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))

    publisher = MqttPublisher(MqttConfig(broker="mqtt://127.0.0.1:1"), "pi-7")
    publisher.close()

    assert publisher.outbox.path == tmp_path / "outbox.sqlite"
    assert (tmp_path / "outbox.sqlite").is_file()


def test_queue_max_read_as_outbox_max_messages() -> None:
    assert MqttConfig(queue_max=25).outbox_max_messages == 25

    with pytest.raises(ValueError, match="queue_max is the old name of outbox_max_messages"):
        MqttConfig(queue_max=25, outbox_max_messages=30)


# --------------------------------------------------------------------------
# TLS and credentials, against a broker that requires a client certificate and a password


def tls_settings(broker, certificates, **overrides) -> MqttConfig:
    values = {
        "tls": {"ca_file": certificates.ca_cert, "cert_file": certificates.client_cert, "key_file": certificates.client_key},
        "username": TLS_USER,
    }
    values.update(overrides)
    return settings(broker.tls_url, **values)


@pytest.mark.parametrize("password_source", ["password_file", "password"])
def test_tls_with_client_certificate_and_password(
    mosquitto_tls_broker, tls_certificates, subscribe, tmp_path, password_source
) -> None:
    if password_source == "password_file":
        password_file = tmp_path / "mqtt-password"
        password_file.write_text(TLS_PASSWORD + "\n", encoding="utf-8")
        credentials = {"password_file": password_file}
    else:
        credentials = {"password": TLS_PASSWORD}
    device_id = f"tls-{password_source.replace('_', '-')}"
    subscriber = subscribe(mosquitto_tls_broker, f"edge-runtime/{device_id}/#")
    publisher = MqttPublisher(tls_settings(mosquitto_tls_broker, tls_certificates, **credentials), device_id)
    publisher.start()
    publisher.publish_json(publisher.topics.faces, {"n": 0})

    assert publisher.close() is True
    assert subscriber.wait_for(ends_offline)
    assert [message.json()["n"] for message in subscriber.on("faces")] == [0]
    assert publisher.pending_total == 0
    assert "New client connected from 127.0.0.1:" in mosquitto_tls_broker.log_text()
    assert f"as edge-runtime-{device_id}" in mosquitto_tls_broker.log_text()


def test_tls_wrong_password_keeps_messages(mosquitto_tls_broker, tls_certificates, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="edge_runtime.capture.mqtt")
    publisher = MqttPublisher(
        tls_settings(mosquitto_tls_broker, tls_certificates, password="wrong", flush_timeout_s=0.5), "tls-wrong-password"
    )
    publisher.start()
    publisher.publish_json(publisher.topics.faces, {"n": 0})

    assert wait_until(lambda: any("rejected the connection" in record.getMessage() for record in caplog.records))
    assert publisher.connected is False
    assert publisher.close() is False
    # The broker never accepted the message, so it waits in the outbox for a start with the right password.
    assert publisher.pending_total == 1
    assert publisher.lost_total == 0
    rejections = [record.getMessage() for record in caplog.records if "rejected the connection" in record.getMessage()]
    assert mosquitto_tls_broker.tls_url in rejections[0]
    assert "wrong" not in " ".join(record.getMessage() for record in caplog.records)


def test_tls_without_client_certificate_never_connects(mosquitto_tls_broker, tls_certificates, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="edge_runtime.capture.mqtt")
    config = tls_settings(
        mosquitto_tls_broker, tls_certificates, tls={"ca_file": tls_certificates.ca_cert}, password=TLS_PASSWORD,
        flush_timeout_s=0.5,
    )
    publisher = MqttPublisher(config, "tls-no-client-cert")
    publisher.start()
    publisher.publish_json(publisher.topics.faces, {"n": 0})

    assert wait_until(lambda: any("cannot connect to broker" in record.getMessage() for record in caplog.records))
    assert publisher.connected is False
    assert publisher.close() is False
    assert publisher.pending_total == 1


def test_tls_untrusted_broker_never_connects(mosquitto_tls_broker, tls_certificates, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="edge_runtime.capture.mqtt")
    # The client's own certificate is no CA of the broker's certificate, so verification fails.
    config = tls_settings(
        mosquitto_tls_broker, tls_certificates, password=TLS_PASSWORD, flush_timeout_s=0.5,
        tls={"ca_file": tls_certificates.client_cert, "cert_file": tls_certificates.client_cert,
             "key_file": tls_certificates.client_key},
    )
    publisher = MqttPublisher(config, "tls-untrusted")
    publisher.start()

    assert wait_until(lambda: any("cannot connect to broker" in record.getMessage() for record in caplog.records))
    assert publisher.connected is False
    assert publisher.close() is False


def test_tls_missing_ca_file_names_the_key(tmp_path) -> None:
    missing = tmp_path / "absent-ca.pem"
    config = MqttConfig(broker="mqtts://127.0.0.1:1", tls={"ca_file": missing})

    with pytest.raises(ConfigError, match="mqtt.tls files cannot be loaded") as raised:
        MqttPublisher(config, "pi-7")
    assert str(missing) in str(raised.value)


def test_tls_files_with_plain_broker_warn(tls_certificates, caplog) -> None:
    config = MqttConfig(broker="mqtt://127.0.0.1:1", tls={"ca_file": tls_certificates.ca_cert})

    publisher = MqttPublisher(config, "pi-7")
    publisher.close()

    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("use an mqtts:// URL for TLS" in message for message in warnings)
