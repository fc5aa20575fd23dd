"""How the commands print: the result (tables on stdout, `print_json`), progress and notes (the one convention,
below), and the console policy of -v / -q: `is_quiet` / `is_verbose` (read from the level `cli.configure_logging`
sets, the one record of the flags) and `library_output_captured`, which keeps native libraries' own prints off the
terminal without -v."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

LOG_WIDTH = 160  # pipes and CI logs: rich would assume 80 columns and cut every table cell to an ellipsis


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    piped = not (hasattr(stream, "isatty") and stream.isatty())
    return Console(stderr=stderr, width=LOG_WIDTH if piped and "COLUMNS" not in os.environ else None)


console = _console()
err_console = _console(stderr=True)


def print_json(data) -> None:
    """Machine-readable output: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def human_count(n: int) -> str:
    return f"{n:,}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


# ---- -v / -q -------------------------------------------------------------------------------------------------------


def is_verbose() -> bool:
    """`mi2v -v`: the level cli.configure_logging set on the `mi2v` logger is the one record of -v / -q."""
    return logging.getLogger("mi2v").isEnabledFor(logging.DEBUG)


def is_quiet() -> bool:
    """`mi2v -q`: no progress lines, spinners, stage lines or notes; warnings, errors and the command's result."""
    return not logging.getLogger("mi2v").isEnabledFor(logging.INFO)


# ---- progress and notes ---------------------------------------------------------------------------------------------
# The one convention of every command: stdout holds the result (a table, the `wrote …` line, JSON); what is happening
# (`say`, the live views) and what to know before a run (`note`) go to stderr and are dropped with -q. Notes that
# qualify the result (the video is noise; an artifact that could not run here) are part of it: `result_notes`, on
# stdout, even with -q. Library code reports through callbacks in three shapes, each rendered here into the same
# stderr view: devices' and apps' `Say` (text) takes `say`; the pipeline's `ProgressFn` (stage, done, total) takes
# `stage_bars`; the exporters' `ProgressEvent` takes `stage_spinners`.


def say(text: str) -> None:
    """One progress line on stderr (dim, taken as plain text); none with -q. The `Say` handed to library code
    (mi2v_export/devices/base.py)."""
    if not is_quiet():
        err_console.print(text, style="dim", highlight=False, markup=False, soft_wrap=True)


def note(text: str) -> None:
    """A `note:` line on stderr about the run about to start (not part of the result); none with -q."""
    if not is_quiet():
        err_console.print(f"[dim]note:[/] {escape(text)}", highlight=False, soft_wrap=True)


def result_notes(notes: Iterable[str], style: str = "dim") -> None:
    """`note:` lines on stdout after the result, with -q too: they qualify it (seeded weights, a file not run here)."""
    for text in notes:
        console.print(f"[{style}]note:[/] {escape(text)}", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _live_view(*columns) -> Iterator[Progress | None]:
    """A live progress view on stderr; with -q none (the context gives None, the adapters then do nothing)."""
    if is_quiet():
        yield None
        return
    with Progress(*columns, console=err_console, transient=False) as view:
        yield view


def bars_view():
    """Progress bars with a count (steps, frames): what `stage_bars` draws into."""
    return _live_view(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def spinners_view():
    """A spinner per component and a line per finished stage: what `stage_spinners` draws into."""
    return _live_view(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())


def stage_bars(view: Progress | None, labels: dict[str, str]) -> Callable[[str, int, int], None]:
    """A pipeline `ProgressFn` (stage, done, total) → one bar per stage, named by `labels` (a `prefix · stage` keeps
    its prefix); a no-op without a view (-q)."""
    if view is None:
        return lambda stage, done, total: None
    tasks: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            prefix, _, name = stage.rpartition(" · ")
            label = labels.get(name, name)
            tasks[stage] = view.add_task(f"{prefix} · {label}" if prefix else label, total=total)
        view.update(tasks[stage], completed=done, total=total)
    return progress


def stage_spinners(view: Progress | None) -> Callable[[object], None]:
    """An exporter `ProgressCallback` (ProgressEvent: component, stage, state, detail, seconds; exporters/base.py)
    → a spinner line per component and a `✓ component stage 1.2s` line per finished stage; a no-op without a
    view."""
    if view is None:
        return lambda event: None
    tasks: dict[str, int] = {}

    def progress(event) -> None:
        task = tasks.get(event.component)
        if task is None:
            task = tasks[event.component] = view.add_task(event.component, total=None)
        if event.state == "start":
            detail = f" — {event.detail}" if event.detail else ""
            view.update(task, description=f"[bold]{event.component}[/] {event.stage}{detail}")
        elif event.state in ("done", "skip", "info"):
            secs = f" {event.seconds:.1f}s" if event.seconds is not None else ""
            detail = f"  {event.detail}" if event.detail else ""
            mark = {"done": "✓", "skip": "–", "info": "·"}[event.state]
            view.console.print(f"  {mark} {event.component} {event.stage}{secs}{detail}", highlight=False)
            if event.stage == "verify":
                view.update(task, description=f"[bold]{event.component}[/] done", total=1, completed=1)
    return progress


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool) -> Iterator[None]:
    """With --json, native libraries' prints (ExecuTorch, onnxruntime; with -v they are not captured, see
    commands/_native_output.py) must not reach stdout: fd 1 points at fd 2 while the command runs."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
