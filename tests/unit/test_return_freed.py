"""runtimes.memory.return_freed: what a released stage frees goes back to the system before the next loads."""

from __future__ import annotations

import ctypes
import sys

import pytest

from mi2v_export.runtimes import memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_memory_goes_back_to_the_system():
    """Chunks below glibc's mmap threshold stay mapped after free (the heap's top is pinned by a live chunk);
    return_freed hands them back, so the next stage does not peak on top of the last one's leftovers."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    chunks = [libc.malloc(64 << 10) for _ in range(2000)]
    for p in chunks:
        ctypes.memset(p, 1, 64 << 10)
    pin = libc.malloc(64 << 10)
    for p in chunks:
        libc.free(p)
    before = memory.rss_bytes()
    memory.return_freed()
    after = memory.rss_bytes()
    libc.free(pin)
    assert before - after > 100 << 20, (before, after)
