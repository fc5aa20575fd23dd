"""runtimes.memory.return_freed: what a released stage frees goes back to the system before the next loads."""

from __future__ import annotations

import ctypes
import subprocess
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


_CHURN = """
import ctypes, sys
from mi2v_export.runtimes import memory
if sys.argv[1] == "mapped":
    assert memory.map_large_buffers()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def touched(n):
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    return p
libc.free(touched(24 << 20))  # a mapped block freed: glibc raises its threshold to its size (at most 32 MiB)
chunks, pins = [], []
for _ in range(8):  # 128 MiB of activation-sized buffers, each followed by a small one that stays
    chunks.append(touched(16 << 20))
    pins.append(touched(1 << 20))
before = memory.rss_bytes()
for p in chunks:
    libc.free(p)
print(before - memory.rss_bytes())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_buffers_are_mapped_apart_and_freed_at_once():
    """After a large block is freed, glibc serves buffers of that size from its heap, which keeps them after free:
    the churn of a tiled stage's windows. With map_large_buffers (what a low-memory session asks) each buffer has
    its own mapping and its free hands it back. Fresh processes: the setting is process-wide."""
    freed = {}
    for mode in ("default", "mapped"):
        proc = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        freed[mode] = int(proc.stdout.strip())
    assert freed["mapped"] > 120 << 20, freed  # all 128 MiB went back
    assert freed["default"] < 32 << 20, freed  # glibc's own threshold kept them: what the setting changes
