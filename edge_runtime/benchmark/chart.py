"""PNG chart of a benchmark run, drawn with Pillow: one horizontal bar per measurement.

Each bar ends at the p50 latency and a whisker reaches to p90. The axis is
logarithmic (one grid line per power of ten), because a run spans from
tens of microseconds (preprocessing a face) to tens of milliseconds (MTCNN
on a frame). Bars are colored by stage.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from edge_runtime.benchmark.records import STAGES, BenchReport, Measurement

logger = logging.getLogger(__name__)

WIDTH = 1200
ROW_HEIGHT = 18
LABEL_WIDTH = 470
MARGIN = 16
TITLE_HEIGHT = 40
AXIS_HEIGHT = 28

STAGE_COLORS = {
    "decode": (128, 128, 128),
    "detect": (31, 119, 180),
    "preprocess": (148, 103, 189),
    "classify": (44, 160, 44),
    "track": (255, 127, 14),
    "publish": (140, 86, 75),
    "pipeline": (214, 39, 40),
}


def bar_label(measurement: Measurement) -> str:
    """Return the row label: stage, name, backend/precision and batch."""
    where = "/".join(part for part in (measurement.backend, measurement.precision) if part)
    parts = [measurement.stage, measurement.name, where, f"b{measurement.batch}" if measurement.batch > 1 else ""]
    return " ".join(part for part in parts if part)


def write_chart(report: BenchReport, path: Path, title: str) -> Path:
    """Draw the p50 bars with p90 whiskers of every measurement into a PNG at ``path``; return ``path``.

    Raises ValueError when the report has no measurement.
    """
    rows = report.ordered()
    if not rows:
        raise ValueError("the report has no measurement to chart")

    low = min(max(row.stats.p50_ms, 1e-3) for row in rows)
    high = max(row.stats.p90_ms for row in rows)
    first_decade = math.floor(math.log10(low))
    last_decade = max(math.ceil(math.log10(high)), first_decade + 1)

    plot_left = LABEL_WIDTH
    plot_right = WIDTH - MARGIN
    height = TITLE_HEIGHT + AXIS_HEIGHT + ROW_HEIGHT * len(rows) + MARGIN

    def x_of(milliseconds: float) -> float:
        position = (math.log10(max(milliseconds, 10.0**first_decade)) - first_decade) / (last_decade - first_decade)
        return plot_left + position * (plot_right - plot_left)

    image = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()

    draw.text((MARGIN, 10), title, fill="black", font=font)
    axis_y = TITLE_HEIGHT + AXIS_HEIGHT - 6
    for decade in range(first_decade, last_decade + 1):
        x = x_of(10.0**decade)
        draw.line([(x, axis_y), (x, height - MARGIN)], fill=(220, 220, 220))
        label = f"{10.0**decade:g} ms"
        label_width = draw.textlength(label, font=font)
        draw.text((min(x - label_width / 2, plot_right - label_width), TITLE_HEIGHT), label, fill="black", font=font)

    for index, row in enumerate(rows):
        top = TITLE_HEIGHT + AXIS_HEIGHT + index * ROW_HEIGHT
        middle = top + ROW_HEIGHT / 2
        color = STAGE_COLORS.get(row.stage, (0, 0, 0))
        draw.text((MARGIN, top + 3), bar_label(row)[:70], fill="black", font=font)

        bar_end = x_of(row.stats.p50_ms)
        draw.rectangle([(plot_left, top + 3), (max(bar_end, plot_left + 1), top + ROW_HEIGHT - 3)], fill=color)
        whisker_end = x_of(row.stats.p90_ms)
        draw.line([(bar_end, middle), (whisker_end, middle)], fill="black", width=1)
        draw.line([(whisker_end, top + 5), (whisker_end, top + ROW_HEIGHT - 5)], fill="black", width=1)

    legend_x = plot_right - 7 * 90
    for offset, stage in enumerate(STAGES):
        x = legend_x + offset * 90
        draw.rectangle([(x, 12), (x + 10, 22)], fill=STAGE_COLORS[stage])
        draw.text((x + 14, 10), stage, fill="black", font=font)

    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
