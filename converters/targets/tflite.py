"""TFLite target: native export for Keras sources, onnx2tf for graphs that start as ONNX.

fp32 keeps float32 everywhere. fp16 stores float16 weights that the
interpreter dequantizes (or runs in fp16 on GPU delegates). int8 is full-integer
quantization: every op in int8 (``TFLITE_BUILTINS_INT8``), and int8 inputs
and outputs, with activation ranges calibrated on face crops. The runtime's
TFLite session quantizes float inputs and dequantizes outputs with the
tensors' scale and zero point, so callers keep feeding float32.

ONNX graphs go through onnx2tf, which rewrites NCHW graphs as NHWC inside.
Its ``-kat`` option keeps the input exactly as the ONNX graph declares it, so
every variant of a package shares one input contract.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from converters.deps import require
from converters.errors import ConversionError
from converters.progress import step
from converters.tf_env import import_tensorflow

logger = logging.getLogger(__name__)

Calibration = Optional[Callable[[], Iterable[np.ndarray]]]


def configure_converter(tf, converter, precision: str, calibration: Calibration, uint8_input: bool = False) -> None:
    """Set a ``tf.lite.TFLiteConverter`` up for ``precision``."""
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        if calibration is None:
            raise ConversionError("int8 TFLite export needs calibration data")

        def representative_dataset():
            for batch in calibration():
                for i in range(len(batch)):
                    yield [batch[i : i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if not uint8_input:
            converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif precision != "fp32":
        raise ConversionError(f"unknown precision {precision!r}; choose fp32, fp16 or int8")


def onnx_to_saved_model(onnx_fp32: Path, saved_model_dir: Path, input_name: str, keep_nhwc: bool) -> None:
    """Convert an fp32 ONNX graph to a TensorFlow SavedModel with onnx2tf, keeping the input layout."""
    require("onnx2tf", "convert ONNX graphs to TFLite")
    keep_flag = "-kt" if keep_nhwc else "-kat"
    command = [sys.executable, "-m", "onnx2tf", "-i", str(onnx_fp32), "-o", str(saved_model_dir),
               keep_flag, input_name, "-osd", "-coion", "-n"]
    with step(f"converting {onnx_fp32.name} to TensorFlow with onnx2tf"):
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not (saved_model_dir / "saved_model.pb").is_file():
        tail = (result.stdout + result.stderr).strip()[-1500:]
        raise ConversionError(f"onnx2tf failed on {onnx_fp32} (exit {result.returncode}): {tail}")


def reorder_outputs(model_bytes: bytes, keys: Sequence[str]) -> bytes:
    """Return the TFLite model with its outputs in the order of the signature output ``keys``.

    The TFLite converter orders a model's outputs by its own rules (by
    signature key, or by tensor name), so a graph whose outputs are
    ``logits`` then ``features`` can come out reversed. The signature def
    still maps each key to its tensor, which fixes the order here. The
    manifest's output heads index outputs by position, so this matters.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    if len(keys) < 2:
        return model_bytes
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    if not model.signatureDefs:
        return model_bytes
    signature = model.signatureDefs[0]
    by_key = {entry.name.decode() if isinstance(entry.name, bytes) else entry.name: entry.tensorIndex
              for entry in signature.outputs}
    missing = [key for key in keys if key not in by_key]
    if missing:
        raise ConversionError(f"the TFLite signature has outputs {sorted(by_key)}, not {list(keys)}")

    subgraph = model.subgraphs[signature.subgraphIndex]
    subgraph.outputs = [by_key[key] for key in keys]
    signature.outputs = sorted(signature.outputs, key=lambda entry: list(keys).index(
        entry.name.decode() if isinstance(entry.name, bytes) else entry.name))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def signature_output_keys(tf, saved_model_dir: Path, output_names: Sequence[str]) -> list[str]:
    """Return the SavedModel's signature output keys in ONNX output order."""
    signature = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    available = list(signature.structured_outputs)
    if all(name in available for name in output_names):
        return list(output_names)
    if all(f"output_{i}" in available for i in range(len(output_names))):
        return [f"output_{i}" for i in range(len(output_names))]  # onnx2tf's names, in ONNX output order
    raise ConversionError(f"cannot match the SavedModel outputs {available} to the ONNX outputs {list(output_names)}")


def export_tflite_from_saved_model(saved_model_dir: Path, output: Path, precision: str,
                                   calibration: Calibration, uint8_input: bool,
                                   output_names: Sequence[str]) -> None:
    """Write ``output`` from a SavedModel for ``precision``, outputs in ``output_names`` order."""
    tf = import_tensorflow()
    keys = signature_output_keys(tf, saved_model_dir, output_names)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    configure_converter(tf, converter, precision, calibration, uint8_input=uint8_input)
    with step(f"writing {output.name}"):
        try:
            model_bytes = converter.convert()
        except Exception as exc:
            raise ConversionError(f"the TFLite converter failed for {output.name}: {exc}") from exc
    output.write_bytes(reorder_outputs(model_bytes, keys))


class OnnxToTflite:
    """Converts one fp32 ONNX graph to TFLite once and writes each precision from it."""

    def __init__(self, onnx_fp32: Path, input_name: str, output_names: Sequence[str], keep_nhwc: bool) -> None:
        self._onnx = onnx_fp32
        self._output_names = list(output_names)
        self._input_name = input_name
        self._keep_nhwc = keep_nhwc
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        self._saved_model: Optional[Path] = None

    def export(self, output: Path, precision: str, calibration: Calibration, uint8_input: bool) -> None:
        if self._saved_model is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="edge-convert-tf-")
            self._saved_model = Path(self._tmp.name) / "saved_model"
            onnx_to_saved_model(self._onnx, self._saved_model, self._input_name, self._keep_nhwc)
        export_tflite_from_saved_model(self._saved_model, output, precision, calibration, uint8_input,
                                       self._output_names)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._saved_model = None
