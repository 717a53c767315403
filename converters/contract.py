"""Manifest facts of a source: catalog look-up by sha256 and the user's declarations.

A source file whose sha256 is pinned in the runtime's catalog
(``edge_runtime/models/catalog/*.yaml``) brings its manifest along: task,
labels, input contract, output heads and provenance. Otherwise the loader
infers the shapes and the user's options fill in the rest. Checks here turn
disagreements (an input size the graph does not accept, more labels than
outputs) into ModelContractError before any export starts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import yaml

from edge_runtime.manifest import InputSpec, Manifest, Normalization, OutputHead, parse_manifest

from converters.errors import ModelContractError
from converters.sources import LoadOptions

logger = logging.getLogger(__name__)

def _catalog_dir() -> Path:
    from edge_runtime.models.catalog import builtin_catalog_dir

    return builtin_catalog_dir()


def catalog_manifest_for(sha256: str) -> Optional[tuple[Manifest, str]]:
    """Return the catalog manifest and variant file whose sha256 equals ``sha256``, or None."""
    for path in sorted(_catalog_dir().glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            manifest = parse_manifest(data.get("manifest"), origin=str(path))
        except Exception as exc:  # a broken catalog entry must not stop a conversion
            logger.debug("skipping catalog entry %s: %s", path, exc)
            continue
        for variant in manifest.variants:
            if variant.sha256 == sha256:
                return manifest, variant.file
    return None


def catalog_manifest_named(name: str) -> Manifest:
    """Return the manifest of the catalog entry called ``name``.

    Raises:
        ModelContractError: no catalog entry has that name.
    """
    names = []
    for path in sorted(_catalog_dir().glob("*.yaml")):
        try:
            manifest = parse_manifest(yaml.safe_load(path.read_text(encoding="utf-8")).get("manifest"), origin=str(path))
        except Exception as exc:  # a broken catalog entry must not stop a conversion
            logger.debug("skipping catalog entry %s: %s", path, exc)
            continue
        if manifest.name == name:
            return manifest
        names.append(manifest.name)
    raise ModelContractError(f"no catalog entry is named {name!r}; known entries: {', '.join(names)}")


def catalog_base(sha256: str, options: LoadOptions, path: Path) -> Optional[Manifest]:
    """Return the catalog manifest whose facts the package takes: named by the user, else matched by sha256."""
    named = options.extra.get("catalog_entry")
    if named:
        logger.info("%s: taking the input contract and outputs from catalog entry %r", path, named)
        return catalog_manifest_named(named)
    found = catalog_manifest_for(sha256)
    if found is not None:
        logger.info("%s: sha256 matches catalog model %r; using its input contract and outputs", path, found[0].name)
        return found[0]
    return None


def catalog_pins(sha256: str) -> bool:
    """Return True when some catalog entry pins a file with this sha256."""
    return catalog_manifest_for(sha256) is not None


def build_input_spec(options: LoadOptions, *, width: int, height: int, color: str, layout: str,
                     scale: float, mean: Sequence[float], std: Sequence[float],
                     interpolation: str = "area", base: Optional[InputSpec] = None) -> InputSpec:
    """Return the input contract: the user's options override ``base`` (a catalog entry), which overrides the inferred values."""
    if options.input_size is not None:
        width, height = options.input_size
    if base is not None:
        scale, mean, std = base.normalization.scale, base.normalization.mean, base.normalization.std
        color, layout = base.color, base.layout
    normalization = Normalization(
        scale=options.scale if options.scale is not None else scale,
        mean=list(options.mean) if options.mean is not None else list(mean),
        std=list(options.std) if options.std is not None else list(std),
    )
    fields = dict(base.model_dump()) if base is not None else {}
    fields.update(
        width=width,
        height=height,
        color=options.color or color,
        layout=options.layout or layout,
        dtype="float32",
        normalization=normalization.model_dump(),
        interpolation=fields.get("interpolation", interpolation),
        preprocessing_in_graph=False,
    )
    try:
        return InputSpec.model_validate(fields)
    except ValueError as exc:
        raise ModelContractError(f"invalid input contract: {exc}") from exc


def check_fixed_size(declared: Optional[tuple[int, int]], actual: tuple[Optional[int], Optional[int]], path: Path) -> None:
    """Raise when the user's ``--input-size`` differs from a graph's fixed width and height."""
    if declared is None:
        return
    width, height = actual
    if width is not None and height is not None and (width, height) != tuple(declared):
        raise ModelContractError(
            f"{path}: --input-size {declared[0]}x{declared[1]} does not match the model's fixed input "
            f"of {width}x{height} pixels; drop --input-size or pass {width}x{height}"
        )


def check_labels(labels: Optional[Sequence[str]], width: int, head: str, path: Path) -> None:
    """Raise when ``labels`` and the ``width`` of a class head disagree."""
    if labels is None:
        return
    if len(labels) != width:
        raise ModelContractError(
            f"{path}: {len(labels)} labels given ({', '.join(labels)}) but the {head!r} output has "
            f"{width} values; pass exactly {width} labels in output order"
        )


def class_head(name: str, width: int, labels: Optional[Sequence[str]], kind: str, tensor: int | str = 0,
               columns: Optional[tuple[int, int]] = None) -> OutputHead:
    """Return an OutputHead for a classifier, checking the label count."""
    span = (columns[1] - columns[0]) if columns else width
    if labels is not None and len(labels) != span:
        raise ModelContractError(
            f"{len(labels)} labels given for the {name!r} output, which has {span} values; "
            f"pass exactly {span} labels in output order"
        )
    return OutputHead(name=name, tensor=tensor, columns=columns, kind=kind,
                      labels=list(labels) if labels is not None else None)
