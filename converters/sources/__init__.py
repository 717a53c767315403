"""Source loaders, one module per source format, and format detection.

``detect_format`` reads a file's magic bytes (never its pickle payload) and
``load_source`` dispatches to the loader of that format, which returns a
``converters.source_model.SourceModel``.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from converters.errors import UnknownFormatError
from converters.source_model import SourceModel

logger = logging.getLogger(__name__)

FORMATS = ("timm-pickle", "keras-h5", "onnx", "tflite", "mtcnn-facenet")

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_MTCNN_FILES = ("pnet.pt", "rnet.pt", "onet.pt")


@dataclass
class LoadOptions:
    """User declarations about the source; None lets the loader infer the value.

    Attributes:
        name: package name.
        task: manifest task (emotion, age, gender, ...).
        labels: class names of the primary head, in output order.
        input_size: (width, height) in pixels the model must accept.
        color, layout: input colour order and tensor layout.
        scale, mean, std: normalization ``(pixel * scale - mean) / std``.
        trust_pickle: allow unpickling, which runs code from the file.
        preprocessing_in_graph: export a graph taking uint8 NHWC BGR crops.
        features_output: add the penultimate features as a second output.
        architecture: timm architecture name to rebuild a pickle into.
    """

    name: Optional[str] = None
    task: Optional[str] = None
    labels: Optional[list[str]] = None
    input_size: Optional[tuple[int, int]] = None
    color: Optional[str] = None
    layout: Optional[str] = None
    scale: Optional[float] = None
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    trust_pickle: bool = False
    preprocessing_in_graph: bool = False
    features_output: bool = False
    architecture: Optional[str] = None
    extra: dict = field(default_factory=dict)


def detect_format(path: Path) -> str:
    """Return the source format of ``path`` from its magic bytes and layout.

    Raises:
        UnknownFormatError: the file or directory matches no supported format.
    """
    path = Path(path)
    if path.is_dir():
        if all((path / name).is_file() for name in _MTCNN_FILES):
            return "mtcnn-facenet"
        raise UnknownFormatError(
            f"{path}: a directory is accepted only as facenet-pytorch MTCNN weights "
            f"({', '.join(_MTCNN_FILES)}), and these files are missing"
        )
    if not path.is_file():
        raise UnknownFormatError(f"{path}: source model file not found")

    with open(path, "rb") as handle:
        head = handle.read(16)

    if head.startswith(_HDF5_MAGIC):
        return "keras-h5"
    if head[4:8] == b"TFL3":
        return "tflite"
    if head.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
            return "timm-pickle"
        if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
            raise UnknownFormatError(
                f"{path}: a Keras 3 '.keras' archive is not supported; save the model as HDF5 "
                "(model.save('model.h5')) and convert that"
            )
    if head[:1] == b"\x80":
        return "timm-pickle"  # a legacy (non-zip) torch.save file starts with a pickle protocol byte
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":
        return "onnx"

    raise UnknownFormatError(
        f"{path}: unknown model format (first bytes {head[:8]!r}); supported sources are "
        f"{', '.join(FORMATS)}: a torch.save pickle of a timm model (.pt), Keras HDF5 (.h5/.hdf5), "
        "ONNX (.onnx), TFLite (.tflite) or a directory with facenet-pytorch pnet.pt/rnet.pt/onet.pt"
    )


def load_source(path: Path, options: LoadOptions, source_format: Optional[str] = None) -> SourceModel:
    """Load ``path`` with the loader of ``source_format`` (detected when None)."""
    source_format = source_format or detect_format(path)
    logger.info("%s: loading as %s", path, source_format)

    if source_format == "keras-h5":
        from converters.sources.keras_h5 import load_keras_h5

        return load_keras_h5(Path(path), options)
    if source_format == "timm-pickle":
        from converters.sources.timm_pickle import load_timm_pickle

        return load_timm_pickle(Path(path), options)
    if source_format == "onnx":
        from converters.sources.onnx_file import load_onnx

        return load_onnx(Path(path), options)
    if source_format == "tflite":
        from converters.sources.tflite_file import load_tflite

        return load_tflite(Path(path), options)
    if source_format == "mtcnn-facenet":
        from converters.sources.mtcnn_facenet import load_mtcnn_facenet

        return load_mtcnn_facenet(Path(path), options)
    raise UnknownFormatError(f"unknown source format {source_format!r}; choose one of {', '.join(FORMATS)}")
