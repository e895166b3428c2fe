"""`return_freed_memory`: freed heap memory goes back to the system (glibc)."""
import os
from pathlib import Path

import pytest
import torch

from vera.edit.heap import _malloc_trim, return_freed_memory

needs_glibc = pytest.mark.skipif(_malloc_trim() is None or not Path("/proc/self/statm").exists(),
                                 reason="needs glibc's malloc_trim and /proc (Linux)")


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@needs_glibc
def test_freed_buffers_below_a_live_one_are_returned_only_when_asked():
    held = [torch.ones(16 * 1024) for _ in range(2000)]  # 64 KiB each: heap, not mmap
    last = held[-1]  # keeps the heap's top in use, so free() alone cannot shrink it
    del held
    freed = _rss()
    assert return_freed_memory()
    assert freed - _rss() > 100 * 2**20
    assert last.sum() == 16 * 1024
