"""Log lines on the journal stream: syslog priority prefixes, detected through ``$JOURNAL_STREAM``."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.service.journal import JournalFormatter, stream_is_journal, syslog_priority
from tests.systemd.conftest import REPO_ROOT


def journal_stream_of(path: Path) -> str:
    """Return the ``$JOURNAL_STREAM`` value that systemd would set for a stream open on ``path``."""
    status = os.stat(path)
    return f"{status.st_dev}:{status.st_ino}"


def run_schema_command(tmp_path: Path, environ_update: dict[str, str], stderr_path: Path) -> str:
    """Run ``edge-runtime config schema --output`` with stderr on ``stderr_path``; return what it logged."""
    environment = dict(os.environ, **environ_update)
    with stderr_path.open("a") as stderr:
        completed = subprocess.run(
            [sys.executable, "-m", "edge_runtime", "config", "schema", "--output", str(tmp_path / "schema.json")],
            cwd=REPO_ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            timeout=60,
        )
    assert completed.returncode == 0, stderr_path.read_text()
    return stderr_path.read_text()


@pytest.mark.parametrize(
    "level, priority",
    [
        (logging.CRITICAL, 2),
        (logging.ERROR, 3),
        (logging.WARNING + 5, 4),
        (logging.WARNING, 4),
        (logging.INFO, 6),
        (logging.DEBUG, 7),
        (logging.NOTSET, 7),
    ],
)
def test_syslog_priority_of_level(level, priority) -> None:
    assert syslog_priority(level) == priority


def test_formatter_prefixes_every_line() -> None:
    try:
        raise ValueError("bad frame")
    except ValueError:
        record = logging.LogRecord(
            "edge_runtime.capture.runner", logging.ERROR, __file__, 1, "analysis failed", None, sys.exc_info()
        )

    lines = JournalFormatter().format(record).splitlines()

    assert lines[0] == "<3>edge_runtime.capture.runner: analysis failed"
    assert len(lines) > 2
    assert all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: bad frame"


def test_stream_matched_by_device_and_inode(tmp_path) -> None:
    journal_path = tmp_path / "journal-stream"
    other_path = tmp_path / "other"
    journal_path.touch()
    other_path.touch()
    environ = {"JOURNAL_STREAM": journal_stream_of(journal_path)}

    with journal_path.open("w") as journal, other_path.open("w") as other:
        assert stream_is_journal(journal, environ)
        assert not stream_is_journal(other, environ)
        assert not stream_is_journal(journal, {})
        assert not stream_is_journal(journal, {"JOURNAL_STREAM": "garbage"})
        assert not stream_is_journal(journal, {"JOURNAL_STREAM": "12:"})


def test_command_logs_with_priority_on_journal(tmp_path) -> None:
    stderr_path = tmp_path / "stderr"
    stderr_path.touch()

    logged = run_schema_command(tmp_path, {"JOURNAL_STREAM": journal_stream_of(stderr_path)}, stderr_path)

    assert "<6>edge_runtime.commands.config: wrote the configuration schema to" in logged
    # journald adds the time itself.
    assert not re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", logged)


def test_command_logs_plain_elsewhere(tmp_path) -> None:
    stderr_path = tmp_path / "stderr"
    other_path = tmp_path / "other"
    other_path.touch()

    # A JOURNAL_STREAM inherited from a service does not describe a redirected stderr.
    logged = run_schema_command(tmp_path, {"JOURNAL_STREAM": journal_stream_of(other_path)}, stderr_path)

    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO edge_runtime.commands.config: wrote", logged, re.M)
    assert "<6>" not in logged


def test_error_has_error_priority_on_journal(tmp_path) -> None:
    stderr_path = tmp_path / "stderr"
    stderr_path.touch()
    config = tmp_path / "config.yaml"
    config.write_text("source:\n  every_n: 0\nwindwo_s: 3\n")
    environment = dict(os.environ, JOURNAL_STREAM=journal_stream_of(stderr_path))

    with stderr_path.open("a") as stderr:
        completed = subprocess.run(
            [sys.executable, "-m", "edge_runtime", "config", "validate", str(config)],
            cwd=REPO_ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            timeout=60,
        )
    lines = stderr_path.read_text().splitlines()

    assert completed.returncode == 78
    assert lines[0] == "<3>edge-runtime: error: invalid configuration:"
    assert f"<3>  {config}:3: windwo_s: unknown key; did you mean `window_s`? `edge-runtime config schema` prints every key" in lines
    assert all(line.startswith("<3>") for line in lines)
