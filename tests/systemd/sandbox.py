"""Run a command under the sandbox of a systemd unit, without systemd.

Test machines and CI containers have no running service manager, so
``systemd-run`` cannot start the unit for real. This module rebuilds the
parts of the unit's ``[Service]`` sandbox that can break an inference
runtime and runs a command inside them:

* seccomp: ``SystemCallFilter=`` (groups expanded by ``systemd-analyze
  syscall-filter``), ``SystemCallErrorNumber=``, ``SystemCallArchitectures=native``,
  ``RestrictAddressFamilies=``, ``MemoryDenyWriteExecute=``,
  ``RestrictNamespaces=yes``, ``LockPersonality=`` and ``RestrictRealtime=``,
  built with libseccomp the way systemd 252 builds them;
* ``NoNewPrivileges=`` and an empty ``CapabilityBoundingSet=``;
* a private mount namespace with ``ProtectSystem=strict`` (everything
  read-only but the state directory), ``PrivateTmp=``,
  ``ProtectKernelTunables=`` and ``ProcSubset=pid``.

Not rebuilt: ``DynamicUser=`` (the command runs as root without any
capability, so DAC checks on root-owned files still pass), ``ProtectHome=``
on /root (the test interpreter lives there), ``DevicePolicy=`` (a cgroup BPF
program) and ``IPAddressDeny=``.

Usage, as root::

    python -m tests.systemd.sandbox --state-dir DIR UNIT [DROP_IN ...] -- COMMAND ...

The command's exit status becomes this module's exit status.
"""

from __future__ import annotations

import argparse
import configparser
import ctypes
import ctypes.util
import errno
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

# libseccomp constants from seccomp.h (libseccomp 2.5).
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_NE = 1
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7

PROT_WRITE = 0x2
PROT_EXEC = 0x4
SHM_EXEC = 0o100000
CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
    0x00000080,  # CLONE_NEWTIME
)
REALTIME_POLICIES = (1, 2, 6)  # SCHED_FIFO, SCHED_RR, SCHED_DEADLINE
PER_LINUX = 0
AF_MAX = 46  # AF_MAX of Linux 6.x; families at or above it do not exist
PR_CAPBSET_DROP = 24
CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000

# Mount points made read-only by ProtectSystem=strict. The API file systems
# (/proc, /sys, /dev) are left writable, as systemd does.
API_FILE_SYSTEMS = ("/proc", "/sys", "/dev")


class ScmpArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0x0000FFFF)


def read_service_section(paths: Sequence[Path]) -> dict[str, list[str]]:
    """Parse ``[Service]`` of a unit and its drop-ins; later files override earlier ones.

    Returns each key's values in order. An empty assignment clears the key,
    as in systemd.
    """
    settings: dict[str, list[str]] = {}
    for path in paths:
        parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
        parser.optionxform = str  # keys are case-sensitive
        parser.read_string(_join_repeated_keys(path.read_text()))
        if not parser.has_section("Service"):
            continue
        for key, joined in parser.items("Service"):
            for value in joined.split("\x00"):
                value = value.strip()
                if value == "":
                    settings[key] = []
                else:
                    settings.setdefault(key, []).append(value)
    return settings


def _join_repeated_keys(text: str) -> str:
    """Rewrite repeated ``Key=`` lines of one section into one NUL-joined line."""
    lines: list[str] = []
    section_keys: dict[str, int] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section_keys = {}
            lines.append(line)
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key in section_keys:
            index = section_keys[key]
            lines[index] += "\x00" + value.strip()
        else:
            section_keys[key] = len(lines)
            lines.append(f"{key}={value.strip()}")
    return "\n".join(lines) + "\n"


def is_true(settings: dict[str, list[str]], key: str) -> bool:
    values = settings.get(key) or ["no"]
    return values[-1].lower() in ("1", "yes", "true", "on")


def expand_syscall_group(name: str) -> set[str]:
    """Return the syscalls of ``@group`` (recursively), or ``{name}`` for a plain syscall."""
    if not name.startswith("@"):
        return {name}

    output = subprocess.run(
        ["systemd-analyze", "syscall-filter", name], check=True, capture_output=True, text=True
    ).stdout
    calls: set[str] = set()
    for line in output.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        calls |= expand_syscall_group(item)
    return calls


def allowed_syscalls(filter_lines: Iterable[str]) -> set[str]:
    """Apply ``SystemCallFilter=`` lines in order: the first sets an allow list, ``~`` removes."""
    allowed: set[str] = set()
    for line in filter_lines:
        deny = line.startswith("~")
        names = line.lstrip("~").split()
        calls: set[str] = set()
        for name in names:
            calls |= expand_syscall_group(name)
        if deny:
            allowed -= calls
        else:
            allowed |= calls
    return allowed


class Seccomp:
    """Thin ctypes wrapper over libseccomp, one filter at a time."""

    def __init__(self) -> None:
        path = ctypes.util.find_library("seccomp")
        if path is None:
            raise OSError("libseccomp not found; install libseccomp2")
        self.lib = ctypes.CDLL(path, use_errno=True)
        self.lib.seccomp_init.restype = ctypes.c_void_p
        self.lib.seccomp_init.argtypes = [ctypes.c_uint32]
        self.lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        self.lib.seccomp_rule_add_array.argtypes = [
            ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ScmpArgCmp)
        ]
        self.lib.seccomp_load.argtypes = [ctypes.c_void_p]
        self.lib.seccomp_release.argtypes = [ctypes.c_void_p]

    def syscall_number(self, name: str) -> int:
        """Return the native number of ``name``, or -1 when this architecture lacks it."""
        return self.lib.seccomp_syscall_resolve_name(name.encode())

    def load(self, default_action: int, rules: Sequence[tuple[int, str, Sequence[tuple[int, int, int, int]]]]) -> None:
        """Install one filter; each rule is ``(action, syscall, [(arg, op, a, b), ...])``."""
        context = self.lib.seccomp_init(default_action)
        if not context:
            raise OSError("seccomp_init failed")
        try:
            for action, name, comparisons in rules:
                number = self.syscall_number(name)
                if number < 0:
                    continue
                array = (ScmpArgCmp * max(len(comparisons), 1))(*[ScmpArgCmp(*c) for c in comparisons])
                result = self.lib.seccomp_rule_add_array(context, action, number, len(comparisons), array)
                if result < 0:
                    raise OSError(-result, f"seccomp_rule_add for {name} failed: {os.strerror(-result)}")
            result = self.lib.seccomp_load(context)
            if result < 0:
                raise OSError(-result, f"seccomp_load failed: {os.strerror(-result)}")
        finally:
            self.lib.seccomp_release(context)


def address_family_numbers(names: Iterable[str]) -> set[int]:
    numbers = set()
    for name in names:
        numbers.add(int(getattr(socket, name)))
    return numbers


def install_seccomp_filters(settings: dict[str, list[str]]) -> list[str]:
    """Install the unit's seccomp filters in this process; returns what was applied."""
    seccomp = Seccomp()
    applied = []

    families = settings.get("RestrictAddressFamilies", [])
    if families:
        allowed_families = address_family_numbers(" ".join(families).split())
        reject = scmp_act_errno(errno.EAFNOSUPPORT)
        rules = [
            (reject, "socket", [(0, SCMP_CMP_EQ, family, 0)])
            for family in range(AF_MAX)
            if family not in allowed_families
        ]
        seccomp.load(SCMP_ACT_ALLOW, rules)
        applied.append("RestrictAddressFamilies")

    if is_true(settings, "MemoryDenyWriteExecute"):
        reject = scmp_act_errno(errno.EPERM)
        write_exec = PROT_WRITE | PROT_EXEC
        seccomp.load(
            SCMP_ACT_ALLOW,
            [
                (reject, "mmap", [(2, SCMP_CMP_MASKED_EQ, write_exec, write_exec)]),
                (reject, "mmap2", [(2, SCMP_CMP_MASKED_EQ, write_exec, write_exec)]),
                (reject, "mprotect", [(2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC)]),
                (reject, "pkey_mprotect", [(2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC)]),
                (reject, "shmat", [(2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC)]),
            ],
        )
        applied.append("MemoryDenyWriteExecute")

    if is_true(settings, "RestrictNamespaces"):
        reject = scmp_act_errno(errno.EPERM)
        rules = [(reject, "unshare", []), (reject, "setns", []), (scmp_act_errno(errno.ENOSYS), "clone3", [])]
        for flag in CLONE_NAMESPACE_FLAGS:
            rules.append((reject, "clone", [(0, SCMP_CMP_MASKED_EQ, flag, flag)]))
        seccomp.load(SCMP_ACT_ALLOW, rules)
        applied.append("RestrictNamespaces")

    if is_true(settings, "LockPersonality"):
        reject = scmp_act_errno(errno.EPERM)
        seccomp.load(
            SCMP_ACT_ALLOW,
            [(reject, "personality", [(0, SCMP_CMP_NE, PER_LINUX, 0)])],
        )
        applied.append("LockPersonality")

    if is_true(settings, "RestrictRealtime"):
        reject = scmp_act_errno(errno.EPERM)
        rules = [(reject, "sched_setscheduler", [(1, SCMP_CMP_EQ, policy, 0)]) for policy in REALTIME_POLICIES]
        seccomp.load(SCMP_ACT_ALLOW, rules)
        applied.append("RestrictRealtime")

    # Last, as in systemd: the allow list may block the seccomp() call that
    # would load a later filter.
    filter_lines = settings.get("SystemCallFilter", [])
    if filter_lines:
        error_name = (settings.get("SystemCallErrorNumber") or [None])[-1]
        default_action = scmp_act_errno(getattr(errno, error_name)) if error_name else 0x80000000
        allowed = allowed_syscalls(filter_lines)
        # systemd always permits these so that the service can start and exit.
        allowed |= {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}
        seccomp.load(default_action, [(SCMP_ACT_ALLOW, name, []) for name in sorted(allowed)])
        applied.append(f"SystemCallFilter ({len(allowed)} calls allowed)")

    return applied


def drop_capabilities() -> None:
    """Empty the bounding set, so the command runs with no capability even as uid 0."""
    libc = ctypes.CDLL(None, use_errno=True)
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last_cap + 1):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"PR_CAPBSET_DROP {cap} failed: {os.strerror(code)}")


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        points.append(line.split()[4].replace("\\040", " "))
    return points


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def set_up_mounts(
    settings: dict[str, list[str]], writable: Sequence[Path], installed: Sequence[Path] = ()
) -> list[str]:
    """Enter a private mount namespace and apply the unit's file-system settings.

    ``installed`` lists read-only directories the command runs from (the
    checkout and its venv). A real service is installed under /opt, but a
    test checkout may sit below /tmp, where PrivateTmp would hide it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare(CLONE_NEWNS) failed: {os.strerror(code)}; run as root")
    _mount("--make-rprivate", "/")
    applied = []

    for path in writable:
        _mount("--bind", str(path), str(path))

    if (settings.get("ProtectSystem") or [""])[-1] == "strict":
        keep = [str(path) for path in writable]
        for point in _mount_points():
            if _under(point, API_FILE_SYSTEMS) or _under(point, keep):
                continue
            subprocess.run(["mount", "-o", "remount,bind,ro", point], check=False, capture_output=True)
        applied.append("ProtectSystem=strict")

    if is_true(settings, "PrivateTmp"):
        # The fresh /tmp hides writable directories below the old one, so
        # hold them open and bind them back into the new tmpfs.
        hidden = [path for path in [*writable, *installed] if _under(str(path), ("/tmp", "/var/tmp"))]
        handles = [os.open(path, os.O_PATH | os.O_DIRECTORY) for path in hidden]
        for path in ("/tmp", "/var/tmp"):
            _mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", path)
        for path, handle in zip(hidden, handles):
            path.mkdir(parents=True, exist_ok=True)
            # mount(8) would canonicalize the /proc/self/fd link to the now
            # hidden path, so call mount(2) directly.
            if libc.mount(f"/proc/self/fd/{handle}".encode(), str(path).encode(), None, MS_BIND, None) != 0:
                code = ctypes.get_errno()
                raise OSError(code, f"bind mount of {path} into the private /tmp failed: {os.strerror(code)}")
            os.close(handle)
        applied.append("PrivateTmp")

    if is_true(settings, "ProtectKernelTunables"):
        for path in ("/proc/sys", "/sys"):
            subprocess.run(["mount", "--bind", path, path], check=False, capture_output=True)
            subprocess.run(["mount", "-o", "remount,bind,ro", path], check=False, capture_output=True)
        applied.append("ProtectKernelTunables")

    proc_options = []
    if (settings.get("ProtectProc") or ["default"])[-1] in ("invisible", "noaccess", "ptraceable"):
        proc_options.append(f"hidepid={settings['ProtectProc'][-1]}")
    if (settings.get("ProcSubset") or ["all"])[-1] == "pid":
        proc_options.append("subset=pid")
    if proc_options:
        _mount("-t", "proc", "-o", ",".join(["nosuid", "nodev", "noexec", *proc_options]), "proc", "/proc")
        applied.append("/proc " + ",".join(proc_options))

    return applied


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True, help="directory exported as STATE_DIRECTORY and kept writable")
    parser.add_argument(
        "--read-only", type=Path, action="append", default=[],
        help="directory the command reads, such as its input video; repeat for more",
    )
    parser.add_argument("units", nargs="+", type=Path, help="unit file, then its drop-ins in order")
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("give the command after --")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]

    settings = read_service_section(args.units)
    state_dir = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(tempfile.mkdtemp(prefix="edge-runtime-cache-", dir=state_dir.parent))

    checkout = Path(__file__).resolve().parents[2]
    inputs = {path.resolve() for path in args.read_only}
    installed = sorted({checkout, Path(sys.prefix).resolve(), *inputs} - {state_dir, cache_dir})
    applied = set_up_mounts(settings, [state_dir, cache_dir], installed)
    # Only an empty CapabilityBoundingSet= is reproduced; the unit sets it empty.
    drop_capabilities()
    applied.append("CapabilityBoundingSet=")
    applied += install_seccomp_filters(settings)

    environment = dict(os.environ)
    for assignment in settings.get("Environment", []):
        key, _, value = assignment.partition("=")
        environment[key] = value
    environment["STATE_DIRECTORY"] = str(state_dir)
    environment["CACHE_DIRECTORY"] = str(cache_dir)

    print("sandbox: " + ", ".join(applied), file=sys.stderr, flush=True)
    os.execvpe(command[0], command, environment)


if __name__ == "__main__":
    sys.exit(main())
