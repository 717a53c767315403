"""Benchmark records and their JSON and Markdown files.

A run writes ``<host>-<UTC date and time>.json`` and ``.md`` with the same
stem. The JSON is the record to compare boards with, and the Markdown shows the
same numbers as tables.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from bench.timing import LatencyStats

logger = logging.getLogger(__name__)

SCHEMA = "edge-runtime-bench/1"

# Order of the stages in the tables, upstream first.
STAGE_ORDER = ("decode", "detect", "preprocess", "classify", "analyze", "run_loop")
STAGE_TITLES = {
    "decode": "Image decode",
    "detect": "Face detection",
    "preprocess": "Crop + preprocess",
    "classify": "Classifiers",
    "analyze": "End to end: FaceAnalyzer.analyze per frame",
    "run_loop": "Run loop on a video",
}


@dataclass(frozen=True)
class StageResult:
    """Latency of one stage for one model, backend and input.

    ``batch`` is the number of faces per call for the classify and
    preprocess stages, else None. ``per_item_ms`` is ``mean_ms / batch``.
    ``fps`` is frames per second for the analyze and run_loop stages.
    ``peak_rss_mib`` is the process's peak resident set while the stage ran.
    ``details`` contains stage-specific facts such as the number of faces found.
    """

    stage: str
    name: str
    backend: Optional[str]
    input: str
    stats: LatencyStats
    peak_rss_mib: float
    batch: Optional[int] = None
    per_item_ms: Optional[float] = None
    fps: Optional[float] = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    """A stage that could not run, with the reason (e.g. backend not installed)."""

    stage: str
    name: str
    backend: Optional[str]
    reason: str


@dataclass
class BenchReport:
    """Everything one benchmark run measured."""

    host: dict[str, Any]
    settings: dict[str, Any]
    started_utc: str
    results: list[StageResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    duration_s: Optional[float] = None
    peak_rss_mib: Optional[float] = None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "started_utc": self.started_utc,
            "duration_s": self.duration_s,
            "host": self.host,
            "settings": self.settings,
            "peak_rss_mib": self.peak_rss_mib,
            "results": [_result_json(result) for result in self.results],
            "skipped": [asdict(item) for item in self.skipped],
        }


def _result_json(result: StageResult) -> dict[str, Any]:
    data = asdict(result)
    data.update(data.pop("stats"))
    return data


def safe_host_name(name: Optional[str] = None) -> str:
    """Return the host name reduced to letters, digits, '.', '_' and '-' for use in a file name."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", name or socket.gethostname()).strip("-.")
    return cleaned or "host"


def output_stem(started: datetime, host: Optional[str] = None) -> str:
    """Return ``<host>-<YYYY-MM-DD>T<HHMMSS>Z``, the file name of a run without extension."""
    return f"{safe_host_name(host)}-{started.astimezone(timezone.utc).strftime('%Y-%m-%dT%H%M%SZ')}"


def _cell(value: Optional[float], digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def render_markdown(report: BenchReport) -> str:
    """Return the report as Markdown: host facts, one table per stage, then skipped stages."""
    host = report.host
    lines = [
        f"# edge-runtime benchmark: {host.get('hostname')} ({report.started_utc})",
        "",
        f"- Board: {host.get('board') or 'unknown'}",
        f"- CPU: {host.get('cpu') or 'unknown'}, {host.get('cpu_count')} logical cores, {host.get('machine')}",
        f"- OS: {host.get('platform')}",
        f"- Python {host.get('python')}, numpy {host.get('numpy')}, OpenCV {host.get('opencv')}",
        f"- Backends: {', '.join(f'{name} {version}' for name, version in host.get('backends', {}).items()) or 'none'}",
        f"- Settings: {report.settings.get('iterations')} timed runs after {report.settings.get('warmup')} "
        f"warm-up runs, classifier batch {report.settings.get('batch')}, threads {report.settings.get('threads')}",
        f"- Inputs: {', '.join(report.settings.get('images', []))}"
        + (f"; video {report.settings['video']}" if report.settings.get("video") else ""),
        f"- Duration {_cell(report.duration_s, 1)} s, process peak RSS {_cell(report.peak_rss_mib, 1)} MiB",
        "",
        "Latencies in milliseconds; p50 and p95 are percentiles of the timed runs.",
    ]

    for stage in STAGE_ORDER:
        rows = [result for result in report.results if result.stage == stage]
        if not rows:
            continue
        lines += [
            "",
            f"## {STAGE_TITLES[stage]}",
            "",
            "| model | backend | input | batch | mean | p50 | p95 | min | per face | fps | peak RSS MiB | details |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for result in rows:
            stats = result.stats
            details = ", ".join(f"{key}={value}" for key, value in result.details.items())
            lines.append(
                f"| {result.name} | {result.backend or ''} | {result.input} | {result.batch or ''} "
                f"| {_cell(stats.mean_ms)} | {_cell(stats.p50_ms)} | {_cell(stats.p95_ms)} | {_cell(stats.min_ms)} "
                f"| {_cell(result.per_item_ms)} | {_cell(result.fps, 1)} | {_cell(result.peak_rss_mib, 1)} | {details} |"
            )

    if report.skipped:
        lines += ["", "## Skipped", ""]
        for item in report.skipped:
            backend = f" on {item.backend}" if item.backend else ""
            lines.append(f"- {item.stage} {item.name}{backend}: {item.reason}")

    return "\n".join(lines) + "\n"


def write_report(report: BenchReport, directory: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``directory``; return both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{stem}.json"
    markdown_path = directory / f"{stem}.md"
    json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    markdown_path.write_text(render_markdown(report), encoding="utf-8")
    return json_path, markdown_path


def describe_host() -> dict[str, Any]:
    """Collect the facts that make numbers from two boards comparable."""
    import os

    import cv2
    import numpy

    from edge_runtime import __version__
    from edge_runtime.backends import describe_backends

    return {
        "hostname": socket.gethostname(),
        "board": _board_model(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "opencv": cv2.__version__,
        "edge_runtime": __version__,
        "backends": {info.name: info.version for info in describe_backends() if info.available},
    }


def _board_model() -> Optional[str]:
    for path in (Path("/sys/firmware/devicetree/base/model"), Path("/proc/device-tree/model")):
        try:
            return path.read_bytes().rstrip(b"\x00").decode("utf-8", "replace").strip()
        except OSError:
            continue
    try:
        return Path("/sys/class/dmi/id/product_name").read_text().strip() or None
    except OSError:
        return None


def _cpu_model() -> Optional[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or None
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            if line.startswith(key) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or None
