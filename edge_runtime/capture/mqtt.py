"""MQTT publisher with a durable outbox that survives broker outages, crashes and restarts.

The publisher uses paho-mqtt 2.x with MQTT v5. Its client id is
``edge-runtime-<device_id>``. The first connection of a process uses
clean start, because a new paho client cannot complete the QoS 2 handshakes
of a killed one and reused packet ids would collide with them. Reconnects
use clean start false and a session expiry interval, so the broker keeps
the QoS state across short drops, and paho reconnects with exponential
back-off. This module logs the
failed connection attempts, with the broker's reason when there is one,
at most one line per back-off step (see ``_record_failed_attempt``), and
paho's own log messages go to the
``edge_runtime.capture.mqtt.paho`` logger at DEBUG. The last will
publishes a retained ``offline`` to the availability topic. After every
connect the publisher sends a retained ``online`` there and repeats the
retained status.

Every non-retained message (faces, stats) is written to the outbox file
(``edge_runtime.capture.outbox``, SQLite) before paho sees it, and deleted
only when the broker acknowledged it: PUBACK for QoS 1, PUBCOMP for QoS 2,
and for QoS 0 the moment paho wrote it to the socket. Messages left in the
file by a crash or an unreachable broker are sent first after the next
start, in the order they were stored. ``publish_json`` adds the device's
sequence number ``seq`` to each non-retained message, so subscribers can
drop the copies that at-least-once delivery produces: a message whose
acknowledgement was lost in a crash or a connection drop is sent again
with the same ``seq``. The retained ``online``, ``offline`` and ``status``
stay in memory, because every start and every reconnect publishes them
again.

A single sender thread hands messages to paho, in order, only while the
client is connected, with at most ``MAX_INFLIGHT`` unacknowledged at a
time. After a reconnect, the messages that paho resends from the previous
connection are acknowledged before any newer message is handed over, so
subscribers see them in publish order. Each outbox message carries the
MQTT v5 message expiry interval that it has left (``mqtt.message_expiry_s``
from the time it was stored); an expired message is deleted unsent.

Locks: paho 2.x calls ``on_publish`` while it holds its own message lock.
This module therefore never calls into paho while it holds its own lock
(``_condition``), which rules out a lock-order deadlock. The outbox has a
lock of its own that is taken last and never held while calling out, so
the order is paho, then ``_condition``, then the outbox. SQLite writes
(with their fsync) run on the caller's thread (``publish``) and on the
sender thread, never on paho's network thread.
"""

from __future__ import annotations

import collections
import logging
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_runtime.capture.messages import AVAILABILITY_OFFLINE, AVAILABILITY_ONLINE, Topics, encode, with_seq
from edge_runtime.capture.outbox import Outbox, StoredMessage, default_outbox_path
from edge_runtime.config import MqttConfig, parse_broker_url
from edge_runtime.errors import ConfigError

logger = logging.getLogger(__name__)

MAX_INFLIGHT = 20

# Seconds between two "still unreachable" lines once the reconnect delay
# has reached its maximum.
UNREACHABLE_LOG_INTERVAL_S = 300.0


@dataclass(frozen=True)
class OutgoingMessage:
    """A retained message waiting in memory."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


# A message handed to paho: a retained one from memory, or one from the outbox file.
HandedMessage = Union[OutgoingMessage, StoredMessage]


class MqttPublisher:
    """Publish messages of one device to an MQTT broker without ever waiting for the broker.

    Call ``start()`` once, then ``publish()``/``publish_json()`` from any
    thread, and ``close()`` at the end. ``start()`` returns at once even
    when the broker is unreachable; messages wait in the outbox file until
    a connection is up. ``publish()`` writes the outbox file with an fsync,
    so it takes as long as one small synchronous write.

    Raises OutboxError from the constructor when the outbox file cannot be
    opened, with its path and the fix.
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
        self.outbox = Outbox(
            settings.outbox_path or default_outbox_path(),
            self.device_id,
            max_messages=settings.outbox_max_messages,
            max_bytes=settings.outbox_max_bytes,
        )

        self._condition = threading.Condition()
        # Retained messages waiting to be handed to paho, and the last one per topic.
        self._retained_queue: collections.deque[OutgoingMessage] = collections.deque()
        self._retained: dict[str, OutgoingMessage] = {}
        # QoS 0 outbox messages that a connection drop cut off; they go before newer outbox messages.
        self._requeued: collections.deque[StoredMessage] = collections.deque()
        # Messages handed to paho and not yet acknowledged, by message id.
        self._pending: dict[int, HandedMessage] = {}
        # Messages taken for handing over whose publish() call has not returned yet.
        self._handing_over = 0
        # Acknowledgements that arrived before publish() returned: message id -> accepted.
        self._acknowledged_early: dict[int, bool] = {}
        # Outbox rows acknowledged by the broker, deleted by the sender thread in batches.
        self._acknowledged_rows: list[int] = []
        self._resend_mids: set[int] = set()
        self._connected = False
        self._ever_connected = False
        self._unreachable_warned = False
        # Failed connection attempts since the last accepted connection (or the start).
        self._failed_attempts = 0
        # Reason of the last failed attempt logged at WARNING, and the broker's rejection of the current attempt.
        self._warned_failure_detail = ""
        self._connect_rejection: Optional[str] = None
        self._last_unreachable_log = 0.0
        self._logged_delay_s: Optional[float] = None
        self._closing = False
        self._stopped = False
        self._rejected = 0
        self._delivered_by_topic: collections.Counter[str] = collections.Counter()
        self._sender: Optional[threading.Thread] = None

    @property
    def connected(self) -> bool:
        with self._condition:
            return self._connected

    @property
    def queue_depth(self) -> int:
        """Messages not yet acknowledged: those in the outbox file plus the retained ones in memory."""
        with self._condition:
            retained_pending = sum(1 for message in self._pending.values() if isinstance(message, OutgoingMessage))
            return self.outbox.count + len(self._retained_queue) + retained_pending

    @property
    def pending_total(self) -> int:
        """Messages in the outbox file, sent after the next start unless acknowledged before."""
        return self.outbox.count

    @property
    def dropped_total(self) -> int:
        """Messages dropped because the outbox reached a bound or could not be written."""
        return self.outbox.dropped_total

    @property
    def expired_total(self) -> int:
        """Messages deleted unsent because their message expiry interval had passed."""
        return self.outbox.expired_total

    @property
    def rejected_total(self) -> int:
        """Messages the broker rejected (an error reason code in PUBACK or PUBREC)."""
        with self._condition:
            return self._rejected

    @property
    def lost_total(self) -> int:
        """Messages that will never reach the broker: dropped, expired or rejected.

        A message still in the outbox file is not lost, because the next
        start sends it. The retained availability and status messages are
        not counted, because every start publishes them again.
        """
        return self.dropped_total + self.expired_total + self.rejected_total

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

        logger.info(
            "connecting to broker %s as %s (outbox %s, %d messages waiting)",
            self.settings.broker,
            self.client_id,
            self.outbox.path,
            self.outbox.count,
        )
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.settings.session_expiry_s
        self._client.connect_async(
            self._host,
            self._port,
            keepalive=self.settings.keepalive_s,
            clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self._client.loop_start()

        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._sender.start()

    def publish(self, topic: str, payload: bytes, *, qos: Optional[int] = None, retain: bool = False) -> None:
        """Queue one message; ``qos`` defaults to the configured QoS.

        A non-retained message goes to the outbox file with the configured
        expiry. A retained message stays in memory and is repeated after
        every reconnect.
        """
        qos = self.settings.qos if qos is None else qos
        if retain:
            self._set_retained(OutgoingMessage(topic, bytes(payload), qos, True))
        else:
            self._store(topic, bytes(payload), qos)

    def publish_json(self, topic: str, message: Mapping[str, Any], *, retain: bool = False) -> None:
        """Queue a JSON message (see ``messages.encode``).

        A non-retained message gets the device's next sequence number as
        ``seq`` (see ``messages.with_seq``); a retained one is sent with QoS 1
        and without ``seq``.
        """
        if retain:
            self.publish(topic, encode(message), qos=1, retain=True)
        else:
            self._store(topic, lambda seq: encode(with_seq(message, seq)), self.settings.qos)

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued message is acknowledged; return False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while self._unacknowledged_locked():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(timeout=min(remaining, 0.5))
        return True

    def close(self, timeout_s: Optional[float] = None) -> bool:
        """Publish a retained ``offline``, flush for at most ``timeout_s`` seconds, disconnect and close the outbox.

        Returns True when every message reached the broker. Messages left in
        the outbox file are not lost: the next start sends them. The default
        timeout is ``flush_timeout_s`` from the settings.
        """
        if self._sender is None:
            self.outbox.close()
            return True
        timeout_s = self.settings.flush_timeout_s if timeout_s is None else timeout_s

        with self._condition:
            self._closing = True
        self._set_retained(OutgoingMessage(self.topics.availability, AVAILABILITY_OFFLINE, 1, True))

        delivered = self.flush(timeout_s)

        self._client.disconnect()
        self._client.loop_stop()
        with self._condition:
            self._stopped = True
            self._connected = False
            self._condition.notify_all()
        self._sender.join(timeout=5.0)
        self._sender = None

        with self._condition:
            acknowledged, self._acknowledged_rows = self._acknowledged_rows, []
        self.outbox.delete(acknowledged)
        waiting = self.outbox.count
        self.outbox.close()

        if waiting:
            logger.warning(
                "%d %s not delivered to broker %s within %.1f s; the outbox %s keeps them for the next start",
                waiting,
                "message" if waiting == 1 else "messages",
                self.settings.broker,
                timeout_s,
                self.outbox.path,
            )
        elif not delivered:
            logger.info("the retained availability did not reach broker %s; the next start publishes it", self.settings.broker)
        logger.info(
            "MQTT publisher closed (%s)", "all messages delivered" if delivered else f"{waiting} messages in the outbox"
        )
        return delivered

    def _build_client(self) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
        )
        # paho logs every failed reconnect at ERROR ("Client is not connected"),
        # so its messages go to a child logger at DEBUG and
        # _record_failed_attempt logs the failures instead.
        client.on_log = _log_paho_message
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.reconnect_delay_set(min_delay=self._reconnect_min_s, max_delay=self._reconnect_max_s)
        client.will_set(self.topics.availability, AVAILABILITY_OFFLINE, qos=1, retain=True)

        if self.settings.username is not None:
            client.username_pw_set(self.settings.username, self._read_password())
        if self._scheme == "mqtts":
            self._set_tls(client)
        elif self.settings.tls.ca_file or self.settings.tls.cert_file:
            logger.warning(
                "mqtt.tls files are set but broker %s uses mqtt://, so the connection is not encrypted and they are "
                "ignored; use an mqtts:// URL for TLS",
                self.settings.broker,
            )

        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _set_tls(self, client: paho.Client) -> None:
        """Load the CA and the optional client certificate; raise ConfigError naming the key of a bad file."""
        tls = self.settings.tls
        try:
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        except (OSError, ssl.SSLError) as exc:
            # ssl reports a missing file as OSError and a file that is not PEM as SSLError, without the path.
            raise ConfigError(
                f"mqtt.tls files cannot be loaded (ca_file {tls.ca_file}, cert_file {tls.cert_file}, key_file "
                f"{tls.key_file}): {exc}; check that each file exists, is readable and is PEM, and that the key "
                "matches the certificate"
            ) from None
        if tls.insecure:
            client.tls_insecure_set(True)
        logger.info(
            "TLS to broker %s with %s%s",
            self.settings.broker,
            f"CA {tls.ca_file}" if tls.ca_file else "the system CA store",
            f" and client certificate {tls.cert_file}" if tls.cert_file else "",
        )

    def _read_password(self) -> Optional[str]:
        if self.settings.password is not None:
            return self.settings.password.get_secret_value()
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
            self._retained_queue = collections.deque(
                queued for queued in self._retained_queue if queued.topic != message.topic
            )
            self._retained_queue.append(message)
            self._condition.notify_all()

    def _store(self, topic: str, payload: Any, qos: int) -> None:
        """Write one message to the outbox and wake the sender; a failed write is counted by the outbox."""
        self.outbox.add(topic, payload, qos=qos, expiry_s=self.settings.message_expiry_s)
        with self._condition:
            self._condition.notify_all()

    def _unacknowledged_locked(self) -> bool:
        return bool(
            self._retained_queue
            or self._requeued
            or self._handing_over
            or self._pending
            or self._acknowledged_rows
            or self.outbox.count
        )

    def _next_source_locked(self) -> Optional[str]:
        """Return where the next message to hand over comes from: ``retained``, ``requeued``, ``outbox`` or None.

        Retained messages go first, except while closing: then ``offline``
        waits until every outbox message is acknowledged, so it arrives last.
        """
        if not self._connected or self._resend_mids or len(self._pending) >= MAX_INFLIGHT:
            return None
        outbox_in_flight = any(isinstance(message, StoredMessage) for message in self._pending.values())
        if self._retained_queue and not (self._closing and (outbox_in_flight or self._requeued or self.outbox.unsent_count)):
            return "retained"
        if self._requeued:
            return "requeued"
        if self.outbox.unsent_count:
            return "outbox"
        return None

    def _send_loop(self) -> None:
        """Hand messages to paho one at a time, retained ones first, and delete acknowledged outbox rows."""
        while True:
            message: Optional[HandedMessage] = None
            take_from_outbox = False
            with self._condition:
                while not self._stopped and not self._acknowledged_rows and self._next_source_locked() is None:
                    self._condition.wait(timeout=1.0)
                if self._stopped:
                    return
                acknowledged, self._acknowledged_rows = self._acknowledged_rows, []
                source = self._next_source_locked()
                if source == "retained":
                    message = self._retained_queue.popleft()
                elif source == "requeued":
                    message = self._requeued.popleft()
                elif source == "outbox":
                    take_from_outbox = True
                if source is not None:
                    self._handing_over += 1

            if acknowledged:
                self.outbox.delete(acknowledged)
                with self._condition:
                    self._condition.notify_all()

            if take_from_outbox:
                message = self.outbox.next_unsent()
            if message is None:
                if take_from_outbox:
                    with self._condition:
                        self._handing_over -= 1
                        self._condition.notify_all()
                continue
            self._hand_over(message)

    def _hand_over(self, message: HandedMessage) -> None:
        """Call paho's publish() for one message and record it as pending; needs ``_handing_over`` counted."""
        properties = None
        retain = isinstance(message, OutgoingMessage) and message.retain
        if isinstance(message, StoredMessage) and message.expires is not None:
            properties = Properties(PacketTypes.PUBLISH)
            # The time left; at least 1 s, because next_unsent() hands out only unexpired messages.
            properties.MessageExpiryInterval = max(1, message.remaining_expiry_s(time.time()))

        info = self._client.publish(
            message.topic, message.payload, qos=message.qos, retain=retain, properties=properties
        )

        with self._condition:
            self._handing_over -= 1
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
                info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and message.qos > 0
            ):
                # paho keeps a QoS 1/2 message that met a dropped connection and
                # resends it after the reconnect, so it counts as handed over.
                if info.mid in self._acknowledged_early:
                    self._settle_locked(message, self._acknowledged_early.pop(info.mid))
                else:
                    self._pending[info.mid] = message
            else:
                logger.debug("publish to %s returned %s; requeueing it", message.topic, info.rc)
                if isinstance(message, StoredMessage):
                    self._requeued.appendleft(message)
                elif self._retained.get(message.topic) == message:
                    self._retained_queue.appendleft(message)
                self._condition.wait(timeout=0.2)
            self._condition.notify_all()

    def _settle_locked(self, message: HandedMessage, accepted: bool) -> None:
        """Count an acknowledged message and schedule its outbox row for deletion; needs the lock."""
        if accepted:
            self._delivered_by_topic[message.topic] += 1
        else:
            self._rejected += 1
        if isinstance(message, StoredMessage):
            self._acknowledged_rows.append(message.id)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            # paho closes the connection next; _on_disconnect logs the failed attempt with this reason.
            with self._condition:
                self._connect_rejection = str(reason_code)
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
        """Put the retained messages at the head of the retained queue, replacing queued copies; needs the lock.

        A retained message that paho is about to resend from the previous
        connection is not queued a second time.
        """
        resending = {self._pending[mid] for mid in self._resend_mids}
        replay = [message for message in self._retained.values() if message not in resending]
        replay.sort(key=lambda message: message.topic != self.topics.availability)
        self._retained_queue = collections.deque(replay)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._record_failed_attempt("")

    def _record_failed_attempt(self, detail: str) -> None:
        """Log a failed connection attempt: WARNING for the first, then one line per back-off step.

        ``detail`` is the reason when one is known, such as the broker's
        rejection or a TLS connection closed before CONNACK. The first failure
        after the start, or after a rejection with a new reason, is a WARNING;
        a drop of an established connection has its own WARNING in
        ``_on_disconnect``. Later failures are logged at INFO when the
        reconnect delay has grown since the last line, and at most every
        ``UNREACHABLE_LOG_INTERVAL_S`` seconds once the delay is at its
        maximum.
        """
        now = time.monotonic()
        reason = f": {detail}" if detail else ""
        with self._condition:
            self._failed_attempts += 1
            attempt = self._failed_attempts
            first = not self._unreachable_warned or bool(detail and detail != self._warned_failure_detail)
            self._unreachable_warned = True
            if first:
                self._warned_failure_detail = detail
            queued = self.outbox.count + len(self._retained_queue)
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
                "cannot connect to broker %s (attempt %d)%s; next attempt in %.0f s, later attempts wait at most "
                "%d s (mqtt.reconnect_max_s); keeping up to %d messages in the outbox %s (%d queued)",
                self.settings.broker,
                attempt,
                reason,
                next_delay_s,
                self._reconnect_max_s,
                self.settings.outbox_max_messages,
                self.outbox.path,
                queued,
            )
        elif log_it:
            logger.info(
                "broker %s still unreachable (attempt %d)%s; next attempt in %.0f s (%d messages queued)",
                self.settings.broker,
                attempt,
                reason,
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
            rejection, self._connect_rejection = self._connect_rejection, None
            if was_connected:
                self._unreachable_warned = True
            # paho does not resend a QoS 0 message that was not written before
            # the drop: an outbox one goes back in line, a retained one is
            # replayed by _on_connect.
            cut_off = sorted(
                (mid for mid, message in self._pending.items() if message.qos == 0),
                key=lambda mid: getattr(self._pending[mid], "id", 0),
                reverse=True,
            )
            for mid in cut_off:
                message = self._pending.pop(mid)
                if isinstance(message, StoredMessage):
                    self._requeued.appendleft(message)
            self._condition.notify_all()

        if closing:
            logger.info("disconnected from broker %s", self.settings.broker)
        elif was_connected:
            logger.warning(
                "disconnected from broker %s (%s); reconnecting with back-off", self.settings.broker, reason_code
            )
        elif rejection is not None:
            self._record_failed_attempt(
                f"the broker rejected the connection ({rejection}); check mqtt.username, the password and the "
                "broker's access rules"
            )
        else:
            # With TLS 1.3, a broker that requires a client certificate closes the connection after the handshake.
            hint = "; check mqtt.tls.cert_file and key_file if the broker requires a client certificate"
            self._record_failed_attempt(
                f"the connection closed before the broker accepted it ({reason_code})"
                f"{hint if self._scheme == 'mqtts' else ''}"
            )

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        rejected = bool(getattr(reason_code, "is_failure", False))
        if rejected:
            logger.warning("broker %s rejected message %d: %s", self.settings.broker, mid, reason_code)
        with self._condition:
            message = self._pending.pop(mid, None)
            if message is None:
                self._acknowledged_early[mid] = not rejected
            else:
                self._settle_locked(message, not rejected)
            self._resend_mids.discard(mid)
            self._condition.notify_all()


_paho_logger = logging.getLogger(f"{__name__}.paho")


def _log_paho_message(client: paho.Client, userdata: Any, level: int, message: str) -> None:
    """Log one of paho's own messages at DEBUG, whatever level paho gave it."""
    _paho_logger.debug("%s", message)
