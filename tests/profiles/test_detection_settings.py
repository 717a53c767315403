"""Detector, input resolution cap, detection interval and latency budgets of the shipped profiles in use."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_runtime.loader import load_model
from edge_runtime.models import ModelStore
from edge_runtime.profiles import load_profile, parse_profile
from edge_runtime.vision.analyzer import FaceAnalyzer
from edge_runtime.vision.detectors import create_detector

SHIPPED = sorted(path.stem for path in (Path(__file__).resolve().parents[2] / "device_profiles").glob("*.yaml"))
STAGES = {"read", "detect", "emotion", "age", "gender", "ethnicity", "frame"}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_detector_takes_profile_options(name: str, model_store: ModelStore) -> None:
    profile = load_profile(name)
    options = dict(profile.detection.detector_options)

    # On the CPU backend of its format: what matters is that the detector accepts the profile's options.
    backend = "onnxruntime" if profile.models.detector == "mtcnn" else "tflite"
    model = load_model(model_store.open(profile.models.detector), backend=backend)
    with create_detector(model, **options) as detector:
        if "max_pyramid_pixels" in options:
            assert detector.max_pyramid_pixels == options["max_pyramid_pixels"]

    assert profile.detection.interval >= 1
    assert profile.latency_budget_ms, "every shipped profile sets latency targets"
    assert {"detect", "frame"} <= set(profile.latency_budget_ms) <= STAGES
    # The frame contains every other stage but reading, so each stage's target is below the frame's.
    frame = profile.latency_budget_ms["frame"]
    assert all(ms < frame for stage, ms in profile.latency_budget_ms.items() if stage not in ("frame", "read"))


def _profile(**detection: object):
    return parse_profile(
        {
            "name": "test",
            "backends": ["onnxruntime", "tflite"],
            "models": {"detector": "mtcnn"},
            "detection": {"interval": 2, "detector_options": detection},
        }
    )


def test_profile_detector_gets_profile_options(model_store: ModelStore) -> None:
    profile = _profile(max_pyramid_pixels=250_000, min_face_size=40)

    with FaceAnalyzer.from_store(model_store, profile) as analyzer:
        assert analyzer.detector.max_pyramid_pixels == 250_000
        assert analyzer.detector.options.min_face_size == 40


def test_other_detector_keeps_its_defaults(model_store: ModelStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_runtime.vision.analyzer")
    profile = _profile(max_pyramid_pixels=250_000, min_face_size=40)

    # max_pyramid_pixels is MTCNN's; applied to BlazeFace it would be an unknown option.
    with FaceAnalyzer.from_store(model_store, profile, models={"detector": "blazeface-short-range"}) as analyzer:
        assert analyzer.detector.options.min_face_size == 20.0

    assert "the profile's detector options" in caplog.text
    assert "max_pyramid_pixels" in caplog.text
