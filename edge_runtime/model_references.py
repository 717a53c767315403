"""Check the model names a configuration uses against the catalog and the model store.

``edge-runtime run`` fails with exit status 65 when a model is missing, so
``config validate`` and ``service status`` run this check to report the same
problem before the service starts.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from typing import Optional

from edge_runtime.config import ROLES, Config
from edge_runtime.models.store import ModelStore, install_hint
from edge_runtime.profiles import DeviceProfile

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelReference:
    """One model name and where it comes from.

    ``key`` is the configuration key (``models.detector``), or
    ``profile NAME models.detector`` for a role the configuration leaves to
    the device profile.
    """

    role: str
    name: str
    key: str
    from_config: bool


@dataclass
class ModelCheck:
    """The result of ``check_models``: one message per unknown model and per model to pull."""

    unknown: list[tuple[ModelReference, str]] = field(default_factory=list)
    not_installed: list[tuple[ModelReference, str]] = field(default_factory=list)


def model_references(config: Config, profile: Optional[DeviceProfile] = None) -> list[ModelReference]:
    """Return the model of every role that is on: the configuration's choice, else the profile's default.

    Without ``profile`` only the configuration's own choices are returned.
    """
    chosen = config.models.role_models()
    references = []
    for role in ROLES:
        if role in chosen:
            name = chosen[role]
            if name is not None:
                references.append(ModelReference(role, name, f"models.{role}", from_config=True))
        elif profile is not None:
            name = getattr(profile.models, role)
            if name:
                key = f"profile {profile.name} models.{role}"
                references.append(ModelReference(role, name, key, from_config=False))
    return references


def check_models(references: list[ModelReference], store: ModelStore, store_flag: str = "") -> ModelCheck:
    """Sort each reference into fine, unknown (neither in the catalog nor installed) or not installed.

    ``store_flag`` (e.g. `` --store DIR``) is added to the pull commands in
    the messages.
    """
    result = ModelCheck()
    known = sorted(set(store.catalog.names()) | {package.name for package in store.installed()})
    for reference in references:
        if store.is_installed(reference.name):
            continue

        if reference.name not in store.catalog:
            close = difflib.get_close_matches(reference.name, known, n=1, cutoff=0.6)
            suggestion = f"did you mean {close[0]!r}? " if close else ""
            result.unknown.append((
                reference,
                f"model {reference.name!r} is neither in the catalog nor installed in {store.root}; "
                f"{suggestion}'edge-runtime models list' shows the known names",
            ))
            continue

        hint = install_hint(store.catalog.get(reference.name))
        if store_flag:
            hint = hint.replace(f"models pull {reference.name}", f"models pull {reference.name}{store_flag}", 1)
        result.not_installed.append(
            (reference, f"model {reference.name!r} is not installed in {store.root}; {hint}")
        )
    return result
