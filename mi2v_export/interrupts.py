"""Ctrl-C / SIGTERM handling shared by `mi2v export`, `mi2v plan` and the plan's jobs.

A signal handler's KeyboardInterrupt is not enough on its own: Python drops an exception raised while a weakref
callback, `__del__` or a GC pass runs (it prints "Exception ignored in ..." and goes on), and a signal, or Ray's
cancel (`_thread.interrupt_main`), can land there. So the handler also records the signal, and long-running loops
ask `Interrupts.seen` at their checkpoints: a lost KeyboardInterrupt still stops them there.

Neither helps while the main thread sits in one long native call (a 65536x65536 convolution, a QNN graph
finalisation): Python runs signal handlers only between bytecodes, so a SIGTERM once waited ten minutes. So the
CLI also arms a watchdog (`arm_watchdog`): Python's C-level handler writes each signal to a wakeup pipe at once,
a thread reads it and, if the process has not exited GRACE_S seconds later, removes every temporary path
registered with `cleanup_on_forced_exit` (staging folders, partial files) and ends the process with os._exit —
the same "nothing written" guarantee, within seconds wherever the main thread is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

GRACE_S = 3.0  # the normal unwinding (KeyboardInterrupt → cleanup → one line) gets this long
EXIT_CODE = 130
_temporary: set[Path] = set()
_lock = threading.Lock()


@dataclass
class Interrupts:
    seen: bool = False

    def raise_if_seen(self) -> None:
        if self.seen:
            raise KeyboardInterrupt


@contextlib.contextmanager
def recorded_interrupts(*signals: signal.Signals) -> Iterator[Interrupts]:
    """While inside, each of `signals` (even one inherited as ignored, e.g. by a background job) records itself and
    raises KeyboardInterrupt; the previous handlers come back on exit. Outside the main thread no handler can be
    installed: the state then stays unseen and the main thread's own handlers apply."""
    state = Interrupts()

    def handler(signum, frame):
        state.seen = True
        raise KeyboardInterrupt

    try:
        previous = {sig: signal.signal(sig, handler) for sig in signals}
    except ValueError:  # not the main thread
        yield state
        return
    try:
        yield state
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def register_temporary(path: str | os.PathLike) -> None:
    """A forced exit by the watchdog removes `path` (file or folder) first, until `forget_temporary(path)`."""
    with _lock:
        _temporary.add(Path(path))


def forget_temporary(path: str | os.PathLike) -> None:
    with _lock:
        _temporary.discard(Path(path))


@contextlib.contextmanager
def cleanup_on_forced_exit(path: str | os.PathLike) -> Iterator[Path]:
    """`register_temporary` while inside the block."""
    register_temporary(path)
    try:
        yield Path(path)
    finally:
        forget_temporary(path)


def _remove_temporary() -> None:
    with _lock:
        paths = list(_temporary)
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()


def _watch(read_fd: int, grace_s: float, stopped: threading.Event) -> None:
    with contextlib.closing(open(read_fd, "rb", buffering=0)) as pipe:
        while not stopped.is_set():
            data = pipe.read(64)
            if not data:  # the command ended and closed the write end
                return
            _maybe_end(data, grace_s, stopped)


def _maybe_end(data: bytes, grace_s: float, stopped: threading.Event) -> None:
    if any(b in (signal.SIGINT, signal.SIGTERM) for b in data):
        if stopped.wait(grace_s):
            return
        _remove_temporary()
        os.write(2, b"error: interrupted; the running stage did not stop, so the process was ended "
                    b"(temporary files removed, nothing was written)\n")
        os._exit(EXIT_CODE)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def armed_watchdog(grace_s: float = GRACE_S) -> Iterator[None]:
    """For a whole command: SIGTERM unwinds like Ctrl-C (a KeyboardInterrupt, so `finally` blocks clean up), and
    the watchdog thread ends the process `grace_s` after a SIGINT / SIGTERM that did not end it. A no-op outside
    the main thread or where a wakeup fd is already taken (an asyncio loop)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:
        os.close(read_fd), os.close(write_fd)
        yield
        return
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    stopped = threading.Event()
    thread = threading.Thread(target=_watch, args=(read_fd, grace_s, stopped), name="mi2v-signal-watchdog",
                              daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGTERM, previous_term)
        os.close(write_fd)  # the reader ends on its own (daemon thread, closed pipe or `stopped`)
        sys.stderr.flush()
