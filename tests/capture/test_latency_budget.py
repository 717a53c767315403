"""The profile's per-stage latency budget: when a WARNING is logged and its message."""

from __future__ import annotations

import logging

import pytest

from edge_runtime.capture.runner import MIN_BUDGET_SAMPLES, LatencyBudget, LatencyRecorder


def _interval(samples: dict[str, list[float]]):
    """Return the summary of one stats interval holding ``samples`` per stage."""
    recorder = LatencyRecorder()
    for stage, values in samples.items():
        for milliseconds in values:
            recorder.add(stage, milliseconds)
    return recorder.take_interval()


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="edge_runtime.capture.runner")
    return caplog


def test_budget_warns_over_enough_frames(warnings: pytest.LogCaptureFixture) -> None:
    budget = LatencyBudget({"detect": 50.0, "frame": 500.0})
    detect = [40.0, 80.0, 90.0] * 10

    over = budget.check(_interval({"detect": detect, "frame": [ms * 2 for ms in detect]}))

    assert over == ["detect"]
    (record,) = warnings.records
    assert "stage detect took 70.0 ms" in record.getMessage()
    assert "over the last 30 frames" in record.getMessage()
    assert "budget of 50 ms" in record.getMessage()


def test_budget_silent_on_short_run(warnings: pytest.LogCaptureFixture) -> None:
    budget = LatencyBudget({"detect": 50.0})

    # One slow frame, as after model load, then the run ends.
    over = budget.check(_interval({"detect": [900.0]}))

    assert over == []
    assert warnings.records == []


def test_budget_pools_small_intervals(warnings: pytest.LogCaptureFixture) -> None:
    budget = LatencyBudget({"detect": 50.0}, min_samples=30)

    # A slow device: 10 frames per stats interval.
    results = [budget.check(_interval({"detect": [60.0] * 10})) for _ in range(3)]

    assert results == [[], [], ["detect"]]
    (record,) = warnings.records
    assert "over the last 30 frames" in record.getMessage()


def test_budget_restarts_after_check(warnings: pytest.LogCaptureFixture) -> None:
    budget = LatencyBudget({"detect": 50.0})

    first = budget.check(_interval({"detect": [60.0] * MIN_BUDGET_SAMPLES}))
    second = budget.check(_interval({"detect": [60.0] * (MIN_BUDGET_SAMPLES - 1)}))
    third = budget.check(_interval({"detect": [10.0] * MIN_BUDGET_SAMPLES}))

    assert first == ["detect"]
    assert second == []
    # The 29 slow samples carried over are averaged with 30 fast ones: 34.6 ms.
    assert third == []
    assert len(warnings.records) == 1


def test_budget_within_target_silent(warnings: pytest.LogCaptureFixture) -> None:
    budget = LatencyBudget({"detect": 50.0, "emotion": 20.0})

    over = budget.check(_interval({"detect": [49.0] * 40, "emotion": [5.0] * 40}))

    assert over == []
    assert warnings.records == []
