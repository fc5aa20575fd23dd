"""The iOS benchmark (`apps/ios/`, a Swift package with an XCTest target) on an iPhone: `--device ios:UDID`.

Only a Mac with Xcode can build for or talk to an iPhone. On any other system every entry point says so at once, in
one line (MissingDependencyError), before reading artifacts or starting anything.

On macOS:

    mi2v bench --device ios:UDID    → devices/ios.py IOSDevice (one per compute unit) in the bench loop
                                    → run_ios(udid, artifacts, iterations, warmup, dry_run): checks that Xcode
                                      sees the phone (`xcrun devicectl list devices`), copies the `.mlpackage`
                                      artifacts and a plan.json into the test bundle's Payload folder, runs
                                      `xcodebuild test -destination platform=iOS,id=UDID -only-testing:…` (the test
                                      compiles each model on the phone with MLModel.compileModel, then times cold and
                                      warm loads and predictions for cpuOnly, cpuAndGPU, cpuAndNeuralEngine and all),
                                      and collects the report: the `MI2V_REPORT_JSON:` line the test prints, or the
                                      `mi2v-report.json` attachment exported from the .xcresult
                                      (`xcrun xcresulttool export attachments`, Xcode 16+).

The test writes one `mi2v.bench/1` report with an entry per (component, compute unit); `split_by_compute_unit`
turns it into one ordinary report per compute unit (each with its own per-frame headline), which is what `run_ios`
returns. Signing is the user's: pass the development team (`--team` / DEVELOPMENT_TEAM); nothing here manages
provisioning beyond `-allowProvisioningUpdates`.

Building the test bundle (`mi2v app build ios`, `make ios`) is `apps.build`.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..contract import COMPONENTS, SWIFT_UNIT
from ..devices.base import Say, quiet
from ..devices.report import BenchReport
from ..errors import BadInputError, DeviceError, Mi2vError, MissingDependencyError
from ..manifest import read_manifest
from .android_app import load_app_report
from .build import DERIVED_DATA, IOS_DIR, SCHEME, Command, _run, _shown_path, _signing, check_xcode, print_commands, require_macos
from .check_files import CHECK_DIR, read_sets, write_check

APP_DIR = IOS_DIR
PAYLOAD_DIR = APP_DIR / "Tests" / "Mi2vBenchTests" / "Payload"
TEST_ID = "Mi2vBenchTests/CoreMLBenchTests/testBenchmark"
PLAN_NAME = "plan.json"
PLAN_SCHEMA = "mi2v.ios-plan/1"
REPORT_MARKER = "MI2V_REPORT_JSON:"
ATTACHMENT_NAME = "mi2v-report"
# the Swift (MLComputeUnits) names of contract.COMPUTE_UNITS, measured from the fewest units to all of them
COMPUTE_UNITS = tuple(reversed(SWIFT_UNIT.values()))


# --------------------------------------------------------------------------------------------------------------------
# devices
# --------------------------------------------------------------------------------------------------------------------


def parse_devicectl_devices(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`xcrun devicectl list devices --json-output FILE` → [{udid, identifier, name, model, os_version, paired}]."""
    out = []
    for d in ((data.get("result") or {}).get("devices") or []):
        hw = d.get("hardwareProperties") or {}
        props = d.get("deviceProperties") or {}
        conn = d.get("connectionProperties") or {}
        out.append({
            "udid": hw.get("udid"), "identifier": d.get("identifier"), "name": props.get("name"),
            "model": hw.get("productType"), "marketing_name": hw.get("marketingName"),
            "platform": hw.get("platform"), "os_version": props.get("osVersionNumber"),
            "paired": conn.get("pairingState") == "paired", "tunnel": conn.get("tunnelState"),
        })
    return out


def find_device(udid: str, devices: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    for d in devices:
        if udid in (d.get("udid"), d.get("identifier")):
            if not d.get("paired"):
                raise DeviceError(f"iPhone {udid} is not paired with this Mac: unlock it, tap 'Trust' and turn on "
                                  "Developer Mode (Settings → Privacy & Security)")
            return dict(d)
    known = ", ".join(f"{d.get('name')} ({d.get('udid')})" for d in devices) or "none"
    raise DeviceError(f"Xcode does not see an iPhone with UDID {udid} (it sees: {known}): connect and unlock it, "
                      "then check `xcrun devicectl list devices`")


def list_devices() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="mi2v-devicectl-") as tmp:
        out = Path(tmp) / "devices.json"
        proc = _run(["xcrun", "devicectl", "list", "devices", "--json-output", str(out)], timeout=60)
        if proc.returncode != 0 or not out.is_file():
            detail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise DeviceError(f"`xcrun devicectl list devices` failed ({detail}): open Xcode once so it can install "
                              "its device support, then retry")
        return parse_devicectl_devices(json.loads(out.read_text()))


# --------------------------------------------------------------------------------------------------------------------
# artifacts, plan, commands
# --------------------------------------------------------------------------------------------------------------------


def coreml_artifacts(artifacts: Any, components: Sequence[str] | None = None
                     ) -> tuple[list[dict[str, Any]], int | None]:
    """A manifest folder or {component: .mlpackage path} → ([{component, path, artifact}], frames); `components`
    keeps only those (manifest folders)."""
    frames = None
    items: list[dict[str, Any]] = []
    if isinstance(artifacts, (str, os.PathLike)) and (Path(artifacts) / "manifest.json").is_file():
        manifest = read_manifest(artifacts)
        frames = manifest.frames
        for comp in components or COMPONENTS:
            entries = [e for e in manifest.components if e.component == comp and e.target == "coreml"]
            if entries:
                e = entries[0]
                items.append({"component": comp, "path": manifest.path_of(e), "folder": Path(artifacts), "entry": e,
                              "artifact": {
                    "file": e.file, "path": str(manifest.path_of(e)), "format": Path(e.file).suffix.lstrip("."),
                    "model": e.model, "target": e.target, "delegate": e.delegate, "precision": e.dtype,
                    "sha256": e.sha256, "bytes": e.bytes}})
        if not items:
            raise BadInputError(f"{artifacts}: the manifest has no Core ML artifact: export with `--target coreml`")
    elif isinstance(artifacts, Mapping):
        for comp, path in artifacts.items():
            if comp not in COMPONENTS:
                raise BadInputError(f"unknown component {comp!r}: use {', '.join(COMPONENTS)}")
            p = Path(path)
            items.append({"component": comp, "path": p, "artifact": {"file": p.name, "path": str(p),
                                                                       "format": p.suffix.lstrip("."),
                                                                       "target": "coreml"}})
    else:
        raise BadInputError(f"{artifacts}: not a folder written by `mi2v export` (no manifest.json)")
    for it in items:
        if it["path"].suffix not in (".mlpackage", ".mlmodel", ".mlmodelc"):
            raise BadInputError(f"{it['path'].name}: the iOS benchmark runs Core ML models (.mlpackage) only")
    return items, frames


def build_plan(items: Sequence[Mapping[str, Any]], iterations: int, warmup: int,
               compute_units: Sequence[str] = COMPUTE_UNITS, frames: int | None = None) -> dict[str, Any]:
    bad = [u for u in compute_units if u not in COMPUTE_UNITS]
    if bad:
        raise BadInputError(f"unknown compute unit {bad[0]!r}: choose from {', '.join(COMPUTE_UNITS)}")
    if iterations < 1 or warmup < 0:
        raise BadInputError("iterations must be ≥ 1 and warm-up ≥ 0")
    return {"schema": PLAN_SCHEMA, "frames": frames, "warmup": warmup, "iterations": iterations,
            "compute_units": list(compute_units),
            "components": [{"component": it["component"], "file": Path(it["path"]).name,
                            "artifact": {k: v for k, v in it["artifact"].items() if k != "path"}} for it in items]}


def stage_payload(items: Sequence[Mapping[str, Any]], plan: Mapping[str, Any], payload: Path = PAYLOAD_DIR) -> Path:
    """Replace the Payload folder's contents (README.md stays) with the models and plan.json; returns the plan."""
    payload.mkdir(parents=True, exist_ok=True)
    for child in payload.iterdir():
        if child.name == "README.md":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    for it in items:
        src = Path(it["path"])
        if not src.exists():
            raise BadInputError(f"artifact {src} does not exist")
        dst = payload / src.name
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    plan = {**plan, "components": [{**c, "check": _stage_check(it, payload)}
                                   for c, it in zip(plan["components"], items)]}
    plan_path = payload / PLAN_NAME
    plan_path.write_text(json.dumps(plan, indent=2) + "\n")
    return plan_path


def _stage_check(item: Mapping[str, Any], payload: Path) -> dict[str, Any] | None:
    """The XCTest's output-check files for a manifest artifact (first test-vector set, raw; apps/check_files.py)
    under Payload/check, paths relative to the Payload folder; None when there are none (then the XCTest records
    `output_check: {passed: null, reason}`)."""
    if item.get("entry") is None:
        return None
    sets = read_sets(item["folder"], item["entry"])
    if isinstance(sets, str):
        return None
    return write_check(item["component"], item["entry"], sets, payload / CHECK_DIR, CHECK_DIR)


def test_command(udid: str, result_bundle: Path, team: str | None = None, app_dir: Path = APP_DIR) -> Command:
    return Command(("xcodebuild", "test", "-scheme", SCHEME, "-destination", f"platform=iOS,id={udid}",
                    "-derivedDataPath", str(DERIVED_DATA), "-resultBundlePath", str(result_bundle),
                    f"-only-testing:{TEST_ID}", *_signing(team)), cwd=app_dir)


def export_attachments_command(result_bundle: Path, out_dir: Path) -> Command:
    return Command(("xcrun", "xcresulttool", "export", "attachments", "--path", str(result_bundle),
                    "--output-path", str(out_dir)), note="only if the report line is missing from the log (Xcode 16+)")


def ios_commands(udid: str, items: Sequence[Mapping[str, Any]], result_bundle: Path, team: str | None = None,
                 app_dir: Path = APP_DIR) -> list[Command]:
    """What `--device ios:UDID` runs, in order."""
    payload = app_dir / "Tests" / "Mi2vBenchTests" / "Payload"
    cmds = [Command(("xcodebuild", "-version")),
            Command(("xcrun", "devicectl", "list", "devices", "--json-output", "<temporary>/devices.json"),
                    note=f"is {udid} connected and paired?")]
    cmds += [Command(("cp", "-R", str(it["path"]), _shown_path(payload) + "/"), note="stage the model")
             for it in items]
    cmds.append(Command(("<write>", _shown_path(payload / PLAN_NAME)), note="components, iterations, warm-up, units"))
    cmds.append(test_command(udid, result_bundle, team, app_dir))
    cmds.append(export_attachments_command(result_bundle, result_bundle.with_suffix(".attachments")))
    return cmds


# --------------------------------------------------------------------------------------------------------------------
# collecting and merging the report
# --------------------------------------------------------------------------------------------------------------------


def parse_xcodebuild_output(text: str) -> dict[str, Any] | None:
    """The report from the test's `MI2V_REPORT_JSON: {…}` line (the last one), or None."""
    found = None
    for line in text.splitlines():
        i = line.find(REPORT_MARKER)
        if i >= 0:
            found = line[i + len(REPORT_MARKER):].strip()
    return load_app_report(found, "the report line in xcodebuild's output") if found else None


def report_from_attachments(folder: Path) -> dict[str, Any] | None:
    """The mi2v report among files exported by `xcresulttool export attachments` (named after the attachment)."""
    if not folder.is_dir():
        return None
    candidates = sorted(folder.rglob("*.json"), key=lambda p: (ATTACHMENT_NAME not in p.name, p.name))
    for path in candidates:
        if path.name == "manifest.json":
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and str(data.get("schema", "")).startswith("mi2v.bench/"):
            return load_app_report(path.read_text(), str(path))
    return None


def split_by_compute_unit(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """One ordinary report per compute unit (runtime.backend), each with its own status and per-frame headline."""
    units: dict[str, list[dict[str, Any]]] = {}
    for c in report["components"]:
        unit = (c.get("runtime") or {}).get("compute_units") or (c.get("runtime") or {}).get("backend") or "all"
        units.setdefault(unit, []).append(c)
    order = {u: i for i, u in enumerate(COMPUTE_UNITS)}
    out = {}
    for unit in sorted(units, key=lambda u: order.get(u, 99)):
        data = dict(report)
        data["components"] = units[unit]
        data["error"] = next((c.get("error") for c in units[unit] if c.get("error")), None)
        data["protocol"] = {**(report.get("protocol") or {}), "compute_unit": unit}
        out[unit] = BenchReport.from_dict(data).to_dict()
    return out


def merge_ios_report(app: Mapping[str, Any], udid: str, device_facts: Mapping[str, Any] | None = None,
                     artifacts: Sequence[Mapping[str, Any]] = ()) -> dict[str, dict[str, Any]]:
    """The app's report → {compute unit: report}, with the host's view of the phone (devicectl) merged in."""
    data = dict(app)
    device = {**(app.get("device") or {}), **{k: v for k, v in (device_facts or {}).items() if v is not None}}
    device.update(transport="ios", udid=udid, serial=udid, os="ios",
                  simulated_device=bool((app.get("device") or {}).get("simulated_device")))
    data["device"] = device
    host_info = {a["component"]: a["artifact"] for a in artifacts}
    comps = []
    for c in app["components"]:
        c = dict(c)
        c["runtime"] = {**(c.get("runtime") or {}), "runner": "ios-xctest", "mode": "app"}
        if c["component"] in host_info:
            c["artifact"] = {**(c.get("artifact") or {}), **host_info[c["component"]]}
        comps.append(c)
    data["components"] = comps
    return split_by_compute_unit(data)


def _xcodebuild_failure(text: str, udid: str, team: str | None) -> Mi2vError:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"(xcodebuild: )?error:", ln) or "error:" in ln[:40]]
    detail = errors[0] if errors else (lines[-1] if lines else "no output")
    if "development team" in text.lower() or "signing" in detail.lower() or "provisioning" in detail.lower():
        hint = ("pass your Apple development team (`--team TEAMID`, i.e. DEVELOPMENT_TEAM)" if not team
                else "open apps/ios/Package.swift in Xcode once and let it set up signing for the test bundle")
        return MissingDependencyError(f"code signing for the iOS test bundle failed ({detail}): {hint}")
    if "Unable to find a destination" in text or "is not available" in detail:
        return DeviceError(f"xcodebuild cannot use iPhone {udid} ({detail}): unlock it, trust this Mac, enable "
                           "Developer Mode, and check its iOS is supported by this Xcode")
    return DeviceError(f"`xcodebuild test` failed on {udid}: {detail}")


def run_ios(udid: str, artifacts: Any, iterations: int = 20, warmup: int = 3, dry_run: bool = False, *,
            compute_units: Sequence[str] = COMPUTE_UNITS, team: str | None = None, out_dir: Path | None = None,
            components: Sequence[str] | None = None,
            timeout: float = 7200.0, system: str | None = None, app_dir: Path = APP_DIR,
            say: Say = quiet, echo: Say = print) -> dict[str, dict[str, Any]] | None:
    """`mi2v bench --device ios:UDID`. Off macOS: MissingDependencyError at once (also for a dry run). With
    dry_run, print the commands and return None. Otherwise returns {compute unit: report dict}."""
    require_macos(system)
    if not udid:
        raise BadInputError("--device ios:UDID needs the phone's UDID (`xcrun devicectl list devices` shows it)")
    items, frames = coreml_artifacts(artifacts, components)
    plan = build_plan(items, iterations, warmup, compute_units, frames)
    safe = re.sub(r"[^\w.-]+", "_", udid)
    result_bundle = (out_dir or Path(tempfile.gettempdir())) / f"mi2v-ios-{safe}.xcresult"
    if dry_run:
        print_commands(ios_commands(udid, items, result_bundle, team, app_dir), echo)
        return None
    check_xcode(system)
    device = find_device(udid, list_devices())
    say(f"staging {len(items)} model(s) into {_shown_path(app_dir)}/Tests/Mi2vBenchTests/Payload")
    stage_payload(items, plan, app_dir / "Tests" / "Mi2vBenchTests" / "Payload")
    if result_bundle.exists():
        shutil.rmtree(result_bundle)
    cmd = test_command(udid, result_bundle, team, app_dir)
    say(f"running the Core ML benchmark on {device.get('name') or udid}: {cmd.render()}")
    try:
        proc = subprocess.run(list(cmd.argv), cwd=cmd.cwd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, errors="replace")
    except subprocess.TimeoutExpired:
        raise DeviceError(f"`xcodebuild test` on {udid} did not finish within {timeout:g} s: lower --iterations or "
                          "the compute units, or raise the timeout") from None
    text = proc.stdout + "\n" + proc.stderr
    report = parse_xcodebuild_output(text)
    if report is None and result_bundle.exists():
        export = export_attachments_command(result_bundle, result_bundle.with_suffix(".attachments"))
        subprocess.run(list(export.argv), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        report = report_from_attachments(result_bundle.with_suffix(".attachments"))
    if report is None:
        if proc.returncode != 0:
            raise _xcodebuild_failure(text, udid, team)
        raise DeviceError(f"the iOS test on {udid} finished without a report (was it skipped?): open "
                          f"{result_bundle} in Xcode to see its log")
    facts = {"name": device.get("name"), "model": device.get("model"),
             "marketing_name": device.get("marketing_name"), "os_version": device.get("os_version")}
    merged = merge_ios_report(report, udid, facts, items)
    for data in merged.values():
        data["host"] = {**(data.get("host") or {}), "os": f"{platform.system()} {platform.release()}",
                        "xcresult": str(result_bundle)}
    return merged
