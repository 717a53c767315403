"""Command line of the converters: ``edge-convert SOURCE -o PACKAGE_DIR [options]``.

Exit status: 0 when the package is written, 1 on a conversion error, 2 on
invalid options, 3 when a variant fails parity and ``--force`` is not set.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from edge_runtime.errors import EdgeRuntimeError

from converters import __version__, progress
from converters.errors import ParityError
from converters.parity import DEFAULT_TOLERANCES, Tolerance
from converters.sources import FORMATS, LoadOptions
from converters.targets import PRECISIONS, TARGETS

logger = logging.getLogger(__name__)

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARITY = 3

TASKS = ("emotion", "age", "gender", "ethnicity", "multitask", "face_detection")


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _floats(value: str) -> list[float]:
    try:
        return [float(item) for item in _csv(value)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of numbers") from exc


def _size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not WIDTHxHEIGHT in pixels, e.g. 224x224") from exc
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: width and height must be positive")
    return width, height


def _choices(allowed: Sequence[str]):
    def parse(value: str) -> list[str]:
        items = _csv(value)
        unknown = [item for item in items if item not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"{value!r}: choose one or more of {','.join(allowed)}")
        return items

    return parse


def _head_labels(value: str) -> tuple[str, list[str]]:
    head, sep, labels = value.partition("=")
    if not sep or not head or not labels:
        raise argparse.ArgumentTypeError(f"{value!r} is not HEAD=label1,label2,...")
    return head.strip(), _csv(labels)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-convert",
        description=(
            "Convert a trained model file into an edge-runtime model package: a manifest, one variant "
            "per requested target and precision, and a parity report measured on real face crops. "
            "Install the package on a device with 'edge-runtime models import DIR'."
        ),
    )
    parser.add_argument("source", type=Path, help="model file (.pt, .h5/.hdf5, .onnx, .tflite) or a directory "
                        "with facenet-pytorch pnet.pt, rnet.pt and onet.pt")
    parser.add_argument("-o", "--output", type=Path, required=True, help="package directory to create")
    parser.add_argument("--version", action="version", version=f"edge-convert {__version__}")

    source = parser.add_argument_group("source")
    source.add_argument("--format", choices=("auto",) + FORMATS, default="auto",
                        help="source format; auto reads the file's magic bytes (default: auto)")
    source.add_argument("--trust-pickle", action="store_true",
                        help="allow unpickling a .pt file, which runs code stored in it; without this flag only "
                        "files whose sha256 is pinned in the runtime's catalog are unpickled")
    source.add_argument("--arch", dest="architecture",
                        help="timm architecture to rebuild a pickle into when its pickled modules do not run under "
                        "the installed timm, e.g. efficientnet_b0 (default: taken from the pickle)")

    model = parser.add_argument_group("model contract (inferred when omitted)")
    model.add_argument("--catalog-entry", metavar="NAME",
                       help="take task, labels, input contract, outputs and provenance from this entry of the "
                       "runtime's catalog (used automatically when the file's sha256 is pinned there)")
    model.add_argument("--name", help="package name: lowercase letters, digits, '.', '_' and '-' (default: from the file name)")
    model.add_argument("--model-version", metavar="VERSION", dest="model_version", help="version of the weights written to the manifest (default: 1)")
    model.add_argument("--task", choices=TASKS, help="what the model predicts (default: inferred)")
    model.add_argument("--labels", metavar="L1,L2,...", type=_csv, help="class names of the primary output, comma-separated, in output order")
    model.add_argument("--head-labels", type=_head_labels, action="append", default=[], metavar="HEAD=L1,L2",
                       help="class names of one named output of a multi-output model; repeat per output")
    model.add_argument("--input-size", type=_size, metavar="WxH", help="input width and height in pixels, e.g. 224x224")
    model.add_argument("--color", choices=("rgb", "bgr", "gray"), help="channel order the model expects")
    model.add_argument("--layout", choices=("nchw", "nhwc"), help="input tensor layout")
    model.add_argument("--scale", metavar="FACTOR", type=float, help="multiplier applied to 0..255 pixels before mean and std, e.g. 0.00392156862745098 for 1/255")
    model.add_argument("--mean", metavar="M1,M2,M3", type=_floats, help="per-channel mean subtracted after scaling, comma-separated, in the input's colour order")
    model.add_argument("--std", metavar="S1,S2,S3", type=_floats, help="per-channel std divided after the mean, comma-separated")

    export = parser.add_argument_group("export")
    export.add_argument("--targets", metavar="T1,T2", type=_choices(TARGETS), default=list(TARGETS),
                        help=f"comma-separated target formats (default: {','.join(TARGETS)})")
    export.add_argument("--precisions", metavar="P1,P2", type=_choices(PRECISIONS), default=["fp32"],
                        help=f"comma-separated precisions, every target gets each (choices: {','.join(PRECISIONS)}; default: fp32)")
    export.add_argument("--opset", metavar="N", type=int, default=17, help="ONNX opset of the exported graphs (default: 17)")
    export.add_argument("--preprocessing-in-graph", action="store_true",
                        help="emotion models: the graph takes a uint8 NHWC BGR crop already resized to the input size "
                        "and does colour conversion and normalization itself")
    export.add_argument("--features-output", action="store_true",
                        help="emotion models: add the penultimate-layer features as a second output named 'features'")
    export.add_argument("--ort-calibration", choices=("best", "minmax", "entropy", "percentile"), default="best",
                        help="ONNX Runtime calibration method for int8 ONNX; best tries each, with and without the "
                        "first and last layers in float, plus minmax in QOperator format and NNCF accuracy control, "
                        "and keeps the one with the highest top-1 agreement on the selection set (default: best)")

    export.add_argument("--nncf-preset", choices=("best", "performance", "mixed"), default="best",
                        help="NNCF preset for int8 OpenVINO: performance uses symmetric activations, mixed "
                        "asymmetric ones; best tries both, with and without the first and last layers in float, plus "
                        "NNCF accuracy control, and keeps the highest top-1 agreement on the selection set "
                        "(default: best)")

    export.add_argument("--tflite-recipe", choices=("best", "full-int8", "float-ends"), default="best",
                        help="int8 TFLite recipe: full-int8 runs every op in int8, float-ends keeps the first and "
                        "last compute layers and the output softmax in float32; best tries both and keeps the "
                        "highest top-1 agreement on the selection set (default: best)")

    data = parser.add_argument_group("calibration and parity data")
    data.add_argument("--calibration-photos", type=Path, metavar="DIR",
                      help="folder of face photos; faces are cut with the runtime's detector (default: a built-in "
                      "public-domain photo from the scikit-image wheel, downloaded with pip and hash-checked)")
    data.add_argument("--parity-photos", type=Path, metavar="DIR",
                      help="folder of face photos for the parity check (default: every fourth calibration photo, "
                      "held out from calibration and selection)")
    data.add_argument("--model-store", type=Path, metavar="DIR",
                      help="edge-runtime model store holding the face detector (mtcnn or blazeface) that cuts the "
                      "crops (default: the runtime's default store; without a detector a centred square is cut)")
    data.add_argument("--calibration-count", metavar="N", type=int, default=64, help="face crops used for int8 calibration, augmented up to this count (default: 64)")
    data.add_argument("--parity-count", metavar="N", type=int, default=100, help="face crops the parity check runs on, augmented up to this count (default: 100)")
    data.add_argument("--selection-count", metavar="N", type=int, default=256,
                      help="face crops from calibration photos not used for calibration, augmented up to this count, "
                      "on which int8 candidates are ranked and accuracy control is judged (default: 256)")

    checks = parser.add_argument_group("parity tolerances")
    checks.add_argument("--tolerance-fp32", metavar="ABS", type=float, default=DEFAULT_TOLERANCES["fp32"].value,
                        help="max absolute difference of fp32 outputs from the source (default: %(default)g)")
    checks.add_argument("--tolerance-fp16", metavar="REL", type=float, default=DEFAULT_TOLERANCES["fp16"].value,
                        help="max difference of fp16 outputs relative to the source's max magnitude (default: %(default)g)")
    checks.add_argument("--tolerance-int8", metavar="FRACTION", type=_fraction, default=DEFAULT_TOLERANCES["int8"].value,
                        help="min top-1 agreement of int8 class outputs with the source, 0..1 (default: %(default)g)")
    checks.add_argument("--latency-runs", metavar="N", type=int, default=30, help="timed batch-1 runs per variant for the latency column (default: 30)")
    checks.add_argument("--force", action="store_true",
                        help="ship variants that fail parity or export anyway; the report marks them as forced")

    general = parser.add_argument_group("general")
    general.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    general.add_argument("--no-progress", action="store_true", help="log steps instead of drawing progress bars")
    general.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                         help="log level for messages on stderr (default: INFO)")
    return parser


def _fraction(text: str) -> float:
    """Parse a share between 0 and 1, such as a top-1 agreement."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a fraction such as 0.98") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside 0..1; give a fraction such as 0.98 for 98%")
    return value


def request_from_args(args: argparse.Namespace):
    """Return the ConvertRequest described by parsed command-line options."""
    from converters.pipeline import ConvertRequest

    options = LoadOptions(
        name=args.name, task=args.task, labels=args.labels, input_size=args.input_size, color=args.color,
        layout=args.layout, scale=args.scale, mean=args.mean, std=args.std, trust_pickle=args.trust_pickle,
        preprocessing_in_graph=args.preprocessing_in_graph, features_output=args.features_output,
        architecture=args.architecture,
        extra={"head_labels": dict(args.head_labels), "catalog_entry": args.catalog_entry},
    )
    return ConvertRequest(
        source=args.source, output=args.output, options=options,
        source_format=None if args.format == "auto" else args.format,
        targets=args.targets, precisions=args.precisions, opset=args.opset,
        calibration_photos=args.calibration_photos, parity_photos=args.parity_photos,
        calibration_count=args.calibration_count, parity_count=args.parity_count,
        selection_count=args.selection_count,
        tolerances={
            "fp32": Tolerance("abs", args.tolerance_fp32),
            "fp16": Tolerance("rel", args.tolerance_fp16),
            "int8": Tolerance("top1", args.tolerance_int8),
        },
        force=args.force, overwrite=args.overwrite, latency_runs=args.latency_runs,
        ort_calibration=args.ort_calibration, nncf_preset=args.nncf_preset, tflite_recipe=args.tflite_recipe,
        version=args.model_version, model_store=args.model_store,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    progress.set_enabled(not args.no_progress)

    for name, value in (("--calibration-count", args.calibration_count), ("--parity-count", args.parity_count),
                        ("--selection-count", args.selection_count), ("--latency-runs", args.latency_runs)):
        if value < 1:
            parser.error(f"{name} must be at least 1, got {value}")

    try:
        from converters.pipeline import convert

        result = convert(request_from_args(args))
    except ParityError as exc:
        print(f"edge-convert: parity failed: {exc}", file=sys.stderr)
        return EXIT_PARITY
    except EdgeRuntimeError as exc:
        print(f"edge-convert: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("edge-convert: interrupted", file=sys.stderr)
        return 130

    print(result.report.to_table())
    print(f"package written to {result.package_dir}; install it with: edge-runtime models import {result.package_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
