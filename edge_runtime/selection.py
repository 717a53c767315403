"""Choosing the backend and variant of one model from a device profile.

``plan_candidates`` turns the profile into an ordered list of candidates:
a backend, the precisions to try on it and its SessionOptions. The order is,
from strongest to weakest: a backend requested by the caller, the
profile's override for the model, then the profile's list for the role
(``tasks.<role>``, else ``backends``). An ``auto`` entry, or
``selection: auto`` in the profile, puts the backends measured by the last
``edge-runtime bench`` on this device first, fastest p50 first.

``choose`` walks the candidates and takes the first one that is installed,
has a variant for every stage in one of its precisions, loads and passes a
warm-up. A variant that the converter shipped with ``--force`` although it
failed its parity check is passed over, unless its precision was requested
by name (the caller's precision, or the profile's override for the model).
Every candidate passed over is logged at INFO and recorded as a ``Skip`` in
the returned ``Selection``, which the status topic publishes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

import numpy as np

from edge_runtime.backends.base import Backend, Session, SessionOptions
from edge_runtime.backends.registry import get_backend
from edge_runtime.bench_latest import latest_path, read_model_latencies
from edge_runtime.errors import BackendError, BackendUnavailableError, ConfigError, WarmUpError
from edge_runtime.manifest import InputSpec, Manifest, Variant
from edge_runtime.profiles import AUTO_BACKEND, BackendPreference, DeviceProfile

logger = logging.getLogger(__name__)

DEFAULT_BACKENDS = ("onnxruntime", "openvino", "tflite")
DEFAULT_PRECISIONS = ("fp32", "fp16", "int8")

# Skip reasons, as published in the status topic.
NOT_REGISTERED = "not registered"
NOT_INSTALLED = "not installed"
NO_VARIANT = "no variant"
LOAD_FAILED = "load failed"
WARM_UP_FAILED = "warm-up failed"
FAILED_PARITY = "failed parity"

Loaded = TypeVar("Loaded")


@dataclass(frozen=True)
class Candidate:
    """One backend to try, with the precisions to try on it in order and its session options.

    ``origin`` gives the reason it is in the list. ``entry`` summarizes its
    options (see ``describe_options``), so that two entries of one backend differ.
    ``named_precision`` is a precision requested by name. Its variants are
    used even when they failed the converter's parity check.
    """

    backend: str
    precisions: tuple[str, ...]
    options: SessionOptions
    origin: str
    named_precision: Optional[str] = None

    @property
    def entry(self) -> str:
        """Summary of the options, e.g. ``providers CUDA, CPU``; "" for a plain entry."""
        return describe_options(self.options)

    @property
    def reason(self) -> str:
        """``origin`` with the entry summary, as the status topic publishes it."""
        return f"{self.origin} ({self.entry})" if self.entry else self.origin


@dataclass(frozen=True)
class Skip:
    """A candidate passed over: ``reason`` is one of the constants above, ``detail`` the error or the fix.

    ``entry`` is the candidate's option summary, empty for a plain entry.
    """

    backend: str
    precision: Optional[str]
    reason: str
    detail: str
    entry: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Return the status-topic form; the reason ends with the entry summary in parentheses."""
        entry = f" ({self.entry})" if self.entry else ""
        return {"backend": self.backend, "precision": self.precision, "reason": f"{self.reason}: {self.detail}{entry}"}


def describe_options(options: SessionOptions) -> str:
    """Return a short summary of the options that tell two entries of one backend apart, or "".

    It names a device other than CPU, ONNX Runtime providers, TFLite
    delegates and an OpenVINO performance hint, e.g.
    ``providers Tensorrt, CUDA, CPU`` or ``device GPU, hint LATENCY``.
    """
    parts = []
    if options.device != "CPU":
        parts.append(f"device {options.device}")
    providers = options.extra.get("providers")
    if providers:
        names = [item if isinstance(item, str) else str(item[0]) for item in providers]  # type: ignore[union-attr]
        parts.append("providers " + ", ".join(name.removesuffix("ExecutionProvider") for name in names))
    delegates = options.extra.get("delegates")
    if delegates:
        parts.append("delegates " + ", ".join(str(item.get("name")) for item in delegates))  # type: ignore[union-attr]
    hint = options.extra.get("PERFORMANCE_HINT")
    if hint:
        parts.append(f"hint {hint}")
    return ", ".join(parts)


@dataclass(frozen=True)
class Selection:
    """The backend and variant chosen for one model, why, and what was passed over.

    Attributes:
        model: package name.
        role: the role the model was chosen for, or None.
        backend: chosen backend.
        precision: precision of the chosen variants.
        variants: variant file per stage.
        reason: why this candidate was first (requested, override, profile
            order, bench latency).
        skipped: candidates tried before, in order.
        warmed_up: False when the choice was only planned (``--no-load``).
        notes: remarks on the plan, e.g. why ``auto`` fell back to the order.
    """

    model: str
    role: Optional[str]
    backend: str
    precision: str
    variants: dict[str, str]
    reason: str
    skipped: tuple[Skip, ...] = ()
    warmed_up: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        """Return the status-topic form: backend, variant, precision, reason and skipped."""
        variant: Any = self.variants.get("main") if list(self.variants) == ["main"] else dict(self.variants)
        return {
            "backend": self.backend,
            "variant": variant,
            "precision": self.precision,
            "reason": self.reason,
            "skipped": [skip.as_dict() for skip in self.skipped],
        }


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


# --------------------------------------------------------------------------
# Planning


def _options_for(
    profile: Optional[DeviceProfile], backend: str, preferences: Sequence[BackendPreference]
) -> SessionOptions:
    """Return the options of the first entry of ``preferences`` naming ``backend``, else the profile's default."""
    if profile is None:
        return SessionOptions()
    for preference in preferences:
        if preference.backend == backend:
            return profile.session_options(preference)
    return profile.session_options(backend)


def _bench_candidates(
    model: str,
    profile: Optional[DeviceProfile],
    preferences: Sequence[BackendPreference],
    precisions: Optional[Sequence[str]],
    bench_path: Optional[Path],
    notes: list[str],
) -> list[Candidate]:
    """Return the measured backends of ``model``, fastest first; add a note and return [] when there are none."""
    path = bench_path if bench_path is not None else latest_path()
    try:
        latencies = read_model_latencies(path)
    except ConfigError as exc:
        notes.append(f"auto: bench result unusable ({exc}); using the profile's order")
        return []

    measured = sorted(
        (ms, backend, precision)
        for (name, backend, precision), ms in latencies.items()
        if name == model and backend != AUTO_BACKEND and (precisions is None or precision in precisions)
    )
    if not measured:
        notes.append(f"auto: no batch-1 bench result for {model} in {path}; using the profile's order")
        return []

    return [
        Candidate(
            backend=backend,
            precisions=(precision,),
            options=_options_for(profile, backend, preferences),
            origin=f"{'fastest' if index == 0 else 'measured'} in the bench result: {ms:.2f} ms p50 at batch 1",
        )
        for index, (ms, backend, precision) in enumerate(measured)
    ]


def plan_candidates(
    model: str,
    profile: Optional[DeviceProfile],
    role: Optional[str] = None,
    *,
    backend: Optional[str] = None,
    precision: Optional[str] = None,
    bench_path: Optional[Path] = None,
) -> tuple[list[Candidate], list[str]]:
    """Return the candidates for ``model`` in the order of the module docstring, and notes on the plan.

    ``bench_path`` replaces ``bench_latest.latest_path()`` for ``auto``.
    """
    notes: list[str] = []
    if profile is not None:
        preferences = profile.preferences(role)
    else:
        preferences = [BackendPreference(backend=name) for name in DEFAULT_BACKENDS]

    def precisions_of(preference: Optional[BackendPreference]) -> tuple[str, ...]:
        if precision is not None:
            return (precision,)
        if profile is None:
            return DEFAULT_PRECISIONS
        return tuple(profile.precision_order(preference))

    if backend is not None:
        own = next((p for p in preferences if p.backend == backend), None)
        options = _options_for(profile, backend, preferences)
        return [Candidate(backend, precisions_of(own), options, "requested backend", named_precision=precision)], notes

    if profile is None:
        where = "the default order (no profile)"
    elif role in profile.tasks:
        where = f"the profile's order for {role}"
    else:
        where = "the profile's order"

    candidates: list[Candidate] = []
    auto_done = False
    if profile is not None and profile.selection == "auto":
        requested = None if precision is None else [precision]
        candidates.extend(_bench_candidates(model, profile, preferences, requested, bench_path, notes))
        auto_done = True

    for preference in preferences:
        if preference.backend == AUTO_BACKEND:
            if not auto_done:
                allowed = list(precisions_of(preference)) if preference.precisions or precision else None
                candidates.extend(_bench_candidates(model, profile, preferences, allowed, bench_path, notes))
                auto_done = True
            continue
        options = profile.session_options(preference) if profile is not None else SessionOptions()
        candidates.append(Candidate(preference.backend, precisions_of(preference), options, where))

    override = profile.override_for(model) if profile is not None else None
    if override is not None and override.backend is not None:
        origin = f"override for {model} in the profile"
        forced = [replace(c, origin=origin) for c in candidates if c.backend == override.backend]
        if not forced:
            options = _options_for(profile, override.backend, preferences)
            forced = [Candidate(override.backend, precisions_of(None), options, origin)]
        candidates = forced + [c for c in candidates if c.backend != override.backend]
    if override is not None and override.precision is not None and precision is None:
        first = str(override.precision)
        candidates = [replace(c, precisions=tuple(dict.fromkeys((first, *c.precisions))), named_precision=first)
                      for c in candidates]
    if precision is not None:
        candidates = [replace(c, named_precision=precision) for c in candidates]

    return candidates, notes


# --------------------------------------------------------------------------
# Warm-up


def _warm_up_shape(spec_shape: Sequence[Optional[int]], image: InputSpec) -> tuple[int, ...]:
    """Fill the dynamic dimensions of an input: batch 1, height and width from the manifest, others 1."""
    channels = 1 if image.color == "gray" else 3
    if len(spec_shape) == 4:
        fill = (1, channels, image.height, image.width) if image.layout == "nchw" else (1, image.height, image.width, channels)
    else:
        fill = (1,) * len(spec_shape)
    return tuple(dim if dim is not None else fill[index] for index, dim in enumerate(spec_shape))


def warm_up(manifest: Manifest, sessions: dict[str, Session]) -> None:
    """Run every session once on a zero input of the manifest's shape and check the outputs are finite.

    The first input of each session gets the manifest's dtype (backends
    quantize float input themselves); other inputs get their own dtype.

    Raises:
        WarmUpError: a session fails to run or returns NaN or infinity.
    """
    for stage, session in sessions.items():
        feeds = {}
        for index, spec in enumerate(session.inputs):
            dtype = manifest.input.dtype if index == 0 else spec.dtype
            feeds[spec.name] = np.zeros(_warm_up_shape(spec.shape, manifest.input), dtype=np.dtype(dtype))
        try:
            outputs = session.run(feeds)
        except Exception as exc:
            raise WarmUpError(f"stage {stage}: inference on a zero input failed: {type(exc).__name__}: {exc}") from exc
        for position, output in enumerate(outputs):
            array = np.asarray(output)
            if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
                raise WarmUpError(f"stage {stage}: output {position} of a zero input contains NaN or infinity")


# --------------------------------------------------------------------------
# Choosing


def _backend_instance(name: str, explicit: bool) -> tuple[Optional[Backend], Optional[Skip]]:
    try:
        return get_backend(name), None
    except ConfigError as exc:
        if explicit:
            raise
        return None, Skip(name, None, NOT_REGISTERED, str(exc))
    except BackendUnavailableError as exc:
        if explicit:
            raise
        return None, Skip(name, None, NOT_INSTALLED, str(exc))


def choose(
    manifest: Manifest,
    candidates: Sequence[Candidate],
    *,
    role: Optional[str] = None,
    explicit: bool = False,
    open_model: Optional[Callable[[Backend, Candidate, str, dict[str, Variant]], Loaded]] = None,
    notes: Sequence[str] = (),
) -> tuple[Optional[Selection], Optional[Loaded], list[Skip]]:
    """Return the first candidate that fits, the object ``open_model`` made of it, and every skip.

    ``open_model(backend, candidate, precision, variants)`` loads and warms
    up the model and raises BackendError when loading fails, WarmUpError when
    the warm-up fails. Without it,
    the first candidate that is installed and has variants is chosen
    unloaded. With ``explicit`` (a requested backend) errors are raised
    instead of skipped. Returns ``(None, None, skips)`` when nothing fits.
    """
    label = f"{manifest.name} ({role})" if role else manifest.name
    skips: list[Skip] = []

    def skip(entry: Skip) -> None:
        # Framework errors span several lines; one line reads better in logs and the status topic.
        entry = replace(entry, detail=" ".join(entry.detail.split()))
        skips.append(entry)
        precision = f" {entry.precision}" if entry.precision else ""
        options = f" ({entry.entry})" if entry.entry else ""
        logger.info(
            "model %s: skipping backend %s%s%s: %s: %s", label, entry.backend, precision, options, entry.reason,
            entry.detail,
        )

    for candidate in candidates:
        instance, missing = _backend_instance(candidate.backend, explicit)
        if instance is None:
            skip(replace(missing, entry=candidate.entry))  # type: ignore[arg-type]
            continue

        found_variant = False
        for precision in candidate.precisions:
            variants = select_variants(manifest, instance.formats, precision)
            if variants is None:
                continue
            found_variant = True

            failed = [v for v in variants.values() if v.failed_parity]
            if failed and precision != candidate.named_precision:
                detail = "; ".join(f"{v.file}: {v.parity.measured}, needs {v.parity.tolerance}" for v in failed)
                skip(Skip(candidate.backend, precision, FAILED_PARITY,
                          f"{detail}; shipped with --force, so it runs only when precision {precision} is requested "
                          "by name (models.precision in the configuration, or the profile's override for the model)",
                          candidate.entry))
                continue
            for variant in failed:
                logger.warning("model %s: using %s although it failed the converter's parity check (%s, needs %s), "
                               "because precision %s was requested by name", label, variant.file,
                               variant.parity.measured, variant.parity.tolerance, precision)

            opened: Optional[Loaded] = None
            if open_model is not None:
                try:
                    opened = open_model(instance, candidate, precision, variants)
                except BackendError as exc:
                    if explicit:
                        raise
                    kind = WARM_UP_FAILED if isinstance(exc, WarmUpError) else LOAD_FAILED
                    skip(Skip(candidate.backend, precision, kind, str(exc), candidate.entry))
                    continue

            selection = Selection(
                model=manifest.name,
                role=role,
                backend=candidate.backend,
                precision=precision,
                variants={stage: variant.file for stage, variant in variants.items()},
                reason=candidate.reason,
                skipped=tuple(skips),
                warmed_up=open_model is not None,
                notes=tuple(notes),
            )
            return selection, opened, skips

        if not found_variant:
            formats = sorted({v.format for v in manifest.variants} & set(instance.formats))
            loads = ", ".join(instance.formats)
            detail = (
                f"no {'/'.join(candidate.precisions)} variant for every stage in formats it loads ({loads})"
                if formats else f"loads {loads}, the package has {', '.join(sorted({v.format for v in manifest.variants}))}"
            )
            skip(Skip(candidate.backend, None, NO_VARIANT, detail, candidate.entry))

    return None, None, skips


def explain_model(
    manifest: Manifest,
    profile: Optional[DeviceProfile],
    role: Optional[str] = None,
    *,
    backend: Optional[str] = None,
    precision: Optional[str] = None,
    bench_path: Optional[Path] = None,
) -> tuple[Optional[Selection], list[Skip], list[str]]:
    """Return the choice for ``manifest`` from installed backends and variants only, without loading files.

    Returns ``(selection or None, skips, notes)``; a requested backend that
    cannot run is a skip here, not an error.
    """
    candidates, notes = plan_candidates(
        manifest.name, profile, role, backend=backend, precision=precision, bench_path=bench_path
    )
    selection, _, skips = choose(manifest, candidates, role=role, notes=notes)
    return selection, skips, notes
