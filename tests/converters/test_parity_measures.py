"""Parity measures that need no conversion: CPU int8 features, mean differences, decoded ages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters.parity import ParityReport, cpu_int8_features, expectation_summary, head_mean_abs_diff
from edge_runtime.manifest import OutputHead

AGES = [0.25] + [float(year) for year in range(1, 81)]


@pytest.mark.parametrize("text, expected", [
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n", ["avx2", "avx512bw", "avx512_vnni"]),
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2\n", ["avx2"]),
    ("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n", ["asimddp", "i8mm"]),
    ("processor\t: 0\n", []),
])
def test_cpu_int8_features_reads_the_flags_line(tmp_path: Path, text: str, expected: list[str]):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)

    assert cpu_int8_features(cpuinfo) == expected


def test_cpu_int8_features_without_cpuinfo(tmp_path: Path):
    assert cpu_int8_features(tmp_path / "missing") == []


def test_mean_abs_diff_skips_features_and_follows_columns():
    heads = [
        OutputHead(name="emotion", tensor=0, kind="probabilities", labels=["a", "b"]),
        OutputHead(name="features", tensor=1, kind="features"),
    ]
    reference = [np.array([[0.2, 0.8], [0.6, 0.4]], dtype=np.float32), np.zeros((2, 4), dtype=np.float32)]
    variant = [np.array([[0.3, 0.7], [0.6, 0.4]], dtype=np.float32), np.full((2, 4), 9.0, dtype=np.float32)]

    means = head_mean_abs_diff(variant, reference, ["logits", "features"], heads)

    assert means == pytest.approx({"emotion": 0.05})


def _one_hot_ages(peaks: list[tuple[int, int]]) -> np.ndarray:
    """Rows with half their mass on each of two bins."""
    rows = np.zeros((len(peaks), len(AGES)), dtype=np.float32)
    for row, (first, second) in zip(rows, peaks):
        row[first] += 0.5
        row[second] += 0.5
    return rows


def test_expectation_summary_reports_years_not_bins():
    head = OutputHead(name="age", tensor=0, kind="probabilities", class_values=AGES, top_l=2)
    # Row 0 swaps which of two neighbouring bins leads (a top-1 flip) but keeps 30.5 years;
    # row 1 moves from 40.5 to 44.5 years.
    reference = _one_hot_ages([(30, 31), (40, 41)])
    reference[0, 30] += 0.01
    variant = _one_hot_ages([(30, 31), (44, 45)])
    variant[0, 31] += 0.01

    (line,) = expectation_summary([variant], [reference], ["age"], [head])

    assert line.startswith("age: the decoded value (expectation over the top 2 classes) differs by 2.00 years on average")
    assert "4.00 years at most" in line
    assert line.endswith("50% of samples are within 1 year")


def test_expectation_summary_ignores_heads_without_class_values():
    head = OutputHead(name="emotion", tensor=0, kind="probabilities", labels=["a", "b"])
    outputs = [np.array([[0.5, 0.5]], dtype=np.float32)]

    assert expectation_summary(outputs, outputs, ["logits"], [head]) == []


@pytest.mark.parametrize("held_out, distinct, expected", [
    (True, 47, []),
    (False, 47, ["the parity faces also served for calibration"]),
    (False, 1, ["the parity faces also served for calibration", "parity ran on 1 distinct face(s)"]),
])
def test_report_table_warns_about_weak_parity_sets(held_out: bool, distinct: int, expected: list[str]):
    report = ParityReport(model="m", source={}, crops={"held_out": held_out, "distinct_faces": distinct, "count": 100},
                          machine={}, source_latency_ms={})

    warnings = [line for line in report.to_table().splitlines() if line.startswith("WARNING:")]

    assert len(warnings) == len(expected)
    for line, text in zip(warnings, expected):
        assert text in line
