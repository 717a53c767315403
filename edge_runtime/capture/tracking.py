"""Greedy IoU tracking of face boxes across frames.

Each analyzed frame's boxes are matched to the open tracks by intersection
over union (IoU). Pairs are taken in order of decreasing IoU, and a pair is
accepted while both sides are still free and its IoU reaches ``min_iou``.
Unmatched boxes open new tracks, and a track that stays unmatched for more
than ``max_missed`` analyzed frames is closed. Track ids start at 1, only
increase and are never reused within one tracker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


@dataclass
class Track:
    """An open track: its id, last matched box and how often it was matched or missed."""

    track_id: int
    box: Box
    hits: int = 1
    missed: int = 0


def iou_matrix(boxes_a: Sequence[Box], boxes_b: Sequence[Box]) -> np.ndarray:
    """Return the ``(len(a), len(b))`` IoU matrix of two lists of ``(x1, y1, x2, y2)`` boxes.

    Boxes with zero or negative area have IoU 0 with everything.
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)

    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    intersection = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)

    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - intersection

    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, intersection / union, 0.0)
    return iou


class IouTracker:
    """Assign a persistent track id to each face box of consecutive frames."""

    def __init__(self, min_iou: float = 0.3, max_missed: int = 10) -> None:
        if not 0 < min_iou <= 1:
            raise ValueError(f"min_iou={min_iou} must be in (0, 1]")
        if max_missed < 0:
            raise ValueError(f"max_missed={max_missed} must be 0 or more")
        self.min_iou = min_iou
        self.max_missed = max_missed
        self._tracks: list[Track] = []
        self._next_id = 1

    @property
    def tracks(self) -> list[Track]:
        """Open tracks in order of creation."""
        return list(self._tracks)

    def update(self, boxes: Sequence[Box]) -> list[int]:
        """Match the boxes of one analyzed frame and return a track id per box, in input order.

        Call it once per analyzed frame, also with an empty list, because
        frames without boxes count towards ``max_missed``.
        """
        track_ids = [0] * len(boxes)
        matched_tracks: set[int] = set()

        if self._tracks and boxes:
            iou = iou_matrix([track.box for track in self._tracks], boxes)
            track_rows, box_columns = np.nonzero(iou >= self.min_iou)
            order = np.argsort(-iou[track_rows, box_columns], kind="stable")
            for k in order:
                row, column = int(track_rows[k]), int(box_columns[k])
                if row in matched_tracks or track_ids[column]:
                    continue
                track = self._tracks[row]
                track.box = tuple(float(v) for v in boxes[column])
                track.hits += 1
                track.missed = 0
                track_ids[column] = track.track_id
                matched_tracks.add(row)

        survivors = []
        for row, track in enumerate(self._tracks):
            if row not in matched_tracks:
                track.missed += 1
                if track.missed > self.max_missed:
                    logger.debug("track %d closed after %d hits", track.track_id, track.hits)
                    continue
            survivors.append(track)
        self._tracks = survivors

        for column, box in enumerate(boxes):
            if track_ids[column]:
                continue
            track = Track(track_id=self._next_id, box=tuple(float(v) for v in box))
            self._next_id += 1
            self._tracks.append(track)
            track_ids[column] = track.track_id
            logger.debug("track %d opened at %s", track.track_id, track.box)

        return track_ids
