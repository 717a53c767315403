"""``python -m bench.compare`` end to end on a few video frames: every row runs and the ratios come from this run.

The reference rows and the B0 stand-in need torch, timm and facenet-pytorch,
so the test runs in the convert environment and skips elsewhere. The
edge-runtime rows run in ``.venv`` when it exists, as on a device, else in
this interpreter. The stand-in is built once into the default cache of
``bench.compare`` and reused by later runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.converters.conftest import CONVERT_HINT

REPO_ROOT = Path(__file__).resolve().parents[2]
VIDEO = "videos/WolfgangLanger_Pexels.mp4"
FRAMES = 4
DEFAULT_ROWS = [
    "ref-torch",
    "ref-onnx",
    "ours-b0-k1",
    "ours-b0",
    "ours-b0-onnxruntime",
    "ours-profile",
    "run-rss",
    "run-rss-onnxruntime",
]


@pytest.fixture(scope="module")
def comparison(model_store, mosquitto_broker, shared_data, tmp_path_factory) -> dict:
    for module in ("torch", "timm", "facenet_pytorch"):
        pytest.importorskip(module, reason=f"{module} is not importable; {CONVERT_HINT} and pip install --no-deps facenet-pytorch==2.6.0")
    video = shared_data / VIDEO
    if not video.is_file():
        pytest.skip(f"{video} is missing")

    root = tmp_path_factory.mktemp("compare")
    runtime_python = REPO_ROOT / ".venv" / "bin" / "python"
    command = [
        sys.executable, "-m", "bench.compare",
        "--video", str(video),
        "--frames", str(FRAMES),
        "--store", str(root / "store"),
        "--starter-store", str(model_store.root),
        "--broker", mosquitto_broker.url,
        "--board", "test-board",
        "--torch-threads", "1",
        "--output-dir", str(root / "results"),
        "--convert-python", sys.executable,
        "--runtime-python", str(runtime_python if runtime_python.exists() else sys.executable),
    ]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    assert completed.returncode == 0, completed.stderr[-4000:]

    results = json.loads((root / "results" / "compare-test-board.json").read_text())
    results["markdown"] = (root / "results" / "compare-test-board.md").read_text()
    results["stdout"] = completed.stdout
    return results


@pytest.mark.convert
@pytest.mark.shared_data
def test_compare_runs_every_row(comparison: dict) -> None:
    rows = {row["name"]: row for row in comparison["rows"]}

    assert list(rows) == DEFAULT_ROWS
    for name, row in rows.items():
        assert row["frames"] == FRAMES, name
        assert row["fps"] > 0.0, name
        assert row["peak_rss_mib"] > 0.0, name

    # One face in every frame of the clip; the run-rss rows report no per-frame record.
    for name in DEFAULT_ROWS[:6]:
        assert rows[name]["frames_with_faces"] == FRAMES, name
        assert rows[name]["classifier_ms_per_face"] > 0.0, name
        assert rows[name]["frame_ms"]["mean_ms"] > 0.0, name


@pytest.mark.convert
@pytest.mark.shared_data
def test_compare_rows_use_stand_in(comparison: dict) -> None:
    rows = {row["name"]: row for row in comparison["rows"]}

    assert rows["ours-b0"]["details"]["models"]["emotion"].startswith("hsemotion-b0-8-random@")
    assert rows["ours-b0-onnxruntime"]["details"]["models"]["emotion"] == "hsemotion-b0-8-random@onnxruntime (fp32)"
    assert rows["ours-b0-onnxruntime"]["details"]["models"]["detector"] == "mtcnn@onnxruntime (fp32)"
    assert rows["ours-b0"]["details"]["detection_interval"] == 5
    assert rows["ours-b0-k1"]["details"]["full_detections"] == FRAMES
    # The full detector runs on frame 1 of 4, and O-Net alone re-locates the face on frames 2 to 4.
    assert rows["ours-b0"]["details"]["full_detections"] == 1
    assert rows["ours-b0"]["details"]["mqtt_delivered"] >= 1
    assert "random weights" in rows["ref-torch"]["details"]["classifier"]
    assert rows["ref-torch"]["details"]["torch_threads"] == 1
    assert rows["ref-onnx"]["details"]["torch_threads"] == 1
    assert comparison["torch_threads"] == 1
    assert "stand" in comparison["markdown"]


@pytest.mark.convert
@pytest.mark.shared_data
def test_compare_ratios_from_same_run(comparison: dict) -> None:
    rows = {row["name"]: row for row in comparison["rows"]}
    goals = comparison["goals"]

    for name in ("ours-b0-k1", "ours-b0", "ours-b0-onnxruntime", "ours-profile"):
        for reference in ("ref-torch", "ref-onnx"):
            expected = rows[name]["fps"] / rows[reference]["fps"]
            assert goals[name][f"speedup_vs_{reference}"] == pytest.approx(expected), (name, reference)
        assert goals[name]["speedup_goal_met"] == (goals[name]["speedup_vs_ref-torch"] >= 3.0)

    bound_ms = 0.78 / comparison["sgemm_gflops"] * 1000.0
    assert goals["flop_bound_ms"] == pytest.approx(bound_ms)
    assert goals["ours-b0"]["classifier_vs_flop_bound"] == pytest.approx(rows["ours-b0"]["classifier_ms_per_face"] / bound_ms)
    assert "classifier_vs_flop_bound" not in goals["ours-profile"]

    for name in ("run-rss", "run-rss-onnxruntime"):
        assert goals[name]["peak_rss_mb"] == pytest.approx(rows[name]["peak_rss_mib"] * 1.048576)
    assert "| ours-b0 |" in comparison["stdout"]
    assert "x ref-torch" in comparison["markdown"]
