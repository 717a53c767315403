"""Timing loops, latency statistics and peak memory of the benchmark.

Latencies are wall-clock milliseconds from ``time.perf_counter_ns``.
Percentiles use numpy's default linear interpolation between the two
nearest timed runs. Peak memory is the process's resident set high-water
mark (``VmHWM`` in /proc/self/status), which ``reset_peak_rss`` lowers to
the current RSS so that each measurement reports its own peak.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

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
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> "LatencyStats":
        """Summarize the timed runs; raises ValueError when there are none."""
        if len(samples_ms) == 0:
            raise ValueError("no timed runs to summarize; iterations must be 1 or more")
        values = np.asarray(samples_ms, dtype=np.float64)
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(
            count=int(values.size),
            mean_ms=float(values.mean()),
            p50_ms=float(p50),
            p90_ms=float(p90),
            p99_ms=float(p99),
            min_ms=float(values.min()),
            max_ms=float(values.max()),
            std_ms=float(values.std()),
        )

    def as_dict(self, digits: int = 4) -> dict[str, Any]:
        """Return the fields as a dict with the milliseconds rounded to ``digits`` decimals."""
        return {key: (round(value, digits) if isinstance(value, float) else value) for key, value in asdict(self).items()}


def time_calls(call: Callable[[int], object], iterations: int, warmup: int) -> list[float]:
    """Run ``call(i)`` ``warmup`` times untimed, then ``iterations`` times; return each timed run in ms.

    ``i`` counts every call from 0, warm-up calls included, so a caller can
    cycle through its inputs.
    """
    if iterations < 1:
        raise ValueError(f"iterations is {iterations}; it must be 1 or more")
    if warmup < 0:
        raise ValueError(f"warmup is {warmup}; it must be 0 or more")

    for index in range(warmup):
        call(index)

    samples = []
    for index in range(warmup, warmup + iterations):
        start = time.perf_counter_ns()
        call(index)
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
    """Lower the peak-RSS mark to the current RSS (Linux 4.0 and later); return False where that is impossible."""
    try:
        PROC_CLEAR_REFS.write_text("5")
    except OSError as exc:
        logger.debug("cannot reset the peak RSS through %s: %s", PROC_CLEAR_REFS, exc)
        return False
    return True


def peak_rss_mib() -> float:
    """Return the peak resident set size of this process in MiB.

    Reads VmHWM, which ``reset_peak_rss`` can lower. Without /proc it falls
    back to ``ru_maxrss``, the peak since the process started.
    """
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0
