"""Check ONNX Runtime's CUDA and TensorRT execution providers on a GPU machine.

Run it where ``onnxruntime-gpu`` (or NVIDIA's JetPack wheel) is installed
and the starter models are in the store:

    python -m bench.gpu_check --output gpu-check.json

For every ``.onnx`` file in the store it builds a CPU session as the
reference, then one session per GPU provider with the CPU provider behind
it. It checks that the GPU provider really runs the graph, because ONNX
Runtime falls back to the CPU without an error. It checks that the outputs
match the CPU's within the tolerance of the provider's precision, and that
a second TensorRT session loads from the engine cache. It prints a table and writes
the results as JSON.

``--providers CPUExecutionProvider`` runs the same checks against a second
CPU session, which tests the script on a machine without a GPU.

Exit status: 0 when every check passed, 1 when one failed, 77 when this
machine has none of the requested providers (nothing was checked).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("bench.gpu_check")

EXIT_FAILED = 1
EXIT_UNAVAILABLE = 77

CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
CPU = "CPUExecutionProvider"

# Max abs difference from the CPU outputs, relative to the largest CPU output.
# CUDA's bound leaves room for TF32 matrix products on GPUs that have them.
# TensorRT runs fp16 here, as the Jetson profiles set trt_fp16_enable.
TOLERANCE = {CUDA: 1e-3, TENSORRT: 2e-2, CPU: 1e-6}
TIMED_RUNS = 50
# Spatial size given to free height and width inputs, such as MTCNN's P-Net.
FREE_SPATIAL_SIZE = 96


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="model store directory (default: the runtime's default store)")
    parser.add_argument("--output", type=Path, default=Path("gpu-check.json"), help="JSON results file")
    parser.add_argument("--providers", nargs="+", default=[CUDA, TENSORRT], choices=sorted(TOLERANCE),
                        help=f"providers to check (default: {CUDA} {TENSORRT})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import onnxruntime

    from edge_runtime.models.store import default_root

    available = onnxruntime.get_available_providers()
    providers = [name for name in args.providers if name in available]
    results: dict[str, Any] = {"onnxruntime": onnxruntime.__version__, "available_providers": available, "models": []}
    if not providers:
        results["status"] = "unavailable"
        write_results(args.output, results)
        print(
            f"gpu_check: this onnxruntime {onnxruntime.__version__} has none of {', '.join(args.providers)} "
            f"(available: {', '.join(available)}); install onnxruntime-gpu, or NVIDIA's wheel on a Jetson",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE

    store = args.store or default_root()
    models = sorted(store.glob("*/*.onnx"))
    if not models:
        print(f"gpu_check: no .onnx files in the model store {store}; run 'edge-runtime models pull --starter'",
              file=sys.stderr)
        return EXIT_FAILED

    with tempfile.TemporaryDirectory(prefix="trt-cache-") as cache:
        for path in models:
            results["models"].append(check_model(onnxruntime, path, providers, Path(cache)))

    failed = [f"{entry['model']} {check['provider']}" for entry in results["models"] for check in entry["checks"]
              if not check["passed"]]
    results["status"] = "failed" if failed else "passed"
    write_results(args.output, results)
    print_table(results)
    if failed:
        print(f"gpu_check: failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def check_model(onnxruntime, path: Path, providers: list[str], cache: Path) -> dict[str, Any]:
    """Run ``path`` on the CPU and on each GPU provider and return the comparison."""
    reference = onnxruntime.InferenceSession(str(path), providers=[CPU])
    feeds = make_feeds(reference)
    expected = reference.run(None, feeds)
    scale = max(float(np.abs(output).max()) for output in expected) or 1.0

    entry: dict[str, Any] = {"model": f"{path.parent.name}/{path.name}", "cpu_p50_ms": time_runs(reference, feeds),
                             "checks": []}
    for provider in providers:
        options = {}
        if provider == TENSORRT:
            options = {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                       "trt_engine_cache_path": str(cache / path.parent.name / path.stem)}
            Path(options["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)

        chain = [(provider, options)] if provider == CPU else [(provider, options), CPU]
        started = time.perf_counter()
        session = onnxruntime.InferenceSession(str(path), providers=chain)
        load_ms = (time.perf_counter() - started) * 1000.0
        outputs = session.run(None, feeds)
        difference = max(float(np.abs(got - want).max()) for got, want in zip(outputs, expected))
        check: dict[str, Any] = {
            "provider": provider,
            "session_providers": session.get_providers(),
            "load_ms": load_ms,
            "p50_ms": time_runs(session, feeds),
            "max_abs_diff": difference,
            "relative_diff": difference / scale,
            "tolerance": TOLERANCE[provider],
        }
        check["runs_on_provider"] = session.get_providers()[0] == provider
        check["within_tolerance"] = check["relative_diff"] <= TOLERANCE[provider]

        if provider == TENSORRT:
            started = time.perf_counter()
            onnxruntime.InferenceSession(str(path), providers=chain)
            check["cached_load_ms"] = (time.perf_counter() - started) * 1000.0
            check["engine_cache_files"] = len(list(Path(options["trt_engine_cache_path"]).iterdir()))
            check["engine_cached"] = check["engine_cache_files"] > 0

        check["passed"] = check["runs_on_provider"] and check["within_tolerance"] and check.get("engine_cached", True)
        entry["checks"].append(check)
    return entry


def make_feeds(session) -> dict[str, np.ndarray]:
    """Build one fixed random input per graph input, with batch 1 and free spatial sizes filled in."""
    generator = np.random.default_rng(0)
    feeds = {}
    for graph_input in session.get_inputs():
        shape = []
        for index, dim in enumerate(graph_input.shape):
            if isinstance(dim, int):
                shape.append(dim)
            else:
                shape.append(1 if index == 0 else FREE_SPATIAL_SIZE)
        dtype = np.uint8 if "uint8" in graph_input.type else np.float32
        if dtype is np.uint8:
            feeds[graph_input.name] = generator.integers(0, 256, size=shape, dtype=np.uint8)
        else:
            feeds[graph_input.name] = generator.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    return feeds


def time_runs(session, feeds: dict[str, np.ndarray]) -> float:
    """Return the median latency in ms of ``TIMED_RUNS`` calls after five warm-up calls."""
    for _ in range(5):
        session.run(None, feeds)
    times = []
    for _ in range(TIMED_RUNS):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - started) * 1000.0)
    return float(np.median(times))


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %s", path)


def print_table(results: dict[str, Any]) -> None:
    print(f"{'model':38} {'provider':28} {'cpu ms':>8} {'ms':>8} {'rel diff':>9}  result")
    for entry in results["models"]:
        for check in entry["checks"]:
            verdict = "pass" if check["passed"] else "FAIL"
            if not check["runs_on_provider"]:
                verdict += f" (fell back to {check['session_providers'][0]})"
            print(f"{entry['model']:38} {check['provider']:28} {entry['cpu_p50_ms']:8.2f} {check['p50_ms']:8.2f} "
                  f"{check['relative_diff']:9.2e}  {verdict}")


if __name__ == "__main__":
    sys.exit(main())
