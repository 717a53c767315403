"""Parity of converted variants against their source, on real face crops.

Every variant runs through the runtime's own backend (the one a device would
use for its format) on the same batch as the source framework. Per output
tensor the report gives the max absolute difference and the max difference
relative to the reference's largest magnitude. For class heads it gives the
top-1 agreement. It also gives the variant's latency on the converting
machine (batch 1, median and 90th percentile over timed runs after warm-up).

Default tolerances, judged on every head except ``features``:

* fp32: max absolute difference <= 1e-4;
* fp16: max difference <= 1e-2 relative to the reference's max magnitude;
* int8: top-1 agreement >= 0.98 on class heads; a variant without a class
  head is held to a relative difference <= 0.1 instead.

The ``features`` head is reported but never judged, because its values have
no fixed range.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edge_runtime.backends import get_backend
from edge_runtime.manifest import OutputHead

from converters.progress import track

logger = logging.getLogger(__name__)

BACKEND_FOR_FORMAT = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "tflite"}


@dataclass(frozen=True)
class Tolerance:
    """Pass rule of one precision: ``metric`` is abs, rel or top1."""

    metric: str
    value: float

    def describe(self) -> str:
        if self.metric == "top1":
            return f"top-1 agreement >= {self.value:g}"
        if self.metric == "rel":
            return f"max relative diff <= {self.value:g}"
        return f"max abs diff <= {self.value:g}"


DEFAULT_TOLERANCES = {
    "fp32": Tolerance("abs", 1e-4),
    "fp16": Tolerance("rel", 1e-2),
    "int8": Tolerance("top1", 0.98),
}
INT8_WITHOUT_CLASS_HEAD = Tolerance("rel", 0.1)
# Fewer distinct parity faces than this get a warning: augmented copies of a few faces make parity optimistic.
MIN_DISTINCT_PARITY_FACES = 10


@dataclass
class VariantParity:
    """Parity of one variant file against the source."""

    file: str
    format: str
    precision: str
    stage: str
    backend: str
    samples: int
    max_abs_diff: dict[str, float]
    max_rel_diff: dict[str, float]
    top1_agreement: dict[str, float]
    latency_ms_median: float
    latency_ms_p90: float
    tolerance: str
    passed: bool
    forced: bool = False
    notes: list[str] = field(default_factory=list)
    failure_reason: str = ""
    mean_abs_diff: dict[str, float] = field(default_factory=dict)
    decoded: list[str] = field(default_factory=list)

    def measured(self) -> str:
        """Return what was measured against the tolerance, e.g. ``top-1 agreement 0.910``."""
        if self.tolerance.startswith("top-1"):
            return f"top-1 agreement {min(self.top1_agreement.values()):.3f}"
        if "relative" in self.tolerance:
            return f"max relative diff {max(self.max_rel_diff.values()):.2e}"
        return f"max abs diff {max(self.max_abs_diff.values()):.2e}"


@dataclass
class ParityReport:
    """Parity of every variant of a package, written as JSON and as a text table."""

    model: str
    source: dict
    crops: dict
    machine: dict
    source_latency_ms: dict[str, float]
    variants: list[VariantParity] = field(default_factory=list)
    export_errors: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[VariantParity]:
        return [v for v in self.variants if not v.passed]

    def to_json(self) -> str:
        data = asdict(self)
        data["failed"] = [v.file for v in self.failed]
        data["forced"] = [v.file for v in self.variants if v.forced]
        return json.dumps(data, indent=2, sort_keys=False)

    def to_table(self) -> str:
        header = ("file", "backend", "max abs diff", "max rel diff", "top-1", "latency ms", "tolerance", "result")
        rows = [header]
        for v in self.variants:
            top1 = min(v.top1_agreement.values()) if v.top1_agreement else None
            rows.append((
                v.file,
                v.backend,
                f"{max(v.max_abs_diff.values()):.2e}" if v.max_abs_diff else "-",
                f"{max(v.max_rel_diff.values()):.2e}" if v.max_rel_diff else "-",
                f"{top1:.3f}" if top1 is not None else "-",
                f"{v.latency_ms_median:.2f}",
                v.tolerance,
                _result_label(v),
            ))
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
        lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines += [f"{v.file} fails: {v.failure_reason}" for v in self.variants if v.failure_reason]
        lines += [f"{v.file}: {line}" for v in self.variants for line in v.decoded]
        stage_inputs = self.crops.get("stage_inputs") or {}
        windows = {stage: entry["parity"] for stage, entry in stage_inputs.items() if "windows" in entry["inputs"]}
        inputs = f"{self.crops.get('count')} face crops"
        if windows:
            inputs = "detector windows (" + ", ".join(f"{stage} {count}" for stage, count in windows.items()) + ")"
        latency = ", ".join(f"{stage} {ms:.2f} ms" for stage, ms in self.source_latency_ms.items()) or "not measured"
        warnings = []
        if not self.crops.get("held_out", True):
            warnings.append("WARNING: the parity faces also served for calibration, so agreement is optimistic; "
                            "pass --calibration-photos and --parity-photos with different photos")
        distinct = self.crops.get("distinct_faces")
        if distinct is not None and distinct < MIN_DISTINCT_PARITY_FACES:
            warnings.append(f"WARNING: parity ran on {distinct} distinct face(s) plus augmented copies; pass "
                            f"--parity-photos with at least {MIN_DISTINCT_PARITY_FACES} faces")
        summary = (
            f"{self.model}: {len(self.variants)} variant(s) on {inputs} "
            f"from {self.crops.get('origin')} ({self.crops.get('detector')}); "
            f"source latency {latency} on {self.machine.get('processor')} "
            f"(int8 features: {', '.join(self.machine.get('int8_features') or []) or 'none found'})"
        )
        return "\n".join([summary] + warnings + [""] + lines) + "\n"


def _result_label(variant: VariantParity) -> str:
    if variant.passed:
        return "pass"
    return "FAIL (forced)" if variant.forced else "FAIL"


# CPU features that decide how int8 products are computed: x86 VNNI and AMX, Arm dot product and i8mm.
INT8_CPU_FLAGS = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def machine_info() -> dict:
    """Return where latencies were measured: CPU, its int8 features, core count and platform.

    ``int8_features`` matters for int8 latency and agreement, because int8
    kernels differ between x86 without VNNI, x86 with VNNI and Arm (see the
    ``session.x64quantprecision`` note in ``edge_runtime.backends.onnxruntime``).
    """
    import os

    info = {
        "processor": _cpu_name(),
        "int8_features": cpu_int8_features(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    return info


def cpu_int8_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """Return the INT8_CPU_FLAGS this CPU has, from the first flags or Features line of ``cpuinfo``."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            return [flag for flag in INT8_CPU_FLAGS if flag in flags]
    return []


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _class_view(array: np.ndarray, classes: Optional[int] = None) -> np.ndarray:
    """Return a class head as (samples, classes); spatial maps put every position in a row.

    A 4-D map has its classes on axis 1 (NCHW), or on the last axis when
    that axis, and not axis 1, has ``classes`` entries (an NHWC map such
    as P-Net's).
    """
    if array.ndim == 4:
        if classes is not None and array.shape[-1] == classes and array.shape[1] != classes:
            return array.reshape(-1, classes)
        return np.moveaxis(array, 1, -1).reshape(-1, array.shape[1])
    return array.reshape(len(array), -1)


def _head_view(head: OutputHead, outputs: Sequence[np.ndarray], names: Sequence[str]) -> np.ndarray:
    index = head.tensor if isinstance(head.tensor, int) else list(names).index(head.tensor)
    array = np.asarray(outputs[index], dtype=np.float32)
    classes = None
    if head.labels:
        classes = len(head.labels)
    elif head.class_values:
        classes = len(head.class_values)
    view = _class_view(array, classes) if head.kind in ("logits", "probabilities") else array.reshape(len(array), -1)
    if head.columns is not None:
        view = view[:, head.columns[0] : head.columns[1]]
    return view


def align_layout(variant: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, Optional[str]]:
    """Return ``variant`` in the reference's layout, transposing an NHWC map to NCHW if needed."""
    if variant.shape == reference.shape:
        return variant, None
    if variant.ndim == 4 and variant.transpose(0, 3, 1, 2).shape == reference.shape:
        return variant.transpose(0, 3, 1, 2), "output is NHWC; compared after transposing to NCHW"
    if variant.size == reference.size:
        return variant.reshape(reference.shape), f"output shape {variant.shape} reshaped to {reference.shape}"
    raise ValueError(f"output shape {variant.shape} does not match the source's {reference.shape}")


def measure_latency(run, sample: np.ndarray, runs: int, warmup: int = 3) -> tuple[float, float]:
    """Return (median, p90) milliseconds of ``run(sample)`` over ``runs`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        run(sample)
    timings = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        run(sample)
        timings.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(timings)), float(np.percentile(timings, 90))


def compare(variant_outputs: Sequence[np.ndarray], reference_outputs: Sequence[np.ndarray],
            output_names: Sequence[str], heads: Sequence[OutputHead]) -> tuple[dict, dict, dict, list[str], dict, dict]:
    """Compare outputs; return abs and rel diff per output, top-1 per class head, notes, judged abs and rel per head."""
    notes: list[str] = []
    aligned = []
    for name, variant, reference in zip(output_names, variant_outputs, reference_outputs):
        array, note = align_layout(np.asarray(variant, dtype=np.float32), np.asarray(reference, dtype=np.float32))
        if note:
            notes.append(f"{name}: {note}")
        aligned.append(array)

    abs_diff, rel_diff = {}, {}
    for name, variant, reference in zip(output_names, aligned, reference_outputs):
        reference = np.asarray(reference, dtype=np.float32)
        difference = float(np.max(np.abs(variant - reference))) if reference.size else 0.0
        magnitude = float(np.max(np.abs(reference))) if reference.size else 0.0
        abs_diff[name] = difference
        rel_diff[name] = difference / magnitude if magnitude > 0 else difference

    top1, judged_abs, judged_rel = {}, {}, {}
    for head in heads:
        if head.kind == "features":
            continue
        variant_view = _head_view(head, aligned, output_names)
        reference_view = _head_view(head, reference_outputs, output_names)
        difference = float(np.max(np.abs(variant_view - reference_view))) if reference_view.size else 0.0
        magnitude = float(np.max(np.abs(reference_view))) if reference_view.size else 0.0
        judged_abs[head.name] = difference
        judged_rel[head.name] = difference / magnitude if magnitude > 0 else difference
        if head.kind in ("logits", "probabilities") and reference_view.shape[1] > 1:
            agree = np.argmax(variant_view, axis=1) == np.argmax(reference_view, axis=1)
            top1[head.name] = float(np.mean(agree))
    return abs_diff, rel_diff, top1, notes, judged_abs, judged_rel


def _aligned(variant_outputs: Sequence[np.ndarray], reference_outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Return the variant's outputs as float32 in the reference's layout (see ``align_layout``)."""
    return [align_layout(np.asarray(v, dtype=np.float32), np.asarray(r, dtype=np.float32))[0]
            for v, r in zip(variant_outputs, reference_outputs)]


def head_mean_abs_diff(variant_outputs: Sequence[np.ndarray], reference_outputs: Sequence[np.ndarray],
                       output_names: Sequence[str], heads: Sequence[OutputHead]) -> dict[str, float]:
    """Return the mean absolute difference per judged head (every head except ``features``).

    Unlike the max, the mean moves smoothly with the quantization error, so
    it ranks int8 candidates that agree on every selection sample.
    """
    aligned = _aligned(variant_outputs, reference_outputs)
    means = {}
    for head in heads:
        if head.kind == "features":
            continue
        difference = _head_view(head, aligned, output_names) - _head_view(head, reference_outputs, output_names)
        means[head.name] = float(np.mean(np.abs(difference))) if difference.size else 0.0
    return means


def expectation_summary(variant_outputs: Sequence[np.ndarray], reference_outputs: Sequence[np.ndarray],
                        output_names: Sequence[str], heads: Sequence[OutputHead]) -> list[str]:
    """Describe how far the decoded value of each expectation head (age in years) moves.

    A head with ``class_values`` (an age head over year bins) is decoded by
    the runtime as an expectation over its ``top_l`` most probable classes,
    so the years a device reports can stay close while neighbouring bins
    trade the top-1 place. Each line gives the mean and largest difference
    and the share of samples within one unit.
    """
    from edge_runtime.vision.classifiers import expected_age

    aligned = _aligned(variant_outputs, reference_outputs)
    lines = []
    for head in heads:
        if not head.class_values or head.kind != "probabilities":
            continue
        values = np.asarray(head.class_values, dtype=np.float64)
        variant_view = _head_view(head, aligned, output_names)
        reference_view = _head_view(head, reference_outputs, output_names)
        decoded = np.array([expected_age(row, values, head.top_l).years for row in variant_view])
        expected = np.array([expected_age(row, values, head.top_l).years for row in reference_view])
        difference = np.abs(decoded - expected)
        units, unit = (" years", " year") if head.name == "age" else ("", "")
        lines.append(f"{head.name}: the decoded value (expectation over the top {head.top_l or len(values)} "
                     f"classes) differs by {difference.mean():.2f}{units} on average and {difference.max():.2f}{units} "
                     f"at most; {np.mean(difference <= 1.0):.0%} of samples are within 1{unit}")
    return lines


def flip_summary(variant_outputs: Sequence[np.ndarray], reference_outputs: Sequence[np.ndarray],
                 output_names: Sequence[str], heads: Sequence[OutputHead]) -> list[str]:
    """Describe, per class head, the samples whose top-1 class differs from the source's.

    Each line gives the flip count, the largest gap between the source's
    two highest scores among the flipped samples, and how many samples of
    the batch have a gap that small. When every flip is on such a near tie,
    the variant is close to the source and the test set contains many near ties.
    """
    lines = []
    aligned = _aligned(variant_outputs, reference_outputs)
    for head in heads:
        if head.kind not in ("logits", "probabilities"):
            continue
        variant_view = _head_view(head, aligned, output_names)
        reference_view = _head_view(head, reference_outputs, output_names)
        if reference_view.shape[1] < 2:
            continue
        flipped = np.argmax(variant_view, axis=1) != np.argmax(reference_view, axis=1)
        if not flipped.any():
            continue
        ranked = np.sort(reference_view, axis=1)
        gaps = ranked[:, -1] - ranked[:, -2]
        widest = float(gaps[flipped].max())
        close = int(np.sum(gaps <= widest))
        lines.append(f"{head.name}: {int(flipped.sum())} of {len(flipped)} samples flip; every flip has the source's "
                     f"top two scores within {widest:.3g}, and {close} samples are that close")
    return lines


def judge(precision: str, tolerance: Tolerance, judged_abs: dict, judged_rel: dict, top1: dict) -> tuple[bool, Tolerance]:
    """Apply ``tolerance`` to the judged metrics; return (passed, the rule actually applied)."""
    if tolerance.metric == "top1" and not top1:
        tolerance = INT8_WITHOUT_CLASS_HEAD
    if tolerance.metric == "abs":
        return all(v <= tolerance.value for v in judged_abs.values()), tolerance
    if tolerance.metric == "rel":
        return all(v <= tolerance.value for v in judged_rel.values()), tolerance
    return all(v >= tolerance.value for v in top1.values()), tolerance


def check_output_order(names: Sequence[str], shapes: Sequence[tuple], expected_names: Sequence[str],
                       expected_shapes: Sequence[tuple]) -> None:
    """Raise ValueError when the variant's outputs are not in the source's order.

    Devices read outputs by position (the manifest's heads index them), so
    a variant that kept the names but moved them must not pass.
    """
    if list(names) != list(expected_names) and set(expected_names) <= set(names):
        raise ValueError(f"outputs are in the order {list(names)}, expected {list(expected_names)}")
    for index, (shape, expected) in enumerate(zip(shapes, expected_shapes)):
        if int(np.prod(shape[1:])) != int(np.prod(expected[1:])):
            raise ValueError(
                f"output {index} has shape {tuple(shape)} but the source's output {expected_names[index]!r} "
                f"has {tuple(expected)}; the variant's outputs are in another order or shape"
            )


def check_variant(path: Path, variant_format: str, precision: str, stage: str, batch: np.ndarray,
                  reference_outputs: Sequence[np.ndarray], output_names: Sequence[str],
                  heads: Sequence[OutputHead], tolerance: Tolerance, latency_runs: int,
                  package_dir: Path, chunk: int = 16) -> VariantParity:
    """Run the variant at ``path`` through the runtime's backend and compare it with the source."""
    backend_name = BACKEND_FOR_FORMAT[variant_format]
    backend = get_backend(backend_name)
    session = backend.load(path)
    try:
        parts = [session.run(batch[i : i + chunk]) for i in range(0, len(batch), chunk)]
        outputs = [np.concatenate([p[j] for p in parts], axis=0) for j in range(len(parts[0]))]
        median, p90 = measure_latency(session.run, batch[:1], latency_runs)
        session_names = [spec.name for spec in session.outputs]
    finally:
        session.close()

    if len(outputs) != len(reference_outputs):
        raise ValueError(f"{path.name} has {len(outputs)} outputs but the source has {len(reference_outputs)}")
    check_output_order(session_names, [np.shape(o) for o in outputs], output_names,
                       [np.shape(o) for o in reference_outputs])

    abs_diff, rel_diff, top1, notes, judged_abs, judged_rel = compare(outputs, reference_outputs, output_names, heads)
    passed, applied = judge(precision, tolerance, judged_abs, judged_rel, top1)
    if not passed and top1:
        notes += flip_summary(outputs, reference_outputs, output_names, heads)
    return VariantParity(
        file=str(path.relative_to(package_dir)), format=variant_format, precision=precision, stage=stage,
        backend=backend_name, samples=len(batch), max_abs_diff=abs_diff, max_rel_diff=rel_diff,
        top1_agreement=top1, latency_ms_median=median, latency_ms_p90=p90, tolerance=applied.describe(),
        passed=passed, notes=notes,
        mean_abs_diff=head_mean_abs_diff(outputs, reference_outputs, output_names, heads),
        decoded=expectation_summary(outputs, reference_outputs, output_names, heads) if precision != "fp32" else [],
    )


def reference_run(reference, batch: np.ndarray, chunk: int = 16) -> list[np.ndarray]:
    """Run the source framework on ``batch`` in chunks and join the outputs."""
    parts = [reference(batch[i : i + chunk]) for i in track(range(0, len(batch), chunk), "running the source model")]
    return [np.concatenate([np.asarray(p[j]) for p in parts], axis=0) for j in range(len(parts[0]))]
