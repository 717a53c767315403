"""The per-frame pipeline: detect faces, crop them per model, classify them in batches.

Roles name what a model is used for: ``detector`` plus the classifier roles
``emotion``, ``age``, ``gender`` and ``ethnicity``. Each classifier role
takes only its own fields from its model's output (``emotion`` also takes
valence, arousal and features). One multi-task package may serve several
roles: it is loaded once and run once per frame, and every role it serves
reads its fields from that one run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.loader import LoadedModel, load_model
from edge_runtime.memory import trim_heap
from edge_runtime.models.store import ModelStore
from edge_runtime.profiles import DeviceProfile
from edge_runtime.vision.classifiers import Classifier, FaceAttributes
from edge_runtime.vision.detectors import FaceDetector, create_detector
from edge_runtime.vision.types import Detection, FaceResult

logger = logging.getLogger(__name__)

DETECTOR_ROLE = "detector"
CLASSIFIER_ROLES = ("emotion", "age", "gender", "ethnicity")
ROLES = (DETECTOR_ROLE,) + CLASSIFIER_ROLES

# FaceResult fields each classifier role fills.
ROLE_FIELDS = {
    "emotion": ("emotions", "valence", "arousal", "features"),
    "age": ("age",),
    "gender": ("gender",),
    "ethnicity": ("ethnicity",),
}

# The head each role needs its model to have.
ROLE_HEADS = {"emotion": "emotion", "age": "age", "gender": "gender", "ethnicity": "ethnicity"}


@dataclass(frozen=True)
class ModelInfo:
    """Identity of the model serving one role, as published on the status topic."""

    name: str
    version: str
    backend: str
    precision: str
    sha256: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "backend": self.backend,
            "precision": self.precision,
            "sha256": dict(self.sha256),
        }


def describe_model(model: LoadedModel) -> ModelInfo:
    """Return the ModelInfo of a loaded model."""
    return ModelInfo(
        name=model.manifest.name,
        version=str(model.manifest.version),
        backend=model.backend,
        precision=model.precision,
        sha256=dict(model.files),
    )


class FaceAnalyzer:
    """Detect faces in a BGR frame and classify each one with the models of the configured roles.

    ``classifiers`` maps roles to classifiers; one classifier object may
    serve several roles and then runs once per frame. The analyzer owns the
    detector and the classifiers and closes them in ``close()``.

    ``detection_interval`` k runs the full detector on every k-th frame of
    ``analyze`` (the first frame included). On the frames between, a
    detector with a ``track(frame, previous)`` method (MTCNN: O-Net alone)
    re-locates the faces of the frame before, and any other detector runs in
    full. Faces that enter the picture are then found up to k - 1 frames
    late. 1 runs the full detector on every frame.

    Attributes:
        last_timings_ms: milliseconds spent in the last ``analyze`` call per
            stage: ``detect`` (the full detector or its track step), one
            entry per classifier role, and ``total``. Roles served by one
            multi-task model report the same run, so they must not be
            summed. Image decoding is not included.
        last_detection_full: whether the last ``analyze`` call ran the full
            detector rather than its track step.
    """

    def __init__(
        self,
        detector: FaceDetector,
        classifiers: Mapping[str, Classifier],
        *,
        detection_interval: int = 1,
    ) -> None:
        if isinstance(detection_interval, bool) or not isinstance(detection_interval, int) or detection_interval < 1:
            raise ConfigError(
                f"detection_interval is {detection_interval!r}; it must be a whole number of frames, 1 or more"
            )

        unknown = sorted(set(classifiers) - set(CLASSIFIER_ROLES))
        if unknown:
            raise ConfigError(f"unknown classifier role(s) {unknown}; roles are {list(CLASSIFIER_ROLES)}")

        for role, classifier in classifiers.items():
            if ROLE_HEADS[role] not in classifier.heads:
                raise ConfigError(
                    f"model {classifier.name!r} cannot serve the {role} role: it has no {ROLE_HEADS[role]!r} "
                    f"head (heads: {classifier.heads}); choose another model for {role}"
                )

        self.detector = detector
        self.classifiers = dict(classifiers)
        self.detection_interval = detection_interval
        self.last_timings_ms: dict[str, float] = {}
        self.last_detection_full = False
        self._closed = False
        self._frames_since_detection = 0
        self._previous: list[Detection] = []

    @classmethod
    def from_store(
        cls,
        store: ModelStore,
        profile: Optional[DeviceProfile] = None,
        *,
        models: Optional[Mapping[str, Optional[str]]] = None,
        backend: Optional[str] = None,
        backends: Optional[Mapping[str, str]] = None,
        precision: Optional[str] = None,
        detector_options: Optional[Mapping[str, Any]] = None,
        detection_interval: int = 1,
    ) -> "FaceAnalyzer":
        """Load the models of every role from ``store`` and build the analyzer.

        Role models come from ``profile.models`` and are overridden by
        ``models``, where None switches a role off. ``backend`` overrides the
        backend of every role and ``backends`` that of single roles; without
        either, the loader picks per model from the profile's order for the
        role and records its choice in ``selections``. ``detector_options``
        default to the profile's ``detection.detector_options`` when the
        detector is the profile's own, else to the detector's defaults.
        ``detection_interval`` is passed to the analyzer (see the class).

        Raises:
            ConfigError: no detector is configured, a role is unknown, or a
                model cannot serve its role.
            ModelNotFoundError, IntegrityError, BackendError: from the loader.
        """
        chosen = _role_models(profile, models)
        if not chosen.get(DETECTOR_ROLE):
            raise ConfigError(
                "no face detector is configured; set models.detector in the device profile or pass --detector NAME"
            )

        overrides = dict(backends or {})
        unknown = sorted(set(overrides) - set(ROLES))
        if unknown:
            raise ConfigError(f"backend override for unknown role(s) {unknown}; roles are {list(ROLES)}")

        # One load per (model, backend): a multi-task package serving several roles loads once.
        loaded: dict[tuple[str, Optional[str]], LoadedModel] = {}
        selections: dict[str, dict[str, Any]] = {}
        if detector_options is None and profile is not None:
            # The profile's detector options are tuned for the profile's detector, because MTCNN and
            # BlazeFace scores differ and max_pyramid_pixels is MTCNN's. Another detector runs with its defaults.
            if chosen[DETECTOR_ROLE] == profile.models.detector:
                detector_options = profile.detection.detector_options
            elif profile.detection.detector_options:
                logger.info(
                    "detector %s replaces the profile's %s; the profile's detector options %s are not applied",
                    chosen[DETECTOR_ROLE], profile.models.detector, dict(profile.detection.detector_options),
                )

        def load(role: str) -> tuple[tuple[str, Optional[str]], LoadedModel]:
            role_backend = overrides.get(role, backend)
            key = (chosen[role], role_backend)
            if key not in loaded:
                logger.info("loading model %s for %s (backend: %s)", key[0], role, role_backend or "from profile")
                loaded[key] = load_model(
                    store.open(key[0]), profile, backend=role_backend, precision=precision, role=role
                )
            selection = loaded[key].selection
            if selection is not None:
                selections[role] = selection.as_dict()
            return key, loaded[key]

        try:
            _, detector_model = load(DETECTOR_ROLE)
            detector = create_detector(detector_model, **dict(detector_options or {}))

            built: dict[tuple[str, Optional[str]], Classifier] = {}
            classifiers: dict[str, Classifier] = {}
            for role in CLASSIFIER_ROLES:
                if not chosen.get(role):
                    continue
                key, model = load(role)
                if key not in built:
                    built[key] = Classifier(model)
                classifiers[role] = built[key]

            analyzer = cls(detector, classifiers, detection_interval=detection_interval)
            # Backend choice per role (backend, variant, precision, reason, skipped) for the status topic.
            analyzer.selections = selections
        except BaseException:
            for model in loaded.values():
                model.close()
            raise

        # Graph parsing and optimization freed tens of MiB that glibc would keep in the RSS:
        # MTCNN, the B0 stand-in, age and gender on ONNX Runtime peaked at 222 instead of
        # 249 MiB over 20 video frames (x86-64, onnxruntime 1.32).
        released = trim_heap()
        logger.debug("returned the heap freed by model loading to the kernel: %s", released)
        return analyzer

    @property
    def models(self) -> dict[str, dict[str, Any]]:
        """Per role: model name, version, backend, precision and sha256 of each loaded file."""
        described = {DETECTOR_ROLE: describe_model(self.detector.model).as_dict()}
        for role, classifier in self.classifiers.items():
            described[role] = describe_model(classifier.model).as_dict()
        return described

    def analyze(self, frame_bgr: np.ndarray) -> list[FaceResult]:
        """Return one FaceResult per face found in a uint8 BGR frame, highest detection score first."""
        self._check_open()
        start = time.perf_counter()

        detections = self._detect(frame_bgr)
        detect_ms = (time.perf_counter() - start) * 1000.0

        results, timings = self._classify(frame_bgr, detections)
        self.last_timings_ms = {"detect": detect_ms, **timings, "total": (time.perf_counter() - start) * 1000.0}
        return results

    def classify(self, frame_bgr: np.ndarray, detections: Sequence[Detection]) -> list[FaceResult]:
        """Classify faces found elsewhere (another detector, a tracker) in a uint8 BGR frame.

        ``last_timings_ms`` then has no ``detect`` entry and ``total`` covers
        the classifiers only.
        """
        self._check_open()
        start = time.perf_counter()

        results, timings = self._classify(frame_bgr, detections)
        self.last_timings_ms = {**timings, "total": (time.perf_counter() - start) * 1000.0}
        return results

    def reset_tracking(self) -> None:
        """Forget the faces of the frame before, so the next ``analyze`` runs the full detector."""
        self._frames_since_detection = 0
        self._previous = []

    def _detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        """Run the full detector or, between two full runs, its track step on the faces of the frame before."""
        track = getattr(self.detector, "track", None)
        # The counter starts at 0 and restarts at 1 after each full run, so the
        # full detector runs on frames 1, k + 1, 2k + 1, ... of the stream.
        due = self._frames_since_detection % self.detection_interval == 0
        if due or track is None:
            detections = self.detector.detect(frame_bgr)
            self.last_detection_full = True
            self._frames_since_detection = 1
        else:
            detections = track(frame_bgr, self._previous)
            self.last_detection_full = False
            self._frames_since_detection += 1

        if self.detection_interval > 1:
            self._previous = list(detections)
        return detections

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("the FaceAnalyzer is closed; create a new one")

    def _classify(
        self, frame_bgr: np.ndarray, detections: Sequence[Detection]
    ) -> tuple[list[FaceResult], dict[str, float]]:
        """Run each distinct classifier once on all faces; return the results and the ms per role."""
        results = [FaceResult(detection=detection) for detection in detections]
        timings: dict[str, float] = {}
        done: dict[int, list[FaceAttributes]] = {}
        for role, classifier in self.classifiers.items():
            role_start = time.perf_counter()
            if id(classifier) not in done:
                done[id(classifier)] = classifier.classify(frame_bgr, detections)
                timings[role] = (time.perf_counter() - role_start) * 1000.0
            else:
                shared_by = next(r for r, c in self.classifiers.items() if c is classifier)
                timings[role] = timings[shared_by]

            fields = ROLE_FIELDS[role]
            for index, attributes in enumerate(done[id(classifier)]):
                results[index] = replace(results[index], **{f: getattr(attributes, f) for f in fields})

        # Ethnicity comes from any model that outputs it when no role names one.
        if "ethnicity" not in self.classifiers:
            for attributes in done.values():
                if attributes and attributes[0].ethnicity is not None:
                    results = [replace(r, ethnicity=a.ethnicity) for r, a in zip(results, attributes)]
                    break
        return results, timings

    def close(self) -> None:
        """Close the detector and every classifier; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        self.detector.close()
        for classifier in {id(c): c for c in self.classifiers.values()}.values():
            classifier.close()

    def __enter__(self) -> "FaceAnalyzer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _role_models(profile: Optional[DeviceProfile], models: Optional[Mapping[str, Optional[str]]]) -> dict[str, Optional[str]]:
    """Merge the profile's default role models with explicit overrides (None switches a role off)."""
    chosen: dict[str, Optional[str]] = {}
    if profile is not None:
        chosen.update(profile.models.model_dump())

    for role, name in (models or {}).items():
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}; roles are {list(ROLES)}")
        chosen[role] = name
    return chosen
