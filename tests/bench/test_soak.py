"""The soak benchmark: its growth fit, its duration parser and one short run with real models."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak import MemorySample, memory_growth, parse_duration

REPO_ROOT = Path(__file__).resolve().parents[2]


def samples_growing(mib_per_hour: float, start_mib: float, count: int, step_s: float) -> list[MemorySample]:
    return [
        MemorySample(
            elapsed_s=index * step_s,
            rss_mib=start_mib + mib_per_hour * index * step_s / 3600.0,
            frames_delivered=index,
            loops=0,
            python_objects=1000,
        )
        for index in range(count)
    ]


def test_growth_fit_recovers_slope() -> None:
    growth = memory_growth(samples_growing(12.0, 300.0, 40, 5.0), warmup_s=0.0)

    assert growth.mib_per_hour == pytest.approx(12.0)
    assert growth.late_mib_per_hour == pytest.approx(12.0)
    assert growth.samples_used == 40
    assert growth.first_mib == pytest.approx(300.0)


def test_growth_fit_skips_warmup() -> None:
    # A steep start (model loading) followed by a flat plateau: the fit must see only the plateau.
    warmup = [MemorySample(float(t), 100.0 + 20.0 * t, 0, 0, 1000) for t in range(5)]
    plateau = [MemorySample(float(t), 200.0, 0, 0, 1000) for t in range(5, 30)]

    growth = memory_growth(warmup + plateau, warmup_s=5.0)

    assert growth.samples_used == 25
    assert growth.mib_per_hour == pytest.approx(0.0, abs=1e-6)
    assert growth.peak_mib == pytest.approx(200.0)


def test_growth_fit_late_half_levels_off() -> None:
    # 10 MiB over the first half after the warm-up, then flat: a pool filling up, not a leak.
    rising = [MemorySample(float(t), 300.0 + t, 0, 0, 1000) for t in range(10)]
    flat = [MemorySample(float(t), 309.0, 0, 0, 1000) for t in range(10, 20)]

    growth = memory_growth(rising + flat, warmup_s=0.0)

    assert growth.mib_per_hour > 1000.0
    assert growth.late_mib_per_hour == pytest.approx(0.0, abs=1e-6)


def test_growth_fit_needs_two_samples() -> None:
    growth = memory_growth(samples_growing(12.0, 300.0, 3, 5.0), warmup_s=10.0)

    assert growth.samples_used == 1
    assert growth.mib_per_hour is None
    assert growth.late_mib_per_hour is None


@pytest.mark.parametrize(("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("8h", 28800.0), ("0.5", 0.5)])
def test_duration_parser_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "ten", "0", "-5m"])
def test_duration_parser_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="duration"):
        parse_duration(text)


def test_soak_run_writes_record(model_store, mosquitto_broker, tmp_path) -> None:
    output_dir = tmp_path / "soak"
    command = [
        sys.executable, "-m", "bench.soak",
        "--duration", "12",
        "--sample-interval", "1",
        "--warmup", "3",
        "--store", str(model_store.root),
        "--broker", mosquitto_broker.url,
        "--window", "2",
        "--output-dir", str(output_dir),
        "--name", "test-board",
        "--note", "unit test",
    ]
    process = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-4000:]

    records = sorted(output_dir.glob("test-board-*.json"))
    assert len(records) == 1, records
    record = json.loads(records[0].read_text())
    samples = record["samples"]

    assert "growth" in process.stdout
    assert record["kind"] == "soak"
    assert record["note"] == "unit test"
    assert record["stop_reason"] == "soak duration reached"
    assert record["elapsed_s"] == pytest.approx(12.0, abs=3.0)
    assert record["frames_analyzed"] > 0
    assert record["mqtt"]["mode"] == "broker"
    assert record["mqtt"]["own_broker"] is False
    assert record["mqtt"]["messages_lost"] == 0
    assert len(samples) >= 10
    assert all(sample["rss_mib"] > 50 for sample in samples)
    assert [sample["elapsed_s"] for sample in samples] == sorted(sample["elapsed_s"] for sample in samples)
    assert samples[-1]["frames_delivered"] >= samples[0]["frames_delivered"]
    assert record["memory"]["samples_used"] == sum(1 for sample in samples if sample["elapsed_s"] >= 3.0)
    assert record["memory"]["mib_per_hour"] is not None
    assert record["memory"]["late_mib_per_hour"] is not None
    assert set(record["models"]) >= {"detector", "emotion"}
