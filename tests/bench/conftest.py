"""Fixtures of the benchmark tests: one quick ``edge-runtime bench`` run shared by the module's tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVICE_ID = "bench-test-device"
PREFIX = "edge-runtime-test"


@dataclass
class BenchRun:
    """A finished ``edge-runtime bench`` process and the files it wrote."""

    process: subprocess.CompletedProcess
    output_dir: Path
    state_dir: Path

    def only(self, pattern: str) -> Path:
        matches = sorted(self.output_dir.glob(pattern))
        assert len(matches) == 1, matches
        return matches[0]

    @property
    def document(self) -> dict[str, Any]:
        return json.loads(self.only("*.json").read_text())


def run_bench(arguments: list[str], state_dir: Path) -> subprocess.CompletedProcess:
    """Run ``python -m edge_runtime bench ARGUMENTS`` with ``STATE_DIRECTORY`` set to ``state_dir``."""
    environment = {**os.environ, "STATE_DIRECTORY": str(state_dir)}
    command = [sys.executable, "-m", "edge_runtime", "--log-level", "WARNING", "bench", *arguments]
    return subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def video_run(model_store, mosquitto_broker, shared_data, tmp_path_factory) -> BenchRun:
    """One quick run on the WolfgangLanger clip, publishing to the real broker, summary included."""
    root = tmp_path_factory.mktemp("bench-video")
    output_dir = root / "out"
    state_dir = root / "state"
    process = run_bench(
        [
            "--quick",
            "--video", str(shared_data / "videos" / "WolfgangLanger_Pexels.mp4"),
            "--store", str(model_store.root),
            "--broker", mosquitto_broker.url,
            "--prefix", PREFIX,
            "--device-id", DEVICE_ID,
            "--publish",
            "--output-dir", str(output_dir),
            # --quick leaves latest.json alone unless asked; the selection tests read it.
            "--latest",
        ],
        state_dir,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    return BenchRun(process, output_dir, state_dir)
