"""`mi2v app build|install|stage`: build and install the phone benchmark apps (apps/android, apps/ios).

`make android`, `make android-install` and `make ios` call these. Each checks its prerequisites first (one `error:`
line naming what is missing); `--dry-run` prints the exact commands; `--check` only checks. Running a built app on a
phone is `mi2v bench --via app` / `--device ios:UDID`.
"""

from __future__ import annotations

from enum import Enum

import typer

from ..apps import build as ab
from ..apps.build import _shown_path
from ..integrity import check_entries
from ..manifest import read_manifest
from ..outputs import check_folder
from ._options import AllowModified, Artifacts, CheckOnly, DryRun, Iterations, Team, Warmup, refine

app_app = typer.Typer(
    name="app",
    help="Build and install the phone benchmark apps: the Android app (apps/android) and the iOS Core ML XCTest "
    "(apps/ios, macOS only).",
    no_args_is_help=True,
)


class Platform(str, Enum):
    android = "android"
    ios = "ios"


class Variant(str, Enum):
    xnnpack = "xnnpack"
    vulkan = "vulkan"


def _show(facts: dict) -> None:
    for key, value in facts.items():
        typer.echo(f"{key}: {value}")


@app_app.command("build")
def build(
    platform: Platform = typer.Argument(Platform.android, help="android (Gradle) or ios (Xcode, macOS only)"),
    variant: Variant = typer.Option(Variant.xnnpack, "--variant", help="android: the ExecuTorch AAR, "
                                    "executorch-android (xnnpack) or executorch-android-vulkan (vulkan)"),
    executorch_version: str | None = typer.Option(None, "--executorch-version", help="android: override the "
                                                  "pinned AAR version"),
    team: Team = None,
    dry_run: DryRun = False,
    check: refine(CheckOnly, help="check the prerequisites only (JDK, SDK, wrapper / Xcode)") = False,
) -> None:
    """Android: `./gradlew assembleDebug assembleDebugAndroidTest` in apps/android (JDK 17, ANDROID_HOME).
    iOS: `xcodebuild build-for-testing` in apps/ios (macOS with Xcode 15+)."""
    if platform is Platform.ios:
        ab.require_macos(what="`mi2v app build ios`")
        commands = ab.ios_build_commands(team)
        prereqs = ab.check_ios_prereqs
    else:
        commands = ab.build_commands(variant=variant.value, executorch_version=executorch_version)
        prereqs = ab.check_build_prereqs
    if dry_run:
        ab.print_commands(commands, typer.echo)
    elif check:
        _show(prereqs())
    else:
        prereqs()
        ab.run_commands(commands, typer.echo)


@app_app.command("install")
def install(
    serial: str = typer.Option(..., "--serial", help="the phone (a serial from `mi2v devices list`)"),
    dry_run: DryRun = False,
    check: refine(CheckOnly, help="check adb and the built APKs only") = False,
) -> None:
    """`adb -s SERIAL install -r -t` of the Android app and its test APK (built by `mi2v app build`)."""
    if dry_run:
        ab.print_commands(ab.install_commands(serial), typer.echo)
        return
    facts = ab.check_install_prereqs()
    if check:
        _show(facts)
        return
    ab.run_commands(ab.install_commands(serial, adb=facts["adb"]), typer.echo)


@app_app.command("stage")
def stage(
    artifacts: refine(Artifacts, help="a folder written by `mi2v export --target coreml`") = ...,
    iterations: refine(Iterations, help="timed predictions per compute unit") = 20,
    warmup: refine(Warmup, help="discarded predictions before them") = 3,
    compute_units: str = typer.Option("cpuOnly,cpuAndGPU,cpuAndNeuralEngine,all", "--compute-units",
                                      help="comma-separated Core ML compute units"),
    allow_modified: AllowModified = False,
) -> None:
    """iOS: copy the Core ML artifacts and a plan into the test bundle's Payload folder (for a run from Xcode)."""
    from ..apps import ios  # numpy: not at `mi2v --help`

    units = [u.strip() for u in compute_units.split(",") if u.strip()]
    items, frames = ios.coreml_artifacts(artifacts)
    check_entries(read_manifest(artifacts), [it["entry"] for it in items], allow_modified=allow_modified)
    check_folder(ios.PAYLOAD_DIR, "Payload", need_bytes=sum(it["artifact"]["bytes"] or 0 for it in items))
    path = ios.stage_payload(items, ios.build_plan(items, iterations, warmup, units, frames))
    typer.echo(f"wrote {_shown_path(path)}")


def register(app: typer.Typer) -> None:
    app.add_typer(app_app, name="app")
