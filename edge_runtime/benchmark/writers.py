"""Files and tables of a benchmark run: JSON, CSV, ``latest.json`` and the text table.

A run writes ``<stem>.json`` (the whole document, ``bench.schema.json``),
``<stem>.csv`` (one row per measurement, the same numbers as the JSON
``results`` list) and ``<stem>.png`` (see ``chart``) into the output
directory. It also replaces ``<state dir>/bench/latest.json`` with the
same JSON document, which backend selection reads through
``edge_runtime.bench_latest``. That module owns the path, so the writer
and the reader cannot disagree on it.
"""

from __future__ import annotations

import csv
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from edge_runtime.bench_latest import latest_path
from edge_runtime.benchmark.records import MEASUREMENT_FIELDS, BenchReport
from edge_runtime.models.fetch import write_text_atomic

logger = logging.getLogger(__name__)

CSV_FIELDS = (*MEASUREMENT_FIELDS, "details")

# Columns of the text table: header, width, and the flat measurement key.
TABLE_COLUMNS = (
    ("stage", 10, "stage"),
    ("name", 29, "name"),
    ("backend", 11, "backend"),
    ("prec", 5, "precision"),
    ("batch", 5, "batch"),
    ("p50 ms", 9, "p50_ms"),
    ("p90 ms", 9, "p90_ms"),
    ("p99 ms", 9, "p99_ms"),
    ("mean ms", 9, "mean_ms"),
    ("load ms", 8, "load_ms"),
    ("RSS MiB", 8, "process_peak_rss_mib"),
)
NUMERIC_COLUMNS = {"batch", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "load_ms", "process_peak_rss_mib"}


def output_stem(name: str, started: datetime) -> str:
    """Return ``<name>-<YYYY-MM-DD>T<HHMMSS>Z``, a run's file name without extension."""
    return f"{name}-{started.astimezone(timezone.utc).strftime('%Y-%m-%dT%H%M%SZ')}"


def write_json(report: BenchReport, path: Path) -> Path:
    """Write the result document to ``path`` (atomically) and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n")
    return path


def write_csv(report: BenchReport, path: Path) -> Path:
    """Write one row per measurement to ``path``; ``details`` is a JSON object in the last column."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in report.to_json()["results"]:
            writer.writerow({**row, "details": json.dumps(row["details"], sort_keys=True)})
    return path


def write_latest(report: BenchReport, path: Optional[Path] = None) -> Path:
    """Replace ``latest.json`` (default: ``latest_path()``) with the result document; return its path."""
    target = path if path is not None else latest_path()
    return write_json(report, target)


def _cell(value: Any, width: int, numeric: bool) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = f"{value:.2f}" if value < 1000 else f"{value:.0f}"
    else:
        text = str(value)
    if len(text) > width:
        text = text[: width - 1] + "~"
    return text.rjust(width) if numeric else text.ljust(width)


def render_table(report: BenchReport) -> str:
    """Return the measurements as a fixed-width text table, then the pipeline fps and the skipped list."""
    numeric = [key in NUMERIC_COLUMNS for _, _, key in TABLE_COLUMNS]
    header = " ".join(
        title.rjust(width) if is_number else title.ljust(width)
        for (title, width, _), is_number in zip(TABLE_COLUMNS, numeric)
    )
    lines = [header, "-" * len(header)]
    for row in report.to_json()["results"]:
        cells = [_cell(row[key], width, is_number) for (_, width, key), is_number in zip(TABLE_COLUMNS, numeric)]
        lines.append(" ".join(cells).rstrip())

    if report.pipeline is not None:
        pipeline = report.pipeline
        lines += [
            "",
            f"pipeline: {pipeline['fps']:.1f} fps over {pipeline['frames']} frames of {pipeline['input']} "
            f"(profile {pipeline['profile']}, MQTT: {pipeline['mqtt']['mode']})",
        ]
    if report.process_peak_rss_mib is not None:
        lines.append(f"process peak RSS: {report.process_peak_rss_mib:.1f} MiB (the whole benchmark process)")
    if report.skipped:
        lines += ["", f"skipped ({len(report.skipped)}):"]
        for item in report.skipped:
            where = "/".join(part for part in (item.backend, item.precision) if part)
            lines.append(f"  {item.stage} {item.name}{' ' + where if where else ''}: {item.reason}")
    return "\n".join(lines) + "\n"
