"""`--device ios:UDID`: an iPhone timed by the Core ML XCTest (apps/ios), one bench device per compute unit.

One XCTest run (apps/ios.py `run_ios`, started by the first run()) times every component on every compute unit;
`IOSBatch` holds its reports and each `IOSDevice` hands the loop its own unit's, saved as its own report beside
`--report` (`<stem>-<unit>.json`).

The module registers the `ios` device kind: `ios:UDID` (the UDID is required), macOS only (refused at once
elsewhere), `--compute-units` (its own option, refused on other kinds) and `--dry-run`.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from ..apps.build import check_xcode, require_macos
from ..apps.ios import APP_DIR, COMPUTE_UNITS, run_ios
from ..contract import unit_from_swift
from ..errors import DeviceError, Mi2vError
from .base import BenchDevice, BenchOptions, ComponentResult, DeviceFacts, Say, Selection
from .registry import Defaults, DeviceKind, register
from .report import BenchReport
from .selection import family_of


class IOSBatch:
    """One XCTest run on the iPhone for every compute unit; its reports are shared by the units' devices."""

    def __init__(self, opts: BenchOptions, udid: str, json_path: Path, say: Say, system: str | None):
        self.opts, self.udid, self.say, self.system = opts, udid, say, system
        self.out_dir = json_path.parent if opts.json_path else None
        self.units = list(opts.compute_units or COMPUTE_UNITS)
        self.components: list[str] = []
        self.result: dict[str, BenchReport] | Mi2vError | None = None

    def run_ios(self, dry_run: bool = False, echo: Say = print) -> dict[str, BenchReport] | Mi2vError:
        if self.result is not None:
            return self.result
        o = self.opts
        try:
            reports = run_ios(self.udid, o.artifacts, o.iterations, o.warmup, dry_run, compute_units=self.units,
                              team=o.team, out_dir=self.out_dir, components=self.components or o.components,
                              timeout=o.timeout, system=self.system, app_dir=Path(o.app_dir or APP_DIR),
                              say=self.say, echo=echo)
            self.result = {unit: BenchReport.from_dict(data) for unit, data in (reports or {}).items()}
        except Mi2vError as exc:
            self.result = exc
        return self.result


class IOSDevice(BenchDevice):
    """One compute unit of an iPhone: its numbers come from the shared XCTest run (the first run() starts it)."""

    transport = "ios"
    together = True

    def __init__(self, batch: IOSBatch, unit: str, json_path: Path):
        self.batch, self.unit, self.json_path = batch, unit, json_path

    def select(self, manifest: Any, opts: BenchOptions) -> list[Selection]:
        sels = []
        for c in opts.components:
            entry = next((e for e in manifest.components if e.component == c and family_of(e) == "coreml"), None)
            sels.append(Selection(c, entry, "coreml" if entry else None,
                                  None if entry else f"no Core ML artifact for the {c} in the manifest"))
        return sels

    def report_path(self, json_path: Path) -> Path:
        return json_path.with_name(f"{json_path.stem}-{self.unit}{json_path.suffix or '.json'}")

    def print_commands(self, echo: Say) -> None:
        self.batch.run_ios(dry_run=True, echo=echo)

    def facts(self) -> DeviceFacts:
        check_xcode(self.batch.system)
        udid = self.batch.udid
        return DeviceFacts({"transport": "ios", "udid": udid, "serial": udid, "os": "ios", "simulated_device": False},
                           {"os": f"{platform.system()} {platform.release()}"}, {"compute_unit": self.unit})

    def prepare(self, sel: Selection) -> None:
        if sel.component not in self.batch.components:
            self.batch.components.append(sel.component)

    def run(self, sel: Selection, comp: ComponentResult) -> ComponentResult:
        result = self.batch.run_ios()
        if isinstance(result, Mi2vError):
            raise result
        measured = result[self.unit].component(sel.component) if self.unit in result else None
        if measured is None:
            raise DeviceError(f"not measured: the iOS test reported no {sel.component} on {self.unit}")
        return measured

    def outputs(self, sel: Selection, sets: list[Any]) -> str:
        """The XCTest checks the outputs itself (its report's output_check); reached only when it did not."""
        return "the iOS XCTest did not check the outputs (its report has no output_check for this component)"

    def finish(self, report: BenchReport) -> None:
        result = self.batch.result
        if not isinstance(result, dict) or self.unit not in result:
            return
        r = result[self.unit]
        report.device, report.tool, report.conditions = r.device, r.tool, r.conditions or report.conditions
        report.host.update(r.host)
        report.protocol.update({k: v for k, v in r.protocol.items() if k not in report.protocol
                                or k in ("warmup", "iterations", "runs", "timed_region")})
        report.warnings += [w for w in r.warnings if w not in report.warnings]


def ios_devices(opts: BenchOptions, manifest: Any, udid: str, json_path: Path, say: Say,
                system: str | None) -> list[BenchDevice]:
    """One device per compute unit to time, all fed by one XCTest run."""
    batch = IOSBatch(opts, udid, json_path, say, system)
    return [IOSDevice(batch, unit, json_path) for unit in batch.units]


# --------------------------------------------------------------------------------------------------------------------
# the ios device kind
# --------------------------------------------------------------------------------------------------------------------


def _claims(opts: BenchOptions) -> str | None:
    """--compute-units on another kind."""
    return "--compute-units chooses Core ML compute units: use it with --device ios:UDID" if opts.compute_units \
        else None


def _describe(device: dict[str, Any], protocol: dict[str, Any]) -> str:
    unit = unit_from_swift(protocol.get("compute_unit") or "") or None
    return (f"{device.get('marketing_name') or device.get('model') or device.get('name') or 'iPhone'} "
            f"({device.get('udid')}), iOS {device.get('os_version')}"
            + (f", Core ML compute units {unit}" if unit else ""))


def _open(opts: BenchOptions, manifest: Any, serial: str | None, json_path: Path, say: Say,
          system: str | None) -> list[BenchDevice]:
    return ios_devices(opts, manifest, serial or "", json_path, say, system)


register(DeviceKind(
    "ios", open=_open, serial="required", spellings=("ios:UDID",),
    missing_serial="--device ios needs the iPhone's UDID: --device ios:UDID (`xcrun devicectl list devices` shows it)",
    defaults=Defaults(iterations=50, warmup=5, cooldown=30.0), dry_run=True, requires=require_macos, claims=_claims,
    describe=_describe))
