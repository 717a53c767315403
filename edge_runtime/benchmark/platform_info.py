"""Facts about the machine that make benchmark numbers from two boards comparable.

The board name comes from the device tree (``/proc/device-tree/model`` on
Raspberry Pi and Jetson boards) or, on PCs, from the DMI product name. The
CPU model comes from ``/proc/cpuinfo``. Versions of the inference runtimes
are those that ``describe_backends`` reports for the backends that can run
here.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import socket
from pathlib import Path
from typing import Any, Optional

logger = logging.getLogger(__name__)

DEVICE_TREE_MODELS = (Path("/sys/firmware/devicetree/base/model"), Path("/proc/device-tree/model"))
DMI_PRODUCT_NAME = Path("/sys/class/dmi/id/product_name")
CPUINFO = Path("/proc/cpuinfo")
OS_RELEASE = Path("/etc/os-release")

# /proc/cpuinfo keys that name the CPU: x86 ("model name"), Raspberry Pi
# ("Model", "Hardware"), MIPS and others ("cpu model").
CPU_MODEL_KEYS = ("model name", "Model", "Hardware", "cpu model")


def describe_platform() -> dict[str, Any]:
    """Return the board, CPU, OS and library versions of this machine as a JSON-ready dict."""
    import cv2
    import numpy

    from edge_runtime import __version__
    from edge_runtime.backends import describe_backends

    cpuinfo = _read_text(CPUINFO) or ""
    return {
        "hostname": socket.gethostname(),
        "board": board_model(),
        "cpu": cpu_model(cpuinfo),
        "cpu_cores": os.cpu_count(),
        "arch": platform.machine(),
        "virtual_machine": "hypervisor" in _cpu_flags(cpuinfo),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "opencv": cv2.__version__,
        "edge_runtime": __version__,
        "backends": {info.name: info.version for info in describe_backends() if info.available},
    }


def board_model() -> Optional[str]:
    """Return the device-tree model or the DMI product name, or None when neither exists."""
    for path in DEVICE_TREE_MODELS:
        try:
            text = path.read_bytes().rstrip(b"\x00").decode("utf-8", "replace").strip()
        except OSError:
            continue
        if text:
            return text
    return _read_text(DMI_PRODUCT_NAME)


def cpu_model(cpuinfo: Optional[str] = None) -> Optional[str]:
    """Return the CPU model named in ``/proc/cpuinfo`` (or ``platform.processor()``), or None."""
    text = cpuinfo if cpuinfo is not None else (_read_text(CPUINFO) or "")
    for key in CPU_MODEL_KEYS:
        for line in text.splitlines():
            name, separator, value = line.partition(":")
            if separator and name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or None


def board_slug(info: dict[str, Any]) -> str:
    """Return a file-name-safe name of the machine described by ``info`` (from ``describe_platform``).

    The board name is used when there is one, e.g. ``raspberry-pi-5-model-b-rev-1.0``.
    Otherwise the name is ``<arch>-<cpu>-<cores>core``, with ``-vm`` appended
    inside a virtual machine, e.g. ``x86_64-amd-epyc-2core-vm``.
    """
    if info.get("board"):
        return slugify(str(info["board"]))

    parts = [str(info.get("arch") or "unknown"), str(info.get("cpu") or "cpu"), f"{info.get('cpu_cores') or 0}core"]
    if info.get("virtual_machine"):
        parts.append("vm")
    return slugify("-".join(parts))


def slugify(text: str) -> str:
    """Lower-case ``text`` and reduce it to letters, digits, '.', '_' and '-'; never empty."""
    cleaned = re.sub(r"[^a-z0-9_.]+", "-", text.lower()).strip("-.")
    return cleaned or "machine"


def _cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        name, separator, value = line.partition(":")
        if separator and name.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def _os_name() -> str:
    text = _read_text(OS_RELEASE) or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def _read_text(path: Path) -> Optional[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return text or None
