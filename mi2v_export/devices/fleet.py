"""Several phones at once: `mi2v bench --device adb:all` (every ready phone) or `adb:S1,S2,…` (these serials), on
the local adb server and on any `--adb-server HOST:PORT` (an adb server on another machine, reached like
`adb -H HOST -P PORT`; `ADB_SERVER_SOCKET=tcp:HOST:PORT` also moves the default server, as for adb itself).

Each phone runs the one single-device bench (`bench.run_bench`) in its own thread with its own report file
(`<report stem>-<serial>.json`); the phones are independent, so a phone that fails does not stop the others.
`comparison` turns the reports into one row per phone.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..contract import COMPONENTS
from ..errors import BadInputError, DeviceError, Mi2vError, first_line
from .adb import Adb
from .bench import default_report_path, run_bench


@dataclass(frozen=True)
class Phone:
    serial: str
    server: tuple[str, int] | None = None  # the adb server it is attached to (None: the default one)

    @property
    def label(self) -> str:
        return self.serial if self.server is None else f"{self.serial}@{self.server[0]}:{self.server[1]}"


@dataclass
class PhoneResult:
    phone: Phone
    reports: list  # [(BenchReport, Path)]
    error: Mi2vError | None
    started_at: str = ""  # UTC, millisecond resolution: shows the phones ran at the same time
    finished_at: str = ""


def is_fleet(device: str) -> bool:
    """`adb:all` or a comma list of serials: the multi-phone path."""
    text = (device or "").strip()
    return text == "adb:all" or (text.startswith("adb:") and "," in text)


def parse_server(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInputError(f"--adb-server {text!r}: expected HOST:PORT of an adb server (e.g. lab-mac:5037)")
    return host, int(port)


def find_phones(device: str, servers: list[tuple[str, int]], adb_path: Path | None,
                adb_port: int | None) -> list[Phone]:
    """The phones `device` names, each with the server it is attached to; DeviceError when one is missing."""
    attached: list[tuple[Phone, str]] = []  # (phone, state)
    for server in servers or [None]:
        host, port = server if server else (None, adb_port)
        adb = Adb(adb_path, server_port=port, server_host=host)
        attached += [(Phone(d.serial, server), d.state) for d in adb.devices()]
    ready = [p for p, state in attached if state == "device"]
    wanted = device.strip()[4:]
    if wanted == "all":
        if not ready:
            where = ", ".join(f"{h}:{p}" for h, p in servers) or "the local adb server"
            raise DeviceError(f"--device adb:all: no phone is ready on {where} (`mi2v devices list`)")
        return ready
    phones = []
    for serial in [s.strip() for s in wanted.split(",") if s.strip()]:
        hit = next((p for p in ready if p.serial == serial), None)
        if hit is None:
            state = next((s for p, s in attached if p.serial == serial), None)
            raise DeviceError(f"--device: {serial} is " + (f"{state}, not ready" if state else
                                                           "not attached to any adb server given"))
        phones.append(hit)
    return phones


def report_path_for(base: Path | None, phone: Phone) -> Path:
    if base is None:
        return default_report_path("adb", phone.label)
    tag = re.sub(r"[^\w.-]+", "_", phone.label)
    return Path(base).with_name(f"{Path(base).stem}-{tag}{Path(base).suffix or '.json'}")


def bench_phones(opts: Any, phones: list[Phone], say=None) -> list[PhoneResult]:
    """Run the single-device bench on every phone at once (one thread each) and collect each outcome."""
    results: dict[Phone, PhoneResult] = {}

    def one(phone: Phone) -> None:
        host, port = phone.server if phone.server else (None, opts.adb_port)
        mine = replace(opts, device=f"adb:{phone.serial}", adb_host=host, adb_port=port,
                       json_path=report_path_for(opts.json_path, phone))
        started = _now()
        try:
            outcome = run_bench(mine, say or (lambda _: None))
            results[phone] = PhoneResult(phone, outcome.reports, outcome.error, started, _now())
        except Mi2vError as exc:
            results[phone] = PhoneResult(phone, [], exc, started, _now())
        except Exception as exc:  # a bug on one phone's path must not lose the others' results
            results[phone] = PhoneResult(phone, [], DeviceError(f"{type(exc).__name__}: {exc}"), started, _now())

    # daemon threads: a Ctrl-C ends the command at once (the adb clients get the terminal's SIGINT too)
    threads = [threading.Thread(target=one, args=(p,), name=f"bench-{p.label}", daemon=True) for p in phones]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)
    return [results[p] for p in phones]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def comparison(results: list[PhoneResult]) -> list[dict[str, Any]]:
    """One row per phone: identity, each component's median latency, per-frame latency (1 and 2 steps), status."""
    rows = []
    for r in results:
        report = r.reports[0][0] if r.reports else None
        dev = (report.device if report else None) or {}
        row: dict[str, Any] = {"phone": r.phone.label, "model": dev.get("model"), "soc": dev.get("soc_model"),
                               "simulated": bool(dev.get("simulated_device")),
                               "report": str(r.reports[0][1]) if r.reports else None,
                               "status": "ok" if r.error is None else "failed",
                               "started_at": r.started_at, "finished_at": r.finished_at,
                               "error": None if r.error is None else first_line(r.error)}
        for comp in COMPONENTS:
            c = report.component(comp) if report else None
            row[f"{comp}_p50_ms"] = c.median_ms() if c is not None else None
        for steps in (1, 2):
            row[f"per_frame_ms_{steps}_step"] = report.per_frame_ms(steps) if report else None
        rows.append(row)
    return rows
