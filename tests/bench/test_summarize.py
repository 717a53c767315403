"""Markdown tables of recorded bench results, and the page they go into."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.summarize import BENCHMARKS_FILE, END_MARKER, START_MARKER, render_all, replace_summary
from edge_runtime.benchmark.records import BenchReport, Measurement
from edge_runtime.benchmark.timing import LatencyStats

REPO_ROOT = Path(__file__).resolve().parents[2]


def small_report() -> BenchReport:
    platform = {
        "board": None, "cpu": "Test CPU", "cpu_cores": 4, "arch": "x86_64", "virtual_machine": False,
        "os": "Test OS", "kernel": "6.1", "python": "3.11.7", "numpy": "2.0", "opencv": "4.10",
        "backends": {"onnxruntime": "1.20"},
    }
    settings = {
        "iterations": 3, "warmup": 1, "input": "/data/clip.mp4", "frames": 2, "profile": "generic-x86_64",
        "threads": 2, "note": "idle",
    }
    report = BenchReport(platform=platform, settings=settings, started_utc="2026-12-04T20:00:00Z")
    report.measurements.append(
        Measurement(
            stage="classify", name="fer-mini-xception", backend="onnxruntime", precision="fp32", batch=4,
            input="clip.mp4", stats=LatencyStats.from_samples([1.0, 2.0, 3.0]), process_peak_rss_mib=100.0,
            load_ms=12.0,
        )
    )
    report.pipeline = {"fps": 25.5, "frames": 10, "models": {"detector": "mtcnn@onnxruntime/fp32"},
                       "mqtt": {"mode": "encode only"}}
    report.process_peak_rss_mib = 120.0
    return report


def test_render_all_lists_bench_results(tmp_path):
    (tmp_path / "board-a.json").write_text(json.dumps(small_report().to_json()))

    text = render_all(tmp_path)

    assert "### board-a" in text
    assert "**25.5 fps**" in text
    assert "| classify | fer-mini-xception | onnxruntime | fp32 | 4 | 2.00 |" in text
    assert "- Note: idle" in text


def test_render_all_skips_other_json(tmp_path):
    (tmp_path / "compare-board-a.json").write_text(json.dumps({"schema": "something-else", "rows": []}))

    assert render_all(tmp_path) == "No recorded runs yet.\n"


def test_replace_summary_between_markers():
    text = f"intro\n{START_MARKER}\nold table\n{END_MARKER}\nafter\n"

    replaced = replace_summary(text, "new table\n")

    assert "old table" not in replaced
    assert f"{START_MARKER}\n\nnew table\n\n{END_MARKER}\nafter\n" in replaced
    assert replaced.startswith("intro\n")


def test_replace_summary_without_markers():
    with pytest.raises(ValueError, match="is missing the markers"):
        replace_summary("no markers here", "table")


def test_benchmarks_page_at_repository_root():
    text = BENCHMARKS_FILE.read_text(encoding="utf-8")

    assert BENCHMARKS_FILE == REPO_ROOT / "BENCHMARKS.md"
    assert START_MARKER in text
    assert END_MARKER in text
