"""Timing helpers for the scripts under ``bench/``; they live in ``edge_runtime.benchmark.timing``.

``bench.compare`` and ``bench.references`` import ``LatencyStats`` and
``peak_rss_mib`` from here.
"""

from edge_runtime.benchmark.timing import LatencyStats, peak_rss_mib, reset_peak_rss, time_calls

__all__ = ["LatencyStats", "peak_rss_mib", "reset_peak_rss", "time_calls"]
