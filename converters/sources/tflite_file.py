"""TFLite sources: a ``.tflite`` model converted to ONNX (tf2onnx) and from there to the other targets.

The reference for parity is the TFLite interpreter running the source file.
A quantized source is dequantized at its outputs by the same rules as the
runtime's TFLite session, so the comparison is in float. TFLite variants
are written again from the ONNX graph through onnx2tf, which is how fp16
and int8 variants of a TFLite source come about.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge_runtime.backends import get_backend
from edge_runtime.manifest import Provenance, Task, sha256_file

from converters import contract
from converters.deps import require
from converters.errors import ConversionError, ModelContractError
from converters.source_model import SourceModel, Stage
from converters.sources import LoadOptions

logger = logging.getLogger(__name__)


def load_tflite(path: Path, options: LoadOptions) -> SourceModel:
    """Load a single-input TFLite image model as a SourceModel."""
    try:
        session = get_backend("tflite").load(path)
    except Exception as exc:
        raise ConversionError(f"{path}: the TFLite interpreter cannot load the model: {exc}") from exc

    if len(session.inputs) != 1:
        raise ModelContractError(f"{path}: the model has {len(session.inputs)} inputs; only single-image models are supported")
    shape = session.inputs[0].shape
    if len(shape) != 4:
        raise ModelContractError(f"{path}: input shape {shape} is not a 4-D image batch")
    _, height, width, channels = shape
    contract.check_fixed_size(options.input_size, (width, height), path)

    sha256 = sha256_file(path)
    base = contract.catalog_base(sha256, options, path)
    input_spec = contract.build_input_spec(
        options, width=width, height=height, color="gray" if channels == 1 else "rgb", layout="nhwc",
        scale=1.0 / 255.0, mean=[0.0], std=[1.0], base=base.input if base else None,
    )

    output_names = [f"output_{i}" for i in range(len(session.outputs))]
    probe = session.run(np.zeros((1, height, width, channels), dtype=np.float32))
    if options.task:
        task = Task(options.task)
    elif base is not None:
        task = Task(base.task)
    else:
        task = Task.EMOTION
    if base is not None and options.labels is None:
        outputs, labels = list(base.outputs), base.labels
    else:
        width_out = int(np.prod(probe[0].shape[1:]))
        kind = "probabilities" if np.allclose(probe[0].sum(axis=-1), 1.0, atol=2e-2) else "logits"
        outputs = [contract.class_head(task.value, width_out, options.labels, kind, tensor=0)]
        labels = options.labels

    def reference(batch: np.ndarray) -> list[np.ndarray]:
        return session.run(batch.astype(np.float32))

    # NOTE: tf2onnx keeps the fixed batch of 1 of a full-integer source (fer's
    # emotion_model_quantized.tflite) in its Reshape nodes, so batches above 1 fail and
    # the parity check rejects the ONNX and OpenVINO variants. Float TFLite sources convert.
    def export_onnx(destination: Path, opset: int) -> None:
        tf2onnx = require("tf2onnx", "convert TFLite models to ONNX")
        try:
            tf2onnx.convert.from_tflite(str(path), opset=opset, output_path=str(destination))
        except Exception as exc:
            raise ConversionError(f"{path}: tf2onnx cannot convert the TFLite model: {exc}") from exc

    stage = Stage(name="main", input_shape=(height, width, channels), input_dtype="float32", input_name="input",
                  output_names=output_names, reference=reference, export_onnx=export_onnx)
    return SourceModel(
        name=options.name or (base.name if base else path.stem.lower().replace("_", "-")),
        kind="tflite", task=task, input=input_spec, outputs=outputs, labels=labels, stages=[stage],
        provenance=base.provenance if base else Provenance(source=f"TFLite file {path.name} (sha256 {sha256})", license="unknown"),
        description=base.description if base else f"Converted from {path.name}",
        notes=[f"input dtype {session.inputs[0].dtype}; the reference runs through the runtime's TFLite session"],
        source_path=path, source_sha256=sha256,
    )
