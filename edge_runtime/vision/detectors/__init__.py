"""Face detectors behind one interface: ``FaceDetector.detect(frame_bgr) -> list[Detection]``.

``create_detector`` picks the implementation from the model package's
structure. An MTCNN package has the stages pnet, rnet and onet. A BlazeFace
package has one network with a 128x128 (short range) or 192x192 (full
range) input.
"""

from __future__ import annotations

import logging
from typing import Any

from edge_runtime.errors import ConfigError
from edge_runtime.loader import LoadedModel
from edge_runtime.manifest import Task
from edge_runtime.vision.detectors.base import DetectorOptions, FaceDetector, non_max_suppression
from edge_runtime.vision.detectors.blazeface import BlazeFaceDetector
from edge_runtime.vision.detectors.mtcnn import STAGES as MTCNN_STAGES
from edge_runtime.vision.detectors.mtcnn import MtcnnDetector

logger = logging.getLogger(__name__)

__all__ = [
    "BlazeFaceDetector",
    "DetectorOptions",
    "FaceDetector",
    "MtcnnDetector",
    "create_detector",
    "non_max_suppression",
]

_COMMON_OPTIONS = {"min_face_size", "score_threshold", "nms_threshold", "max_faces"}
_MTCNN_OPTIONS = {"scale_factor", "stage_thresholds", "max_pyramid_pixels"}


def create_detector(model: LoadedModel, **options: Any) -> FaceDetector:
    """Create the detector that runs ``model``, a ``LoadedModel`` of a face_detection package.

    ``options`` are the fields of ``DetectorOptions`` (min_face_size,
    score_threshold, nms_threshold, max_faces) and, for MTCNN only,
    ``scale_factor``, ``stage_thresholds`` and ``max_pyramid_pixels``. The
    detector takes ownership of ``model`` and closes it in ``close()``.

    Raises:
        ConfigError: the model is not a face detector, its structure matches
            no known detector, or an option is unknown or out of range.
    """
    manifest = model.manifest
    if manifest.task != Task.FACE_DETECTION.value:
        raise ConfigError(
            f"model {manifest.name!r} has task {manifest.task!r}; the detector role needs a face_detection model"
        )

    stages = set(model.sessions)
    is_mtcnn = set(MTCNN_STAGES) <= stages
    allowed = _COMMON_OPTIONS | (_MTCNN_OPTIONS if is_mtcnn else set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown detector option(s) {unknown} for model {manifest.name!r}; allowed: {sorted(allowed)}"
        )

    common = DetectorOptions(**{k: v for k, v in options.items() if k in _COMMON_OPTIONS})
    specific = {k: v for k, v in options.items() if k in _MTCNN_OPTIONS}

    if is_mtcnn:
        logger.debug("model %s: MTCNN detector", manifest.name)
        return MtcnnDetector(model, common, **specific)

    if len(stages) == 1:
        logger.debug("model %s: BlazeFace detector", manifest.name)
        return BlazeFaceDetector(model, common)

    raise ConfigError(
        f"model {manifest.name!r} has stages {sorted(stages)}, which match no known detector; "
        f"MTCNN needs {list(MTCNN_STAGES)} and BlazeFace a single network"
    )
