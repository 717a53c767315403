"""``python -m bench.int8_x64 PACKAGE...``: ONNX Runtime int8 with and without ``session.x64quantprecision``.

For each converted model package, the fp32 ONNX variant is quantized to
plain minmax int8 QDQ with int8 weights (u8s8 kernels), calibrated on face
crops from ``--calibration-photos``. The int8 graph then runs on crops from
``--parity-photos`` twice in one run: through the runtime's ONNX Runtime
backend with its default session config (option on), and with the option
turned off. Each row gives top-1 agreement with the fp32 variant and the
batch-1 latency (p50, p90). On x86 CPUs without VNNI the option avoids
saturated 16-bit sums, and this shows what that gains and costs.

Needs the ``convert`` extra (the quantizer and the crop cutter). Writes
``bench/results/int8-x64quantprecision-<board>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.timing import LatencyStats, time_calls
from edge_runtime.backends.base import SessionOptions
from edge_runtime.backends.onnxruntime import OnnxRuntimeBackend
from edge_runtime.manifest import load_manifest

logger = logging.getLogger("bench.int8_x64")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
OPTION = "session.x64quantprecision"
SETTINGS = {"on (runtime default)": {}, "off": {OPTION: False}}


def _crops(folder: Path, spec, count: int, seed: int) -> np.ndarray:
    from converters import calibration as calib
    from converters.preprocess import make_batch

    crop_set = calib.crops_from_photos(calib.list_photos(folder), calib.runtime_detector())
    crops = calib.augment(calib.crops_for_spec(crop_set, spec), count, seed=seed)
    return make_batch(crops, spec)


def _run(session, batch: np.ndarray) -> np.ndarray:
    return np.concatenate([session.run(batch[i : i + 16])[0] for i in range(0, len(batch), 16)])


def measure(package: Path, calibration_photos: Path, parity_photos: Path, runs: int) -> list[dict[str, Any]]:
    """Return one row per setting for the package's fp32 ONNX variant, quantized to plain int8 here."""
    from converters.targets import onnx as onnx_target

    manifest = load_manifest(package)
    fp32 = next((v for v in manifest.variants if v.format == "onnx" and v.precision == "fp32"), None)
    if fp32 is None:
        raise SystemExit(f"{package}: no fp32 ONNX variant; convert the model with --targets onnx first")

    spec = manifest.input
    calibration = _crops(calibration_photos, spec, 64, seed=0)
    parity = _crops(parity_photos, spec, 100, seed=1)
    backend = OnnxRuntimeBackend()
    reference = _run(backend.load(package / fp32.file), parity).argmax(axis=1)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as work:
        int8 = Path(work) / "int8.onnx"
        input_name = backend.load(package / fp32.file).inputs[0].name
        onnx_target.to_int8(package / fp32.file, int8, input_name,
                            lambda: [calibration[i : i + 8] for i in range(0, len(calibration), 8)], "minmax")
        for label, config in SETTINGS.items():
            session = backend.load(int8, SessionOptions(extra={"session_config": config}))
            agreement = float(np.mean(_run(session, parity).argmax(axis=1) == reference))
            samples = time_calls(lambda index: session.run(parity[index % len(parity)][None]), runs, warmup=10)
            stats = LatencyStats.from_samples(samples)
            rows.append({"model": manifest.name, "x64quantprecision": label, "top1_agreement": agreement,
                         "parity_crops": len(parity), "p50_ms": stats.p50_ms, "p90_ms": stats.p90_ms})
            logger.info("%s, option %s: top-1 %.3f, p50 %.2f ms", manifest.name, label, agreement, stats.p50_ms)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    summary = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.int8_x64", description=summary)
    parser.add_argument("packages", nargs="+", type=Path, metavar="PACKAGE",
                        help="converted model package directories with an fp32 ONNX variant")
    parser.add_argument("--calibration-photos", type=Path, required=True, metavar="DIR",
                        help="face photos to calibrate the int8 graphs on")
    parser.add_argument("--parity-photos", type=Path, required=True, metavar="DIR",
                        help="other face photos to measure agreement and latency on")
    parser.add_argument("--runs", type=int, default=200, metavar="N", help="timed batch-1 runs per setting (default: 200)")
    parser.add_argument("--board", default="x86_64-amd-epyc-2core-vm", help="name in the result file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    rows = [row for package in args.packages
            for row in measure(package, args.calibration_photos, args.parity_photos, args.runs)]
    from converters.parity import cpu_int8_features

    document = {"machine": {"processor": platform.processor() or platform.machine(),
                            "int8_features": cpu_int8_features()},
                "rows": rows}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"int8-x64quantprecision-{args.board}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
