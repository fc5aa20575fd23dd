"""Small rich helpers shared by the command modules."""

from __future__ import annotations

import json
import os
import sys

from rich.console import Console

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


def component_list(value: str) -> str:
    """Typer callback of `--component`: 'all' or a comma list of components, checked as a usage error."""
    import typer

    from ..contract import parse_components
    from ..errors import BadInputError

    try:
        names = parse_components(value)
    except BadInputError as exc:
        raise typer.BadParameter(str(exc)) from None
    return ",".join(names)
