"""One conversion: source file in, model package out.

The steps: load the source and cut face crops for calibration and parity.
Per stage, export the fp32 ONNX graph that the other targets start from,
write each requested target and precision, and check every variant against
the source. Then write the manifest, the parity report and the checksums.
The package is assembled in a staging directory beside the output and moved into place only
when every variant passed (or the user forced it), so a failed conversion
never leaves something that ``edge-runtime models import`` would accept.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from converters import calibration as calib
from converters.errors import ConversionError, ParityError
from converters.package import VariantFiles, build_manifest, write_package, write_report
from converters.parity import (
    DEFAULT_TOLERANCES,
    ParityReport,
    Tolerance,
    check_variant,
    machine_info,
    measure_latency,
    reference_run,
)
from converters.preprocess import make_batch
from converters.progress import track
from converters.source_model import SourceModel, Stage
from converters.sources import LoadOptions, load_source
from converters.targets import PRECISIONS, TARGETS
from converters.targets import onnx as onnx_target

logger = logging.getLogger(__name__)

EXTENSIONS = {"onnx": ".onnx", "openvino": ".xml", "tflite": ".tflite"}

# Below this many distinct faces a warning suggests --parity-photos; augmented copies of a
# few faces make a narrow test set.
MIN_DISTINCT_PARITY_FACES = 10


@dataclass
class ConvertRequest:
    """Everything one conversion needs; the CLI fills it from its options.

    Attributes:
        source: model file (or MTCNN weight directory).
        output: package directory to create; must be absent or empty unless ``overwrite``.
        targets, precisions: formats and precisions to write, every combination.
        calibration_photos: folder of face photos for int8 calibration; None uses the built-in set.
        parity_photos: folder of face photos for parity; None uses the calibration photos.
        calibration_count: crops fed to int8 calibration after augmentation.
        parity_count: crops the parity check runs on (originals first, then augmented).
        tolerances: per precision; missing precisions use DEFAULT_TOLERANCES.
        force: ship variants that fail parity or export, and mark them in the report.
        latency_runs: timed batch-1 runs per variant.
        ort_calibration: ONNX Runtime calibration method for int8 ONNX, or ``best`` to try each.
        nncf_preset: NNCF preset for int8 OpenVINO (performance, mixed), or ``best`` to try each.
        model_store: runtime model store whose face detector cuts the crops (default: the runtime's default).
        detector: a face detector to use instead of the runtime's.
    """

    source: Path
    output: Path
    options: LoadOptions = field(default_factory=LoadOptions)
    source_format: Optional[str] = None
    targets: Sequence[str] = TARGETS
    precisions: Sequence[str] = ("fp32",)
    opset: int = onnx_target.DEFAULT_OPSET
    calibration_photos: Optional[Path] = None
    parity_photos: Optional[Path] = None
    calibration_count: int = 64
    parity_count: int = 100
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    force: bool = False
    overwrite: bool = False
    latency_runs: int = 30
    ort_calibration: str = "best"
    nncf_preset: str = "best"
    version: Optional[str] = None
    model_store: Optional[Path] = None
    detector: Optional[calib.FaceDetector] = None


@dataclass
class ConvertResult:
    """The package directory and its parity report."""

    package_dir: Path
    report: ParityReport
    source: SourceModel
    export_errors: dict[str, str]


def _check_request(request: ConvertRequest) -> None:
    unknown_targets = [t for t in request.targets if t not in TARGETS]
    if unknown_targets:
        raise ConversionError(f"unknown target(s) {unknown_targets}; choose from {', '.join(TARGETS)}")
    unknown_precisions = [p for p in request.precisions if p not in PRECISIONS]
    if unknown_precisions:
        raise ConversionError(f"unknown precision(s) {unknown_precisions}; choose from {', '.join(PRECISIONS)}")

    output = Path(request.output)
    if output.exists() and any(output.iterdir()) and not request.overwrite:
        raise ConversionError(f"{output}: output directory is not empty; choose a new directory or pass --overwrite")


def _crop_sets(request: ConvertRequest) -> tuple[calib.CropSet, calib.CropSet]:
    """Cut the face crops for calibration and parity, before crop rules and augmentation."""
    detector = request.detector or calib.runtime_detector(request.model_store)
    if request.calibration_photos is not None:
        calibration_set = calib.crops_from_photos(calib.list_photos(request.calibration_photos), detector)
    else:
        calibration_set = calib.builtin_crops(detector)

    same_folder = (request.parity_photos is not None and request.calibration_photos is not None
                   and Path(request.parity_photos).resolve() == Path(request.calibration_photos).resolve())
    if request.parity_photos is not None and not same_folder:
        parity_set = calib.crops_from_photos(calib.list_photos(request.parity_photos), detector)
    else:
        parity_set = calibration_set

    if len(parity_set.crops) < MIN_DISTINCT_PARITY_FACES:
        logger.warning(
            "parity runs on %d distinct face(s) from %s plus augmented copies; pass --parity-photos with at "
            "least %d faces for a parity report that covers more than that", len(parity_set.crops),
            parity_set.origin, MIN_DISTINCT_PARITY_FACES,
        )
    return calibration_set, parity_set


def _stage_crops(request: ConvertRequest, spec, calibration_set: calib.CropSet,
                 parity_set: calib.CropSet) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Cut the calibration and parity crops by the stage's crop rule, then augment them to their counts."""
    calibration_crops = calib.augment(calib.crops_for_spec(calibration_set, spec), request.calibration_count, seed=0)
    parity_crops = calib.crops_for_spec(parity_set, spec)
    parity_crops = calib.augment(parity_crops, max(request.parity_count, len(parity_crops)), seed=1)
    return calibration_crops, parity_crops


def _file_stem(source: SourceModel, stage: Stage, precision: str) -> str:
    base = stage.name if len(source.stages) > 1 else source.name
    return f"{base}-{precision}"


def convert(request: ConvertRequest) -> ConvertResult:
    """Run one conversion and return the result.

    Raises:
        ConversionError: the source cannot be loaded or an export fails (unless forced).
        ParityError: a variant drifts past its tolerance (unless forced); the
            report is still written to the output directory.
    """
    _check_request(request)
    source = load_source(Path(request.source), request.options, request.source_format)
    for note in source.notes:
        logger.info("%s: %s", source.name, note)

    calibration_set, parity_set = _crop_sets(request)
    parity_count = max(request.parity_count, len(parity_set.crops))
    tolerances = {**DEFAULT_TOLERANCES, **request.tolerances}

    output = Path(request.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()

    report = ParityReport(
        model=source.name,
        source={"file": str(request.source), "kind": source.kind, "sha256": source.source_sha256, "notes": source.notes},
        crops={"count": parity_count, "distinct_faces": len(parity_set.crops), "origin": parity_set.origin,
               "detector": parity_set.detector, "crop_rule": source.input.crop.rule,
               "calibration_count": request.calibration_count, "calibration_origin": calibration_set.origin},
        machine=machine_info(),
        source_latency_ms={},
    )
    written: list[VariantFiles] = []
    export_errors: dict[str, str] = {}

    try:
        with tempfile.TemporaryDirectory(prefix="edge-convert-") as work:
            for stage in source.stages:
                _convert_stage(request, source, stage, Path(work), staging, calibration_set, parity_set,
                               tolerances, report, written, export_errors)

        failed = report.failed
        report.export_errors = export_errors
        if (failed or export_errors) and not request.force:
            output.mkdir(parents=True, exist_ok=True)
            json_path, _ = write_report(report, output)
            problems = [f"{v.file} ({v.tolerance}, measured {_measured(v)})" for v in failed]
            problems += [f"{name}: {error}" for name, error in export_errors.items()]
            error_class = ParityError if failed else ConversionError
            raise error_class(
                f"{len(problems)} variant(s) cannot ship: " + "; ".join(problems)
                + f". Report: {json_path}. Pass --force to ship the rest anyway (variants that fail parity "
                "are then included and marked in the report), or drop the precision or target that fails"
            )
        for variant in failed:
            variant.forced = True
            logger.warning("shipping %s although it fails parity (%s), because --force is set", variant.file, variant.tolerance)
        for name in export_errors:
            logger.warning("%s is left out of the package because its export failed", name)

        write_report(report, staging)
        manifest = build_manifest(source, written, staging, request.version)
        write_package(manifest, staging)

        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        if staging.exists():
            shutil.rmtree(staging)

    return ConvertResult(package_dir=output, report=report, source=source, export_errors=export_errors)


def _measured(variant) -> str:
    if variant.tolerance.startswith("top-1"):
        return f"{min(variant.top1_agreement.values()):.3f}"
    if "relative" in variant.tolerance:
        return f"{max(variant.max_rel_diff.values()):.2e}"
    return f"{max(variant.max_abs_diff.values()):.2e}"


def _convert_stage(request: ConvertRequest, source: SourceModel, stage: Stage, work: Path, staging: Path,
                   calibration_set: calib.CropSet, parity_set: calib.CropSet,
                   tolerances: dict[str, Tolerance], report: ParityReport,
                   written: list[VariantFiles], export_errors: dict[str, str]) -> None:
    spec = stage.spec_for(source.input)
    calibration_crops, parity_crops = _stage_crops(request, spec, calibration_set, parity_set)
    parity_batch = make_batch(parity_crops, spec)
    calibration_batch = make_batch(calibration_crops, spec)

    def calibration() -> Iterable[np.ndarray]:
        return calib.batches(calibration_batch, 8)

    reference_outputs = reference_run(stage.reference, parity_batch)
    if len(reference_outputs) != len(stage.output_names):
        raise ConversionError(
            f"stage {stage.name!r} returns {len(reference_outputs)} outputs but {len(stage.output_names)} "
            "output names were declared"
        )
    report.source_latency_ms[stage.name] = measure_latency(stage.reference, parity_batch[:1], request.latency_runs)[0]

    raw = work / f"{stage.name}.raw.onnx"
    fp32_onnx = work / f"{stage.name}.fp32.onnx"
    stage.export_onnx(raw, request.opset)
    opset = onnx_target.finalize_fp32(raw, fp32_onnx, stage.input_name, stage.output_names)
    logger.info("%s: fp32 ONNX graph written at opset %d", stage.name, opset)

    # onnx2tf runs once per stage, on first use, and every TFLite precision reuses its SavedModel.
    tflite_from_onnx = None
    if "tflite" in request.targets and stage.export_tflite is None:
        from converters.targets.tflite import OnnxToTflite

        tflite_from_onnx = OnnxToTflite(fp32_onnx, stage.input_name, stage.output_names,
                                        keep_nhwc=spec.preprocessing_in_graph)
    try:
        combinations = [(t, p) for t in request.targets for p in request.precisions]
        for target, precision in track(combinations, f"exporting {stage.name}", total=len(combinations), unit="variant"):
            stem = _file_stem(source, stage, precision)
            path = staging / f"{stem}{EXTENSIONS[target]}"
            try:
                files = _export(target, precision, stage, fp32_onnx, path, calibration, request, tflite_from_onnx)
            except ConversionError as exc:
                export_errors[path.name] = f"export failed: {exc}"
                logger.error("%s: export failed: %s", path.name, exc)
                continue
            except Exception as exc:  # converter libraries raise bare exceptions; record and go on
                export_errors[path.name] = f"export failed: {type(exc).__name__}: {exc}"
                logger.error("%s: export failed: %s: %s", path.name, type(exc).__name__, exc)
                logger.debug("export traceback", exc_info=True)
                continue
            heads = source.outputs if len(source.stages) == 1 else _stage_heads(source, stage)

            def check(candidate: Path):
                return check_variant(
                    candidate, target, precision, stage.name, parity_batch, reference_outputs, stage.output_names,
                    heads, tolerances[precision], request.latency_runs, staging,
                )

            try:
                if target == "onnx" and precision == "int8" and request.ort_calibration == "best":
                    writers = {_label(method, float_ends): _ort_writer(fp32_onnx, stage, calibration, method, float_ends)
                               for float_ends in (False, True) for method in ORT_METHODS}
                    parity, files = _best_variant(path, writers, check, "ORT calibration")
                elif target == "openvino" and precision == "int8" and request.nncf_preset == "best":
                    writers = {_label(preset, float_ends): _nncf_writer(fp32_onnx, calibration, preset, float_ends)
                               for float_ends in (False, True) for preset in NNCF_PRESETS}
                    parity, files = _best_variant(path, writers, check, "NNCF preset")
                else:
                    parity = check(files[0])
            except Exception as exc:  # a variant the runtime cannot load or whose outputs do not line up
                export_errors[path.name] = f"parity check failed: {type(exc).__name__}: {exc}"
                logger.error("%s: parity check failed: %s", path.name, exc)
                for file in files:
                    file.unlink(missing_ok=True)
                continue
            parity.notes.append(f"opset {opset}" if target == "onnx" else "")
            parity.notes = [n for n in parity.notes if n]
            report.variants.append(parity)
            written.append(VariantFiles(target, precision, stage.name, files))
            logger.info("%s: %s", parity.file, "pass" if parity.passed else f"FAIL ({parity.tolerance})")
    finally:
        if tflite_from_onnx is not None:
            tflite_from_onnx.close()


ORT_METHODS = ("minmax", "percentile", "entropy")
NNCF_PRESETS = ("performance", "mixed")

# The ``best`` search also tries each method or preset with the first convolution and the final
# classifier kept in float32 (see ``onnx_target.float_end_nodes`` and ``openvino.float_end_ops``).
FLOAT_ENDS_SUFFIX = "float-ends"


def _label(name: str, float_ends: bool) -> str:
    return f"{name}-{FLOAT_ENDS_SUFFIX}" if float_ends else name


def _best_variant(path: Path, writers: dict[str, Callable[[Path], list[Path]]], check, what: str):
    """Write one candidate per entry of ``writers``, keep the best by parity and return its parity.

    Best means the highest minimum top-1 agreement, then the smallest max abs
    diff. The kept candidate's files are renamed to ``path`` (and its
    companions), the others are deleted, and the parity notes list every score.
    """
    results = []
    for label, write in writers.items():
        candidate = path.with_name(f"{path.stem}.{label}{path.suffix}")
        try:
            files = write(candidate)
        except Exception as exc:  # one method failing (entropy on odd graphs) leaves the others
            logger.warning("%s: %s %s failed: %s", path.name, what, label, exc)
            continue
        parity = check(candidate)
        top1 = min(parity.top1_agreement.values()) if parity.top1_agreement else 1.0
        results.append((top1, -max(parity.max_abs_diff.values()), label, files, parity))
    if not results:
        raise ConversionError(f"{path.name}: every {what} failed")

    results.sort(key=lambda item: (item[0], item[1]), reverse=True)
    _, _, label, files, parity = results[0]
    for _, _, _, other_files, _ in results[1:]:
        for file in other_files:
            file.unlink(missing_ok=True)
    kept = []
    for file in files:
        target = path.with_suffix(file.suffix)
        file.rename(target)
        kept.append(target)
    parity.file = path.name
    summary = ", ".join(f"{name} top-1 {top1:.3f}" for top1, _, name, _, _ in results)
    parity.notes.append(f"{what} {label} chosen ({summary})")
    return parity, kept


def _ort_writer(fp32_onnx: Path, stage: Stage, calibration, method: str,
                float_ends: bool = False) -> Callable[[Path], list[Path]]:
    def write(candidate: Path) -> list[Path]:
        onnx_target.to_int8(fp32_onnx, candidate, stage.input_name, calibration, method, float_ends=float_ends)
        return [candidate]

    return write


def _nncf_writer(fp32_onnx: Path, calibration, preset: str, float_ends: bool = False) -> Callable[[Path], list[Path]]:
    from converters.targets.openvino import export_openvino

    def write(candidate: Path) -> list[Path]:
        return export_openvino(fp32_onnx, candidate, "int8", calibration, preset=preset, float_ends=float_ends)

    return write


def _stage_heads(source: SourceModel, stage: Stage):
    """Heads of a multi-stage model that belong to ``stage`` (by output name)."""
    return [h for h in source.outputs if isinstance(h.tensor, str) and h.tensor in stage.output_names] or [
        h for h in source.outputs if isinstance(h.tensor, int) and h.tensor < len(stage.output_names)
    ]


def _export(target: str, precision: str, stage: Stage, fp32_onnx: Path, path: Path,
            calibration: Callable[[], Iterable[np.ndarray]], request: ConvertRequest,
            tflite_from_onnx) -> list[Path]:
    """Write one variant and return its files, the one a backend loads first."""
    if target == "onnx":
        if precision == "fp32":
            shutil.copyfile(fp32_onnx, path)
        elif precision == "fp16":
            onnx_target.to_fp16(fp32_onnx, path)
        elif request.ort_calibration == "best":
            pass  # _best_variant writes the file after comparing the calibration methods
        else:
            onnx_target.to_int8(fp32_onnx, path, stage.input_name, calibration, request.ort_calibration)
        return [path]

    if target == "openvino":
        from converters.targets.openvino import export_openvino

        if precision == "int8" and request.nncf_preset == "best":
            return []  # _best_variant writes the files after comparing the presets
        return export_openvino(fp32_onnx, path, precision, calibration if precision == "int8" else None,
                               preset=request.nncf_preset)

    int8_calibration = calibration if precision == "int8" else None
    if stage.export_tflite is not None:
        stage.export_tflite(path, precision, int8_calibration)
        return [path]

    tflite_from_onnx.export(path, precision, int8_calibration, uint8_input=stage.input_dtype == "uint8")
    return [path]
