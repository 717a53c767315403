"""Keras HDF5 sources: mini-Xception (fer), MobileNet emotion models, multi-task heads.

The file is read with tf-keras (Keras 2), which is what these models were
saved with. Each Keras output becomes one named output of every variant, so a
multi-task model keeps its age, gender and ethnicity heads apart. The head
kind follows the output layer's activation: softmax gives probabilities,
sigmoid gives sigmoid, linear gives regression for one value and logits for
several.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from edge_runtime.manifest import OutputHead, Provenance, Task, sha256_file

from converters import contract
from converters.errors import ConversionError, ModelContractError
from converters.source_model import SourceModel, Stage
from converters.sources import LoadOptions
from converters.tf_env import import_tensorflow, import_tf_keras

logger = logging.getLogger(__name__)


def _activation_kind(layer, width: int) -> str:
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", "linear")
    if name == "softmax" or type(layer).__name__ == "Softmax":
        return "probabilities"
    if name == "sigmoid":
        return "sigmoid"
    return "regression" if width == 1 else "logits"


def _clean_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name.split("/")[0]).strip("_") or "output"


def _bake_preprocessing(keras, tf, model, spec) -> object:
    """Wrap ``model`` so that it takes uint8 NHWC BGR crops at the input size."""
    norm = spec.normalization
    scale = float(norm.scale)
    mean = np.asarray(norm.mean, dtype=np.float32)
    std = np.asarray(norm.std, dtype=np.float32)
    color = spec.color

    def preprocess(pixels):
        x = tf.cast(pixels, tf.float32)
        if color == "rgb":
            x = tf.reverse(x, axis=[-1])
        elif color == "gray":
            # ITU-R BT.601 luma on BGR channels, as cv2.COLOR_BGR2GRAY computes it.
            x = tf.reduce_sum(x * tf.constant([0.114, 0.587, 0.299], tf.float32), axis=-1, keepdims=True)
        return (x * scale - mean) / std

    inputs = keras.Input(shape=(spec.height, spec.width, 3), dtype="uint8", name="image_bgr")
    outputs = model(keras.layers.Lambda(preprocess, name="preprocessing")(inputs))
    return keras.Model(inputs, outputs, name=f"{model.name}_uint8")


def load_keras_h5(path: Path, options: LoadOptions) -> SourceModel:
    """Load a Keras 2 HDF5 model and describe it as a SourceModel."""
    tf = import_tensorflow()
    keras = import_tf_keras()

    sha256 = sha256_file(path)
    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise ConversionError(f"{path}: tf-keras cannot load the HDF5 model: {exc}") from exc

    if len(model.inputs) != 1:
        raise ModelContractError(f"{path}: the model has {len(model.inputs)} inputs; only single-image models are supported")
    _, height, width, channels = model.inputs[0].shape
    if channels not in (1, 3):
        raise ModelContractError(f"{path}: input has {channels} channels; expected 1 (gray) or 3 (colour), NHWC")
    contract.check_fixed_size(options.input_size, (width, height), path)
    if width is None or height is None:
        if options.input_size is None:
            raise ModelContractError(f"{path}: the model accepts any input size; pass --input-size WxH")
        width, height = options.input_size

    # A catalog entry (pinned by sha256, or named with --catalog-entry) carries the manifest facts.
    base = contract.catalog_base(sha256, options, path)
    input_spec = contract.build_input_spec(
        options, width=width, height=height, color="gray" if channels == 1 else "rgb", layout="nhwc",
        scale=1.0 / 255.0, mean=[0.0], std=[1.0], base=base.input if base else None,
    )

    layers = {layer.name: layer for layer in model.layers}
    output_layers = [layers.get(name.split("/")[0]) for name in model.output_names]
    output_names = [_clean_name(name) for name in model.output_names]
    widths = [int(np.prod(out.shape[1:])) for out in model.outputs]
    if options.task:
        task = Task(options.task)
    elif base is not None:
        task = Task(base.task)
    else:
        task = Task.MULTITASK if len(widths) > 1 else Task.EMOTION

    head_labels: dict[str, list[str]] = dict(options.extra.get("head_labels", {}))
    outputs: list[OutputHead] = []
    for index, (layer, name, out_width) in enumerate(zip(output_layers, output_names, widths)):
        kind = _activation_kind(layer, out_width)
        if len(widths) == 1:
            head_name = task.value
            labels = options.labels or (base.labels if base else None)
        else:
            head_name = name
            labels = head_labels.get(name)
            if labels is None and index == 0:
                labels = options.labels
        if kind == "regression":
            labels = None
        outputs.append(contract.class_head(head_name, out_width, labels, kind, tensor=index))

    if base is not None and options.labels is None and not head_labels:
        if len(base.outputs) != len(widths):
            raise ModelContractError(
                f"{path}: the model has {len(widths)} outputs but catalog entry {base.name!r} describes "
                f"{len(base.outputs)}; pick the matching entry or describe the outputs with --labels/--head-labels"
            )
        outputs = list(base.outputs)
    for head in outputs:
        if head.labels is not None and head.columns is None and head.kind != "sigmoid":
            contract.check_labels(head.labels, widths[head.tensor if isinstance(head.tensor, int) else 0], head.name, path)

    exported = model
    if options.preprocessing_in_graph:
        exported = _bake_preprocessing(keras, tf, model, input_spec)
        input_spec = input_spec.model_copy(update={"preprocessing_in_graph": True, "dtype": "uint8"})

    input_name = "image_bgr" if options.preprocessing_in_graph else "input"
    stage = _keras_stage(tf, exported, input_name, output_names)
    provenance = base.provenance if base else Provenance(
        source=f"Keras HDF5 file {path.name} (sha256 {sha256})", license="unknown")
    name = options.name or (base.name if base else _clean_name(path.stem).lower().replace("_", "-"))
    labels = next((h.labels for h in outputs if h.labels), None)
    return SourceModel(
        name=name, kind="keras-h5", task=task, input=input_spec, outputs=outputs, labels=labels,
        stages=[stage], provenance=provenance,
        description=base.description if base else f"Converted from {path.name}",
        notes=[f"loaded with tf-keras {keras.__version__}"], source_path=path, source_sha256=sha256,
    )


def _keras_stage(tf, model, input_name: str, output_names: list[str]) -> Stage:
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    input_dtype = model.inputs[0].dtype.name if hasattr(model.inputs[0].dtype, "name") else str(model.inputs[0].dtype)

    def reference(batch: np.ndarray) -> list[np.ndarray]:
        result = model(batch, training=False)
        if not isinstance(result, (list, tuple)):
            result = [result]
        return [np.asarray(r) for r in result]

    def export_onnx(path: Path, opset: int) -> None:
        from converters.deps import require

        tf2onnx = require("tf2onnx", "convert Keras models to ONNX")
        spec = [tf.TensorSpec((None, *input_shape), model.inputs[0].dtype, name=input_name)]
        try:
            tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, output_path=str(path))
        except Exception as exc:
            raise ConversionError(f"tf2onnx cannot convert the Keras model to ONNX opset {opset}: {exc}") from exc

    def export_tflite(path: Path, precision: str, calibration: Optional[Callable[[], Iterable[np.ndarray]]],
                      recipe: str = "full-int8") -> None:
        from converters.targets.tflite import convert_with

        convert_with(lambda: tf.lite.TFLiteConverter.from_keras_model(model), path, precision, calibration,
                     input_dtype == "uint8", model.output_names, recipe)

    return Stage(
        name="main", input_shape=input_shape, input_dtype=input_dtype, input_name=input_name,
        output_names=output_names, reference=reference, export_onnx=export_onnx, export_tflite=export_tflite,
    )
