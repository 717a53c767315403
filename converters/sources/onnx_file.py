"""ONNX sources: an existing ONNX graph converted to OpenVINO, TFLite and other precisions.

The reference for parity is ONNX Runtime running the source file itself.
The graph keeps its own input and output names and its opset, because
``--opset`` applies only to graphs the converters export themselves. A file
whose sha256 is pinned in the runtime's catalog brings its manifest facts.
Otherwise the input shape decides the layout (a dimension of 1 or 3 after
the batch means NCHW), and the user's options fill in the rest.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from edge_runtime.manifest import OutputHead, Provenance, Task, sha256_file

from converters import contract
from converters.deps import require
from converters.errors import ConversionError, ModelContractError
from converters.source_model import SourceModel, Stage
from converters.sources import LoadOptions

logger = logging.getLogger(__name__)


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def load_onnx(path: Path, options: LoadOptions) -> SourceModel:
    """Load an ONNX classifier as a SourceModel."""
    onnx = require("onnx", "read ONNX models")
    ort = require("onnxruntime", "run ONNX models for the parity reference")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ConversionError(f"{path}: not a readable ONNX model: {exc}") from exc

    initializers = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise ModelContractError(f"{path}: the graph has {len(inputs)} inputs; only single-image models are supported")
    dims = _dims(inputs[0])
    if len(dims) != 4:
        raise ModelContractError(f"{path}: input {inputs[0].name!r} has shape {dims}; expected a 4-D image batch")

    layout = "nchw" if dims[1] in (1, 3) else "nhwc"
    channels, height, width = (dims[1], dims[2], dims[3]) if layout == "nchw" else (dims[3], dims[1], dims[2])
    contract.check_fixed_size(options.input_size, (width, height), path)
    if width is None or height is None:
        if options.input_size is None:
            raise ModelContractError(f"{path}: the input size is dynamic; pass --input-size WxH")
        width, height = options.input_size

    sha256 = sha256_file(path)
    base = contract.catalog_base(sha256, options, path)

    input_spec = contract.build_input_spec(
        options, width=width, height=height, color="gray" if channels == 1 else "rgb", layout=layout,
        scale=1.0 / 255.0, mean=[0.0], std=[1.0], base=base.input if base else None,
    )

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]
    sample_shape = (1, channels, height, width) if layout == "nchw" else (1, height, width, channels)
    probe = session.run(None, {inputs[0].name: np.zeros(sample_shape, dtype=np.float32)})
    widths = [int(np.prod(o.shape[1:])) for o in probe]

    if options.task:
        task = Task(options.task)
    elif base is not None:
        task = Task(base.task)
    else:
        task = Task.EMOTION
    if base is not None and options.labels is None:
        outputs = list(base.outputs)
        labels = base.labels
    else:
        kind = "probabilities" if np.allclose(probe[0].sum(axis=-1), 1.0, atol=1e-3) else "logits"
        outputs = [contract.class_head(task.value, widths[0], options.labels, kind, tensor=0)]
        outputs += [OutputHead(name=name, tensor=i, kind="raw") for i, name in enumerate(output_names[1:], start=1)]
        labels = options.labels
    for head in outputs:
        if head.labels is not None and head.columns is None and isinstance(head.tensor, int):
            contract.check_labels(head.labels, widths[head.tensor], head.name, path)

    input_name = inputs[0].name

    def reference(batch: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {input_name: batch.astype(np.float32)})

    def export_onnx(destination: Path, opset: int) -> None:
        shutil.copyfile(path, destination)

    stage = Stage(name="main", input_shape=tuple(sample_shape[1:]), input_dtype="float32", input_name=input_name,
                  output_names=output_names, reference=reference, export_onnx=export_onnx)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return SourceModel(
        name=options.name or (base.name if base else path.stem.lower().replace("_", "-")),
        kind="onnx", task=task, input=input_spec, outputs=outputs, labels=labels, stages=[stage],
        provenance=base.provenance if base else Provenance(source=f"ONNX file {path.name} (sha256 {sha256})", license="unknown"),
        description=base.description if base else f"Converted from {path.name}",
        notes=[f"source ONNX opset {opset}, IR version {model.ir_version}; the graph keeps its opset"],
        source_path=path, source_sha256=sha256,
    )
