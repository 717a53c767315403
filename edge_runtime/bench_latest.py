"""Reader of the last ``edge-runtime bench`` result on this device.

The bench command writes ``<state dir>/bench/latest.json``, where the state
dir is ``$STATE_DIRECTORY`` (set by systemd) if set, else
``$XDG_STATE_HOME/edge-runtime``, else ``~/.local/state/edge-runtime``. Its
top level has ``"schema": "edge-runtime-bench/1"`` and the lists
``"classify"`` and ``"detect"``, whose entries have at least ``model``,
``backend``, ``precision``, ``batch`` and ``p50_ms``. Backend selection in
``auto`` mode orders backends by these latencies.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Optional

from edge_runtime.errors import ConfigError

logger = logging.getLogger(__name__)

BENCH_SCHEMA = "edge-runtime-bench/1"
SECTIONS = ("classify", "detect")


def state_dir() -> Path:
    """Return the state directory of edge-runtime (see the module docstring)."""
    systemd = os.environ.get("STATE_DIRECTORY")
    if systemd:
        # systemd lists several directories separated by ':' when the unit names several.
        return Path(systemd.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "edge-runtime"


def latest_path() -> Path:
    """Return the path of the last bench result: ``<state dir>/bench/latest.json``."""
    return state_dir() / "bench" / "latest.json"


def read_model_latencies(path: Optional[Path] = None) -> dict[tuple[str, str, str], float]:
    """Return the p50 milliseconds at batch 1 per ``(model, backend, precision)``.

    ``path`` defaults to ``latest_path()``. A missing file gives an empty
    mapping. When a key appears more than once (in ``classify`` and
    ``detect``, or in repeated runs), the lowest p50 is kept.

    Raises:
        ConfigError: the file is unreadable, not JSON, has another
            ``schema`` or an entry lacks a field; the message names the file.
    """
    path = Path(path) if path is not None else latest_path()
    if not path.is_file():
        logger.debug("no bench result at %s", path)
        return {}

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the bench result: {exc}; run 'edge-runtime bench' again") from exc
    if not isinstance(document, dict) or document.get("schema") != BENCH_SCHEMA:
        found = document.get("schema") if isinstance(document, dict) else type(document).__name__
        raise ConfigError(
            f"{path}: bench result has schema {found!r}, expected {BENCH_SCHEMA!r}; run 'edge-runtime bench' again"
        )

    latencies: dict[tuple[str, str, str], float] = {}
    for section in SECTIONS:
        entries = document.get(section) or []
        if not isinstance(entries, list):
            raise ConfigError(f"{path}: '{section}' must be a list of results, got {type(entries).__name__}")
        for index, entry in enumerate(entries):
            try:
                batch = int(entry["batch"])
                key = (str(entry["model"]), str(entry["backend"]), str(entry["precision"]))
                p50 = float(entry["p50_ms"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(
                    f"{path}: {section}[{index}] lacks a valid model, backend, precision, batch or p50_ms ({exc})"
                ) from exc
            if batch != 1 or not math.isfinite(p50):
                continue
            latencies[key] = min(p50, latencies.get(key, math.inf))
    return latencies
