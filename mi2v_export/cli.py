"""The `mi2v` command line: a thin Typer shell over the library.

Each command group lives in `mi2v_export/commands/<name>.py` and registers itself on `app` through `register(app)`;
this module only builds the app, wires the modules listed in COMMAND_MODULES, and turns user-facing errors
(`Mi2vError`) into one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from .errors import Mi2vError

# One entry per command module; adding a command is adding a file and a name here.
COMMAND_MODULES = ["info", "checkpoint", "export", "bench", "generate", "devices", "quantize"]

app = typer.Typer(
    name="mi2v",
    help="MobileI2V deployment toolchain: inspect checkpoints, export to ONNX / Core ML / ExecuTorch, "
    "verify numerics, benchmark on phones.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"mi2v_export.commands.{name}")
        module.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except Mi2vError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); nothing was left half-written", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:  # raised by commands that want a specific exit code
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:  # click usage errors come through here in standalone_mode=False
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
