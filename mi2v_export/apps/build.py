"""Building and installing the phone benchmark apps (`apps/android`, `apps/ios`): toolchain checks and commands.

`mi2v app build|install|check` (commands/app.py, called by `make android`, `make android-install`, `make ios`) runs
these. Every prerequisite failure is one line naming what is missing and how to get it (MissingDependencyError); a
dry run prints the exact commands and needs no SDK, Xcode or phone. Driving a built app on a phone (`mi2v bench
--via app`, `--device ios:UDID`) is in `android_app.py` and `ios.py` beside this module and their bench devices in
devices/android_app.py and devices/ios.py.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..devices.adb import find_adb
from ..devices.base import Say
from ..errors import BadInputError, DeviceError, Mi2vError, MissingDependencyError

REPO = Path(__file__).resolve().parents[2]
ANDROID_DIR = REPO / "apps" / "android"
IOS_DIR = REPO / "apps" / "ios"

# Android pins (apps/android/gradle/wrapper/gradle-wrapper.properties and app/build.gradle.kts say the same).
APP_APK = Path("app/build/outputs/apk/debug/app-debug.apk")
TEST_APK = Path("app/build/outputs/apk/androidTest/debug/app-debug-androidTest.apk")
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

# iOS
MIN_XCODE = 15  # devicectl and MLModel.compileModel(at:) async
SCHEME = "Mi2vBench"
DERIVED_DATA = Path(".build") / "xcode"  # relative to apps/ios
MACOS_ONLY = ("{what} needs macOS with Xcode {min}+ (this machine runs {system}): run the iOS benchmark on a Mac "
              "with the iPhone attached")


# --------------------------------------------------------------------------------------------------------------------
# commands and the Android app
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


def build_commands(app_dir: Path = ANDROID_DIR, variant: str = "xnnpack",
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


def apk_paths(app_dir: Path = ANDROID_DIR) -> tuple[Path, Path]:
    return app_dir / APP_APK, app_dir / TEST_APK


def install_commands(serial: str, app_dir: Path = ANDROID_DIR, adb: str = "adb") -> list[Command]:
    """`make android-install SERIAL=…`: install (or replace) both APKs; -t allows test-only builds."""
    return [Command((adb, "-s", serial, "install", "-r", "-t", str(apk))) for apk in apk_paths(app_dir)]


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


def check_android_sdk(env: Mapping[str, str] | None = None, app_dir: Path = ANDROID_DIR) -> dict[str, str]:
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


def check_gradlew(app_dir: Path = ANDROID_DIR) -> dict[str, str]:
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


def check_build_prereqs(env: Mapping[str, str] | None = None, app_dir: Path = ANDROID_DIR) -> dict[str, Any]:
    """Everything `make android` needs, checked in order; raises on the first thing missing."""
    return {"jdk": check_jdk(env), "android_sdk": check_android_sdk(env, app_dir), "gradlew": check_gradlew(app_dir)}


def check_apks(app_dir: Path = ANDROID_DIR) -> tuple[Path, Path]:
    app, test = apk_paths(app_dir)
    for apk, what in ((app, "app"), (test, "instrumentation-test")):
        if not apk.is_file():
            raise MissingDependencyError(f"the {what} APK {_shown_path(apk)} is not built: run `make android` first")
    return app, test


def check_install_prereqs(env: Mapping[str, str] | None = None, app_dir: Path = ANDROID_DIR) -> dict[str, Any]:
    """`make android-install`: an adb binary and both APKs."""
    try:
        adb = find_adb(env=env)
    except DeviceError as exc:
        raise MissingDependencyError(str(exc)) from None
    app, test = check_apks(app_dir)
    return {"adb": adb, "app_apk": str(app), "test_apk": str(test)}


def run_commands(commands: Sequence[Command], echo: Say = print) -> None:
    """Run each command in its folder, echoing it first; the first failure is one error line."""
    for c in commands:
        echo(c.render())
        rc = subprocess.run(list(c.argv), cwd=c.cwd, env={**os.environ, **dict(c.env)}).returncode
        if rc != 0:
            raise Mi2vError(f"`{shlex.join(c.argv)}` failed with exit code {rc}")


# --------------------------------------------------------------------------------------------------------------------
# the iOS benchmark (macOS with Xcode)
# --------------------------------------------------------------------------------------------------------------------


def _system(system: str | None) -> str:
    return system or platform.system()


def require_macos(system: str | None = None, what: str = "`--device ios:UDID`") -> None:
    """Refuse at once, in one line, anywhere but macOS."""
    name = _system(system)
    if name != "Darwin":
        raise MissingDependencyError(MACOS_ONLY.format(what=what, min=MIN_XCODE, system=name or "an unknown system"))


def _run(argv: Sequence[str], timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          stdin=subprocess.DEVNULL, errors="replace")


def check_xcode(system: str | None = None, what: str = "`--device ios:UDID`") -> dict[str, str]:
    """macOS, a full Xcode (not only the Command Line Tools) selected, version ≥ 15, and devicectl."""
    require_macos(system, what)
    if not shutil.which("xcode-select") or not shutil.which("xcodebuild") or not shutil.which("xcrun"):
        raise MissingDependencyError("Xcode is not installed (no xcodebuild/xcrun): install Xcode from the App Store, "
                                     "then `sudo xcode-select -s /Applications/Xcode.app/Contents/Developer`")
    developer = _run(["xcode-select", "-p"]).stdout.strip()
    if not developer or "CommandLineTools" in developer:
        raise MissingDependencyError(
            f"only the Command Line Tools are selected ({developer or 'nothing'}): install Xcode and run "
            "`sudo xcode-select -s /Applications/Xcode.app/Contents/Developer`")
    proc = _run(["xcodebuild", "-version"])
    m = re.search(r"Xcode (\d+)(?:\.(\d+))?(?:\.(\d+))?", proc.stdout)
    if proc.returncode != 0 or not m:
        detail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise MissingDependencyError(f"`xcodebuild -version` failed ({detail}): open Xcode once to accept its license "
                                     "(`sudo xcodebuild -license accept`) and install its components")
    if int(m.group(1)) < MIN_XCODE:
        raise MissingDependencyError(f"Xcode {m.group(0)[6:]} is too old: the iOS benchmark needs Xcode {MIN_XCODE}+ "
                                     "(devicectl); update Xcode")
    if _run(["xcrun", "--find", "devicectl"]).returncode != 0:
        raise MissingDependencyError("`xcrun devicectl` is not available: install Xcode 15+ and select it with "
                                     "`sudo xcode-select -s …`")
    return {"developer_dir": developer, "xcode": m.group(0)}


def check_ios_prereqs(system: str | None = None, what: str = "`make ios`") -> dict[str, str]:
    """Everything `make ios` needs (one line on the first thing missing)."""
    return check_xcode(system, what)


def _signing(team: str | None) -> list[str]:
    return ["-allowProvisioningUpdates"] + ([f"DEVELOPMENT_TEAM={team}"] if team else [])


def ios_build_commands(team: str | None = None, app_dir: Path = IOS_DIR) -> list[Command]:
    """`make ios`: build the package and its test bundle for iOS devices."""
    return [Command(("xcodebuild", "build-for-testing", "-scheme", SCHEME, "-destination", "generic/platform=iOS",
                     "-derivedDataPath", str(DERIVED_DATA), *_signing(team)), cwd=app_dir)]
