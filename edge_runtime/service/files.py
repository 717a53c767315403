"""The unit file, its drop-ins and the configuration skeleton that ``edge-runtime service install`` writes.

They live once, in ``systemd/`` of the source tree, which ``systemd/install.sh``
also copies from. A wheel ships them as data files under
``<prefix>/share/edge-runtime/systemd`` (see ``[tool.setuptools.data-files]``
in pyproject.toml), the same way as the device profiles.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from edge_runtime.errors import ConfigError, EdgeRuntimeError

UNIT_NAME = "edge-runtime.service"
CONFIG_SKELETON = "config.yaml"
DROPIN_DIR = "drop-ins"

# Paths on the target system; the unit's ConfigurationDirectory= and
# LoadCredential= lines use the same ones.
UNIT_DIR = Path("/etc/systemd/system")
CONFIG_DIR = Path("/etc/edge-runtime")
CONFIG_PATH = CONFIG_DIR / "config.yaml"
CREDENTIALS_DIR = CONFIG_DIR / "credentials"
STATE_DIR = Path("/var/lib/edge-runtime")
# The executable in the template's ExecStart=, where systemd/install.sh creates the virtual environment.
# ``edge-runtime service install`` replaces it with the running environment's executable or --exec.
EXECUTABLE = Path("/opt/edge-runtime/venv/bin/edge-runtime")
EXEC_START = f"ExecStart={EXECUTABLE} "
# Characters that systemd treats specially in a command line (specifiers, variables, quoting, separators).
UNSAFE_EXEC_CHARACTERS = re.compile(r"[\s%$\\'\";]")


def default_executable() -> Path:
    """Return the ``edge-runtime`` script of the running environment (``sys.prefix/bin``)."""
    return Path(sys.prefix) / "bin" / "edge-runtime"


def render_unit(template: str, executable: Path) -> str:
    """Return the unit text with ``executable`` in its ExecStart= line.

    Raises ConfigError when ``executable`` is relative or contains a
    character that systemd would expand or split on, and EdgeRuntimeError
    when the template has no ExecStart= line with ``EXECUTABLE``.
    """
    if not executable.is_absolute():
        raise ConfigError(f"executable {executable} is relative; systemd needs an absolute path in ExecStart=")
    if UNSAFE_EXEC_CHARACTERS.search(str(executable)):
        raise ConfigError(
            f"executable {executable} contains whitespace, a quote or one of % $ \\ ;, which systemd expands or "
            "splits on in ExecStart=; install edge-runtime under a plain path"
        )
    if template.count(EXEC_START) != 1:
        raise EdgeRuntimeError(
            f"the unit template has no single line starting with {EXEC_START.strip()!r}; reinstall edge-runtime"
        )
    return template.replace(EXEC_START, f"ExecStart={executable} ")


def template_dirs() -> list[Path]:
    """Return the directories searched for the unit template: the source checkout first, then the installed data."""
    return [
        Path(__file__).resolve().parents[2] / "systemd",
        Path(sys.prefix) / "share" / "edge-runtime" / "systemd",
    ]


def template_dir() -> Path:
    """Return the first directory of ``template_dirs()`` that contains the unit template.

    Raises EdgeRuntimeError naming the searched directories when none does.
    """
    searched = template_dirs()
    for directory in searched:
        if (directory / UNIT_NAME).is_file():
            return directory
    raise EdgeRuntimeError(
        f"the unit template {UNIT_NAME} was found in none of {', '.join(str(d) for d in searched)}; "
        "reinstall edge-runtime with pip, which installs it under share/edge-runtime/systemd"
    )


def dropin_path(name: str) -> Path:
    """Return the template of drop-in ``name`` (e.g. ``openvino.conf``)."""
    path = template_dir() / DROPIN_DIR / name
    if not path.is_file():
        raise EdgeRuntimeError(f"drop-in {name} not found in {path.parent}; reinstall edge-runtime")
    return path
