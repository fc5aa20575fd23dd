"""The one peak-memory probe: this process's resident high-water mark, and the peak of a child process.

Linux: the kernel's `VmHWM` in /proc/self/status, which writing "5" to /proc/self/clear_refs resets to the current
resident size (so each measured region gets its own peak). Elsewhere, or where /proc is not readable: `getrusage`'s
`ru_maxrss`, the process-lifetime peak, which is KiB on Linux and BYTES on macOS (reading macOS bytes as KiB
overstated a peak 1024-fold). Every peak-RSS figure of the bench, the export and the runtimes comes from here.
"""

from __future__ import annotations

import ctypes
import gc
import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

RESET = "vmhwm-reset"  # reset_peak() reset the high-water mark: the next reading covers only what follows
PROCESS = "ru_maxrss"  # it could not: readings are the process's peak so far
_STATUS = Path("/proc/self/status")


def reset_peak() -> str:
    """Reset this process's high-water mark where the kernel allows it; RESET, else PROCESS (how the next reading of
    `peak_rss_bytes` is scoped)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return RESET
    except OSError:
        return PROCESS


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def maxrss_bytes(ru_maxrss: int) -> int:
    """getrusage's ru_maxrss in bytes: KiB on Linux (and the BSDs), bytes on macOS."""
    return int(ru_maxrss) if sys.platform == "darwin" else int(ru_maxrss) * 1024


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory since the last `reset_peak` (or since it started), in bytes."""
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm * 1024
    try:
        return maxrss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    except (OSError, ValueError):
        return None


def peak_rss_kb() -> int | None:
    """`peak_rss_bytes` in KiB (the bench report's unit)."""
    peak = peak_rss_bytes()
    return None if peak is None else peak // 1024


def return_freed() -> None:
    """Hand memory freed by a released model back to the system before the next one loads: collect Python's young
    cycles, then glibc's `malloc_trim(0)` (its heap keeps freed chunks mapped, so a stage loaded after a released
    one would peak on top of the first's leftovers: measured, a 720p fp16 decoder whose stages each fit 512 MiB
    alone peaked at 579 MiB assembled). Elsewhere (macOS, musl) only the collection runs. Only the young
    generations: a released session, its program and its method hold no cycle (they are freed when the last
    reference goes), while a full collection walks every object torch's import made: 0.2 s per stage, 0.9 s of a
    7.2 s tiled 720p encoder call on ExecuTorch, for nothing found."""
    gc.collect(1)
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
LARGE_BUFFER_BYTES = 4 << 20  # an allocation this large or larger gets its own mapping


def map_large_buffers() -> bool:
    """Give every allocation of LARGE_BUFFER_BYTES or more its own mapping, handed back to the system when freed
    (glibc's `mallopt(M_MMAP_THRESHOLD)`); what a low-memory session asks for (runtimes/sessions.py `open_session`).
    Why: glibc raises its mapping threshold each time a mapped block is freed, so the next activation buffers of
    that size come from its heap, which keeps their pages after they are freed and fragments, by chance; a fixed
    threshold turns that off. The 720p Turbo-VAED's last-stage tile model with onnxruntime's arena and memory
    pattern off: 265 MB above baseline, 211 MB mapped, for 4 % more time per window (every buffer is faulted in
    again); benchmarks/results/ort_memory_settings_720p_decoder_tile.json. Process-wide and idempotent; False where
    the C library is not glibc (macOS, musl: their allocators return large blocks themselves)."""
    global _MAPPED
    if _LIBC is None:
        return False
    if not _MAPPED:
        _MAPPED = bool(_LIBC.mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES))
    return _MAPPED


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


_LIBC = _glibc()
_MAPPED = False


def rss_bytes() -> int | None:
    """This process's resident memory now (VmRSS), or None where /proc is missing."""
    rss = _status_kb("VmRSS")
    return None if rss is None else rss * 1024


@dataclass
class ChildRun:
    """A finished child process: its exit status, its output and its own peak resident memory (bytes)."""

    returncode: int
    stdout: str
    stderr: str
    peak_bytes: int | None


# The launcher between this process and the measured one: Linux carries the RSS high-water mark across fork +
# exec, so a child started from a large process (a test run, the CLI with torch loaded) would report its parent's
# size. A small launcher process forks the command from itself and reports that grandchild's own ru_maxrss.
_LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def child_peak(args: list[str], *, timeout: float | None = None, env: dict | None = None,
               cwd: str | os.PathLike | None = None) -> ChildRun:
    """Run `args` to completion and return its own peak resident memory (the command's `ru_maxrss`, not this
    process's, through a small launcher: see _LAUNCHER; the launcher's ~10 MB is the floor). Past `timeout` the
    command is killed and subprocess.TimeoutExpired raised."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "maxrss"
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(report), *map(str, args)], env=env, cwd=cwd,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher leads its own group: the command goes with it
            proc.communicate()
            raise
        text = report.read_text().strip() if report.is_file() else ""
        return ChildRun(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
                        maxrss_bytes(int(text)) if text else None)
