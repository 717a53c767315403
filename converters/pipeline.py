"""One conversion: source file in, model package out.

The steps: load the source and cut face crops for calibration, selection and
parity, from different photos (see ``_crop_sets``).
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
from converters import stage_inputs
from converters.errors import ConversionError, ParityError
from converters.package import VariantFiles, build_manifest, write_package, write_report
from converters.parity import (
    DEFAULT_TOLERANCES,
    MIN_DISTINCT_PARITY_FACES,
    ParityReport,
    Tolerance,
    check_variant,
    machine_info,
    measure_latency,
    reference_run,
)
from converters.preprocess import make_batch
from converters.progress import track
from converters.selection import SelectionSet
from converters.source_model import SourceModel, Stage
from converters.sources import LoadOptions, load_source
from converters.targets import PRECISIONS, TARGETS
from converters.targets import onnx as onnx_target

logger = logging.getLogger(__name__)

EXTENSIONS = {"onnx": ".onnx", "openvino": ".xml", "tflite": ".tflite"}

# Photo roles when the calibration photos are split. With separate parity photos every fourth
# calibration photo goes to the selection set; without them every fourth goes to parity as well.
SPLIT_WITH_PARITY_PHOTOS = ("calibration", "calibration", "calibration", "selection")
SPLIT_WITHOUT_PARITY_PHOTOS = ("calibration", "selection", "calibration", "parity")
# Fewer calibration photos than this are not split; the three sets then share their faces.
MIN_PHOTOS_TO_SPLIT = 8
# Samples per calibration batch handed to the quantizers.
CALIBRATION_BATCH = 8


@dataclass
class ConvertRequest:
    """Everything one conversion needs; the CLI fills it from its options.

    Attributes:
        source: model file (or MTCNN weight directory).
        output: package directory to create; must be absent or empty unless ``overwrite``.
        targets, precisions: formats and precisions to write, every combination.
        calibration_photos: folder of face photos for int8 calibration and candidate selection; None
            uses the built-in set.
        parity_photos: folder of face photos for parity; None keeps a quarter of the calibration
            photos out for parity instead.
        calibration_count: crops fed to int8 calibration after augmentation.
        selection_count: crops that int8 candidates are ranked and tuned on, after augmentation.
        parity_count: crops the parity check runs on (originals first, then augmented).
        tolerances: per precision; missing precisions use DEFAULT_TOLERANCES.
        force: ship variants that fail parity or export, and mark them in the report.
        latency_runs: timed batch-1 runs per variant.
        ort_calibration: ONNX Runtime calibration method for int8 ONNX, or ``best`` to try each.
        nncf_preset: NNCF preset for int8 OpenVINO (performance, mixed), or ``best`` to try each.
        tflite_recipe: int8 TFLite recipe (full-int8, float-ends), or ``best`` to try each.
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
    selection_count: int = 256
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    force: bool = False
    overwrite: bool = False
    latency_runs: int = 30
    ort_calibration: str = "best"
    nncf_preset: str = "best"
    tflite_recipe: str = "best"
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


@dataclass
class CropSets:
    """Faces for calibration, for ranking int8 candidates (selection) and for the parity report.

    ``held_out`` is True when no photo is in two sets. It is False only when
    the calibration photos were too few to split.
    """

    calibration: calib.CropSet
    selection: calib.CropSet
    parity: calib.CropSet
    held_out: bool


def _crop_sets(request: ConvertRequest) -> CropSets:
    """Cut the face crops for calibration, selection and parity, before crop rules and augmentation.

    Selection photos are taken from the calibration photos. Parity photos
    are the ``parity_photos`` folder when it differs from the calibration
    folder, else every fourth calibration photo. Below MIN_PHOTOS_TO_SPLIT
    calibration photos (the built-in set has one) the three sets share
    their faces and only differ in augmentation, and a warning is logged.
    """
    detector = request.detector or calib.runtime_detector(request.model_store)
    if request.calibration_photos is not None:
        calibration_set = calib.crops_from_photos(calib.list_photos(request.calibration_photos), detector)
    else:
        calibration_set = calib.builtin_crops(detector)

    same_folder = (request.parity_photos is not None and request.calibration_photos is not None
                   and Path(request.parity_photos).resolve() == Path(request.calibration_photos).resolve())
    separate_parity = request.parity_photos is not None and not same_folder
    photo_count = len(calib.photos_of(calibration_set))
    roles = SPLIT_WITH_PARITY_PHOTOS if separate_parity else SPLIT_WITHOUT_PARITY_PHOTOS

    if photo_count >= MIN_PHOTOS_TO_SPLIT:
        parts = calib.partition_by_photo(calibration_set, roles)
        sets = CropSets(parts["calibration"], parts["selection"], parts.get("parity", calibration_set), True)
    else:
        logger.warning(
            "only %d calibration photo(s) in %s, fewer than the %d needed to split them; int8 candidates are "
            "selected on the calibration faces, so the chosen variant's int8 agreement is optimistic",
            photo_count, calibration_set.origin, MIN_PHOTOS_TO_SPLIT,
        )
        sets = CropSets(calibration_set, calibration_set, calibration_set, separate_parity)
    if separate_parity:
        sets.parity = calib.crops_from_photos(calib.list_photos(request.parity_photos), detector)

    if len(sets.parity.crops) < MIN_DISTINCT_PARITY_FACES:
        logger.warning(
            "parity runs on %d distinct face(s) from %s plus augmented copies; pass --parity-photos with at "
            "least %d faces for a parity report that covers more than that", len(sets.parity.crops),
            sets.parity.origin, MIN_DISTINCT_PARITY_FACES,
        )
    return sets


@dataclass
class StageBatches:
    """Input batches of one stage, in its layout: calibration, selection and parity."""

    calibration: np.ndarray
    selection: np.ndarray
    parity: np.ndarray
    origin: str


def _stage_batches(request: ConvertRequest, stage: Stage, spec, sets: CropSets, mtcnn) -> StageBatches:
    """Return the stage's batches: face crops cut by its crop rule, or the MTCNN detector's windows.

    Face crops are augmented up to their counts. MTCNN stages
    (``stage.detector_stage``) get the windows that the runtime's MTCNN feeds
    them on the same photos when that detector is installed (see
    ``converters.stage_inputs``); their counts are what the photos give.
    """
    if stage.detector_stage is not None and mtcnn is not None:
        def windows(crop_set: calib.CropSet, seed: int) -> np.ndarray:
            return stage_inputs.stage_windows(mtcnn, stage.detector_stage, calib.photos_of(crop_set), spec, seed)

        return StageBatches(windows(sets.calibration, 0), windows(sets.selection, 2), windows(sets.parity, 1),
                            f"{stage.detector_stage} windows cut by the runtime's MTCNN")

    calibration_crops = calib.augment(calib.crops_for_spec(sets.calibration, spec), request.calibration_count, seed=0)
    selection_crops = calib.crops_for_spec(sets.selection, spec)
    selection_crops = calib.augment(selection_crops, max(request.selection_count, len(selection_crops)), seed=2)
    parity_crops = calib.crops_for_spec(sets.parity, spec)
    parity_crops = calib.augment(parity_crops, max(request.parity_count, len(parity_crops)), seed=1)
    return StageBatches(make_batch(calibration_crops, spec), make_batch(selection_crops, spec),
                        make_batch(parity_crops, spec), f"face crops ({spec.crop.rule})")


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

    sets = _crop_sets(request)
    parity_set = sets.parity
    parity_count = max(request.parity_count, len(parity_set.crops))
    mtcnn = None
    if any(stage.detector_stage is not None for stage in source.stages):
        mtcnn = stage_inputs.runtime_mtcnn(request.model_store)
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
               "calibration_count": request.calibration_count, "calibration_origin": sets.calibration.origin,
               "calibration_faces": len(sets.calibration.crops), "selection_faces": len(sets.selection.crops),
               "held_out": sets.held_out, "stage_inputs": {}},
        machine=machine_info(),
        source_latency_ms={},
    )
    written: list[VariantFiles] = []
    export_errors: dict[str, str] = {}

    try:
        with tempfile.TemporaryDirectory(prefix="edge-convert-") as work:
            for stage in source.stages:
                _convert_stage(request, source, stage, Path(work), staging, sets, mtcnn,
                               tolerances, report, written, export_errors)

        failed = report.failed
        report.export_errors = export_errors
        if (failed or export_errors) and not request.force:
            output.mkdir(parents=True, exist_ok=True)
            json_path, _ = write_report(report, output)
            problems = [f"{v.file} ({v.tolerance}, measured {v.measured()}"
                        + (f": {v.failure_reason})" if v.failure_reason else ")") for v in failed]
            problems += [f"{name}: {error}" for name, error in export_errors.items()]
            error_class = ParityError if failed else ConversionError
            raise error_class(
                f"{len(problems)} variant(s) cannot ship: " + "; ".join(problems)
                + f". Report: {json_path}. To write the package anyway, run again with --force --overwrite: "
                "variants that fail parity are then included, marked in the report and the manifest, and skipped "
                "by the runtime unless their precision is requested by name. Otherwise drop the precision or target "
                "that fails, or set its tolerance (--tolerance-int8 and friends)"
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


def _convert_stage(request: ConvertRequest, source: SourceModel, stage: Stage, work: Path, staging: Path,
                   sets: CropSets, mtcnn, tolerances: dict[str, Tolerance], report: ParityReport,
                   written: list[VariantFiles], export_errors: dict[str, str]) -> None:
    spec = stage.spec_for(source.input)
    batches = _stage_batches(request, stage, spec, sets, mtcnn)
    parity_batch = batches.parity
    report.crops["stage_inputs"][stage.name] = {
        "inputs": batches.origin, "calibration": len(batches.calibration), "selection": len(batches.selection),
        "parity": len(batches.parity),
    }

    # Whole batches only: ONNX Runtime's histogram calibrators (percentile, entropy) stack the
    # batches and fail on a shorter last one. At most CALIBRATION_BATCH - 1 windows are left out.
    whole = len(batches.calibration) - len(batches.calibration) % CALIBRATION_BATCH
    calibration_batch = batches.calibration[:whole] if whole else batches.calibration

    def calibration() -> Iterable[np.ndarray]:
        return calib.batches(calibration_batch, CALIBRATION_BATCH)

    reference_outputs = reference_run(stage.reference, parity_batch)
    if len(reference_outputs) != len(stage.output_names):
        raise ConversionError(
            f"stage {stage.name!r} returns {len(reference_outputs)} outputs but {len(stage.output_names)} "
            "output names were declared"
        )
    report.source_latency_ms[stage.name] = measure_latency(stage.reference, parity_batch[:1], request.latency_runs)[0]
    heads = source.outputs if len(source.stages) == 1 else _stage_heads(source, stage)
    selection = SelectionSet(batches.selection, reference_run(stage.reference, batches.selection),
                             list(stage.output_names), heads)

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

            def check(candidate: Path, batch: np.ndarray = parity_batch, reference=reference_outputs,
                      latency_runs: int = request.latency_runs):
                return check_variant(
                    candidate, target, precision, stage.name, batch, reference, stage.output_names,
                    heads, tolerances[precision], latency_runs, staging,
                )

            def rank(candidate: Path):
                return check(candidate, selection.batch, selection.reference, 1)

            max_drop = _max_drop(tolerances["int8"])
            try:
                if target == "onnx" and precision == "int8" and request.ort_calibration == "best":
                    writers = {_label(method, float_ends): _ort_writer(fp32_onnx, stage, calibration, method, float_ends)
                               for float_ends in (False, True) for method in ORT_METHODS}
                    writers[QOPERATOR] = _ort_writer(fp32_onnx, stage, calibration, "minmax", qoperator=True)
                    writers[ACCURACY_CONTROL] = _ort_accuracy_control_writer(fp32_onnx, stage, calibration,
                                                                             selection, max_drop)
                    parity, files = _best_variant(path, writers, rank, check, "ORT calibration", target)
                elif target == "tflite" and precision == "int8" and request.tflite_recipe == "best":
                    writers = {recipe: _tflite_writer(stage, calibration, tflite_from_onnx, recipe)
                               for recipe in TFLITE_RECIPES}
                    parity, files = _best_variant(path, writers, rank, check, "TFLite recipe", target)
                elif target == "openvino" and precision == "int8" and request.nncf_preset == "best":
                    writers = {_label(preset, float_ends): _nncf_writer(fp32_onnx, calibration, preset, float_ends)
                               for float_ends in (False, True) for preset in NNCF_PRESETS}
                    writers[ACCURACY_CONTROL] = _nncf_writer(fp32_onnx, calibration, "performance",
                                                             selection=selection, max_drop=max_drop)
                    parity, files = _best_variant(path, writers, rank, check, "NNCF preset", target)
                else:
                    parity = check(files[0])
                    if precision == "int8":
                        parity.notes.append(_share_note(target, files[0]))
            except Exception as exc:  # a variant the runtime cannot load or whose outputs do not line up
                export_errors[path.name] = f"parity check failed: {type(exc).__name__}: {exc}"
                logger.error("%s: parity check failed: %s", path.name, exc)
                for file in files:
                    file.unlink(missing_ok=True)
                continue
            parity.notes.append(f"opset {opset}" if target == "onnx" else "")
            parity.notes = [n for n in parity.notes if n]
            report.variants.append(parity)
            written.append(VariantFiles(target, precision, stage.name, files, parity=parity))
            logger.info("%s: %s", parity.file, "pass" if parity.passed else f"FAIL ({parity.tolerance})")
    finally:
        if tflite_from_onnx is not None:
            tflite_from_onnx.close()


ORT_METHODS = ("minmax", "percentile", "entropy")
NNCF_PRESETS = ("performance", "mixed")
TFLITE_RECIPES = ("full-int8", "float-ends")
# Label of the ONNX candidate in QOperator format (QLinearConv and friends) instead of QDQ.
QOPERATOR = "minmax-qoperator"

# The ``best`` search also tries each method or preset with the first convolution and the final
# classifier kept in float32 (see ``onnx_target.float_end_nodes`` and ``openvino.float_end_ops``).
FLOAT_ENDS_SUFFIX = "float-ends"
# Label of the candidate that NNCF's accuracy control writes (see ``converters.selection``).
ACCURACY_CONTROL = "accuracy-control"
# A candidate with fewer of its convolutions and matrix products in int8 than this share is
# not eligible, because it would be a float model labelled int8.
MIN_INT8_SHARE = 0.5


def _max_drop(tolerance: Tolerance) -> float:
    """Return the agreement drop accuracy control may accept: half the int8 tolerance's margin below 1.

    Half, so that the agreement measured later on the held-out parity crops
    keeps room to fall below the selection set's without failing.
    """
    if tolerance.metric != "top1":
        return 0.01
    return max(0.0, (1.0 - tolerance.value) / 2.0)


def _label(name: str, float_ends: bool) -> str:
    return f"{name}-{FLOAT_ENDS_SUFFIX}" if float_ends else name


def int8_share(target: str, path: Path) -> tuple[int, int]:
    """Return (int8, total) counts of the convolutions and matrix products of an int8 variant file.

    """
    if target == "onnx":
        import onnx

        return onnx_target.quantized_share(onnx.load(str(path)))
    if target == "openvino":
        import openvino

        from converters.targets.openvino import quantized_share

        return quantized_share(openvino.Core().read_model(str(path)))
    from converters.targets.tflite import quantized_share as tflite_quantized_share

    return tflite_quantized_share(path.read_bytes())


def _share_note(target: str, path: Path) -> str:
    quantized, total = int8_share(target, path)
    return f"{quantized} of {total} convolutions and matrix products in int8"


def _best_variant(path: Path, writers: dict[str, Callable[[Path], list[Path]]], rank, check, what: str,
                  target: str):
    """Write one candidate per entry of ``writers``, keep the best on the selection set and check it.

    ``rank(candidate)`` measures a candidate on the selection set and
    ``check(candidate)`` on the parity crops. Best means the highest minimum
    top-1 agreement on the selection set, then the smallest mean absolute
    difference from the source, then the most int8 layers. The mean moves
    smoothly with the quantization error, so it separates candidates that
    agree on the same selection samples. A candidate with less than MIN_INT8_SHARE of
    its layers in int8 is measured but not eligible. The kept candidate's
    files are renamed to ``path`` (and its companions), the others are
    deleted, and the parity notes list every candidate's selection score.
    When the kept candidate fails its tolerance, ``failure_reason`` explains
    why no candidate could pass (see ``_failure_reason``).
    """
    results = []
    ineligible: list[tuple[float, str, tuple[int, int]]] = []
    failures: list[str] = []
    for label, write in writers.items():
        candidate = path.with_name(f"{path.stem}.{label}{path.suffix}")
        try:
            files = write(candidate)
            quantized, total = int8_share(target, candidate)
            scored = rank(candidate)
        except Exception as exc:  # one method failing (entropy on odd graphs) leaves the others
            logger.warning("%s: %s %s failed: %s", path.name, what, label, exc)
            failures.append(f"{label} failed ({type(exc).__name__})")
            for file in candidate.parent.glob(f"{candidate.stem}.*"):
                file.unlink(missing_ok=True)
            continue
        top1 = min(scored.top1_agreement.values()) if scored.top1_agreement else 1.0
        if total and quantized / total < MIN_INT8_SHARE:
            logger.warning("%s: %s %s not eligible: only %d of %d layers stay int8 (top-1 %.3f on the selection "
                           "set)", path.name, what, label, quantized, total, top1)
            ineligible.append((top1, label, (quantized, total)))
            for file in files:
                file.unlink(missing_ok=True)
            continue
        share = quantized / total if total else 1.0
        closeness = -sum(scored.mean_abs_diff.values())
        results.append((top1, closeness, share, label, files, (quantized, total)))
    if not results:
        outcomes = failures + [f"{name} kept {q} of {t} layers in int8" for _, name, (q, t) in ineligible]
        raise ConversionError(f"{path.name}: every {what} candidate failed or kept less than {MIN_INT8_SHARE:.0%} "
                              f"of its layers in int8 ({'; '.join(outcomes) or 'no candidate'})")

    results.sort(key=lambda item: item[:3], reverse=True)
    best_top1, _, _, label, files, (quantized, total) = results[0]
    for *_, other_files, _ in results[1:]:
        for file in other_files:
            file.unlink(missing_ok=True)
    kept = []
    for file in files:
        target_file = path.with_suffix(file.suffix)
        file.rename(target_file)
        kept.append(target_file)

    parity = check(kept[0])
    summary = ", ".join(f"{name} {top1:.3f} / {-closeness:.2e}" for top1, closeness, _, name, _, _ in results)
    parity.notes.append(f"{what} {label} chosen by top-1 agreement on the selection set, then mean abs diff "
                        f"(top-1 / mean abs diff, best first: {summary})")
    parity.notes.append(f"{quantized} of {total} convolutions and matrix products in int8")
    for top1, name, (q, t) in ineligible:
        parity.notes.append(f"{what} {name} not eligible: {top1:.3f} on the selection set with only {q} of {t} "
                            f"layers in int8 (at least {MIN_INT8_SHARE:.0%} must stay int8)")
    parity.notes += failures
    if not parity.passed:
        flips = [note for note in parity.notes if "samples flip" in note]
        parity.failure_reason = "; ".join([_failure_reason(what, len(results), best_top1, ineligible)] + flips)
    return parity, kept


def _failure_reason(what: str, candidates: int, best_top1: float,
                    ineligible: list[tuple[float, str, tuple[int, int]]]) -> str:
    """Explain why no int8 candidate passes: the best eligible score, and what float fallback needed."""
    reason = (f"the best of {candidates} eligible {what} candidate(s) reached {best_top1:.3f} top-1 agreement on "
              "the selection set")
    if ineligible:
        top1, name, (quantized, total) = max(ineligible)
        reason += (f"; {name} returned layers to float until it reached {top1:.3f}, leaving only {quantized} of "
                   f"{total} in int8, so the loss is spread over the network rather than in a few layers")
    return reason


def _ort_writer(fp32_onnx: Path, stage: Stage, calibration, method: str,
                float_ends: bool = False, qoperator: bool = False) -> Callable[[Path], list[Path]]:
    def write(candidate: Path) -> list[Path]:
        onnx_target.to_int8(fp32_onnx, candidate, stage.input_name, calibration, method, float_ends=float_ends,
                            qoperator=qoperator)
        return [candidate]

    return write


def _tflite_writer(stage: Stage, calibration, tflite_from_onnx, recipe: str) -> Callable[[Path], list[Path]]:
    def write(candidate: Path) -> list[Path]:
        if stage.export_tflite is not None:
            stage.export_tflite(candidate, "int8", calibration, recipe)
        else:
            tflite_from_onnx.export(candidate, "int8", calibration, uint8_input=stage.input_dtype == "uint8",
                                    recipe=recipe)
        return [candidate]

    return write


def _ort_accuracy_control_writer(fp32_onnx: Path, stage: Stage, calibration, selection: SelectionSet,
                                 max_drop: float) -> Callable[[Path], list[Path]]:
    def write(candidate: Path) -> list[Path]:
        onnx_target.to_int8_accuracy_control(fp32_onnx, candidate, stage.input_name, calibration, selection,
                                             max_drop)
        return [candidate]

    return write


def _nncf_writer(fp32_onnx: Path, calibration, preset: str, float_ends: bool = False,
                 selection: Optional[SelectionSet] = None, max_drop: float = 0.01) -> Callable[[Path], list[Path]]:
    from converters.targets.openvino import export_openvino

    def write(candidate: Path) -> list[Path]:
        return export_openvino(fp32_onnx, candidate, "int8", calibration, preset=preset, float_ends=float_ends,
                               selection=selection, max_drop=max_drop)

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

    if precision == "int8" and request.tflite_recipe == "best":
        return []  # _best_variant writes the file after comparing the recipes
    recipe = "full-int8" if request.tflite_recipe == "best" else request.tflite_recipe
    int8_calibration = calibration if precision == "int8" else None
    if stage.export_tflite is not None:
        stage.export_tflite(path, precision, int8_calibration, recipe)
        return [path]

    tflite_from_onnx.export(path, precision, int8_calibration, uint8_input=stage.input_dtype == "uint8",
                            recipe=recipe)
    return [path]
