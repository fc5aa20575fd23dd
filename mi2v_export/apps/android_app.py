"""The Android benchmark app (`apps/android/`) on a phone: `--via app` runs and the reports the app writes.

The app loads `.pte` artifacts through ExecuTorch's published Android library (`org.pytorch:executorch-android`,
or `executorch-android-vulkan` with `-Pmi2v.executorchVariant=vulkan`), times each component inside the app process
(warm-up discarded in the same process) and writes a `mi2v.bench/1` report with `simulated_device: false` and
`runtime.runner: "android-app"`. This module drives it from the host:

    mi2v bench --device adb:S --via app → devices/android_app.py AppDevice in the bench loop
                                        → run_via_app(dev, artifacts, iterations, …)

`run_via_app` installs the APKs when the phone lacks them or has other builds (sha256 of the installed base.apk),
pushes the artifacts and the output-check files (the first test-vector set as raw files, apps/check_files.py; only
files not already there with the same sha256) and a plan file (input shapes and each component's `check` block
from the manifest) to /data/local/tmp/mi2v/app/, runs

    adb -s S shell 'am instrument -w -r -e artifacts encoder=/data/local/tmp/mi2v/app/encoder.pte,… \
        -e iterations N -e warmup W -e runs R -e output mi2v-app-report.json -e plan …/plan.json \
        -e class org.mi2v.bench.Mi2vBenchmarkTest org.mi2v.bench.test/androidx.test.runner.AndroidJUnitRunner'

reads the report the app wrote into its files folder (`run-as org.mi2v.bench cat files/…`: the debug APK is
debuggable; `adb pull` cannot read an app's private folder), checks it against the schema and merges it into the
normal report (the host's device facts win; a simulated phone stays marked as simulated).

A dry run prints the exact commands without touching a device (`echo`), so it works on a machine with no SDK and
no phone. Building and installing the app (`mi2v app build|install`, `make android`) is `apps.build`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract import COMPONENTS
from ..devices.adb import Adb, parse_getprop, quote
from ..devices.android_session import device_facts
from ..devices.base import Say, quiet
from ..devices.report import SCHEMA, BenchReport, validate
from ..devices.selection import remote_name
from ..errors import BadInputError, DeviceError, MissingDependencyError
from ..files import sha256_file
from ..manifest import read_manifest
from .build import ANDROID_DIR, Command, apk_paths, check_apks, print_commands
from .check_files import CHECK_DIR, read_sets, write_check

APP_DIR = ANDROID_DIR

PACKAGE = "org.mi2v.bench"
TEST_PACKAGE = "org.mi2v.bench.test"
JUNIT_RUNNER = "androidx.test.runner.AndroidJUnitRunner"
APP_RUNNER = "android-app"  # runtime.runner / protocol.runner in the reports the app writes
TEST_CLASS = "org.mi2v.bench.Mi2vBenchmarkTest"
INSTRUMENTATION = f"{TEST_PACKAGE}/{JUNIT_RUNNER}"
DEVICE_DIR = "/data/local/tmp/mi2v/app"
REPORT_NAME = "mi2v-app-report.json"  # relative: inside the app's files folder
PLAN_NAME = "plan.json"
PLAN_SCHEMA = "mi2v.app-plan/1"
REPORT_STATUS_KEY = "mi2v_report"  # the instrumentation status key the test sends with the report's path

# --------------------------------------------------------------------------------------------------------------------
# artifacts and the plan pushed to the phone
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class AppArtifact:
    """One component's `.pte` as the app loads it."""

    component: str
    path: Path
    inputs: list[dict[str, Any]] | None = None  # [{"name", "shape", "dtype"}]; None → ExecuTorch fills ones itself
    info: dict[str, Any] = field(default_factory=dict)  # the report's artifact block (file, target, delegate, …)
    sha256: str | None = None
    folder: Path | None = None  # the manifest folder and entry: where the test vectors come from
    entry: Any = None
    check: dict[str, Any] | None = None  # the plan's output-check block once staged (apps/check_files.py)
    check_reason: str | None = None  # why there is none

    @property
    def remote_name(self) -> str:
        return remote_name(self.path.name)  # a plain name: the phone-side path stays in the staging folder

    def digest(self) -> str:
        if self.sha256 is None:
            self.sha256 = sha256_file(self.path)
        return self.sha256


def artifacts_from_manifest(folder: str | os.PathLike[str], components: Sequence[str] | None = None,
                            delegate: str | None = None) -> tuple[list[AppArtifact], int | None]:
    """The ExecuTorch artifacts of a manifest folder (one per component; `delegate` picks among several).
    Returns (artifacts, frames)."""
    manifest = read_manifest(folder)
    out = []
    for comp in components or COMPONENTS:
        entries = [e for e in manifest.components if e.component == comp and e.target == "executorch"
                   and (delegate is None or e.delegate == delegate)]
        if not entries:
            continue
        rank = {"xnnpack": 0, None: 1, "vulkan": 2, "qnn": 3}
        out.append(app_artifact(manifest, folder, sorted(entries, key=lambda e: rank.get(e.delegate, 9))[0]))
    if not out:
        raise BadInputError(f"{folder}: the manifest has no ExecuTorch (.pte) artifact"
                            + (f" with delegate {delegate}" if delegate else "") + ": export with `--target executorch`")
    return out, manifest.frames


def app_artifact(manifest: Any, folder: str | os.PathLike[str], e: Any) -> AppArtifact:
    """One manifest entry's `.pte` as the app loads it (its facts for the report's artifact block)."""
    path = manifest.path_of(e)
    return AppArtifact(
        component=e.component, path=path, inputs=[t.to_dict() for t in e.inputs] or None, sha256=e.sha256 or None,
        folder=Path(folder), entry=e,
        info={"file": e.file, "path": str(path), "format": "pte", "model": e.model, "target": e.target,
              "delegate": e.delegate, "precision": e.dtype, "sha256": e.sha256, "bytes": e.bytes})


def coerce_artifacts(artifacts: Any) -> tuple[list[AppArtifact], int | None]:
    """A manifest folder, {component: path}, or a list of AppArtifact → (artifacts, frames or None)."""
    if isinstance(artifacts, (str, os.PathLike)) and Path(artifacts).is_dir():
        return artifacts_from_manifest(artifacts)
    if isinstance(artifacts, Mapping):
        items = [AppArtifact(component=str(c), path=Path(p)) for c, p in artifacts.items()]
    else:
        items = list(artifacts)
    if not items:
        raise BadInputError("no artifacts to benchmark")
    for a in items:
        if a.component not in COMPONENTS:
            raise BadInputError(f"unknown component {a.component!r}: use {', '.join(COMPONENTS)}")
        if a.path.suffix != ".pte":
            raise BadInputError(f"{a.path.name}: the Android app runs ExecuTorch .pte artifacts only")
        if not a.info:
            a.info = {"file": a.path.name, "path": str(a.path), "format": "pte", "target": "executorch"}
    names = [a.remote_name for a in items]
    if len(set(names)) != len(names):
        raise BadInputError(f"two artifacts share a file name ({', '.join(names)}): the app folder needs unique names")
    return items, None


def build_plan(artifacts: Sequence[AppArtifact], frames: int | None, device_dir: str = DEVICE_DIR) -> dict[str, Any]:
    """The plan file the app reads (`-e plan`): device paths and, when known, input shapes and dtypes."""
    return {
        "schema": PLAN_SCHEMA,
        "frames": frames,
        "components": [
            {"component": a.component, "path": f"{device_dir}/{a.remote_name}", "method": "forward",
             "inputs": a.inputs, "artifact": {k: v for k, v in a.info.items() if k != "path"}, "check": a.check}
            for a in artifacts
        ],
    }


def instrument_args(artifacts: Sequence[AppArtifact], iterations: int, warmup: int, runs: int = 1,
                    device_dir: str = DEVICE_DIR, plan: bool = True, output: str = REPORT_NAME) -> list[str]:
    """The remote `am instrument` argv (one `-e key value` per argument the test reads)."""
    spec = ",".join(f"{a.component}={device_dir}/{a.remote_name}" for a in artifacts)
    argv = ["am", "instrument", "-w", "-r", "-e", "artifacts", spec, "-e", "iterations", str(iterations),
            "-e", "warmup", str(warmup), "-e", "runs", str(runs), "-e", "output", output]
    if plan:
        argv += ["-e", "plan", f"{device_dir}/{PLAN_NAME}"]
    return argv + ["-e", "class", TEST_CLASS, INSTRUMENTATION]


def via_app_commands(serial: str, artifacts: Sequence[AppArtifact], iterations: int, warmup: int, runs: int = 1,
                     app_dir: Path = APP_DIR, adb: str = "adb", device_dir: str = DEVICE_DIR,
                     keep: bool = False) -> list[Command]:
    """What `--via app` runs, in order (notes say which steps are conditional)."""
    def sh(remote: Sequence[str], note: str = "") -> Command:
        return Command((adb, "-s", serial, "shell", quote(list(remote))), note=note)

    app, test = apk_paths(app_dir)
    cmds = [sh(["pm", "path", PACKAGE], "is the app installed? (then sha256sum of its base.apk)"),
            sh(["pm", "path", TEST_PACKAGE], "is the test APK installed?")]
    cmds += [Command((adb, "-s", serial, "install", "-r", "-t", str(apk)),
                     note="only if missing or another build is installed") for apk in (app, test)]
    cmds.append(sh(["mkdir", "-p", device_dir]))
    names = [f"{device_dir}/{a.remote_name}" for a in artifacts]
    cmds.append(sh(["sha256sum", *names], "files already there with the same sha256 are not pushed again"))
    cmds += [Command((adb, "-s", serial, "push", str(a.path), f"{device_dir}/{a.remote_name}"),
                     note="only if not already there") for a in artifacts]
    cmds.append(Command((adb, "-s", serial, "push", "<temporary>/check/<component>.<in|out><k>.bin",
                         f"{device_dir}/check/"), note="output-check files of components with test vectors, "
                        "only if not already there"))
    cmds.append(Command((adb, "-s", serial, "push", f"<temporary>/{PLAN_NAME}", f"{device_dir}/{PLAN_NAME}"),
                        note="input shapes and artifact facts for the app"))
    cmds.append(sh(["run-as", PACKAGE, "rm", "-f", f"files/{REPORT_NAME}"], "no stale report"))
    cmds.append(sh(instrument_args(artifacts, iterations, warmup, runs, device_dir)))
    cmds.append(sh(["run-as", PACKAGE, "cat", f"files/{REPORT_NAME}"], "the report the app wrote"))
    if not keep:
        cmds.append(sh(["rm", "-rf", device_dir]))
    return cmds


# --------------------------------------------------------------------------------------------------------------------
# parsing what the phone says
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class InstrumentResult:
    ok: bool
    report_path: str | None = None
    tests_run: int | None = None
    message: str | None = None  # why it failed, one line
    statuses: list[dict[str, str]] = field(default_factory=list)


def parse_instrument_output(text: str) -> InstrumentResult:
    """`am instrument -w -r` raw output: INSTRUMENTATION_STATUS / _STATUS_CODE blocks, then
    INSTRUMENTATION_RESULT / INSTRUMENTATION_CODE. Values may span lines (stack traces, `stream=`)."""
    statuses: list[dict[str, str]] = []
    current: dict[str, str] = {}
    result: dict[str, str] = {}
    code: int | None = None
    key_target: tuple[dict[str, str], str] | None = None
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if m := re.match(r"INSTRUMENTATION_STATUS: ([^=]+)=(.*)$", line):
            current[m.group(1)] = m.group(2)
            key_target = (current, m.group(1))
        elif m := re.match(r"INSTRUMENTATION_STATUS_CODE: (-?\d+)", line):
            current["__code__"] = m.group(1)
            statuses.append(current)
            current, key_target = {}, None
        elif m := re.match(r"INSTRUMENTATION_RESULT: ([^=]+)=(.*)$", line):
            result[m.group(1)] = m.group(2)
            key_target = (result, m.group(1))
        elif m := re.match(r"INSTRUMENTATION_CODE: (-?\d+)", line):
            code = int(m.group(1))
            key_target = None
        elif key_target is not None:
            d, k = key_target
            d[k] += "\n" + line
    if current:
        statuses.append(current)
    report = next((s[REPORT_STATUS_KEY] for s in reversed(statuses) if REPORT_STATUS_KEY in s), None)
    stream = result.get("stream", "")
    m = re.search(r"OK \((\d+) tests?\)", stream)
    tests_run = int(m.group(1)) if m else None
    if m is None:
        m2 = re.search(r"Tests run: (\d+)", stream)
        tests_run = int(m2.group(1)) if m2 else None
    failed = [s for s in statuses if s.get("__code__") in ("-1", "-2")]
    errors = [s for s in statuses if "Error" in s]
    ok = code == -1 and m is not None and not failed and not errors
    message = None if ok else _instrument_message(errors, failed, result, code, tests_run)
    return InstrumentResult(ok=ok, report_path=report, tests_run=tests_run, message=message, statuses=statuses)


def _instrument_message(errors: list[dict[str, str]], failed: list[dict[str, str]], result: dict[str, str],
                        code: int | None, tests_run: int | None) -> str:
    """Why an instrumentation run did not pass, in one line."""
    stream = result.get("stream", "")
    if errors:
        return errors[0]["Error"].strip().splitlines()[0]
    if failed:
        stack = failed[0].get("stack", "").strip().splitlines()
        return stack[0] if stack else f"test {failed[0].get('test', '?')} failed"
    if "shortMsg" in result:
        message = result["shortMsg"].strip().splitlines()[0]
        return message + (": " + result["longMsg"].strip().splitlines()[0] if "longMsg" in result else "")
    if code is None:
        return "the instrumentation ended without a result (the test process died or was killed)"
    if tests_run == 0 or "OK (0 tests)" in stream:
        return f"no test ran: is {TEST_CLASS} in the installed test APK?"
    return (stream.strip().splitlines() or [f"instrumentation code {code}"])[-1]


def instrument_failure(result: InstrumentResult, serial: str) -> DeviceError | MissingDependencyError:
    msg = result.message or "unknown failure"
    if "Unable to find instrumentation" in msg or "INSTRUMENTATION_FAILED" in msg:
        return MissingDependencyError(f"the benchmark test APK is not installed on {serial} ({msg}): run "
                                      f"`make android-install SERIAL={serial}`")
    return DeviceError(f"the benchmark app failed on {serial}: {msg} (full log: `adb -s {serial} logcat -d -s "
                       "Mi2vBench ExecuTorch AndroidRuntime TestRunner`)")


def load_app_report(text: str | bytes, where: str = "the app's report") -> dict[str, Any]:
    """Parse and check an app-written report (schema `mi2v.bench/1`); BadInputError with one line otherwise."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{where} is not JSON ({exc}): the app may have been killed while writing it") from None
    try:
        validate(data)
    except BadInputError as exc:
        raise BadInputError(f"{where}: {exc}") from None  # the schema also refuses negative or non-number samples
    return data


def merge_app_report(app: Mapping[str, Any], base: Mapping[str, Any] | None = None, *, serial: str | None = None,
                     artifacts: Sequence[AppArtifact] = (), host: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The normal report with the app's measurements: `base` (the host's report: device facts from adb,
    conditions, protocol; may be None) plus the app's components. Components the app measured replace same-named
    ones in base; the others stay. The host's device facts win over the app's; if either says the device is
    simulated, the merged report says so. Returns a dict in the current report schema (BenchReport round trip)."""
    app_report = BenchReport.from_dict(dict(app))
    merged = BenchReport.from_dict({"schema": SCHEMA, "components": [], **base}) if base else BenchReport(device={})
    app_device = dict(app_report.device)
    host_device = {k: v for k, v in dict(merged.device).items() if v is not None}
    device = {**app_device, **host_device, "transport": "adb"}
    if serial:
        device["serial"] = serial
    device["simulated_device"] = bool(app_device.get("simulated_device")) or bool(host_device.get("simulated_device"))
    device["app"] = {k: app_device.get(k) for k in ("model", "manufacturer", "soc_model", "sdk_int", "abi")
                     if app_device.get(k) is not None}
    merged.device = device
    by_component = {a.component: a for a in artifacts}
    measured = []
    for c in app_report.components:
        c.runtime = {**c.runtime, "runner": APP_RUNNER, "mode": "app"}
        a = by_component.get(c.component)
        if a is not None:
            c.artifact = {**c.artifact, **a.info, "device_path": c.artifact.get("path")}
        measured.append(c)
    names = {c.component for c in measured}
    merged.components = [c for c in merged.components if c.component not in names] + measured
    order = {"encoder": 0, "denoiser": 1, "decoder": 2}
    merged.components.sort(key=lambda c: order.get(c.component, 9))
    merged.protocol = {**app_report.protocol, **merged.protocol, "mode": "app", "runner": APP_RUNNER,
                       **{k: app_report.protocol[k] for k in ("warmup", "iterations", "runs", "timed_region")
                          if k in app_report.protocol}}
    if merged.conditions:
        merged.conditions = {**merged.conditions, "app": app_report.conditions}
    else:
        merged.conditions = app_report.conditions
    if merged.frames is None:
        merged.frames = app_report.frames
    if host:
        merged.host = {**merged.host, **host}
    warnings = list(merged.warnings) + [w for w in app_report.warnings if w not in merged.warnings]
    if device["simulated_device"] and not app_device.get("simulated_device"):
        warnings.append("simulated phone: the 'app' numbers were not measured by the Android app on a phone")
    merged.warnings = warnings
    data = merged.to_dict()
    data["tool"] = {**data["tool"], "app": app_report.tool}
    return data


# --------------------------------------------------------------------------------------------------------------------
# --via app
# --------------------------------------------------------------------------------------------------------------------


def _installed_apk_sha(dev: Any, package: str) -> str | None:
    rc, out, _ = dev.shell(["pm", "path", package])
    paths = [ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("package:")]
    base = next((p for p in paths if p.endswith("/base.apk")), paths[0] if paths else None)
    if rc != 0 or base is None:
        return None
    return dev.sha256(base) or "unknown"


def ensure_installed(dev: Any, app_dir: Path = APP_DIR, say: Say = quiet, reinstall: bool = False) -> list[str]:
    """Install each APK the phone lacks or has in another build; returns the packages (re)installed."""
    app, test = check_apks(app_dir)
    done = []
    for package, apk in ((PACKAGE, app), (TEST_PACKAGE, test)):
        have = None if reinstall else _installed_apk_sha(dev, package)
        if have is not None and have == sha256_file(apk):
            continue
        say(f"installing {apk.name} ({'not installed' if have is None else 'another build is installed'})")
        proc = dev.run(["install", "-r", "-t", str(apk)], timeout=300, check=False)
        text = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0 or "Failure" in text:
            why = re.search(r"Failure \[([^\]]+)\]", text)
            detail = why.group(1) if why else (text.splitlines() or ["no output"])[-1]
            hint = (f"uninstall the old one (`adb -s {dev.serial} uninstall {package}`) and retry"
                    if "UPDATE_INCOMPATIBLE" in detail or "SIGNATURE" in detail
                    else "check the phone's storage and that installs over USB are allowed")
            raise DeviceError(f"`adb install {apk.name}` failed on {dev.serial} ({detail}): {hint}")
        done.append(package)
    return done


def run_via_app(device: Any, artifacts: Any, iterations: int = 20, warmup: int = 3, dry_run: bool = False, *,
                runs: int = 1, frames: int | None = None, base_report: Mapping[str, Any] | None = None,
                adb: Any = None, app_dir: Path = APP_DIR, reinstall: bool = False, keep: bool = False,
                timeout: float = 3600.0, say: Say = quiet, echo: Say = print) -> dict[str, Any] | None:
    """`mi2v bench --device adb:SERIAL --via app`.

    device: an `AdbDevice`, or a serial (then `adb`, an `Adb`, or a default one, picks it). artifacts: a manifest
    folder, {component: .pte path}, or AppArtifacts. With dry_run the commands are printed through `echo` and
    nothing runs (no adb, SDK, APK or phone needed); returns None. Otherwise returns the merged report (dict,
    `mi2v.bench/1`); `base_report` is the host's report to merge into (device facts, conditions); without it the
    device facts come from getprop."""
    if iterations < 1 or warmup < 0 or runs < 1:
        raise BadInputError("iterations and runs must be ≥ 1 and warm-up ≥ 0")
    items, manifest_frames = coerce_artifacts(artifacts)
    frames = frames if frames is not None else manifest_frames
    if dry_run:
        serial = getattr(device, "serial", device) or "SERIAL"
        adb_name = getattr(getattr(device, "adb", None), "path", None) or getattr(adb, "path", None) or "adb"
        print_commands(via_app_commands(str(serial), items, iterations, warmup, runs, app_dir, adb_name,
                                        keep=keep), echo)
        return None
    if isinstance(device, str) or device is None:
        client = adb if adb is not None else Adb()
        dev = client.pick_device(device)
    else:
        dev = device
    for a in items:
        if not a.path.is_file():
            raise BadInputError(f"artifact {a.path} does not exist")
    installed = ensure_installed(dev, app_dir, say, reinstall)
    pushed = _push_artifacts(dev, items, frames, say)
    with staged_dir(dev, keep):
        say(f"running the benchmark app on {dev.serial}: {warmup} warm-up + {iterations} timed iterations × "
            f"{runs} run(s) for {', '.join(a.component for a in items)}")
        app = instrument_and_read(dev, instrument_args(items, iterations, warmup, runs), timeout)
        if base_report is None:
            props = parse_getprop(dev.check_output(["getprop"]))
            base = {"schema": app["schema"], "device": device_facts(props, dev.serial), "components": []}
        else:
            base = base_report
        host = {"adb": {"path": dev.adb.path}} if getattr(dev, "adb", None) is not None else None
        merged = merge_app_report(app, base, serial=dev.serial, artifacts=items, host=host)
        merged["staging"] = {**(merged.get("staging") or {}), "remote_dir": DEVICE_DIR, "pushed": pushed,
                             "installed": installed, "kept": keep}
        return merged


@contextlib.contextmanager
def staged_dir(dev: Any, keep: bool):
    """The phone's staging folder (DEVICE_DIR) removed when the block ends, whatever happened, unless `keep`;
    a phone gone by then leaves it (the run's own error is the one to report)."""
    try:
        yield
    finally:
        if not keep:
            with contextlib.suppress(DeviceError):
                dev.shell(["rm", "-rf", DEVICE_DIR])


def _push_artifacts(dev: Any, items: Sequence[AppArtifact], frames: int | None, say: Say) -> list[str]:
    """Push the .pte files and output-check files the phone does not have with the same sha256, and the plan;
    returns the names pushed."""
    dev.mkdirs(DEVICE_DIR)
    with tempfile.TemporaryDirectory(prefix="mi2v-app-") as tmp:
        remote = {f"{DEVICE_DIR}/{a.remote_name}": (a.path, a.digest()) for a in items}
        checks = _stage_checks(items, Path(tmp))
        if checks:
            dev.mkdirs(f"{DEVICE_DIR}/check")
        remote.update(checks)
        pushed = push_missing(dev, remote, say)
        plan_path = Path(tmp) / PLAN_NAME
        plan_path.write_text(json.dumps(build_plan(items, frames), indent=2) + "\n")
        dev.push(plan_path, f"{DEVICE_DIR}/{PLAN_NAME}")
    return pushed


def push_missing(dev: Any, remote: Mapping[str, tuple[Path, str]], say: Say) -> list[str]:
    """Push each {remote path: (local file, sha256)} the phone does not hold with that sha256; returns the names
    pushed (relative to DEVICE_DIR)."""
    present = dev.sha256_many(list(remote))
    pushed = []
    for rpath, (local, digest) in remote.items():
        if present.get(rpath) == digest:
            continue
        say(f"pushing {local.name} ({local.stat().st_size / 1e6:.1f} MB) to {rpath}")
        dev.push(local, rpath)
        pushed.append(rpath[len(DEVICE_DIR) + 1:])
    return pushed


def _stage_checks(items: Sequence[AppArtifact], tmp: Path) -> dict[str, tuple[Path, str]]:
    """Write each artifact's output-check files (first test-vector set, raw) into tmp/check and set `a.check`;
    returns {remote path: (local file, sha256)}."""
    files: dict[str, tuple[Path, str]] = {}
    for a in items:
        if a.entry is None or a.folder is None:
            a.check_reason = "no manifest entry (artifacts given by path): no test vectors to check against"
            continue
        sets = read_sets(a.folder, a.entry)
        if isinstance(sets, str):
            a.check_reason = sets
            continue
        a.check = write_check(a.component, a.entry, sets, tmp / CHECK_DIR, f"{DEVICE_DIR}/{CHECK_DIR}")
        for spec in (*a.check["inputs"], *a.check["expected"]):
            local = tmp / CHECK_DIR / Path(spec["path"]).name
            files[spec["path"]] = (local, sha256_file(local))
    return files


def instrument_and_read(dev: Any, argv: Sequence[str], timeout: float) -> dict[str, Any]:
    """`am instrument` the benchmark test (`argv`: instrument_args or apps/android_pipeline.py's), then read and
    check the report the app wrote (run-as)."""
    dev.shell(["run-as", PACKAGE, "rm", "-f", f"files/{REPORT_NAME}"])
    _, out, err = dev.shell(list(argv), timeout=timeout)
    result = parse_instrument_output(out + "\n" + err)
    if not result.ok:
        raise instrument_failure(result, dev.serial)
    rc, text, err = dev.shell(["run-as", PACKAGE, "cat", f"files/{REPORT_NAME}"])
    if rc != 0:
        detail = (err.strip() or text.strip() or "no output").splitlines()[-1]
        raise DeviceError(f"cannot read the app's report on {dev.serial} with run-as ({detail}): the debug APK "
                          "must be installed (release builds are not debuggable)")
    return load_app_report(text, f"the report from {dev.serial}")
