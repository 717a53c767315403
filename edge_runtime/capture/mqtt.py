"""MQTT publisher with an in-memory outbox that survives broker outages.

The publisher uses paho-mqtt 2.x with MQTT v5. Its client id is
``edge-runtime-<device_id>``. It connects with clean start false and a
session expiry interval, so the broker keeps the QoS 1 state across short
drops, and paho reconnects with exponential back-off. This module logs the
failed connection attempts, at most one line per back-off step (see
``_on_connect_fail``), and paho's own log messages go to the
``edge_runtime.capture.mqtt.paho`` logger at DEBUG. The last will
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

# Seconds between two "still unreachable" lines once the reconnect delay
# has reached its maximum.
UNREACHABLE_LOG_INTERVAL_S = 300.0


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
        # paho takes whole seconds for its reconnect delays.
        self._reconnect_min_s = max(1, round(settings.reconnect_min_s))
        self._reconnect_max_s = max(self._reconnect_min_s, round(settings.reconnect_max_s))
        self._client = self._build_client()

        self._condition = threading.Condition()
        self._outbox: collections.deque[OutgoingMessage] = collections.deque()
        self._retained: dict[str, OutgoingMessage] = {}
        # Messages handed to paho and not yet acknowledged, by message id.
        self._pending: dict[int, OutgoingMessage] = {}
        # Messages taken from the outbox whose publish() call has not returned yet.
        self._handing_over = 0
        # Acknowledgements that arrived before publish() returned: message id -> accepted.
        self._acknowledged_early: dict[int, bool] = {}
        self._resend_mids: set[int] = set()
        self._connected = False
        self._ever_connected = False
        self._unreachable_warned = False
        # Failed connection attempts since the last accepted connection (or the start).
        self._failed_attempts = 0
        self._last_unreachable_log = 0.0
        self._logged_delay_s: Optional[float] = None
        self._closing = False
        self._stopped = False
        self._dropped = 0
        # Messages lost otherwise: rejected by the broker, QoS 0 messages cut off
        # by a connection drop, and whatever the shutdown flush could not deliver.
        self._lost = 0
        self._delivered_by_topic: collections.Counter[str] = collections.Counter()
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

    @property
    def lost_total(self) -> int:
        """Messages that never reached the broker.

        They were dropped from a full outbox, rejected by the broker, cut off
        by a connection drop (QoS 0), or still undelivered when ``close()``
        gave up.
        """
        with self._condition:
            return self._dropped + self._lost

    def delivered_count(self, topic: str) -> int:
        """Return how many messages on ``topic`` reached the broker.

        A QoS 1 or 2 message counts once the broker acknowledged it, a QoS 0
        message once paho wrote it to the socket.
        """
        with self._condition:
            return self._delivered_by_topic[topic]

    def start(self) -> None:
        """Queue the retained ``online`` and start connecting in the background."""
        self._set_retained(OutgoingMessage(self.topics.availability, AVAILABILITY_ONLINE, 1, True))

        logger.info("connecting to broker %s as %s", self.settings.broker, self.client_id)
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
            undelivered = self.queue_depth
            with self._condition:
                self._lost += undelivered
            logger.warning(
                "%d messages not delivered to broker %s within %.1f s; they are lost",
                undelivered,
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
        # paho logs every failed reconnect at ERROR ("Client is not connected"),
        # so its messages go to a child logger at DEBUG and _on_connect_fail
        # logs the failures instead.
        client.on_log = _log_paho_message
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.reconnect_delay_set(min_delay=self._reconnect_min_s, max_delay=self._reconnect_max_s)
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
                        if self._acknowledged_early.pop(info.mid):
                            self._delivered_by_topic[message.topic] += 1
                        else:
                            self._lost += 1
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
            self._failed_attempts = 0
            self._logged_delay_s = None
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
        """Log a failed connection attempt: WARNING for the first, then one line per back-off step.

        The first failure after the start is a WARNING; a drop of an
        established connection has its own WARNING in ``_on_disconnect``.
        Later failures are logged at INFO when the reconnect delay has grown
        since the last line, and at most every ``UNREACHABLE_LOG_INTERVAL_S``
        seconds once the delay is at its maximum.
        """
        now = time.monotonic()
        with self._condition:
            self._failed_attempts += 1
            attempt = self._failed_attempts
            first = not self._unreachable_warned
            self._unreachable_warned = True
            queued = len(self._outbox)
            next_delay_s = self._next_reconnect_delay_s(attempt, dropped=self._ever_connected)
            log_it = (
                first
                or next_delay_s != self._logged_delay_s
                or now - self._last_unreachable_log >= UNREACHABLE_LOG_INTERVAL_S
            )
            if log_it:
                self._logged_delay_s = next_delay_s
                self._last_unreachable_log = now

        if first:
            logger.warning(
                "cannot connect to broker %s (attempt %d); next attempt in %.0f s, back-off up to %d s, "
                "keeping up to %d messages in memory (%d queued)",
                self.settings.broker,
                attempt,
                next_delay_s,
                self._reconnect_max_s,
                self.settings.queue_max,
                queued,
            )
        elif log_it:
            logger.info(
                "broker %s still unreachable (attempt %d); next attempt in %.0f s (%d messages queued)",
                self.settings.broker,
                attempt,
                next_delay_s,
                queued,
            )

    def _next_reconnect_delay_s(self, attempt: int, *, dropped: bool) -> float:
        """Return the seconds paho waits after failed attempt ``attempt`` (1-based) before the next one.

        paho-mqtt 2.x (``Client.loop_forever``) doubles its delay from
        ``reconnect_min`` up to ``reconnect_max`` before every attempt, and
        resets it on an accepted connection. When the very first connection
        fails it waits twice, ``reconnect_min`` and then the doubled delay.
        """
        delay = min(self._reconnect_min_s * 2**min(attempt, 32), self._reconnect_max_s)
        if attempt == 1 and not dropped:
            delay += self._reconnect_min_s
        return float(delay)

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
                self._lost += 1
            self._condition.notify_all()

        if closing:
            logger.info("disconnected from broker %s", self.settings.broker)
        elif was_connected:
            logger.warning(
                "disconnected from broker %s (%s); reconnecting with back-off", self.settings.broker, reason_code
            )

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        rejected = bool(getattr(reason_code, "is_failure", False))
        if rejected:
            logger.warning("broker %s rejected message %d: %s", self.settings.broker, mid, reason_code)
        with self._condition:
            message = self._pending.pop(mid, None)
            if message is None:
                self._acknowledged_early[mid] = not rejected
            elif rejected:
                self._lost += 1
            else:
                self._delivered_by_topic[message.topic] += 1
            self._resend_mids.discard(mid)
            self._condition.notify_all()


_paho_logger = logging.getLogger(f"{__name__}.paho")


def _log_paho_message(client: paho.Client, userdata: Any, level: int, message: str) -> None:
    """Log one of paho's own messages at DEBUG, whatever level paho gave it."""
    _paho_logger.debug("%s", message)
