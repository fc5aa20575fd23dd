"""The `mi2v` command line: a thin Typer shell over the library.

Each command group lives in `mi2v_export/commands/<name>.py` and registers itself on `app` through `register(app)`;
this module only builds the app, wires the modules listed in COMMAND_MODULES, sets the log level (-v / -q) and
with it what libraries may print (their loggers, Python warnings, native output: only with -v), and
turns every error a user can cause into one `error:` line on stderr and a non-zero exit code: usage errors (bad
option, bad value, missing argument, unknown command) exit 2 after the usage line, `Mi2vError`s exit with their
own code. A traceback means a bug.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import warnings
from pathlib import Path

import typer
from typer._click import exceptions as click_exc

from .commands._native_output import library_output_captured
from .commands._render import err_console
from .errors import Mi2vError, first_line
from .interrupts import armed_watchdog
from .manifest import tool_version

# One entry per command module; adding a command is adding a file and a name here. A dotted name is a module
# outside mi2v_export/commands: the simulator's `devices simulate|profile` (the simulator package stays apart).
COMMAND_MODULES = ["info", "checkpoint", "export", "bench", "generate", "devices", "app", "release", "quantize",
                   "mi2v_export.simulator.cli",
                   "verify"]

app = typer.Typer(
    name="mi2v",
    help="MobileI2V deployment toolchain: inspect checkpoints, export to ONNX / Core ML / ExecuTorch, "
    "verify numerics, benchmark on phones.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


class _ConsoleLogHandler(logging.Handler):
    """Log records as plain lines on stderr: progress notes dim, warnings and errors prefixed."""

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            err_console.print(f"{record.levelname.lower()}: {msg}", style="yellow", highlight=False, markup=False)
        else:
            err_console.print(msg, style="dim", highlight=False, markup=False)


# libraries' notices about their own internals (torch's pytree on torchao's enums, diffusers on torchao tensors,
# torchao's CUDA kernels that a CPU wheel cannot load, torch's LeafSpec): not the user's business, shown with -v
# coremltools: off macOS every import warns that its native proxies are missing, plus untested-version notes;
# torch.onnx's op registry: "torchvision is not installed. Skipping torchvision::nms" (4 lines per ONNX export)
LIBRARY_CHATTER_LOGGERS = ("torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer", "torchao",
                           "coremltools", "torch.onnx._internal.exporter._registration")
LIBRARY_CHATTER_WARNINGS = (r".*isinstance\(treespec, LeafSpec\).*",)
# the commands that load native runtimes (ExecuTorch, onnxruntime, the QNN SDK): without -v their own prints to
# fd 1 / fd 2 are dropped while the command runs (commands/_native_output.py library_output_captured). Not
# `app build` or `devices simulate`, whose child processes (gradle, the simulated phone) talk to the user through
# those fds.
NATIVE_RUNTIME_COMMANDS = ("export", "generate", "verify", "bench", "quantize")
# where mi2v's own warnings.warn calls live (the exporters package is a folder of its own, pyproject.toml)
_EXPORTERS = importlib.util.find_spec("mi2v_export.exporters")
OWN_CODE = tuple(str(Path(p).resolve()) + os.sep
                 for p in [Path(__file__).parent, *((_EXPORTERS and _EXPORTERS.submodule_search_locations) or ())])


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings as log lines, never a raw `path:line: UserWarning: …` pair: mi2v's own UserWarnings (seeded
    weights, …) are `warning:` lines; libraries' warnings and numpy's RuntimeWarnings are debug, shown with -v."""
    text = " ".join(str(message).split()) or category.__name__
    log = logging.getLogger("mi2v.warnings")
    if issubclass(category, UserWarning) and str(Path(filename).resolve()).startswith(OWN_CODE):
        log.warning(text)
    else:
        log.debug("%s: %s (%s:%s)", category.__name__, text, filename, lineno)


def configure_logging(verbose: bool, quiet: bool) -> None:
    """-v: debug, and libraries' own output (their levels as they set them); default: progress notes, libraries'
    warnings only; -q: warnings only. Called twice per command (defaults first, then the flags): each call sets
    every level, so -v undoes the defaults."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    log = logging.getLogger("mi2v")
    log.handlers[:] = [_ConsoleLogHandler()]
    log.setLevel(level)
    log.propagate = False
    root = logging.getLogger()
    if not root.handlers:  # a library's logging.basicConfig() is then a no-op (Core ML partitioner: 4 INFO lines
        root.addHandler(_ConsoleLogHandler())  # per component)
    for handler in root.handlers:
        if isinstance(handler, _ConsoleLogHandler):
            handler.setLevel(logging.NOTSET if verbose else logging.WARNING)
    for name in LIBRARY_CHATTER_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)
    warnings.showwarning = _show_warning
    if not verbose:
        for pattern in LIBRARY_CHATTER_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern, category=FutureWarning)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mi2v {tool_version()}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging, and native libraries' own output"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="warnings and errors only (no progress notes)"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    """MobileI2V deployment toolchain: inspect checkpoints, export to ONNX / Core ML / ExecuTorch, verify
    numerics, benchmark on phones."""
    if verbose and quiet:
        raise typer.BadParameter("use either --verbose or --quiet", param_hint="'-v' / '-q'")
    configure_logging(verbose, quiet)
    if ctx.invoked_subcommand in NATIVE_RUNTIME_COMMANDS:
        ctx.with_resource(library_output_captured())  # until the command returns or raises


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(name if "." in name else f"mi2v_export.commands.{name}")
        module.register(app)


_register_commands()


def _usage_error(exc: click_exc.UsageError) -> int:
    """The usage line of the command, then one `error:` line; exit 2."""
    ctx = exc.ctx
    if ctx is not None:
        print(ctx.get_usage(), file=sys.stderr)
        print(f"Try '{ctx.command_path} --help' for help.", file=sys.stderr)
    message = " ".join(exc.format_message().split()).replace("Value error, ", "")  # one line, even for a choice list
    print(f"error: {message}", file=sys.stderr)
    return 2


def _click_error(exc: Exception) -> int:
    """Typer's bundled click exceptions: help asked for by giving no arguments, usage errors, file errors."""
    if isinstance(exc, click_exc.NoArgsIsHelpError):
        print(exc.format_message())  # `mi2v` or `mi2v devices` alone: the help, on stdout
        return 0
    if isinstance(exc, click_exc.UsageError):
        return _usage_error(exc)
    print(f"error: {' '.join(exc.format_message().split())}", file=sys.stderr)
    return getattr(exc, "exit_code", 1)


# what allocators say when memory runs out (torch's CPU allocator, onnxruntime's arena, std::bad_alloc)
OUT_OF_MEMORY_TEXT = ("can't allocate memory", "cannot allocate memory", "out of memory", "bad_alloc",
                      "bad allocation", "failed to allocate memory")


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or any(t in str(exc).lower() for t in OUT_OF_MEMORY_TEXT)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    configure_logging(verbose=False, quiet=False)
    try:
        with armed_watchdog():  # SIGTERM / Ctrl-C end any command within seconds (mi2v_export/interrupts.py)
            rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except Mi2vError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        print(f"error: out of memory ({type(exc).__name__}: {first_line(exc, 160)}); nothing was written — choose "
              "a smaller --resolution / --frames, or a machine with more memory", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # the environment, not the input: a full disk, a folder this user may not write
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or first_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted; nothing was left half-written", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:  # raised by commands that want a specific exit code
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except typer.TyperException as exc:  # typer 0.29's bundled click exceptions
        sys.exit(_click_error(exc))


if __name__ == "__main__":
    main()
