"""Loading a model package into backend sessions.

``load_model`` picks a backend and a variant precision for a package as
``edge_runtime.selection`` plans it, checks the size and sha256 of every
file it will hand to the backend, and only then lets the backend parse them.
The choice follows, from strongest to weakest: the ``backend``/``precision``
arguments, the profile's override for the model, the profile's order for the
role (``auto`` entries by bench latency), and the default order when there is
no profile. A candidate that is not installed, has no variant, fails to load
or fails its warm-up is skipped with an INFO log; ``LoadedModel.selection``
records the choice and the skips.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Union

from edge_runtime.backends.base import Backend, Session, SessionOptions
from edge_runtime.errors import BackendError, BackendUnavailableError, ConfigError, EdgeRuntimeError, IntegrityError
from edge_runtime.manifest import Manifest, Precision, Variant, verify_file
from edge_runtime.models.catalog import manifest_files
from edge_runtime.models.store import ModelPackage
from edge_runtime.profiles import DeviceProfile
from edge_runtime.selection import (
    DEFAULT_BACKENDS,
    DEFAULT_PRECISIONS,
    FAILED_PARITY,
    LOAD_FAILED,
    NO_VARIANT,
    NOT_INSTALLED,
    NOT_REGISTERED,
    WARM_UP_FAILED,
    Candidate,
    Selection,
    Skip,
    choose,
    plan_candidates,
    select_variants,
    warm_up,
)

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_BACKENDS", "DEFAULT_PRECISIONS", "LoadedModel", "load_model", "select_variants"]


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
        selection: why this backend and variant were chosen, and what was skipped.
        options: the session options the sessions were loaded with.
    """

    manifest: Manifest
    backend: str
    precision: str
    sessions: dict[str, Session]
    files: dict[str, str]
    variants: dict[str, Variant] = field(default_factory=dict)
    package: Optional[ModelPackage] = None
    selection: Optional[Selection] = None
    options: SessionOptions = field(default_factory=SessionOptions)
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


def _precision_name(value: Union[str, Precision]) -> str:
    """Return ``fp32`` for both ``"fp32"`` and ``Precision.FP32``."""
    return value.value if isinstance(value, Precision) else str(value)


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
    """Load every stage; a plugin's own exception becomes a BackendError so that the next candidate is tried."""
    sessions: dict[str, Session] = {}
    try:
        for stage, variant in variants.items():
            path = package.file_path(variant)
            try:
                sessions[stage] = backend.load(path, options)
            except EdgeRuntimeError:
                raise
            except Exception as exc:
                raise BackendError(
                    f"{path}: backend {backend.name} failed to load it: {type(exc).__name__}: {exc}"
                ) from exc
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
    role: Optional[str] = None,
    warm: bool = True,
    bench_path: Optional[Path] = None,
) -> LoadedModel:
    """Load ``package`` on the first candidate backend and precision that fits, after verifying its files.

    ``role`` selects the profile's backend order for that role. With
    ``warm`` (the default) every session runs once on a zero input and a
    candidate whose warm-up fails or returns NaN is skipped. ``bench_path``
    replaces the bench result that ``auto`` entries read.

    Raises:
        IntegrityError: a chosen file is missing, unpinned, or differs from
            its size or sha256; no backend has parsed it.
        BackendUnavailableError: no backend that can run here loads any
            variant format of the package (or the requested backend cannot run).
        ConfigError: backends fit the formats but not the precisions, or the
            requested backend is unknown.
        BackendError: every fitting backend rejected the files or failed the
            warm-up (WarmUpError for a requested backend that fails it).
    """
    manifest = package.manifest
    wanted = _precision_name(precision) if precision is not None else None
    candidates, notes = plan_candidates(
        manifest.name, profile, role, backend=backend, precision=wanted, bench_path=bench_path
    )
    for note in notes:
        logger.info("model %s: %s", manifest.name, note)

    def open_model(
        instance: Backend, candidate: Candidate, precision_choice: str, variants: dict[str, Variant]
    ) -> LoadedModel:
        hashes = _verify_variant_files(package, variants)
        sessions = _open_sessions(package, instance, variants, candidate.options)
        model = LoadedModel(
            manifest=manifest,
            backend=candidate.backend,
            precision=precision_choice,
            sessions=sessions,
            files=hashes,
            variants=variants,
            package=package,
            options=candidate.options,
        )
        if warm:
            try:
                warm_up(manifest, sessions)
            except BaseException:
                model.close()
                raise
        return model

    selection, model, skips = choose(
        manifest, candidates, role=role, explicit=backend is not None, open_model=open_model, notes=notes
    )
    if selection is None or model is None:
        raise _no_fit_error(manifest, candidates, skips)

    running = _providers_in_use(model)
    if running is not None:
        selection = replace(selection, reason=f"{selection.reason}, running on {running}")
    model.selection = selection
    files = ", ".join(f"{stage}={v.file}" if len(model.variants) > 1 else v.file for stage, v in model.variants.items())
    digests = ", ".join(h[:12] for h in model.files.values())
    logger.info(
        "loaded %s on %s: %s (%s), sha256 %s; %s%s",
        manifest.name, model.backend, files, model.precision, digests, selection.reason,
        f", after skipping {len(skips)}" if skips else "",
    )
    return model


def _providers_in_use(model: LoadedModel) -> Optional[str]:
    """Return the execution providers the sessions run on when they differ from those the profile asked for.

    ONNX Runtime drops requested providers that its build lacks, so an entry
    that requests TensorRT may run on the CPU. The reason then names the
    providers in use.
    """
    in_use = {tuple(getattr(session, "providers", ())) for session in model.sessions.values()}
    if len(in_use) != 1 or not next(iter(in_use)):
        return None
    (providers,) = in_use
    requested = model.options.extra.get("providers") or ()
    names = [item if isinstance(item, str) else str(item[0]) for item in requested]  # type: ignore[union-attr]
    if not names or list(providers) == names:
        return None
    return ", ".join(name.removesuffix("ExecutionProvider") for name in providers)


def _no_fit_error(manifest: Manifest, candidates: list[Candidate], skips: list[Skip]) -> Exception:
    variants = _describe_variants(manifest)
    failures = [
        f"{s.backend} {s.precision}: {s.reason}: {s.detail}" for s in skips if s.reason in (LOAD_FAILED, WARM_UP_FAILED)
    ]
    if failures:
        return BackendError(
            f"model {manifest.name!r}: every backend that fits rejected it ({'; '.join(failures)}); "
            f"variants: {variants}"
        )

    parity = [f"{s.backend} {s.precision}: {s.detail}" for s in skips if s.reason == FAILED_PARITY]
    if parity:
        return ConfigError(
            f"model {manifest.name!r}: every variant that fits failed the converter's parity check "
            f"({'; '.join(parity)}). Ask for that precision by name (models.precision in the configuration or "
            "the profile's override for the model) to run it anyway, or convert the model again"
        )

    formats = {v.format for v in manifest.variants}
    unusable = {s.backend for s in skips if s.reason in (NOT_INSTALLED, NOT_REGISTERED)}
    usable = sorted({c.backend for c in candidates} - unusable)
    loadable = sorted({s.backend for s in skips if s.reason == NO_VARIANT and "formats it loads" in s.detail})
    if loadable:
        precisions = sorted({p for c in candidates for p in c.precisions})
        return ConfigError(
            f"model {manifest.name!r} has no variant in precision(s) {', '.join(precisions)} that "
            f"{', '.join(loadable)} can load; variants: {variants}. Ask for another precision or add it to "
            "the profile's precisions"
        )

    if formats <= {"keras", "torch"}:
        hint = "no runtime backend loads these formats; convert the model with edge-convert first"
    else:
        hint = "install a backend that loads them ('edge-runtime backends' lists each backend's pip fix)"
    tried = ", ".join(dict.fromkeys(c.backend for c in candidates)) or "none"
    return BackendUnavailableError(
        f"model {manifest.name!r}: none of the backends tried ({tried}) can run here and load "
        f"format(s) {', '.join(sorted(formats))}; usable here: {', '.join(usable) or 'none'}; "
        f"variants: {variants}. {hint[0].upper()}{hint[1:]}"
    )
