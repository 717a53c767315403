"""Statistics, timing loops, peak memory, platform naming and output paths of the benchmark."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from bench.__main__ import RESULTS_DIR, standard_arguments
from edge_runtime.benchmark.platform_info import board_slug, cpu_model, describe_platform, slugify
from edge_runtime.benchmark.timing import LatencyStats, peak_rss_mib, reset_peak_rss, time_calls
from edge_runtime.bench_latest import latest_path, state_dir
from edge_runtime.benchmark.writers import output_stem
from edge_runtime.commands.bench import DEFAULT_OUTPUT_DIR


def test_stats_of_known_samples():
    samples = [float(value) for value in range(1, 101)]

    stats = LatencyStats.from_samples(samples)

    assert stats.count == 100
    assert stats.mean_ms == pytest.approx(50.5)
    assert stats.p50_ms == pytest.approx(np.percentile(samples, 50))
    assert stats.p90_ms == pytest.approx(90.1)
    assert stats.p99_ms == pytest.approx(99.01)
    assert stats.min_ms == 1.0
    assert stats.max_ms == 100.0


def test_stats_reject_empty_samples():
    with pytest.raises(ValueError, match="iterations must be 1 or more"):
        LatencyStats.from_samples([])


def test_stats_as_dict_rounds_milliseconds():
    stats = LatencyStats.from_samples([0.123456789, 0.2])

    data = stats.as_dict(digits=3)

    assert data["min_ms"] == 0.123
    assert data["count"] == 2


def test_time_calls_excludes_warmup():
    indexes = []

    samples = time_calls(indexes.append, iterations=5, warmup=3)

    assert indexes == list(range(8))
    assert len(samples) == 5
    assert all(sample >= 0 for sample in samples)


def test_time_calls_rejects_zero_iterations():
    with pytest.raises(ValueError, match="iterations is 0"):
        time_calls(lambda index: None, iterations=0, warmup=0)


def test_peak_rss_reset_lowers_mark():
    if not reset_peak_rss():
        pytest.skip("this kernel does not allow resetting the peak RSS (/proc/self/clear_refs)")
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched by np.ones
    high = peak_rss_mib()
    del block

    assert reset_peak_rss()
    low = peak_rss_mib()

    assert high - low > 48


def test_board_slug_prefers_board_model():
    info = {"board": "Raspberry Pi 5 Model B Rev 1.0", "arch": "aarch64", "cpu": "Cortex-A76", "cpu_cores": 4}

    assert board_slug(info) == "raspberry-pi-5-model-b-rev-1.0"


def test_board_slug_without_board():
    info = {"board": None, "arch": "x86_64", "cpu": "AMD EPYC", "cpu_cores": 2, "virtual_machine": True}

    assert board_slug(info) == "x86_64-amd-epyc-2core-vm"


def test_slugify_never_empty():
    assert slugify("///") == "machine"


def test_cpu_model_from_raspberry_pi_cpuinfo():
    cpuinfo = "processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"

    assert cpu_model(cpuinfo) == "Raspberry Pi 4 Model B Rev 1.4"


def test_describe_platform_names_runtimes():
    info = describe_platform()

    assert info["cpu_cores"] >= 1
    assert info["arch"]
    assert info["python"].count(".") == 2
    assert info["numpy"] == np.__version__
    assert isinstance(info["backends"], dict)


def test_output_stem_format():
    started = datetime(2026, 12, 4, 20, 15, 7, tzinfo=timezone.utc)

    assert output_stem("pi5", started) == "pi5-2026-12-04T201507Z"


def test_state_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'service'}:{tmp_path / 'other'}")
    assert state_dir() == tmp_path / "service"

    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir() == tmp_path / "xdg" / "edge-runtime"

    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir() == tmp_path / "home" / ".local" / "state" / "edge-runtime"
    assert latest_path() == tmp_path / "home" / ".local" / "state" / "edge-runtime" / "bench" / "latest.json"


def test_standard_scenario_records_per_board():
    arguments = standard_arguments(["--video", "clip.mp4"])

    assert arguments[arguments.index("--output-dir") + 1] == str(RESULTS_DIR)
    assert arguments[arguments.index("--name") + 1] == board_slug(describe_platform())
    assert arguments[arguments.index("bench") + 1 :][:2] == ["--video", "clip.mp4"]


def test_standard_scenario_keeps_given_paths():
    arguments = standard_arguments(["--output-dir=/tmp/out", "--name", "pi5"])

    assert arguments.count("--output-dir=/tmp/out") == 1
    assert "--output-dir" not in arguments
    assert arguments.count("--name") == 1
    assert arguments[arguments.index("--name") + 1] == "pi5"


def test_standard_scenario_quick_keeps_defaults():
    arguments = standard_arguments(["--quick"])

    assert "--output-dir" not in arguments
    assert "--name" not in arguments
    assert "--latest" not in arguments
    assert Path(RESULTS_DIR).name == "results"


def test_default_output_dir_ignored_by_git():
    gitignore = Path(RESULTS_DIR).parents[1] / ".gitignore"

    patterns = gitignore.read_text().splitlines()

    assert f"{DEFAULT_OUTPUT_DIR}/" in patterns
