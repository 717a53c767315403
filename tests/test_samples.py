"""Sample photos fetched from the pinned scikit-image wheel."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.manifest import sha256_file
from edge_runtime.samples import SAMPLES, fetch_sample, fetch_samples, sample_path


def test_fetch_samples_checks_pins(tmp_path: Path) -> None:
    paths = fetch_samples(["astronaut", "coffee"], tmp_path)

    assert sha256_file(paths["astronaut"]) == SAMPLES["astronaut"].sha256
    assert sha256_file(paths["coffee"]) == SAMPLES["coffee"].sha256


def test_tampered_cache_is_replaced(tmp_path: Path) -> None:
    cached = sample_path("astronaut", tmp_path)
    cached.write_bytes(b"not the photo")

    path = fetch_sample("astronaut", tmp_path)

    assert path == cached
    assert sha256_file(path) == SAMPLES["astronaut"].sha256


def test_unknown_sample_names_known_ones(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="astronaut"):
        fetch_sample("mona-lisa", tmp_path)
