"""The benchmark's result document: one ``Measurement`` per stage, model, backend, precision and batch.

``BenchReport.to_json`` returns the document that ``bench.schema.json``
describes. Its ``classify`` and ``detect`` lists repeat the model
measurements in the shape that backend selection reads from
``<state dir>/bench/latest.json``: model, backend, precision, batch and the
p50/p90/p99 latencies in milliseconds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Optional

from edge_runtime.benchmark.timing import LatencyStats

logger = logging.getLogger(__name__)

SCHEMA = "edge-runtime-bench/1"
SCHEMA_FILE = "bench.schema.json"

# Stages in pipeline order; tables, CSV rows and the chart follow it.
STAGES = ("decode", "detect", "preprocess", "classify", "track", "publish", "pipeline")

# Columns of a flat measurement, in the order of the CSV file.
MEASUREMENT_FIELDS = (
    "stage", "name", "backend", "precision", "batch", "input",
    "count", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "std_ms",
    "load_ms", "process_peak_rss_mib", "fps",
)

# Fields of one entry of the ``classify`` and ``detect`` lists.
MODEL_ENTRY_FIELDS = (
    "model", "backend", "precision", "batch", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "count", "load_ms",
)


@dataclass(frozen=True)
class Measurement:
    """Latency of one stage for one model, backend, precision and batch.

    ``batch`` is the number of faces per call for preprocess and classify,
    and 1 (one frame) for the other stages. ``load_ms`` is the time
    ``load_model`` took, sha256 checks of the files included, or None for
    stages without a model. ``process_peak_rss_mib`` is the peak resident
    set size of the whole benchmark process while this measurement ran, so
    it includes every model and buffer still alive at that time. ``fps`` is
    set for the pipeline only. ``details`` contains stage-specific facts.
    """

    stage: str
    name: str
    backend: Optional[str]
    precision: Optional[str]
    batch: int
    input: str
    stats: LatencyStats
    process_peak_rss_mib: float
    load_ms: Optional[float] = None
    fps: Optional[float] = None
    details: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        """Return the measurement as one flat dict: the fields of ``MEASUREMENT_FIELDS`` plus ``details``."""
        data = {key: value for key, value in asdict(self).items() if key != "stats"}
        data.update(self.stats.as_dict())
        ordered = {key: data[key] for key in MEASUREMENT_FIELDS}
        ordered["details"] = dict(self.details)
        return ordered

    def model_entry(self) -> dict[str, Any]:
        """Return the ``classify``/``detect`` list entry of this measurement."""
        flat = self.flat()
        flat["model"] = self.name
        return {key: flat[key] for key in MODEL_ENTRY_FIELDS}


@dataclass(frozen=True)
class Skipped:
    """A measurement that could not run, with the reason (for example, no variant in a format the backend loads)."""

    stage: str
    name: str
    backend: Optional[str]
    precision: Optional[str]
    reason: str


@dataclass
class BenchReport:
    """Everything one benchmark run measured, with the platform and settings it ran on."""

    platform: dict[str, Any]
    settings: dict[str, Any]
    started_utc: str
    measurements: list[Measurement] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    pipeline: Optional[dict[str, Any]] = None
    duration_s: Optional[float] = None
    process_peak_rss_mib: Optional[float] = None

    def by_stage(self, stage: str) -> list[Measurement]:
        """Return the measurements of ``stage`` in the order they ran."""
        return [measurement for measurement in self.measurements if measurement.stage == stage]

    def ordered(self) -> list[Measurement]:
        """Return every measurement, grouped by stage in pipeline order."""
        return [measurement for stage in STAGES for measurement in self.by_stage(stage)]

    def to_json(self) -> dict[str, Any]:
        """Return the result document (see ``bench.schema.json``)."""
        return {
            "schema": SCHEMA,
            "started_utc": self.started_utc,
            "duration_s": self.duration_s,
            "platform": self.platform,
            "settings": self.settings,
            "process_peak_rss_mib": self.process_peak_rss_mib,
            "results": [measurement.flat() for measurement in self.ordered()],
            "classify": [measurement.model_entry() for measurement in self.by_stage("classify")],
            "detect": [measurement.model_entry() for measurement in self.by_stage("detect")],
            "pipeline": self.pipeline,
            "skipped": [asdict(item) for item in self.skipped],
        }


def load_schema() -> dict[str, Any]:
    """Load ``bench.schema.json``, the JSON Schema of the result document.

    Its ``$defs/summary`` describes the compact summary that ``--publish`` sends.
    """
    text = resources.files("edge_runtime").joinpath("schemas", SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)
