"""Device profiles: which backend, precision and models a kind of board uses.

A profile is a YAML file validated by ``DeviceProfile``. Profiles are looked
up by name in, in order: the directories of ``$EDGE_RUNTIME_PROFILES``
(separated by ``os.pathsep``), ``/etc/edge-runtime/profiles``, the
``device_profiles/`` directory of a source checkout, and
``<prefix>/share/edge-runtime/device_profiles`` of an installed wheel. The
first ``<name>.yaml`` found wins, so a file in ``/etc`` overrides a shipped one.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_runtime.backends.base import SessionOptions
from edge_runtime.errors import ConfigError
from edge_runtime.manifest import Precision

logger = logging.getLogger(__name__)

PROFILES_ENV = "EDGE_RUNTIME_PROFILES"
SYSTEM_PROFILE_DIR = Path("/etc/edge-runtime/profiles")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
TEGRA_RELEASE = Path("/etc/nv_tegra_release")


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


class DeviceProfile(_Strict):
    """Settings for one kind of device, read from ``device_profiles/<name>.yaml``."""

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9._-]*$", description="Profile name, equal to the file stem")
    description: str = Field("", description="What hardware the profile is for and why it is set up this way")
    backends: list[str] = Field(
        ..., min_length=1, description="Backend names in order of preference; unavailable ones are skipped"
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
            "Options per backend name. 'device' sets SessionOptions.device (OpenVINO: CPU, GPU, NPU); every "
            "other key goes to SessionOptions.extra, e.g. onnxruntime 'providers' or an OpenVINO property "
            "such as INFERENCE_PRECISION_HINT"
        ),
    )
    models: PipelineModels = Field(..., description="Default models of the capture pipeline by role")
    overrides: dict[str, ModelOverride] = Field(
        default_factory=dict, description="Backend or precision forced per model package name"
    )

    @model_validator(mode="after")
    def _check_names(self) -> "DeviceProfile":
        if len(set(self.backends)) != len(self.backends):
            raise ValueError(f"profile {self.name!r}: backends {self.backends} lists a backend twice")
        if len(set(self.precisions)) != len(self.precisions):
            raise ValueError(f"profile {self.name!r}: precisions {self.precisions} lists a precision twice")

        known = set(self.backends) | {o.backend for o in self.overrides.values() if o.backend}
        stray = sorted(set(self.backend_options) - known)
        if stray:
            raise ValueError(
                f"profile {self.name!r}: backend_options names {stray}, which neither 'backends' nor an "
                "override uses; add the backend to 'backends' or drop its options"
            )
        return self

    def session_options(self, backend: str) -> SessionOptions:
        """Return the SessionOptions this profile gives ``backend``."""
        options = dict(self.backend_options.get(backend, {}))
        device = str(options.pop("device", "CPU"))
        return SessionOptions(num_threads=self.num_threads, device=device, extra=options)

    def override_for(self, model_name: str) -> Optional[ModelOverride]:
        """Return the override of ``model_name``, or None."""
        return self.overrides.get(model_name)


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


def parse_profile(data: object, origin: str = "<profile>") -> DeviceProfile:
    """Validate a profile given as a mapping; ``origin`` names it in errors.

    Raises:
        ConfigError: the data violates the profile schema.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<top>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{origin}: invalid device profile: {problems}") from exc


def load_profile(name_or_path: Union[str, Path]) -> DeviceProfile:
    """Load a profile by name (searched as in ``profile_dirs()``) or from a YAML file path.

    A value with a path separator or a ``.yaml``/``.yml`` suffix is a path.
    A profile read by name must carry that name in its ``name`` field.

    Raises:
        ConfigError: the profile is not found, unreadable or invalid.
    """
    text = str(name_or_path)
    is_path = isinstance(name_or_path, Path) or os.sep in text or "/" in text or text.endswith((".yaml", ".yml"))
    path = Path(text).expanduser() if is_path else _find_profile(text)
    if is_path and not path.is_file():
        raise ConfigError(f"device profile file {path} not found")

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the device profile: {exc}") from exc

    profile = parse_profile(data, origin=str(path))
    if not is_path and profile.name != text:
        raise ConfigError(f"{path}: the file is found as {text!r} but names profile {profile.name!r}; make them equal")
    logger.debug("device profile %s from %s", profile.name, path)
    return profile


# --------------------------------------------------------------------------
# Detecting the board


def _read_text(path: Path) -> Optional[str]:
    try:
        # The device-tree model string ends with a NUL byte.
        return path.read_bytes().decode("utf-8", errors="replace").rstrip("\x00\n ")
    except OSError:
        return None


def detect_profile_name(
    *,
    device_tree_model: Path = DEVICE_TREE_MODEL,
    tegra_release: Path = TEGRA_RELEASE,
    machine: Optional[str] = None,
) -> str:
    """Return the name of the profile that fits this machine.

    A Raspberry Pi is recognized by ``/proc/device-tree/model``, a Jetson by
    ``/etc/nv_tegra_release``; anything else is chosen by the CPU
    architecture (``platform.machine()``). The arguments exist so that tests
    can point at other files.
    """
    model = _read_text(device_tree_model)
    if model and model.startswith("Raspberry Pi"):
        if model.startswith("Raspberry Pi 5"):
            return "raspberry-pi-5"
        if not model.startswith("Raspberry Pi 4"):
            logger.warning("no profile for %r; using raspberry-pi-4, the closest one", model)
        return "raspberry-pi-4"

    if tegra_release.is_file():
        if model and "Orin Nano" not in model:
            logger.warning("no profile for Jetson %r; using jetson-orin-nano, the only Jetson profile", model)
        return "jetson-orin-nano"

    arch = (machine if machine is not None else platform.machine()).lower()
    if arch in ("x86_64", "amd64", "i686", "i386", "x86"):
        return "generic-x86_64"
    if arch in ("aarch64", "arm64", "armv7l", "armv8l"):
        return "generic-aarch64"

    logger.warning("no profile for CPU architecture %r; using generic-x86_64 settings", arch)
    return "generic-x86_64"


def detect_profile(**kwargs: Any) -> DeviceProfile:
    """Load the profile that fits this machine; see ``detect_profile_name`` for the rule."""
    name = detect_profile_name(**kwargs)
    logger.info("device profile %s chosen for this machine", name)
    return load_profile(name)
