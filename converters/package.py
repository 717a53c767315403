"""Writing the model package: manifest, variant files, parity report and checksums.

The package directory contains ``manifest.yaml`` (every variant with its sha256,
size and parity outcome, an OpenVINO IR's ``.bin`` as a companion file), the parity report as
``parity.json`` and ``parity.txt``, and ``SHA256SUMS`` covering every file in
the directory, in the format ``sha256sum -c`` reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from edge_runtime.manifest import (
    MANIFEST_FILE,
    CompanionFile,
    Manifest,
    Variant,
    VariantParity as ManifestParity,
    dump_manifest,
    parse_manifest,
    sha256_file,
)

from converters.parity import ParityReport, VariantParity
from converters.source_model import SourceModel

logger = logging.getLogger(__name__)

PARITY_JSON = "parity.json"
PARITY_TEXT = "parity.txt"
CHECKSUMS = "SHA256SUMS"


@dataclass
class VariantFiles:
    """Files written for one variant; ``files[0]`` is the one the backend loads."""

    format: str
    precision: str
    stage: str
    files: list[Path]
    notes: list[str] = field(default_factory=list)
    parity: Optional[VariantParity] = None


def variant_entry(variant: VariantFiles, package_dir: Path) -> Variant:
    """Return the manifest entry of ``variant`` with sha256 and size of each file."""
    main, *companions = variant.files
    outcome = None
    if variant.parity is not None:
        outcome = ManifestParity(passed=variant.parity.passed, tolerance=variant.parity.tolerance,
                                 measured=variant.parity.measured())
    return Variant(
        format=variant.format,
        precision=variant.precision,
        stage=variant.stage,
        file=main.relative_to(package_dir).as_posix(),
        sha256=sha256_file(main),
        size_bytes=main.stat().st_size,
        companion_files=[
            CompanionFile(file=c.relative_to(package_dir).as_posix(), sha256=sha256_file(c), size_bytes=c.stat().st_size)
            for c in companions
        ],
        parity=outcome,
    )


def build_manifest(source: SourceModel, variants: list[VariantFiles], package_dir: Path,
                   version: Optional[str] = None) -> Manifest:
    """Return the package manifest, validated by the runtime's schema."""
    data = {
        "name": source.name,
        "version": version or "1",
        "task": source.task.value if hasattr(source.task, "value") else str(source.task),
        "description": source.description,
        "labels": source.labels,
        "input": source.input.model_dump(mode="json"),
        "outputs": [head.model_dump(mode="json", exclude_none=True) for head in source.outputs],
        "variants": [variant_entry(v, package_dir).model_dump(mode="json", exclude_none=True) for v in variants],
        "provenance": source.provenance.model_dump(mode="json", exclude_none=True),
        "parity": PARITY_JSON,
    }
    if data["labels"] is None:
        del data["labels"]
    return parse_manifest(data, origin=f"{package_dir}/{MANIFEST_FILE}")


def write_report(report: ParityReport, directory: Path) -> tuple[Path, Path]:
    """Write ``parity.json`` and ``parity.txt`` into ``directory``."""
    json_path = directory / PARITY_JSON
    text_path = directory / PARITY_TEXT
    json_path.write_text(report.to_json() + "\n", encoding="utf-8")
    text_path.write_text(report.to_table(), encoding="utf-8")
    return json_path, text_path


def write_package(manifest: Manifest, package_dir: Path) -> Path:
    """Write ``manifest.yaml`` and ``SHA256SUMS`` into ``package_dir``; return the manifest path."""
    manifest_path = package_dir / MANIFEST_FILE
    manifest_path.write_text(dump_manifest(manifest), encoding="utf-8")

    lines = []
    for path in sorted(p for p in package_dir.rglob("*") if p.is_file() and p.name != CHECKSUMS):
        lines.append(f"{sha256_file(path)}  {path.relative_to(package_dir).as_posix()}")
    (package_dir / CHECKSUMS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest_path
