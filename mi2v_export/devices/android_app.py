"""The Android benchmark app (`apps/android/`): prerequisite checks, build/install commands, and `--via app` runs.

The app loads `.pte` artifacts through ExecuTorch's published Android library (`org.pytorch:executorch-android`,
or `executorch-android-vulkan` with `-Pmi2v.executorchVariant=vulkan`), times each component inside the app process
(warm-up discarded in the same process) and writes a `mi2v.bench/1` report with `simulated_device: false` and
`runtime.runner: "android-app"`. This module drives it from the host:

    make android                    → check_build_prereqs(), then `./gradlew assembleDebug assembleDebugAndroidTest`
    make android-install SERIAL=S   → check_install_prereqs(), then `adb -s S install -r -t` of both APKs
    mi2v bench --device adb:S --via app → run_via_app(dev, artifacts, iterations, warmup, dry_run)

`run_via_app` installs the APKs when the phone lacks them or has other builds (sha256 of the installed base.apk),
pushes the artifacts (only those not already there with the same sha256) and a plan file (input shapes from the
manifest) to /data/local/tmp/mi2v/app/, runs

    adb -s S shell 'am instrument -w -r -e artifacts encoder=/data/local/tmp/mi2v/app/encoder.pte,… \
        -e iterations N -e warmup W -e runs R -e output mi2v-app-report.json -e plan …/plan.json \
        -e class org.mi2v.bench.Mi2vBenchmarkTest org.mi2v.bench.test/androidx.test.runner.AndroidJUnitRunner'

reads the report the app wrote into its files folder (`run-as org.mi2v.bench cat files/…`: the debug APK is
debuggable; `adb pull` cannot read an app's private folder), checks it against the schema and merges it into the
normal report (the host's device facts win; a simulated phone stays marked as simulated).

Every prerequisite failure is one line naming what is missing and how to get it (MissingDependencyError). A dry run
prints the exact commands without touching a device (`echo`), so it works on a machine with no SDK and no phone.

CLI for the Makefile: `python -m mi2v_export.devices.android_app build|install|check|run …` (see `main`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..errors import BadInputError, DeviceError, Mi2vError, MissingDependencyError
from .android import device_facts
from .bench import BenchDevice, BenchOptions, DeviceFacts, Selection, select_artifacts, verify_files
from .report import SCHEMA, BenchReport, ComponentResult

Say = Callable[[str], None]

REPO = Path(__file__).resolve().parents[2]
APP_DIR = REPO / "apps" / "android"

PACKAGE = "org.mi2v.bench"
TEST_PACKAGE = "org.mi2v.bench.test"
JUNIT_RUNNER = "androidx.test.runner.AndroidJUnitRunner"
APP_RUNNER = "android-app"  # runtime.runner / protocol.runner in the reports the app writes
TEST_CLASS = "org.mi2v.bench.Mi2vBenchmarkTest"
INSTRUMENTATION = f"{TEST_PACKAGE}/{JUNIT_RUNNER}"
APP_APK = Path("app/build/outputs/apk/debug/app-debug.apk")
TEST_APK = Path("app/build/outputs/apk/androidTest/debug/app-debug-androidTest.apk")
DEVICE_DIR = "/data/local/tmp/mi2v/app"
REPORT_NAME = "mi2v-app-report.json"  # relative: inside the app's files folder
PLAN_NAME = "plan.json"
PLAN_SCHEMA = "mi2v.app-plan/1"
REPORT_STATUS_KEY = "mi2v_report"  # the instrumentation status key the test sends with the report's path

# Pins (apps/android/gradle/wrapper/gradle-wrapper.properties and app/build.gradle.kts say the same).
GRADLE_VERSION = "8.11.1"
MIN_JDK = 17
COMPILE_SDK = 35
MIN_BUILD_TOOLS = 34
VARIANTS = {"xnnpack": "executorch-android", "vulkan": "executorch-android-vulkan"}
GRADLE_TASKS = ("assembleDebug", "assembleDebugAndroidTest")

JDK_HINT = ("install JDK 17 (e.g. `apt-get install openjdk-17-jdk-headless`, `brew install openjdk@17`, or Android "
            "Studio's bundled JBR) and set JAVA_HOME to it")
SDK_HINT = ("install the Android SDK (Android Studio, or the command-line tools) and set ANDROID_HOME to it, then "
            f'`sdkmanager "platforms;android-{COMPILE_SDK}" "build-tools;{COMPILE_SDK}.0.0" "platform-tools"`')


def _quiet(_: str) -> None:
    return None


# --------------------------------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One command line: argv, the folder it runs in, and (for a dry run) when it runs."""

    argv: tuple[str, ...]
    cwd: Path | None = None
    note: str = ""
    env: tuple[tuple[str, str], ...] = ()

    def render(self) -> str:
        text = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env)
        text = (text + " " if text else "") + shlex.join(self.argv)
        if self.cwd is not None:
            text = f"cd {shlex.quote(_shown_path(self.cwd))} && {text}"
        return text + (f"    # {self.note}" if self.note else "")


def _shown_path(path: Path) -> str:
    """A path relative to the repository when it is inside it (what a user types from the repo root)."""
    try:
        return str(path.resolve().relative_to(REPO)) or "."
    except ValueError:
        return str(path)


def print_commands(commands: Sequence[Command], echo: Say = print) -> None:
    for c in commands:
        echo(c.render())


def build_commands(app_dir: Path = APP_DIR, variant: str = "xnnpack",
                   executorch_version: str | None = None) -> list[Command]:
    """`make android`: the Gradle wrapper builds the app APK and the instrumentation-test APK."""
    if variant not in VARIANTS:
        raise BadInputError(f"unknown ExecuTorch variant {variant!r}: choose {' or '.join(VARIANTS)}")
    argv = ["./gradlew", *GRADLE_TASKS]
    if variant != "xnnpack":
        argv.append(f"-Pmi2v.executorchVariant={variant}")
    if executorch_version:
        argv.append(f"-Pmi2v.executorchVersion={executorch_version}")
    return [Command(tuple(argv), cwd=app_dir)]


def apk_paths(app_dir: Path = APP_DIR) -> tuple[Path, Path]:
    return app_dir / APP_APK, app_dir / TEST_APK


def install_commands(serial: str, app_dir: Path = APP_DIR, adb: str = "adb") -> list[Command]:
    """`make android-install SERIAL=…`: install (or replace) both APKs; -t allows test-only builds."""
    return [Command((adb, "-s", serial, "install", "-r", "-t", str(apk))) for apk in apk_paths(app_dir)]


# --------------------------------------------------------------------------------------------------------------------
# prerequisites (each failure is one line: what is missing and how to get it)
# --------------------------------------------------------------------------------------------------------------------


def _java_version(text: str) -> tuple[int, str] | None:
    """`java -version` output → (major, full): `openjdk version "17.0.15"` → 17; `"1.8.0_392"` → 8."""
    m = re.search(r'version "([^"]+)"', text) or re.search(r"^\S+ (\d[\w.+-]*)", text, re.M)
    if not m:
        return None
    full = m.group(1)
    parts = re.findall(r"\d+", full)
    if not parts:
        return None
    major = int(parts[1]) if parts[0] == "1" and len(parts) > 1 else int(parts[0])
    return major, full


def check_jdk(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A JDK ≥ 17 (the Android Gradle plugin's floor): JAVA_HOME/bin/java, else java on PATH, plus javac."""
    env = dict(os.environ if env is None else env)
    java_home = env.get("JAVA_HOME")
    if java_home:
        java = Path(java_home) / "bin" / "java"
        if not (java.is_file() and os.access(java, os.X_OK)):
            raise MissingDependencyError(f"JAVA_HOME={java_home} has no bin/java: point JAVA_HOME at a JDK 17 "
                                         f"folder, or unset it and {JDK_HINT}")
        javac = Path(java_home) / "bin" / "javac"
        javac_path = str(javac) if javac.is_file() else None
        java_path = str(java)
    else:
        found = shutil.which("java", path=env.get("PATH"))
        if not found:
            raise MissingDependencyError(f"no JDK: `java` is not on PATH and JAVA_HOME is unset; {JDK_HINT}")
        java_path = found
        javac_path = shutil.which("javac", path=env.get("PATH"))
    try:
        proc = subprocess.run([java_path, "-version"], capture_output=True, text=True, timeout=30, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MissingDependencyError(f"`{java_path} -version` failed ({exc}); {JDK_HINT}") from None
    parsed = _java_version(proc.stderr + proc.stdout)
    if proc.returncode != 0 or parsed is None:
        raise MissingDependencyError(f"`{java_path} -version` did not report a version; {JDK_HINT}")
    major, full = parsed
    if major < MIN_JDK:
        raise MissingDependencyError(f"JDK {MIN_JDK}+ is needed by the Android Gradle plugin, but `java -version` "
                                     f"says {full} ({java_path}); {JDK_HINT}")
    if not javac_path:
        raise MissingDependencyError(f"found a Java {full} runtime ({java_path}) but no JDK (`javac` is missing); "
                                     f"{JDK_HINT}")
    return {"java": java_path, "javac": javac_path, "version": full}


def _local_properties_sdk(app_dir: Path) -> str | None:
    props = app_dir / "local.properties"
    if not props.is_file():
        return None
    for line in props.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "sdk.dir":
            return value.strip().replace("\\:", ":").replace("\\\\", "\\")
    return None


def check_android_sdk(env: Mapping[str, str] | None = None, app_dir: Path = APP_DIR) -> dict[str, str]:
    """The SDK from ANDROID_HOME (else ANDROID_SDK_ROOT, else local.properties sdk.dir) with the platform and
    build-tools the app compiles against."""
    env = os.environ if env is None else env
    source, sdk = None, None
    for var in ("ANDROID_HOME", "ANDROID_SDK_ROOT"):
        if env.get(var):
            source, sdk = var, env[var]
            break
    if sdk is None and (local := _local_properties_sdk(app_dir)):
        source, sdk = "sdk.dir in apps/android/local.properties", local
    if sdk is None:
        raise MissingDependencyError(f"no Android SDK: ANDROID_HOME (or ANDROID_SDK_ROOT) is not set; {SDK_HINT}")
    root = Path(sdk).expanduser()
    if not root.is_dir():
        raise MissingDependencyError(f"{source}={sdk} is not a folder: point it at the Android SDK "
                                     "(Android Studio → Settings → Android SDK shows the path)")
    platform_dir = root / "platforms" / f"android-{COMPILE_SDK}"
    if not (platform_dir / "android.jar").is_file():
        raise MissingDependencyError(f"the Android SDK at {root} lacks platform android-{COMPILE_SDK}: run "
                                     f'`sdkmanager "platforms;android-{COMPILE_SDK}"`')
    tools = []
    for d in (root / "build-tools").glob("*") if (root / "build-tools").is_dir() else ():
        m = re.match(r"(\d+)\.", d.name)
        if m and d.is_dir():
            tools.append((int(m.group(1)), d.name))
    usable = sorted(t for t in tools if t[0] >= MIN_BUILD_TOOLS)
    if not usable:
        have = ", ".join(name for _, name in sorted(tools)) or "none"
        raise MissingDependencyError(f"the Android SDK at {root} has no build-tools {MIN_BUILD_TOOLS}+ (has: {have}): "
                                     f'run `sdkmanager "build-tools;{COMPILE_SDK}.0.0"`')
    return {"sdk": str(root), "source": source or "", "platform": f"android-{COMPILE_SDK}",
            "build_tools": usable[-1][1]}


def check_gradlew(app_dir: Path = APP_DIR) -> dict[str, str]:
    """The wrapper script and its jar (the jar is a binary the repository does not carry)."""
    gradlew = app_dir / "gradlew"
    if not gradlew.is_file():
        raise MissingDependencyError(f"{_shown_path(gradlew)} is missing: restore it from git "
                                     f"(`git checkout -- {_shown_path(gradlew)}`)")
    if not os.access(gradlew, os.X_OK):
        raise MissingDependencyError(f"{_shown_path(gradlew)} is not executable: run `chmod +x "
                                     f"{_shown_path(gradlew)}`")
    jar = app_dir / "gradle" / "wrapper" / "gradle-wrapper.jar"
    if not jar.is_file():
        raise MissingDependencyError(
            f"{_shown_path(jar)} is missing (the repository does not carry it): run `gradle wrapper --gradle-version "
            f"{GRADLE_VERSION}` in {_shown_path(app_dir)} with any installed Gradle 8, or copy the jar from another "
            f"project's Gradle {GRADLE_VERSION} wrapper")
    return {"gradlew": str(gradlew), "wrapper_jar": str(jar), "gradle": GRADLE_VERSION}


def check_build_prereqs(env: Mapping[str, str] | None = None, app_dir: Path = APP_DIR) -> dict[str, Any]:
    """Everything `make android` needs, checked in order; raises on the first thing missing."""
    return {"jdk": check_jdk(env), "android_sdk": check_android_sdk(env, app_dir), "gradlew": check_gradlew(app_dir)}


def check_apks(app_dir: Path = APP_DIR) -> tuple[Path, Path]:
    app, test = apk_paths(app_dir)
    for apk, what in ((app, "app"), (test, "instrumentation-test")):
        if not apk.is_file():
            raise MissingDependencyError(f"the {what} APK {_shown_path(apk)} is not built: run `make android` first")
    return app, test


def check_install_prereqs(env: Mapping[str, str] | None = None, app_dir: Path = APP_DIR) -> dict[str, Any]:
    """`make android-install`: an adb binary and both APKs."""
    from .adb import find_adb

    try:
        adb = find_adb(env=env)
    except DeviceError as exc:
        raise MissingDependencyError(str(exc)) from None
    app, test = check_apks(app_dir)
    return {"adb": adb, "app_apk": str(app), "test_apk": str(test)}


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

    @property
    def remote_name(self) -> str:
        return self.path.name

    def digest(self) -> str:
        if self.sha256 is None:
            h = hashlib.sha256()
            with open(self.path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
            self.sha256 = h.hexdigest()
        return self.sha256


def artifacts_from_manifest(folder: str | os.PathLike[str], components: Sequence[str] | None = None,
                            delegate: str | None = None) -> tuple[list[AppArtifact], int | None]:
    """The ExecuTorch artifacts of a manifest folder (one per component; `delegate` picks among several).
    Returns (artifacts, frames)."""
    from ..manifest import read_manifest
    from .report import COMPONENTS

    manifest = read_manifest(folder)
    out = []
    for comp in components or COMPONENTS:
        entries = [e for e in manifest.components if e.component == comp and e.target == "executorch"
                   and (delegate is None or e.delegate == delegate)]
        if not entries:
            continue
        rank = {"xnnpack": 0, None: 1, "vulkan": 2, "qnn": 3}
        e = sorted(entries, key=lambda e: rank.get(e.delegate, 9))[0]
        path = manifest.path_of(e)
        out.append(AppArtifact(
            component=comp, path=path, inputs=[t.to_dict() for t in e.inputs] or None, sha256=e.sha256 or None,
            info={"file": e.file, "path": str(path), "format": "pte", "model": e.model, "target": e.target,
                  "delegate": e.delegate, "precision": e.dtype, "sha256": e.sha256, "bytes": e.bytes}))
    if not out:
        raise BadInputError(f"{folder}: the manifest has no ExecuTorch (.pte) artifact"
                            + (f" with delegate {delegate}" if delegate else "") + ": export with `--target executorch`")
    return out, manifest.frames


def coerce_artifacts(artifacts: Any) -> tuple[list[AppArtifact], int | None]:
    """A manifest folder, {component: path}, or a list of AppArtifact → (artifacts, frames or None)."""
    from .report import COMPONENTS

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
             "inputs": a.inputs, "artifact": {k: v for k, v in a.info.items() if k != "path"}}
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
    from .adb import quote

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
    message = None
    if not ok:
        if errors:
            message = errors[0]["Error"].strip().splitlines()[0]
        elif failed:
            stack = failed[0].get("stack", "").strip().splitlines()
            message = stack[0] if stack else f"test {failed[0].get('test', '?')} failed"
        elif "shortMsg" in result:
            message = result["shortMsg"].strip().splitlines()[0]
            if "longMsg" in result:
                message += ": " + result["longMsg"].strip().splitlines()[0]
        elif code is None:
            message = "the instrumentation ended without a result (the test process died or was killed)"
        elif tests_run == 0 or "OK (0 tests)" in stream:
            message = f"no test ran: is {TEST_CLASS} in the installed test APK?"
        else:
            message = (stream.strip().splitlines() or [f"instrumentation code {code}"])[-1]
    return InstrumentResult(ok=ok, report_path=report, tests_run=tests_run, message=message, statuses=statuses)


def instrument_failure(result: InstrumentResult, serial: str) -> DeviceError | MissingDependencyError:
    msg = result.message or "unknown failure"
    if "Unable to find instrumentation" in msg or "INSTRUMENTATION_FAILED" in msg:
        return MissingDependencyError(f"the benchmark test APK is not installed on {serial} ({msg}): run "
                                      f"`make android-install SERIAL={serial}`")
    return DeviceError(f"the benchmark app failed on {serial}: {msg} (full log: `adb -s {serial} logcat -d -s "
                       "Mi2vBench ExecuTorch AndroidRuntime TestRunner`)")


def load_app_report(text: str | bytes, where: str = "the app's report") -> dict[str, Any]:
    """Parse and check an app-written report (schema `mi2v.bench/1`); BadInputError with one line otherwise."""
    from .report import validate

    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{where} is not JSON ({exc}): the app may have been killed while writing it") from None
    try:
        validate(data)
    except BadInputError as exc:
        raise BadInputError(f"{where}: {exc}") from None
    for c in data["components"]:
        for r in c.get("runs") or []:
            bad = [s for s in r.get("samples_ms") or [] if not isinstance(s, (int, float)) or s < 0]
            if bad:
                raise BadInputError(f"{where}: the {c['component']} has invalid samples ({bad[:3]})")
    return data


def merge_app_report(app: Mapping[str, Any], base: Mapping[str, Any] | None = None, *, serial: str | None = None,
                     artifacts: Sequence[AppArtifact] = (), host: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The normal report with the app's measurements: `base` (the host's report: device facts from adb,
    conditions, protocol; may be None) plus the app's components. Components the app measured replace same-named
    ones in base; the others stay. The host's device facts win over the app's; if either says the device is
    simulated, the merged report says so. Returns a dict in the current report schema (BenchReport round trip)."""
    from .report import SCHEMA, BenchReport

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


def _file_sha(path: Path) -> str:
    return AppArtifact("encoder", path).digest()


def ensure_installed(dev: Any, app_dir: Path = APP_DIR, say: Say = _quiet, reinstall: bool = False) -> list[str]:
    """Install each APK the phone lacks or has in another build; returns the packages (re)installed."""
    app, test = check_apks(app_dir)
    done = []
    for package, apk in ((PACKAGE, app), (TEST_PACKAGE, test)):
        have = None if reinstall else _installed_apk_sha(dev, package)
        if have is not None and have == _file_sha(apk):
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
                timeout: float = 3600.0, say: Say = _quiet, echo: Say = print) -> dict[str, Any] | None:
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
    from .adb import Adb, parse_getprop

    if isinstance(device, str) or device is None:
        client = adb if adb is not None else Adb()
        dev = client.pick_device(device)
    else:
        dev = device
    for a in items:
        if not a.path.is_file():
            raise BadInputError(f"artifact {a.path} does not exist")
    installed = ensure_installed(dev, app_dir, say, reinstall)
    dev.mkdirs(DEVICE_DIR)
    remote = {f"{DEVICE_DIR}/{a.remote_name}": a for a in items}
    present = dev.sha256_many(list(remote))
    pushed = []
    for rpath, a in remote.items():
        if present.get(rpath) == a.digest():
            continue
        say(f"pushing {a.path.name} ({a.path.stat().st_size / 1e6:.1f} MB) to {rpath}")
        dev.push(a.path, rpath)
        pushed.append(a.remote_name)
    with tempfile.TemporaryDirectory(prefix="mi2v-app-") as tmp:
        plan_path = Path(tmp) / PLAN_NAME
        plan_path.write_text(json.dumps(build_plan(items, frames), indent=2) + "\n")
        dev.push(plan_path, f"{DEVICE_DIR}/{PLAN_NAME}")
    try:
        dev.shell(["run-as", PACKAGE, "rm", "-f", f"files/{REPORT_NAME}"])
        say(f"running the benchmark app on {dev.serial}: {warmup} warm-up + {iterations} timed iterations × "
            f"{runs} run(s) for {', '.join(a.component for a in items)}")
        rc, out, err = dev.shell(instrument_args(items, iterations, warmup, runs), timeout=timeout)
        result = parse_instrument_output(out + "\n" + err)
        if not result.ok:
            raise instrument_failure(result, dev.serial)
        rc, text, err = dev.shell(["run-as", PACKAGE, "cat", f"files/{REPORT_NAME}"])
        if rc != 0:
            detail = (err.strip() or text.strip() or "no output").splitlines()[-1]
            raise DeviceError(f"cannot read the app's report on {dev.serial} with run-as ({detail}): the debug APK "
                              "must be installed (release builds are not debuggable)")
        app = load_app_report(text, f"the report from {dev.serial}")
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
    finally:
        if not keep:
            try:
                dev.shell(["rm", "-rf", DEVICE_DIR])
            except DeviceError:
                pass


# --------------------------------------------------------------------------------------------------------------------
# CLI for the Makefile
# --------------------------------------------------------------------------------------------------------------------


def _run_commands(commands: Sequence[Command], echo: Say = print) -> int:
    for c in commands:
        echo(c.render())
        rc = subprocess.run(list(c.argv), cwd=c.cwd, env={**os.environ, **dict(c.env)}).returncode
        if rc != 0:
            raise Mi2vError(f"`{shlex.join(c.argv)}` failed with exit code {rc}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mi2v_export.devices.android_app",
                                description="Build, install and run the mi2v Android benchmark app (apps/android).")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="check the JDK/SDK/wrapper, then ./gradlew assembleDebug assembleDebugAndroidTest")
    b.add_argument("--variant", choices=sorted(VARIANTS), default="xnnpack",
                   help="ExecuTorch AAR: executorch-android (xnnpack) or executorch-android-vulkan")
    b.add_argument("--executorch-version", default=None, help="override the pinned AAR version")
    b.add_argument("--dry-run", action="store_true", help="print the command only")
    i = sub.add_parser("install", help="adb install -r both APKs on SERIAL")
    i.add_argument("--serial", required=True)
    i.add_argument("--dry-run", action="store_true")
    c = sub.add_parser("check", help="check the prerequisites only")
    c.add_argument("what", nargs="?", choices=("build", "install"), default="build")
    r = sub.add_parser("run", help="--via app: install if needed, push, am instrument, pull, merge")
    r.add_argument("--serial", default=None)
    r.add_argument("--artifacts", required=True, type=Path, help="a folder written by `mi2v export`")
    r.add_argument("--iterations", type=int, default=20)
    r.add_argument("--warmup", type=int, default=3)
    r.add_argument("--runs", type=int, default=1)
    r.add_argument("--out", type=Path, default=None, help="report JSON (default: print it)")
    r.add_argument("--keep", action="store_true", help="leave the artifacts on the phone")
    r.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    try:
        if a.cmd == "build":
            cmds = build_commands(variant=a.variant, executorch_version=a.executorch_version)
            if a.dry_run:
                print_commands(cmds)
                return 0
            check_build_prereqs()
            return _run_commands(cmds)
        if a.cmd == "install":
            if a.dry_run:
                print_commands(install_commands(a.serial))
                return 0
            facts = check_install_prereqs()
            return _run_commands(install_commands(a.serial, adb=facts["adb"]))
        if a.cmd == "check":
            facts = check_build_prereqs() if a.what == "build" else check_install_prereqs()
            for k, v in facts.items():
                print(f"{k}: {v}")
            return 0
        if a.cmd == "run":
            report = run_via_app(a.serial, a.artifacts, a.iterations, a.warmup, a.dry_run, runs=a.runs, keep=a.keep,
                                 say=lambda s: print(s, file=sys.stderr))
            if report is None:
                return 0
            from .report import BenchReport

            if a.out:
                BenchReport.from_dict(report).save(a.out)
                print(f"wrote {a.out}")
            else:
                print(json.dumps(report, indent=2))
            return 0 if report.get("status") == "ok" else 1
    except Mi2vError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 2


if __name__ == "__main__":
    sys.exit(main())


# --------------------------------------------------------------------------------------------------------------------
# --device adb --via app in the bench loop
# --------------------------------------------------------------------------------------------------------------------


class AppDevice(BenchDevice):
    """A phone over adb timed inside the Android benchmark app: the host reads the phone's facts and thermals over
    adb; one instrumentation run (at the first run()) times every prepared component in the app's process."""

    transport = "adb"
    together = True

    def __init__(self, opts: BenchOptions, manifest: Any, serial: str | None, say: Say):
        self.opts, self.manifest, self.serial, self.say = opts, manifest, serial, say
        self.items: list[AppArtifact] = []
        self.session: Any = None
        self.batch: BenchReport | Mi2vError | None = None
        self.device: dict[str, Any] = {}
        self.app_dir = Path(opts.app_dir) if opts.app_dir else APP_DIR

    def select(self, manifest: Any, opts: BenchOptions) -> list[Selection]:
        """The .pte of each component (the app runs ExecuTorch only)."""
        sels = select_artifacts(manifest, "executorch", "adb", opts.components)
        if all(s.entry is None for s in sels):
            raise BadInputError(f"{opts.artifacts}: no ExecuTorch (.pte) artifact for {', '.join(opts.components)}; "
                                "the app runs .pte only: export with `--target executorch`")
        for s in sels:
            if s.entry is None and not any(e.component == s.component and e.target == "executorch"
                                           for e in manifest.components):
                s.reason = "no ExecuTorch artifact in the manifest (the app runs .pte only)"
        return sels

    def prepare(self, sel: Selection) -> None:
        item = artifacts_from_manifest(self.opts.artifacts, [sel.component])[0][0]
        verify_files([(item.path, item.remote_name, item.sha256 or "")])
        self.items.append(item)

    def print_commands(self, echo: Say) -> None:
        for sel in self.select(self.manifest, self.opts):
            if sel.entry is not None:
                self.prepare(sel)
        adb = SimpleNamespace(path=str(self.opts.adb)) if self.opts.adb else None
        run_via_app(self.serial or "SERIAL", self.items, self.opts.iterations, self.opts.warmup, dry_run=True,
                    runs=self.opts.runs, frames=self.manifest.frames, adb=adb, app_dir=self.app_dir, echo=echo)

    def facts(self) -> DeviceFacts:
        from .adb import Adb
        from .android import AndroidSession, adb_host_facts, pick_device

        adb = Adb(self.opts.adb, server_port=self.opts.adb_port)
        host = adb_host_facts(adb, self.opts.adb_port)
        self.session = AndroidSession(adb, pick_device(adb, self.serial), self.say)
        self.say(f"reading device facts of {self.session.dev.serial}")
        self.device = device = self.session.fingerprint()
        uncontrolled = [*self.session.uncontrolled, "the app process is not pinned to cores and CPU clocks are not "
                        "locked", "screen state, charging and background apps are not controlled"]
        return DeviceFacts(device, host, {"mode": "app", "runner": APP_RUNNER}, uncontrolled)

    def snapshot(self) -> dict[str, Any]:
        return self.session.snapshot() if self.session else {}

    def alive(self) -> bool:
        try:
            return self.session is not None and self.session.dev.get_state() == "device"
        except DeviceError:
            return False

    def run(self, sel: Selection, comp: ComponentResult) -> ComponentResult:
        if self.batch is None:
            self.batch = self._run_app()
        if isinstance(self.batch, Mi2vError):
            raise self.batch
        measured = self.batch.component(sel.component)
        if measured is None:
            raise DeviceError("not measured: the app did not report it")
        return measured

    def _run_app(self) -> BenchReport | Mi2vError:
        """Install when needed, push, instrument once for every prepared component, read the app's report."""
        o = self.opts
        base = {"schema": SCHEMA, "device": self.device, "components": []}
        try:
            merged = run_via_app(self.session.dev, self.items, o.iterations, o.warmup, runs=o.runs,
                                 frames=self.manifest.frames, base_report=base, adb=self.session.adb,
                                 app_dir=self.app_dir, timeout=o.timeout, say=self.say)
        except Mi2vError as exc:
            return exc
        return BenchReport.from_dict(merged)

    def finish(self, report: BenchReport) -> None:
        """The app's view joins the host's: device facts as merged, its protocol and conditions, its warnings."""
        b = self.batch
        if not isinstance(b, BenchReport):
            return
        report.device, report.tool, report.staging = b.device, b.tool, b.staging
        report.protocol.update({k: v for k, v in b.protocol.items() if k not in report.protocol
                                or k in ("warmup", "iterations", "runs", "timed_region")})
        report.conditions["app"] = b.conditions
        report.warnings += [w for w in b.warnings if w not in report.warnings]
