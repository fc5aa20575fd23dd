"""The registry of runtime adapters: each adapter module registers its runtimes when imported (the package's
`__init__` imports them), and every consumer finds them here: by name (`get`), by manifest entry (`for_entry`,
the one artifact selection of generate, verify and the host bench), or by file suffix (an artifact without a
manifest entry). Torch-free."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..errors import BadInputError
from .base import Runtime

_RUNTIMES: dict[str, Runtime] = {}


def register(runtime: Runtime) -> Runtime:
    """Add a runtime under its name (a second runtime of the same name is a programming error)."""
    if runtime.name in _RUNTIMES and _RUNTIMES[runtime.name] is not runtime:
        raise RuntimeError(f"two runtimes named {runtime.name!r}")
    _RUNTIMES[runtime.name] = runtime
    return runtime


def all() -> list[Runtime]:  # noqa: A001 - the registry's own vocabulary: runtimes.all()
    """Every registered runtime, in registration order."""
    return list(_RUNTIMES.values())


def names() -> list[str]:
    return list(_RUNTIMES)


def get(name: str) -> Runtime:
    """The runtime of that name; BadInputError listing the names otherwise."""
    if name not in _RUNTIMES:
        raise BadInputError(f"unknown runtime {name}; choose from {', '.join(_RUNTIMES)}")
    return _RUNTIMES[name]


def for_entry(entry: Any) -> list[Runtime]:
    """The runtimes that accept a manifest entry (anything with `.target` and `.delegate`), in registry order."""
    return [r for r in _RUNTIMES.values() if r.accepts(entry)]


def for_target(target: str, delegate: str | None = None) -> list[Runtime]:
    """`for_entry` for a target and delegate without a manifest entry (what an exporter knows before writing one)."""
    return for_entry(SimpleNamespace(target=target, delegate=delegate))


def runnable(entry: Any) -> Runtime | None:
    """The first runtime that accepts the entry and is available here, else None."""
    return next((r for r in for_entry(entry) if r.available() is None), None)


def why_not(entry: Any) -> str | None:
    """None when a runtime here runs the entry; else one line: the first accepting runtime's reason, or that no
    registered runtime runs that kind of artifact."""
    accepting = for_entry(entry)
    reasons = [r.available() for r in accepting]
    if any(why is None for why in reasons):
        return None
    if not accepting:
        kind = entry.target + (f"/{entry.delegate}" if entry.delegate else "")
        return f"no runtime in mi2v's registry runs {kind} artifacts"
    return reasons[0]


def for_path(path: str | os.PathLike) -> list[Runtime]:
    """The runtimes that load files of this suffix (an artifact given without its manifest entry)."""
    suffix = Path(path).suffix.lower()
    return [r for r in _RUNTIMES.values() if r.suffix == suffix]
