"""The device kinds of `mi2v bench`: each kind registers itself from its own module; the bench finds it here.

A kind is one way of timing components: where (`transport`: the `--device` prefix `host`, `adb` or `ios`, which is
also the report's `device.transport`) and how (`via`: `--via runner`, the default, or another way of driving the
same transport, such as the Android benchmark app). A kind says how `--device` spells it and whether a serial
follows the prefix, opens the device(s) to time on, gives the protocol's defaults, checks the options only it uses
(and rejects them on other kinds), refuses the artifacts it cannot run and describes a report's device in one line.

    register(DeviceKind("host", open=open_host, serial="none", spellings=("host",), ...))   # in devices/host.py

Adding a device kind is one module under mi2v_export/devices/: a `BenchDevice` subclass (devices/base.py) and its
`register(DeviceKind(...))`, named in devices/kinds.py (the list of kind modules the bench loop imports). Nothing
here imports a kind, so the kinds import this module without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import BadInputError

SERIAL_RULES = ("none", "optional", "required")
DEFAULT_VIA = "runner"  # `--via`'s default: a transport's own way of running


@dataclass(frozen=True)
class Defaults:
    """The protocol a kind runs when `--iterations`, `--warmup` and `--cooldown` are not given."""

    iterations: int
    warmup: int
    cooldown: float


def _nothing(*_: Any) -> None:
    return None


def _no_refusal(entry: Any, runtime: str) -> str | None:
    return None


def _transport_only(device: dict[str, Any], protocol: dict[str, Any]) -> str:
    return str(device.get("transport"))


@dataclass(frozen=True)
class DeviceKind:
    """One device kind. `open(opts, manifest, serial, json_path, say, system)` returns the `BenchDevice`s to time on
    (iOS: one per compute unit); nothing is contacted before their `facts()`.

    `serial`, `spellings` and `missing_serial` are read from a transport's own kind (via `runner`): whether a
    serial follows `TRANSPORT:` ("none", "optional", "required"), how the `--device` error lists the kind, and the
    error when a required serial is missing. `requires(system)` refuses a machine that cannot drive the kind (iOS:
    not macOS). `check(opts)` refuses impossible values of the kind's own options; `claims(opts)` is the error when
    those options are given to another kind (None when they are not set). `refuses(entry, runtime)` says why an
    artifact cannot run on the kind (None when it can; the checks common to every kind are selection.py's).
    `describe(device, protocol)` is the report's device in one line (the bench table's title)."""

    transport: str
    open: Callable[..., list[Any]]
    via: str = DEFAULT_VIA
    serial: str = "optional"
    spellings: tuple[str, ...] = ()
    missing_serial: str = ""
    defaults: Defaults = Defaults(iterations=10, warmup=2, cooldown=0.0)
    dry_run: bool = False  # `--dry-run` prints the commands this kind would run
    requires: Callable[[str | None], None] = _nothing
    check: Callable[[Any], None] = _nothing
    claims: Callable[[Any], str | None] = _nothing
    refuses: Callable[[Any, str], str | None] = _no_refusal
    describe: Callable[[dict[str, Any], dict[str, Any]], str] = _transport_only


_KINDS: list[DeviceKind] = []


def register(kind: DeviceKind) -> DeviceKind:
    """Make a kind available to `mi2v bench` (called once, from the kind's own module)."""
    if kind.serial not in SERIAL_RULES:
        raise ValueError(f"device kind {kind.transport!r}: serial must be one of {SERIAL_RULES}, not {kind.serial!r}")
    if find(kind.transport, kind.via) is not None:
        raise ValueError(f"device kind {kind.transport!r} via {kind.via!r} is registered twice")
    _KINDS.append(kind)
    return kind


def all_kinds() -> list[DeviceKind]:
    """Every registered kind, in registration order (devices/kinds.py imports them)."""
    return list(_KINDS)


def find(transport: str | None, via: str | None = DEFAULT_VIA) -> DeviceKind | None:
    return next((k for k in _KINDS if k.transport == transport and k.via == via), None)


def transport_kind(transport: str) -> DeviceKind:
    """A transport's own kind (via `runner`); LookupError for a transport no module registered."""
    kind = find(transport)
    if kind is None:
        raise LookupError(f"no device kind {transport!r} is registered (mi2v_export/devices/kinds.py imports them)")
    return kind


def vias() -> tuple[str, ...]:
    return tuple(dict.fromkeys(k.via for k in _KINDS))


def parse_device(text: str) -> tuple[str, str | None]:
    """"host" → ("host", None); "adb" → ("adb", None); "adb:SERIAL" → ("adb", SERIAL); "ios:UDID" → ("ios", UDID):
    `TRANSPORT[:SERIAL]`, with each transport's own rule for the serial."""
    t = (text or "").strip()
    prefix, sep, rest = t.partition(":")
    rest = rest.strip()
    kind = find(prefix)
    if kind is not None:
        if kind.serial == "required" and not rest:
            raise BadInputError(kind.missing_serial or f"--device {prefix} needs a serial: --device {prefix}:SERIAL")
        if kind.serial == "required" or (kind.serial == "optional" and rest):
            return prefix, rest
        if not sep:
            return prefix, None
    names = [s for k in _KINDS if k.via == DEFAULT_VIA for s in k.spellings]
    listed = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)
    raise BadInputError(f"--device {text!r} is not {listed} (see `mi2v devices list`)")


def kind_for(transport: str, via: str) -> DeviceKind:
    """The kind `--device TRANSPORT --via VIA` names: the transport's kind of that way, else its own kind (a `--via`
    it does not have is then refused by the kind that claims it, `claims`)."""
    known = vias()
    if via not in known:
        raise BadInputError(f"--via {via!r}: use {' or '.join(known)}")
    return find(transport, via) or transport_kind(transport)


def describe(device: dict[str, Any], protocol: dict[str, Any]) -> str:
    """The report's device in one line, by the kind that measured it (`protocol.mode` names a `--via` kind)."""
    transport = device.get("transport")
    kind = find(transport, protocol.get("mode")) or find(transport)
    return kind.describe(device, protocol) if kind is not None else f"a {transport or 'unknown'} device"
