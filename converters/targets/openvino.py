"""OpenVINO IR target (``.xml`` graph plus ``.bin`` weights), converted from the fp32 ONNX graph.

fp32 keeps float32 weights. fp16 stores the weights as float16
(``compress_to_fp16``); OpenVINO decompresses them at load time and runs in
the precision that the device configuration requests. int8 is NNCF post-training quantization
calibrated on face crops (NNCF quantizes weights per channel). Optionally the
first convolution and the last MatMul (the classifier) stay in float.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from converters.deps import require
from converters.errors import ConversionError
from converters.progress import step

logger = logging.getLogger(__name__)


def float_end_ops(model) -> list[str]:
    """Return the friendly names of the first Convolution and the last MatMul of an OpenVINO model."""
    ops = list(model.get_ordered_ops())
    convolutions = [op.get_friendly_name() for op in ops if op.get_type_name() == "Convolution"]
    matmuls = [op.get_friendly_name() for op in ops if op.get_type_name() == "MatMul"]
    return convolutions[:1] + matmuls[-1:]


def export_openvino(onnx_fp32: Path, output_xml: Path, precision: str,
                    calibration: Callable[[], Iterable[np.ndarray]] | None = None,
                    preset: str = "performance", float_ends: bool = False) -> list[Path]:
    """Write ``output_xml`` and its ``.bin`` for ``precision``; return both paths.

    ``preset`` is NNCF's quantization preset for int8: ``performance``
    (symmetric activations) or ``mixed`` (asymmetric activations). With
    ``float_ends`` the ops of ``float_end_ops`` go into NNCF's ignored scope
    and NNCF runs its full bias correction (``fast_bias_correction=False``),
    which is slower but fits the biases on the calibration set.
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
            model = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                                  preset=presets.get(preset, nncf.QuantizationPreset.PERFORMANCE), **options)

    ov.save_model(model, str(output_xml), compress_to_fp16=precision == "fp16")
    return [output_xml, output_xml.with_suffix(".bin")]
