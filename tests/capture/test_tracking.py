"""IoU tracker: matching, new ids, missed frames and id order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from edge_runtime.capture.tracking import IouTracker, iou_matrix

A = (0.0, 0.0, 100.0, 100.0)
A_SHIFTED = (10.0, 0.0, 110.0, 100.0)  # IoU with A = 90 / 110 = 0.818
A_FAR = (60.0, 0.0, 160.0, 100.0)  # IoU with A = 40 / 160 = 0.25
B = (300.0, 300.0, 400.0, 400.0)
B_SHIFTED = (305.0, 300.0, 405.0, 400.0)


@dataclass(frozen=True)
class Case:
    name: str
    frames: list[list[tuple[float, float, float, float]]]
    expected_ids: list[list[int]]
    min_iou: float = 0.3
    max_missed: int = 2


CASES = [
    Case("same box keeps its id", [[A], [A], [A]], [[1], [1], [1]]),
    Case("small shift keeps its id", [[A], [A_SHIFTED]], [[1], [1]]),
    Case("shift below min_iou opens a track", [[A], [A_FAR]], [[1], [2]]),
    Case("lower min_iou accepts the far shift", [[A], [A_FAR]], [[1], [1]], min_iou=0.2),
    Case("two faces keep their ids", [[A, B], [B_SHIFTED, A_SHIFTED]], [[1, 2], [2, 1]]),
    Case("new face gets the next id", [[A], [A, B]], [[1], [1, 2]]),
    Case("gap within max_missed keeps the id", [[A], [], [], [A]], [[1], [], [], [1]]),
    Case("gap beyond max_missed opens a track", [[A], [], [], [], [A]], [[1], [], [], [], [2]]),
    Case("max_missed 0 closes at once", [[A], [], [A]], [[1], [], [2]], max_missed=0),
    Case("ids are never reused", [[A], [], [], [], [B], [], [], [], [A]], [[1], [], [], [], [2], [], [], [], [3]]),
    Case("empty frames give no ids", [[], []], [[], []]),
    Case(
        "best overlap wins a contested box",
        [[A, (0.0, 0.0, 100.0, 200.0)], [A]],
        [[1, 2], [1]],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_tracker_cases(case: Case) -> None:
    tracker = IouTracker(min_iou=case.min_iou, max_missed=case.max_missed)
    for frame_number, (boxes, expected) in enumerate(zip(case.frames, case.expected_ids)):
        assert tracker.update(boxes) == expected, f"frame {frame_number}"


def test_tracker_closes_missed_tracks() -> None:
    tracker = IouTracker(max_missed=1)
    tracker.update([A, B])
    tracker.update([A])
    assert [track.track_id for track in tracker.tracks] == [1, 2]

    tracker.update([A])
    assert [track.track_id for track in tracker.tracks] == [1]


def test_tracker_follows_moving_face() -> None:
    tracker = IouTracker(min_iou=0.3)
    ids = []
    for step in range(30):
        x = 5.0 * step
        ids.append(tracker.update([(x, 0.0, x + 100.0, 100.0)])[0])
    assert set(ids) == {1}


def test_iou_matrix_values() -> None:
    iou = iou_matrix([A, B], [A, A_SHIFTED, A_FAR, (0.0, 0.0, 0.0, 0.0)])

    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou[0], [1.0, 90.0 / 110.0, 40.0 / 160.0, 0.0])
    np.testing.assert_allclose(iou[1], [0.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("min_iou", [0.0, -0.1, 1.5])
def test_tracker_rejects_invalid_min_iou(min_iou: float) -> None:
    with pytest.raises(ValueError, match="min_iou"):
        IouTracker(min_iou=min_iou)
