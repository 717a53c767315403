"""TFLite target: native export for Keras sources, onnx2tf for graphs that start as ONNX.

fp32 keeps float32 everywhere. fp16 stores float16 weights that the
interpreter dequantizes (or runs in fp16 on GPU delegates). int8 is full-integer
quantization: every op in int8 (``TFLITE_BUILTINS_INT8``), and int8 inputs
and outputs, with activation ranges calibrated on face crops. The runtime's
TFLite session quantizes float inputs and dequantizes outputs with the
tensors' scale and zero point, so callers keep feeding float32.

int8 comes in two recipes (``INT8_RECIPES``): ``full-int8`` as above, and
``float-ends``, which keeps the first convolution, the last convolution or
fully connected layer and the final softmax or logistic in float32
(TensorFlow's selective quantization through
``tf.lite.experimental.QuantizationDebugger``); every other op stays int8,
and the input and output are float32.

ONNX graphs go through onnx2tf, which rewrites NCHW graphs as NHWC inside.
Its ``-kat`` option keeps the input exactly as the ONNX graph declares it, so
every variant of a package shares one input contract.
"""

from __future__ import annotations

import logging
import shutil
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

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if not uint8_input:
            converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif precision != "fp32":
        raise ConversionError(f"unknown precision {precision!r}; choose fp32, fp16 or int8")


INT8_RECIPES = ("full-int8", "float-ends")
COMPUTE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL")
OUTPUT_ACTIVATIONS = ("SOFTMAX", "LOGISTIC")


def _representative(calibration: Callable[[], Iterable[np.ndarray]]):
    def representative_dataset():
        for batch in calibration():
            for i in range(len(batch)):
                yield [batch[i : i + 1]]

    return representative_dataset


def float_end_nodes(float_model: bytes) -> list[str]:
    """Return the output tensor names of the ops that the ``float-ends`` recipe keeps in float32.

    These are the first compute op, the last compute op (the classifier) and
    every softmax or logistic of the float32 model ``float_model``.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(float_model))
    subgraph = model.subgraphs[0]

    def op_name(op) -> str:
        return flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)

    def tensor_name(op) -> str:
        name = subgraph.tensors[op.outputs[0]].name
        return name.decode() if isinstance(name, bytes) else name

    compute = [tensor_name(op) for op in subgraph.operators if op_name(op) in COMPUTE_OPS]
    activations = [tensor_name(op) for op in subgraph.operators if op_name(op) in OUTPUT_ACTIVATIONS]
    return list(dict.fromkeys(compute[:1] + compute[-1:] + activations))


def quantize_float_ends(make_converter: Callable[[], object], calibration: Callable[[], Iterable[np.ndarray]],
                        name: str) -> bytes:
    """Return an int8 TFLite model with the ops of ``float_end_nodes`` in float32.

    ``make_converter()`` returns a fresh ``tf.lite.TFLiteConverter`` of the
    float model. Its input and output stay float32.
    """
    tf = import_tensorflow()
    float_model = make_converter().convert()
    float_nodes = float_end_nodes(float_model)
    logger.info("%s: keeping %s in float32", name, ", ".join(float_nodes))

    converter = make_converter()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(calibration)
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=float_nodes, fully_quantize=True)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=_representative(calibration), debug_options=options,
    )
    return debugger.get_nondebug_quantized_model()


def quantized_share(model_bytes: bytes) -> tuple[int, int]:
    """Return (int8, total) counts of the compute ops (COMPUTE_OPS) of a TFLite model.

    An op counts as int8 when its first input tensor is int8 or uint8.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    subgraph = model.subgraphs[0]
    integer_types = {flatbuffer_utils.schema_fb.TensorType.INT8, flatbuffer_utils.schema_fb.TensorType.UINT8}
    compute = [op for op in subgraph.operators
               if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) in COMPUTE_OPS]
    quantized = [op for op in compute if subgraph.tensors[op.inputs[0]].type in integer_types]
    return len(quantized), len(compute)


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


def convert_with(make_converter: Callable[[], object], output: Path, precision: str, calibration: Calibration,
                 uint8_input: bool, keys: Sequence[str], recipe: str = "full-int8") -> None:
    """Write ``output`` from the converters ``make_converter()`` returns, for ``precision`` and int8 ``recipe``."""
    tf = import_tensorflow()
    if recipe not in INT8_RECIPES:
        raise ConversionError(f"unknown TFLite int8 recipe {recipe!r}; choose one of {', '.join(INT8_RECIPES)}")
    with step(f"writing {output.name}"):
        try:
            if precision == "int8" and recipe == "float-ends":
                if calibration is None:
                    raise ConversionError("int8 TFLite export needs calibration data")
                model_bytes = quantize_float_ends(make_converter, calibration, output.name)
            else:
                converter = make_converter()
                configure_converter(tf, converter, precision, calibration, uint8_input=uint8_input)
                model_bytes = converter.convert()
        except ConversionError:
            raise
        except Exception as exc:
            raise ConversionError(f"the TFLite converter failed for {output.name}: {exc}") from exc
    output.write_bytes(reorder_outputs(model_bytes, keys))


def export_tflite_from_saved_model(saved_model_dir: Path, output: Path, precision: str,
                                   calibration: Calibration, uint8_input: bool,
                                   output_names: Sequence[str], recipe: str = "full-int8") -> None:
    """Write ``output`` from a SavedModel for ``precision``, outputs in ``output_names`` order."""
    tf = import_tensorflow()
    keys = signature_output_keys(tf, saved_model_dir, output_names)
    convert_with(lambda: tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir)), output, precision,
                 calibration, uint8_input, keys, recipe)


class OnnxToTflite:
    """Converts one fp32 ONNX graph to TFLite once and writes each precision from it."""

    def __init__(self, onnx_fp32: Path, input_name: str, output_names: Sequence[str], keep_nhwc: bool) -> None:
        self._onnx = onnx_fp32
        self._output_names = list(output_names)
        self._input_name = input_name
        self._keep_nhwc = keep_nhwc
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        self._saved_model: Optional[Path] = None

    def export(self, output: Path, precision: str, calibration: Calibration, uint8_input: bool,
               recipe: str = "full-int8") -> None:
        if self._saved_model is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="edge-convert-tf-")
            self._saved_model = Path(self._tmp.name) / "saved_model"
            # onnx2tf saves its simplified graph over the file it reads, so it gets a copy.
            onnx_copy = Path(self._tmp.name) / self._onnx.name
            shutil.copyfile(self._onnx, onnx_copy)
            onnx_to_saved_model(onnx_copy, self._saved_model, self._input_name, self._keep_nhwc)
        export_tflite_from_saved_model(self._saved_model, output, precision, calibration, uint8_input,
                                       self._output_names, recipe)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._saved_model = None
