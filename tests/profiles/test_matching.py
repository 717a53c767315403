"""Board detection on fake /proc and /etc trees: which profile matches, and why."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_runtime.profiles import detect_profile_name, read_board_info, resolve_profile
from tests.profiles.trees import (
    AMD_CPUINFO,
    INTEL_ATOM_CPUINFO,
    INTEL_CPUINFO,
    JETPACK4_RELEASE,
    JETPACK5_RELEASE,
    JETPACK6_RELEASE,
    JETSON_CPUINFO,
    PI4_CPUINFO,
    PI5_CPUINFO,
    make_tree,
)

BOARDS = [
    ("pi4", dict(device_tree_model="Raspberry Pi 4 Model B Rev 1.4", cpuinfo=PI4_CPUINFO), "aarch64", "raspberry-pi-4"),
    ("pi5", dict(device_tree_model="Raspberry Pi 5 Model B Rev 1.0", cpuinfo=PI5_CPUINFO), "aarch64", "raspberry-pi-5"),
    ("cm4", dict(device_tree_model="Raspberry Pi Compute Module 4 Rev 1.0", cpuinfo=PI4_CPUINFO), "aarch64",
     "raspberry-pi-4"),
    ("pi3-32bit", dict(device_tree_model="Raspberry Pi 3 Model B Plus Rev 1.3", cpuinfo=PI4_CPUINFO), "armv7l",
     "raspberry-pi-4"),
    ("jetson-nano", dict(device_tree_model="NVIDIA Jetson Nano Developer Kit", tegra_release=JETPACK4_RELEASE,
                         cpuinfo=JETSON_CPUINFO), "aarch64", "jetson-nano"),
    ("orin-nano", dict(device_tree_model="NVIDIA Jetson Orin Nano Developer Kit", tegra_release=JETPACK6_RELEASE,
                       cpuinfo=JETSON_CPUINFO), "aarch64", "jetson-orin-nano"),
    ("xavier-nx", dict(device_tree_model="NVIDIA Jetson Xavier NX Developer Kit", tegra_release=JETPACK5_RELEASE,
                       cpuinfo=JETSON_CPUINFO), "aarch64", "jetson-orin-nano"),
    ("intel-avx2", dict(cpuinfo=INTEL_CPUINFO), "x86_64", "intel-x86_64-openvino"),
    ("intel-no-avx2", dict(cpuinfo=INTEL_ATOM_CPUINFO), "x86_64", "generic-x86_64"),
    ("amd", dict(cpuinfo=AMD_CPUINFO), "x86_64", "generic-x86_64"),
    ("amd64-spelling", dict(cpuinfo=AMD_CPUINFO), "AMD64", "generic-x86_64"),
    ("arm-server", dict(cpuinfo=JETSON_CPUINFO), "aarch64", "generic-aarch64"),
]


@pytest.mark.parametrize("files, machine, expected", [b[1:] for b in BOARDS], ids=[b[0] for b in BOARDS])
def test_board_gets_profile(tmp_path: Path, files: dict, machine: str, expected: str) -> None:
    root = make_tree(tmp_path, **files)

    choice = resolve_profile(root=root, machine=machine)

    assert choice.profile.name == expected
    assert choice.source == "detected"
    assert detect_profile_name(root, machine) == expected


def test_pi5_outranks_generic_pi_rule(tmp_path: Path) -> None:
    root = make_tree(tmp_path, device_tree_model="Raspberry Pi 5 Model B Rev 1.0", cpuinfo=PI5_CPUINFO)

    choice = resolve_profile(root=root, machine="aarch64")

    names = [name for name, _ in choice.matched]
    assert names == ["raspberry-pi-5", "raspberry-pi-4", "generic-aarch64"]
    assert "'Raspberry Pi 5'" in choice.reason
    assert "priority 110" in choice.reason


def test_jetson_nano_reason_names_release(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        device_tree_model="NVIDIA Jetson Nano Developer Kit",
        tegra_release=JETPACK4_RELEASE,
        cpuinfo=JETSON_CPUINFO,
    )

    choice = resolve_profile(root=root, machine="aarch64")

    assert "nv_tegra_release matches /^# R32/" in choice.reason
    assert "Jetson Nano" in choice.reason
    assert [name for name, _ in choice.matched][:2] == ["jetson-nano", "jetson-orin-nano"]


def test_jetson_nano_model_on_jetpack6_is_not_nano(tmp_path: Path) -> None:
    # The jetson-nano profile's TensorRT settings target JetPack 4; a newer release takes the Orin profile.
    root = make_tree(
        tmp_path, device_tree_model="NVIDIA Jetson Nano Developer Kit", tegra_release=JETPACK6_RELEASE
    )

    assert resolve_profile(root=root, machine="aarch64").profile.name == "jetson-orin-nano"


def test_intel_reason_lists_vendor_and_flags(tmp_path: Path) -> None:
    root = make_tree(tmp_path, cpuinfo=INTEL_CPUINFO)

    choice = resolve_profile(root=root, machine="x86_64")

    assert "CPU vendor GenuineIntel" in choice.reason
    assert "CPU flags avx2" in choice.reason
    assert [name for name, _ in choice.matched] == ["intel-x86_64-openvino", "generic-x86_64"]


def test_unknown_architecture_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge_runtime.profiles")

    choice = resolve_profile(root=make_tree(tmp_path), machine="riscv64")

    assert choice.profile.name == "generic-x86_64"
    assert choice.source == "fallback"
    assert choice.matched == []
    assert "riscv64" in caplog.text


def test_board_info_reads_x86_cpuinfo(tmp_path: Path) -> None:
    board = read_board_info(make_tree(tmp_path, cpuinfo=INTEL_CPUINFO), machine="x86_64")

    assert board.cpu_vendor == "GenuineIntel"
    assert board.cpu_model == "12th Gen Intel(R) Core(TM) i5-1235U"
    assert {"avx2", "avx_vnni", "sse4_2"} <= board.cpu_flags
    assert board.device_tree_model is None
    assert board.tegra_release is None


def test_board_info_reads_arm_features(tmp_path: Path) -> None:
    root = make_tree(tmp_path, device_tree_model="Raspberry Pi 4 Model B Rev 1.4", cpuinfo=PI4_CPUINFO)

    board = read_board_info(root, machine="arm64")

    assert board.device_tree_model == "Raspberry Pi 4 Model B Rev 1.4"
    assert board.cpu_vendor is None
    assert board.cpu_flags == frozenset({"fp", "asimd", "evtstrm", "crc32", "cpuid"})
    assert board.machine == "aarch64"


def test_this_machine_detected() -> None:
    choice = resolve_profile()

    assert choice.profile.name == detect_profile_name()
    assert choice.source in ("detected", "fallback")
