"""Device profiles: which backend, precision and models a kind of board uses.

A profile is a YAML file validated by ``DeviceProfile`` (JSON Schema:
``device_profiles/profile.schema.json``, printed by ``edge-runtime profile
--schema``). Profiles are looked up by name in, in order: the directories of
``$EDGE_RUNTIME_PROFILES`` (separated by ``os.pathsep``),
``/etc/edge-runtime/profiles``, the ``device_profiles/`` directory of a
source checkout, and ``<prefix>/share/edge-runtime/device_profiles`` of an
installed wheel. The first ``<name>.yaml`` found wins, so a file in ``/etc``
overrides a shipped one.

Which profile applies (``resolve_profile``), from strongest to weakest:

1. an explicit name: ``--profile NAME`` or ``profile:`` in the service config;
2. ``base: NAME`` in the override file;
3. detection: the profile whose ``match`` rules all hold on this board, the
   highest ``match.priority`` first, then the one with more rules; a profile
   without ``match`` rules is never detected;
4. ``generic-x86_64`` when no profile matches.

The override file (``$EDGE_RUNTIME_PROFILE_FILE``, else
``/etc/edge-runtime/profile.yaml``; an empty variable turns it off) is then
merged over the chosen profile key by key: mappings merge, every other value
(lists included) replaces the profile's.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_runtime.backends.base import SessionOptions
from edge_runtime.errors import ConfigError
from edge_runtime.manifest import Precision
from edge_runtime.yaml_location import compose, line_of

logger = logging.getLogger(__name__)

PROFILES_ENV = "EDGE_RUNTIME_PROFILES"
OVERRIDE_FILE_ENV = "EDGE_RUNTIME_PROFILE_FILE"
SYSTEM_PROFILE_DIR = Path("/etc/edge-runtime/profiles")
SYSTEM_OVERRIDE_FILE = Path("/etc/edge-runtime/profile.yaml")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
CPUINFO = Path("/proc/cpuinfo")
FALLBACK_PROFILE = "generic-x86_64"
AUTO_BACKEND = "auto"
ROLE_NAMES = ("detector", "emotion", "age", "gender", "ethnicity")

# Placeholder in string backend options, replaced by ``cache_dir()``.
CACHE_DIR_PLACEHOLDER = "{cache_dir}"

Role = Literal["detector", "emotion", "age", "gender", "ethnicity"]

# Stages whose mean latency the runner compares with ``latency_budget_ms``: waiting for a frame, face
# detection, each classifier role and the whole frame from detection to publishing.
LatencyStage = Literal["read", "detect", "emotion", "age", "gender", "ethnicity", "frame"]

# Spellings of platform.machine() that name the same architecture.
_MACHINE_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)


class PipelineModels(_Strict):
    """Default model package for each role of the capture pipeline."""

    detector: str = Field(..., description="Face detection package, e.g. mtcnn or blazeface-full-range")
    emotion: Optional[str] = Field(None, description="Emotion package; None skips emotion recognition")
    age: Optional[str] = Field(None, description="Age package; None skips age estimation")
    gender: Optional[str] = Field(None, description="Gender package; None skips gender recognition")
    ethnicity: Optional[str] = Field(None, description="Ethnicity package; None (the default) skips it")


class ModelOverride(_Strict):
    """Backend and precision forced for one model, taking precedence over the profile's order."""

    backend: Optional[str] = Field(None, description="Backend name to use for this model only")
    precision: Optional[Precision] = Field(None, description="Variant precision to use for this model only")


class MatchRules(_Strict):
    """Conditions under which detection picks a profile; every condition given must hold."""

    priority: int = Field(0, description="Rank among matching profiles; higher wins (boards 100, generic CPUs 0)")
    device_tree_model: list[str] = Field(
        default_factory=list, description="Substrings of /proc/device-tree/model; any one must occur"
    )
    device_tree_model_regex: Optional[str] = Field(
        None, description="Regular expression searched in /proc/device-tree/model"
    )
    tegra_release: Optional[Union[bool, str]] = Field(
        None,
        description=(
            "/etc/nv_tegra_release: true requires the file, false its absence, a string is a regular "
            "expression searched in its content (e.g. '^# R32' for JetPack 4)"
        ),
    )
    cpu_vendor: list[str] = Field(
        default_factory=list, description="vendor_id values of /proc/cpuinfo (GenuineIntel, AuthenticAMD); any one"
    )
    cpu_flags: list[str] = Field(
        default_factory=list,
        description="CPU flags of /proc/cpuinfo ('flags' on x86, 'Features' on ARM); all must be present",
    )
    machine: list[str] = Field(
        default_factory=list, description="platform.machine() values (x86_64, aarch64); any one"
    )

    @field_validator("device_tree_model_regex", "tegra_release")
    @classmethod
    def _check_regex(cls, value: Optional[Union[bool, str]]) -> Optional[Union[bool, str]]:
        if isinstance(value, str):
            try:
                re.compile(value, re.MULTILINE)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc
        return value

    def rule_count(self) -> int:
        """Return the number of conditions, the specificity used after ``priority``."""
        count = sum(bool(values) for values in (self.device_tree_model, self.cpu_vendor, self.machine))
        count += len(self.cpu_flags)
        count += self.device_tree_model_regex is not None
        count += self.tegra_release is not None
        return count


class ExecutionProvider(_Strict):
    """An ONNX Runtime execution provider with its provider options."""

    name: str = Field(..., description="Provider name, e.g. TensorrtExecutionProvider")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Provider options, e.g. trt_fp16_enable or trt_engine_cache_path; '{cache_dir}' in a string value "
            "is replaced by the cache directory"
        ),
    )


class TfliteDelegate(_Strict):
    """A TFLite delegate: XNNPACK (built in), the Edge TPU or another external delegate library."""

    name: Literal["xnnpack", "edgetpu", "external"] = Field(..., description="Delegate kind")
    threads: Optional[int] = Field(None, ge=1, description="xnnpack only: threads of the interpreter and XNNPACK")
    library: Optional[str] = Field(
        None, description="Shared library for load_delegate; edgetpu defaults to libedgetpu.so.1"
    )
    options: dict[str, str] = Field(default_factory=dict, description="Options passed to load_delegate")

    @model_validator(mode="after")
    def _check_kind(self) -> "TfliteDelegate":
        if self.name == "external" and not self.library:
            raise ValueError("an external delegate needs 'library', the path of its shared library")
        if self.name != "xnnpack" and self.threads is not None:
            raise ValueError(f"'threads' applies to the xnnpack delegate only, not to {self.name}")
        if self.name == "xnnpack" and (self.library or self.options):
            raise ValueError("the xnnpack delegate is built in; it takes 'threads' only")
        return self


# Fields of BackendPreference that only one backend understands.
_BACKEND_ONLY_FIELDS = {
    "providers": "onnxruntime",
    "performance_hint": "openvino",
    "num_streams": "openvino",
    "delegates": "tflite",
}


class BackendPreference(_Strict):
    """One entry of a backend order: a backend and the options it gets for this profile.

    ``backend: auto`` stands for the backends ordered by the latencies of the
    last ``edge-runtime bench`` result on this device.
    """

    backend: str = Field(..., min_length=1, description="Backend name (onnxruntime, openvino, tflite) or auto")
    precisions: Optional[list[Precision]] = Field(
        None, min_length=1, description="Variant precisions in order of preference; None uses the profile's"
    )
    num_threads: Optional[int] = Field(
        None, ge=0, description="Intra-op threads per session; None uses the profile's, 0 lets the framework decide"
    )
    device: Optional[str] = Field(None, description="Device of the backend, e.g. CPU, GPU or NPU for OpenVINO")
    providers: Optional[list[Union[str, ExecutionProvider]]] = Field(
        None, min_length=1, description="onnxruntime: execution providers in order; unavailable ones are dropped"
    )
    performance_hint: Optional[Literal["LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"]] = Field(
        None, description="openvino: PERFORMANCE_HINT of the compiled model"
    )
    num_streams: Optional[Union[int, Literal["AUTO"]]] = Field(
        None, description="openvino: NUM_STREAMS, parallel inference streams"
    )
    delegates: Optional[list[TfliteDelegate]] = Field(None, description="tflite: delegates to apply, in order")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Other backend-specific options, e.g. an OpenVINO property such as INFERENCE_PRECISION_HINT",
    )

    @model_validator(mode="after")
    def _check_fields(self) -> "BackendPreference":
        for field_name, owner in _BACKEND_ONLY_FIELDS.items():
            if getattr(self, field_name) is not None and self.backend != owner:
                raise ValueError(f"'{field_name}' is an option of backend {owner}, not of {self.backend}")
        if self.backend == AUTO_BACKEND:
            extras = [name for name in ("num_threads", "device") if getattr(self, name) is not None]
            if extras or self.options:
                raise ValueError(
                    "backend auto takes only 'precisions'; give options in an entry for the backend itself"
                )
        return self


def _as_preference(value: Any) -> Any:
    return {"backend": value} if isinstance(value, str) else value


# A list entry is a backend name or a mapping with options; a name is short for {backend: NAME}.
PreferenceEntry = Annotated[
    BackendPreference, BeforeValidator(_as_preference, json_schema_input_type=Union[str, BackendPreference])
]


class DetectionSettings(_Strict):
    """How often and with which options the face detector runs."""

    interval: int = Field(
        1, ge=1, description="Run the full detector every k-th frame and track the faces in between; 1 is every frame"
    )
    detector_options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Options of the face detector (min_face_size, score_threshold, nms_threshold, max_faces; MTCNN also "
            "scale_factor, stage_thresholds and max_pyramid_pixels, which caps the input resolution)"
        ),
    )


class DeviceProfile(_Strict):
    """Settings for one kind of device, read from ``device_profiles/<name>.yaml``."""

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9._-]*$", description="Profile name, equal to the file stem")
    description: str = Field("", description="What hardware the profile is for and why it is set up this way")
    match: Optional[MatchRules] = Field(
        None, description="When detection picks this profile; None means only by name"
    )
    selection: Literal["order", "auto"] = Field(
        "order",
        description="order: the first usable backend in order; auto: by the last bench latencies, then in order",
    )
    backends: list[PreferenceEntry] = Field(
        ...,
        min_length=1,
        description="Default backend order with options, for every role without its own list in 'tasks'",
    )
    tasks: dict[Role, list[PreferenceEntry]] = Field(
        default_factory=dict, description="Backend order per role (detector, emotion, age, gender, ethnicity)"
    )
    precisions: list[Precision] = Field(
        default_factory=lambda: [Precision.FP32],
        min_length=1,
        description="Variant precisions in order of preference",
    )
    num_threads: int = Field(0, ge=0, description="Intra-op threads per session; 0 lets the framework decide")
    backend_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=(
            "Older form of per-backend options, merged under every entry of that backend. 'device' sets "
            "SessionOptions.device; every other key goes to SessionOptions.extra"
        ),
    )
    models: PipelineModels = Field(..., description="Default models of the capture pipeline by role")
    overrides: dict[str, ModelOverride] = Field(
        default_factory=dict, description="Backend or precision forced per model package name"
    )
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    latency_budget_ms: dict[LatencyStage, float] = Field(
        default_factory=dict,
        description=(
            "Target mean milliseconds per stage (read, detect, emotion, age, gender, ethnicity, frame); a stage "
            "whose mean over a stats interval exceeds its target logs a WARNING"
        ),
    )

    @model_validator(mode="after")
    def _check_names(self) -> "DeviceProfile":
        lists = {"backends": self.backends, **{f"tasks.{role}": items for role, items in self.tasks.items()}}
        for where, items in lists.items():
            if not items:
                raise ValueError(f"profile {self.name!r}: {where} is empty; list at least one backend")
            dumped = [item.model_dump_json() for item in items]
            if len(set(dumped)) != len(dumped):
                names = [item.backend for item in items]
                raise ValueError(f"profile {self.name!r}: {where} {names} lists a backend twice with the same options")
        if len(set(self.precisions)) != len(self.precisions):
            raise ValueError(f"profile {self.name!r}: precisions {self.precisions} lists a precision twice")

        known = {item.backend for items in lists.values() for item in items}
        known |= {o.backend for o in self.overrides.values() if o.backend}
        stray = sorted(set(self.backend_options) - known)
        if stray:
            raise ValueError(
                f"profile {self.name!r}: backend_options names {stray}, which neither 'backends' nor an "
                "override uses; add the backend to 'backends' or drop its options"
            )

        negative = sorted(stage for stage, budget in self.latency_budget_ms.items() if budget <= 0)
        if negative:
            raise ValueError(f"profile {self.name!r}: latency_budget_ms of {negative} must be positive milliseconds")
        return self

    @property
    def detection_interval(self) -> int:
        """Frames per full face detection (``detection.interval``)."""
        return self.detection.interval

    def preferences(self, role: Optional[str] = None) -> list[BackendPreference]:
        """Return the backend order of ``role``: its ``tasks`` list, else ``backends``."""
        if role is not None and role in self.tasks:
            return list(self.tasks[role])  # type: ignore[index]
        return list(self.backends)

    def session_options(self, backend: Union[str, BackendPreference]) -> SessionOptions:
        """Return the SessionOptions this profile gives a backend name or a backend preference.

        A name takes the first entry of ``backends`` with that name, if any.
        ``backend_options`` go under the entry's own options, which win.
        """
        if isinstance(backend, str):
            found = [item for item in self.backends if item.backend == backend]
            preference = found[0] if found else BackendPreference(backend=backend)
        else:
            preference = backend

        extra = dict(self.backend_options.get(preference.backend, {}))
        device = str(extra.pop("device", "CPU"))
        if preference.device is not None:
            device = preference.device
        extra.update(preference.options)

        if preference.providers is not None:
            extra["providers"] = [
                item if isinstance(item, str) else [item.name, _fill_cache_dir(dict(item.options))]
                for item in preference.providers
            ]
        if preference.performance_hint is not None:
            extra["PERFORMANCE_HINT"] = preference.performance_hint
        if preference.num_streams is not None:
            extra["NUM_STREAMS"] = preference.num_streams
        if preference.delegates is not None:
            extra["delegates"] = [item.model_dump(exclude_none=True) for item in preference.delegates]

        threads = preference.num_threads if preference.num_threads is not None else self.num_threads
        return SessionOptions(num_threads=threads, device=device, extra=_fill_cache_dir(extra))

    def precision_order(self, preference: Optional[BackendPreference] = None) -> list[str]:
        """Return the precisions to try for ``preference``: its own list, else the profile's."""
        # Defaults skip validation, so they may still be Precision members rather than strings.
        chosen = preference.precisions if preference is not None and preference.precisions is not None else self.precisions
        return [p.value if isinstance(p, Precision) else str(p) for p in chosen]

    def override_for(self, model_name: str) -> Optional[ModelOverride]:
        """Return the override of ``model_name``, or None."""
        return self.overrides.get(model_name)


def cache_dir() -> Path:
    """Return the cache directory for compiled engines.

    It is ``$CACHE_DIRECTORY`` (set by systemd), else
    ``$XDG_CACHE_HOME/edge-runtime``, else ``~/.cache/edge-runtime``.
    """
    systemd = os.environ.get("CACHE_DIRECTORY")
    if systemd:
        # systemd lists several directories separated by ':' when the unit names several.
        return Path(systemd.split(":")[0])
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "edge-runtime"


def _fill_cache_dir(options: dict[str, Any]) -> dict[str, Any]:
    filled = {}
    for key, value in options.items():
        if isinstance(value, str) and CACHE_DIR_PLACEHOLDER in value:
            value = value.replace(CACHE_DIR_PLACEHOLDER, str(cache_dir()))
        filled[key] = value
    return filled


def profile_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of profile files, as stored in ``device_profiles/profile.schema.json``."""
    schema = DeviceProfile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "edge-runtime device profile"
    return schema


# --------------------------------------------------------------------------
# Finding and loading profiles


def profile_dirs() -> list[Path]:
    """Return the profile directories in search order (see the module docstring)."""
    dirs = [Path(item).expanduser() for item in os.environ.get(PROFILES_ENV, "").split(os.pathsep) if item]
    dirs.append(SYSTEM_PROFILE_DIR)
    # A source checkout or editable install keeps the profiles beside the package.
    dirs.append(Path(__file__).resolve().parent.parent / "device_profiles")
    # A wheel installs them as data files under the environment's prefix.
    dirs.append(Path(sys.prefix) / "share" / "edge-runtime" / "device_profiles")
    return dirs


def list_profiles() -> list[str]:
    """Return the names of every profile found, without repeats, sorted."""
    names = set()
    for directory in profile_dirs():
        if directory.is_dir():
            names.update(path.stem for path in directory.glob("*.yaml"))
    return sorted(names)


def _find_profile(name: str) -> Path:
    searched = profile_dirs()
    for directory in searched:
        candidate = directory / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"device profile {name!r} not found in {', '.join(str(d) for d in searched)}; "
        f"available profiles: {', '.join(list_profiles()) or 'none'}"
    )


def parse_profile(
    data: object, origin: str = "<profile>", source: Optional[tuple[Path, str]] = None
) -> DeviceProfile:
    """Validate a profile given as a mapping; ``origin`` names it in errors.

    ``source`` is the YAML file the keys come from and its text; when given,
    each problem starts with that file and the line of its key.

    Raises:
        ConfigError: the data violates the profile schema; the message names
            ``origin`` and the dotted key of every problem.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        if source is None:
            problems = "; ".join(_describe_problem(err) for err in exc.errors())
            raise ConfigError(f"{origin}: invalid device profile: {problems}") from exc

        path, text = source
        root = compose(text)
        lines = []
        for err in exc.errors():
            location = [part for part in err["loc"] if part != "[key]"]
            line = line_of(root, location)
            where = f"{path}:{line}" if line is not None else str(path)
            lines.append((line, f"{where}: {_describe_problem(err)}"))
        lines.sort(key=lambda item: (item[0] is None, item[0] or 0))
        raise ConfigError(
            f"{origin}: invalid device profile:\n  " + "\n  ".join(message for _, message in lines)
        ) from exc


def _describe_problem(err: Any) -> str:
    """Return ``key: message`` of one pydantic error, with the rejected value for a key or type error."""
    key = ".".join(str(part) for part in err["loc"] if part != "[key]") or "<top>"
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key; 'edge-runtime profile --schema' prints every key"
    if "[key]" in err["loc"]:
        expected = (err.get("ctx") or {}).get("expected")
        allowed = f"use one of {expected}" if expected else err["msg"]
        return f"{key}: {err['input']!r} is not an allowed key here; {allowed}"
    if err["type"] == "value_error":
        return f"{key}: {err['msg'].removeprefix('Value error, ')}"
    return f"{key}: {err['msg']} (got {err['input']!r})"


def _read_yaml(path: Path, what: str) -> tuple[object, str]:
    """Return the parsed YAML of ``path`` and its text, which error messages take the lines from."""
    try:
        text = path.read_text(encoding="utf-8")
        return yaml.safe_load(text), text
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc}") from exc


def _profile_path(name_or_path: Union[str, Path]) -> tuple[Path, bool]:
    """Return the file of a profile name or path, and whether it was given as a path."""
    text = str(name_or_path)
    is_path = isinstance(name_or_path, Path) or os.sep in text or "/" in text or text.endswith((".yaml", ".yml"))
    path = Path(text).expanduser() if is_path else _find_profile(text)
    if is_path and not path.is_file():
        raise ConfigError(f"device profile file {path} not found")
    return path, is_path


def load_profile(name_or_path: Union[str, Path]) -> DeviceProfile:
    """Load a profile by name (searched as in ``profile_dirs()``) or from a YAML file path.

    A value with a path separator or a ``.yaml``/``.yml`` suffix is a path.
    A profile read by name must carry that name in its ``name`` field. The
    override file is not applied here; ``resolve_profile`` applies it.

    Raises:
        ConfigError: the profile is not found, unreadable or invalid.
    """
    path, is_path = _profile_path(name_or_path)
    data, text = _read_yaml(path, "device profile")
    profile = parse_profile(data, origin=str(path), source=(path, text))
    if not is_path and profile.name != str(name_or_path):
        raise ConfigError(
            f"{path}: the file is found as {str(name_or_path)!r} but names profile {profile.name!r}; make them equal"
        )
    logger.debug("device profile %s from %s", profile.name, path)
    return profile


# --------------------------------------------------------------------------
# Reading the board


@dataclass(frozen=True)
class BoardInfo:
    """Board facts that detection reads from this machine; None where a file is absent."""

    device_tree_model: Optional[str]
    tegra_release: Optional[str]
    cpu_vendor: Optional[str]
    cpu_model: Optional[str]
    cpu_flags: frozenset[str]
    machine: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_tree_model": self.device_tree_model,
            "tegra_release": self.tegra_release,
            "cpu_vendor": self.cpu_vendor,
            "cpu_model": self.cpu_model,
            "cpu_flags": sorted(self.cpu_flags),
            "machine": self.machine,
        }


def _read_text(path: Path) -> Optional[str]:
    try:
        # The device-tree model string ends with a NUL byte.
        return path.read_bytes().decode("utf-8", errors="replace").rstrip("\x00\n ")
    except OSError:
        return None


def _parse_cpuinfo(text: str) -> tuple[Optional[str], Optional[str], frozenset[str]]:
    """Return vendor, model name and flags of the first processor that lists them."""
    vendor = model = None
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        value = value.strip()
        if key == "vendor_id" and vendor is None:
            vendor = value
        elif key in ("model name", "cpu model") and model is None:
            model = value
        elif key in ("flags", "features"):
            flags.update(value.split())
    return vendor, model, frozenset(flags)


def read_board_info(root: Path = Path("/"), machine: Optional[str] = None) -> BoardInfo:
    """Read the device-tree model, Tegra release, CPU and architecture below ``root``.

    ``root`` replaces ``/`` for ``proc/device-tree/model``,
    ``etc/nv_tegra_release`` and ``proc/cpuinfo``, so that tests can use
    fake trees. ``machine`` replaces ``platform.machine()``.
    """
    root = Path(root)
    cpuinfo = _read_text(root / CPUINFO.relative_to("/")) or ""
    vendor, model, flags = _parse_cpuinfo(cpuinfo)
    arch = (machine if machine is not None else platform.machine()).lower()
    return BoardInfo(
        device_tree_model=_read_text(root / DEVICE_TREE_MODEL.relative_to("/")),
        tegra_release=_read_text(root / TEGRA_RELEASE.relative_to("/")),
        cpu_vendor=vendor,
        cpu_model=model,
        cpu_flags=flags,
        machine=_MACHINE_ALIASES.get(arch, arch),
    )


def match_reason(rules: MatchRules, board: BoardInfo) -> Optional[str]:
    """Return why ``rules`` hold on ``board``, or None when one fails or no rule is given."""
    reasons = []
    model = board.device_tree_model or ""

    if rules.device_tree_model:
        hit = next((s for s in rules.device_tree_model if s in model), None)
        if hit is None:
            return None
        reasons.append(f"device-tree model {model!r} contains {hit!r}")
    if rules.device_tree_model_regex is not None:
        if not re.search(rules.device_tree_model_regex, model):
            return None
        reasons.append(f"device-tree model {model!r} matches /{rules.device_tree_model_regex}/")
    if rules.tegra_release is not None:
        release = board.tegra_release
        if rules.tegra_release is True:
            if release is None:
                return None
            reasons.append("/etc/nv_tegra_release exists")
        elif rules.tegra_release is False:
            if release is not None:
                return None
            reasons.append("no /etc/nv_tegra_release")
        else:
            if release is None or not re.search(rules.tegra_release, release, re.MULTILINE):
                return None
            reasons.append(f"/etc/nv_tegra_release matches /{rules.tegra_release}/")
    if rules.cpu_vendor:
        if board.cpu_vendor not in rules.cpu_vendor:
            return None
        reasons.append(f"CPU vendor {board.cpu_vendor}")
    if rules.cpu_flags:
        if not set(rules.cpu_flags) <= board.cpu_flags:
            return None
        reasons.append(f"CPU flags {' '.join(rules.cpu_flags)}")
    if rules.machine:
        normalized = {_MACHINE_ALIASES.get(m.lower(), m.lower()) for m in rules.machine}
        if board.machine not in normalized:
            return None
        reasons.append(f"architecture {board.machine}")

    return ", ".join(reasons) if reasons else None


def rank_profiles(board: BoardInfo, profiles: list[DeviceProfile]) -> list[tuple[DeviceProfile, str]]:
    """Return the profiles whose match rules hold on ``board``, best first, with the reason of each."""
    matched = []
    for profile in profiles:
        if profile.match is None:
            continue
        reason = match_reason(profile.match, board)
        if reason is not None:
            matched.append((profile, reason))
    matched.sort(key=lambda item: (-item[0].match.priority, -item[0].match.rule_count(), item[0].name))
    return matched


def detect_profile_name(root: Path = Path("/"), machine: Optional[str] = None) -> str:
    """Return the name of the profile that fits the board read below ``root``.

    Falls back to ``generic-x86_64`` with a WARNING when no profile matches.
    """
    board = read_board_info(root, machine)
    ranked = rank_profiles(board, [load_profile(name) for name in list_profiles()])
    if ranked:
        return ranked[0][0].name
    logger.warning(
        "no device profile matches this board (%s, device-tree model %r); using %s",
        board.machine, board.device_tree_model, FALLBACK_PROFILE,
    )
    return FALLBACK_PROFILE


def detect_profile(root: Path = Path("/"), machine: Optional[str] = None) -> DeviceProfile:
    """Return the profile chosen for this machine as ``resolve_profile`` chooses it, override file included."""
    return resolve_profile(None, root=root, machine=machine).profile


# --------------------------------------------------------------------------
# Override file and precedence


@dataclass(frozen=True)
class ProfileChoice:
    """The profile that applies and why.

    Attributes:
        profile: the profile with the override file merged in.
        source: ``--profile`` (an explicit name), ``override file``
            (its ``base`` key), ``detected`` or ``fallback``.
        reason: the rule that matched, or what named the profile.
        override_file: the override file merged in, or None.
        board: what detection read about this machine.
        matched: every profile whose rules hold, best first.
    """

    profile: DeviceProfile
    source: str
    reason: str
    override_file: Optional[Path]
    board: BoardInfo
    matched: list[tuple[str, str]] = field(default_factory=list)


def override_file_path(root: Path = Path("/")) -> Optional[Path]:
    """Return the override file to merge: ``$EDGE_RUNTIME_PROFILE_FILE``, else ``/etc/edge-runtime/profile.yaml``.

    Returns None when the variable is set but empty, or when the default file
    does not exist. A file named by the variable must exist.
    """
    if OVERRIDE_FILE_ENV in os.environ:
        value = os.environ[OVERRIDE_FILE_ENV]
        if not value:
            return None
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{OVERRIDE_FILE_ENV}={value}: profile override file not found; create it or unset the variable"
            )
        return path
    default = Path(root) / SYSTEM_OVERRIDE_FILE.relative_to("/")
    return default if default.is_file() else None


def merge_mappings(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``changes`` merged in: mappings merge key by key, other values replace."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_mappings(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_profile(
    name: Optional[Union[str, Path]] = None,
    *,
    root: Path = Path("/"),
    machine: Optional[str] = None,
    override_file: Union[Path, None, Literal[False]] = None,
) -> ProfileChoice:
    """Choose the profile in the order of the module docstring and merge the override file over it.

    ``override_file`` None looks the file up with ``override_file_path``,
    False skips it.

    Raises:
        ConfigError: a profile or the override file is missing or invalid;
            the message names the file and the key.
    """
    board = read_board_info(root, machine)
    path = override_file_path(root) if override_file is None else (override_file or None)

    changes: dict[str, Any] = {}
    override_text = ""
    if path is not None:
        data, override_text = _read_yaml(path, "profile override file")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of profile keys, got {type(data).__name__}")
        changes = dict(data)
    base_name = changes.pop("base", None)
    if "name" in changes:
        raise ConfigError(f"{path}: 'name' cannot be overridden; use 'base: NAME' to choose the profile")

    matched: list[tuple[str, str]] = []
    if name is not None:
        source, reason = "--profile", f"named explicitly: {name}"
        base = load_profile(name)
    elif base_name is not None:
        source, reason = "override file", f"'base: {base_name}' in {path}"
        base = load_profile(str(base_name))
    else:
        ranked = rank_profiles(board, [load_profile(n) for n in list_profiles()])
        matched = [(profile.name, why) for profile, why in ranked]
        if ranked:
            base, why = ranked[0]
            source, reason = "detected", f"{why} (priority {base.match.priority})"
        else:
            source = "fallback"
            reason = f"no profile matches this board ({board.machine}); {FALLBACK_PROFILE} is the fallback"
            logger.warning("%s", reason)
            base = load_profile(FALLBACK_PROFILE)

    profile = base
    if changes:
        data = merge_mappings(base.model_dump(mode="json", exclude_unset=True), changes)
        # Every key that can fail here comes from the override file, since the base profile loaded on its own.
        profile = parse_profile(data, origin=f"{path} (merged over profile {base.name})", source=(path, override_text))
        logger.info("device profile %s with overrides from %s", profile.name, path)

    logger.info("device profile %s (%s: %s)", profile.name, source, reason)
    return ProfileChoice(profile, source, reason, path, board, matched)
