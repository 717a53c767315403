"""OpenVINO IR target (``.xml`` graph plus ``.bin`` weights), converted from the fp32 ONNX graph.

fp32 keeps float32 weights. fp16 stores the weights as float16
(``compress_to_fp16``); OpenVINO decompresses them at load time and runs in
the precision that the device configuration requests. int8 is NNCF post-training quantization
calibrated on face crops.
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


def export_openvino(onnx_fp32: Path, output_xml: Path, precision: str,
                    calibration: Callable[[], Iterable[np.ndarray]] | None = None,
                    preset: str = "performance") -> list[Path]:
    """Write ``output_xml`` and its ``.bin`` for ``precision``; return both paths.

    ``preset`` is NNCF's quantization preset for int8: ``performance``
    (symmetric activations) or ``mixed`` (asymmetric activations).
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
            model = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                                  preset=presets.get(preset, nncf.QuantizationPreset.PERFORMANCE))

    ov.save_model(model, str(output_xml), compress_to_fp16=precision == "fp16")
    return [output_xml, output_xml.with_suffix(".bin")]
