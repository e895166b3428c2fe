"""Hand memory the process has freed back to the system while a long shot streams.

A streamed edit frees and allocates frame-sized buffers (tens of MB at 1080p) thousands of times.
glibc's allocator keeps freed buffers of that size in its heaps rather than unmapping them, and
over a long shot the heaps grow with the gaps between live buffers, so the process's resident
memory creeps up with the shot's length (measured: BENCHMARKS, Long shots). `malloc_trim`
returns the free pages of every heap; it changes no setting of the allocator.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none (macOS, Windows, musl)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def return_freed_memory() -> bool:
    """Give the pages of freed heap memory back to the system; False where that cannot be done
    (no glibc) or nothing was returned."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
