"""`mi2v bench`: time the exported components on this machine or on a phone over adb, and write the report.

    report, path, error = run_bench(BenchOptions(artifacts=Path("artifacts/tiny"), device="adb:127.0.0.1:5555"))

The artifacts come from `DIR/manifest.json` (read through `mi2v_export.manifest`): for each component
(encoder, denoiser, decoder) one artifact is chosen for the runtime (`--runtime auto` prefers ExecuTorch when every
component has a `.pte` the device can run, then onnxruntime, else whatever each component has), its files are
checked against the manifest's sha256, and it is timed:

* host: in this process (`devices.host.bench_artifact`), warm-up discarded in the same process;
* adb: with the phone runners (`devices.android.AndroidSession`): `executor_runner` for `.pte`,
  `onnxruntime_perf_test` for `.onnx`.

A failure is recorded on its component (status "failed" with a one-line error) and the others still run unless the
device itself is gone; the report is always saved (atomically) and the first error is returned for the CLI to
print. The headline is the per-frame latency (encoder + steps × denoiser + decoder medians) / frames.
"""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import BadInputError, DeviceError, MissingDependencyError, Mi2vError
from .report import COMPONENTS, BenchReport, ComponentResult

Say = Callable[[str], None]

RUNTIMES = ("auto", "onnxruntime", "executorch")
VIAS = ("runner", "app")
RUNTIME_OF_TARGET = {"onnx": "onnxruntime", "executorch": "executorch", "coreml": "coreml"}
HOST_DELEGATES = (None, "xnnpack")  # what this machine's ExecuTorch runtime executes
PHONE_UNSUPPORTED_DELEGATES = ("coreml", "mps")
DELEGATE_RANK = {"xnnpack": 0, None: 1, "vulkan": 2, "qnn": 3}
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
    app_dir: Path | None = None  # --via app: the apps/android folder with the built APKs (default: this checkout's)


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
        if transport == "host" and entry.delegate not in HOST_DELEGATES:
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
        for e in manifest.components:
            if e.component != c:
                continue
            why = _runnable(e, transport)
            if why:
                unrunnable[c].append(why)
            else:
                options[c][RUNTIME_OF_TARGET[e.target]].append(e)
        for rt in options[c]:
            options[c][rt].sort(key=lambda e: (DELEGATE_RANK.get(e.delegate, 9), e.dtype != "fp32", e.file))
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
        "parity": {"verified_on": (e.parity or {}).get("verified_on"), "passed": gate.get("passed")},
    }


def artifact_files(manifest: Any, e: Any) -> list[tuple[Path, str, str]]:
    """(local path, name, manifest sha256) of the artifact's files: the primary one, then its extra files.
    Files that are not needed to run it (bundled programs, ETRecords) are left out."""
    files = [(manifest.path_of(e), e.file, e.sha256)]
    for f in e.extra_files:
        if f.role in ("bundled_program", "etrecord"):
            continue
        files.append((manifest.folder / f.file, f.file, f.sha256))
    return files


def verify_files(files: list[tuple[Path, str, str]]) -> list[tuple[Path, str, str]]:
    """Check each file exists and matches the manifest; returns (path, name, actual sha256)."""
    from .android import file_sha256

    out = []
    for path, name, expected in files:
        if not path.is_file():
            raise BadInputError(f"{path} is listed in the manifest but missing: re-run `mi2v export`")
        actual = file_sha256(path)
        if expected and actual != expected:
            raise BadInputError(f"{path} does not match the manifest's sha256 (changed after export): re-run "
                                "`mi2v export`")
        out.append((path, name, actual))
    return out


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


def run_bench(opts: BenchOptions, say: Say = _quiet) -> tuple[BenchReport, Path, Mi2vError | None]:
    """Run the benchmark; always save the report. Returns (report, where it was saved, first error or None).
    `--via app` goes through the Android app (`run_bench_app`); iOS has its own entry (`run_bench_ios`)."""
    from ..manifest import read_manifest

    transport, serial = parse_device(opts.device)
    if transport == "ios":
        raise BadInputError("--device ios:UDID writes one report per compute unit: call run_bench_ios")
    if opts.via == "app":
        return run_bench_app(opts, say)
    iterations, warmup, cooldown = _checked_protocol(opts, transport)
    manifest = read_manifest(opts.artifacts)
    selections = select_artifacts(manifest, opts.runtime, transport, opts.components)
    json_path = Path(opts.json_path) if opts.json_path else default_report_path(transport, serial)

    report = _new_report(opts, manifest, transport, serial)
    report.protocol = {
        "warmup": warmup, "iterations": iterations, "runs": opts.runs, "warmup_in_timed_process": True,
        "inputs": "ones", "cooldown_s": cooldown, "thermal_wait_s": opts.thermal_wait, "timeout_s": opts.timeout,
        "steps": opts.steps,
    }
    for sel in selections:
        comp = ComponentResult(sel.component, status="skipped", error=sel.reason)
        if sel.entry is not None:
            comp.artifact = describe_artifact(manifest, sel.entry)
            comp.runtime = {"name": sel.runtime, "timed_region": TIMED_REGION[sel.runtime]}
        report.components.append(comp)

    stop: Mi2vError | None = None
    try:
        if transport == "host":
            _run_host(opts, manifest, selections, report, iterations, warmup, cooldown, say)
        else:
            _run_adb(opts, serial, manifest, selections, report, iterations, warmup, cooldown, json_path, say)
    except Mi2vError as exc:
        stop = exc
    except KeyboardInterrupt:
        report.error = "interrupted (Ctrl-C)"
        _mark_not_run(report, "interrupted (Ctrl-C)")
        report.save(json_path)
        raise
    if stop is not None:
        _mark_not_run(report, str(stop))
    first = stop or _first_failure(report)
    if first is not None:
        report.error = str(first)
    report.save(json_path)
    return report, json_path, first


_PENDING = "__pending__"


def _mark_not_run(report: BenchReport, why: str) -> None:
    for c in report.components:
        if c.error == _PENDING:
            c.status, c.error = "skipped", f"not run: {why}"


def _first_failure(report: BenchReport) -> Mi2vError | None:
    for c in report.components:
        if c.status == "failed":
            cls = getattr(c, "_error_class", DeviceError)
            return cls(f"{c.component}: {c.error}")
    if not any(c.status == "ok" for c in report.components):
        reasons = "; ".join(f"{c.component}: {c.error}" for c in report.components if c.error)
        return BadInputError(f"nothing to benchmark ({reasons or 'no components'})")
    return None


def _fail(comp: ComponentResult, exc: Mi2vError) -> None:
    """Mark a component failed; the CLI's exit code follows the error's kind (input, dependency, device)."""
    comp.status = "failed"
    comp.error = str(exc)
    kind = next((k for k in (BadInputError, MissingDependencyError) if isinstance(exc, k)), DeviceError)
    comp._error_class = kind  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------------------------------
# host
# --------------------------------------------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def host_snapshot() -> dict[str, Any]:
    temps: dict[str, float] = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        kind, temp = _read(str(zone / "type")), _read(str(zone / "temp"))
        if kind and temp and temp.lstrip("-").isdigit():
            temps[f"{kind}#{zone.name[12:]}"] = int(temp) / 1000.0
    cur = {}
    for i in range(os.cpu_count() or 1):
        v = _read(f"/sys/devices/system/cpu/cpu{i}/cpufreq/scaling_cur_freq")
        if v and v.isdigit():
            cur[str(i)] = int(v)
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "thermal_status": None,
            "temps_c": temps, "cur_khz": cur, "load_avg": load}


def _host_device() -> dict[str, Any]:
    from .host import host_facts

    facts = host_facts()
    governors = sorted({g for i in range(os.cpu_count() or 1)
                        if (g := _read(f"/sys/devices/system/cpu/cpu{i}/cpufreq/scaling_governor"))})
    maxes = sorted({int(v) for i in range(os.cpu_count() or 1)
                    if (v := _read(f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq")) and v.isdigit()})
    facts.update(governors=governors, max_khz=maxes, abi=platform.machine())
    return facts


def _run_host(opts: BenchOptions, manifest: Any, selections: list[Selection], report: BenchReport,
              iterations: int, warmup: int, cooldown: float, say: Say) -> None:
    from .android import cpu_list, parse_mask
    from .host import bench_artifact

    report.device = _host_device()
    report.host = {"os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}
    if opts.runners:
        report.warnings.append("--runner is for phones: on the host the artifacts run in this process")
    if opts.etdump:
        report.warnings.append("--etdump is for phone runners: not collected on the host")
    uncontrolled = []
    gov = report.device.get("governors") or []
    uncontrolled.append("CPU clocks are not locked (governor " + (", ".join(gov) if gov else "not exposed")
                        + "); turbo and frequency scaling vary")
    uncontrolled.append("other processes share this machine (see load_avg in the snapshots)")
    threads = opts.threads
    old_affinity = None
    mask_text = None
    if opts.cpu_mask:
        cores = cpu_list(parse_mask(opts.cpu_mask))
        allowed = os.sched_getaffinity(0)
        if not set(cores) <= allowed:
            raise BadInputError(f"--cpu-mask {opts.cpu_mask} names cores {sorted(set(cores) - allowed)} this process "
                                f"may not use (allowed: {sorted(allowed)})")
        old_affinity = allowed
        os.sched_setaffinity(0, cores)
        mask_text = f"{parse_mask(opts.cpu_mask):x}"
        threads = threads or len(cores)
    else:
        uncontrolled.append("not pinned (no --cpu-mask): the OS scheduler places the threads")
    report.protocol.update(threads=threads, affinity_mask=mask_text)
    before = host_snapshot()
    if not before["temps_c"]:
        uncontrolled.append("thermal state: no readable thermal zones on this machine")
    report.conditions = {"before": before, "uncontrolled": uncontrolled}
    try:
        todo = [(s, c) for s, c in zip(selections, report.components) if s.entry is not None]
        for _, comp in todo:
            comp.error = _PENDING
        for i, (sel, comp) in enumerate(todo):
            if i and cooldown > 0:
                say(f"cooling down {cooldown:g} s before the {sel.component}")
                time.sleep(cooldown)
            comp.conditions["before"] = host_snapshot()
            versions = report.device.get("runtimes", {})
            comp.runtime.update(version=versions.get("onnxruntime" if sel.runtime == "onnxruntime" else "executorch"),
                                runner="in-process", threads=threads, affinity_mask=mask_text)
            try:
                verify_files(artifact_files(manifest, sel.entry))
                for r in range(opts.runs):
                    say(f"{sel.component}: {sel.entry.file} on {sel.runtime}, run {r + 1}/{opts.runs}: "
                        f"{warmup} warm-up + {iterations} timed iterations")
                    run = bench_artifact(manifest.path_of(sel.entry), sel.runtime, warmup, iterations, threads)
                    run.peak_rss_method = "in-process-vmhwm"
                    comp.runs.append(run)
                comp.runtime["backend"] = comp.runs[-1].backend
                comp.status, comp.error = "ok", None
            except Mi2vError as exc:
                _fail(comp, exc)
            comp.conditions["after"] = host_snapshot()
    finally:
        if old_affinity is not None:
            os.sched_setaffinity(0, old_affinity)
        report.conditions["after"] = host_snapshot()


# --------------------------------------------------------------------------------------------------------------------
# adb
# --------------------------------------------------------------------------------------------------------------------


def _pick_device(adb: Any, serial: str | None) -> Any:
    """The device; a HOST:PORT serial that adb does not know yet is `adb connect`ed first."""
    if serial and re.fullmatch(r"[\w.-]+:\d+", serial) and serial not in {d.serial for d in adb.devices()}:
        adb.connect(serial)
    return adb.pick_device(serial)


def _device_ok(dev: Any) -> bool:
    try:
        return dev.get_state() == "device"
    except DeviceError:
        return False


def _run_adb(opts: BenchOptions, serial: str | None, manifest: Any, selections: list[Selection],
             report: BenchReport, iterations: int, warmup: int, cooldown: float, json_path: Path, say: Say) -> None:
    from .adb import Adb, AdbTimeout
    from .android import RUNNER_FOR_RUNTIME, AndroidSession, RunnerFailure, StagedFile

    adb = Adb(opts.adb, server_port=opts.adb_port)
    report.host = {"os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
                   "adb": {"path": adb.path, "version": adb.version(), "server_port": opts.adb_port}}
    todo = [(s, c) for s, c in zip(selections, report.components) if s.entry is not None]
    for _, comp in todo:
        comp.error = _PENDING
    dev = _pick_device(adb, serial)
    session = AndroidSession(adb, dev, say)
    extras = json_path.with_name(json_path.stem + ".files")
    try:
        say(f"reading device facts of {dev.serial}")
        report.device = session.fingerprint()
        report.conditions = {"before": session.snapshot(), "uncontrolled": session.uncontrolled}
        if session.simulated:
            session.uncontrolled.append("simulated phone: the runners execute on this host, so timings, memory and "
                                        "temperatures are the host's and the profile's, not a phone's")
        session.uncontrolled.append("CPU clocks are not locked (needs root); governors are recorded only")
        session.uncontrolled.append("screen state, charging and background apps are not controlled "
                                    f"(battery: {report.conditions['before'].get('battery') or 'unknown'})")
        session.plan_pinning(opts.cpu_mask)
        report.protocol.update(threads=session.threads, affinity_mask=(f"{session.mask:x}" if session.mask else None),
                               affinity_granted=session.granted, affinity_rule=session.mask_rule,
                               peak_rss_method="toybox-time" if session.has_toybox_time else "vmhwm-poll")

        # the artifacts' files (checked against the manifest), then the runners
        files: dict[str, list[StagedFile]] = {}
        for sel, comp in todo:
            try:
                files[sel.component] = [StagedFile(p, n, sha) for p, n, sha in
                                        verify_files(artifact_files(manifest, sel.entry))]
            except Mi2vError as exc:
                _fail(comp, exc)
        runners: dict[str, Any] = {}
        for rt in sorted({s.runtime for s, c in todo if c.error == _PENDING}):
            name = RUNNER_FOR_RUNTIME[rt]
            try:
                runners[rt] = session.find_runner(name, opts.runners, Path(opts.artifacts))
            except DeviceError as exc:
                for sel, comp in todo:
                    if sel.runtime == rt and comp.error == _PENDING:
                        _fail(comp, exc)
        if not runners:
            return
        session.set_remote_dir([StagedFile(r.local, r.name, r.sha256) for r in runners.values()])
        report.staging = {"remote_dir": session.remote_dir, "pushed": session.pushed,
                          "already_there": session.already_there}
        for rt, runner in list(runners.items()):
            try:
                say(f"checking {runner.name} ({runner.info.describe()}) on the device")
                session.prepare_runner(runner)
            except DeviceError as exc:
                if not _device_ok(dev):
                    raise
                del runners[rt]
                for sel, comp in todo:
                    if sel.runtime == rt and comp.error == _PENDING:
                        _fail(comp, exc)
        first = True
        for sel, comp in todo:
            if comp.error != _PENDING:
                continue
            runner = runners[sel.runtime]
            comp.runtime.update(runner.describe(), threads=session.threads,
                                affinity_mask=(f"{session.mask:x}" if session.mask else None),
                                backend=(sel.entry.delegate or "portable") if sel.runtime == "executorch" else "cpu",
                                log_channel="stdout+stderr")
            comp.conditions["before"] = session.cool_down(0 if first else cooldown, opts.thermal_wait, sel.component)
            first = False
            try:
                session.stage(files[sel.component])
                for r in range(opts.runs):
                    say(f"{sel.component}: {sel.entry.file} with {runner.name}, run {r + 1}/{opts.runs}: "
                        f"{warmup} warm-up + {iterations} timed iterations")
                    if sel.runtime == "executorch":
                        data = next((f.file for f in sel.entry.extra_files if f.role == "external_data"), None)
                        run, text = session.run_executorch(runner, sel.entry.file, data, warmup, iterations,
                                                           opts.timeout)
                        run.backend = comp.runtime["backend"]
                        if "--- logcat ---" in text:
                            comp.runtime["log_channel"] = "logcat"
                        dump = session.pull_if_exists("model.etdump", extras / f"{sel.component}.run{r}.etdump")
                        if dump is not None:
                            run.etdump = os.path.relpath(dump, json_path.parent)
                            report.warnings.append(f"{runner.name} wrote an ETDump in the timed run (built with the "
                                                   "event tracer): its timings include profiling overhead")
                    else:
                        csv = extras / f"{sel.component}.run{r}.csv"
                        extras.mkdir(parents=True, exist_ok=True)
                        run, text = session.run_ort(runner, sel.entry.file, warmup, iterations, opts.timeout,
                                                    f"runs_{sel.component}_{r}.csv", csv)
                        run.backend = "cpu"
                        csv.unlink(missing_ok=True)
                    comp.runs.append(run)
                if opts.etdump and sel.runtime == "executorch":
                    if "etdump_path" in runner.flags:
                        say(f"{sel.component}: a separate profiling run for the ETDump")
                        name = f"{sel.component}.etdump"
                        session.run_executorch(runner, sel.entry.file, None, 0, 1, opts.timeout, etdump=name)
                        dump = session.pull_if_exists(name, extras / name)
                        comp.runtime["etdump"] = os.path.relpath(dump, json_path.parent) if dump else None
                    else:
                        report.warnings.append(f"--etdump: {runner.name} has no --etdump_path (build it with "
                                               "-DEXECUTORCH_ENABLE_EVENT_TRACER=ON)")
                comp.status, comp.error = "ok", None
            except AdbTimeout:
                _fail(comp, DeviceError(
                    f"timeout: {runner.name} did not finish the {sel.component} within {opts.timeout:g} s "
                    f"({warmup}+{iterations} iterations): raise --timeout or lower --iterations"))
                if not _device_ok(dev):
                    raise
            except RunnerFailure as exc:
                log = extras / f"{sel.component}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(exc.log)
                comp.runtime["failure_log"] = os.path.relpath(log, json_path.parent)
                _fail(comp, exc)
            except DeviceError as exc:
                _fail(comp, exc)
                if not _device_ok(dev):
                    raise
            try:
                comp.conditions["after"] = session.snapshot()
            except DeviceError:
                pass
            if comp.conditions.get("after") and comp.conditions.get("before"):
                a = comp.conditions["after"].get("thermal_status")
                b = comp.conditions["before"].get("thermal_status")
                if a is not None and b is not None and a > b:
                    report.warnings.append(f"thermal status rose from {b} to {a} during the {sel.component}")
    finally:
        report.staging = {"remote_dir": session.remote_dir, "pushed": session.pushed,
                          "already_there": session.already_there, "kept": True}
        report.warnings.extend(session.warnings)
        try:
            if _device_ok(dev):
                report.conditions["after"] = session.snapshot()
        except DeviceError:
            pass
        session.close()


# --------------------------------------------------------------------------------------------------------------------
# --via app (the Android benchmark app) and --device ios:UDID (the Core ML XCTest)
# --------------------------------------------------------------------------------------------------------------------


def _app_artifacts(opts: BenchOptions, manifest: Any) -> tuple[list[Any], list[str]]:
    """The .pte per chosen component (files checked against the manifest), and the chosen components that have
    none."""
    from .android_app import artifacts_from_manifest

    have = {e.component for e in manifest.components if e.target == "executorch"}
    missing = [c for c in opts.components if c not in have]
    if len(missing) == len(opts.components):
        raise BadInputError(f"{opts.artifacts}: no ExecuTorch (.pte) artifact for {', '.join(missing)}; the app "
                            "runs .pte only: export with `--target executorch`")
    items, _ = artifacts_from_manifest(opts.artifacts, [c for c in opts.components if c in have])
    verify_files([(a.path, a.remote_name, a.sha256 or "") for a in items])
    return items, missing


def run_bench_app(opts: BenchOptions, say: Say = _quiet,
                  echo: Say = print) -> tuple[BenchReport | None, Path | None, Mi2vError | None]:
    """`--device adb[:SERIAL] --via app`: the host reads the phone's facts over adb, `android_app.run_via_app`
    installs the app when needed, pushes the .pte files, runs the instrumentation test and collects its report,
    which is merged into the normal report and saved. With dry_run the exact commands are printed through `echo`,
    nothing touches a device, and (None, None, None) is returned."""
    from ..manifest import read_manifest
    from . import android_app as aa

    transport, serial = parse_device(opts.device)
    iterations, warmup, _ = _checked_protocol(opts, transport)
    manifest = read_manifest(opts.artifacts)
    items, missing = _app_artifacts(opts, manifest)
    app_dir = Path(opts.app_dir) if opts.app_dir else aa.APP_DIR
    if opts.dry_run:
        from types import SimpleNamespace

        adb_name = SimpleNamespace(path=str(opts.adb)) if opts.adb else None
        aa.run_via_app(serial or "SERIAL", items, iterations, warmup, dry_run=True, runs=opts.runs,
                       frames=manifest.frames, adb=adb_name, app_dir=app_dir, echo=echo)
        return None, None, None

    from .adb import Adb
    from .android import AndroidSession

    json_path = Path(opts.json_path) if opts.json_path else default_report_path(transport, serial)
    report = _new_report(opts, manifest, transport, serial)
    report.protocol = {"warmup": warmup, "iterations": iterations, "runs": opts.runs, "warmup_in_timed_process": True,
                       "inputs": "ones", "timeout_s": opts.timeout, "steps": opts.steps, "mode": "app",
                       "runner": aa.APP_RUNNER}
    for comp in opts.components:
        why = ("no ExecuTorch artifact in the manifest (the app runs .pte only)" if comp in missing
               else "not measured: the app did not report it")
        report.components.append(ComponentResult(comp, status="skipped", error=why))
    adb = Adb(opts.adb, server_port=opts.adb_port)
    report.host = {"os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
                   "adb": {"path": adb.path, "version": adb.version(), "server_port": opts.adb_port}}
    try:
        dev = _pick_device(adb, serial)
        session = AndroidSession(adb, dev, say)
        try:
            say(f"reading device facts of {dev.serial}")
            report.device = session.fingerprint()
            uncontrolled = list(session.uncontrolled)
            if session.simulated:
                uncontrolled.append("simulated phone: whatever answers `am instrument` there is not the Android app "
                                    "on a phone")
            uncontrolled += ["the app process is not pinned to cores and CPU clocks are not locked",
                             "screen state, charging and background apps are not controlled"]
            report.conditions = {"before": session.snapshot(), "uncontrolled": uncontrolled}
            merged = aa.run_via_app(dev, items, iterations, warmup, runs=opts.runs, frames=manifest.frames,
                                    base_report=report.to_dict(), adb=adb, app_dir=app_dir, timeout=opts.timeout,
                                    say=say)
            final = BenchReport.from_dict(merged)
            try:
                final.conditions["after"] = session.snapshot()
            except DeviceError:
                pass
        finally:
            session.close()
    except Mi2vError as exc:
        for c in report.components:
            if c.status == "skipped" and c.component not in missing:
                c.error = f"not run: {exc}"
        report.error = str(exc)
        report.save(json_path)
        return report, json_path, exc
    first = _first_failure(final)
    if first is not None and not final.error:
        final.error = str(first)
    final.save(json_path)
    return final, json_path, first


def run_bench_ios(opts: BenchOptions, say: Say = _quiet, echo: Say = print, system: str | None = None
                  ) -> tuple[list[tuple[BenchReport, Path]], Mi2vError | None]:
    """`--device ios:UDID` (macOS with Xcode only: anywhere else this fails at once, before reading anything).
    Runs the Core ML XCTest (apps/ios) on the iPhone and saves one report per compute unit next to the --json path
    (`NAME-<unit>.json`). With dry_run prints the commands and returns ([], None)."""
    from . import ios

    transport, udid = parse_device(opts.device)
    if transport != "ios":
        raise BadInputError(f"--device {opts.device!r} is not ios:UDID")
    ios.require_macos(system)
    iterations, warmup, _ = _checked_protocol(opts, transport)
    units = list(opts.compute_units or ios.COMPUTE_UNITS)
    json_path = Path(opts.json_path) if opts.json_path else default_report_path(transport, udid)
    reports = ios.run_ios(udid, opts.artifacts, iterations, warmup, opts.dry_run, compute_units=units, team=opts.team,
                          out_dir=json_path.parent if opts.json_path else None, components=opts.components,
                          timeout=opts.timeout, system=system, say=say, echo=echo)
    if reports is None:
        return [], None
    out, first = [], None
    for unit, data in reports.items():
        rep = BenchReport.from_dict(data)
        rep.steps = opts.steps
        path = json_path.with_name(f"{json_path.stem}-{unit}{json_path.suffix or '.json'}")
        rep.save(path)
        out.append((rep, path))
        if first is None and rep.status != "ok":
            first = _first_failure(rep) or DeviceError(f"{unit}: {rep.error or 'no component measured'}")
    return out, first


__all__ = ["BenchOptions", "MissingDependencyError", "parse_device", "run_bench", "run_bench_app", "run_bench_ios",
           "select_artifacts"]
