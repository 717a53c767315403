"""``edge-runtime models``: list, pull, verify, import, locate and remove model packages."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

from edge_runtime.errors import ConfigError
from edge_runtime.manifest import Manifest
from edge_runtime.models import STARTER_MODELS, ModelPackage, ModelStore
from edge_runtime.models.catalog import CatalogEntry, manifest_files
from edge_runtime.commands.options import add_store_option
from edge_runtime.models.store import install_hint


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list, pull, verify, import and remove model packages",
        description="Manage the local model store and the catalog of downloadable models.",
    )
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION", required=True)

    store_option = argparse.ArgumentParser(add_help=False)
    add_store_option(store_option)
    json_option = argparse.ArgumentParser(add_help=False)
    json_option.add_argument("--json", action="store_true", help="print JSON instead of text")
    pin_options = argparse.ArgumentParser(add_help=False)
    pin_options.add_argument(
        "--sha256",
        metavar="HEX",
        help="sha256 the file must have, for a catalog file that has none pinned",
    )
    pin_options.add_argument(
        "--accept-unpinned",
        action="store_true",
        help="install a file that has no pinned sha256 and record the hash it arrives with",
    )
    pin_options.add_argument("--force", action="store_true", help="fetch or replace files that are already installed")

    listing = actions.add_parser(
        "list", parents=[store_option, json_option], help="show catalog models and installed packages"
    )
    listing.set_defaults(handler=run_list)

    pull = actions.add_parser(
        "pull", parents=[store_option, json_option, pin_options], help="download catalog models into the store"
    )
    pull.add_argument("names", nargs="*", metavar="NAME", help="catalog model names")
    pull.add_argument("--starter", action="store_true", help=f"pull the starter set: {', '.join(STARTER_MODELS)}")
    pull.set_defaults(handler=run_pull)

    verify = actions.add_parser(
        "verify", parents=[store_option, json_option], help="check installed files against their sha256"
    )
    verify.add_argument("names", nargs="*", metavar="NAME", help="installed models to check (default: all)")
    verify.set_defaults(handler=run_verify)

    importing = actions.add_parser(
        "import",
        parents=[store_option, json_option, pin_options],
        help="install a package directory or a downloaded model file",
    )
    importing.add_argument(
        "path", type=Path, metavar="PATH", help="package directory with manifest.yaml, or one catalog model file"
    )
    importing.set_defaults(handler=run_import)

    locate = actions.add_parser("path", parents=[store_option], help="print the directory of a model package")
    locate.add_argument("name", metavar="NAME")
    locate.set_defaults(handler=run_path)

    remove = actions.add_parser("remove", parents=[store_option], help="delete installed model packages")
    remove.add_argument("names", nargs="+", metavar="NAME")
    remove.set_defaults(handler=run_remove)


def _store(args: argparse.Namespace) -> ModelStore:
    return ModelStore(args.store)


def _human_size(size: Optional[int]) -> str:
    if size is None:
        return "?"
    if size < 1 << 20:
        return f"{size / 1024:.0f} KiB"
    return f"{size / (1 << 20):.1f} MiB"


# Appended to a format/precision in the table when a variant of it failed the converter's parity check.
FAILED_PARITY_MARK = "*"


def _formats(manifest: Manifest) -> str:
    failed = {(v.format, v.precision) for v in manifest.variants if v.failed_parity}
    labels = []
    for variant in manifest.variants:
        mark = FAILED_PARITY_MARK if (variant.format, variant.precision) in failed else ""
        labels.append(f"{variant.format}/{variant.precision}{mark}")
    return ",".join(dict.fromkeys(labels))


def _package_size(manifest: Manifest) -> Optional[int]:
    sizes = [size for _, _, size in manifest_files(manifest)]
    return None if any(size is None for size in sizes) else sum(sizes)  # type: ignore[arg-type]


def _row(entry: Optional[CatalogEntry], package: Optional[ModelPackage]) -> dict[str, Any]:
    manifest = package.manifest if package is not None else entry.manifest  # type: ignore[union-attr]
    return {
        "name": manifest.name,
        "task": manifest.task,
        "formats": _formats(manifest),
        "size_bytes": _package_size(manifest) if package is not None else entry.size_bytes,  # type: ignore[union-attr]
        "license": manifest.provenance.license,
        "in_catalog": entry is not None,
        "pinned": entry.pinned if entry is not None else None,
        "installed": package is not None,
        "path": str(package.directory) if package is not None else None,
        "failed_parity": [v.file for v in manifest.variants if v.failed_parity],
    }


def run_list(args: argparse.Namespace) -> int:
    store = _store(args)
    installed = {package.name: package for package in store.installed()}
    catalog = store.catalog

    names = sorted(set(catalog.names()) | set(installed))
    rows = [_row(catalog.get(name) if name in catalog else None, installed.get(name)) for name in names]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0

    print(f"{'NAME':<38} {'TASK':<15} {'FORMATS':<22} {'SIZE':>9}  {'PINNED':<7} {'INSTALLED':<10} LICENSE")
    for row in rows:
        if row["pinned"] is None:
            pinned = "local"
        else:
            pinned = "yes" if row["pinned"] else "no"
        print(
            f"{row['name']:<38} {row['task']:<15} {row['formats']:<22} {_human_size(row['size_bytes']):>9}  "
            f"{pinned:<7} {'yes' if row['installed'] else 'no':<10} {row['license']}"
        )
    if any(row["failed_parity"] for row in rows):
        print(f"{FAILED_PARITY_MARK} failed the converter's parity check (shipped with --force): used only when its "
              "precision is requested by name")
    print(f"store: {store.root}", file=sys.stderr)
    return 0


def _package_json(package: ModelPackage) -> dict[str, Any]:
    return {
        "name": package.name,
        "path": str(package.directory),
        "files": {file: sha256 for file, sha256, _ in manifest_files(package.manifest)},
    }


def run_pull(args: argparse.Namespace) -> int:
    names = list(dict.fromkeys([*(STARTER_MODELS if args.starter else ()), *args.names]))
    if not names:
        raise ConfigError("name at least one model to pull, or pass --starter; 'edge-runtime models list' shows them")

    store = _store(args)
    if args.sha256 is not None:
        if len(names) != 1:
            raise ConfigError(f"--sha256 pins the file of one model, but {len(names)} were named; pull them one by one")
        packages = [store.pull(names[0], sha256=args.sha256, accept_unpinned=args.accept_unpinned, force=args.force)]
    else:
        packages = store.pull_many(names, accept_unpinned=args.accept_unpinned, force=args.force)

    if args.json:
        print(json.dumps([_package_json(package) for package in packages], indent=2))
    else:
        for package in packages:
            print(f"{package.name}: installed in {package.directory}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    store = _store(args)
    names = args.names or [package.name for package in store.installed()]
    if not names:
        print(f"no models installed in {store.root}", file=sys.stderr)

    report = {name: store.verify(name) for name in names}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, problems in report.items():
            if not problems:
                print(f"{name}: ok")
            for problem in problems:
                print(f"{name}: {problem}")
    return 1 if any(report.values()) else 0


def run_import(args: argparse.Namespace) -> int:
    store = _store(args)
    package = store.import_package(
        args.path, sha256=args.sha256, accept_unpinned=args.accept_unpinned, force=args.force
    )
    if args.json:
        print(json.dumps(_package_json(package), indent=2))
    else:
        print(f"{package.name}: installed in {package.directory}")
    return 0


def run_path(args: argparse.Namespace) -> int:
    store = _store(args)
    directory = store.path(args.name)
    print(directory)
    if not store.is_installed(args.name) and args.name in store.catalog:
        print(f"{args.name} is not installed yet; to install it, {install_hint(store.catalog.get(args.name))}",
              file=sys.stderr)
    return 0


def run_remove(args: argparse.Namespace) -> int:
    store = _store(args)
    for name in args.names:
        store.remove(name)
        print(f"{name}: removed from {store.root}")
    return 0
