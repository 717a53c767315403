"""``edge-runtime service install|uninstall|status``: manage the systemd unit of the capture service.

``install`` writes the unit, the drop-ins this machine needs, an empty
credentials directory and, when none exists, the configuration skeleton,
all from the templates in ``edge_runtime.service.files``. The unit's
ExecStart= runs the ``edge-runtime`` script of the environment that runs
this command, or ``--exec PATH``. ``--root DIR`` writes into an image root
instead of ``/``. ``systemctl daemon-reload`` and
``enable`` run only when systemd is PID 1 (for ``--root``,
``systemctl --root=DIR enable`` runs instead, which only writes symlinks).
``status`` shows the unit's state from ``systemctl show``, checks the
configuration, looks up its models and verifies the model store.

``systemd/install.sh`` creates the virtual environment, installs the same
templates and pulls the models; this command covers an environment that
already exists.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional, Sequence

from edge_runtime import config as config_module
from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.model_references import check_models, model_references
from edge_runtime.models.store import ModelStore
from edge_runtime.service import files

logger = logging.getLogger(__name__)

BOARDS = ("auto", "pi", "jetson", "generic")
SHOW_PROPERTIES = ("LoadState", "ActiveState", "SubState", "UnitFileState", "MainPID", "StatusText", "NRestarts", "Result")
SYSTEMCTL_TIMEOUT_S = 60

EXIT_CONFIG = 78
EXIT_MODEL = 65


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "service",
        help="install, uninstall or check the systemd service",
        description="Install, uninstall or check the systemd unit that runs 'edge-runtime run'.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    install = actions.add_parser(
        "install",
        help="write the unit, its drop-ins and a configuration skeleton",
        description=(
            "Write edge-runtime.service, the drop-ins this board needs and, when none exists, "
            "/etc/edge-runtime/config.yaml. Enables the unit when systemd is running."
        ),
    )
    add_root_options(install)
    install.add_argument(
        "--exec",
        dest="executable",
        type=Path,
        metavar="PATH",
        help=(
            f"edge-runtime executable that ExecStart= runs (default: {files.default_executable()}, the one of "
            f"this environment; systemd/install.sh uses {files.EXECUTABLE}). Must exist, except with --root"
        ),
    )
    install.add_argument(
        "--board",
        choices=BOARDS,
        default="auto",
        help="board whose drop-ins to install: jetson adds GPU device access (default: detected)",
    )
    enable = install.add_mutually_exclusive_group()
    enable.add_argument("--no-enable", action="store_true", help="write the files but do not enable the unit")
    enable.add_argument("--now", action="store_true", help="also start the unit (systemctl enable --now)")
    install.set_defaults(handler=install_command, sysexits=True)

    uninstall = actions.add_parser(
        "uninstall",
        help="disable and remove the unit and its drop-ins; keeps the configuration, credentials and models",
        description="Disable and remove the unit and its drop-ins. The configuration, credentials and models stay.",
    )
    add_root_options(uninstall)
    uninstall.set_defaults(handler=uninstall_command, sysexits=True)

    status = actions.add_parser(
        "status",
        help="show the unit state, check the configuration and verify the model store",
        description="Show the unit's state (systemctl show), validate the configuration and verify the model store.",
    )
    status.add_argument("--root", type=Path, default=Path("/"), metavar="DIR", help="system root to inspect (default: /)")
    status.set_defaults(handler=status_command, sysexits=True)


def add_root_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root", type=Path, default=Path("/"), metavar="DIR", help="install into this image root instead of / (default: /)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would be done and change nothing")


def under(root: Path, path: Path) -> Path:
    """Return the absolute ``path`` of the target system inside ``root``."""
    return root / path.relative_to("/")


def systemd_running() -> bool:
    """Return True when systemd is PID 1, checked the way sd_booted(3) does (``/run/systemd/system``)."""
    return Path("/run/systemd/system").is_dir()


def pid1_name() -> str:
    try:
        return Path("/proc/1/comm").read_text().strip()
    except OSError:
        return "unknown"


def detect_board() -> str:
    """Return pi, jetson or generic for this machine, from the device tree model and /etc/nv_tegra_release."""
    try:
        model = Path("/sys/firmware/devicetree/base/model").read_text(errors="replace").rstrip("\0")
    except OSError:
        model = ""
    if "Raspberry Pi" in model:
        return "pi"
    if "Jetson" in model or "NVIDIA" in model or Path("/etc/nv_tegra_release").exists():
        return "jetson"
    return "generic"


def dropins_for(board: str) -> list[str]:
    """Return the drop-ins for ``board`` and the backends installed in this environment."""
    names = []
    # OpenVINO's JIT needs MemoryDenyWriteExecute=no (see the drop-in).
    if importlib.util.find_spec("openvino") is not None:
        names.append("openvino.conf")
    if board == "jetson":
        names.append("jetson.conf")
    return names


class Installer:
    """Carries out or, in a dry run, only prints file operations and commands."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run

    def write(self, target: Path, text: str, note: str, mode: int = 0o644) -> None:
        """Write ``text`` to ``target`` through a temporary file, so a reader never sees half a file."""
        print(f"write {target} (mode {mode:04o}) {note}")
        if self.dry_run:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.chmod(mode)
        os.replace(temporary, target)

    def copy(self, source: Path, target: Path, mode: int = 0o644) -> None:
        print(f"write {target} (mode {mode:04o}) from {source}")
        if self.dry_run:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, temporary)
        temporary.chmod(mode)
        os.replace(temporary, target)

    def mkdir(self, path: Path, mode: int) -> None:
        print(f"create {path} (mode {mode:04o})")
        if self.dry_run:
            return
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)

    def remove(self, path: Path) -> None:
        if not path.exists():
            return
        print(f"remove {path}")
        if not self.dry_run:
            path.unlink()

    def run(self, command: Sequence[str]) -> bool:
        """Run ``command``; return False, after printing its error output, when it fails."""
        print("run " + " ".join(command))
        if self.dry_run:
            return True
        try:
            result = subprocess.run(list(command), capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"  failed: {exc}")
            return False
        if result.returncode != 0:
            print(f"  failed with exit status {result.returncode}: {result.stderr.strip()}")
            return False
        return True


def install_command(args: argparse.Namespace) -> int:
    root: Path = args.root
    installer = Installer(args.dry_run)
    templates = files.template_dir()
    board = detect_board() if args.board == "auto" else args.board
    executable = check_executable(args.executable, root)

    unit_path = under(root, files.UNIT_DIR / files.UNIT_NAME)
    unit_text = files.render_unit((templates / files.UNIT_NAME).read_text(encoding="utf-8"), executable)
    installer.write(unit_path, unit_text, f"from {templates / files.UNIT_NAME} with ExecStart={executable}")
    dropin_dir = unit_path.with_name(files.UNIT_NAME + ".d")
    for name in dropins_for(board):
        installer.copy(files.dropin_path(name), dropin_dir / name)

    config_path = under(root, files.CONFIG_PATH)
    if config_path.exists():
        print(f"keep the existing {config_path}")
    else:
        installer.copy(templates / files.CONFIG_SKELETON, config_path)
    # Only root reads the credential sources; systemd hands copies to the service.
    installer.mkdir(under(root, files.CREDENTIALS_DIR), 0o700)

    if args.no_enable:
        print("not enabled (--no-enable)")
        return 0
    return 0 if enable_unit(installer, root, now=args.now) else 1


def check_executable(requested: Optional[Path], root: Path) -> Path:
    """Return the executable for ExecStart=: ``requested`` (--exec), else the running environment's.

    Installing into ``/`` raises ConfigError when the file does not exist or
    is not executable. Under ``--root`` the file may not exist yet while the
    image is built, so that only prints a warning.
    """
    executable = requested if requested is not None else files.default_executable()
    if not executable.is_absolute():
        raise ConfigError(f"--exec {executable} is relative; pass the absolute path of the edge-runtime executable")
    option = "--exec" if requested is not None else "the executable of this environment"

    if root.resolve() != Path("/"):
        target = under(root, executable)
        if not target.is_file():
            print(
                f"warning: {target} does not exist yet; the unit starts {executable}, so create it in the "
                f"image (systemd/install.sh creates {files.EXECUTABLE}) or pass --exec PATH"
            )
        return executable

    if not executable.is_file() or not os.access(executable, os.X_OK):
        raise ConfigError(
            f"{option} {executable} does not exist or is not executable, so the unit could not start; pass "
            "--exec with the path of the edge-runtime script, e.g. --exec \"$(command -v edge-runtime)\""
        )
    return executable


def enable_unit(installer: Installer, root: Path, *, now: bool) -> bool:
    """Enable (and with ``now`` start) the unit; return False when systemctl failed."""
    systemctl = shutil.which("systemctl")
    if root.resolve() != Path("/"):
        if systemctl is None:
            print(f"systemctl not found; enable the unit in the image with: systemctl --root={root} enable {files.UNIT_NAME}")
            return True
        return installer.run([systemctl, f"--root={root}", "enable", files.UNIT_NAME])

    if systemctl is None or not systemd_running():
        print(
            f"systemd is not running here (PID 1 is {pid1_name()}), so the unit is not enabled; on the "
            f"target run: systemctl daemon-reload && systemctl enable --now {files.UNIT_NAME}"
        )
        return True
    ok = installer.run([systemctl, "daemon-reload"])
    enable = [systemctl, "enable", *(["--now"] if now else []), files.UNIT_NAME]
    return installer.run(enable) and ok


def uninstall_command(args: argparse.Namespace) -> int:
    root: Path = args.root
    installer = Installer(args.dry_run)
    systemctl = shutil.which("systemctl")
    unit_path = under(root, files.UNIT_DIR / files.UNIT_NAME)
    ok = True

    if systemctl is not None and root.resolve() != Path("/"):
        ok = installer.run([systemctl, f"--root={root}", "disable", files.UNIT_NAME]) if unit_path.exists() else True
    elif systemctl is not None and systemd_running():
        ok = installer.run([systemctl, "disable", "--now", files.UNIT_NAME])
    else:
        print(f"systemd is not running here (PID 1 is {pid1_name()}); removing the files only")

    dropin_dir = unit_path.with_name(files.UNIT_NAME + ".d")
    for name in ("openvino.conf", "jetson.conf"):
        installer.remove(dropin_dir / name)
    if dropin_dir.is_dir() and not any(dropin_dir.iterdir()) and not args.dry_run:
        dropin_dir.rmdir()
    installer.remove(unit_path)

    if systemctl is not None and root.resolve() == Path("/") and systemd_running():
        ok = installer.run([systemctl, "daemon-reload"]) and ok
    print(f"kept {under(root, files.CONFIG_DIR)} and {under(root, files.STATE_DIR)}")
    return 0 if ok else 1


def unit_properties(root: Path) -> Optional[dict[str, str]]:
    """Return the unit's ``systemctl show`` properties, or None when systemd cannot be asked."""
    systemctl = shutil.which("systemctl")
    if systemctl is None or root.resolve() != Path("/") or not systemd_running():
        return None
    result = subprocess.run(
        [systemctl, "show", files.UNIT_NAME, "--property=" + ",".join(SHOW_PROPERTIES)],
        capture_output=True,
        text=True,
        timeout=SYSTEMCTL_TIMEOUT_S,
    )
    if result.returncode != 0:
        return None
    properties = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        properties[key] = value
    return properties


def status_command(args: argparse.Namespace) -> int:
    root: Path = args.root
    unit_path = under(root, files.UNIT_DIR / files.UNIT_NAME)

    properties = unit_properties(root)
    if properties is not None:
        print(
            f"unit: {files.UNIT_NAME} {properties.get('ActiveState', '?')} ({properties.get('SubState', '?')}), "
            f"{properties.get('UnitFileState', '?')}, main PID {properties.get('MainPID', '?')}, "
            f"restarts {properties.get('NRestarts', '?')}, result {properties.get('Result', '?')}"
        )
        if properties.get("StatusText"):
            print(f"status: {properties['StatusText']}")
    else:
        state = "installed" if unit_path.is_file() else "not installed"
        print(f"unit: {unit_path} {state}; systemd cannot be asked here (PID 1 is {pid1_name()})")

    config_path = under(root, files.CONFIG_PATH)
    credentials = under(root, files.CREDENTIALS_DIR)
    root_flag = f" --root {root}" if root.resolve() != Path("/") else ""
    try:
        config = config_module.load_config(
            config_path,
            credentials_directory=credentials if credentials.is_dir() else None,
            missing_hint=f"run 'edge-runtime service install{root_flag}', which writes a skeleton there",
        )
    except ConfigError as exc:
        print(f"config: {config_path} invalid")
        raise ConfigError(str(exc)) from None

    store_root = under(root, config.store.absolute()) if config.store else under(root, files.STATE_DIR / "models")
    store = ModelStore(store_root)
    # The device profile would be detected on the target board, so only the config's own choices are looked up.
    references = check_models(model_references(config), store, f" --store {store_root}")
    if references.unknown:
        print(f"config: {config_path} invalid")
        lines = [f"{config_path}: {reference.key}: {message}" for reference, message in references.unknown]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    print(f"config: {config_path} valid")

    store_ok = check_store(store)
    for reference, message in references.not_installed:
        print(f"models: {reference.name} ({reference.key}): {message}")
    return EXIT_MODEL if not store_ok or references.not_installed else 0


def check_store(store: ModelStore) -> bool:
    """Print one line per installed model with its verification result; return True when all pass."""
    packages = store.installed()
    if not packages:
        print(f"models: none installed in {store.root}; run 'edge-runtime models pull --starter --store {store.root}'")
        return False

    ok = True
    for package in packages:
        name = package.manifest.name
        try:
            problems = store.verify(name)
        except EdgeRuntimeError as exc:
            problems = [str(exc)]
        if problems:
            ok = False
            print(f"models: {name}: " + "; ".join(problems))
        else:
            print(f"models: {name}: ok")
    return ok
