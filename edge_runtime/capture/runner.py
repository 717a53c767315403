"""The capture loop: frames -> faces -> tracks -> windows -> MQTT.

``Runner`` drives one source through a face analyzer, an IoU tracker and a
window aggregator, and publishes through an ``MqttPublisher``: one
``faces`` message per window, ``stats`` every ``stats_interval_s`` seconds
of wall time, and a retained ``status`` at start and after every change
of the source's state (see ``SourceState``). When the source ends or
``stop()`` is called, the runner publishes the last, partial window and a
final stats message, then closes the publisher, which sends ``offline``
and flushes for a bounded time.

``open_service`` builds the whole service from a ``Config``: the device
profile, the model store, the analyzer, the source and the publisher.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Protocol, Sequence

import numpy as np

from edge_runtime.capture.aggregation import WindowAggregator, WindowSummary
from edge_runtime.capture.messages import (
    LatencySummary,
    faces_message,
    source_health_fields,
    stats_message,
    status_message,
)
from edge_runtime.capture.mqtt import MqttPublisher
from edge_runtime.capture.source import FrameSource, SourceHealth, SourceKind, SourceState
from edge_runtime.capture.tracking import IouTracker
from edge_runtime.config import Config
from edge_runtime.errors import EdgeRuntimeError, ModelNotFoundError
from edge_runtime.models.store import ModelStore
from edge_runtime.profiles import DeviceProfile, resolve_profile
from edge_runtime.service.hooks import NullHooks, RunHooks
from edge_runtime.vision.analyzer import FaceAnalyzer
from edge_runtime.vision.types import FaceResult

logger = logging.getLogger(__name__)

# Samples kept per stage for the run's p95; the mean covers every sample.
RUN_LATENCY_SAMPLES = 10_000

# A run stops after this many frames in a row fail to analyze, because the
# failure is then no longer a single bad frame.
MAX_CONSECUTIVE_FAILURES = 50

# A stage's mean is compared with its budget only over at least this many
# samples, so a short run or the slow first frames after model load do not warn.
MIN_BUDGET_SAMPLES = 30


class Analyzer(Protocol):
    """Interface of the analyzer that the runner uses; ``edge_runtime.vision.analyzer.FaceAnalyzer`` implements it."""

    last_timings_ms: dict[str, float]

    @property
    def models(self) -> Mapping[str, Mapping[str, Any]]: ...

    def analyze(self, frame_bgr: np.ndarray) -> list[FaceResult]: ...

    def close(self) -> None: ...


class LatencyRecorder:
    """Per-stage latency samples in milliseconds, for the current stats interval and for the run."""

    def __init__(self) -> None:
        self._interval: dict[str, list[float]] = collections.defaultdict(list)
        self._run: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=RUN_LATENCY_SAMPLES)
        )
        self._run_sum: dict[str, float] = collections.defaultdict(float)
        self._run_count: dict[str, int] = collections.defaultdict(int)

    def add(self, stage: str, milliseconds: float) -> None:
        self._interval[stage].append(milliseconds)
        self._run[stage].append(milliseconds)
        self._run_sum[stage] += milliseconds
        self._run_count[stage] += 1

    def take_interval(self) -> dict[str, LatencySummary]:
        """Return the interval's summary per stage and start a new interval."""
        summary = {stage: _summarize(samples) for stage, samples in self._interval.items() if samples}
        self._interval = collections.defaultdict(list)
        return summary

    def run_summary(self) -> dict[str, LatencySummary]:
        """Return the summary over the run: the mean of all samples, p95 of the most recent ones."""
        return {
            stage: LatencySummary(
                mean_ms=self._run_sum[stage] / self._run_count[stage],
                p95_ms=float(np.percentile(np.asarray(samples), 95)),
                count=self._run_count[stage],
            )
            for stage, samples in self._run.items()
            if samples
        }


class LatencyBudget:
    """Target mean milliseconds per stage from the device profile, checked once per stats interval.

    Samples of an interval with fewer than ``min_samples`` per stage carry
    over to the next interval, so a slow device that analyzes few frames per
    interval is still checked, and a run shorter than ``min_samples`` frames
    is never.
    """

    def __init__(self, budget_ms: Mapping[str, float], min_samples: int = MIN_BUDGET_SAMPLES) -> None:
        self.budget_ms = dict(budget_ms)
        self.min_samples = min_samples
        self._pending_sum: dict[str, float] = collections.defaultdict(float)
        self._pending_count: dict[str, int] = collections.defaultdict(int)

    def check(self, summary: Mapping[str, LatencySummary]) -> list[str]:
        """Add one interval's summary; log a WARNING per stage over its budget and return those stages."""
        over: list[str] = []
        for stage, budget_ms in self.budget_ms.items():
            if stage not in summary:
                continue
            self._pending_sum[stage] += summary[stage].mean_ms * summary[stage].count
            self._pending_count[stage] += summary[stage].count
            count = self._pending_count[stage]
            if count < self.min_samples:
                continue

            mean_ms = self._pending_sum[stage] / count
            self._pending_sum[stage] = 0.0
            self._pending_count[stage] = 0
            if mean_ms > budget_ms:
                logger.warning(
                    "stage %s took %.1f ms on average over the last %d frames, above the profile's budget of %.0f ms",
                    stage, mean_ms, count, budget_ms,
                )
                over.append(stage)
        return over


def plural(count: int, noun: str) -> str:
    """Return ``"1 window"`` or ``"3 windows"``; only for nouns whose plural adds an s."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _summarize(samples: Sequence[float]) -> LatencySummary:
    array = np.asarray(samples, dtype=np.float64)
    return LatencySummary(mean_ms=float(array.mean()), p95_ms=float(np.percentile(array, 95)), count=int(array.size))


@dataclass(frozen=True)
class RunSummary:
    """Counters and latencies of one run.

    ``wall_s`` is the wall time from the start to the last frame's
    messages, without the shutdown flush, and ``fps`` is analyzed frames
    per second of that time. ``flush_s`` is the time ``close()`` of the
    publisher took. ``windows_published`` counts the faces messages handed
    to the publisher and ``windows_delivered`` those that reached the
    broker. ``messages_lost`` counts the messages that never will: dropped
    by an outbox bound, expired or rejected by the broker.
    ``messages_pending`` counts those still in the outbox file at the end;
    they are not lost, because the next start sends them. ``stopped`` is
    True when ``Runner.stop()`` ended the run.
    """

    reason: str
    frames_analyzed: int
    frames_read: int
    frames_dropped: int
    windows_published: int
    wall_s: float
    fps: float
    latency_ms: dict[str, LatencySummary] = field(default_factory=dict)
    delivered: bool = True
    windows_delivered: int = 0
    messages_lost: int = 0
    messages_pending: int = 0
    flush_s: float = 0.0
    stopped: bool = False


class Runner:
    """Run the capture loop of one source until it ends, ``max_frames`` is reached or ``stop()`` is called."""

    def __init__(
        self,
        config: Config,
        analyzer: Analyzer,
        source: FrameSource,
        publisher: MqttPublisher,
        *,
        profile_name: Optional[str] = None,
        hooks: Optional[RunHooks] = None,
        latency_budget_ms: Optional[Mapping[str, float]] = None,
    ) -> None:
        self.config = config
        # Mean milliseconds per stage from the device profile; a mean above it logs a WARNING.
        self.latency_budget = LatencyBudget(latency_budget_ms or {})
        self.analyzer = analyzer
        self.source = source
        self.publisher = publisher
        self.profile_name = profile_name
        # Progress callbacks for a supervisor such as systemd (see edge_runtime.service.hooks).
        self.hooks: RunHooks = hooks or NullHooks()
        self.latency = LatencyRecorder()
        self._stop_reason: Optional[str] = None
        self._stop_lock = threading.Lock()
        # Status messages are built and queued under this lock, so the last one queued is the newest.
        self._status_lock = threading.Lock()
        self._status_source_state: Optional[SourceState] = None
        self._status_closed = False
        self._started_wall = time.time()

    def stop(self, reason: str = "stop requested") -> None:
        """End the run after the current frame; safe from a signal handler or another thread."""
        with self._stop_lock:
            if self._stop_reason is None:
                self._stop_reason = reason
        self.source.stop()

    def run(self, max_frames: Optional[int] = None) -> RunSummary:
        """Process frames and publish, and return after the final messages are flushed.

        The source must be open. The runner starts the publisher and closes
        it at the end. Closing the source and the analyzer is left to the caller.
        """
        started_wall = time.time()
        started = time.monotonic()
        device_id = self.publisher.device_id

        self.publisher.start()
        self._started_wall = started_wall
        # Every source state change (streaming, stalled, reconnecting, ended) replaces the retained status.
        self.source.add_state_listener(self._on_source_state)
        self._publish_status()
        self.hooks.started()

        tracker = IouTracker(self.config.tracking.min_iou, self.config.tracking.max_missed)
        frame_interval = self.source.nominal_interval_s if self.source.kind is SourceKind.FILE else None
        aggregator = WindowAggregator(self.config.window_s, self.config.min_track_frames, frame_interval)

        frames = 0
        windows = 0
        failures = 0
        interval_frames = 0
        interval_started = started
        dropped_at_interval_start = 0
        reason = "source ended"

        try:
            read_start = time.perf_counter()
            for frame in self.hooks.frames(self.source):
                frame_start = time.perf_counter()
                # Waiting for the source: decoding for files, the wait for the next frame for live sources.
                self.latency.add("read", (frame_start - read_start) * 1000.0)
                try:
                    faces = self.analyzer.analyze(frame.image)
                except EdgeRuntimeError as exc:
                    failures += 1
                    if failures == 1 or failures % 10 == 0:
                        logger.error("analysis of frame %d failed (%d in a row): %s", frame.index, failures, exc)
                    if failures >= MAX_CONSECUTIVE_FAILURES:
                        raise
                    read_start = time.perf_counter()
                    continue
                failures = 0
                self.hooks.analyzed(len(faces))

                for stage, milliseconds in self.analyzer.last_timings_ms.items():
                    self.latency.add(stage, milliseconds)

                track_ids = tracker.update([face.detection.box for face in faces])
                closed = aggregator.add(frame.media_s, frame.wall_time, list(zip(track_ids, faces)))
                for window in closed:
                    self._publish_window(window)
                    windows += 1

                self.latency.add("frame", (time.perf_counter() - frame_start) * 1000.0)
                frames += 1
                interval_frames += 1
                logger.debug(
                    "frame %d at %.3f s: %d faces, tracks %s", frame.index, frame.media_s, len(faces), track_ids
                )

                if max_frames is not None and frames >= max_frames:
                    reason = f"max frames ({max_frames}) reached"
                    break

                now = time.monotonic()
                if now - interval_started >= self.config.stats_interval_s:
                    dropped_total = self.source.stats.frames_dropped
                    self._publish_stats(
                        device_id,
                        now - interval_started,
                        now - started,
                        interval_frames,
                        frames,
                        dropped_total - dropped_at_interval_start,
                        final=False,
                    )
                    interval_started = now
                    interval_frames = 0
                    dropped_at_interval_start = dropped_total
                read_start = time.perf_counter()
        finally:
            self.source.remove_state_listener(self._on_source_state)
            self._publish_final_status()
            stopped = self._stop_reason is not None
            self.hooks.stopping(self._stop_reason or reason)
            if stopped:
                reason = self._stop_reason

            final_window = aggregator.flush()
            if final_window is not None:
                self._publish_window(final_window)
                windows += 1

            now = time.monotonic()
            dropped_total = self.source.stats.frames_dropped
            self._publish_stats(
                device_id,
                now - interval_started,
                now - started,
                interval_frames,
                frames,
                dropped_total - dropped_at_interval_start,
                final=True,
            )

            # The flush waits for the broker, so it is timed apart from the frames.
            flush_started = time.monotonic()
            wall_s = flush_started - started
            delivered = self.publisher.close()
            flush_s = time.monotonic() - flush_started

        source_stats = self.source.stats
        windows_delivered = min(self.publisher.delivered_count(self.publisher.topics.faces), windows)
        summary = RunSummary(
            reason=reason,
            frames_analyzed=frames,
            frames_read=source_stats.frames_read,
            frames_dropped=source_stats.frames_dropped,
            windows_published=windows,
            wall_s=wall_s,
            fps=frames / wall_s if wall_s > 0 else 0.0,
            latency_ms=self.latency.run_summary(),
            delivered=delivered,
            windows_delivered=windows_delivered,
            messages_lost=self.publisher.lost_total,
            messages_pending=self.publisher.pending_total,
            flush_s=flush_s,
            stopped=stopped,
        )
        logger.log(
            logging.INFO if summary.messages_lost == 0 else logging.WARNING,
            "run ended (%s): %s analyzed in %.1f s (%.1f fps), %d dropped; %s: %d delivered, %d not delivered; "
            "MQTT: %s lost, %d kept in the outbox for the next start; MQTT flush %.1f s",
            reason,
            plural(frames, "frame"),
            wall_s,
            summary.fps,
            summary.frames_dropped,
            plural(windows, "window"),
            windows_delivered,
            windows - windows_delivered,
            plural(summary.messages_lost, "message"),
            summary.messages_pending,
            flush_s,
        )
        return summary

    def _publish_window(self, window: WindowSummary) -> None:
        message = faces_message(window, self.publisher.device_id)
        self.publisher.publish_json(self.publisher.topics.faces, message)
        # While the broker is unreachable the message only waits in the outbox.
        state = "published" if self.publisher.connected else "queued (broker not connected)"
        logger.info(
            "window %d %s: %.1f-%.1f s, %s, %s%s",
            window.index,
            state,
            window.media_start_s,
            window.media_end_s,
            plural(window.frames, "frame"),
            plural(len(window.tracks), "track"),
            " (final)" if window.final else "",
        )

    def _publish_stats(
        self,
        device_id: str,
        interval_s: float,
        uptime_s: float,
        interval_frames: int,
        frames_total: int,
        dropped: int,
        *,
        final: bool,
    ) -> None:
        source_stats = self.source.stats
        message = stats_message(
            device_id,
            interval_s=interval_s,
            uptime_s=uptime_s,
            frames_analyzed=interval_frames,
            frames_analyzed_total=frames_total,
            frames_read_total=source_stats.frames_read,
            frames_dropped=dropped,
            frames_dropped_total=source_stats.frames_dropped,
            latency=self._take_interval_latency(),
            source_queue_depth=source_stats.queue_depth,
            mqtt_queue_depth=self.publisher.queue_depth,
            mqtt_dropped_total=self.publisher.dropped_total,
            mqtt_expired_total=self.publisher.expired_total,
            mqtt_rejected_total=self.publisher.rejected_total,
            mqtt_pending=self.publisher.pending_total,
            mqtt_connected=self.publisher.connected,
            final=final,
        )
        self.publisher.publish_json(self.publisher.topics.stats, message)
        logger.debug("stats published: %.1f fps over %.1f s", message["fps"], interval_s)

    def _take_interval_latency(self) -> dict[str, LatencySummary]:
        """Take the interval's latency summary and check it against the profile's budget."""
        summary = self.latency.take_interval()
        self.latency_budget.check(summary)
        return summary

    def _publish_status(self) -> bool:
        """Queue the retained status; return False once the run has published its final one."""
        with self._status_lock:
            if self._status_closed:
                return False
            self._queue_status_locked()
            return True

    def _queue_status_locked(self) -> None:
        self.publisher.publish_json(self.publisher.topics.status, self._status(self._started_wall), retain=True)
        self._status_source_state = self.source.health.state

    def _publish_final_status(self) -> None:
        """Republish the status once more if the source state changed since the last one, then publish no more.

        A file source that ran out is ``ended`` here, so the retained status
        shows ``ended`` after the runner stops, next to ``offline`` on the
        availability topic. After ``stop()`` the source is still
        ``streaming`` here and the status keeps that state, so ``offline``
        alone shows that the service stopped. A listener call racing with
        the end of the run finds the status closed and publishes nothing.
        """
        with self._status_lock:
            if self.source.health.state is not self._status_source_state:
                self._queue_status_locked()
                logger.info("status republished: source %s", self.source.health.state.value)
            self._status_closed = True

    def _on_source_state(self, health: SourceHealth) -> None:
        """Republish the retained status on every source state change, ``ended`` included."""
        if self._publish_status():
            logger.info("status republished: source %s", health.state.value)

    def _status(self, started_wall: float) -> dict[str, Any]:
        config = self.config
        return status_message(
            self.publisher.device_id,
            started=started_wall,
            profile=self.profile_name,
            models=models_with_selection(self.analyzer),
            source={
                "description": self.source.description,
                "kind": self.source.kind.value,
                "width": self.source.width,
                "height": self.source.height,
                "fps": round(self.source.fps, 3) if self.source.fps else None,
                "health": source_health_fields(self.source.health),
            },
            config={
                "window_s": config.window_s,
                "stats_interval_s": config.stats_interval_s,
                "min_track_frames": config.min_track_frames,
                "every_n": config.source.every_n,
                "realtime": config.source.realtime,
                "loop": config.source.loop,
                "stall_timeout_s": config.source.stall_timeout_s,
                "qos": config.mqtt.qos,
                "broker": config.mqtt.broker,
                "outbox": {
                    "max_messages": config.mqtt.outbox_max_messages,
                    "max_bytes": config.mqtt.outbox_max_bytes,
                    "message_expiry_s": config.mqtt.message_expiry_s,
                },
                "tracking": {"min_iou": config.tracking.min_iou, "max_missed": config.tracking.max_missed},
            },
        )


@dataclass
class Service:
    """The parts of a running service; ``close()`` releases the source and the analyzer."""

    runner: Runner
    analyzer: Analyzer
    source: FrameSource
    publisher: MqttPublisher

    def close(self) -> None:
        self.source.close()
        self.analyzer.close()


def models_with_selection(analyzer: Analyzer) -> dict[str, dict[str, Any]]:
    """Return ``analyzer.models`` with the backend choice of each role (variant, reason, skipped) merged in."""
    selections = getattr(analyzer, "selections", {})
    return {role: {**info, **selections.get(role, {})} for role, info in analyzer.models.items()}


def detection_interval(config: Config, profile: Optional[DeviceProfile]) -> int:
    """Return the frames per full face detection: the config's value, else the profile's, else 1."""
    if config.detection_interval is not None:
        return config.detection_interval
    return getattr(profile, "detection_interval", None) or 1


def open_analyzer(config: Config, profile: Optional[DeviceProfile] = None) -> tuple[Analyzer, Optional[str]]:
    """Load the device profile (unless ``profile`` is given) and the models of every role.

    Returns the analyzer and the profile name.

    Raises ModelNotFoundError with the command that installs the starter
    models when a model is missing, ConfigError for an invalid choice, and
    the loader's errors for files that fail their checks.
    """
    # --profile or the config beats the override file's base, which beats detection; see edge_runtime.profiles.
    if profile is None:
        profile = resolve_profile(config.profile).profile
    store = ModelStore(config.store)
    try:
        analyzer = FaceAnalyzer.from_store(
            store,
            profile,
            models=config.models.role_models(),
            backend=config.models.backend,
            backends=config.models.role_backends(),
            precision=config.models.precision,
            detection_interval=detection_interval(config, profile),
        )
    except ModelNotFoundError as exc:
        store_flag = f" --store {config.store}" if config.store else ""
        raise ModelNotFoundError(
            f"{exc}. To install the starter models, run 'edge-runtime models pull --starter{store_flag}'"
        ) from None

    for role, info in analyzer.models.items():
        logger.info(
            "model for %s: %s %s on %s (%s)",
            role,
            info.get("name"),
            info.get("version", ""),
            info.get("backend"),
            info.get("precision"),
        )
    return analyzer, profile.name


def open_service(config: Config) -> Service:
    """Build analyzer, source, publisher and runner from ``config``.

    The source is checked before the models load, so a missing file fails
    at once (see ``FrameSource.check``), and opened after them, so a live
    source starts reading only when the runner is ready. The publisher is
    built before the models load too, so an outbox in use by another
    process fails at once, before this process opens the camera. Raises
    SourceError, ModelNotFoundError, ConfigError or OutboxError with the
    value at fault and the fix.
    """
    source = FrameSource(
        config.source.spec,
        realtime=config.source.realtime,
        every_n=config.source.every_n,
        reconnect_min_s=config.source.reconnect_min_s,
        reconnect_max_s=config.source.reconnect_max_s,
        stall_timeout_s=config.source.stall_timeout_s,
        loop=config.source.loop,
    )
    source.check()

    # Takes the outbox lock; start() connects later.
    publisher = MqttPublisher(config.mqtt)
    try:
        profile = resolve_profile(config.profile).profile
        analyzer, profile_name = open_analyzer(config, profile)
    except BaseException:
        publisher.close()
        raise

    try:
        source.open()
    except BaseException:
        source.close()
        analyzer.close()
        publisher.close()
        raise

    runner = Runner(
        config, analyzer, source, publisher, profile_name=profile_name, latency_budget_ms=profile.latency_budget_ms
    )
    return Service(runner=runner, analyzer=analyzer, source=source, publisher=publisher)
