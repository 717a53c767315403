"""ONNX export and reference runs of torch modules, shared by the timm and MTCNN loaders."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from converters.deps import require
from converters.errors import ConversionError
from converters.source_model import Stage

logger = logging.getLogger(__name__)


def torch_stage(module, name: str, input_name: str, output_names: Sequence[str], sample: np.ndarray,
                free_axes: Sequence[int] = (), export_module=None) -> Stage:
    """Return a Stage that runs ``module`` (in eval mode) and exports it to ONNX.

    ``export_module`` replaces ``module`` in the export only; it must compute
    the same function in a form the exporters handle better.

    ``sample`` is one example batch in the module's input layout and dtype.
    ``free_axes`` are input axes besides the batch that stay dynamic in ONNX
    (height and width of a fully convolutional network).
    """
    torch = require("torch", "export torch models")
    module = module.eval()
    exported = (export_module or module).eval()

    def reference(batch: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            result = module(torch.from_numpy(np.ascontiguousarray(batch)))
        if not isinstance(result, (list, tuple)):
            result = [result]
        return [r.detach().cpu().numpy() for r in result]

    def export_onnx(path: Path, opset: int) -> None:
        dynamic = {input_name: {0: "batch", **{axis: f"dim{axis}" for axis in free_axes}}}
        for output in output_names:
            dynamic[output] = {0: "batch"}
        dummy = torch.from_numpy(np.ascontiguousarray(sample[:1]))
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    exported, (dummy,), str(path), input_names=[input_name], output_names=list(output_names),
                    dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True, dynamo=False,
                )
        except Exception as exc:
            raise ConversionError(f"torch.onnx.export failed for stage {name!r} at opset {opset}: {exc}") from exc

    shape = tuple(None if axis + 1 in free_axes else int(d) for axis, d in enumerate(sample.shape[1:]))
    return Stage(
        name=name, input_shape=shape, input_dtype=str(sample.dtype), input_name=input_name,
        output_names=list(output_names), reference=reference, export_onnx=export_onnx,
    )
