"""ONNX target: the fp32 graph every other target starts from, plus fp16 and int8 variants.

fp32: the source's exporter writes the graph, then the input and outputs get
stable names, the batch axis becomes dynamic and onnxslim folds constants and
removes redundant nodes (the result is checked with ``onnx.checker``).
fp16: weights and activations in float16 with float32 inputs and outputs
(``onnxruntime.transformers.float16``), so callers feed the same arrays.
int8: ONNX Runtime static quantization in QDQ format, per-channel weights,
activations calibrated on face crops. Optionally the first convolution and
the final classifier (the last Gemm or MatMul, and Softmax) stay in float,
the layers whose rounding moves the top-1 class most. ``to_int8_accuracy_control``
quantizes with NNCF's ONNX backend instead, whose accuracy control returns
the layers to float that cost the most top-1 agreement on the selection set.
Both write QDQ graphs. ``to_int8`` can also write the QOperator format
(QLinearConv and friends), which ONNX Runtime fuses and rounds differently.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from converters.deps import require
from converters.errors import ConversionError
from converters.progress import step
from converters.selection import SelectionSet

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17


def _onnx():
    return require("onnx", "write ONNX variants")


def rename_io(model, input_name: str, output_names: Sequence[str]) -> None:
    """Rename the graph's first input and its outputs in place, fixing every reference."""
    graph = model.graph
    renames = {}
    if graph.input and graph.input[0].name != input_name:
        renames[graph.input[0].name] = input_name
    for output, new in zip(graph.output, output_names):
        if output.name != new:
            renames[output.name] = new

    for old, new in renames.items():
        for node in graph.node:
            node.input[:] = [new if name == old else name for name in node.input]
            node.output[:] = [new if name == old else name for name in node.output]
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            if value.name == old:
                value.name = new


def make_batch_dynamic(model, batch_name: str = "batch") -> None:
    """Make axis 0 of every graph input and output symbolic."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims):
            dims[0].ClearField("dim_value")
            dims[0].dim_param = batch_name


def opset_of(model) -> int:
    """Return the default-domain opset version of an ONNX model."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def finalize_fp32(raw: Path, output: Path, input_name: str, output_names: Sequence[str]) -> int:
    """Name the I/O, make the batch dynamic, simplify and check; return the opset."""
    onnx = _onnx()
    model = onnx.load(str(raw))
    rename_io(model, input_name, output_names)
    make_batch_dynamic(model)

    try:
        onnxslim = require("onnxslim", "simplify ONNX graphs")
        with step(f"simplifying {output.name} with onnxslim"):
            model = onnxslim.slim(model)
    except ConversionError:
        raise
    except Exception as exc:  # onnxslim gives up on some graphs; the unsimplified one is still valid
        logger.warning("onnxslim could not simplify %s (%s); keeping the graph as exported", output.name, exc)

    onnx.checker.check_model(model)
    onnx.save(model, str(output))
    return opset_of(model)


def sort_nodes(graph) -> None:
    """Order ``graph.node`` topologically in place (the float16 pass appends its input casts last)."""
    available = {value.name for value in graph.input} | {init.name for init in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [node for node in pending if all(name in available for name in node.input)]
        if not ready:
            raise ConversionError("the ONNX graph has a cycle or a dangling input; cannot sort its nodes")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [node for node in pending if node not in ready]
    copies = [type(node)() for node in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def to_fp16(source: Path, output: Path) -> None:
    """Write a float16 copy of ``source`` that keeps float32 inputs and outputs."""
    onnx = _onnx()
    float16 = require("onnxruntime.transformers.float16", "convert ONNX graphs to float16", package="onnxruntime")
    model = onnx.load(str(source))
    converted = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    sort_nodes(converted.graph)
    onnx.checker.check_model(converted)
    onnx.save(converted, str(output))


class _Reader:
    """Feeds calibration batches to ONNX Runtime's quantizer."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self._input_name = input_name
        self._iterator = iter(batches)

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        batch = next(self._iterator, None)
        return None if batch is None else {self._input_name: batch}

    def rewind(self) -> None:  # part of the CalibrationDataReader interface; one pass is enough
        pass


def float_end_nodes(model) -> list[str]:
    """Return the names of the first Conv, the classifier and every Softmax node of ``model``.

    The classifier is the last Gemm or MatMul, or the last Conv in a fully
    convolutional graph (mini-Xception ends in a Conv and a global pool).
    The graph's nodes must be in topological order (ONNX requires it). Nodes
    without a name are skipped, because the quantizer excludes nodes by name.
    """
    nodes = list(model.graph.node)
    convs = [node.name for node in nodes if node.op_type == "Conv" and node.name]
    classifiers = [node.name for node in nodes if node.op_type in ("Gemm", "MatMul") and node.name] or convs[1:]
    softmaxes = [node.name for node in nodes if node.op_type == "Softmax" and node.name]
    return convs[:1] + classifiers[-1:] + softmaxes


def to_int8(source: Path, output: Path, input_name: str,
            calibration: Callable[[], Iterable[np.ndarray]], method: str = "minmax",
            float_ends: bool = False, qoperator: bool = False) -> None:
    """Quantize ``source`` statically to int8 (QDQ, per-channel weights, uint8 activations).

    ``method`` is ``minmax``, ``entropy`` or ``percentile`` (ONNX Runtime's
    calibration methods). With ``float_ends`` the nodes of ``float_end_nodes``
    are left out of quantization and run in float32. With ``qoperator`` the
    graph uses ONNX Runtime's QOperator format (QLinearConv, QLinearMatMul...)
    instead of QDQ pairs; its kernels fuse and round differently.
    """
    quantization = require("onnxruntime.quantization", "quantize ONNX graphs to int8", package="onnxruntime")
    methods = {
        "minmax": quantization.CalibrationMethod.MinMax,
        "entropy": quantization.CalibrationMethod.Entropy,
        "percentile": quantization.CalibrationMethod.Percentile,
    }

    with tempfile.TemporaryDirectory(prefix="edge-convert-ort-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
        except Exception as exc:  # pre-processing only helps; quantization works without it
            logger.debug("quant_pre_process failed on %s (%s); quantizing the graph as is", source, exc)
            shutil.copyfile(source, prepared)

        excluded = float_end_nodes(_onnx().load(str(prepared))) if float_ends else []
        if excluded:
            logger.info("%s: keeping %s in float32", output.name, ", ".join(excluded))

        with step(f"calibrating and quantizing {output.name} ({method})"):
            quantization.quantize_static(
                str(prepared), str(output), _Reader(input_name, calibration()),
                quant_format=quantization.QuantFormat.QOperator if qoperator else quantization.QuantFormat.QDQ,
                per_channel=True,
                activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8,
                calibrate_method=methods[method],
                nodes_to_exclude=excluded,
            )


COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger")
LAYOUT_OPS = ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "MaxPool")


def quantized_share(model) -> tuple[int, int]:
    """Return (quantized, total) counts of the convolutions and matrix products of a QDQ or QOperator graph.

    A QDQ node counts as quantized when its data input comes from a
    DequantizeLinear node, directly or through ops that only move values
    (``LAYOUT_OPS``); a QOperator node (QLinearConv, QLinearMatMul,
    ConvInteger...) is quantized by its type.
    """
    producers = {output: node for node in model.graph.node for output in node.output}

    def from_dequantize(name: str) -> bool:
        node = producers.get(name)
        while node is not None and node.op_type in LAYOUT_OPS and node.input:
            node = producers.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    compute = [node for node in model.graph.node if node.op_type in COMPUTE_OPS + QOPERATOR_OPS]
    quantized = [node for node in compute
                 if node.op_type in QOPERATOR_OPS or (node.input and from_dequantize(node.input[0]))]
    return len(quantized), len(compute)


def to_int8_accuracy_control(source: Path, output: Path, input_name: str,
                             calibration: Callable[[], Iterable[np.ndarray]], selection: SelectionSet,
                             max_drop: float = 0.01) -> None:
    """Quantize ``source`` with NNCF's ONNX backend and its accuracy control on ``selection``.

    NNCF reverts the layers whose quantization costs the most top-1
    agreement until the drop from the float graph's agreement on the
    selection set is at most ``max_drop`` (absolute). Activations are
    quantized per tensor, because ONNX Runtime's QLinearConv rejects the
    per-channel input zero points that NNCF otherwise gives depthwise
    convolutions.
    """
    onnx = _onnx()
    nncf = require("nncf", "quantize ONNX graphs with accuracy control")
    from nncf.quantization import advanced_parameters as advanced
    import onnxruntime

    def make_runner(model) -> Callable[[np.ndarray], list[np.ndarray]]:
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return lambda sample: session.run(None, {input_name: sample})

    samples = [{input_name: batch[i : i + 1]} for batch in calibration() for i in range(len(batch))]
    items, validate = selection.validation(make_runner)
    with step(f"quantizing {output.name} with NNCF accuracy control on {len(selection)} selection samples"):
        model = nncf.quantize_with_accuracy_control(
            onnx.load(str(source)), nncf.Dataset(samples),
            nncf.Dataset(items, lambda row: {input_name: selection.batch[row : row + 1]}),
            validate, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(samples),
            advanced_quantization_parameters=advanced.AdvancedQuantizationParameters(
                activations_quantization_params=advanced.QuantizationParameters(per_channel=False)),
        )
    onnx.save(model, str(output))
