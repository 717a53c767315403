"""The random-weight EfficientNet-B0 that stands in for HSEmotion's ``enet_b0_8_best_afew``.

The real HSEmotion weights cannot be downloaded on the machines these
benchmarks were written on. Latency depends only on the architecture, so a
timm ``efficientnet_b0`` with HSEmotion's head (a Sequential holding one
Linear layer, 8 AffectNet classes) and random weights costs what the real
model costs. Its outputs mean nothing: every number measured with it is a
speed number only.

The files are built once into a cache directory and reused:

* ``enet_b0_8_random.pt``: the model saved with ``torch.save(model)``, the
  way HSEmotion publishes its PyTorch checkpoints;
* ``enet_b0_8_random.onnx``: a plain ``torch.onnx.export`` of it with a
  dynamic batch axis, like the ONNX files that hsemotion-onnx loads;
* ``package/``: the pickle converted by ``edge-convert`` under the
  ``enet_b0_8_best_afew`` catalog contract (fp32 ONNX and OpenVINO IR);
* ``package-in-graph/``: the same with ``--preprocessing-in-graph``: the
  graph takes uint8 NHWC BGR crops and converts and normalizes them itself.

Run as ``python -m bench.references.stand_in --cache DIR`` in an
environment with the ``convert`` extra.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

logger = logging.getLogger(__name__)

ARCHITECTURE = "efficientnet_b0"
CLASSES = 8
INPUT_SIZE = 224
SEED = 0
PICKLE_NAME = "enet_b0_8_random.pt"
ONNX_NAME = "enet_b0_8_random.onnx"
PACKAGE_DIR = "package"
PACKAGE_NAME = "hsemotion-b0-8-random"
IN_GRAPH_PACKAGE_DIR = "package-in-graph"
IN_GRAPH_PACKAGE_NAME = "hsemotion-b0-8-random-in-graph"
CATALOG_ENTRY = "enet_b0_8_best_afew"


def build_model() -> Any:
    """Return the stand-in in eval mode: timm efficientnet_b0, seeded random weights, an 8-class head."""
    import timm
    import torch

    torch.manual_seed(SEED)
    model = timm.create_model(ARCHITECTURE, pretrained=False)
    # HSEmotion replaced timm's classifier with a Sequential holding one Linear layer.
    model.classifier = torch.nn.Sequential(torch.nn.Linear(model.num_features, CLASSES))
    return model.eval()


def write_pickle(path: Path) -> Path:
    """Save the stand-in with ``torch.save(model)`` unless ``path`` exists."""
    import torch

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save(build_model(), partial)
        partial.replace(path)
        logger.info("wrote %s", path)
    return path


def write_onnx(pickle_path: Path, path: Path) -> Path:
    """Export the pickled stand-in to ONNX (opset 17, input ``input``, dynamic batch) unless ``path`` exists."""
    import torch

    if not path.exists():
        model = torch.load(pickle_path, weights_only=False).eval()
        dummy = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
        partial = path.with_suffix(".partial")
        torch.onnx.export(
            model,
            (dummy,),
            str(partial),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        partial.replace(path)
        logger.info("wrote %s", path)
    return path


def write_package(
    pickle_path: Path,
    output: Path,
    model_store: Optional[Path],
    *,
    name: str = PACKAGE_NAME,
    preprocessing_in_graph: bool = False,
) -> Path:
    """Convert the pickle with edge-convert into an fp32 ONNX + OpenVINO package unless ``output`` exists.

    ``model_store`` is the store whose MTCNN cuts the parity crops (the
    runtime's default store when None).

    Raises:
        RuntimeError: edge-convert exited with a non-zero status.
    """
    from converters.cli import main as edge_convert

    if (output / "manifest.yaml").exists():
        return output

    arguments = [
        str(pickle_path), "-o", str(output), "--trust-pickle", "--overwrite",
        "--catalog-entry", CATALOG_ENTRY, "--name", name,
        "--targets", "onnx,openvino", "--precisions", "fp32",
        "--parity-count", "8", "--latency-runs", "1", "--no-progress", "--log-level", "WARNING",
    ]
    if preprocessing_in_graph:
        arguments.append("--preprocessing-in-graph")
    if model_store is not None:
        arguments += ["--model-store", str(model_store)]
    status = edge_convert(arguments)
    if status != 0:
        raise RuntimeError(f"edge-convert exited with status {status} while converting {pickle_path}; see its log above")
    return output


def build_all(cache: Path, model_store: Optional[Path] = None) -> dict[str, Path]:
    """Build (or reuse) the pickle, the plain ONNX export and both edge-convert packages under ``cache``."""
    pickle_path = write_pickle(cache / PICKLE_NAME)
    onnx_path = write_onnx(pickle_path, cache / ONNX_NAME)
    package = write_package(pickle_path, cache / PACKAGE_DIR, model_store)
    in_graph = write_package(
        pickle_path, cache / IN_GRAPH_PACKAGE_DIR, model_store, name=IN_GRAPH_PACKAGE_NAME, preprocessing_in_graph=True
    )
    return {"pickle": pickle_path, "onnx": onnx_path, "package": package, "package_in_graph": in_graph}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.references.stand_in", description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="directory that contains the built files")
    parser.add_argument("--model-store", type=Path, help="model store with the MTCNN detector (default: the runtime's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    paths = build_all(args.cache, args.model_store)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
