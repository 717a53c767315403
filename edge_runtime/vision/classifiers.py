"""Face classifiers: crop, preprocess and run one model on all faces of a frame, then decode its heads.

The manifest's output heads define what each output (or column range of an
output) means. Head names this module decodes:

* ``emotion``: class scores over ``labels``, reported under the canonical
  names of ``manifest.CANONICAL_EMOTIONS`` (``happy`` becomes ``happiness``).
* ``valence``, ``arousal``: one regression value each.
* ``age``: either class probabilities whose ages are ``class_values``,
  decoded as the expectation over the ``top_l`` most probable classes,
  ``sum(a_l * p_l) / sum(p_l)`` (Eq. 1 of "Facial expression and attributes
  recognition based on multi-task learning of lightweight neural
  networks"), with the weighted standard deviation over the same classes as
  the spread. Or one regression column in years, reported with spread 0.
* ``gender``, ``ethnicity``: class probabilities over ``labels``. A gender
  head with one column is the probability of ``positive_label``.
* ``features``: the descriptor vector, kept as float32.

Kinds: ``logits`` get a softmax (a sigmoid when the head has one column),
``sigmoid`` heads get a sigmoid, the other kinds are used as they are.
Other head names are ignored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from edge_runtime.errors import BackendError, ManifestError
from edge_runtime.loader import LoadedModel
from edge_runtime.manifest import CANONICAL_EMOTIONS, Manifest, OutputHead
from edge_runtime.vision.crop import crop_face
from edge_runtime.vision.preprocess import prepare_batch
from edge_runtime.vision.types import AgeEstimate, Detection

logger = logging.getLogger(__name__)

DECODED_HEADS = ("emotion", "valence", "arousal", "age", "gender", "ethnicity", "features")


@dataclass(frozen=True)
class FaceAttributes:
    """Attributes one classifier decoded for one face; fields of heads the model lacks stay None."""

    emotions: Optional[dict[str, float]] = None
    valence: Optional[float] = None
    arousal: Optional[float] = None
    age: Optional[AgeEstimate] = None
    gender: Optional[dict[str, float]] = None
    ethnicity: Optional[dict[str, float]] = None
    features: Optional[np.ndarray] = field(default=None, repr=False)


def softmax(values: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the row maximum so exp() cannot overflow."""
    shifted = values - values.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(values, -80.0, 80.0)))


def expected_age(probabilities: np.ndarray, class_values: np.ndarray, top_l: Optional[int]) -> AgeEstimate:
    """Decode one row of age-class probabilities into years and spread.

    The age is ``sum(a_l * p_l) / sum(p_l)`` over the ``top_l`` most probable
    classes (all classes when None). The spread is the standard deviation of
    the class ages, weighted by the same renormalized probabilities.
    """
    count = len(probabilities) if top_l is None else min(top_l, len(probabilities))
    top = np.argsort(-probabilities, kind="stable")[:count]
    weights = probabilities[top].astype(np.float64)
    ages = class_values[top].astype(np.float64)

    total = weights.sum()
    if total <= 0.0:
        # Every top probability is 0, which only a broken model produces: fall back to equal weights.
        weights = np.ones_like(weights)
        total = float(count)
    years = float((ages * weights).sum() / total)
    spread = float(np.sqrt((weights * (ages - years) ** 2).sum() / total))
    return AgeEstimate(years=years, spread=spread)


def _distribution(labels: Sequence[str], row: np.ndarray) -> dict[str, float]:
    return {label: float(value) for label, value in zip(labels, row)}


class _HeadDecoder:
    """Locate one head's values in the model outputs and decode them into FaceAttributes fields."""

    def __init__(self, head: OutputHead, manifest: Manifest, output_names: Sequence[str]) -> None:
        self.head = head
        self.name = head.name
        origin = f"model {manifest.name!r}, head {head.name!r}"

        if isinstance(head.tensor, int):
            if not 0 <= head.tensor < len(output_names):
                raise ManifestError(
                    f"{origin}: tensor index {head.tensor} is out of range; the model has "
                    f"{len(output_names)} output(s): {', '.join(output_names)}"
                )
            self.index = head.tensor
        else:
            if head.tensor not in output_names:
                raise ManifestError(
                    f"{origin}: no output tensor is called {head.tensor!r}; outputs: {', '.join(output_names)}"
                )
            self.index = list(output_names).index(head.tensor)

        self.labels = head.labels
        if self.labels is None and head.name in ("emotion", "gender", "ethnicity") and manifest.labels is not None:
            self.labels = manifest.labels

        if head.name == "emotion":
            self.labels = self._canonical_emotions(self.labels, origin)
        elif head.name in ("gender", "ethnicity") and self.labels is None:
            raise ManifestError(f"{origin}: a {head.name} head needs labels; add labels to the head in the manifest")

        self.class_values: Optional[np.ndarray] = None
        if head.name == "age" and head.kind != "regression":
            self.class_values = self._age_values(head, origin)

    @staticmethod
    def _canonical_emotions(labels: Optional[list[str]], origin: str) -> list[str]:
        if labels is None:
            raise ManifestError(f"{origin}: an emotion head needs labels; add labels to the head or the manifest")
        unknown = [label for label in labels if label.lower() not in CANONICAL_EMOTIONS]
        if unknown:
            raise ManifestError(
                f"{origin}: emotion label(s) {unknown} have no canonical name; use one of "
                f"{sorted(set(CANONICAL_EMOTIONS))}"
            )
        return [CANONICAL_EMOTIONS[label.lower()] for label in labels]

    @staticmethod
    def _age_values(head: OutputHead, origin: str) -> np.ndarray:
        if head.class_values is not None:
            return np.asarray(head.class_values, dtype=np.float64)
        if head.labels is not None:
            try:
                return np.asarray([float(label) for label in head.labels], dtype=np.float64)
            except ValueError:
                pass
        raise ManifestError(
            f"{origin}: an age class head needs class_values (the age in years of each class), "
            "or numeric labels, or kind: regression"
        )

    def values(self, outputs: Sequence[np.ndarray], batch: int) -> np.ndarray:
        """Return this head's (batch, columns) values, with the kind's activation applied."""
        raw = np.asarray(outputs[self.index])
        if raw.shape[0] != batch:
            raise BackendError(
                f"head {self.name!r}: the model returned {raw.shape[0]} rows for a batch of {batch}; "
                "its batch axis must come first"
            )
        values = raw.reshape(batch, -1).astype(np.float32, copy=False)
        if self.head.columns is not None:
            start, stop = self.head.columns
            if stop > values.shape[1]:
                raise ManifestError(
                    f"head {self.name!r}: columns [{start}, {stop}) exceed the output's {values.shape[1]} columns"
                )
            values = values[:, start:stop]
        self._check_width(values.shape[1])

        kind = self.head.kind
        if kind == "logits" and values.shape[1] > 1:
            return softmax(values)
        if kind in ("logits", "sigmoid"):
            return sigmoid(values)
        return values

    def _check_width(self, width: int) -> None:
        """Raise ManifestError when the head's labels or class values do not match its column count."""
        if self.class_values is not None and len(self.class_values) != width:
            expected = f"{len(self.class_values)} class_values"
        elif self.labels is not None and self.name != "gender" and len(self.labels) != width:
            expected = f"{len(self.labels)} labels"
        elif self.name == "gender" and width not in (1, len(self.labels)):
            expected = f"1 column or {len(self.labels)} labels"
        else:
            return
        raise ManifestError(
            f"head {self.name!r}: the model outputs {width} column(s) but the manifest gives {expected}; "
            "fix the head's labels, class_values or columns"
        )

    def decode(self, row: np.ndarray) -> dict[str, Any]:
        """Return the FaceAttributes fields this head fills for one face."""
        if self.name == "emotion":
            return {"emotions": _distribution(self.labels, row)}
        if self.name in ("valence", "arousal"):
            return {self.name: float(row[0])}
        if self.name == "age":
            if self.class_values is None:
                return {"age": AgeEstimate(years=float(row[0]), spread=0.0)}
            return {"age": expected_age(row, self.class_values, self.head.top_l)}
        if self.name == "gender":
            return {"gender": self._binary_or_distribution(row)}
        if self.name == "ethnicity":
            return {"ethnicity": _distribution(self.labels, row)}
        if self.name == "features":
            return {"features": np.array(row, dtype=np.float32)}
        return {}

    def _binary_or_distribution(self, row: np.ndarray) -> dict[str, float]:
        if len(row) == 1 and len(self.labels) == 2:
            positive = self.head.positive_label or self.labels[1]
            negative = self.labels[0] if positive == self.labels[1] else self.labels[1]
            probability = float(row[0])
            return {positive: probability, negative: 1.0 - probability}
        return _distribution(self.labels, row)


class Classifier:
    """Runs one classification model on all faces of a frame in one batch.

    ``model`` is a ``LoadedModel`` (``.manifest`` and ``.session``); the
    classifier owns it and closes it in ``close()``.

    Raises:
        ManifestError: a head names a missing tensor or lacks the labels or
            class values its decoding needs, or the model has no head this
            module decodes.
    """

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.manifest: Manifest = model.manifest
        self.spec = self.manifest.input
        self._session = model.session

        output_names = [spec.name for spec in self._session.outputs]
        self._decoders = [
            _HeadDecoder(head, self.manifest, output_names) for head in self.manifest.outputs if head.name in DECODED_HEADS
        ]
        if not self._decoders:
            declared = [head.name for head in self.manifest.outputs] or "none"
            raise ManifestError(
                f"model {self.manifest.name!r} declares no head a classifier decodes (declared: {declared}); "
                f"name its outputs one of {list(DECODED_HEADS)}"
            )

    @property
    def name(self) -> str:
        """Name of the model package."""
        return self.manifest.name

    @property
    def heads(self) -> list[str]:
        """Names of the heads this classifier decodes, in manifest order."""
        return [decoder.name for decoder in self._decoders]

    def crops(self, frame_bgr: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        """Cut and resize one uint8 BGR crop per detection, following the manifest's crop rule."""
        return [crop_face(frame_bgr, detection, self.spec) for detection in detections]

    def run(self, crops: Sequence[np.ndarray]) -> list[FaceAttributes]:
        """Classify crops already at the input size, all in one batch; one result per crop, in order."""
        if len(crops) == 0:
            return []

        outputs = self._session.run(prepare_batch(crops, self.spec))
        columns = [decoder.values(outputs, len(crops)) for decoder in self._decoders]

        results = []
        for face in range(len(crops)):
            fields: dict[str, Any] = {}
            for decoder, values in zip(self._decoders, columns):
                fields.update(decoder.decode(values[face]))
            results.append(FaceAttributes(**fields))
        return results

    def classify(self, frame_bgr: np.ndarray, detections: Sequence[Detection]) -> list[FaceAttributes]:
        """Crop every detected face of the frame and classify them in one batch."""
        return self.run(self.crops(frame_bgr, detections))

    def close(self) -> None:
        """Release the model's sessions."""
        self.model.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
