"""OpenVINO IR target (``.xml`` graph plus ``.bin`` weights), converted from the fp32 ONNX graph.

fp32 keeps float32 weights. fp16 stores the weights as float16
(``compress_to_fp16``); OpenVINO decompresses them at load time and runs in
the precision that the device configuration requests. int8 is NNCF post-training quantization
calibrated on face crops (NNCF quantizes weights per channel). Optionally the
first convolution and the last MatMul (the classifier) stay in float, or
NNCF's accuracy control (``nncf.quantize_with_accuracy_control``) returns
the layers to float whose quantization costs the most top-1 agreement on the
selection set, one by one, until the agreement drop is at most ``max_drop``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from converters.deps import require
from converters.errors import ConversionError
from converters.progress import step
from converters.selection import SelectionSet

logger = logging.getLogger(__name__)


def float_end_ops(model) -> list[str]:
    """Return the friendly names of the first Convolution and the classifier of an OpenVINO model.

    The classifier is the last MatMul, or the last Convolution in a fully
    convolutional model.
    """
    ops = list(model.get_ordered_ops())
    convolutions = [op.get_friendly_name() for op in ops if op.get_type_name() == "Convolution"]
    matmuls = [op.get_friendly_name() for op in ops if op.get_type_name() == "MatMul"] or convolutions[1:]
    return convolutions[:1] + matmuls[-1:]


COMPUTE_OPS = ("Convolution", "GroupConvolution", "MatMul")
LAYOUT_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Convert")


def quantized_share(model) -> tuple[int, int]:
    """Return (quantized, total) counts of an OpenVINO model's convolutions and MatMuls.

    An op counts as quantized when its data input comes from a FakeQuantize,
    which is how NNCF marks an int8 op, directly or through ops that only
    move or select values (``LAYOUT_OPS``: a flatten before a MatMul, say).
    """
    def from_fake_quantize(node) -> bool:
        while node.get_type_name() in LAYOUT_OPS:
            node = node.input_value(0).get_node()
        return node.get_type_name() == "FakeQuantize"

    ops = [op for op in model.get_ordered_ops() if op.get_type_name() in COMPUTE_OPS]
    quantized = [op for op in ops if from_fake_quantize(op.input_value(0).get_node())]
    return len(quantized), len(ops)


def _compiled_runner(model) -> Callable[[np.ndarray], list[np.ndarray]]:
    def run(sample: np.ndarray) -> list[np.ndarray]:
        result = model(sample)
        return [np.asarray(result[output]) for output in model.outputs]

    return run


def export_openvino(onnx_fp32: Path, output_xml: Path, precision: str,
                    calibration: Callable[[], Iterable[np.ndarray]] | None = None,
                    preset: str = "performance", float_ends: bool = False,
                    selection: Optional[SelectionSet] = None, max_drop: float = 0.01) -> list[Path]:
    """Write ``output_xml`` and its ``.bin`` for ``precision``; return both paths.

    ``preset`` is NNCF's quantization preset for int8: ``performance``
    (symmetric activations) or ``mixed`` (asymmetric activations). With
    ``float_ends`` the ops of ``float_end_ops`` go into NNCF's ignored scope
    and NNCF runs its full bias correction (``fast_bias_correction=False``),
    which is slower but fits the biases on the calibration set. With
    ``selection`` NNCF's accuracy control runs instead of plain quantization,
    judged by top-1 agreement with the source on the selection set, and
    stops once the drop from the float model's agreement is at most
    ``max_drop`` (absolute).
    """
    ov = require("openvino", "write OpenVINO IR variants")
    try:
        model = ov.convert_model(str(onnx_fp32))
    except Exception as exc:
        raise ConversionError(f"{onnx_fp32}: OpenVINO cannot convert the ONNX graph: {exc}") from exc

    if precision == "int8":
        if calibration is None:
            raise ConversionError("int8 OpenVINO export needs calibration data")
        nncf = require("nncf", "quantize OpenVINO models to int8")
        samples = [batch[i : i + 1] for batch in calibration() for i in range(len(batch))]
        with step(f"quantizing {output_xml.name} with NNCF on {len(samples)} crops"):
            presets = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
            options = {}
            if float_ends:
                ignored = float_end_ops(model)
                logger.info("%s: keeping %s in float32", output_xml.name, ", ".join(ignored))
                options = {"ignored_scope": nncf.IgnoredScope(names=ignored), "fast_bias_correction": False}
            options["preset"] = presets.get(preset, nncf.QuantizationPreset.PERFORMANCE)
            if selection is None:
                model = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples), **options)
            else:
                items, validate = selection.validation(_compiled_runner)
                model = nncf.quantize_with_accuracy_control(
                    model, nncf.Dataset(samples), nncf.Dataset(items, lambda row: selection.batch[row : row + 1]),
                    validate, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(samples),
                    **options,
                )
        quantized, total = quantized_share(model)
        logger.info("%s: %d of %d convolutions and MatMuls run in int8", output_xml.name, quantized, total)

    ov.save_model(model, str(output_xml), compress_to_fp16=precision == "fp16")
    return [output_xml, output_xml.with_suffix(".bin")]
