"""The runtime's TFLite session on graphs whose height and width are free, as MTCNN's P-Net is.

A small fully convolutional Keras model with random weights and an input of
shape (None, None, None, 3) is converted to fp32 and full-integer int8
TFLite. The session must run it at several image sizes, match Keras at each,
and keep one interpreter per size instead of re-preparing one per call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.backends import get_backend
from edge_runtime.backends.tflite import MAX_SHAPES
from edge_runtime.errors import BackendError
from tests.converters.conftest import require_tensorflow

pytestmark = pytest.mark.convert

SIZES = [(1, 40, 56, 3), (1, 24, 24, 3), (1, 97, 33, 3)]


@pytest.fixture(scope="module")
def free_axes_model(tmp_path_factory) -> tuple[object, dict[str, Path]]:
    require_tensorflow()
    from converters.tf_env import import_tensorflow, import_tf_keras

    tf = import_tensorflow()
    keras = import_tf_keras()
    keras.utils.set_random_seed(3)
    inputs = keras.Input(shape=(None, None, 3))
    hidden = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    hidden = keras.layers.MaxPooling2D(2)(hidden)
    hidden = keras.layers.Conv2D(16, 3, activation="relu")(hidden)
    scores = keras.layers.Conv2D(2, 1, activation="softmax", name="scores")(hidden)
    model = keras.Model(inputs, scores)

    directory = tmp_path_factory.mktemp("free-axes")
    paths = {"fp32": directory / "fp32.tflite", "int8": directory / "int8.tflite"}
    paths["fp32"].write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())

    rng = np.random.default_rng(0)

    def representative():
        for _ in range(16):
            yield [rng.uniform(-1.0, 1.0, size=(1, 48, 48, 3)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    paths["int8"].write_bytes(converter.convert())
    return model, paths


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-5), ("int8", 0.1)])
def test_runs_every_size_and_matches_keras(free_axes_model, precision, tolerance):
    model, paths = free_axes_model
    session = get_backend("tflite").load(paths[precision])
    assert session.inputs[0].shape == (None, None, None, 3)

    rng = np.random.default_rng(1)
    try:
        for shape in SIZES + SIZES[:1]:
            image = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
            expected = model(image).numpy()
            (scores,) = session.run(image)
            assert scores.shape == expected.shape
            assert scores.dtype == np.float32
            assert np.max(np.abs(scores - expected)) <= tolerance, shape
        # One interpreter per distinct size; the repeated first size reused its own.
        assert len(session._by_shape) == len(SIZES)
    finally:
        session.close()


@pytest.fixture
def fp32_session(free_axes_model):
    _, paths = free_axes_model
    session = get_backend("tflite").load(paths["fp32"])
    yield session
    session.close()


def test_keeps_at_most_max_shapes_interpreters(fp32_session):
    for extra in range(MAX_SHAPES + 3):
        fp32_session.run(np.zeros((1, 16 + extra, 16, 3), dtype=np.float32))

    assert len(fp32_session._by_shape) == MAX_SHAPES
    assert (1, 16, 16, 3) not in fp32_session._by_shape  # the oldest went first


def test_too_small_an_image_names_the_shape(fp32_session):
    with pytest.raises(BackendError, match=r"\[1, 2, 2, 3\]"):
        fp32_session.run(np.zeros((1, 2, 2, 3), dtype=np.float32))
