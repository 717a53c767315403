"""Windowed aggregation of per-frame face results.

Frames are grouped into windows of ``window_s`` seconds of source time:
window ``k`` contains the frames with ``k * window_s <= media_s < (k + 1) * window_s``.
Every analyzed frame counts, also one without faces. A window is closed
when the first frame of a later window arrives, or by ``flush()`` at the
end of the source. Windows in which no frame arrived (a source outage) are
not reported.

Per track the summary contains the mean emotion distribution and, for every
emotion, the mean, max, min and standard deviation of its score over the
track's frames. The same four statistics, applied to frame-level
features, form the video descriptor of "Facial expression and attributes
recognition based on multi-task learning of lightweight neural networks"
(section 3.3), which the HSEmotion models come from. All standard
deviations are population values (ddof=0).

Only labels and numbers derived from the classifier outputs are kept here.
``FaceResult.features`` is never read, so no embedding reaches a message.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from edge_runtime.vision.types import FaceResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Statistics:
    """Mean, maximum, minimum and population standard deviation of a series."""

    mean: float
    max: float
    min: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Statistics":
        array = np.asarray(values, dtype=np.float64)
        if array.size == 0:
            raise ValueError("statistics of an empty series are undefined")
        return cls(
            mean=float(array.mean()),
            max=float(array.max()),
            min=float(array.min()),
            std=float(array.std()),
        )


@dataclass(frozen=True)
class AgeSummary:
    """Age of one track over a window, in years.

    ``std`` is the spread of the per-frame estimates across frames and
    ``spread_mean`` the mean of each frame's own spread (the standard
    deviation over the top-L age classes of that frame).
    """

    mean: float
    std: float
    spread_mean: float
    frames: int


@dataclass(frozen=True)
class TrackSummary:
    """One track's aggregate over one window.

    ``seconds_seen`` is the window duration times the share of the window's
    frames in which the track was seen. Attribute fields are None when no
    frame of the track carried that attribute.
    """

    track_id: int
    frames: int
    seconds_seen: float
    first_media_s: float
    last_media_s: float
    emotions: Optional[dict[str, float]] = None
    dominant_emotion: Optional[str] = None
    emotion_stats: Optional[dict[str, Statistics]] = None
    valence: Optional[float] = None
    arousal: Optional[float] = None
    age: Optional[AgeSummary] = None
    gender: Optional[dict[str, float]] = None
    ethnicity: Optional[dict[str, float]] = None


@dataclass(frozen=True)
class WindowSummary:
    """Aggregate of one window.

    ``media_start_s``/``media_end_s`` are on the source's timeline: the
    window bounds for a full window, and for the last, partial window the
    end of its last frame. ``wall_start``/``wall_end`` are UNIX times when
    the first and last frame of the window were read. ``fps`` is analyzed
    frames per second of source time, None when the duration is 0.
    """

    index: int
    media_start_s: float
    media_end_s: float
    wall_start: float
    wall_end: float
    frames: int
    frames_with_faces: int
    fps: Optional[float]
    face_count: Statistics
    group_emotions: Optional[dict[str, float]]
    tracks: list[TrackSummary]
    final: bool

    @property
    def duration_s(self) -> float:
        return self.media_end_s - self.media_start_s


@dataclass
class _TrackSeries:
    """Per-frame values of one track within the open window."""

    track_id: int
    media_s: list[float] = field(default_factory=list)
    emotions: list[dict[str, float]] = field(default_factory=list)
    valence: list[float] = field(default_factory=list)
    arousal: list[float] = field(default_factory=list)
    age_years: list[float] = field(default_factory=list)
    age_spread: list[float] = field(default_factory=list)
    gender: list[dict[str, float]] = field(default_factory=list)
    ethnicity: list[dict[str, float]] = field(default_factory=list)

    def add(self, media_s: float, face: FaceResult) -> None:
        self.media_s.append(media_s)
        if face.emotions:
            self.emotions.append(dict(face.emotions))
        if face.valence is not None:
            self.valence.append(float(face.valence))
        if face.arousal is not None:
            self.arousal.append(float(face.arousal))
        if face.age is not None:
            self.age_years.append(float(face.age.years))
            self.age_spread.append(float(face.age.spread))
        if face.gender:
            self.gender.append(dict(face.gender))
        if face.ethnicity:
            self.ethnicity.append(dict(face.ethnicity))


@dataclass
class _OpenWindow:
    index: int
    media_s: list[float] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)
    face_counts: list[int] = field(default_factory=list)
    all_emotions: list[dict[str, float]] = field(default_factory=list)
    tracks: dict[int, _TrackSeries] = field(default_factory=dict)


class WindowAggregator:
    """Collect tracked face results frame by frame and summarize them per window."""

    def __init__(
        self,
        window_s: float = 10.0,
        min_track_frames: int = 1,
        frame_interval_s: Optional[float] = None,
    ) -> None:
        """Create an aggregator.

        ``frame_interval_s`` is the nominal source time between two analyzed
        frames. It sets the end of the last, partial window. When it is None,
        the median gap between the window's frames is used instead.
        """
        if not window_s > 0:
            raise ValueError(f"window_s={window_s} must be greater than 0")
        if min_track_frames < 1:
            raise ValueError(f"min_track_frames={min_track_frames} must be at least 1")
        self.window_s = float(window_s)
        self.min_track_frames = min_track_frames
        self.frame_interval_s = frame_interval_s
        self._window: Optional[_OpenWindow] = None

    def add(self, media_s: float, wall_time: float, faces: Sequence[tuple[int, FaceResult]]) -> list[WindowSummary]:
        """Add one analyzed frame and its ``(track_id, face)`` pairs.

        Returns the windows this frame closed: usually none, one when the
        frame starts a new window. A frame whose ``media_s`` lies before the
        open window (a timestamp jump backwards) is counted in the open window.
        """
        closed: list[WindowSummary] = []
        index = max(0, int(math.floor(media_s / self.window_s)))

        if self._window is not None and index > self._window.index:
            closed.append(self._close(final=False))
        if self._window is None:
            self._window = _OpenWindow(index=index)

        window = self._window
        window.media_s.append(float(media_s))
        window.wall_times.append(float(wall_time))
        window.face_counts.append(len(faces))
        for track_id, face in faces:
            series = window.tracks.get(track_id)
            if series is None:
                series = window.tracks[track_id] = _TrackSeries(track_id)
            series.add(float(media_s), face)
            if face.emotions:
                window.all_emotions.append(dict(face.emotions))

        return closed

    def flush(self) -> Optional[WindowSummary]:
        """Close and return the open window as the final one, or None when no frame is pending."""
        if self._window is None:
            return None
        return self._close(final=True)

    def _close(self, final: bool) -> WindowSummary:
        window = self._window
        assert window is not None
        self._window = None

        media_start = window.index * self.window_s
        media_end = (window.index + 1) * self.window_s
        if final:
            media_end = min(media_end, window.media_s[-1] + self._frame_interval(window.media_s))
        duration = media_end - media_start
        frames = len(window.media_s)

        tracks = [
            _summarize_track(series, duration * len(series.media_s) / frames)
            for series in sorted(window.tracks.values(), key=lambda s: s.track_id)
            if len(series.media_s) >= self.min_track_frames
        ]

        summary = WindowSummary(
            index=window.index,
            media_start_s=media_start,
            media_end_s=media_end,
            wall_start=window.wall_times[0],
            wall_end=window.wall_times[-1],
            frames=frames,
            frames_with_faces=sum(1 for count in window.face_counts if count > 0),
            fps=frames / duration if duration > 0 else None,
            face_count=Statistics.of(window.face_counts),
            group_emotions=_mean_distribution(window.all_emotions),
            tracks=tracks,
            final=final,
        )
        logger.debug(
            "window %d closed: %d frames, %d tracks, final=%s", summary.index, frames, len(tracks), final
        )
        return summary

    def _frame_interval(self, media_s: list[float]) -> float:
        if self.frame_interval_s is not None:
            return self.frame_interval_s
        if len(media_s) < 2:
            return 0.0
        return float(np.median(np.diff(media_s)))


def _summarize_track(series: _TrackSeries, seconds_seen: float) -> TrackSummary:
    emotions = _mean_distribution(series.emotions)
    emotion_stats = None
    dominant = None
    if emotions is not None:
        dominant = max(emotions, key=emotions.get)
        emotion_stats = {
            label: Statistics.of([frame.get(label, 0.0) for frame in series.emotions])
            for label in emotions
        }

    age = None
    if series.age_years:
        years = Statistics.of(series.age_years)
        age = AgeSummary(
            mean=years.mean,
            std=years.std,
            spread_mean=float(np.mean(series.age_spread)),
            frames=len(series.age_years),
        )

    return TrackSummary(
        track_id=series.track_id,
        frames=len(series.media_s),
        seconds_seen=seconds_seen,
        first_media_s=series.media_s[0],
        last_media_s=series.media_s[-1],
        emotions=emotions,
        dominant_emotion=dominant,
        emotion_stats=emotion_stats,
        valence=float(np.mean(series.valence)) if series.valence else None,
        arousal=float(np.mean(series.arousal)) if series.arousal else None,
        age=age,
        gender=_mean_distribution(series.gender),
        ethnicity=_mean_distribution(series.ethnicity),
    )


def _mean_distribution(distributions: list[dict[str, float]]) -> Optional[dict[str, float]]:
    """Average label -> probability maps; a label missing from a frame counts as 0 there."""
    if not distributions:
        return None
    labels: dict[str, None] = {}
    for distribution in distributions:
        labels.update(dict.fromkeys(distribution))
    count = len(distributions)
    return {label: sum(d.get(label, 0.0) for d in distributions) / count for label in labels}
