"""Result types shared by detectors, classifiers and the capture loop.

Coordinates are pixels of the original frame, ``x`` to the right and ``y``
down. Boxes are ``(x1, y1, x2, y2)`` floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One face found by a detector.

    ``landmarks`` is an ``(N, 2)`` array or None. MTCNN gives five points in
    the order left eye, right eye, nose, left mouth corner, right mouth
    corner ("left" as seen in the image); BlazeFace gives six (eyes, nose,
    mouth, ear tragions).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: Optional[np.ndarray] = None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@dataclass(frozen=True)
class AgeEstimate:
    """Age in years: the top-L expectation and the standard deviation over those classes."""

    years: float
    spread: float


@dataclass(frozen=True)
class FaceResult:
    """Classifier results for one detected face.

    Distributions map canonical labels to probabilities that sum to 1.
    Fields are None when no model for that attribute is configured.
    ``features`` is the penultimate-layer descriptor when the emotion model
    exports one; it stays on the device and is never published.
    """

    detection: Detection
    emotions: Optional[dict[str, float]] = None
    valence: Optional[float] = None
    arousal: Optional[float] = None
    age: Optional[AgeEstimate] = None
    gender: Optional[dict[str, float]] = None
    ethnicity: Optional[dict[str, float]] = None
    features: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def dominant_emotion(self) -> Optional[str]:
        if not self.emotions:
            return None
        return max(self.emotions, key=self.emotions.get)
