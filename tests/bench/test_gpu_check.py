"""The GPU provider check script, run here without a GPU.

On a machine with onnxruntime-gpu, `python -m bench.gpu_check` checks the
CUDA and TensorRT providers. Here the test checks its two CPU-side paths:
the clear exit when no GPU provider exists, and the comparison logic run
against a second CPU session.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

onnxruntime = pytest.importorskip("onnxruntime")


def run_check(tmp_path: Path, store: Path, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    output = tmp_path / "gpu-check.json"
    command = [sys.executable, "-m", "bench.gpu_check", "--store", str(store), "--output", str(output), *extra]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300), output


def test_without_gpu_exits_77(tmp_path, model_store):
    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" in available or "TensorrtExecutionProvider" in available:
        pytest.skip("this machine has a GPU provider; run python -m bench.gpu_check on it instead")

    process, output = run_check(tmp_path, model_store.root)

    assert process.returncode == 77, process.stderr
    assert "install onnxruntime-gpu" in process.stderr
    assert json.loads(output.read_text())["status"] == "unavailable"


def test_cpu_provider_checks_every_onnx_model(tmp_path, model_store):
    process, output = run_check(tmp_path, model_store.root, "--providers", "CPUExecutionProvider")

    assert process.returncode == 0, process.stderr
    results = json.loads(output.read_text())
    assert results["status"] == "passed"
    models = {entry["model"] for entry in results["models"]}
    assert {"mtcnn/pnet.onnx", "mtcnn/rnet.onnx", "mtcnn/onet.onnx"} <= models
    for entry in results["models"]:
        check = entry["checks"][0]
        assert check["runs_on_provider"]
        assert check["max_abs_diff"] == 0.0
        assert check["p50_ms"] > 0
