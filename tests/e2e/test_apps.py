"""The phone benchmark apps (apps/android, apps/ios) as far as this Linux machine can check them.

Real here: the prerequisite checks against fake JDK/SDK folders and PATHs, the exact command lines each path runs
(dry run), the apps/android/gradlew script itself, the parsers and the merge of app-written reports (samples in
tests/data/app_reports follow the schema; their values are synthetic), and one `--via app` run through the real adb
client and server against the simulated phone. In that run the Android framework and the app are stand-ins: small
`pm`, `am` and `run-as` scripts placed on the simulated phone answer as they would and write a sample report; no
Kotlin runs. The iOS path is exercised with fake `xcode-select`/`xcodebuild`/`xcrun` on PATH (argv and parsing only).
The slow test compiles the app's Android-free Kotlin core with a real kotlinc when one is installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mi2v_export.apps import android_app as aa
from mi2v_export.apps import build as ab
from mi2v_export.apps import ios
from mi2v_export.apps.check_files import read_raw
from mi2v_export.devices.android_session import device_facts
from mi2v_export.devices.report import BenchReport, validate
from mi2v_export.errors import BadInputError, DeviceError, MissingDependencyError

from tests.conftest import private_adb, run_cli

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data" / "app_reports"
ANDROID = REPO / "apps" / "android"


def _sample(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


def _script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def _env(path_dirs: list[Path], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAVA", "ANDROID_"))}
    env["PATH"] = os.pathsep.join(str(p) for p in path_dirs)
    env.update(extra)
    return env


def _fake_jdk(folder: Path, version: str, javac: bool = True) -> Path:
    bin_dir = folder / "bin"
    _script(bin_dir, "java", f"echo 'openjdk version \"{version}\" 2025-04-15' >&2\necho 'OpenJDK Runtime' >&2\n")
    if javac:
        _script(bin_dir, "javac", f"echo 'javac {version}'\n")
    return bin_dir


def _fake_sdk(folder: Path, platform: str = "android-35", build_tools: str | None = "35.0.0") -> Path:
    (folder / "platforms" / platform).mkdir(parents=True)
    (folder / "platforms" / platform / "android.jar").write_bytes(b"PK")
    if build_tools:
        (folder / "build-tools" / build_tools).mkdir(parents=True)
    return folder


def _fake_app_dir(folder: Path, jar: bool = True, apks: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ANDROID / "gradlew", folder / "gradlew")
    (folder / "gradle" / "wrapper").mkdir(parents=True)
    if jar:
        (folder / "gradle" / "wrapper" / "gradle-wrapper.jar").write_bytes(b"PK")
    if apks:
        for rel, data in ((ab.APP_APK, b"fake app apk"), (ab.TEST_APK, b"fake test apk")):
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
    return folder


# ---- Android prerequisites --------------------------------------------------------------------------------------


def test_jdk_missing_says_how_to_get_one(tmp_path):
    with pytest.raises(MissingDependencyError) as e:
        ab.check_jdk(_env([tmp_path]))
    msg = _one_line(e.value)
    assert msg.startswith("no JDK: `java` is not on PATH and JAVA_HOME is unset")
    assert "openjdk-17-jdk-headless" in msg and "JAVA_HOME" in msg


def test_jdk_too_old_runtime_only_and_bad_java_home(tmp_path):
    old = _fake_jdk(tmp_path / "jdk11", "11.0.2")
    with pytest.raises(MissingDependencyError) as e:
        ab.check_jdk(_env([old]))
    assert "JDK 17+ is needed by the Android Gradle plugin, but `java -version` says 11.0.2" in _one_line(e.value)
    legacy = _fake_jdk(tmp_path / "jdk8", "1.8.0_392")
    with pytest.raises(MissingDependencyError, match=r"says 1\.8\.0_392"):
        ab.check_jdk(_env([legacy]))
    jre = _fake_jdk(tmp_path / "jre17", "17.0.15", javac=False)
    with pytest.raises(MissingDependencyError) as e:
        ab.check_jdk(_env([jre]))
    assert "found a Java 17.0.15 runtime" in _one_line(e.value) and "`javac` is missing" in str(e.value)
    with pytest.raises(MissingDependencyError) as e:
        ab.check_jdk(_env([tmp_path], JAVA_HOME=str(tmp_path / "nowhere")))
    assert "has no bin/java" in _one_line(e.value)


def test_jdk_found_through_java_home_or_path(tmp_path):
    good = _fake_jdk(tmp_path / "jdk17", "17.0.15")
    facts = ab.check_jdk(_env([tmp_path], JAVA_HOME=str(tmp_path / "jdk17")))
    assert facts["version"] == "17.0.15" and facts["javac"].endswith("javac")
    assert ab.check_jdk(_env([good]))["version"] == "17.0.15"
    assert ab._java_version('openjdk version "21" 2023-09-19') == (21, "21")


def test_android_sdk_checks(tmp_path):
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    with pytest.raises(MissingDependencyError) as e:
        ab.check_android_sdk({}, app_dir)
    msg = _one_line(e.value)
    assert msg.startswith("no Android SDK: ANDROID_HOME (or ANDROID_SDK_ROOT) is not set")
    assert 'sdkmanager "platforms;android-35" "build-tools;35.0.0" "platform-tools"' in msg
    with pytest.raises(MissingDependencyError, match=r"ANDROID_HOME=.*nowhere is not a folder"):
        ab.check_android_sdk({"ANDROID_HOME": str(tmp_path / "nowhere")}, app_dir)
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(MissingDependencyError) as e:
        ab.check_android_sdk({"ANDROID_SDK_ROOT": str(bare)}, app_dir)
    assert "lacks platform android-35: run `sdkmanager \"platforms;android-35\"`" in _one_line(e.value)
    old_tools = _fake_sdk(tmp_path / "old", build_tools="30.0.3")
    with pytest.raises(MissingDependencyError) as e:
        ab.check_android_sdk({"ANDROID_HOME": str(old_tools)}, app_dir)
    assert "no build-tools 34+ (has: 30.0.3)" in _one_line(e.value)
    sdk = _fake_sdk(tmp_path / "sdk")
    facts = ab.check_android_sdk({"ANDROID_HOME": str(sdk)}, app_dir)
    assert facts == {"sdk": str(sdk), "source": "ANDROID_HOME", "platform": "android-35", "build_tools": "35.0.0"}
    # Gradle's own fallback: sdk.dir in local.properties
    (app_dir / "local.properties").write_text(f"sdk.dir={sdk}\n")
    assert ab.check_android_sdk({}, app_dir)["sdk"] == str(sdk)


def test_gradle_wrapper_checks_and_the_script_itself(tmp_path):
    app_dir = _fake_app_dir(tmp_path / "app", jar=False)
    with pytest.raises(MissingDependencyError) as e:
        ab.check_gradlew(app_dir)
    msg = _one_line(e.value)
    assert "gradle-wrapper.jar is missing" in msg and "`gradle wrapper --gradle-version 8.11.1`" in msg
    # the committed gradlew says the same, in one line, before touching Java
    proc = subprocess.run([str(app_dir / "gradlew"), "assembleDebug"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "gradle wrapper --gradle-version 8.11.1" in proc.stderr
    (app_dir / "gradlew").chmod(0o644)
    with pytest.raises(MissingDependencyError, match="is not executable: run `chmod"):
        ab.check_gradlew(app_dir)
    # the pins agree with the files
    props = (ANDROID / "gradle" / "wrapper" / "gradle-wrapper.properties").read_text()
    assert f"gradle-{ab.GRADLE_VERSION}-bin.zip" in props
    build = (ANDROID / "app" / "build.gradle.kts").read_text()
    assert f"compileSdk = {ab.COMPILE_SDK}" in build and f'testApplicationId = "{aa.TEST_PACKAGE}"' in build
    assert f'testInstrumentationRunner = "{aa.JUNIT_RUNNER}"' in build
    assert "org.pytorch:$executorchArtifact:$executorchVersion" in build
    gp = (ANDROID / "gradle.properties").read_text()
    assert "mi2v.executorchVersion=1.5.1" in gp and "executorch==1.5.1" in (REPO / "pyproject.toml").read_text()


def test_build_prereqs_fail_on_the_first_missing_thing(tmp_path):
    jdk = _fake_jdk(tmp_path / "jdk", "17.0.15")
    app_dir = _fake_app_dir(tmp_path / "app")
    with pytest.raises(MissingDependencyError, match="^no Android SDK"):
        ab.check_build_prereqs(_env([jdk]), app_dir)
    sdk = _fake_sdk(tmp_path / "sdk")
    facts = ab.check_build_prereqs(_env([jdk], ANDROID_HOME=str(sdk)), app_dir)
    assert set(facts) == {"jdk", "android_sdk", "gradlew"}
    with pytest.raises(MissingDependencyError) as e:
        ab.check_apks(app_dir)
    assert "is not built: run `make android` first" in _one_line(e.value)


def test_cli_check_and_dry_runs():
    env = _env([Path("/nonexistent")])
    proc = run_cli("app", "build", "--check", env=env)
    assert proc.returncode == 3
    assert proc.stderr.startswith("error: no JDK:") and proc.stderr.count("\n") == 1
    proc = run_cli("app", "build", "android", "--dry-run")
    assert proc.returncode == 0
    assert proc.stdout == "cd apps/android && ./gradlew assembleDebug assembleDebugAndroidTest\n"
    proc = run_cli("app", "install", "--serial", "R5CT1234", "--dry-run")
    assert proc.stdout.splitlines() == [
        "adb -s R5CT1234 install -r -t " + str(ANDROID / "app/build/outputs/apk/debug/app-debug.apk"),
        "adb -s R5CT1234 install -r -t " + str(ANDROID / "app/build/outputs/apk/androidTest/debug/"
                                               "app-debug-androidTest.apk"),
    ]
    vulkan = ab.build_commands(variant="vulkan", executorch_version="1.5.1")[0].render()
    assert vulkan == ("cd apps/android && ./gradlew assembleDebug assembleDebugAndroidTest "
                      "-Pmi2v.executorchVariant=vulkan -Pmi2v.executorchVersion=1.5.1")
    with pytest.raises(BadInputError):
        ab.build_commands(variant="qnn")


# ---- --via app: commands, plan, parsing, merging ----------------------------------------------------------------


def _pte_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, name in enumerate(("encoder", "denoiser", "decoder")):
        p = folder / f"{name}.pte"
        p.write_bytes(b"\0\0\0\0ET12" + bytes([i]) * 64)
        out[name] = p
    return out


def test_via_app_dry_run_prints_each_command(tmp_path):
    files = _pte_files(tmp_path / "art")
    lines: list[str] = []
    assert aa.run_via_app("R5CT1234", files, 30, 5, dry_run=True, runs=2, echo=lines.append) is None
    d = "/data/local/tmp/mi2v/app"
    instrument = ("adb -s R5CT1234 shell 'am instrument -w -r -e artifacts "
                  f"encoder={d}/encoder.pte,denoiser={d}/denoiser.pte,decoder={d}/decoder.pte -e iterations 30 "
                  f"-e warmup 5 -e runs 2 -e output mi2v-app-report.json -e plan {d}/plan.json "
                  "-e class org.mi2v.bench.Mi2vBenchmarkTest org.mi2v.bench.test/androidx.test.runner.AndroidJUnitRunner'")
    assert instrument in lines
    assert lines[0] == "adb -s R5CT1234 shell 'pm path org.mi2v.bench'    # is the app installed? (then sha256sum of its base.apk)"
    assert any(ln.startswith("adb -s R5CT1234 install -r -t ") and "app-debug.apk" in ln for ln in lines)
    assert f"adb -s R5CT1234 push {files['denoiser']} {d}/denoiser.pte    # only if not already there" in lines
    assert "adb -s R5CT1234 shell 'run-as org.mi2v.bench cat files/mi2v-app-report.json'" in lines[-2]
    assert lines[-1] == f"adb -s R5CT1234 shell 'rm -rf {d}'"
    # the remote string is one argument whose tokens the device shell splits back exactly
    remote = shlex.split(instrument)[4]
    assert shlex.split(remote) == aa.instrument_args(aa.coerce_artifacts(files)[0], 30, 5, 2)
    with pytest.raises(BadInputError, match="runs ExecuTorch .pte artifacts only"):
        aa.run_via_app("S", {"encoder": tmp_path / "encoder.onnx"}, dry_run=True, echo=lines.append)
    with pytest.raises(BadInputError, match="unknown component 'vae'"):
        aa.run_via_app("S", {"vae": files["encoder"]}, dry_run=True, echo=lines.append)


def _write_manifest(folder: Path, vectors: bool = False) -> Path:
    """Fake .pte files and their manifest; with `vectors`, the decoder has stored test vectors (an .npz)."""
    from mi2v_export.files import file_digest
    from mi2v_export.manifest import MANIFEST_NAME, ArtifactEntry, Manifest, TensorInfo

    files = _pte_files(folder)
    entries = []
    for name, path in files.items():
        sha, size = file_digest(path)
        entries.append(ArtifactEntry(
            component=name, model=f"{name}-model", target="executorch", delegate="xnnpack", dtype="fp32",
            file=path.name, sha256=sha, bytes=size,
            inputs=[TensorInfo("x", (1, 4, 3, 8, 8), "float32")], outputs=[TensorInfo("y", (1, 4), "float32")],
            export={}, parity={}))
    if vectors:
        (folder / "testdata").mkdir()
        rng = np.random.default_rng(5)
        np.savez(folder / "testdata/decoder.pte.npz", **{"set0.in.x": rng.standard_normal((1, 4, 3, 8, 8), np.float32),
                                                           "set0.out.y": rng.standard_normal((1, 4), np.float32)})
        entries[-1].test_vectors = {"format": "npz", "file": "testdata/decoder.pte.npz", "sets": 1, "bytes": 400}
    m = Manifest(preset="tiny", resolution=(64, 64), frames=9, latent_shape=(1, 4, 3, 8, 8),
                 source={"weights": "seeded", "seed": 0}, components=entries)
    (folder / MANIFEST_NAME).write_text(json.dumps(m.to_dict(), indent=2))
    return folder


@pytest.mark.unit
def test_plan_from_a_manifest_carries_input_shapes(tmp_path):
    folder = _write_manifest(tmp_path / "art")
    items, frames = aa.coerce_artifacts(folder)
    assert frames == 9 and [a.component for a in items] == ["encoder", "denoiser", "decoder"]
    plan = aa.build_plan(items, frames)
    assert plan["schema"] == "mi2v.app-plan/1" and plan["frames"] == 9
    c = plan["components"][1]
    assert c["path"] == "/data/local/tmp/mi2v/app/denoiser.pte"
    assert c["inputs"] == [{"name": "x", "shape": [1, 4, 3, 8, 8], "dtype": "float32"}]
    assert c["artifact"]["delegate"] == "xnnpack" and c["artifact"]["sha256"] == items[1].sha256
    with pytest.raises(BadInputError, match="no ExecuTorch"):
        aa.artifacts_from_manifest(folder, delegate="vulkan")


@pytest.mark.unit
def test_instrument_output_parsing():
    ok = aa.parse_instrument_output((DATA / "instrument_ok.txt").read_text())
    assert ok.ok and ok.tests_run == 1 and ok.message is None
    assert ok.report_path == "/data/user/0/org.mi2v.bench/files/mi2v-app-report.json"
    failed = aa.parse_instrument_output((DATA / "instrument_failed.txt").read_text())
    assert not failed.ok
    assert failed.message == ("java.lang.IllegalArgumentException: artifacts: unknown component 'vae' "
                              "(use encoder, denoiser, decoder)")
    err = aa.instrument_failure(failed, "R5CT1234")
    assert isinstance(err, DeviceError) and "unknown component 'vae'" in _one_line(err)
    missing = aa.parse_instrument_output((DATA / "instrument_not_installed.txt").read_text())
    assert not missing.ok and missing.message.startswith("Unable to find instrumentation info")
    err = aa.instrument_failure(missing, "R5CT1234")
    assert isinstance(err, MissingDependencyError) and "make android-install SERIAL=R5CT1234" in _one_line(err)
    crashed = aa.parse_instrument_output((DATA / "instrument_crashed.txt").read_text())
    assert not crashed.ok and crashed.message == "Process crashed."
    assert not aa.parse_instrument_output("").ok


@pytest.mark.unit
def test_app_reports_parse_and_round_trip():
    for name in ("android_xnnpack_ok.json", "android_vulkan_partial.json", "ios_coreml.json"):
        data = aa.load_app_report((DATA / name).read_text(), name)
        again = BenchReport.from_dict(data).to_dict()
        validate(again)
        for a, b in zip(data["components"], again["components"]):
            la, lb = a["summary"]["latency_ms"], b["summary"]["latency_ms"]
            assert la.pop("run_medians", None) == lb.pop("run_medians", None)
            assert la == pytest.approx(lb), (name, a["component"])
    ok = _sample("android_xnnpack_ok.json")
    assert BenchReport.from_dict(ok).per_frame_ms(2) == pytest.approx(ok["per_frame_ms"]["2"])
    with pytest.raises(BadInputError, match="is not JSON"):
        aa.load_app_report('{"schema": "mi2v.bench/1", "comp', "x")
    bad = dict(ok, schema="mi2v.bench/2")
    with pytest.raises(BadInputError, match=r"schema 'mi2v.bench/2' is not supported"):
        aa.load_app_report(json.dumps(bad), "x")
    broken = json.loads(json.dumps(ok))
    broken["components"][0]["runs"][0]["samples_ms"][3] = -1.0
    with pytest.raises(BadInputError, match=r"x: malformed bench report: components\[0\]\.runs\[0\]\.samples_ms\[3\]: "
                       "-1.0 is less than the minimum of 0"):
        aa.load_app_report(json.dumps(broken), "x")


@pytest.mark.unit
def test_merge_keeps_host_facts_app_numbers_and_the_simulated_flag(tmp_path):
    app = _sample("android_xnnpack_ok.json")
    props = {"ro.product.manufacturer": "Google", "ro.product.model": "Pixel 8", "ro.soc.model": "Tensor G3",
             "ro.build.version.sdk": "35", "ro.product.cpu.abilist": "arm64-v8a"}
    base = {"schema": "mi2v.bench/1", "device": device_facts(props, "R5CT1234"), "components": [],
            "conditions": {"before": {"thermal_status": 0}}, "protocol": {"cooldown_s": 30}}
    files = _pte_files(tmp_path / "art")
    items, _ = aa.coerce_artifacts(files)
    merged = aa.merge_app_report(app, base, serial="R5CT1234", artifacts=items)
    validate(merged)
    assert merged["status"] == "ok" and merged["device"]["serial"] == "R5CT1234"
    assert merged["device"]["simulated_device"] is False and merged["device"]["model"] == "Pixel 8"
    assert merged["protocol"]["runner"] == "android-app" and merged["protocol"]["mode"] == "app"
    assert merged["protocol"]["cooldown_s"] == 30 and merged["protocol"]["iterations"] == 20
    assert merged["conditions"]["before"] == {"thermal_status": 0}
    assert merged["conditions"]["app"]["after"]["thermal_status"] == 1
    for c in merged["components"]:
        assert c["runtime"]["runner"] == "android-app"
        assert c["artifact"]["path"] == str(files[c["component"]])
        assert c["artifact"]["device_path"].startswith("/data/local/tmp/mi2v/app/")
    assert merged["per_frame_ms"]["2"] == pytest.approx(app["per_frame_ms"]["2"])
    assert merged["tool"]["app"]["name"] == "mi2v-android-app"
    # a simulated phone stays simulated even though the app says false
    sim = dict(base, device=device_facts({**props, "ro.mi2v.simulated": "1"}, "127.0.0.1:5555"))
    merged = aa.merge_app_report(app, sim)
    assert merged["device"]["simulated_device"] is True
    assert any("simulated phone" in w for w in merged["warnings"])
    # components the app measured replace the host's, others stay
    partial = _sample("android_vulkan_partial.json")
    host_only = {"schema": "mi2v.bench/1", "device": base["device"], "components": [
        {"component": "denoiser", "status": "ok", "runtime": {"runner": "executor_runner"},
         "runs": [{"samples_ms": [5.0, 6.0, 7.0]}]}]}
    merged = aa.merge_app_report({**partial, "components": partial["components"][:1]}, host_only)
    assert [(c["component"], c["runtime"]["runner"]) for c in merged["components"]] == [
        ("encoder", "android-app"), ("denoiser", "executor_runner")]
    merged = aa.merge_app_report(partial, None, serial="R5CT1234")
    assert merged["status"] == "partial" and merged["per_frame_ms"]["2"] is None
    assert "VulkanBackend is not registered" in merged["components"][1]["error"]


# ---- --via app end to end: real adb, simulated phone, stand-in framework --------------------------------------


_FAKE_AM = r'''
# stand-in for `am instrument` + the benchmark app: checks the arguments, writes a sample report
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
root = Path(os.environ["MI2V_DEVICE_ROOT"])
Path(root / "am-argv.json").write_text(json.dumps(args))
assert args[:3] == ["instrument", "-w", "-r"] and args[-1] == "org.mi2v.bench.test/androidx.test.runner.AndroidJUnitRunner"
extras = {args[i + 1]: args[i + 2] for i in range(len(args) - 1) if args[i] == "-e"}
report = json.loads(Path(os.environ["MI2V_SAMPLE_REPORT"]).read_text())
paths = dict(item.split("=", 1) for item in extras["artifacts"].split(","))
plan = json.loads(Path(extras["plan"]).read_text())
for c in report["components"]:
    assert Path(paths[c["component"]]).read_bytes()[4:8] == b"ET12"
    c["artifact"]["path"] = paths[c["component"]]
for c in plan["components"]:  # the output-check files the host staged: where the plan says, of the planned size
    for spec in (c["check"] or {}).get("inputs", []) + (c["check"] or {}).get("expected", []):
        size = (root / spec["path"].lstrip("/")).stat().st_size  # the phone's / is MI2V_DEVICE_ROOT
        n = 1
        for d in spec["shape"]:
            n *= d
        assert size == n * {"float32": 4, "int64": 8}[spec["dtype"]], (spec, size)
Path(root / "am-plan.json").write_text(json.dumps(plan))
report["protocol"]["iterations"] = int(extras["iterations"])
report["frames"] = plan["frames"]
out = root / "data/data/org.mi2v.bench/files" / extras["output"]
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(report))
sys.stdout.write(Path(os.environ["MI2V_INSTRUMENT_OUT"]).read_text())
'''


@contextlib.contextmanager
def _app_phone(tmp_path: Path, monkeypatch):
    """The real adb client and server on a private port, a simulated phone connected to it, and stand-ins for
    `pm`, `run-as` and `am instrument` on that phone (the app's builds already installed). Yields
    (adb, phone, app_dir)."""
    from mi2v_export.simulator.phone import SimulatedPhone

    adb = private_adb(tmp_path / "adb-home")
    monkeypatch.setenv("MI2V_SAMPLE_REPORT", str(DATA / "android_xnnpack_ok.json"))
    monkeypatch.setenv("MI2V_INSTRUMENT_OUT", str(DATA / "instrument_ok.txt"))
    try:
        with SimulatedPhone() as phone:
            adb.connect(phone.serial)
            app_dir = _fake_app_dir(tmp_path / "android", apks=True)
            # the phone already has these builds installed (so no `adb install`, which a simulated phone lacks)
            bin_dir = phone.root / "system" / "bin"
            bin_dir.chmod(0o755)
            for pkg, apk in ((aa.PACKAGE, ab.APP_APK), (aa.TEST_PACKAGE, ab.TEST_APK)):
                dst = phone.sandbox / "_apps" / pkg / "base.apk"
                dst.parent.mkdir(parents=True)
                shutil.copy2(app_dir / apk, dst)
            _script(bin_dir, "pm", 'test "$1" = path || exit 1\n'
                    'f="$MI2V_DEVICE_ROOT/data/local/tmp/_apps/$2/base.apk"\n'
                    '[ -f "$f" ] || exit 1\necho "package:/data/local/tmp/_apps/$2/base.apk"\n')
            _script(bin_dir, "run-as", 'pkg=$1; shift\nmkdir -p "$MI2V_DEVICE_ROOT/data/data/$pkg"\n'
                    'cd "$MI2V_DEVICE_ROOT/data/data/$pkg" && exec "$@"\n')
            (bin_dir / "am").write_text(f"#!{sys.executable}\n" + _FAKE_AM)
            (bin_dir / "am").chmod(0o755)
            yield adb, phone, app_dir
            adb.disconnect(phone.serial)
    finally:
        adb.kill_server()


def test_via_app_through_real_adb_and_the_simulated_phone(tmp_path, monkeypatch):
    with _app_phone(tmp_path, monkeypatch) as (adb, phone, app_dir):
        dev = adb.pick_device(phone.serial)
        folder = _write_manifest(tmp_path / "art", vectors=True)
        said: list[str] = []
        report = aa.run_via_app(dev, folder, 7, 2, app_dir=app_dir, keep=True, say=said.append)
        validate(report)
        assert report["device"]["simulated_device"] is True and report["device"]["serial"] == phone.serial
        assert report["protocol"]["iterations"] == 7 and report["frames"] == 9
        assert [c["runtime"]["runner"] for c in report["components"]] == ["android-app"] * 3
        assert report["components"][0]["artifact"]["path"] == str(folder / "encoder.pte")
        assert sorted(report["staging"]["pushed"]) == ["check/decoder.in0.bin", "check/decoder.out0.bin",
                                                       "decoder.pte", "denoiser.pte", "encoder.pte"]
        # the decoder's output check: its first test-vector set as raw files on the phone, the gate in the plan
        plan = json.loads((phone.root / "am-plan.json").read_text())
        check = plan["components"][2]["check"]
        assert [c["check"] for c in plan["components"][:2]] == [None, None]
        assert check["gate"] == {"metric": "rel_l2", "op": "<=", "threshold": 1e-4} and check["sets"] == 1
        with np.load(folder / "testdata/decoder.pte.npz") as npz:
            staged = phone.sandbox / "mi2v/app/check/decoder.out0.bin"
            assert np.array_equal(read_raw(staged, check["expected"][0]), npz["set0.out.y"])
            assert np.array_equal(read_raw(phone.sandbox / "mi2v/app/check/decoder.in0.bin", check["inputs"][0]),
                                  npz["set0.in.x"])
        assert [c["output_check"]["passed"] for c in report["components"]] == [True] * 3
        assert report["staging"]["installed"] == []
        argv = json.loads((phone.root / "am-argv.json").read_text())
        assert argv[argv.index("iterations") + 1] == "7" and argv[argv.index("warmup") + 1] == "2"
        assert not any(m.startswith("installing") for m in said)
        # again: the artifacts are on the phone already, so nothing is pushed; then cleaned up
        again = aa.run_via_app(dev, folder, 7, 2, app_dir=app_dir)
        assert again["staging"]["pushed"] == []
        assert not (phone.sandbox / "mi2v" / "app").exists()
        # the app failing: one line, with the instrumentation's reason
        monkeypatch.setenv("MI2V_INSTRUMENT_OUT", str(DATA / "instrument_not_installed.txt"))
        with pytest.raises(MissingDependencyError) as e:
            aa.run_via_app(dev, folder, 7, 2, app_dir=app_dir)
        assert "make android-install SERIAL=" in _one_line(e.value)


def test_bench_via_app_from_the_cli(tmp_path, monkeypatch):
    """`mi2v bench --device adb:SERIAL --via app`: device facts from adb, the app's numbers, one saved report."""
    folder = _write_manifest(tmp_path / "art")
    with _app_phone(tmp_path, monkeypatch) as (adb, phone, app_dir):
        common = ["bench", "--artifacts", folder, "--device", f"adb:{phone.serial}", "--via", "app",
                  "--adb", adb.path, "--adb-port", adb.server_port, "--app-dir", app_dir]
        out = tmp_path / "app.json"
        proc = run_cli(*common, "--iterations", 6, "--warmup", 1, "--report", out, env=adb.env)
        assert proc.returncode == 0, proc.stderr
        assert "measured by the Android app" in proc.stdout and "per-frame latency, 2 steps:" in proc.stdout
        rep = json.loads(out.read_text())
        validate(rep)
        assert rep["device"]["model"] == "Simulated Phone" and rep["device"]["simulated_device"] is True
        assert rep["device"]["cpus"] and rep["conditions"]["before"]["thermal_status"] == 0
        assert rep["protocol"]["mode"] == "app" and rep["protocol"]["iterations"] == 6
        assert [c["runtime"]["runner"] for c in rep["components"]] == ["android-app"] * 3
        assert rep["artifacts"]["preset"] == "tiny" and rep["headline"]["per_frame_ms"] > 0
        sample = _sample("android_xnnpack_ok.json")
        want = {c["component"]: c["runs"][0]["samples_ms"] for c in sample["components"]}
        assert {c["component"]: c["runs"][0]["samples_ms"] for c in rep["components"]} == want
        argv = json.loads((phone.root / "am-argv.json").read_text())
        assert argv[argv.index("warmup") + 1] == "1"
        # the app's output check failed for the decoder: the run fails (exit 4) naming it, the report says why
        monkeypatch.setenv("MI2V_SAMPLE_REPORT", str(DATA / "android_output_check_failed.json"))
        checked = tmp_path / "checked.json"
        proc = run_cli(*common, "--report", checked, env=adb.env)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        assert proc.returncode == 4 and len(errors) == 1 and "decoder" in errors[0], proc.stderr
        assert "output check failed" in errors[0] and "Traceback" not in proc.stderr
        rep = json.loads(checked.read_text())
        validate(rep)
        decoder = next(c for c in rep["components"] if c["component"] == "decoder")
        assert decoder["status"] == "failed" and decoder["output_check"]["psnr_db"] == 21.3
        monkeypatch.setenv("MI2V_SAMPLE_REPORT", str(DATA / "android_xnnpack_ok.json"))
        # the app failing on the phone: one error line, non-zero exit, and the report still written
        monkeypatch.setenv("MI2V_INSTRUMENT_OUT", str(DATA / "instrument_failed.txt"))
        failed = tmp_path / "failed.json"
        proc = run_cli(*common, "--report", failed, env=adb.env)
        assert proc.returncode != 0
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and "unknown component 'vae'" in errors[0], proc.stderr
        assert json.loads(failed.read_text())["status"] == "failed"
        # the APKs not built: says how to build them
        proc = run_cli(*common, "--app-dir", tmp_path / "not-built", env=adb.env)
        assert proc.returncode == 3 and "run `make android` first" in proc.stderr


def test_bench_via_app_and_ios_dry_runs_and_refusals(tmp_path):
    folder = _write_manifest(tmp_path / "art")
    proc = run_cli("bench", "--artifacts", folder, "--device", "adb:R5CT1234", "--via", "app", "--dry-run",
                 "--iterations", 30, "--component", "encoder,decoder")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("adb -s R5CT1234 shell 'pm path org.mi2v.bench'")
    assert any(ln.startswith("adb -s R5CT1234 shell 'am instrument -w -r -e artifacts "
                             "encoder=/data/local/tmp/mi2v/app/encoder.pte,decoder=/data/local/tmp/mi2v/app/decoder.pte"
                             " -e iterations 30 -e warmup 5 ") for ln in lines), proc.stdout
    assert not any("denoiser" in ln for ln in lines)
    # refusals: one line each, before any device is touched
    cases = [
        (["--device", "host", "--via", "app"], "--via app runs the Android benchmark app"),
        (["--device", "adb", "--via", "app", "--runtime", "onnxruntime"], "ExecuTorch .pte artifacts only"),
        (["--device", "host", "--dry-run"], "--dry-run prints the commands of --via app"),
        (["--device", "adb", "--compute-units", "cpu_only"], "use it with --device ios:UDID"),
        (["--device", "ios"], "needs the iPhone's UDID"),
    ]
    if sys.platform != "darwin":
        cases.append((["--device", "ios:00008130-0011223344556677"], "needs macOS with Xcode 15+"))
        cases.append((["--device", "ios:00008130-0011223344556677", "--dry-run"], "needs macOS with Xcode 15+"))
    for extra, message in cases:
        proc = run_cli("bench", "--artifacts", folder, *extra)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        assert proc.returncode in (2, 3) and len(errors) == 1 and message in errors[0], (extra, proc.stderr)
        assert "Traceback" not in proc.stderr


def _coreml_manifest(folder: Path) -> dict[str, Path]:
    from mi2v_export.files import tree_digest
    from mi2v_export.manifest import MANIFEST_NAME, ArtifactEntry, Manifest, TensorInfo

    pkgs = _mlpackages(folder)
    entries = [ArtifactEntry(component=n, model=f"{n}-model", target="coreml", delegate=None, dtype="fp16",
                             file=p.name, sha256=tree_digest(p)[0], bytes=tree_digest(p)[1],
                             inputs=[TensorInfo("x", (1, 4), "float32")],
                             outputs=[TensorInfo("y", (1, 4), "float32")], export={}, parity={})
               for n, p in pkgs.items()]
    m = Manifest(preset="tiny", resolution=(64, 64), frames=9, latent_shape=(1, 4, 3, 8, 8),
                 source={"weights": "seeded"}, components=entries)
    (folder / MANIFEST_NAME).write_text(json.dumps(m.to_dict(), indent=2))
    return pkgs


def test_bench_ios_entry_dry_run_on_macos(tmp_path):
    """run_bench as macOS would run it (system="Darwin"): the commands for the chosen components only."""
    from mi2v_export.devices.bench import BenchOptions, run_bench

    folder = tmp_path / "art"
    _coreml_manifest(folder)
    lines: list[str] = []
    opts = BenchOptions(artifacts=folder, device="ios:00008130-0011223344556677", dry_run=True, iterations=12,
                        components=("denoiser",), compute_units=("cpuAndNeuralEngine",), json_path=tmp_path / "r.json")
    outcome = run_bench(opts, echo=lines.append, system="Darwin")
    assert outcome.reports == [] and outcome.error is None
    staged = [ln for ln in lines if ln.startswith("cp -R ")]
    assert len(staged) == 1 and "denoiser.mlpackage" in staged[0]
    assert any("xcodebuild test -scheme Mi2vBench -destination platform=iOS,id=00008130-0011223344556677" in ln
               and f"-resultBundlePath {tmp_path}/mi2v-ios-00008130-0011223344556677.xcresult" in ln for ln in lines)
    with pytest.raises(MissingDependencyError, match="needs macOS"):
        run_bench(opts, echo=lines.append, system="Linux")


# ---- iOS ------------------------------------------------------------------------------------------------------------


def test_ios_refuses_at_once_off_macos(tmp_path):
    with pytest.raises(MissingDependencyError) as e:
        ios.run_ios("00008130-0011223344556677", tmp_path / "does-not-exist", system="Linux")
    assert _one_line(e.value) == ("`--device ios:UDID` needs macOS with Xcode 15+ (this machine runs Linux): run the "
                                  "iOS benchmark on a Mac with the iPhone attached")
    with pytest.raises(MissingDependencyError, match="needs macOS"):
        ios.run_ios("UDID", tmp_path, dry_run=True, system="Linux")
    with pytest.raises(MissingDependencyError, match="^`make ios` needs macOS with Xcode 15"):
        ab.check_ios_prereqs(system="Linux")
    if sys.platform != "darwin":
        for extra in (["--check"], [], ["--dry-run"]):
            proc = run_cli("app", "build", "ios", *extra)
            assert proc.returncode == 3
            assert proc.stderr.startswith("error: `mi2v app build ios` needs macOS") and proc.stderr.count("\n") == 1


def _mlpackages(folder: Path) -> dict[str, Path]:
    out = {}
    for name in ("encoder", "denoiser", "decoder"):
        pkg = folder / f"{name}.mlpackage"
        (pkg / "Data" / "com.apple.CoreML").mkdir(parents=True)
        (pkg / "Manifest.json").write_text("{}")
        out[name] = pkg
    return out


def test_ios_dry_run_and_build_commands(tmp_path):
    pkgs = _mlpackages(tmp_path / "art")
    lines: list[str] = []
    ios.run_ios("00008130-0011223344556677", pkgs, 25, 4, dry_run=True, team="ABCDE12345", out_dir=tmp_path,
                system="Darwin", echo=lines.append)
    xcresult = tmp_path / "mi2v-ios-00008130-0011223344556677.xcresult"
    assert lines[0] == "xcodebuild -version"
    assert lines[1].startswith("xcrun devicectl list devices --json-output")
    assert ("cd apps/ios && xcodebuild test -scheme Mi2vBench -destination platform=iOS,id=00008130-0011223344556677 "
            f"-derivedDataPath .build/xcode -resultBundlePath {xcresult} "
            "-only-testing:Mi2vBenchTests/CoreMLBenchTests/testBenchmark -allowProvisioningUpdates "
            "DEVELOPMENT_TEAM=ABCDE12345") in lines
    assert lines[-1].startswith(f"xcrun xcresulttool export attachments --path {xcresult} --output-path ")
    assert ab.ios_build_commands()[0].render() == (
        "cd apps/ios && xcodebuild build-for-testing -scheme Mi2vBench -destination generic/platform=iOS "
        "-derivedDataPath .build/xcode -allowProvisioningUpdates")
    with pytest.raises(BadInputError, match="unknown compute unit 'npu'"):
        ios.run_ios("U", pkgs, dry_run=True, compute_units=["npu"], system="Darwin", echo=lines.append)
    with pytest.raises(BadInputError, match="Core ML models"):
        ios.run_ios("U", {"encoder": tmp_path / "encoder.pte"}, dry_run=True, system="Darwin", echo=lines.append)
    # the scheme and test id the commands name exist in apps/ios
    scheme = (REPO / "apps/ios/.swiftpm/xcode/xcshareddata/xcschemes/Mi2vBench.xcscheme").read_text()
    assert 'BlueprintName = "Mi2vBenchTests"' in scheme
    assert "func testBenchmark()" in (REPO / "apps/ios/Tests/Mi2vBenchTests/CoreMLBenchTests.swift").read_text()
    assert ios.REPORT_MARKER in (REPO / "apps/ios/Tests/Mi2vBenchTests/CoreMLBenchTests.swift").read_text()


@pytest.mark.unit
def test_ios_stage_payload(tmp_path):
    pkgs = _mlpackages(tmp_path / "art")
    payload = tmp_path / "Payload"
    payload.mkdir()
    (payload / "README.md").write_text("keep")
    (payload / "old.mlpackage").mkdir()
    items, _ = ios.coreml_artifacts(pkgs)
    plan = ios.build_plan(items, 10, 2, ["all", "cpuOnly"], frames=17)
    path = ios.stage_payload(items, plan, payload)
    assert sorted(p.name for p in payload.iterdir()) == ["README.md", "decoder.mlpackage", "denoiser.mlpackage",
                                                        "encoder.mlpackage", "plan.json"]
    staged = json.loads(path.read_text())
    assert staged["schema"] == "mi2v.ios-plan/1" and staged["compute_units"] == ["all", "cpuOnly"]
    assert staged["components"][0] == {"component": "encoder", "file": "encoder.mlpackage", "artifact": {
        "file": "encoder.mlpackage", "format": "mlpackage", "target": "coreml"}, "check": None}
    # from a manifest whose encoder has test vectors (.npz): its first set as raw files for the XCTest's check
    folder = tmp_path / "exported"
    _coreml_manifest(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    x, y = np.arange(4, dtype=np.float32).reshape(1, 4), np.full((1, 4), 0.5, np.float16)
    (folder / "testdata").mkdir()
    np.savez(folder / "testdata/encoder.mlpackage.npz", **{"set0.in.x": x, "set0.out.y": y})
    manifest["components"][0]["test_vectors"] = {"format": "npz", "file": "testdata/encoder.mlpackage.npz",
                                                 "sets": 1, "bytes": 24}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    items, _ = ios.coreml_artifacts(folder)
    staged = json.loads(ios.stage_payload(items, ios.build_plan(items, 10, 2), payload).read_text())
    check = staged["components"][0]["check"]
    assert check["gate"] == {"metric": "psnr_db", "op": ">=", "threshold": 40.0}
    assert [c["check"] for c in staged["components"][1:]] == [None, None]
    assert check["expected"][0] == {"name": "y", "path": "check/encoder.out0.bin", "shape": [1, 4], "dtype": "float32"}
    assert np.array_equal(read_raw(payload / check["inputs"][0]["path"], check["inputs"][0]), x)
    assert read_raw(payload / check["expected"][0]["path"], check["expected"][0]).tolist() == [[0.5] * 4]


@pytest.mark.unit
def test_ios_devices_output_and_report_parsing(tmp_path):
    devices = ios.parse_devicectl_devices(_sample("devicectl_devices.json"))
    phone = ios.find_device("00008130-0011223344556677", devices)
    assert phone["model"] == "iPhone16,1" and phone["os_version"] == "18.3.1" and phone["paired"]
    with pytest.raises(DeviceError, match="is not paired"):
        ios.find_device("00008103-000A0B0C0D0E0F10", devices)
    with pytest.raises(DeviceError, match="does not see an iPhone with UDID X"):
        ios.find_device("X", devices)

    app = _sample("ios_coreml.json")
    log = ("Test Suite 'Selected tests' started\n"
           "Test Case '-[Mi2vBenchTests.CoreMLBenchTests testBenchmark]' started.\n"
           "MI2V_REPORT_JSON: " + json.dumps(app, separators=(",", ":")) + "\n"
           "Test Case '-[Mi2vBenchTests.CoreMLBenchTests testBenchmark]' passed (84.210 seconds).\n** TEST SUCCEEDED **\n")
    parsed = ios.parse_xcodebuild_output(log)
    assert parsed == app and ios.parse_xcodebuild_output("** TEST SUCCEEDED **") is None
    reports = ios.merge_ios_report(parsed, "00008130-0011223344556677", {"name": "Test iPhone", "model": "iPhone16,1"})
    assert list(reports) == ["cpuOnly", "cpuAndGPU", "cpuAndNeuralEngine", "all"]
    for unit, r in reports.items():
        validate(r)
        assert r["protocol"]["compute_unit"] == unit and r["device"]["udid"] == "00008130-0011223344556677"
        assert r["device"]["transport"] == "ios" and r["device"]["simulated_device"] is False
        assert {c["runtime"]["backend"] for c in r["components"]} == {unit}
        assert all(c["runtime"]["compile_ms"] > 0 for c in r["components"])
    assert reports["cpuAndGPU"]["status"] == "partial" and reports["cpuAndGPU"]["per_frame_ms"]["2"] is None
    ane = reports["cpuAndNeuralEngine"]
    assert ane["status"] == "ok" and ane["per_frame_ms"]["2"] > 0
    assert ane["per_frame_ms"]["2"] < reports["cpuOnly"]["per_frame_ms"]["2"]
    assert ane["components"][0]["runtime"]["cold_load_ms"] > ane["components"][0]["runtime"]["warm_load_ms"]

    # fallback: the attachment exported from the .xcresult
    folder = tmp_path / "attachments"
    folder.mkdir()
    (folder / "manifest.json").write_text('[{"attachments": []}]')
    (folder / "mi2v-report_1_0A1B2C.json").write_text(json.dumps(app))
    assert ios.report_from_attachments(folder)["device"]["model"] == "iPhone16,1"
    assert ios.report_from_attachments(tmp_path / "none") is None

    err = ios._xcodebuild_failure((DATA / "xcodebuild_signing_failed.log").read_text(), "U", None)
    assert isinstance(err, MissingDependencyError) and "--team TEAMID" in _one_line(err)


def test_ios_run_with_fake_xcode_tools(tmp_path, monkeypatch):
    """The macOS path end to end with stand-ins for xcode-select, xcodebuild and xcrun (argv and parsing only)."""
    fake = tmp_path / "bin"
    app = _sample("ios_coreml.json")
    (tmp_path / "report.line").write_text("MI2V_REPORT_JSON: " + json.dumps(app, separators=(",", ":")) + "\n")
    _script(fake, "xcode-select", 'echo /Applications/Xcode.app/Contents/Developer\n')
    _script(fake, "xcodebuild", f'echo "$@" >> {tmp_path}/xcodebuild.argv\n'
            'if [ "$1" = -version ]; then echo "Xcode 16.2"; echo "Build version 16C5032a"; exit 0; fi\n'
            f'ls Tests/Mi2vBenchTests/Payload > {tmp_path}/payload.ls\n'
            f'echo "Testing started"; cat {tmp_path}/report.line; echo "** TEST SUCCEEDED **"\n')
    _script(fake, "xcrun", 'if [ "$1" = --find ]; then echo /usr/bin/devicectl; exit 0; fi\n'
            'if [ "$1" = devicectl ]; then out=""; while [ $# -gt 0 ]; do '
            '[ "$1" = --json-output ] && out=$2; shift; done; '
            f'cp {DATA}/devicectl_devices.json "$out"; exit 0; fi\nexit 1\n')
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    app_dir = tmp_path / "ios"
    (app_dir / "Tests" / "Mi2vBenchTests" / "Payload").mkdir(parents=True)
    pkgs = _mlpackages(tmp_path / "art")
    reports = ios.run_ios("00008130-0011223344556677", pkgs, 20, 3, system="Darwin", app_dir=app_dir,
                          out_dir=tmp_path)
    assert set(reports) == {"cpuOnly", "cpuAndGPU", "cpuAndNeuralEngine", "all"}
    assert reports["all"]["device"]["name"] == "Test iPhone"
    assert reports["all"]["components"][0]["artifact"]["path"] == str(pkgs["encoder"])
    argv = (tmp_path / "xcodebuild.argv").read_text().splitlines()
    assert argv[0] == "-version"
    assert argv[1].startswith("test -scheme Mi2vBench -destination platform=iOS,id=00008130-0011223344556677")
    assert (tmp_path / "payload.ls").read_text().split() == ["decoder.mlpackage", "denoiser.mlpackage",
                                                             "encoder.mlpackage", "plan.json"]
    with pytest.raises(DeviceError, match="does not see an iPhone with UDID NOPE"):
        ios.run_ios("NOPE", pkgs, system="Darwin", app_dir=app_dir, out_dir=tmp_path)

    # the same through the one bench loop: one XCTest run, one report per compute unit beside --json
    from mi2v_export.devices.bench import BenchOptions, run_bench

    folder = tmp_path / "manifest-art"
    _coreml_manifest(folder)
    (tmp_path / "xcodebuild.argv").unlink()
    outcome = run_bench(BenchOptions(artifacts=folder, device="ios:00008130-0011223344556677", app_dir=app_dir,
                                     json_path=tmp_path / "iphone.json"), system="Darwin")
    paths = {p.name: r for r, p in outcome.reports}
    assert sorted(paths) == ["iphone-all.json", "iphone-cpuAndGPU.json", "iphone-cpuAndNeuralEngine.json",
                             "iphone-cpuOnly.json"]
    assert [ln.split()[0] for ln in (tmp_path / "xcodebuild.argv").read_text().splitlines()].count("test") == 1
    gpu = json.loads((tmp_path / "iphone-cpuAndGPU.json").read_text())
    assert gpu["status"] == "partial" and gpu["protocol"]["compute_unit"] == "cpuAndGPU"
    # the XCTest's output checks: kept per compute unit; the failed one (encoder on `all`) fails that component
    every = json.loads((tmp_path / "iphone-all.json").read_text())
    encoder = next(c for c in every["components"] if c["component"] == "encoder")
    assert every["status"] == "partial" and encoder["status"] == "failed" and encoder["output_check"]["passed"] is False
    assert "output check failed on coreml-xctest/all" in encoder["error"] and "27.9" in encoder["error"]
    assert [c["output_check"]["passed"] for c in gpu["components"] if c["status"] == "ok"] == [True, True]
    assert [c["status"] for c in gpu["components"]] == ["ok", "ok", "failed"]
    assert isinstance(outcome.error, DeviceError) and outcome.error.args[0].startswith("decoder: ")
    ane = paths["iphone-cpuAndNeuralEngine.json"]
    assert ane.status == "ok" and ane.device["name"] == "Test iPhone" and ane.device["transport"] == "ios"
    assert {c.runtime["runner"] for c in ane.components} == {"ios-xctest"} and ane.per_frame_ms(2) > 0
    _script(fake, "xcode-select", 'echo /Library/Developer/CommandLineTools\n')
    with pytest.raises(MissingDependencyError, match="only the Command Line Tools are selected"):
        ios.check_xcode(system="Darwin")


# ---- the Kotlin core on a real compiler (slow; needs kotlinc) ------------------------------------------------------


@pytest.mark.slow
def test_kotlin_core_writes_a_report_python_reads(tmp_path):
    """Compile the app's Android-free Kotlin (BenchCore.kt, its JUnit tests, SampleReport.kt) with kotlinc, run the
    JUnit tests, and check the report the Kotlin code writes against the Python schema and statistics."""
    kotlinc = shutil.which("kotlinc")
    if kotlinc is None or shutil.which("java") is None:
        pytest.skip("kotlinc/java not installed (Debian: apt-get install kotlin junit4)")
    src = ANDROID / "app" / "src"
    out = tmp_path / "classes"
    junit = [p for p in ("/usr/share/java/junit4.jar", "/usr/share/java/hamcrest-core.jar") if Path(p).is_file()]
    sources = [src / "main/kotlin/org/mi2v/bench/BenchCore.kt", src / "test/kotlin/org/mi2v/bench/SampleReport.kt"]
    if len(junit) == 2:
        sources.append(src / "test/kotlin/org/mi2v/bench/BenchCoreTest.kt")
    proc = subprocess.run([kotlinc, *map(str, sources), "-cp", os.pathsep.join(junit), "-d", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    stdlib = next((str(p) for p in (Path(kotlinc).resolve().parents[1] / "lib" / "kotlin-stdlib.jar",
                                    Path("/usr/share/java/kotlin-stdlib.jar")) if p.is_file()), None)
    assert stdlib, "kotlin-stdlib.jar not found next to kotlinc"
    cp = os.pathsep.join([str(out), stdlib, *junit])
    if len(junit) == 2:
        proc = subprocess.run(["java", "-cp", cp, "org.junit.runner.JUnitCore", "org.mi2v.bench.BenchCoreTest"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "OK (7 tests)" in proc.stdout, proc.stdout + proc.stderr
    # the output check: files staged by the host code, a perturbed "output", metrics as parity.py computes them
    from types import SimpleNamespace

    from mi2v_export import parity
    from mi2v_export.apps.check_files import write_check
    from mi2v_export.testvectors import VectorSet

    rng = np.random.default_rng(11)
    want = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    got = want + np.float32(0.02) * rng.standard_normal(want.shape).astype(np.float32)
    sets = [VectorSet({"latent": np.ones((1, 4), np.float32)}, {"video": want.astype(np.float16)})]
    check = write_check("decoder", SimpleNamespace(parity={}, dtype="fp16"), sets, tmp_path / "check",
                        str(tmp_path / "check"))
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"schema": "mi2v.app-plan/1", "components": [
        {"component": "decoder", "path": "/d/decoder.pte", "check": check}]}))
    (tmp_path / "got.bin").write_bytes(got.astype("<f4").tobytes())
    report_path = tmp_path / "kotlin-report.json"
    proc = subprocess.run(["java", "-cp", cp, "org.mi2v.bench.SampleReportKt", str(report_path), str(plan),
                           str(tmp_path / "got.bin")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = aa.load_app_report(report_path.read_text(), "kotlin report")
    metrics = parity.compare([got], [want.astype(np.float16)])
    kotlin = data["components"][2]["output_check"]
    assert kotlin["psnr_db"] == pytest.approx(metrics.psnr_db, rel=1e-9)
    assert kotlin["rel_l2"] == pytest.approx(metrics.rel_l2, rel=1e-9)
    assert kotlin["passed"] is parity.FP16_GATE.passes(metrics) and kotlin["gate"] == "psnr_db >= 40"
    assert "output_check" not in data["components"][0]
    again = BenchReport.from_dict(data).to_dict()
    for a, b in zip(data["components"], again["components"]):
        la, lb = a["summary"]["latency_ms"], b["summary"]["latency_ms"]
        assert la.pop("run_medians") == lb.pop("run_medians")
        assert la == pytest.approx(lb, rel=1e-12)
        assert a["summary"]["load_ms"] == b["summary"]["load_ms"]
    assert data["per_frame_ms"] == pytest.approx(again["per_frame_ms"])
    assert data["warnings"] == ['quote " and \\ survive']
    assert aa.merge_app_report(data, None, serial="S")["status"] == "ok"
