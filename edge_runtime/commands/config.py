"""``edge-runtime config validate|schema``: check a configuration file, export its JSON Schema.

``validate`` loads the file exactly as ``edge-runtime run`` does, with
``${...}`` substitution, resolves the device profile and looks up each
model in the catalog and the store. It prints ``OK`` with a summary, or the
errors with their lines (exit status 78). A catalog model that is not
installed yet is a warning with the pull command. ``schema`` prints the JSON Schema of the
configuration, for editors and for checks in image builds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

# This module is edge_runtime.commands.config, so the configuration module is imported under another name.
from edge_runtime import config as config_module
from edge_runtime.capture.source import classify_spec, describe_spec
from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.model_references import check_models, model_references
from edge_runtime.models.store import ModelStore
from edge_runtime.profiles import ProfileChoice, resolve_profile
from edge_runtime.service.shutdown import SHUTDOWN_TIMEOUT_S
from edge_runtime.yaml_location import compose, line_of

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("/etc/edge-runtime/config.yaml")
# LoadCredential= in the unit reads each credential from this directory under its id.
CREDENTIAL_SOURCE_DIR = Path("/etc/edge-runtime/credentials")
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "config",
        help="validate a configuration file or print its JSON Schema",
        description="Validate a configuration file or print the JSON Schema of the configuration.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    validate = actions.add_parser(
        "validate",
        help="check a configuration file and print a summary",
        description=(
            "Load a configuration file as 'edge-runtime run' does, including ${...} substitution, and "
            "print OK with a summary, or every error with its line (exit status 78)."
        ),
    )
    file_options = validate.add_mutually_exclusive_group()
    file_options.add_argument(
        "file", nargs="?", type=Path, metavar="FILE", help=f"YAML config file (default: {DEFAULT_CONFIG})"
    )
    file_options.add_argument("--config", type=Path, metavar="FILE", help="the same as FILE, as 'edge-runtime run' spells it")
    validate.add_argument(
        "--credentials-directory",
        type=Path,
        metavar="DIR",
        help=(
            "directory that ${credential:ID} reads from (default: $CREDENTIALS_DIRECTORY, else "
            f"{CREDENTIAL_SOURCE_DIR}, where the unit's LoadCredential= reads the same ids)"
        ),
    )
    validate.set_defaults(handler=validate_command, sysexits=True)

    schema = actions.add_parser(
        "schema",
        help="print the JSON Schema of the configuration",
        description="Print the JSON Schema (draft 2020-12) of the configuration file.",
    )
    schema.add_argument("--output", "-o", type=Path, metavar="FILE", help="write the schema to FILE instead of stdout")
    schema.set_defaults(handler=schema_command, sysexits=True)


def credentials_directory(explicit: Optional[Path]) -> Optional[Path]:
    """Return the directory for ``${credential:ID}``: ``explicit``, ``$CREDENTIALS_DIRECTORY``, or the unit's source directory."""
    if explicit is not None:
        return explicit
    from_environment = os.environ.get("CREDENTIALS_DIRECTORY")
    if from_environment:
        return Path(from_environment)
    if CREDENTIAL_SOURCE_DIR.is_dir():
        return CREDENTIAL_SOURCE_DIR
    return None


def validate_command(args: argparse.Namespace) -> int:
    path: Path = args.file or args.config or DEFAULT_CONFIG
    if args.file is not None:
        missing_hint = "pass the path of an existing file"
    elif args.config is not None:
        missing_hint = "pass an existing file to --config"
    else:
        missing_hint = f"pass FILE, or create {DEFAULT_CONFIG} (edge-runtime service install writes a skeleton)"
    config = config_module.load_config(
        path,
        credentials_directory=credentials_directory(args.credentials_directory),
        missing_hint=missing_hint,
    )

    # Unknown names fail here as they fail 'edge-runtime run', with the available profiles listed.
    choice = resolve_profile(config.profile)
    warnings = check_config_models(config, choice, path)

    print(f"OK: {path}")
    for line in summarize(config, choice):
        print(f"  {line}")
    for warning in warnings + config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def check_config_models(config: config_module.Config, choice: ProfileChoice, path: Path) -> list[str]:
    """Look up every model the service would load; return a warning per model to pull.

    Raises ConfigError with a line per model that is neither in the catalog
    nor installed, since 'edge-runtime run' cannot get it.
    """
    store = ModelStore(config.store)
    store_flag = f" --store {config.store}" if config.store else ""
    result = check_models(model_references(config, choice.profile), store, store_flag)
    root = compose(path.read_text(encoding="utf-8"))

    def where(key: str) -> str:
        line = line_of(root, key.split(".")) if key.startswith("models.") else None
        return f"{path}:{line}: {key}" if line is not None else f"{path}: {key}"

    if result.unknown:
        lines = [f"{where(reference.key)}: {message}" for reference, message in result.unknown]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    return [f"{where(reference.key)}: {message}" for reference, message in result.not_installed]


def summarize(config: config_module.Config, choice: Optional[ProfileChoice] = None) -> list[str]:
    """Return one line per part of the configuration, without any secret.

    ``choice`` is the resolved device profile, shown with the reason it applies.
    """
    source = config.source
    models = config.models.role_models()
    roles = ", ".join(
        f"{role}={models[role] if role in models and models[role] else ('off' if role in models else 'profile')}"
        for role in config_module.ROLES
    )
    mqtt = config.mqtt
    if mqtt.password_file is not None:
        auth = f"user {mqtt.username}, password from {mqtt.password_file}"
    elif mqtt.password is not None:
        auth = f"user {mqtt.username}, password in the file (plain text)"
    elif mqtt.username is not None:
        auth = f"user {mqtt.username}, no password"
    else:
        auth = "anonymous"
    if choice is not None:
        profile = f"{choice.profile.name} ({choice.source}: {choice.reason})"
    else:
        profile = config.profile or "detected from this machine"

    return [
        f"source: {describe_spec(source.spec)} ({classify_spec(source.spec).value}), every_n {source.every_n}",
        f"profile: {profile}",
        f"models: {roles}",
        f"store: {config.store or 'default ($EDGE_RUNTIME_MODELS, $STATE_DIRECTORY/models, ...)'}",
        f"window: {config.window_s:g} s, stats every {config.stats_interval_s:g} s",
        f"mqtt: {mqtt.broker} as device {mqtt.resolved_device_id}, QoS {mqtt.qos}, {auth}",
    ]


def config_warnings(config: config_module.Config) -> list[str]:
    """Return settings that load but work against the service's shutdown bound."""
    warnings = []
    if config.mqtt.flush_timeout_s > SHUTDOWN_TIMEOUT_S / 2:
        warnings.append(
            f"mqtt.flush_timeout_s is {config.mqtt.flush_timeout_s:g} s, more than half of the "
            f"{SHUTDOWN_TIMEOUT_S:.0f} s shutdown bound; a slow flush can then be cut off. Keep it at "
            f"{SHUTDOWN_TIMEOUT_S / 2:.0f} s or less"
        )
    return warnings


def config_schema() -> dict[str, Any]:
    """Return the JSON Schema of ``Config``."""
    schema = config_module.Config.model_json_schema()
    return {"$schema": SCHEMA_DIALECT, **schema}


def schema_command(args: argparse.Namespace) -> int:
    text = json.dumps(config_schema(), indent=2, sort_keys=False) + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise EdgeRuntimeError(f"cannot write the schema to {args.output}: {exc.strerror}") from None
    logger.info("wrote the configuration schema to %s", args.output)
    return 0
