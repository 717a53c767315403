"""The framework-neutral view of a loaded source model that every target exports from.

A source loader (``converters.sources``) turns a file into a ``SourceModel``:
the manifest fields it can infer (task, labels, input contract, output heads)
plus one ``Stage`` per network. A stage can run the source framework itself
(the parity reference) and export an fp32 ONNX graph with a dynamic batch,
which is the common starting point of the ONNX and OpenVINO targets. A stage
may also offer a native TFLite export (Keras sources do), which the TFLite
target prefers over converting the ONNX graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from edge_runtime.manifest import InputSpec, OutputHead, Provenance, Task

logger = logging.getLogger(__name__)

# Takes a batch in the stage's input layout and dtype, returns the outputs in order.
ReferenceRunner = Callable[[np.ndarray], list[np.ndarray]]

# Writes an fp32 ONNX file with a dynamic batch axis at the given opset.
OnnxExporter = Callable[[Path, int], None]

# Writes a .tflite file for a precision ("fp32", "fp16", "int8"); the iterable
# yields calibration batches for int8 and is None otherwise. The last argument
# is the int8 recipe (``converters.targets.tflite.INT8_RECIPES``).
TfliteExporter = Callable[[Path, str, Optional[Callable[[], Iterable[np.ndarray]]], str], None]


@dataclass
class Stage:
    """One network of a source model.

    Attributes:
        name: ``main``, or the stage name of a multi-network model (``pnet``...).
        input_shape: one sample's shape in the graph's layout, without the batch
            axis. ``None`` marks a dimension the graph leaves free (P-Net's
            height and width).
        input_dtype: numpy dtype name of the graph input.
        input_name: the graph input's name in exported files.
        output_names: names given to the outputs in exported files, in order.
        reference: runs the source framework on a batch.
        export_onnx: writes the fp32 ONNX graph.
        export_tflite: native TFLite export, or None to convert the ONNX graph.
        input_spec: the stage's own input contract when it differs from the
            model's (MTCNN's P-Net and R-Net take other sizes than O-Net).
        detector_stage: ``pnet``, ``rnet`` or ``onet`` for an MTCNN stage, whose
            calibration and parity inputs are the windows the runtime's MTCNN
            feeds that stage; None for models that take face crops.
    """

    name: str
    input_shape: tuple[Optional[int], ...]
    input_dtype: str
    input_name: str
    output_names: list[str]
    reference: ReferenceRunner
    export_onnx: OnnxExporter
    export_tflite: Optional[TfliteExporter] = None
    input_spec: Optional[InputSpec] = None
    detector_stage: Optional[str] = None

    def spec_for(self, model_input: InputSpec) -> InputSpec:
        """Return the input contract of this stage: its own, else the model's."""
        return self.input_spec or model_input


@dataclass
class SourceModel:
    """A loaded source model and the manifest facts derived from it.

    ``notes`` lists what the loader had to do (a rebuilt architecture, a
    stubbed class), for the report and the log.
    """

    name: str
    kind: str
    task: Task
    input: InputSpec
    outputs: list[OutputHead]
    labels: Optional[list[str]]
    stages: list[Stage]
    provenance: Provenance
    description: str = ""
    notes: list[str] = field(default_factory=list)
    source_path: Optional[Path] = None
    source_sha256: Optional[str] = None

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage {name!r}; stages are {[s.name for s in self.stages]}")

    @property
    def classification_head(self) -> Optional[OutputHead]:
        """The head that top-1 agreement is measured on, if the model has a class head."""
        for head in self.outputs:
            if head.kind in ("logits", "probabilities") and head.labels:
                return head
        return None


def head_columns(head: OutputHead, outputs: Sequence[np.ndarray], output_names: Sequence[str]) -> np.ndarray:
    """Return the slice of ``outputs`` that ``head`` describes, flattened to (batch, columns)."""
    if isinstance(head.tensor, int):
        array = outputs[head.tensor]
    else:
        array = outputs[list(output_names).index(head.tensor)]
    array = np.asarray(array).reshape(len(array), -1)
    if head.columns is not None:
        start, stop = head.columns
        array = array[:, start:stop]
    return array
