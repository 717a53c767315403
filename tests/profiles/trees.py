"""Fake root trees with the files that board detection reads, copied from real boards."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

INTEL_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 154
model name\t: 12th Gen Intel(R) Core(TM) i5-1235U
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc sse3 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand avx2 bmi1 bmi2 avx_vnni
"""

INTEL_ATOM_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Atom(TM) CPU  C2750  @ 2.40GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ssse3 sse4_1 sse4_2 movbe popcnt aes
"""

AMD_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model name\t: AMD Ryzen 7 5800X 8-Core Processor
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep sse sse2 ht syscall nx lm sse3 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi1 bmi2
"""

# Raspberry Pi 4 (Cortex-A72): no vendor_id or model name, the flags are under Features.
PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd08

Hardware\t: BCM2835
Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""

PI5_CPUINFO = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b
"""

JETSON_CPUINFO = """processor\t: 0
model name\t: ARMv8 Processor rev 1 (v8l)
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
"""

JETPACK4_RELEASE = "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, DATE: Sat Feb 19 17:05:08 UTC 2022\n"
JETPACK6_RELEASE = "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64, DATE: Fri Jul 19 23:24:25 UTC 2024\n"
JETPACK5_RELEASE = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n"


def make_tree(
    root: Path,
    *,
    device_tree_model: Optional[str] = None,
    tegra_release: Optional[str] = None,
    cpuinfo: Optional[str] = None,
    override: Optional[str] = None,
) -> Path:
    """Write ``proc/device-tree/model`` (NUL-terminated, as the kernel does), ``etc/nv_tegra_release``,
    ``proc/cpuinfo`` and ``etc/edge-runtime/profile.yaml`` under ``root``; skip those given as None."""
    if device_tree_model is not None:
        path = root / "proc" / "device-tree" / "model"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(device_tree_model.encode() + b"\x00")
    if tegra_release is not None:
        path = root / "etc" / "nv_tegra_release"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(tegra_release)
    if cpuinfo is not None:
        path = root / "proc" / "cpuinfo"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(cpuinfo)
    if override is not None:
        path = root / "etc" / "edge-runtime" / "profile.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(override)
    root.mkdir(parents=True, exist_ok=True)
    return root
