"""trim_heap on the running interpreter: freed malloc pages leave the RSS."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

from edge_runtime.memory import trim_heap


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("/proc/self/status has no VmRSS line")


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="malloc_trim is a glibc function"
)
def test_trim_heap_releases_freed_pages() -> None:
    # 100k blocks of 2 KiB: above pymalloc's 512-byte limit, below glibc's mmap threshold, so they sit on the heap.
    blocks = [bytearray(2048) for _ in range(100_000)]
    # Keep the last block so that the heap top stays in use and only trimming can release the rest.
    last = blocks[-1]
    del blocks
    before = rss_kib()

    assert trim_heap()
    after = rss_kib()

    assert before - after > 100_000
    assert len(last) == 2048
