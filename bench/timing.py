"""Timing loops, latency statistics and peak memory of the benchmark.

Latencies are wall-clock milliseconds from ``time.perf_counter_ns``. Peak
memory is the process's resident set high-water mark (``VmHWM`` in
/proc/self/status), which ``reset_peak_rss`` lowers to the current RSS so
each stage reports its own peak.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

logger = logging.getLogger(__name__)

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class LatencyStats:
    """Summary of ``count`` timed runs, in milliseconds."""

    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    min_ms: float
    max_ms: float
    std_ms: float

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> "LatencyStats":
        if not samples_ms:
            raise ValueError("no timed runs to summarise; iterations must be 1 or more")
        values = np.asarray(samples_ms, dtype=np.float64)
        return cls(
            count=int(values.size),
            mean_ms=float(values.mean()),
            p50_ms=float(np.percentile(values, 50)),
            p95_ms=float(np.percentile(values, 95)),
            min_ms=float(values.min()),
            max_ms=float(values.max()),
            std_ms=float(values.std()),
        )


def time_calls(call: Callable[[], object], iterations: int, warmup: int) -> list[float]:
    """Run ``call`` ``warmup`` times untimed, then ``iterations`` times; return each timed run in ms."""
    if iterations < 1:
        raise ValueError(f"iterations is {iterations}; it must be 1 or more")
    for _ in range(warmup):
        call()

    samples = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples


def _status_kib(field: str) -> Optional[int]:
    try:
        text = PROC_STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def reset_peak_rss() -> bool:
    """Lower the peak-RSS mark to the current RSS (Linux 4.0+); returns False where that is impossible."""
    try:
        PROC_CLEAR_REFS.write_text("5")
    except OSError as exc:
        logger.debug("cannot reset the peak RSS through %s: %s", PROC_CLEAR_REFS, exc)
        return False
    return True


def peak_rss_mib() -> float:
    """Return the peak resident set size of this process in MiB.

    Reads VmHWM, which ``reset_peak_rss`` can lower; without /proc it falls
    back to ``ru_maxrss``, the peak since the process started.
    """
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0
