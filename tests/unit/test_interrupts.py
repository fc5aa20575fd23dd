"""mi2v_export.interrupts: a KeyboardInterrupt that Python drops is still seen at the next checkpoint."""

from __future__ import annotations

import signal
import sys
import threading
import weakref

import pytest

from mi2v_export.interrupts import recorded_interrupts


class _Anything:
    pass


def test_an_interrupt_dropped_in_a_weakref_callback_is_still_seen(monkeypatch):
    dropped = []  # what Python reports as "Exception ignored in ..." and goes on
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_type))
    previous = signal.getsignal(signal.SIGINT)
    with recorded_interrupts(signal.SIGINT, signal.SIGTERM) as interrupts:
        obj = _Anything()
        ref = weakref.ref(obj, lambda _: signal.raise_signal(signal.SIGINT))
        del obj  # the handler raises inside the callback, where Python drops it
        assert ref() is None and dropped == [KeyboardInterrupt] and interrupts.seen
        with pytest.raises(KeyboardInterrupt):
            interrupts.raise_if_seen()
    assert signal.getsignal(signal.SIGINT) is previous


def test_outside_the_main_thread_nothing_is_installed():
    results = []

    def job():
        with recorded_interrupts(signal.SIGINT) as interrupts:
            results.append((interrupts.seen, signal.getsignal(signal.SIGINT)))

    previous = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    assert results == [(False, previous)]
