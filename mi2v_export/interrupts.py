"""Ctrl-C / SIGTERM handling shared by `mi2v export`, `mi2v plan` and the plan's jobs.

A signal handler's KeyboardInterrupt is not enough on its own: Python drops an exception raised while a weakref
callback, `__del__` or a GC pass runs (it prints "Exception ignored in ..." and goes on), and a signal, or Ray's
cancel (`_thread.interrupt_main`), can land there. So the handler also records the signal, and long-running loops
ask `Interrupts.seen` at their checkpoints: a lost KeyboardInterrupt still stops them there.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass


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
