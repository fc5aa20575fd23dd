"""`mi2v bench`: time the exported components on any device with one loop, and write the report.

    outcome = run_bench(BenchOptions(artifacts=Path("artifacts/tiny"), device="adb:127.0.0.1:5555"))
    for report, path in outcome.reports: ...        # iOS: one report per compute unit; a dry run: none
    outcome.error                                  # the first failure (None when every component ran)

The artifacts come from `DIR/manifest.json`: for each component (encoder, denoiser, decoder) one artifact is chosen
for the runtime (`--runtime auto` prefers ExecuTorch when every component has a `.pte` the device can run, then
onnxruntime, else whatever each component has), its files are checked against the manifest's sha256 and size by the
one integrity policy (mi2v_export/integrity.py: refused unless `--allow-modified`, which records them in the
report's `modified_files`), and it is timed by a `BenchDevice`:

* `host.HostDevice`: in this process (`host.bench_artifact`), warm-up discarded in the same process;
* `android.AdbRunnerDevice`: a phone over adb with its native runners (`executor_runner` for `.pte`,
  `onnxruntime_perf_test` for `.onnx`), pinned, thermally gated;
* `apps.android_app.AppDevice` (`--via app`) and `apps.ios.IOSDevice` (`--device ios:UDID`, one per compute unit):
  the benchmark apps, which time every component in one process.

`bench_device` is the one loop: device facts, every component prepared, then per component a cool-down (and the
device's thermal gate), the run, the heat check; a failure is recorded on its component (status "failed", one line)
and the others still run unless the device itself is gone; once the device has answered, the report is always saved
(atomically, a Ctrl-C too; kept in the temporary folder if its folder cannot be written), while a device that never
answers is one error line and no report file (nothing was measured).
The headline is the per-frame latency (encoder + steps × denoiser + decoder medians) / frames.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import BadInputError, DeviceError, MissingDependencyError, Mi2vError, VerificationError
from ..contract import COMPONENTS, RUNTIME_OF_TARGET, runs_on_host
from ..integrity import check_entry
from ..outputs import write_or_keep
from ..safepath import safe_name
from .report import BenchReport, ComponentResult

Say = Callable[[str], None]

RUNTIMES = ("auto", "onnxruntime", "executorch")
VIAS = ("runner", "app")
PHONE_UNSUPPORTED_DELEGATES = ("coreml", "mps")
DEFAULTS = {"host": {"iterations": 10, "warmup": 2, "cooldown": 0.0},
            "adb": {"iterations": 50, "warmup": 5, "cooldown": 30.0}}
TIMED_REGION = {"onnxruntime": "InferenceSession.Run", "executorch": "Method::execute"}


def _quiet(_: str) -> None:
    return None


@dataclass
class BenchOptions:
    artifacts: Path
    device: str = "host"
    runtime: str = "auto"
    iterations: int | None = None
    warmup: int | None = None
    runs: int = 1
    steps: int = 2
    runners: list[Path] = field(default_factory=list)
    cpu_mask: str | None = None
    threads: int | None = None
    adb: Path | None = None
    adb_port: int | None = None
    adb_host: str | None = None  # an adb server on another machine (adb -H); None: this machine's
    json_path: Path | None = None
    cooldown: float | None = None
    thermal_wait: float = 120.0
    timeout: float = 600.0
    etdump: bool = False
    components: tuple[str, ...] = COMPONENTS
    via: str = "runner"  # adb: the native runners (default) or the Android benchmark app (apps/android)
    dry_run: bool = False  # --via app / ios: print the exact commands, touch no device
    team: str | None = None  # ios: Apple development team for signing the test bundle
    compute_units: tuple[str, ...] = ()  # ios: Core ML compute units to time (default: all four)
    app_dir: Path | None = None  # --via app / ios: the apps/android (built APKs) or apps/ios folder (default: this
    # checkout's)
    allow_modified: bool = False  # run files that differ from the manifest (mi2v_export/integrity.py), recorded


def parse_device(text: str) -> tuple[str, str | None]:
    """"host" → ("host", None); "adb" → ("adb", None); "adb:SERIAL" → ("adb", SERIAL); "ios:UDID" → ("ios", UDID)."""
    t = (text or "").strip()
    if t == "host":
        return "host", None
    if t == "adb":
        return "adb", None
    if t.startswith("adb:") and t[4:].strip():
        return "adb", t[4:].strip()
    if t.startswith("ios:") and t[4:].strip():
        return "ios", t[4:].strip()
    if t in ("ios", "ios:"):
        raise BadInputError("--device ios needs the iPhone's UDID: --device ios:UDID (`xcrun devicectl list devices` "
                            "shows it)")
    raise BadInputError(f"--device {text!r} is not host, adb, adb:SERIAL or ios:UDID (see `mi2v devices list`)")


# --------------------------------------------------------------------------------------------------------------------
# choosing artifacts
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Selection:
    component: str
    entry: Any | None  # manifest.ArtifactEntry
    runtime: str | None
    reason: str | None = None  # why nothing runs, when entry is None


def _runnable(entry: Any, transport: str) -> str | None:
    """Why this artifact cannot run on this kind of device, or None when it can."""
    runtime = RUNTIME_OF_TARGET.get(entry.target)
    if runtime == "coreml":
        return f"{entry.file} is Core ML, which needs a Mac/iPhone"
    if runtime is None:
        return f"{entry.file} has target {entry.target!r}, which mi2v bench does not run"
    if runtime == "executorch":
        if transport == "host" and not runs_on_host(entry.target, entry.delegate):
            return (f"{entry.file} is delegated to {entry.delegate}, which this machine cannot execute "
                    "(benchmark it on a phone with --device adb:SERIAL)")
        if transport == "adb" and entry.delegate in PHONE_UNSUPPORTED_DELEGATES:
            return f"{entry.file} is delegated to {entry.delegate}, which Android phones do not have"
    return None


def select_artifacts(manifest: Any, runtime: str, transport: str,
                     components: tuple[str, ...] = COMPONENTS) -> list[Selection]:
    if runtime not in RUNTIMES:
        raise BadInputError(f"--runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    options: dict[str, dict[str, list[Any]]] = {}
    unrunnable: dict[str, list[str]] = {}
    for c in components:
        options[c] = {"executorch": [], "onnxruntime": []}
        unrunnable[c] = []
        runnable, refused = manifest.candidates(c, lambda e: _runnable(e, transport))
        unrunnable[c] = [why for _, why in refused]
        for e in runnable:
            options[c][RUNTIME_OF_TARGET[e.target]].append(e)
    present = [c for c in components if any(options[c].values()) or unrunnable[c]]
    if runtime == "auto":
        order = ["executorch", "onnxruntime"]
        full = [rt for rt in order if present and all(options[c][rt] for c in present)]
        preferred = full[0] if full else None
    else:
        preferred = runtime
    out = []
    for c in components:
        has = {e.file for e in manifest.components if e.component == c}
        if not has:
            out.append(Selection(c, None, None, f"the manifest has no {c} artifact"))
            continue
        rt = preferred
        if rt is None:  # auto without a runtime that covers everything: whatever this component has
            rt = next((r for r in ("executorch", "onnxruntime") if options[c][r]), None)
        if rt is not None and options[c].get(rt):
            out.append(Selection(c, options[c][rt][0], rt))
            continue
        if rt is not None and runtime != "auto":
            why = f"no {rt} artifact for the {c} in the manifest (it has {', '.join(sorted(has))})"
        else:
            why = "; ".join(unrunnable[c]) or f"no runnable {c} artifact"
        out.append(Selection(c, None, None, why))
    return out


def describe_artifact(manifest: Any, e: Any) -> dict[str, Any]:
    gate = (e.parity or {}).get("gate") or {}
    return {
        "file": e.file,
        "path": str(manifest.path_of(e)),
        "format": Path(e.file).suffix.lstrip("."),
        "model": e.model,
        "target": e.target,
        "delegate": e.delegate,
        "precision": e.precision or e.dtype,
        "sha256": e.sha256,
        "bytes": e.bytes,
        "extra_files": [{"role": f.role, "file": f.file, "sha256": f.sha256, "bytes": f.bytes}
                        for f in e.extra_files],
        "inputs": [t.to_dict() for t in e.inputs],
        "parity": {"verified_on": sorted({r.get("runtime") for r in e.verified_on if r.get("passed")}),
                   "passed": gate.get("passed")},
    }


def artifact_files(manifest: Any, e: Any) -> list[tuple[Path, str, str]]:
    """(local path, remote name, manifest sha256) of the artifact's files: the primary one, then its extra files.
    Files that are not needed to run it (test vectors, bundled programs, ETRecords, a QNN context's source model)
    are left out. The local path stays inside the artifacts folder (`Manifest.file_path`) and the remote name is
    made of checked parts only (`remote_name`), so nothing is read or pushed outside either folder."""
    files = [(manifest.path_of(e), remote_name(e.file), e.sha256)]
    for f in e.extra_files:
        if f.role in ("bundled_program", "test_vectors", "etrecord", "qnn_source"):
            continue
        files.append((manifest.file_path(f.file), remote_name(f.file), f.sha256))
    return files


def remote_name(name: str) -> str:
    """A manifest file name as a path under a phone's staging folder (`/data/local/tmp/mi2v/<hash>/NAME`): every
    part a plain name (mi2v_export/safepath.py `safe_name`: no `..`, no leading `/`, nothing a shell reads), so a
    crafted manifest cannot make a push or a runner argument leave that folder."""
    what = "manifest.json: file" + (f" {name!r}, part" if "/" in str(name) else "")
    return "/".join(safe_name(part, what) for part in str(name).split("/"))


# --------------------------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------------------------


def default_report_path(transport: str, serial: str | None) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    tag = "host" if transport == "host" else f"{transport}-" + re.sub(r"[^\w.-]+", "_", serial or "device")
    return Path("mi2v-bench") / f"{stamp}-{tag}.json"


def _checked_protocol(opts: BenchOptions, transport: str) -> tuple[int, int, float]:
    """(iterations, warm-up, cool-down) with the transport's defaults; BadInputError for impossible values."""
    d = DEFAULTS["host" if transport == "host" else "adb"]
    iterations = d["iterations"] if opts.iterations is None else opts.iterations
    warmup = d["warmup"] if opts.warmup is None else opts.warmup
    cooldown = d["cooldown"] if opts.cooldown is None else opts.cooldown
    if iterations < 1 or warmup < 0 or opts.runs < 1:
        raise BadInputError("--iterations and --runs must be ≥ 1 and --warmup ≥ 0")
    if opts.steps not in (1, 2):
        raise BadInputError(f"--steps {opts.steps}: the model is distilled for 1 or 2 denoising steps")
    if opts.timeout <= 0 or cooldown < 0 or opts.thermal_wait < 0:
        raise BadInputError("--timeout must be > 0 and --cooldown ≥ 0")
    if opts.via not in VIAS:
        raise BadInputError(f"--via {opts.via!r}: use {' or '.join(VIAS)}")
    if opts.via == "app" and transport != "adb":
        raise BadInputError("--via app runs the Android benchmark app: use it with --device adb[:SERIAL]")
    if opts.via == "app" and opts.runtime == "onnxruntime":
        raise BadInputError("--via app runs ExecuTorch .pte artifacts only: drop --runtime onnxruntime, or use the "
                            "native runners (--via runner)")
    if opts.compute_units and transport != "ios":
        raise BadInputError("--compute-units chooses Core ML compute units: use it with --device ios:UDID")
    if opts.dry_run and not (opts.via == "app" or transport == "ios"):
        raise BadInputError("--dry-run prints the commands of --via app and --device ios:UDID; the host and native-"
                            "runner benchmarks have nothing to print without running")
    if opts.cpu_mask:
        from .android import parse_mask

        try:
            parse_mask(opts.cpu_mask)
        except ValueError as exc:
            raise BadInputError(str(exc)) from None
    return iterations, warmup, cooldown


def _new_report(opts: BenchOptions, manifest: Any, transport: str, serial: str | None) -> BenchReport:
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


# --------------------------------------------------------------------------------------------------------------------
# the device interface and the one loop
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class DeviceFacts:
    """What a device says about itself before the first component (the report's device, host and protocol)."""

    device: dict[str, Any]
    host: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)  # threads, affinity, how memory is measured, mode
    uncontrolled: list[str] = field(default_factory=list)


class BenchDevice:
    """A place where components are timed: this machine, a phone's native runners, the Android app, the iOS XCTest.

    The loop (`bench_device`) calls facts() once, prepare(sel) for every component, then per component
    cool_down() and run(); finish() at the end, whatever happened. A device that measures every component in one
    process (the apps) sets `together` and does its work at the first run()."""

    transport = "host"
    together = False

    def select(self, manifest: Any, opts: BenchOptions) -> list[Selection]:
        return select_artifacts(manifest, opts.runtime, self.transport, opts.components)

    def report_path(self, json_path: Path) -> Path:
        """Where this device's report goes (iOS: one file per compute unit beside --json)."""
        return json_path

    def facts(self) -> DeviceFacts:
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any]:
        return {}

    def prepare(self, sel: Selection) -> None:
        """Check (and stage) what the component needs; raise Mi2vError when it cannot run."""

    def cool_down(self, pause_s: float, label: str) -> dict[str, Any]:
        """Pause before a component; returns the snapshot it starts from."""
        if pause_s > 0:
            time.sleep(pause_s)
        return self.snapshot()

    def run(self, sel: Selection, comp: ComponentResult) -> ComponentResult:
        raise NotImplementedError

    def alive(self) -> bool:
        """False when the device is gone (the remaining components are not run)."""
        return True

    def outputs(self, sel: Selection, sets: list[Any]) -> tuple[list[dict[str, Any]], str] | str:
        """Run the artifact once per stored test-vector input set (testvectors.VectorSet) where it was timed:
        (one output dict per set, the runtime's name), or why this device cannot return outputs."""
        return "this device returns no outputs"

    def finish(self, report: BenchReport) -> None:
        """Record what the device staged and warned about; release what it holds."""

    def print_commands(self, echo: Say) -> None:
        raise BadInputError("--dry-run prints the commands of --via app and --device ios:UDID; the host and native-"
                            "runner benchmarks have nothing to print without running")


@dataclass
class BenchOutcome:
    """What `run_bench` returns for every device: the saved reports (iOS: one per compute unit; none for a dry
    run) and the first error (None when every component ran)."""

    reports: list[tuple[BenchReport, Path]] = field(default_factory=list)
    error: Mi2vError | None = None


def open_device(opts: BenchOptions, manifest: Any, json_path: Path, say: Say = _quiet, system: str | None = None
                ) -> list[BenchDevice]:
    """The device(s) --device / --via name (opts with the protocol resolved); iOS gives one per compute unit
    (they share one XCTest run). Nothing is contacted before facts()."""
    transport, serial = parse_device(opts.device)
    if transport == "host":
        from .host import HostDevice

        return [HostDevice(opts, manifest, say)]
    if transport == "ios":
        from ..apps.ios import ios_devices

        return ios_devices(opts, manifest, serial or "", json_path, say, system)
    if opts.via == "app":
        from ..apps.android_app import AppDevice

        return [AppDevice(opts, manifest, serial, say)]
    from .android import AdbRunnerDevice

    return [AdbRunnerDevice(opts, manifest, serial, json_path, say)]


def run_bench(opts: BenchOptions, say: Say = _quiet, echo: Say = print, system: str | None = None) -> BenchOutcome:
    """Run the benchmark on the device --device names; every report is saved, even a partial one."""
    from ..manifest import read_manifest

    transport, serial = parse_device(opts.device)
    if transport == "ios":
        from ..apps.build import require_macos

        require_macos(system)
    iterations, warmup, cooldown = _checked_protocol(opts, transport)
    opts = replace(opts, iterations=iterations, warmup=warmup, cooldown=cooldown)
    manifest = read_manifest(opts.artifacts)
    json_path = Path(opts.json_path) if opts.json_path else default_report_path(transport, serial)
    devices = open_device(opts, manifest, json_path, say, system)
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
    report = _new_report(opts, manifest, device.transport, parse_device(opts.device)[1])
    report.protocol = {"warmup": opts.warmup, "iterations": opts.iterations, "runs": opts.runs,
                       "warmup_in_timed_process": True, "inputs": "ones", "cooldown_s": opts.cooldown,
                       "thermal_wait_s": opts.thermal_wait, "timeout_s": opts.timeout, "steps": opts.steps}
    pending = _components(device, manifest, opts, report)
    try:
        _start(device, report)
    except (Mi2vError, KeyboardInterrupt):
        _finish(device, report)
        raise
    kinds: dict[str, type[Mi2vError]] = {}
    stop: Mi2vError | None = None
    try:
        ready = _prepare_all(device, pending, kinds, manifest, opts, report)
        _run_all(device, ready, report, kinds, 0 if device.together else opts.cooldown, manifest.folder)
    except Mi2vError as exc:
        stop = exc
    except KeyboardInterrupt:
        _not_run(pending, "interrupted (Ctrl-C)")
        report.error = "interrupted (Ctrl-C)"
        _save(report, path)  # first: the device's clean-up may outlast the signal watchdog's grace (interrupts.py)
        _finish(device, report)
        _save(report, path)
        raise
    _finish(device, report)
    if stop is not None:
        _not_run(pending, str(stop))
    first = stop or _first_failure(report, kinds)
    if first is not None and not report.error:
        report.error = str(first)
    _save(report, path)
    return report, first


def _save(report: BenchReport, path: Path) -> Path:
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
            comp.runtime = {"name": sel.runtime, "timed_region": TIMED_REGION.get(sel.runtime)}
            pending.append((sel, comp))  # "skipped" until it has run or failed
        report.components.append(comp)
    return pending


def _start(device: BenchDevice, report: BenchReport) -> None:
    facts = device.facts()
    report.device, report.host = facts.device, facts.host
    report.protocol.update(facts.protocol)
    report.conditions = {"before": device.snapshot(), "uncontrolled": facts.uncontrolled}
    if report.device.get("simulated_device"):
        facts.uncontrolled.append("simulated phone: what runs there runs on this host, so timings, memory and "
                                  "temperatures are the host's and the profile's, not a phone's")


def _prepare_all(device: BenchDevice, pending: list[tuple[Selection, ComponentResult]],
                 kinds: dict[str, type[Mi2vError]], manifest: Any, opts: BenchOptions,
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
            _fail(comp, exc, kinds)
            if not device.alive():
                raise
    return ready


def _run_all(device: BenchDevice, ready: list[tuple[Selection, ComponentResult]], report: BenchReport,
             kinds: dict[str, type[Mi2vError]], cooldown: float, folder: Path) -> None:
    """Each prepared component in turn: cool down, run, check its outputs against the test vectors, record the
    result or the failure, check the heat. A device that went away stops the loop (its error is raised)."""
    from .output_check import check_outputs

    for i, (sel, comp) in enumerate(ready):
        before = device.cool_down(0 if i == 0 else cooldown, sel.component)
        comp.conditions["before"] = before
        try:
            done = device.run(sel, comp)
            report.components[report.components.index(comp)] = comp = done
            if done.status == "failed":
                kinds[done.component] = DeviceError
            else:
                check_outputs(device, folder, sel, done)
        except Mi2vError as exc:
            _fail(comp, exc, kinds)
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


def _first_failure(report: BenchReport, kinds: dict[str, type[Mi2vError]]) -> Mi2vError | None:
    for c in report.components:
        if c.status == "failed":
            return kinds.get(c.component, DeviceError)(f"{c.component}: {c.error}")
    if not any(c.status == "ok" for c in report.components):
        reasons = "; ".join(f"{c.component}: {c.error}" for c in report.components if c.error)
        return BadInputError(f"nothing to benchmark ({reasons or 'no components'})")
    return None


def _fail(comp: ComponentResult, exc: Mi2vError, kinds: dict[str, type[Mi2vError]]) -> None:
    """Mark a component failed; the CLI's exit code follows the error's kind (input, dependency, wrong output,
    device)."""
    comp.status, comp.error = "failed", str(exc)
    kinds[comp.component] = next((k for k in (BadInputError, MissingDependencyError, VerificationError)
                                  if isinstance(exc, k)), DeviceError)


__all__ = ["BenchDevice", "BenchOptions", "BenchOutcome", "DeviceFacts", "MissingDependencyError", "parse_device",
           "run_bench", "select_artifacts"]
