"""The measured stages: decode, detect, preprocess, classify, analyze and the run loop.

``StageBench`` loads each model once per backend, times the stage with
warm-up runs excluded, and appends a ``StageResult`` (or a ``Skipped`` with
the reason) to the report. Faces found by the reference detector (the
profile's detector on the first backend that loads it) feed the preprocess
and classify stages, so every classifier gets the same real crops.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from bench.report import BenchReport, Skipped, StageResult
from bench.timing import LatencyStats, peak_rss_mib, reset_peak_rss, time_calls
from edge_runtime.capture.runner import Runner
from edge_runtime.capture.source import FrameSource
from edge_runtime.capture.mqtt import MqttPublisher
from edge_runtime.config import Config, MqttConfig, SourceConfig
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.loader import LoadedModel, load_model
from edge_runtime.models.store import ModelStore
from edge_runtime.profiles import DeviceProfile
from edge_runtime.vision.analyzer import FaceAnalyzer
from edge_runtime.vision.classifiers import Classifier
from edge_runtime.vision.detectors import create_detector
from edge_runtime.vision.image_io import read_image
from edge_runtime.vision.preprocess import prepare_batch
from edge_runtime.vision.types import Detection, FaceResult

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchSettings:
    """Inputs, models and backends of one run, and how often each stage is timed.

    ``backends`` are tried side by side for every model; a backend that
    cannot load a model is reported as skipped. ``threads`` overrides the
    profile's intra-op thread count when not None (0 lets each framework
    decide). ``broker`` is where the run loop publishes.
    """

    images: Sequence[Path]
    backends: Sequence[str]
    detectors: Sequence[str]
    classifiers: Sequence[str]
    iterations: int = 20
    warmup: int = 3
    batch: int = 8
    threads: Optional[int] = None
    video: Optional[Path] = None
    video_frames: int = 100
    broker: str = "mqtt://127.0.0.1:1883"


@dataclass
class Frame:
    """A decoded input image and the faces the reference detector found in it."""

    name: str
    image: np.ndarray
    detections: Optional[list[Detection]] = None


class TimedAnalyzer:
    """Wraps a FaceAnalyzer for the run loop and records when each ``analyze`` call starts.

    The gaps between successive starts are the run loop's full period per
    frame: decoding, analysis, tracking, aggregation and publishing.
    """

    def __init__(self, analyzer: FaceAnalyzer) -> None:
        self.analyzer = analyzer
        self.call_starts: list[float] = []

    @property
    def last_timings_ms(self) -> dict[str, float]:
        return self.analyzer.last_timings_ms

    @property
    def models(self) -> Mapping[str, Mapping[str, Any]]:
        return self.analyzer.models

    def analyze(self, frame_bgr: np.ndarray) -> list[FaceResult]:
        self.call_starts.append(time.perf_counter())
        return self.analyzer.analyze(frame_bgr)

    def close(self) -> None:
        self.analyzer.close()


class StageBench:
    """Runs the stages against one model store and device profile, filling ``report``."""

    def __init__(
        self,
        settings: BenchSettings,
        store: ModelStore,
        profile: DeviceProfile,
        report: BenchReport,
        progress: Progress = print,
    ) -> None:
        self.settings = settings
        self.store = store
        self.profile = profile
        self.report = report
        self.progress = progress
        self.frames: list[Frame] = []

    # ------------------------------------------------------------------
    # Recording

    def measure(
        self,
        stage: str,
        name: str,
        backend: Optional[str],
        input_name: str,
        call: Callable[[], object],
        *,
        batch: Optional[int] = None,
        details: Optional[dict[str, Any]] = None,
        iterations: Optional[int] = None,
    ) -> StageResult:
        """Time ``call`` after the warm-up runs and record the result."""
        reset_peak_rss()
        samples = time_calls(call, iterations or self.settings.iterations, self.settings.warmup)
        stats = LatencyStats.from_samples(samples)
        result = StageResult(
            stage=stage,
            name=name,
            backend=backend,
            input=input_name,
            stats=stats,
            peak_rss_mib=round(peak_rss_mib(), 1),
            batch=batch,
            per_item_ms=stats.mean_ms / batch if batch else None,
            fps=1000.0 / stats.mean_ms if stage in ("analyze", "run_loop") and stats.mean_ms > 0 else None,
            details=details or {},
        )
        self.report.results.append(result)
        self._print(result)
        return result

    def skip(self, stage: str, name: str, backend: Optional[str], reason: str) -> None:
        """Record a stage that could not run."""
        self.report.skipped.append(Skipped(stage, name, backend, reason))
        self.progress(f"[{stage}] {name}{f' on {backend}' if backend else ''}: skipped: {reason}")

    def _print(self, result: StageResult) -> None:
        stats = result.stats
        where = f" on {result.backend}" if result.backend else ""
        batch = f" batch {result.batch}" if result.batch else ""
        fps = f", {result.fps:.1f} fps" if result.fps else ""
        self.progress(
            f"[{result.stage}] {result.name}{where} ({result.input}{batch}): mean {stats.mean_ms:.2f} ms, "
            f"p50 {stats.p50_ms:.2f}, p95 {stats.p95_ms:.2f}, min {stats.min_ms:.2f}{fps}, "
            f"peak RSS {result.peak_rss_mib:.0f} MiB"
        )

    # ------------------------------------------------------------------
    # Model loading

    def _profile(self) -> DeviceProfile:
        if self.settings.threads is None:
            return self.profile
        return self.profile.model_copy(update={"num_threads": self.settings.threads})

    def load(self, stage: str, name: str, backend: str) -> Optional[tuple[LoadedModel, float]]:
        """Load ``name`` on ``backend``; return the model and the load time in ms, or None after recording a skip."""
        try:
            package = self.store.open(name)
        except EdgeRuntimeError as exc:
            self.skip(stage, name, backend, str(exc))
            return None

        start = time.perf_counter()
        try:
            model = load_model(package, self._profile(), backend=backend)
        except EdgeRuntimeError as exc:
            self.skip(stage, name, backend, _first_line(exc))
            return None
        return model, (time.perf_counter() - start) * 1000.0

    # ------------------------------------------------------------------
    # Stages

    def run_decode(self) -> None:
        """Time ``read_image`` per input image and keep the decoded frames for the later stages."""
        for path in self.settings.images:
            image = read_image(path)
            height, width = image.shape[:2]
            self.frames.append(Frame(path.name, image))
            self.measure(
                "decode", "read_image", None, path.name, lambda path=path: read_image(path),
                details={"size": f"{width}x{height}", "file_kib": round(path.stat().st_size / 1024)},
            )

    def run_detect(self) -> None:
        """Time every detector on every backend and image; the profile's detector sets the reference faces."""
        reference = self.profile.models.detector
        ordered = sorted(self.settings.detectors, key=lambda name: name != reference)
        for name in ordered:
            for backend in self.settings.backends:
                loaded = self.load("detect", name, backend)
                if loaded is None:
                    continue
                model, load_ms = loaded
                with create_detector(model) as detector:
                    for frame in self.frames:
                        found = detector.detect(frame.image)
                        if frame.detections is None:
                            frame.detections = found
                        self.measure(
                            "detect", name, backend, frame.name, lambda image=frame.image: detector.detect(image),
                            details={"faces": len(found), "load_ms": round(load_ms, 1), "precision": model.precision},
                        )

        for frame in self.frames:
            if frame.detections is None:
                frame.detections = []

    def _face_crops_source(self) -> Optional[Frame]:
        with_faces = [frame for frame in self.frames if frame.detections]
        return with_faces[0] if with_faces else None

    def run_classifiers(self) -> None:
        """Time crop + preprocess per image and each classifier's inference at batch 1 and batch N."""
        source = self._face_crops_source()
        for name in self.settings.classifiers:
            if source is None:
                self.skip("classify", name, None, "no face was found in the input images; pass photos with faces")
                continue

            preprocessed = False
            for backend in self.settings.backends:
                loaded = self.load("classify", name, backend)
                if loaded is None:
                    continue
                model, load_ms = loaded
                try:
                    classifier = Classifier(model)
                except EdgeRuntimeError as exc:
                    model.close()
                    self.skip("classify", name, backend, _first_line(exc))
                    continue

                with classifier:
                    if not preprocessed:
                        self._preprocess(classifier)
                        preprocessed = True
                    self._classify(classifier, source, backend, load_ms)

    def _preprocess(self, classifier: Classifier) -> None:
        for frame in self.frames:
            if not frame.detections:
                continue
            detections = frame.detections
            self.measure(
                "preprocess", classifier.name, None, frame.name,
                lambda frame=frame, detections=detections: prepare_batch(
                    classifier.crops(frame.image, detections), classifier.spec
                ),
                batch=len(detections),
                details={"crop_rule": classifier.spec.crop.rule, "size": f"{classifier.spec.width}x{classifier.spec.height}"},
            )

    def _classify(self, classifier: Classifier, source: Frame, backend: str, load_ms: float) -> None:
        crops = classifier.crops(source.image, source.detections or [])
        session = classifier.model.session
        for batch in sorted({1, self.settings.batch}):
            faces = [crops[index % len(crops)] for index in range(batch)]
            prepared = prepare_batch(faces, classifier.spec)
            self.measure(
                "classify", classifier.name, backend, source.name, lambda prepared=prepared: session.run(prepared),
                batch=batch,
                details={"load_ms": round(load_ms, 1), "precision": classifier.model.precision},
            )

    def open_analyzer(self, backend: Optional[str]) -> Optional[FaceAnalyzer]:
        """Build the profile's analyzer, with every role forced onto ``backend`` when it is given."""
        label = backend or "profile"
        try:
            return FaceAnalyzer.from_store(self.store, self._profile(), backend=backend)
        except EdgeRuntimeError as exc:
            self.skip("analyze", self.profile.name, label, _first_line(exc))
            return None

    def run_analyze(self) -> None:
        """Time ``FaceAnalyzer.analyze`` per image with the profile's choice, then per forced backend."""
        for backend in [None, *self.settings.backends]:
            analyzer = self.open_analyzer(backend)
            if analyzer is None:
                continue
            with analyzer:
                models = " ".join(f"{role}={info['name']}@{info['backend']}" for role, info in analyzer.models.items())
                for frame in self.frames:
                    timings: dict[str, list[float]] = {}

                    def analyze(image: np.ndarray = frame.image) -> None:
                        analyzer.analyze(image)
                        for part, value in analyzer.last_timings_ms.items():
                            timings.setdefault(part, []).append(value)

                    faces = len(analyzer.analyze(frame.image))
                    result = self.measure(
                        "analyze", self.profile.name, backend or "profile", frame.name, analyze,
                        details={"faces": faces, "models": models},
                    )
                    # Warm-up calls are in ``timings`` too; keep only the timed runs.
                    count = result.stats.count
                    for part, values in timings.items():
                        result.details[f"{part}_ms"] = round(float(np.mean(values[-count:])), 2)

    def run_loop(self, video: Path, video_label: str) -> None:
        """Run the capture loop (source, analyzer, tracker, aggregator, MQTT) over ``video`` and time each frame."""
        analyzer = self.open_analyzer(None)
        if analyzer is None:
            return

        config = Config(
            source=SourceConfig(spec=str(video)),
            profile=self.profile.name,
            mqtt=MqttConfig(broker=self.settings.broker, device_id="bench", flush_timeout_s=1.0),
        )
        timed = TimedAnalyzer(analyzer)
        source = FrameSource(str(video))
        try:
            source.open()
            runner = Runner(config, timed, source, MqttPublisher(config.mqtt), profile_name=self.profile.name)
            reset_peak_rss()
            summary = runner.run(max_frames=self.settings.video_frames)
        except EdgeRuntimeError as exc:
            self.skip("run_loop", self.profile.name, None, _first_line(exc))
            return
        finally:
            source.close()
            timed.close()

        periods = list(np.diff(timed.call_starts) * 1000.0)[self.settings.warmup :]
        if not periods:
            self.skip(
                "run_loop", self.profile.name, None,
                f"the video gave {summary.frames_analyzed} frames, too few after {self.settings.warmup} warm-up frames",
            )
            return

        stats = LatencyStats.from_samples(periods)
        result = StageResult(
            stage="run_loop",
            name=self.profile.name,
            backend="profile",
            input=video_label,
            stats=stats,
            peak_rss_mib=round(peak_rss_mib(), 1),
            fps=1000.0 / stats.mean_ms,
            details={
                "frames": summary.frames_analyzed,
                "run_fps": round(summary.fps, 2),
                "windows": summary.windows_published,
                "mqtt_delivered": summary.delivered,
            },
        )
        self.report.results.append(result)
        self._print(result)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
