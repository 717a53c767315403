"""Helpers shared by the vision tests: reports, label files and face matching."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edge_runtime.vision.detectors.base import box_iou
from edge_runtime.vision.types import Detection, FaceResult


def write_report(report_dir: Path, name: str, data: dict) -> Path:
    """Write ``data`` as ``<name>.json`` in ``report_dir``, print it (shown with ``pytest -s``) and return the path."""
    path = report_dir / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    print(f"\n{name}: {json.dumps(data, sort_keys=True)}\n(written to {path})")
    return path


def read_labels(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def central_face(results: Sequence[FaceResult], width: int, height: int) -> Optional[FaceResult]:
    """Return the face whose box centre is nearest the image centre: the labelled subject of a portrait."""
    if not results:
        return None

    def distance(result: FaceResult) -> float:
        x1, y1, x2, y2 = result.detection.box
        return ((x1 + x2) / 2 - width / 2) ** 2 + ((y1 + y2) / 2 - height / 2) ** 2

    return min(results, key=distance)


def count_matches(truth: Sequence[Sequence[float]], detections: Sequence[Detection], threshold: float) -> int:
    """Count ground-truth boxes matched one-to-one by a detection with IoU at least ``threshold``.

    Detections are taken in score order and each takes its best unmatched ground-truth box.
    """
    if not truth or not detections:
        return 0
    remaining = np.asarray(truth, dtype=np.float64)
    unmatched = np.ones(len(remaining), dtype=bool)
    matched = 0
    for detection in detections:
        ious = np.where(unmatched, box_iou(np.asarray(detection.box), remaining), -1.0)
        best = int(np.argmax(ious))
        if ious[best] >= threshold:
            unmatched[best] = False
            matched += 1
    return matched
