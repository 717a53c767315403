"""The benchmark stages: what each one times, and the order they run in.

``StageBench.run`` measures, in pipeline order:

- ``decode``: one frame from the input (the next video frame, or the photo file).
- ``detect``: ``detect()`` of every detector on every backend and precision
  variant the store has, cycling through the input frames.
- ``preprocess``: crop (by the model's crop rule) plus resize and normalize
  (``prepare_batch``) per classifier, at each batch size.
- ``classify``: ``session.run`` of every classifier on every backend and
  precision variant, at each batch size, on real face crops. Output head
  decoding is not included.
- ``track``: ``IouTracker.update`` plus ``WindowAggregator.add`` of one
  frame's analyzed faces.
- ``publish``: building and encoding one ``faces`` message. With a broker,
  ``MqttPublisher.publish_json`` encodes it and stores it in the
  publisher's outbox file, from which its sender thread sends it.
- ``pipeline``: the capture loop end to end (see ``pipeline.run_pipeline``).

Every measurement runs ``warmup`` untimed calls, then ``iterations`` timed
calls. A model that a backend cannot load in some precision is recorded as
skipped with the reason, and the run goes on.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from edge_runtime.benchmark.inputs import BenchInput, FrameDecoder
from edge_runtime.benchmark.pipeline import run_pipeline
from edge_runtime.benchmark.records import BenchReport, Measurement, Skipped
from edge_runtime.benchmark.timing import LatencyStats, peak_rss_mib, reset_peak_rss, time_calls
from edge_runtime.capture.aggregation import WindowAggregator, WindowSummary
from edge_runtime.capture.messages import encode, faces_message
from edge_runtime.capture.mqtt import MqttPublisher
from edge_runtime.capture.tracking import IouTracker
from edge_runtime.config import Config, MqttConfig
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.loader import LoadedModel, load_model, select_variants
from edge_runtime.manifest import Manifest
from edge_runtime.models.store import ModelStore
from edge_runtime.profiles import DeviceProfile
from edge_runtime.vision.analyzer import FaceAnalyzer
from edge_runtime.vision.classifiers import Classifier
from edge_runtime.vision.crop import crop_face
from edge_runtime.vision.detectors import create_detector
from edge_runtime.vision.preprocess import prepare_batch
from edge_runtime.vision.types import Detection, FaceResult

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")

# Stages whose calls take a batch of faces; the others take one frame per call.
BATCHED_STAGES = ("preprocess", "classify")

# Seconds the publish stage waits for the broker before it times the hand-over.
CONNECT_WAIT_S = 5.0

# Distinct prepared batches per classifier measurement; the timed calls cycle through them.
MAX_PREPARED_BATCHES = 8

Progress = Callable[[str], None]


def print_progress(line: str) -> None:
    """Write one progress line to stderr."""
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BenchSettings:
    """Inputs, models and repetition counts of one run.

    ``backends`` maps each backend that can run here to the file formats it
    loads. ``threads`` overrides the profile's intra-op thread count when
    not None (0 lets each framework decide). ``mqtt`` sets the broker,
    topic prefix and device id of the publish and pipeline stages, and
    ``use_broker`` sets whether they connect to that broker at all. Their
    publishers keep their outbox files in ``scratch_dir``, apart from the
    capture service's outbox.
    """

    source: BenchInput
    pipeline_video: Path
    scratch_dir: Path
    backends: Mapping[str, tuple[str, ...]]
    detectors: Sequence[str]
    classifiers: Sequence[str]
    mqtt: MqttConfig
    use_broker: bool = False
    precisions: Sequence[str] = PRECISIONS
    batches: Sequence[int] = (1, 4)
    iterations: int = 50
    warmup: int = 5
    pipeline_frames: int = 200
    threads: Optional[int] = None


@dataclass(frozen=True)
class Candidate:
    """A model package with one backend and precision that has a loadable variant for every stage of it."""

    name: str
    backend: str
    precision: str


@dataclass
class Plan:
    """The model measurements a run will attempt, and the pairs skipped before any loading."""

    detect: list[Candidate] = field(default_factory=list)
    classify: list[Candidate] = field(default_factory=list)
    # Installed classifiers, whose crop and preprocessing are timed once per batch size.
    preprocess: list[Manifest] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def plan_candidates(
    stage: str,
    manifest: Manifest,
    backends: Mapping[str, tuple[str, ...]],
    precisions: Sequence[str],
) -> tuple[list[Candidate], list[Skipped]]:
    """Return every backend and precision of ``backends`` x ``precisions`` that has variants for the model.

    A backend with no loadable variant in any of the precisions is
    returned as skipped, with the formats and precisions the package has.
    """
    candidates = []
    skipped = []
    for backend, formats in backends.items():
        fitting = [p for p in precisions if select_variants(manifest, formats, p) is not None]
        for precision in fitting:
            candidates.append(Candidate(manifest.name, backend, precision))
        if not fitting:
            offered = ", ".join(sorted({f"{v.format} {v.precision}" for v in manifest.variants}))
            skipped.append(
                Skipped(
                    stage, manifest.name, backend, None,
                    f"no variant in a format {backend} loads ({', '.join(formats)}) and precision "
                    f"{'/'.join(precisions)}; the package has {offered}",
                )
            )
    return candidates, skipped


class StageBench:
    """Runs every stage against one model store and device profile, filling ``report``."""

    def __init__(
        self,
        settings: BenchSettings,
        store: ModelStore,
        profile: DeviceProfile,
        report: BenchReport,
        progress: Progress = print_progress,
    ) -> None:
        self.settings = settings
        self.store = store
        self.profile = profile if settings.threads is None else profile.model_copy(
            update={"num_threads": settings.threads}
        )
        self.report = report
        self.progress = progress
        self.plan = Plan()
        self.total_steps = 0
        self.step = 0
        # Faces the reference detector found, per input frame.
        self.detections: Optional[list[list[Detection]]] = None
        self.highest_rss_mib = 0.0

    # ------------------------------------------------------------------
    # Planning and recording

    def make_plan(self) -> Plan:
        """Find the candidates of every requested model, and count the steps for the progress lines."""
        for stage, names, target in (
            ("detect", self.settings.detectors, self.plan.detect),
            ("classify", self.settings.classifiers, self.plan.classify),
        ):
            for name in names:
                try:
                    manifest = self.store.open(name).manifest
                except EdgeRuntimeError as exc:
                    self.plan.skipped.append(Skipped(stage, name, None, None, _first_line(exc)))
                    continue
                candidates, skipped = plan_candidates(stage, manifest, self.settings.backends, self.settings.precisions)
                target.extend(candidates)
                self.plan.skipped.extend(skipped)
                if stage == "classify":
                    self.plan.preprocess.append(manifest)

        batches = len(self.settings.batches)
        self.total_steps = (
            1
            + len(self.plan.detect)
            + len(self.plan.preprocess) * batches
            + len(self.plan.classify) * batches
            + 3
        )
        for item in self.plan.skipped:
            self.skip(item)
        return self.plan

    def measure(
        self,
        stage: str,
        name: str,
        call: Callable[[int], object],
        *,
        backend: Optional[str] = None,
        precision: Optional[str] = None,
        batch: int = 1,
        load_ms: Optional[float] = None,
        details: Optional[dict[str, Any]] = None,
    ) -> Measurement:
        """Time ``call`` after the warm-up calls, record the measurement and print a progress line."""
        reset_peak_rss()
        samples = time_calls(call, self.settings.iterations, self.settings.warmup)
        measurement = Measurement(
            stage=stage,
            name=name,
            backend=backend,
            precision=precision,
            batch=batch,
            input=self.settings.source.label,
            stats=LatencyStats.from_samples(samples),
            process_peak_rss_mib=self._peak_rss(),
            load_ms=None if load_ms is None else round(load_ms, 2),
            details=details or {},
        )
        self.record(measurement)
        return measurement

    def record(self, measurement: Measurement) -> None:
        """Append ``measurement`` to the report and print its progress line."""
        self.report.measurements.append(measurement)
        self.step += 1
        stats = measurement.stats
        where = "/".join(part for part in (measurement.backend, measurement.precision) if part)
        fps = f", {measurement.fps:.1f} fps" if measurement.fps is not None else ""
        batch = f" batch {measurement.batch}" if measurement.stage in BATCHED_STAGES else ""
        self.progress(
            f"[{self.step}/{self.total_steps}] {measurement.stage} {measurement.name}"
            f"{' ' + where if where else ''}{batch}: p50 {stats.p50_ms:.2f} ms, "
            f"p90 {stats.p90_ms:.2f}, p99 {stats.p99_ms:.2f}, mean {stats.mean_ms:.2f} ({stats.count} runs){fps}"
        )

    def skip(self, item: Skipped, *, steps: int = 0) -> None:
        """Record a measurement that could not run and print why; ``steps`` planned steps it replaces."""
        self.report.skipped.append(item)
        self.step += steps
        where = "/".join(part for part in (item.backend, item.precision) if part)
        self.progress(f"[{self.step}/{self.total_steps}] {item.stage} {item.name}{' ' + where if where else ''}: "
                      f"skipped: {item.reason}")

    def mqtt_settings(self, stage: str) -> MqttConfig:
        """Return the MQTT settings of ``stage``, with its own outbox file in the scratch directory."""
        return self.settings.mqtt.model_copy(update={"outbox_path": self.settings.scratch_dir / f"{stage}-outbox.sqlite"})

    def _peak_rss(self) -> float:
        value = round(peak_rss_mib(), 1)
        self.highest_rss_mib = max(self.highest_rss_mib, value)
        return value

    def load(self, stage: str, candidate: Candidate, steps: int = 1) -> Optional[tuple[LoadedModel, float]]:
        """Load ``candidate``; return the model and the load time in ms, or None after recording a skip.

        ``steps`` is the number of measurements the model was planned for.
        """
        start = time.perf_counter()
        try:
            package = self.store.open(candidate.name)
            model = load_model(package, self.profile, backend=candidate.backend, precision=candidate.precision)
        except EdgeRuntimeError as exc:
            self.skip(Skipped(stage, candidate.name, candidate.backend, candidate.precision, _first_line(exc)),
                      steps=steps)
            return None
        return model, (time.perf_counter() - start) * 1000.0

    # ------------------------------------------------------------------
    # Stages

    def run(self) -> None:
        """Run every stage in pipeline order."""
        if not self.total_steps:
            self.make_plan()
        self.run_decode()
        self.run_detect()
        self.run_classifiers()
        self.run_pipeline_stages()

    def run_decode(self) -> None:
        """Time the decoding of one input frame."""
        source = self.settings.source
        decoder = FrameDecoder(source)
        try:
            self.measure(
                "decode", "opencv-video" if source.kind == "video" else "read-image", decoder.decode,
                details={"size": source.size, "kind": source.kind},
            )
        finally:
            decoder.close()

    def run_detect(self) -> None:
        """Time every detector candidate; the profile's detector (or the first that loads) sets the reference faces."""
        frames = self.settings.source.frames
        reference = self.profile.models.detector
        ordered = sorted(self.plan.detect, key=lambda candidate: candidate.name != reference)

        for candidate in ordered:
            loaded = self.load("detect", candidate)
            if loaded is None:
                continue
            model, load_ms = loaded
            try:
                detector = create_detector(model)
            except EdgeRuntimeError as exc:
                model.close()
                self.skip(Skipped("detect", candidate.name, candidate.backend, candidate.precision, _first_line(exc)),
                          steps=1)
                continue
            with detector:
                found = [detector.detect(frame) for frame in frames]
                if self.detections is None:
                    self.detections = found
                    logger.info("reference faces from %s on %s: %s per frame", candidate.name, candidate.backend,
                                [len(faces) for faces in found])
                self.measure(
                    "detect", candidate.name, lambda index: detector.detect(frames[index % len(frames)]),
                    backend=candidate.backend, precision=candidate.precision, load_ms=load_ms,
                    details={"faces": sum(len(faces) for faces in found), "frames": len(frames)},
                )

    def face_pool(self) -> list[tuple[int, Detection]]:
        """Return ``(frame index, detection)`` of every reference face, in frame order."""
        return [(index, detection) for index, faces in enumerate(self.detections or []) for detection in faces]

    def run_classifiers(self) -> None:
        """Time crop + preprocess per classifier and batch, then inference per candidate and batch."""
        pool = self.face_pool()
        if not pool:
            reason = "no face was found in the input frames; pass --video with faces in view"
            batches = len(self.settings.batches)
            for manifest in self.plan.preprocess:
                self.skip(Skipped("preprocess", manifest.name, None, None, reason), steps=batches)
            for candidate in self.plan.classify:
                self.skip(Skipped("classify", candidate.name, candidate.backend, candidate.precision, reason),
                          steps=batches)
            return

        for manifest in self.plan.preprocess:
            for batch in self.settings.batches:
                self.measure(
                    "preprocess", manifest.name,
                    lambda index, manifest=manifest, batch=batch: self._prepare(manifest, pool, index, batch),
                    batch=batch,
                    details={"crop_rule": manifest.input.crop.rule,
                             "size": f"{manifest.input.width}x{manifest.input.height}"},
                )

        for candidate in self.plan.classify:
            self._classify(candidate, pool)

    def _prepare(self, manifest: Manifest, pool: list[tuple[int, Detection]], index: int, batch: int) -> np.ndarray:
        frames = self.settings.source.frames
        faces = [pool[(index * batch + offset) % len(pool)] for offset in range(batch)]
        crops = [crop_face(frames[frame], detection, manifest.input) for frame, detection in faces]
        return prepare_batch(crops, manifest.input)

    def _classify(self, candidate: Candidate, pool: list[tuple[int, Detection]]) -> None:
        steps = len(self.settings.batches)
        loaded = self.load("classify", candidate, steps)
        if loaded is None:
            return
        model, load_ms = loaded
        try:
            classifier = Classifier(model)
        except EdgeRuntimeError as exc:
            model.close()
            self.skip(Skipped("classify", candidate.name, candidate.backend, candidate.precision, _first_line(exc)),
                      steps=steps)
            return

        with classifier:
            session = classifier.model.session
            for batch in self.settings.batches:
                distinct = max(1, min(MAX_PREPARED_BATCHES, len(pool) // batch))
                prepared = [self._prepare(classifier.manifest, pool, index, batch) for index in range(distinct)]
                self.measure(
                    "classify", candidate.name,
                    lambda index, prepared=prepared: session.run(prepared[index % len(prepared)]),
                    backend=candidate.backend, precision=candidate.precision, batch=batch, load_ms=load_ms,
                    details={"heads": classifier.heads},
                )

    def run_pipeline_stages(self) -> None:
        """Open the profile's analyzer once, then time track, publish and the whole capture loop with it."""
        try:
            analyzer = FaceAnalyzer.from_store(self.store, self.profile)
        except EdgeRuntimeError as exc:
            reason = f"the profile's models do not load: {_first_line(exc)}"
            for stage in ("track", "publish", "pipeline"):
                self.skip(Skipped(stage, self.profile.name, None, None, reason), steps=1)
            return

        with analyzer:
            results = [analyzer.analyze(frame) for frame in self.settings.source.frames]
            window = self.run_track(results)
            self.run_publish(window)
            self.run_pipeline(analyzer)

    def run_track(self, results: list[list[FaceResult]]) -> WindowSummary:
        """Time tracking and window aggregation of one frame's faces; return a window for the publish stage."""
        config = Config()
        tracker = IouTracker(config.tracking.min_iou, config.tracking.max_missed)
        interval_s = 1.0 / (self.settings.source.fps or 25.0)
        aggregator = WindowAggregator(config.window_s, config.min_track_frames, interval_s)
        closed: list[WindowSummary] = []
        started = time.time()

        def track(index: int) -> None:
            faces = results[index % len(results)]
            track_ids = tracker.update([face.detection.box for face in faces])
            media_s = index * interval_s
            closed.extend(aggregator.add(media_s, started + media_s, list(zip(track_ids, faces))))

        self.measure(
            "track", "iou-tracker+window-aggregator", track,
            details={"window_s": config.window_s, "faces_per_frame": [len(faces) for faces in results]},
        )
        final = aggregator.flush()
        return closed[-1] if closed else final  # type: ignore[return-value]

    def run_publish(self, window: WindowSummary) -> None:
        """Time building and encoding a ``faces`` message, and its hand-over to a real publisher when a broker is given."""
        mqtt = self.mqtt_settings("publish")
        device_id = mqtt.resolved_device_id
        publisher: Optional[MqttPublisher] = None
        details: dict[str, Any] = {"mode": "encode only", "tracks": len(window.tracks)}

        if self.settings.use_broker:
            publisher = MqttPublisher(mqtt)
            publisher.start()
            deadline = time.monotonic() + CONNECT_WAIT_S
            while not publisher.connected and time.monotonic() < deadline:
                time.sleep(0.05)
            details.update(mode="encode + hand-over", broker=mqtt.broker, connected=publisher.connected)

        details["payload_bytes"] = len(encode(faces_message(window, device_id)))

        def publish(index: int) -> None:
            message = faces_message(window, device_id)
            if publisher is None:
                encode(message)
            else:
                publisher.publish_json(publisher.topics.faces, message)

        try:
            self.measure("publish", "faces-message", publish, details=details)
        finally:
            if publisher is not None:
                # ``details`` is the measurement's own dict, so these land in the record.
                details["delivered"] = publisher.close()
                details["messages_delivered"] = publisher.delivered_count(publisher.topics.faces)

    def run_pipeline(self, analyzer: FaceAnalyzer) -> None:
        """Run the capture loop on the pipeline video and record its per-frame period and fps."""
        settings = self.settings
        reset_peak_rss()
        try:
            run = run_pipeline(
                settings.pipeline_video, analyzer, self.profile.name, self.mqtt_settings("pipeline"),
                max_frames=settings.pipeline_frames, warmup_frames=settings.warmup, use_broker=settings.use_broker,
            )
        except EdgeRuntimeError as exc:
            self.skip(Skipped("pipeline", self.profile.name, None, None, _first_line(exc)), steps=1)
            return

        summary = run.summary
        if run.periods is None:
            self.skip(
                Skipped("pipeline", self.profile.name, None, None,
                        f"the video gave {summary.frames_analyzed} frames, too few after "
                        f"{settings.warmup} warm-up frames; use a longer video or fewer --warmup"),
                steps=1,
            )
            return

        models = {role: f"{info['name']}@{info['backend']}/{info['precision']}" for role, info in analyzer.models.items()}
        self.report.pipeline = {
            "profile": self.profile.name,
            "input": settings.pipeline_video.name,
            "fps": round(summary.fps, 3),
            "frames": summary.frames_analyzed,
            "wall_s": round(summary.wall_s, 3),
            "windows": summary.windows_published,
            "models": models,
            "mqtt": run.mqtt,
        }
        self.record(
            Measurement(
                stage="pipeline",
                name=self.profile.name,
                backend="profile",
                precision=None,
                batch=1,
                input=settings.pipeline_video.name,
                stats=run.periods,
                process_peak_rss_mib=self._peak_rss(),
                fps=round(summary.fps, 3),
                details={"frames": summary.frames_analyzed, "models": models, "mqtt": run.mqtt["mode"]},
            )
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
