"""``edge-runtime profile``: which board this is, which device profile applies, and which backend each model gets.

The report is printed in full even when a role's model has an error (not in
the catalog, no usable backend, failed to load); the command then exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from edge_runtime.commands.options import add_profile_option, add_store_option
from edge_runtime.config import Config, load_config
from edge_runtime.errors import EdgeRuntimeError, ModelNotFoundError
from edge_runtime.loader import load_model
from edge_runtime.manifest import Manifest, Task
from edge_runtime.models.store import ModelStore
from edge_runtime.profiles import (
    ROLE_NAMES,
    BoardInfo,
    DeviceProfile,
    ProfileChoice,
    profile_json_schema,
    resolve_profile,
)
from edge_runtime.selection import Selection, Skip, explain_model

logger = logging.getLogger(__name__)

EXIT_ROLE_ERROR = 1

# CPU flags that decide which backend and precision run fast: vector widths, int8 dot products, fp16/bf16.
NOTABLE_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
    "amx_int8", "asimd", "fphp", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2",
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="show the board, the device profile that applies and the backend chosen for each model",
        description=(
            "Show what detection reads about this board, which device profile applies and why, and for each "
            "model role which backend and variant are used and which were skipped. By default every model is "
            "loaded and warmed up as the service does; --no-load explains the choice from manifests and "
            "installed backends only."
        ),
    )
    add_profile_option(parser)
    add_store_option(parser)
    parser.add_argument(
        "--config", type=Path, metavar="FILE",
        help="service config file whose profile, store, models and detection_interval apply, as with "
             "'edge-runtime run --config FILE'; --profile and --store override it",
    )
    parser.add_argument("--no-load", action="store_true", help="do not load models; plan from manifests only")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--schema", action="store_true", help="print the JSON Schema of device profile files and exit"
    )
    parser.set_defaults(handler=run)


def _manifest(store: ModelStore, name: str) -> tuple[Optional[Manifest], Optional[str]]:
    """Return the manifest of ``name`` from the store, else from the catalog with a note, else an error."""
    if store.is_installed(name):
        return store.open(name).manifest, None
    try:
        entry = store.catalog.get(name)
    except ModelNotFoundError as exc:
        return None, str(exc)
    return entry.manifest, f"not in the store; run 'edge-runtime models pull {name}'"


def _role_report(
    store: ModelStore,
    profile: DeviceProfile,
    role: Optional[str],
    name: str,
    load: bool,
    backend: Optional[str] = None,
    precision: Optional[str] = None,
) -> dict[str, Any]:
    """Return the backend choice for model ``name`` in ``role``. A role of None uses the profile's default order.

    ``backend`` and ``precision`` are those a config file requests.
    """
    report: dict[str, Any] = {"role": role, "model": name}
    if load and store.is_installed(name):
        try:
            with load_model(store.open(name), profile, backend=backend, precision=precision, role=role) as model:
                selection = model.selection
        except EdgeRuntimeError as exc:
            report["error"] = str(exc)
            return report
        report.update(_selection_fields(selection, list(selection.skipped) if selection else []))
        return report

    manifest, note = _manifest(store, name)
    if manifest is None:
        report["error"] = note
        return report
    if note:
        report["note"] = note
    selection, skips, notes = explain_model(manifest, profile, role, backend=backend, precision=precision)
    report.update(_selection_fields(selection, skips))
    if selection is None:
        report["error"] = "no backend installed here loads a variant of this model"
    if notes:
        report["notes"] = notes
    return report


def _selection_fields(selection: Optional[Selection], skips: list[Skip]) -> dict[str, Any]:
    if selection is None:
        return {"selection": None, "skipped": [skip.as_dict() for skip in skips]}
    fields = selection.as_dict()
    fields["warmed_up"] = selection.warmed_up
    if selection.notes:
        fields["notes"] = list(selection.notes)
    return {"selection": fields}


def _config_fields(config: Config, path: Path, profile: DeviceProfile) -> dict[str, Any]:
    """Return what a config file changes for the pipeline: role models, backends, precision and interval."""
    role_models = config.models.role_models()
    detector = role_models.get("detector", profile.models.detector)
    return {
        "file": str(path),
        "models": role_models,
        "backend": config.models.backend,
        "role_backends": config.models.role_backends(),
        "precision": config.models.precision,
        "detection_interval": config.detection_interval or profile.detection.interval,
        # The analyzer applies the profile's detector options to the profile's own detector only.
        "detector_options_applied": detector == profile.models.detector,
    }


def build_report(
    choice: ProfileChoice, store: ModelStore, load: bool, config: Optional[Config] = None,
    config_path: Optional[Path] = None,
) -> dict[str, Any]:
    """Return the board, the profile choice and one report per model role as a JSON-ready mapping.

    With ``config``, its role models, backends and precision replace the
    profile's as ``edge-runtime run`` applies them. ``other_models`` covers
    the installed packages that no role uses: a detector with the detector
    order, others with the profile's default order.
    """
    profile = choice.profile
    role_models = config.models.role_models() if config is not None else {}
    role_backends = config.models.role_backends() if config is not None else {}
    default_backend = config.models.backend if config is not None else None
    precision = config.models.precision if config is not None else None

    roles = []
    for role in ROLE_NAMES:
        name = role_models.get(role, getattr(profile.models, role))
        if name:
            backend = role_backends.get(role, default_backend)
            roles.append(_role_report(store, profile, role, name, load, backend, precision))

    used = {entry["model"] for entry in roles}
    others = []
    for package in store.installed():
        if package.name in used:
            continue
        role = "detector" if package.manifest.task == Task.FACE_DETECTION.value else None
        others.append(_role_report(store, profile, role, package.name, load, default_backend, precision))

    return {
        "board": choice.board.as_dict(),
        "profile": {
            "name": profile.name,
            "source": choice.source,
            "reason": choice.reason,
            "override_file": str(choice.override_file) if choice.override_file else None,
            "matched": [{"name": name, "reason": reason} for name, reason in choice.matched],
            "selection": profile.selection,
            "detector": profile.models.detector,
            "detection_interval": profile.detection.interval,
            "detector_options": dict(profile.detection.detector_options),
            "latency_budget_ms": dict(profile.latency_budget_ms),
        },
        "config": _config_fields(config, config_path or Path("<config>"), profile) if config is not None else None,
        "loaded": load,
        "models": roles,
        "other_models": others,
    }


def _board_lines(board: BoardInfo) -> list[str]:
    notable = [flag for flag in NOTABLE_FLAGS if flag in board.cpu_flags]
    cpu = " ".join(part for part in (board.cpu_model, f"({board.cpu_vendor})" if board.cpu_vendor else None) if part)
    return [
        "board",
        f"  device-tree model  {board.device_tree_model or '(none)'}",
        f"  Tegra release      {board.tegra_release or '(none)'}",
        f"  CPU                {cpu or '(unknown)'}",
        f"  CPU flags          {' '.join(notable) or '(none of note)'} ({len(board.cpu_flags)} flags in all)",
        f"  architecture       {board.machine}",
    ]


def _model_lines(entry: dict[str, Any]) -> list[str]:
    head = f"  {entry['role'] or '(no role)':<10} {entry['model']}"
    lines = []
    selection = entry.get("selection")
    if selection:
        variant = selection["variant"]
        files = variant if isinstance(variant, str) else ", ".join(f"{k}={v}" for k, v in variant.items())
        state = "warmed up" if selection["warmed_up"] else "not loaded"
        lines.append(f"{head}: {selection['backend']} {selection['precision']}, {files} ({state})")
        lines.append(f"  {'':<10} why: {selection['reason']}")
        skipped = selection["skipped"]
    else:
        lines.append(f"{head}: no backend")
        skipped = entry.get("skipped", [])
    for skip in skipped:
        precision = f" {skip['precision']}" if skip["precision"] else ""
        lines.append(f"  {'':<10} skipped {skip['backend']}{precision}: {skip['reason']}")
    for note in entry.get("notes", []) + (selection or {}).get("notes", []):
        lines.append(f"  {'':<10} note: {note}")
    if entry.get("note"):
        lines.append(f"  {'':<10} note: {entry['note']}")
    if entry.get("error"):
        lines.append(f"  {'':<10} error: {entry['error']}")
    return lines


def _config_lines(config: dict[str, Any]) -> list[str]:
    profile_order = "(the profile's order)"
    models = ", ".join(f"{role}={name or 'off'}" for role, name in config["models"].items())
    backend = config["backend"] or profile_order
    if config["role_backends"]:
        backend += ", per role " + ", ".join(f"{role}={name}" for role, name in config["role_backends"].items())

    lines = [
        f"config {config['file']}",
        f"  models             {models or '(the profile models)'}",
        f"  backend            {backend}",
        f"  precision          {config['precision'] or profile_order}",
        f"  detection interval {config['detection_interval']}",
    ]
    if not config["detector_options_applied"]:
        lines.append("  detector options   not applied: the config names another detector than the profile")
    return lines


def format_report(report: dict[str, Any], board: BoardInfo) -> str:
    """Return the text form of ``build_report``'s mapping."""
    profile = report["profile"]
    lines = _board_lines(board)
    lines.append(f"profile {profile['name']}")
    lines.append(f"  chosen by          {profile['source']}: {profile['reason']}")
    others = [m["name"] for m in profile["matched"] if m["name"] != profile["name"]]
    if others:
        lines.append(f"  also matched       {', '.join(others)}")
    lines.append(f"  override file      {profile['override_file'] or '(none)'}")
    lines.append(f"  backend selection  {profile['selection']}")
    lines.append(f"  detector           {profile['detector']}")
    lines.append(f"  detection interval {profile['detection_interval']}")
    options = ", ".join(f"{key} {value}" for key, value in profile["detector_options"].items())
    lines.append(f"  detector options   {options or '(the detector defaults)'}")
    budgets = ", ".join(f"{stage} {ms:g} ms" for stage, ms in profile["latency_budget_ms"].items())
    lines.append(f"  latency budget     {budgets or '(none)'}")
    if report["config"] is not None:
        lines.extend(_config_lines(report["config"]))
    lines.append("models" + ("" if report["loaded"] else " (planned from manifests, not loaded)"))
    for entry in report["models"]:
        lines.extend(_model_lines(entry))
    if report["other_models"]:
        lines.append("other installed models (no role uses them)")
        for entry in report["other_models"]:
            lines.extend(_model_lines(entry))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.schema:
        print(json.dumps(profile_json_schema(), indent=2))
        return 0

    config = load_config(args.config) if args.config else None
    profile_name = args.profile or (config.profile if config is not None else None)
    store = args.store or (config.store if config is not None else None)

    choice = resolve_profile(profile_name)
    if args.profile is None and config is not None and config.profile is not None:
        choice = replace(choice, source="config", reason=f"'profile: {config.profile}' in {args.config}")
    report = build_report(choice, ModelStore(store), load=not args.no_load, config=config, config_path=args.config)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report, choice.board))

    failed = [entry for entry in report["models"] if entry.get("error")]
    if failed:
        roles = ", ".join(f"{entry['role']} ({entry['model']})" for entry in failed)
        logger.error("model errors in roles %s; the report above gives each error", roles)
    return EXIT_ROLE_ERROR if failed else 0
