"""Keras HDF5 models of HSEmotion's architectures with random weights.

A MobileNet-v1 7-class emotion classifier (``mobilenet_7``'s architecture)
and a multi-task MobileNet with age, gender and ethnicity heads. They are
saved as Keras 2 HDF5 files, as the published models are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.converters.conftest import require_tensorflow

pytestmark = [pytest.mark.convert, pytest.mark.shared_data]


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory) -> dict[str, Path]:
    require_tensorflow()
    from converters.tf_env import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(7)
    directory = tmp_path_factory.mktemp("keras")

    # alpha 0.25 keeps the test fast; the layer types are those of mobilenet_7.
    base = keras.applications.MobileNet(input_shape=(224, 224, 3), alpha=0.25, include_top=False,
                                        weights=None, pooling="avg")
    emotion = keras.layers.Dense(7, activation="softmax", name="emotion")(base.output)
    paths = {"mobilenet_7": directory / "mobilenet_7.h5"}
    keras.Model(base.input, emotion).save(paths["mobilenet_7"])

    trunk = keras.applications.MobileNet(input_shape=(128, 128, 3), alpha=0.25, include_top=False,
                                         weights=None, pooling="avg")
    age = keras.layers.Dense(100, activation="softmax", name="age")(trunk.output)
    gender = keras.layers.Dense(1, activation="sigmoid", name="gender")(trunk.output)
    ethnicity = keras.layers.Dense(5, activation="softmax", name="ethnicity")(trunk.output)
    paths["multitask"] = directory / "age_gender_ethnicity.h5"
    keras.Model(trunk.input, [age, gender, ethnicity]).save(paths["multitask"])
    return paths


def test_mobilenet_with_catalog_contract(keras_files, run_convert, shared_data):
    from edge_runtime.manifest import load_manifest

    run = run_convert(keras_files["mobilenet_7"], "--catalog-entry", "mobilenet_7", "--precisions", "fp32,fp16",
                      "--calibration-photos", str(shared_data / "expressions"), "--parity-count", "16")

    assert run.exit_code == 0, run.stderr
    manifest = load_manifest(run.output)
    assert manifest.name == "mobilenet_7"
    assert manifest.labels == ["Anger", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise"]
    assert manifest.input.normalization.mean == [103.939, 116.779, 123.68]
    assert len(run.report["variants"]) == 6
    for variant in run.report["variants"]:
        assert variant["passed"], variant


def test_mobilenet_preprocessing_in_graph(keras_files, run_convert, shared_data):
    from converters.calibration import center_box, cut, read_image
    from converters.preprocess import make_batch
    from converters.tf_env import import_tf_keras
    from edge_runtime.backends import get_backend
    from edge_runtime.manifest import load_manifest

    run = run_convert(keras_files["mobilenet_7"], "--catalog-entry", "mobilenet_7", "--preprocessing-in-graph",
                      "--calibration-photos", str(shared_data / "expressions"), "--parity-count", "16")

    assert run.exit_code == 0, run.stderr
    manifest = load_manifest(run.output)
    assert manifest.input.preprocessing_in_graph is True
    image = read_image(shared_data / "expressions" / "pexels_neutral.jpeg")
    crop = cut(image, center_box(image, 0.5))
    float_spec = manifest.input.model_copy(update={"preprocessing_in_graph": False, "dtype": "float32"})
    model = import_tf_keras().models.load_model(str(keras_files["mobilenet_7"]), compile=False)
    expected = model(make_batch([crop], float_spec)).numpy()

    pixels = make_batch([crop], manifest.input)
    for variant, backend in (("mobilenet_7-fp32.onnx", "onnxruntime"), ("mobilenet_7-fp32.xml", "openvino"),
                             ("mobilenet_7-fp32.tflite", "tflite")):
        with get_backend(backend).load(run.output / variant) as session:
            assert session.inputs[0].dtype == "uint8"
            actual = session.run(pixels)[0]
        np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_multitask_keeps_three_named_heads(keras_files, run_convert, shared_data):
    from edge_runtime.backends import get_backend
    from edge_runtime.manifest import load_manifest

    run = run_convert(keras_files["multitask"], "--head-labels", "ethnicity=white,black,asian,indian,other",
                      "--head-labels", "gender=male", "--calibration-photos", str(shared_data / "age_gender"),
                      "--parity-count", "16")

    assert run.exit_code == 0, run.stderr
    manifest = load_manifest(run.output)
    assert manifest.task == "multitask"
    heads = [(h.name, h.tensor, h.kind) for h in manifest.outputs]
    assert heads == [("age", 0, "probabilities"), ("gender", 1, "sigmoid"), ("ethnicity", 2, "probabilities")]
    assert manifest.outputs[2].labels == ["white", "black", "asian", "indian", "other"]
    for variant in run.report["variants"]:
        assert variant["passed"], variant
        assert list(variant["max_abs_diff"]) == ["age", "gender", "ethnicity"]

    batch = np.zeros((2, 128, 128, 3), dtype=np.float32)
    for variant, backend in (("age-gender-ethnicity-fp32.onnx", "onnxruntime"),
                             ("age-gender-ethnicity-fp32.xml", "openvino"),
                             ("age-gender-ethnicity-fp32.tflite", "tflite")):
        with get_backend(backend).load(run.output / variant) as session:
            shapes = [o.shape for o in session.run(batch)]
        assert shapes == [(2, 100), (2, 1), (2, 5)], variant


def test_multitask_wrong_head_labels(keras_files, run_convert):
    run = run_convert(keras_files["multitask"], "--head-labels", "ethnicity=a,b,c")

    assert run.exit_code == 1
    assert "3 labels" in run.stderr
    assert "'ethnicity'" in run.stderr
