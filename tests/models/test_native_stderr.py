"""Native stderr capture: the TFLite XNNPACK notice follows --log-level, other native output stays."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.backends.native_stderr import capture_native_stderr
from edge_runtime.backends.tflite import XNNPACK_NOTICE
from edge_runtime.models.store import ModelStore

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTICE_LOGGER = logging.getLogger("tests.native_stderr")


def _native_write(text: str) -> None:
    """Write to descriptor 2 directly, as C++ code does, past sys.stderr."""
    os.write(2, text.encode())


def test_notice_logged_other_lines_kept(capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=NOTICE_LOGGER.name)

    with capture_native_stderr(frozenset({XNNPACK_NOTICE}), NOTICE_LOGGER) as seen:
        _native_write(f"{XNNPACK_NOTICE}\nERROR: a real native failure\n")

    err = capfd.readouterr().err
    assert seen == [XNNPACK_NOTICE]
    assert "ERROR: a real native failure\n" in err
    assert "XNNPACK" not in err
    assert [record.getMessage() for record in caplog.records] == ["Created TensorFlow Lite XNNPACK delegate for CPU."]
    assert caplog.records[0].levelno == logging.INFO


def test_output_kept_when_block_raises(capfd: pytest.CaptureFixture) -> None:
    with pytest.raises(RuntimeError, match="load failed"):
        with capture_native_stderr(frozenset({XNNPACK_NOTICE}), NOTICE_LOGGER):
            _native_write("ERROR: why the load failed\n")
            raise RuntimeError("load failed")

    assert "ERROR: why the load failed\n" in capfd.readouterr().err


def test_stderr_restored_after_block(capfd: pytest.CaptureFixture) -> None:
    with capture_native_stderr(frozenset({XNNPACK_NOTICE}), NOTICE_LOGGER) as seen:
        pass
    _native_write(f"{XNNPACK_NOTICE}\n")

    assert seen == []
    assert XNNPACK_NOTICE in capfd.readouterr().err


@pytest.mark.parametrize("level, shown", [("WARNING", False), ("INFO", True)])
def test_analyze_notice_follows_log_level(model_store: ModelStore, tmp_path: Path, level: str, shown: bool) -> None:
    image = tmp_path / "blank.png"
    assert cv2.imwrite(str(image), np.full((240, 320, 3), 128, dtype=np.uint8))
    command = [
        sys.executable, "-m", "edge_runtime", "--log-level", level, "analyze", str(image),
        "--store", str(model_store.root), "--profile", "generic-x86_64", "--detector", "blazeface-full-range",
    ]

    process = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)

    assert process.returncode == 0, process.stderr[-4000:]
    assert "0 faces" in process.stdout
    assert XNNPACK_NOTICE not in process.stderr
    assert ("edge_runtime.backends.tflite: Created TensorFlow Lite XNNPACK delegate" in process.stderr) is shown
