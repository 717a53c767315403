"""Returning freed heap memory to the operating system after large one-off allocations."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Optional

logger = logging.getLogger(__name__)

_libc: Optional[ctypes.CDLL] = None


def _load_libc() -> Optional[ctypes.CDLL]:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        name = ctypes.util.find_library("c") or "libc.so.6"
        try:
            _libc = ctypes.CDLL(name)
        except OSError as exc:
            logger.debug("cannot load the C library %s: %s", name, exc)
    return _libc


def trim_heap() -> bool:
    """Ask glibc's allocator to return free heap pages to the kernel; return whether it released any.

    Model loading parses and optimizes graphs in temporary buffers. glibc
    keeps the freed pages mapped, so they would stay in the process's RSS.
    Other C libraries (musl, macOS) lack ``malloc_trim`` and this returns
    False there.
    """
    libc = _load_libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))
