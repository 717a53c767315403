"""Window aggregation against statistics computed by hand from constructed face results."""

from __future__ import annotations

import math

import pytest

from edge_runtime.capture.aggregation import Statistics, WindowAggregator
from edge_runtime.vision.types import AgeEstimate, Detection, FaceResult

BOX = (10.0, 10.0, 60.0, 60.0)
OTHER_BOX = (200.0, 10.0, 250.0, 60.0)
STD_OF_POINT2_SPREAD = math.sqrt(0.08 / 3)  # std of (x, x + 0.2, x - 0.2)


def face(happiness, neutral, *, box=BOX, age=None, gender_female=None, valence=None, arousal=None) -> FaceResult:
    return FaceResult(
        detection=Detection(box=box, score=0.99),
        emotions={"happiness": happiness, "neutral": neutral},
        age=AgeEstimate(years=age[0], spread=age[1]) if age else None,
        gender={"female": gender_female, "male": 1.0 - gender_female} if gender_female is not None else None,
        valence=valence,
        arousal=arousal,
    )


def first_window():
    """Feed four frames of window 0 (one without faces) and one frame of window 1."""
    aggregator = WindowAggregator(window_s=10.0)
    frames = [
        (0.0, [(1, face(0.6, 0.4, age=(30.0, 2.0), gender_female=0.8))]),
        (1.0, [
            (1, face(0.8, 0.2, age=(34.0, 4.0), gender_female=0.6)),
            (2, face(0.1, 0.9, box=OTHER_BOX)),
        ]),
        (2.0, []),
        (3.0, [(1, face(0.4, 0.6, age=(32.0, 3.0), gender_female=0.7, valence=0.5, arousal=-0.25))]),
    ]
    for media_s, faces in frames:
        assert aggregator.add(media_s, 1000.0 + media_s, faces) == []
    closed = aggregator.add(12.0, 1012.0, [])
    return aggregator, closed


def test_window_closes_on_next_window_frame() -> None:
    _, closed = first_window()

    assert len(closed) == 1
    window = closed[0]
    assert window.index == 0
    assert window.final is False
    assert window.media_start_s == 0.0
    assert window.media_end_s == 10.0
    assert window.wall_start == 1000.0
    assert window.wall_end == 1003.0


def test_window_counts_frames_without_faces() -> None:
    window = first_window()[1][0]

    assert window.frames == 4
    assert window.frames_with_faces == 3
    assert window.fps == pytest.approx(0.4)
    assert window.face_count.mean == pytest.approx(1.0)
    assert window.face_count.max == 2
    assert window.face_count.min == 0


def test_window_group_emotions_average_all_faces() -> None:
    window = first_window()[1][0]

    assert window.group_emotions["happiness"] == pytest.approx((0.6 + 0.8 + 0.1 + 0.4) / 4)
    assert window.group_emotions["neutral"] == pytest.approx((0.4 + 0.2 + 0.9 + 0.6) / 4)


def test_track_emotion_statistics() -> None:
    track = first_window()[1][0].tracks[0]

    assert track.track_id == 1
    assert track.frames == 3
    assert track.seconds_seen == pytest.approx(7.5)
    assert track.first_media_s == 0.0
    assert track.last_media_s == 3.0
    assert track.emotions["happiness"] == pytest.approx(0.6)
    assert track.emotions["neutral"] == pytest.approx(0.4)
    assert track.dominant_emotion == "happiness"

    happiness = track.emotion_stats["happiness"]
    assert happiness.mean == pytest.approx(0.6)
    assert happiness.max == pytest.approx(0.8)
    assert happiness.min == pytest.approx(0.4)
    assert happiness.std == pytest.approx(STD_OF_POINT2_SPREAD)
    neutral = track.emotion_stats["neutral"]
    assert neutral.max == pytest.approx(0.6)
    assert neutral.min == pytest.approx(0.2)
    assert neutral.std == pytest.approx(STD_OF_POINT2_SPREAD)


def test_track_age_gender_valence() -> None:
    track = first_window()[1][0].tracks[0]

    assert track.age.mean == pytest.approx(32.0)
    assert track.age.std == pytest.approx(math.sqrt(8.0 / 3))
    assert track.age.spread_mean == pytest.approx(3.0)
    assert track.age.frames == 3
    assert track.gender["female"] == pytest.approx(0.7)
    assert track.gender["male"] == pytest.approx(0.3)
    assert track.valence == pytest.approx(0.5)
    assert track.arousal == pytest.approx(-0.25)
    assert track.ethnicity is None


def test_track_without_attributes() -> None:
    second = first_window()[1][0].tracks[1]

    assert second.track_id == 2
    assert second.frames == 1
    assert second.seconds_seen == pytest.approx(2.5)
    assert second.dominant_emotion == "neutral"
    assert second.emotion_stats["neutral"].std == 0.0
    assert second.age is None
    assert second.gender is None
    assert second.valence is None


def test_flush_returns_partial_final_window() -> None:
    aggregator, _ = first_window()
    aggregator.add(12.5, 1012.5, [(1, face(0.3, 0.7))])

    window = aggregator.flush()

    assert window.index == 1
    assert window.final is True
    assert window.frames == 2
    assert window.media_start_s == 10.0
    assert window.media_end_s == pytest.approx(13.0)
    assert window.fps == pytest.approx(2 / 3)
    assert window.tracks[0].seconds_seen == pytest.approx(1.5)
    assert aggregator.flush() is None


def test_flush_uses_nominal_frame_interval() -> None:
    aggregator = WindowAggregator(window_s=10.0, frame_interval_s=0.25)
    aggregator.add(4.0, 0.0, [])

    window = aggregator.flush()

    assert window.media_end_s == pytest.approx(4.25)
    assert window.fps == pytest.approx(1 / 4.25)


def test_final_window_never_exceeds_its_bound() -> None:
    aggregator = WindowAggregator(window_s=10.0, frame_interval_s=1.0)
    aggregator.add(9.5, 0.0, [])

    assert aggregator.flush().media_end_s == 10.0


def test_single_frame_at_window_start_has_no_fps() -> None:
    aggregator = WindowAggregator(window_s=10.0)
    aggregator.add(10.0, 0.0, [])

    window = aggregator.flush()

    assert window.duration_s == 0.0
    assert window.fps is None


def test_windows_without_frames_are_skipped() -> None:
    aggregator = WindowAggregator(window_s=10.0)
    aggregator.add(1.0, 0.0, [])

    closed = aggregator.add(35.0, 34.0, [])

    assert [window.index for window in closed] == [0]
    assert aggregator.flush().index == 3


def test_min_track_frames_hides_short_tracks_only() -> None:
    aggregator = WindowAggregator(window_s=10.0, min_track_frames=2)
    aggregator.add(0.0, 0.0, [(1, face(0.5, 0.5)), (2, face(0.9, 0.1, box=OTHER_BOX))])
    aggregator.add(1.0, 1.0, [(1, face(0.5, 0.5))])

    window = aggregator.flush()

    assert [track.track_id for track in window.tracks] == [1]
    assert window.face_count.max == 2
    assert window.group_emotions["happiness"] == pytest.approx((0.5 + 0.9 + 0.5) / 3)


def test_statistics_of_series() -> None:
    stats = Statistics.of([1.0, 2.0, 3.0, 4.0])

    assert stats.mean == 2.5
    assert stats.max == 4.0
    assert stats.min == 1.0
    assert stats.std == pytest.approx(math.sqrt(1.25))
