"""MQTT publisher with an in-memory outbox that survives broker outages.

The publisher uses paho-mqtt 2.x with MQTT v5. Its client id is
``edge-runtime-<device_id>``. It connects with clean start false and a
session expiry interval, so the broker keeps the QoS 1 state across short
drops, and paho reconnects with exponential back-off. The last will
publishes a retained ``offline`` to the availability topic. After every
connect the publisher sends a retained ``online`` there and repeats the
retained status.

Messages first go into a bounded outbox (a deque). A single sender thread
hands them to paho, in order, only while the client is connected, with at
most ``MAX_INFLIGHT`` unacknowledged at a time. When the outbox is full
the oldest message is dropped and counted. After a reconnect, the messages
that paho resends from the previous connection are acknowledged before any
newer message is handed over, so subscribers see them in publish order.

paho 2.x calls ``on_publish`` while it holds its own message lock. This
module therefore never calls into paho while it holds its own lock, which
rules out a lock-order deadlock.
"""

from __future__ import annotations

import collections
import logging
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_runtime.capture.messages import AVAILABILITY_OFFLINE, AVAILABILITY_ONLINE, Topics, encode
from edge_runtime.config import MqttConfig, parse_broker_url
from edge_runtime.errors import ConfigError

logger = logging.getLogger(__name__)

MAX_INFLIGHT = 20
DROP_WARNING_INTERVAL_S = 60.0


@dataclass(frozen=True)
class OutgoingMessage:
    """One message waiting in the outbox."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttPublisher:
    """Publish messages of one device to an MQTT broker without ever blocking the caller.

    Call ``start()`` once, then ``publish()``/``publish_json()`` from any
    thread, and ``close()`` at the end. ``start()`` returns at once even
    when the broker is unreachable; messages wait in the outbox until a
    connection is up.
    """

    def __init__(self, settings: MqttConfig, device_id: Optional[str] = None) -> None:
        self.settings = settings
        self.device_id = device_id or settings.resolved_device_id
        self.topics = Topics(settings.prefix, self.device_id)
        self.client_id = f"edge-runtime-{self.device_id}"
        self._scheme, self._host, self._port = parse_broker_url(settings.broker)
        self._client = self._build_client()

        self._condition = threading.Condition()
        self._outbox: collections.deque[OutgoingMessage] = collections.deque()
        self._retained: dict[str, OutgoingMessage] = {}
        # Messages handed to paho and not yet acknowledged, by message id.
        self._pending: dict[int, OutgoingMessage] = {}
        # Messages taken from the outbox whose publish() call has not returned yet.
        self._handing_over = 0
        self._acknowledged_early: set[int] = set()
        self._resend_mids: set[int] = set()
        self._connected = False
        self._ever_connected = False
        self._unreachable_warned = False
        self._closing = False
        self._stopped = False
        self._dropped = 0
        self._last_drop_warning = 0.0
        self._sender: Optional[threading.Thread] = None

    @property
    def connected(self) -> bool:
        with self._condition:
            return self._connected

    @property
    def queue_depth(self) -> int:
        """Messages in the outbox plus those handed to paho and not yet acknowledged."""
        with self._condition:
            return len(self._outbox) + self._handing_over + len(self._pending)

    @property
    def dropped_total(self) -> int:
        """Messages dropped because the outbox was full."""
        with self._condition:
            return self._dropped

    def start(self) -> None:
        """Queue the retained ``online`` and start connecting in the background."""
        self._set_retained(OutgoingMessage(self.topics.availability, AVAILABILITY_ONLINE, 1, True))

        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.settings.session_expiry_s
        self._client.connect_async(
            self._host,
            self._port,
            keepalive=self.settings.keepalive_s,
            clean_start=False,
            properties=properties,
        )
        self._client.loop_start()

        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._sender.start()
        logger.info("connecting to broker %s as %s", self.settings.broker, self.client_id)

    def publish(self, topic: str, payload: bytes, *, qos: Optional[int] = None, retain: bool = False) -> None:
        """Queue one message; ``qos`` defaults to the configured QoS.

        A retained message is also repeated after every reconnect.
        """
        message = OutgoingMessage(topic, bytes(payload), self.settings.qos if qos is None else qos, retain)
        if retain:
            self._set_retained(message)
        else:
            with self._condition:
                self._enqueue(message)

    def publish_json(self, topic: str, message: Mapping[str, Any], *, retain: bool = False) -> None:
        """Queue a JSON message (see ``messages.encode``)."""
        self.publish(topic, encode(message), qos=1 if retain else None, retain=retain)

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued message is acknowledged; return False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while self._outbox or self._handing_over or self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(timeout=min(remaining, 0.5))
        return True

    def close(self, timeout_s: Optional[float] = None) -> bool:
        """Publish a retained ``offline``, flush for at most ``timeout_s`` seconds and disconnect.

        Returns True when every message reached the broker. The default
        timeout is ``flush_timeout_s`` from the settings.
        """
        if self._sender is None:
            return True
        timeout_s = self.settings.flush_timeout_s if timeout_s is None else timeout_s

        with self._condition:
            self._closing = True
        self._set_retained(OutgoingMessage(self.topics.availability, AVAILABILITY_OFFLINE, 1, True))

        delivered = self.flush(timeout_s)
        if not delivered:
            logger.warning(
                "%d messages not delivered to broker %s within %.1f s; they are lost",
                self.queue_depth,
                self.settings.broker,
                timeout_s,
            )

        self._client.disconnect()
        self._client.loop_stop()
        with self._condition:
            self._stopped = True
            self._connected = False
            self._condition.notify_all()
        self._sender.join(timeout=5.0)
        self._sender = None
        logger.info("MQTT publisher closed (%s)", "all messages delivered" if delivered else "messages lost")
        return delivered

    def _build_client(self) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
        )
        client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.reconnect_delay_set(
            min_delay=max(1, round(self.settings.reconnect_min_s)),
            max_delay=max(1, round(self.settings.reconnect_max_s)),
        )
        client.will_set(self.topics.availability, AVAILABILITY_OFFLINE, qos=1, retain=True)

        if self.settings.username is not None:
            client.username_pw_set(self.settings.username, self._read_password())
        if self._scheme == "mqtts":
            tls = self.settings.tls
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            if tls.insecure:
                client.tls_insecure_set(True)

        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _read_password(self) -> Optional[str]:
        path = self.settings.password_file
        if path is None:
            return None
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"mqtt.password_file {path} cannot be read ({exc.strerror}); create it or fix the path"
            ) from None

    def _set_retained(self, message: OutgoingMessage) -> None:
        with self._condition:
            self._retained[message.topic] = message
            self._enqueue(message)

    def _enqueue(self, message: OutgoingMessage) -> None:
        """Append to the outbox, dropping the oldest message when full; needs the lock."""
        if len(self._outbox) >= self.settings.queue_max:
            dropped = self._outbox.popleft()
            self._dropped += 1
            now = time.monotonic()
            if self._dropped == 1 or now - self._last_drop_warning >= DROP_WARNING_INTERVAL_S:
                self._last_drop_warning = now
                logger.warning(
                    "MQTT outbox full (%d messages); dropped the oldest, for %s (%d dropped so far)",
                    self.settings.queue_max,
                    dropped.topic,
                    self._dropped,
                )
        self._outbox.append(message)
        self._condition.notify_all()

    def _ready_to_send(self) -> bool:
        return (
            self._connected
            and not self._resend_mids
            and bool(self._outbox)
            and len(self._pending) < MAX_INFLIGHT
        )

    def _send_loop(self) -> None:
        while True:
            with self._condition:
                while not self._stopped and not self._ready_to_send():
                    self._condition.wait(timeout=1.0)
                if self._stopped:
                    return
                message = self._outbox.popleft()
                self._handing_over += 1

            info = self._client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)

            with self._condition:
                self._handing_over -= 1
                if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
                    info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and message.qos > 0
                ):
                    # paho keeps a QoS 1/2 message that met a dropped connection and
                    # resends it after the reconnect, so it counts as handed over.
                    if info.mid in self._acknowledged_early:
                        self._acknowledged_early.discard(info.mid)
                    else:
                        self._pending[info.mid] = message
                else:
                    logger.debug("publish to %s returned %s; requeueing it", message.topic, info.rc)
                    self._outbox.appendleft(message)
                    self._condition.wait(timeout=0.2)
                self._condition.notify_all()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            logger.warning("broker %s rejected the connection: %s", self.settings.broker, reason_code)
            return

        with self._condition:
            self._connected = True
            self._ever_connected = True
            self._unreachable_warned = False
            self._resend_mids = {mid for mid, message in self._pending.items() if message.qos > 0}
            if not self._closing:
                self._replay_retained()
            self._condition.notify_all()
        logger.info(
            "connected to broker %s (session present: %s)", self.settings.broker, getattr(flags, "session_present", None)
        )

    def _replay_retained(self) -> None:
        """Put the retained messages at the head of the outbox, replacing queued copies; needs the lock.

        A retained message that paho is about to resend from the previous
        connection is not queued a second time.
        """
        topics = set(self._retained)
        remaining = [message for message in self._outbox if not (message.retain and message.topic in topics)]
        self._outbox = collections.deque(remaining)

        resending = {self._pending[mid] for mid in self._resend_mids}
        replay = [message for message in self._retained.values() if message not in resending]
        replay.sort(key=lambda message: message.topic != self.topics.availability)
        for message in reversed(replay):
            self._outbox.appendleft(message)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        with self._condition:
            first = not self._unreachable_warned
            self._unreachable_warned = True
            queued = len(self._outbox)
        if first:
            logger.warning(
                "cannot connect to broker %s; retrying with back-off up to %.0f s and keeping up to %d "
                "messages in memory (%d queued)",
                self.settings.broker,
                self.settings.reconnect_max_s,
                self.settings.queue_max,
                queued,
            )
        else:
            logger.debug("connection attempt to broker %s failed", self.settings.broker)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        with self._condition:
            was_connected = self._connected
            self._connected = False
            closing = self._closing
            if was_connected:
                self._unreachable_warned = True
            # A QoS 0 message that was not written before the drop is gone.
            for mid in [mid for mid, message in self._pending.items() if message.qos == 0]:
                del self._pending[mid]
            self._condition.notify_all()

        if closing:
            logger.info("disconnected from broker %s", self.settings.broker)
        elif was_connected:
            logger.warning(
                "disconnected from broker %s (%s); reconnecting with back-off", self.settings.broker, reason_code
            )

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            logger.warning("broker %s rejected message %d: %s", self.settings.broker, mid, reason_code)
        with self._condition:
            if self._pending.pop(mid, None) is None:
                self._acknowledged_early.add(mid)
            self._resend_mids.discard(mid)
            self._condition.notify_all()
