"""Statistics, peak-memory tracking and file naming of the benchmark."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from bench.report import output_stem, safe_host_name
from bench.timing import LatencyStats, peak_rss_mib, reset_peak_rss, time_calls


def test_stats_of_known_samples():
    stats = LatencyStats.from_samples([float(value) for value in range(1, 21)])

    assert stats.count == 20
    assert stats.mean_ms == pytest.approx(10.5)
    assert stats.p50_ms == pytest.approx(10.5)
    assert stats.p95_ms == pytest.approx(19.05)
    assert stats.min_ms == 1.0
    assert stats.max_ms == 20.0


def test_stats_reject_empty_samples():
    with pytest.raises(ValueError, match="iterations must be 1 or more"):
        LatencyStats.from_samples([])


def test_time_calls_excludes_warmup():
    calls = []

    samples = time_calls(lambda: calls.append(1), iterations=5, warmup=3)

    assert len(calls) == 8
    assert len(samples) == 5
    assert all(sample >= 0 for sample in samples)


def test_time_calls_rejects_zero_iterations():
    with pytest.raises(ValueError, match="iterations is 0"):
        time_calls(lambda: None, iterations=0, warmup=0)


def test_peak_rss_reset_lowers_mark():
    if not reset_peak_rss():
        pytest.skip("this kernel does not allow resetting the peak RSS (/proc/self/clear_refs)")
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched by np.ones
    high = peak_rss_mib()
    del block

    assert reset_peak_rss()
    low = peak_rss_mib()

    assert high - low > 48


def test_output_stem_format():
    started = datetime(2026, 12, 4, 20, 15, 7, tzinfo=timezone.utc)

    assert output_stem(started, host="pi5 lab/1") == "pi5-lab-1-2026-12-04T201507Z"


def test_safe_host_name_never_empty():
    assert safe_host_name("...") == "host"
