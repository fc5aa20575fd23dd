"""Native libraries' own output, kept off the terminal without -v: what they print straight to fd 1 / fd 2 goes to
/dev/null while a command runs, and the C++ log lines they send through Python's sys.stderr are filtered out
(`library_output_captured`, entered by mi2v_export/cli.py for the commands that load native runtimes). Python's own
output (results, progress, notes, errors) still reaches the terminal."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator

from ._render import is_verbose

# `[cpuinfo_utils.cpp:71] `: the head of a C++ log line (ExecuTorch's pybindings); what may still grow into one
NATIVE_LOG_HEADER = re.compile(r"\[[\w.+-]+\.(?:c|cc|cpp|cxx|h|hpp|m|mm):\d+\] ")
_HEADER_SO_FAR = re.compile(r"\[[\w.+-]*(?::\d*(?:\])?)?")
_LINE_PIECES = re.compile(r"(?<=\n)")


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # pytest's capture, a closed or in-memory stream
        return None


def _flush_c_stdio() -> None:
    with contextlib.suppress(OSError, AttributeError, TypeError):  # no C library to load (Windows)
        ctypes.CDLL(None).fflush(None)


class _CapturedStream:
    """sys.stdout / sys.stderr while native output is captured: Python's writes go on to `stream`. On stderr
    (`filtering`) minus the lines of C++ logs: ExecuTorch's pybindings send std::cerr to Python's sys.stderr
    (pybind11's stream redirect), a piece per write — `[`, `cpuinfo_utils.cpp`, `:`, `71`, `] `, the message, a
    newline — so fd 2 never sees them. Text that may still become such a `[file.cpp:N] ` header is held back; a
    line that is one is dropped; anything else passes unchanged. `end` points it back at the original stream, for
    whoever kept a reference (a logging.StreamHandler made during the command)."""

    def __init__(self, stream, filtering: bool):
        self.stream = stream
        self.filtering = filtering
        self.held = ""
        self.at_line_start = True
        self.dropping = False

    def write(self, text: str) -> int:
        if not self.filtering:
            return self.stream.write(text)
        for piece in _LINE_PIECES.split(text):
            if piece:
                self._write_piece(piece)
        return len(text)

    def _write_piece(self, piece: str) -> None:  # a piece holds at most one newline, at its end
        if self.dropping:
            self.at_line_start = piece.endswith("\n")
            self.dropping = not self.at_line_start
            return
        if self.held or (self.at_line_start and piece.startswith("[")):
            self.held += piece
            if NATIVE_LOG_HEADER.match(self.held):
                self.at_line_start = self.held.endswith("\n")
                self.dropping, self.held = not self.at_line_start, ""
                return
            if _HEADER_SO_FAR.fullmatch(self.held):
                return
            piece, self.held = self.held, ""
        self.stream.write(piece)
        self.at_line_start = piece.endswith("\n")

    def end(self, original) -> None:
        """What is still held goes out (a lone `[` at the very end of a command); from now on `original`."""
        if self.held:
            self.stream.write(self.held)
            self.held = ""
        self.stream.flush()
        self.stream, self.filtering = original, False

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding, … of the stream underneath
        return getattr(self.stream, name)


class _NativeOutputCapture:
    """fd 1 and fd 2 on /dev/null, sys.stdout / sys.stderr on copies of the original descriptors (see
    library_output_captured). `release_fds` may run on the signal thread: it only puts the descriptors back."""

    def __init__(self):
        self.saved: dict[int, int] = {}
        self.streams: list[tuple[str, object, object]] = []  # (sys attribute, original, replacement)
        self.lock = threading.Lock()

    def start(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        _flush_c_stdio()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            for fd, name in ((1, "stdout"), (2, "stderr")):
                self.saved[fd] = os.dup(fd)
                stream = target = getattr(sys, name)
                if _fileno(stream) == fd:  # Python's writes keep going where they went
                    target = open(self.saved[fd], "w", encoding=stream.encoding, errors=stream.errors,  # noqa: SIM115
                                  buffering=1, closefd=False)
                self.streams.append((name, stream, _CapturedStream(target, filtering=(name == "stderr"))))
                setattr(sys, name, self.streams[-1][2])
                os.dup2(devnull, fd)
        finally:
            os.close(devnull)

    def release_fds(self) -> None:
        _flush_c_stdio()  # a native printf to a piped stdout sits in C's buffer: it must go to /dev/null too
        with self.lock:
            for fd, saved in self.saved.items():
                os.dup2(saved, fd)

    def stop(self) -> None:
        for name, original, captured in self.streams:
            copy = captured.stream
            captured.end(original)
            setattr(sys, name, original)
            if copy is not original:
                copy.close()  # closefd=False: the saved descriptor is closed below
        self.release_fds()
        with self.lock:
            for saved in self.saved.values():
                os.close(saved)
            self.saved.clear()


def _release_on_signal(read_fd: int, chained: int, capture: _NativeOutputCapture) -> None:
    """The wakeup-fd reader: at SIGINT / SIGTERM the descriptors go back at once (the main thread may be stuck
    in a native call), then the bytes go on to the wakeup fd set before (the signal watchdog of
    mi2v_export/interrupts.py, whose last line is written to fd 2)."""
    with open(read_fd, "rb", buffering=0) as pipe:
        while data := pipe.read(64):
            if signal.SIGINT in data or signal.SIGTERM in data:
                capture.release_fds()
            if chained >= 0:
                with contextlib.suppress(OSError):
                    os.write(chained, data)


@contextlib.contextmanager
def library_output_captured() -> Iterator[None]:
    """Without -v, native libraries' own prints are dropped while a command runs: what they write straight to
    fd 1 / fd 2 (the QNN HTP library's `# LIBNATIVE: …` line, on stdout, when a QNN session opens:
    onnxruntime_qnn/libQnnHtp.so) goes to /dev/null, and C++ log lines sent to Python's sys.stderr (ExecuTorch's
    `[cpuinfo_utils.cpp:…]` lines when an XNNPACK method first loads, libexecutorch_threadpool.so) are filtered
    out. Python's own output, tables, progress and one-line errors included, still reaches the terminal. With -v
    nothing is touched. A SIGINT / SIGTERM gives the descriptors back at once, so what follows it is seen."""
    if is_verbose():
        yield
        return
    capture = _NativeOutputCapture()
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        chained = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:  # not the main thread: no signal can be seen here, nothing is captured
        os.close(read_fd), os.close(write_fd)
        yield
        return
    watcher = threading.Thread(target=_release_on_signal, args=(read_fd, chained, capture), daemon=True,
                               name="mi2v-native-output")
    watcher.start()
    try:
        capture.start()
        yield
    finally:
        capture.stop()
        signal.set_wakeup_fd(chained, warn_on_full_buffer=False)
        os.close(write_fd)  # the watcher reads EOF and ends
