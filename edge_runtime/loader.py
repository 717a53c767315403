"""Loading a model package into backend sessions.

``load_model`` picks a backend and a variant precision for a package, checks
the size and sha256 of every file it will hand to the backend, and only then
lets the backend parse them. The choice follows, from strongest to weakest:
the ``backend``/``precision`` arguments, the profile's override for the
model, the profile's preference lists, and the defaults below when there is
no profile.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Union

from edge_runtime.backends.base import Backend, Session, SessionOptions
from edge_runtime.backends.registry import get_backend
from edge_runtime.errors import BackendError, BackendUnavailableError, ConfigError, IntegrityError
from edge_runtime.manifest import Manifest, Precision, Variant, verify_file
from edge_runtime.models.catalog import manifest_files
from edge_runtime.models.store import ModelPackage
from edge_runtime.profiles import DeviceProfile

logger = logging.getLogger(__name__)

DEFAULT_BACKENDS = ("onnxruntime", "openvino", "tflite")
DEFAULT_PRECISIONS = ("fp32", "fp16", "int8")

# Backends already reported unavailable, so that loading several models warns once each.
_warned_backends: set[str] = set()


@dataclass
class LoadedModel:
    """A model package loaded on one backend: one session per stage.

    Attributes:
        manifest: the package manifest.
        backend: name of the backend that runs the sessions.
        precision: precision of the chosen variants.
        sessions: session per stage (``main`` for single-network models).
        files: sha256 of the verified variant file per stage.
        variants: the chosen variant per stage.
        package: the package the files came from.
    """

    manifest: Manifest
    backend: str
    precision: str
    sessions: dict[str, Session]
    files: dict[str, str]
    variants: dict[str, Variant] = field(default_factory=dict)
    package: Optional[ModelPackage] = None
    _closed: bool = field(default=False, repr=False)

    @property
    def name(self) -> str:
        """Package name."""
        return self.manifest.name

    @property
    def session(self) -> Session:
        """The ``main`` stage's session, or the only session.

        Raises:
            ConfigError: the model has several stages and none is ``main``.
        """
        if "main" in self.sessions:
            return self.sessions["main"]
        if len(self.sessions) == 1:
            return next(iter(self.sessions.values()))
        raise ConfigError(
            f"model {self.name!r} has stages {', '.join(self.sessions)}; use sessions[stage] instead of session"
        )

    def close(self) -> None:
        """Close every session; later calls do nothing."""
        if self._closed:
            return
        for session in self.sessions.values():
            session.close()
        self._closed = True

    def __enter__(self) -> "LoadedModel":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _order(first: Optional[str], rest: list[str]) -> list[str]:
    """Return ``first`` followed by ``rest`` without repeats."""
    return list(dict.fromkeys(([first] if first else []) + rest))


def _precision_name(value: Union[str, Precision]) -> str:
    """Return ``fp32`` for both ``"fp32"`` and ``Precision.FP32``."""
    return value.value if isinstance(value, Precision) else str(value)


def _preferences(
    name: str, profile: Optional[DeviceProfile], backend: Optional[str], precision: Union[str, Precision, None]
) -> tuple[list[str], list[str]]:
    """Return the backend and precision orders to try for model ``name``."""
    override = profile.override_for(name) if profile is not None else None
    profile_backends = list(profile.backends) if profile is not None else list(DEFAULT_BACKENDS)
    if profile is not None:
        profile_precisions = [_precision_name(p) for p in profile.precisions]
    else:
        profile_precisions = list(DEFAULT_PRECISIONS)

    if backend is not None:
        backends = [backend]
    else:
        backends = _order(override.backend if override else None, profile_backends)

    if precision is not None:
        precisions = [_precision_name(precision)]
    elif override is not None and override.precision is not None:
        precisions = _order(_precision_name(override.precision), profile_precisions)
    else:
        precisions = profile_precisions
    return backends, precisions


def _available_backend(name: str, explicit: bool) -> Optional[Backend]:
    """Return a ready backend, or None (with one WARNING per name) when it cannot run here."""
    try:
        return get_backend(name)
    except ConfigError:
        if explicit:
            raise
        if name not in _warned_backends:
            _warned_backends.add(name)
            logger.warning("backend %r is not registered; skipping it", name)
        return None
    except BackendUnavailableError as exc:
        if explicit:
            raise
        if name not in _warned_backends:
            _warned_backends.add(name)
            logger.warning("skipping backend %s: %s", name, exc)
        return None


def select_variants(manifest: Manifest, formats: tuple[str, ...], precision: str) -> Optional[dict[str, Variant]]:
    """Return one variant per stage in ``precision`` whose format is in ``formats``, or None.

    When a stage has several loadable formats, the one earlier in ``formats``
    (the backend's native format first) wins.
    """
    chosen = {}
    for stage in manifest.stages():
        candidates = [
            v for v in manifest.variants if v.stage == stage and v.precision == precision and v.format in formats
        ]
        if not candidates:
            return None
        chosen[stage] = min(candidates, key=lambda v: formats.index(v.format))
    return chosen


def _verify_variant_files(package: ModelPackage, variants: dict[str, Variant]) -> dict[str, str]:
    """Check size and sha256 of every file of the chosen variants; return the sha256 per stage."""
    pins = {file: (sha256, size) for file, sha256, size in manifest_files(package.manifest)}
    hashes = {}
    for stage, variant in variants.items():
        for file in [variant.file, *(c.file for c in variant.companion_files)]:
            sha256, size = pins[file]
            path = package.file_path(file)
            if sha256 is None:
                raise IntegrityError(
                    f"{path}: the manifest of {package.name!r} pins no sha256 for this file, so it is not loaded; "
                    f"install it with 'edge-runtime models pull {package.name} --sha256 HEX' or import a pinned package"
                )
            verify_file(path, sha256, size)
        hashes[stage] = variant.sha256  # type: ignore[assignment]
    return hashes


def _open_sessions(
    package: ModelPackage, backend: Backend, variants: dict[str, Variant], options: SessionOptions
) -> dict[str, Session]:
    sessions: dict[str, Session] = {}
    try:
        for stage, variant in variants.items():
            sessions[stage] = backend.load(package.file_path(variant), options)
    except BaseException:
        for session in sessions.values():
            session.close()
        raise
    return sessions


def _describe_variants(manifest: Manifest) -> str:
    return ", ".join(f"{v.file} ({v.format} {v.precision}, stage {v.stage})" for v in manifest.variants)


def load_model(
    package: ModelPackage,
    profile: Optional[DeviceProfile] = None,
    *,
    backend: Optional[str] = None,
    precision: Union[str, Precision, None] = None,
) -> LoadedModel:
    """Load ``package`` on the first backend and precision that fit, after verifying its files.

    For each backend in preference order that can run here, the first
    precision in preference order with a loadable variant for every stage is
    chosen. A backend that cannot be imported is skipped with a WARNING that
    names its pip fix. Unless ``backend`` was given, a backend that rejects
    the file is skipped with a WARNING too.

    Raises:
        IntegrityError: a chosen file is missing, unpinned, or differs from
            its size or sha256; no backend has parsed it.
        BackendUnavailableError: no backend that can run here loads any
            variant format of the package (or the requested backend cannot run).
        ConfigError: backends fit the formats but not the precisions, or the
            requested backend is unknown.
        BackendError: every fitting backend rejected the files.
    """
    manifest = package.manifest
    backends, precisions = _preferences(manifest.name, profile, backend, precision)

    usable: dict[str, tuple[str, ...]] = {}
    failures: list[str] = []
    for backend_name in backends:
        instance = _available_backend(backend_name, explicit=backend is not None)
        if instance is None:
            continue
        usable[backend_name] = instance.formats

        for precision_choice in precisions:
            variants = select_variants(manifest, instance.formats, precision_choice)
            if variants is None:
                continue

            hashes = _verify_variant_files(package, variants)
            options = profile.session_options(backend_name) if profile is not None else SessionOptions()
            try:
                sessions = _open_sessions(package, instance, variants, options)
            except BackendError as exc:
                if backend is not None:
                    raise
                logger.warning("backend %s failed to load %s (%s); trying the next backend", backend_name,
                               manifest.name, exc)
                failures.append(f"{backend_name}: {exc}")
                break

            files = ", ".join(f"{stage}={v.file}" if len(variants) > 1 else v.file for stage, v in variants.items())
            digests = ", ".join(h[:12] for h in hashes.values())
            logger.info("loaded %s on %s: %s (%s), sha256 %s", manifest.name, backend_name, files, precision_choice, digests)
            return LoadedModel(
                manifest=manifest,
                backend=backend_name,
                precision=precision_choice,
                sessions=sessions,
                files=hashes,
                variants=variants,
                package=package,
            )

    raise _no_fit_error(manifest, backends, precisions, usable, failures)


def _no_fit_error(
    manifest: Manifest,
    backends: list[str],
    precisions: list[str],
    usable: dict[str, tuple[str, ...]],
    failures: list[str],
) -> Exception:
    variants = _describe_variants(manifest)
    if failures:
        return BackendError(
            f"model {manifest.name!r}: every backend that fits rejected it ({'; '.join(failures)}); "
            f"variants: {variants}"
        )

    formats = {v.format for v in manifest.variants}
    loadable = sorted(name for name, backend_formats in usable.items() if formats & set(backend_formats))
    if loadable:
        return ConfigError(
            f"model {manifest.name!r} has no variant in precision(s) {', '.join(precisions)} that "
            f"{', '.join(loadable)} can load; variants: {variants}. Ask for another precision or add it to "
            "the profile's precisions"
        )

    if formats <= {"keras", "torch"}:
        hint = "no runtime backend loads these formats; convert the model with edge-convert first"
    else:
        hint = "install a backend that loads them ('edge-runtime backends' lists each backend's pip fix)"
    return BackendUnavailableError(
        f"model {manifest.name!r}: none of the backends tried ({', '.join(backends)}) can run here and load "
        f"format(s) {', '.join(sorted(formats))}; usable here: {', '.join(sorted(usable)) or 'none'}; "
        f"variants: {variants}. {hint[0].upper()}{hint[1:]}"
    )
