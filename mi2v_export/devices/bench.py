"""`mi2v bench`: time the exported components on any device with one loop, and write the report.

    outcome = run_bench(BenchOptions(artifacts=Path("artifacts/tiny"), device="adb:127.0.0.1:5555"))
    for report, path in outcome.reports: ...        # iOS: one report per compute unit; a dry run: none
    outcome.error                                  # the first failure (None when every component ran)

The artifacts come from `DIR/manifest.json`; the device kind `--device` / `--via` name (devices/registry.py, each
kind registered by its own module, all of them imported through devices/kinds.py) opens the `BenchDevice`(s)
(devices/base.py) and chooses an artifact per component (devices/selection.py). Each artifact's files are checked
against the manifest's sha256 and size by the one integrity policy (mi2v_export/integrity.py: refused unless
`--allow-modified`, which records them in the report's `modified_files`) before it is timed.

`bench_device` is the one loop: device facts, every component prepared, then per component a cool-down (and the
device's thermal gate), the run, the heat check; a failure is recorded on its component (status "failed", one line)
and the others still run unless the device itself is gone; once the device has answered, the report is always saved
(atomically, a Ctrl-C too; kept in the temporary folder if its folder cannot be written), while a device that never
answers is one error line and no report file (nothing was measured).
The headline is the per-frame latency (encoder + steps × denoiser + decoder medians) / frames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import runtimes
from ..errors import BadInputError, DeviceError, MissingDependencyError, Mi2vError, VerificationError
from ..integrity import check_entry
from ..manifest import read_manifest
from ..outputs import write_or_keep
from . import kinds  # noqa: F401  (imports every device kind module, which registers its kind)
from .base import NO_DRY_RUN, BenchDevice, BenchOptions, Say, quiet
from .cpus import parse_mask
from .output_check import check_outputs
from .registry import DeviceKind, all_kinds, kind_for, parse_device, transport_kind
from .report import BenchReport, ComponentResult
from .selection import Selection, describe_artifact

def timed_region(family: str | None) -> str | None:
    """What a benchmark of this runtime family times: its runtimes declare it (mi2v_export/runtimes)."""
    return next((r.timed_region for r in runtimes.all() if r.family == family and r.timed_region), None)


def default_report_path(transport: str, serial: str | None) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    bare = transport_kind(transport).serial == "none"
    tag = transport if bare else f"{transport}-" + re.sub(r"[^\w.-]+", "_", serial or "device")
    return Path("mi2v-bench") / f"{stamp}-{tag}.json"


def checked_protocol(opts: BenchOptions, kind: DeviceKind) -> tuple[int, int, float]:
    """(iterations, warm-up, cool-down) with the kind's defaults; BadInputError for impossible values, for a kind's
    options given to another kind and for what the kind itself refuses (DeviceKind.check)."""
    d = kind.defaults
    iterations = d.iterations if opts.iterations is None else opts.iterations
    warmup = d.warmup if opts.warmup is None else opts.warmup
    cooldown = d.cooldown if opts.cooldown is None else opts.cooldown
    if iterations < 1 or warmup < 0 or opts.runs < 1:
        raise BadInputError("--iterations and --runs must be ≥ 1 and --warmup ≥ 0")
    if opts.steps not in (1, 2):
        raise BadInputError(f"--steps {opts.steps}: the model is distilled for 1 or 2 denoising steps")
    if opts.timeout <= 0 or cooldown < 0 or opts.thermal_wait < 0:
        raise BadInputError("--timeout must be > 0 and --cooldown ≥ 0")
    kind.check(opts)
    for other in all_kinds():
        why = other.claims(opts) if other is not kind else None
        if why:
            raise BadInputError(why)
    if opts.dry_run and not kind.dry_run:
        raise BadInputError(NO_DRY_RUN)
    if opts.cpu_mask:
        try:
            parse_mask(opts.cpu_mask)
        except ValueError as exc:
            raise BadInputError(str(exc)) from None
    return iterations, warmup, cooldown


def new_report(opts: BenchOptions, manifest: Any, transport: str, serial: str | None) -> BenchReport:
    report = BenchReport(device={"transport": transport, "serial": serial}, frames=manifest.frames,
                         steps=opts.steps)
    report.artifacts = {
        "folder": str(Path(opts.artifacts).resolve()),
        "preset": manifest.preset,
        "resolution": list(manifest.resolution),
        "frames": manifest.frames,
        "latent_shape": list(manifest.latent_shape),
        "weights": (manifest.source or {}).get("weights"),
        "runtime_choice": opts.runtime,
    }
    return report


@dataclass
class BenchOutcome:
    """What `run_bench` returns for every device: the saved reports (iOS: one per compute unit; none for a dry
    run) and the first error (None when every component ran)."""

    reports: list[tuple[BenchReport, Path]] = field(default_factory=list)
    error: Mi2vError | None = None


def run_bench(opts: BenchOptions, say: Say = quiet, echo: Say = print, system: str | None = None) -> BenchOutcome:
    """Run the benchmark on the device --device names; every report is saved, even a partial one."""
    transport, serial = parse_device(opts.device)
    kind = kind_for(transport, opts.via)
    kind.requires(system)
    iterations, warmup, cooldown = checked_protocol(opts, kind)
    opts = replace(opts, iterations=iterations, warmup=warmup, cooldown=cooldown)
    manifest = read_manifest(opts.artifacts)
    json_path = Path(opts.json_path) if opts.json_path else default_report_path(transport, serial)
    devices = kind.open(opts, manifest, serial, json_path, say, system)
    if opts.dry_run:
        devices[0].print_commands(echo)
        return BenchOutcome()
    outcome = BenchOutcome()
    for device in devices:
        path = device.report_path(json_path)
        report, error = bench_device(device, opts, manifest, path)
        outcome.reports.append((report, path))
        outcome.error = outcome.error or error
    return outcome


def bench_device(device: BenchDevice, opts: BenchOptions, manifest: Any,
                 path: Path) -> tuple[BenchReport, Mi2vError | None]:
    """The loop: facts, then each component checked against the manifest, prepared, cooled down, run, checked for
    heat and recorded. Once the device has answered, the report is saved whatever happens (a Ctrl-C too; kept in
    the temporary folder when `path` cannot be written, mi2v_export/outputs.py); a device that never answered
    raises its one-line error and writes no report, since nothing was measured. Returns it with the first error."""
    report = new_report(opts, manifest, device.transport, parse_device(opts.device)[1])
    report.protocol = {"warmup": opts.warmup, "iterations": opts.iterations, "runs": opts.runs,
                       "warmup_in_timed_process": True, "inputs": "ones", "cooldown_s": opts.cooldown,
                       "thermal_wait_s": opts.thermal_wait, "timeout_s": opts.timeout, "steps": opts.steps}
    pending = _components(device, manifest, opts, report)
    try:
        start_report(device, report)
    except (Mi2vError, KeyboardInterrupt):
        _finish(device, report)
        raise
    error_kinds: dict[str, type[Mi2vError]] = {}
    stop: Mi2vError | None = None
    try:
        ready = _prepare_all(device, pending, error_kinds, manifest, opts, report)
        _run_all(device, ready, report, error_kinds, 0 if device.together else opts.cooldown, manifest.folder)
    except Mi2vError as exc:
        stop = exc
    except KeyboardInterrupt:
        _not_run(pending, "interrupted (Ctrl-C)")
        report.error = "interrupted (Ctrl-C)"
        save_report(report, path)  # first: the device's clean-up may outlast the signal watchdog's grace (interrupts.py)
        _finish(device, report)
        save_report(report, path)
        raise
    _finish(device, report)
    if stop is not None:
        _not_run(pending, str(stop))
    first = stop or _first_failure(report, error_kinds)
    if first is not None and not report.error:
        report.error = str(first)
    save_report(report, path)
    return report, first


def save_report(report: BenchReport, path: Path) -> Path:
    """The report at `path`, or (a disk that filled up, a folder gone read-only) kept in the temporary folder and
    named in the one-line error, so the measurements are not lost."""
    return write_or_keep(path, report.save, "bench report")


def _components(device: BenchDevice, manifest: Any, opts: BenchOptions,
                report: BenchReport) -> list[tuple[Selection, ComponentResult]]:
    """One result per chosen component in the report (skipped with the reason when nothing runs); the runnable
    ones come back as the work list."""
    pending = []
    for sel in device.select(manifest, opts):
        comp = ComponentResult(sel.component, status="skipped", error=sel.reason)
        if sel.entry is not None:
            comp.artifact = describe_artifact(manifest, sel.entry)
            comp.runtime = {"name": sel.runtime, "timed_region": timed_region(sel.runtime)}
            pending.append((sel, comp))  # "skipped" until it has run or failed
        report.components.append(comp)
    return pending


def start_report(device: BenchDevice, report: BenchReport) -> None:
    facts = device.facts()
    report.device, report.host = facts.device, facts.host
    report.protocol.update(facts.protocol)
    report.conditions = {"before": device.snapshot(), "uncontrolled": facts.uncontrolled}
    if report.device.get("simulated_device"):
        facts.uncontrolled.append("simulated phone: what runs there runs on this host, so timings, memory and "
                                  "temperatures are the host's and the profile's, not a phone's")


def _prepare_all(device: BenchDevice, pending: list[tuple[Selection, ComponentResult]],
                 error_kinds: dict[str, type[Mi2vError]], manifest: Any, opts: BenchOptions,
                 report: BenchReport) -> list[tuple[Selection, ComponentResult]]:
    """Prepare every component before the first runs (files checked against the manifest by the one integrity
    policy, mi2v_export/integrity.py; runners found and pushed); those that cannot run are failed here. With
    --allow-modified the files that differ are run, and recorded in the report and its warnings."""
    ready = []
    for sel, comp in pending:
        try:
            for changed in check_entry(manifest, sel.entry, allow_modified=opts.allow_modified):
                report.modified_files.append(changed.to_dict())
                report.warnings.append(f"{changed.file} differs from manifest.json (sha256 {changed.sha256[:12]}…, "
                                       f"{changed.bytes:,} bytes): run with --allow-modified")
            device.prepare(sel)
            ready.append((sel, comp))
        except Mi2vError as exc:
            _fail(comp, exc, error_kinds)
            if not device.alive():
                raise
    return ready


def _run_all(device: BenchDevice, ready: list[tuple[Selection, ComponentResult]], report: BenchReport,
             error_kinds: dict[str, type[Mi2vError]], cooldown: float, folder: Path) -> None:
    """Each prepared component in turn: cool down, run, check its outputs against the test vectors, record the
    result or the failure, check the heat. A device that went away stops the loop (its error is raised)."""
    for i, (sel, comp) in enumerate(ready):
        before = device.cool_down(0 if i == 0 else cooldown, sel.component)
        comp.conditions["before"] = before
        try:
            done = device.run(sel, comp)
            report.components[report.components.index(comp)] = comp = done
            if done.status == "failed":
                error_kinds[done.component] = DeviceError
            else:
                check_outputs(device, folder, sel, done)
        except Mi2vError as exc:
            _fail(comp, exc, error_kinds)
            if not device.alive():
                raise
        after = _snapshot_or_none(device)
        if after is not None:
            comp.conditions["after"] = after
            was, now = before.get("thermal_status"), after.get("thermal_status")
            if was is not None and now is not None and now > was:
                report.warnings.append(f"thermal status rose from {was} to {now} during the {sel.component}")


def _snapshot_or_none(device: BenchDevice) -> dict[str, Any] | None:
    try:
        return device.snapshot() or None
    except DeviceError:
        return None


def _finish(device: BenchDevice, report: BenchReport) -> None:
    try:
        device.finish(report)
    finally:
        after = _snapshot_or_none(device) if device.alive() else None
        if after is not None and report.conditions:
            report.conditions["after"] = after


def _not_run(pending: list[tuple[Selection, ComponentResult]], why: str) -> None:
    """The runnable components the loop did not reach keep status "skipped", with the reason."""
    for _, comp in pending:
        if comp.status == "skipped":
            comp.error = f"not run: {why}"


def _first_failure(report: BenchReport, error_kinds: dict[str, type[Mi2vError]]) -> Mi2vError | None:
    for c in report.components:
        if c.status == "failed":
            return error_kinds.get(c.component, DeviceError)(f"{c.component}: {c.error}")
    if not any(c.status == "ok" for c in report.components):
        reasons = "; ".join(f"{c.component}: {c.error}" for c in report.components if c.error)
        return BadInputError(f"nothing to benchmark ({reasons or 'no components'})")
    return None


def _fail(comp: ComponentResult, exc: Mi2vError, error_kinds: dict[str, type[Mi2vError]]) -> None:
    """Mark a component failed; the CLI's exit code follows the error's kind (input, dependency, wrong output,
    device)."""
    comp.status, comp.error = "failed", str(exc)
    error_kinds[comp.component] = next((k for k in (BadInputError, MissingDependencyError, VerificationError)
                                  if isinstance(exc, k)), DeviceError)


__all__ = ["BenchOptions", "BenchOutcome", "bench_device", "default_report_path", "parse_device", "run_bench"]
