"""`mi2v bench --pipeline --via app`: the whole image-to-video run timed inside the Android app, as far as this
machine can run it (no Android SDK, ExecuTorch AAR or phone here).

Real here: the host's staging for the app (apps/android_pipeline.py: the plan with tiling records and phone paths,
the image tensor and noise draw, the exact commands of a dry run through the `mi2v` CLI, the one-line refusal of a
folder missing a component), and, in the slow tests, the app's Android-free Kotlin compiled with a real kotlinc and
run on the JVM (apps/android/app/src/test/kotlin/org/mi2v/bench/PipelineReportOracle.kt):

* PipelineReport.kt against the host's own arithmetic: the same clip measurements (the host's numbers in ms, as
  `PipelineRun.add` turns a run's seconds into them) go through `PipelineRun.add` / `block`
  (mi2v_export/devices/pipeline_bench.py) and through the Kotlin, whose `pipeline` block must be the host's exactly
  and whose report the schema must accept; a copy with one step one ulp longer must give another block.
* PipelineClips.kt: the host-written plan parsed as the app parses it, then the clip loop run with a JVM stand-in
  for the ExecuTorch programs (plain arithmetic; a two-stage tiled decoder through TileLoop): its report is checked
  against the schema, its summary against the host's arithmetic on its clips, its video file against the sha256 it
  reports; a failure in the second clip keeps the first and marks the run partial.

Not run here: EtPipeline.kt and the instrumentation test's pipeline branch (ExecuTorch AAR and Android classes),
and the phone side of the commands (apps/README.md says what was checked by hand).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mi2v_export.apps import android_app as aa
from mi2v_export.apps import android_pipeline as ap
from mi2v_export.calibration import VALIDATION_IMAGE
from mi2v_export.devices.pipeline_bench import PipelineOptions, PipelineRun, _worst_psnr, summary_differences
from mi2v_export.devices.report import BenchReport
from mi2v_export.files import file_digest
from mi2v_export.manifest import MANIFEST_NAME, ArtifactEntry, FileInfo, Manifest, TensorInfo, read_manifest
from mi2v_export.pipeline import GenerateConfig, load_image
from mi2v_export.tiling import plan_stage

from tests.conftest import run_cli
from tests.e2e.test_apps import _app_phone
from tests.e2e.kotlin_jvm import MAIN, TEST, compile_kotlin, require_kotlin, run_java

KOTLIN = [MAIN / "BenchCore.kt", MAIN / "TileLoop.kt", MAIN / "StreamLoop.kt",
          MAIN / "ChunkLoop.kt", MAIN / "PipelineLoop.kt",
          MAIN / "PipelineReport.kt", MAIN / "PipelineClips.kt", TEST / "PipelineReportOracle.kt"]
DRIVER = "org.mi2v.bench.PipelineReportOracleKt"
D = aa.DEVICE_DIR
H, W, F = 64, 64, 9  # latent (1, 128, 2, 2, 2)


def _decoder_tiling() -> dict:
    """Two stages: latent 2x2 → video 64x64 in 2x2 windows (scale 32), then a 64x64 identity in one window."""
    plans = [plan_stage((2, 2), (H, W), (H, W), (32, 32), 1), plan_stage((H, W), (H, W), (H, W), (H, W), 1)]
    windows = [([1, 128, 2, 2, 2], [1, 3, F, H, W]), ([1, 3, F, H, W], [1, 3, F, H, W])]
    return {"format": 1, "residency": "stage", "tile": [32, 32], "exact": True, "stages": [
        {"file": f"decoder.s{k}.pte", "input_window": i, "output_window": o, "plan": p.record()}
        for k, (p, (i, o)) in enumerate(zip(plans, windows))]}


def _manifest(folder: Path, components: tuple[str, ...] = ("encoder", "denoiser", "decoder")) -> Path:
    """Fake `.pte` files and their manifest (tiny preset, seeded weights), the decoder tiled in two stages."""
    folder.mkdir(parents=True)
    io = {"encoder": ([("image", (1, 3, 1, H, W))], [("latent", (1, 128, 1, 2, 2))]),
          "denoiser": ([("latent", (1, 128, 2, 2, 2)), ("timestep", (1,)), ("flow_score", (1,))],
                       [("velocity", (1, 128, 2, 2, 2))]),
          "decoder": ([("latent", (1, 128, 2, 2, 2))], [("video", (1, 3, F, H, W))])}
    entries = []
    for i, name in enumerate(components):
        files = [f"{name}.s0.pte", f"{name}.s1.pte"] if name == "decoder" else [f"{name}.pte"]
        infos = []
        for k, f in enumerate(files):
            (folder / f).write_bytes(b"\0\0\0\0ET12" + bytes([i, k]) * 32)
            infos.append(FileInfo("tile_stage_1" if k else "program", f, *file_digest(folder / f)))
        ins, outs = io[name]
        entries.append(ArtifactEntry(
            component=name, model=f"{name}-model", target="executorch", delegate="xnnpack", dtype="fp32",
            file=files[0], sha256=infos[0].sha256, bytes=infos[0].bytes, extra_files=infos[1:],
            inputs=[TensorInfo(n, s, "float32") for n, s in ins], outputs=[TensorInfo(n, s, "float32") for n, s in outs],
            export={}, parity={}, tiling=_decoder_tiling() if name == "decoder" else None))
    m = Manifest(preset="tiny", resolution=(H, W), frames=F, latent_shape=(1, 128, 2, 2, 2),
                 source={"weights": "seeded", "seed": 0}, components=entries)
    (folder / MANIFEST_NAME).write_text(json.dumps(m.to_dict(), indent=2))
    return folder


def _items(folder: Path) -> list[aa.AppArtifact]:
    manifest = read_manifest(folder)
    return [aa.app_artifact(manifest, folder, e) for e in manifest.components]


def _config(steps: int = 2) -> GenerateConfig:
    return GenerateConfig(H, W, F, steps=steps, seed=0, posterior="mean")


# ---- the host's side: plan, inputs, dry run, refusal ---------------------------------------------------------------


@pytest.mark.unit
def test_plan_and_inputs_for_the_app(tmp_path):
    items = _items(_manifest(tmp_path / "art"))
    plan = ap.pipeline_plan(items, _config(), "validation.jpg")
    assert plan["schema"] == "mi2v.app-plan/1" and plan["frames"] == F
    assert plan["pipeline"] == {"height": H, "width": W, "frames": F, "steps": 2, "flow_score": 2.0,
                                "posterior": "mean", "seed": 0, "image": "validation.jpg"}
    enc, den, dec = plan["components"]
    assert [t["name"] for t in den["inputs"]] == ["latent", "timestep", "flow_score"]
    assert [t["name"] for t in den["outputs"]] == ["velocity"] and den.get("tiling") is None
    assert dec["path"] == f"{D}/decoder.s0.pte"
    assert [s["file"] for s in dec["tiling"]["stages"]] == [f"{D}/decoder.s0.pte", f"{D}/decoder.s1.pte"]
    assert dec["tiling"]["stages"][0]["plan"] == _decoder_tiling()["stages"][0]["plan"]
    assert ap.program_files(items[2]) == ["decoder.s0.pte", "decoder.s1.pte"]
    assert ap.program_files(items[0]) == ["encoder.pte"] and enc["tiling"] is None
    # the host's own draw: what Pipeline.generate makes of the photo and seed 0
    x, noise = ap.pipeline_inputs(load_image(VALIDATION_IMAGE), _config())
    assert x.shape == (1, 3, 1, H, W) and noise.shape == (1, 128, 2, 2, 2) and x.dtype == noise.dtype == "<f4"
    want = torch.randn((1, 128, 2, 2, 2), generator=torch.Generator("cpu").manual_seed(0), dtype=torch.float32)
    assert np.array_equal(noise, want.numpy()) and -1.0 <= x.min() and x.max() <= 1.0
    args = ap.pipeline_args(4, 30.0)
    assert args[args.index("clips") - 1:args.index("clips") + 4] == ["-e", "clips", "4", "-e", "duration"]
    assert args[args.index("duration") + 1] == "30.0" and "duration" not in ap.pipeline_args(4, None)


def test_pipeline_via_app_dry_run_from_the_cli(tmp_path):
    folder = _manifest(tmp_path / "art")
    proc = run_cli("bench", "--artifacts", folder, "--device", "adb:R5CT1234", "--via", "app", "--pipeline",
                   "--clips", 4, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    adb = "adb -s R5CT1234"
    assert lines[0] == f"{adb} shell 'pm path org.mi2v.bench'    # is the app installed? (then sha256sum of its base.apk)"
    pushes = [ln.split("    #")[0] for ln in lines if f"{adb} push " in ln]
    assert pushes == [f"{adb} push {folder / f} {D}/{f}" for f in ("encoder.pte", "denoiser.pte", "decoder.s0.pte",
                                                                   "decoder.s1.pte")] + [
        f"{adb} push '<temporary>/pipeline/image.f32' {D}/pipeline/image.f32",
        f"{adb} push '<temporary>/pipeline/noise.f32' {D}/pipeline/noise.f32",
        f"{adb} push '<temporary>/plan.json' {D}/plan.json"]
    instrument = (f"{adb} shell 'am instrument -w -r -e pipeline true -e plan {D}/plan.json -e image "
                  f"{D}/pipeline/image.f32 -e noise {D}/pipeline/noise.f32 -e clips 4 -e video mi2v-app-video -e output "
                  "mi2v-app-report.json -e class org.mi2v.bench.Mi2vBenchmarkTest "
                  "org.mi2v.bench.test/androidx.test.runner.AndroidJUnitRunner'")
    assert instrument in lines
    i = lines.index(instrument)
    assert lines[i + 1].startswith(f"{adb} shell 'run-as org.mi2v.bench cat files/mi2v-app-report.json'")
    assert "run-as org.mi2v.bench cat files/mi2v-app-video-SHA16.u8" in lines[i + 2]
    assert f"> {D}/mi2v-app-video-SHA16.u8" in lines[i + 2]
    assert lines[i + 3].startswith(f"{adb} pull {D}/mi2v-app-video-SHA16.u8 ")
    assert lines[-1] == f"{adb} shell 'rm -rf {D}'"


def test_component_timing_via_app_refuses_a_tiled_component(tmp_path):
    """The app's component timing runs one program per component: a tiled decoder (two stage programs) is refused in
    one line naming the two paths that do run it, instead of timing its first stage as the whole decoder."""
    folder = _manifest(tmp_path / "art", components=("decoder",))
    proc = run_cli("bench", "--artifacts", folder, "--device", "adb:R5CT1234", "--via", "app", "--dry-run")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "decoder is tiled (2 stage programs)" in errors[0] and "--pipeline --via app" in errors[0]
    assert "push" not in proc.stdout


def test_pipeline_via_app_refuses_a_missing_component(tmp_path):
    folder = _manifest(tmp_path / "art", components=("encoder", "denoiser"))
    host = _manifest(tmp_path / "host", components=("encoder", "denoiser"))
    for extra in (["--device", "adb:R5CT1234", "--via", "app", "--dry-run"], ["--device", "adb:R5CT1234", "--via", "app"],
                  ["--device", "host"]):
        proc = run_cli("bench", "--artifacts", host if extra[1] == "host" else folder, "--pipeline", *extra)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        assert proc.returncode == 2 and len(errors) == 1, (extra, proc.stderr)
        assert errors[0].startswith("error: --pipeline runs the whole video: ") and "no artifact for decoder" in errors[0]
        assert "export every component (`mi2v export --component all`)" in errors[0] and "Traceback" not in proc.stderr
        assert proc.stdout == ""


@pytest.mark.unit
def test_video_psnr_of_uint8_frames():
    """The app's frames against the reference's, both uint8 mapped to [0, 1]: equal → inf, one level off → finite."""
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (F, 8, 8, 3), dtype=np.uint8)
    reference = SimpleNamespace(frames=frames.copy())
    assert _worst_psnr(frames, reference, 30.0) == float("inf")
    off = frames.copy()
    off[4, 2, 3, 1] ^= 1
    assert 40.0 < _worst_psnr(off, reference, 30.0) < float("inf")


# ---- the app's Kotlin on the JVM (slow; needs kotlinc and java) ----------------------------------------------------


@pytest.fixture(scope="module")
def kotlin(tmp_path_factory) -> str:
    kotlinc = require_kotlin()
    return compile_kotlin(kotlinc, KOTLIN, tmp_path_factory.mktemp("pipeline-report-classes"))


def _clip_case(rng, folder: Path, n: int, thermal: list[int], drift: float) -> tuple[list, list]:
    """`n` clips as the host measures them (seconds, bytes) and the same clips as the app's ms (the case file)."""
    host, app = [], []
    started = 0.0
    for i in range(n):
        s = {k: float(rng.uniform(0.001, 0.2)) for k in ("preprocess", "load_encoder", "load_denoiser",
                                                         "load_decoder", "encode", "decode", "postprocess")}
        steps = [float(rng.uniform(0.05, 0.3)) for _ in range(2)]
        s["denoise"] = sum(steps)
        s["load"] = s["load_encoder"] + s["load_denoiser"] + s["load_decoder"]
        total = (sum(s.values()) - s["load"] + float(rng.uniform(0.0, 0.01))) * 1000 * (drift if i == n - 1 else 1)
        frames = rng.integers(0, 256 if i != 1 else 1, (F, 4, 4, 3), dtype=np.uint8)
        (folder / f"clip{i}.u8").write_bytes(frames.tobytes())
        peak = None if i == 2 else int(rng.integers(10**8, 10**9))
        memory = {"peak_rss_bytes": peak, "baseline_rss_bytes": 5 * 10**7, "method": "vmhwm-reset"}
        cond = {"before": {"thermal_status": thermal[max(i - 1, 0)]}, "after": {"thermal_status": thermal[i]}}
        host.append((SimpleNamespace(timings=s, step_times=steps, frames=frames, memory=memory), total, started, cond))
        t = {k: v * 1000 for k, v in s.items()}
        app.append({"timings_ms": t, "step_ms": [x * 1000 for x in steps], "preprocess_ms": t["preprocess"],
                    "total_ms": total, "started_s": started, "peak_rss_kb": None if peak is None else peak // 1024,
                    "baseline_rss_kb": 5 * 10**7 // 1024, "memory_method": "vmhwm-reset",
                    "frames_file": f"clip{i}.u8", **cond})
        started += total / 1000 + 0.0123456
    return host, app


@pytest.mark.slow
@pytest.mark.parametrize("n, requested, duration, stopped, drift", [
    (3, 3, None, None, 1.0), (1, 3, None, "IllegalStateException: out of memory", 1.0), (5, 2, 2.5, None, 1.3)])
def test_kotlin_pipeline_block_is_the_hosts(kotlin, tmp_path, n, requested, duration, stopped, drift):
    rng = np.random.default_rng(n)
    host, app = _clip_case(rng, tmp_path, n, [0, 0, 1, 1, 2][:n], drift)
    run = PipelineRun(steps=2, frames=F, prepare_ms=12.5, elapsed_s=3.25, stopped=stopped)
    for result, total, started, cond in host:
        run.add(result, total, started, cond["before"], cond["after"], {})
    popts = PipelineOptions(clips=requested, duration_s=duration, image=Path("photo.jpg"))
    want = json.loads(json.dumps(run.block(popts)))
    facts = {"steps": 2, "frames": F, "seed": 0, "image": "photo.jpg", "clips_requested": requested,
             "duration_s": duration, "elapsed_s": 3.25, "prepare_ms": 12.5, "stopped": stopped}
    for name, clips in (("case", app), ("off", _one_ulp_longer(app))):
        (tmp_path / f"{name}.json").write_text(json.dumps({"facts": facts, "clips": clips}))
        proc = run_java(kotlin, DRIVER, ["report", tmp_path / f"{name}.json", tmp_path / f"{name}-report.json"])
        assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (tmp_path / "case-report.json").read_text()
    data = aa.load_app_report(text, "the Kotlin report")  # the schema, pipeline block included
    assert data["pipeline"] == want
    assert summary_differences(data["pipeline"], want) == []
    assert data["status"] == ("partial" if stopped or n < requested else "ok") and data["error"] == stopped
    assert data["components"] == [] and BenchReport.from_dict(data).pipeline == want
    off = json.loads((tmp_path / "off-report.json").read_text())["pipeline"]
    assert off != want and off["clips"][0]["step_ms"][1] != want["clips"][0]["step_ms"][1]


def _one_ulp_longer(clips: list) -> list:
    out = json.loads(json.dumps(clips))
    out[0]["step_ms"][1] = float(np.nextafter(out[0]["step_ms"][1], np.inf))
    return out


def _plan_files(tmp_path: Path) -> tuple[Path, Path, Path, dict]:
    items = _items(_manifest(tmp_path / "art"))
    plan = ap.pipeline_plan(items, _config(), "validation.jpg")
    (tmp_path / "plan.json").write_text(json.dumps(plan, indent=2))
    x, noise = ap.pipeline_inputs(load_image(VALIDATION_IMAGE), _config())
    (tmp_path / "image.f32").write_bytes(x.tobytes())
    (tmp_path / "noise.f32").write_bytes(noise.tobytes())
    return tmp_path / "plan.json", tmp_path / "image.f32", tmp_path / "noise.f32", plan


@pytest.mark.slow
def test_kotlin_clip_loop_on_the_hosts_plan(kotlin, tmp_path):
    plan_path, image, noise, plan = _plan_files(tmp_path)
    videos = tmp_path / "videos"
    videos.mkdir()
    args = ["clips", plan_path, image, noise, videos / ap.VIDEO_PREFIX, 3, -1, tmp_path / "r.json", tmp_path / "p.json"]
    proc = run_java(kotlin, DRIVER, args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    parsed = json.loads((tmp_path / "p.json").read_text())
    assert {k: parsed[k] for k in plan["pipeline"]} == plan["pipeline"]
    for comp in plan["components"]:
        got = parsed["components"][comp["component"]]
        assert got["path"] == comp["path"] and got["method"] == "forward"
        assert got["inputs"] == [t["name"] for t in comp["inputs"]] and got["outputs"] == [t["name"] for t in comp["outputs"]]
        assert got["stages"] == ([s["file"] for s in comp["tiling"]["stages"]] if comp.get("tiling") else None)
    data = aa.load_app_report((tmp_path / "r.json").read_text(), "the Kotlin report")
    block = data["pipeline"]
    assert data["status"] == "ok" and len(block["clips"]) == 3 and not block["partial"]
    assert [c["cold"] for c in block["clips"]] == [True, False, False]
    assert all(len(c["step_ms"]) == 2 and c["total_ms"] >= c["first_frame_ms"] > 0 for c in block["clips"])
    assert block["clips"][0]["peak_rss_kb"] > 0 and block["clips"][0]["memory_method"] in ("vmhwm-reset", "vmhwm-process")
    assert block["sustained"]["signs"] == ["thermal status rose to 2"] and block["warm"]["clips"] == 2
    # the video: one distinct (the stand-in is deterministic), written once under its sha256
    (sha,) = {c["video_sha256"] for c in block["clips"]}
    frames = (videos / ap.video_name(sha)).read_bytes()
    assert hashlib.sha256(frames).hexdigest() == sha and len(frames) == F * H * W * 3
    assert sorted(p.name for p in videos.iterdir()) == [ap.video_name(sha)]
    # the host's arithmetic on the app's clips gives the app's summary (what `mi2v bench` checks and reports)
    host = PipelineRun(steps=2, frames=F, clips=block["clips"], prepare_ms=block["cold"]["prepare_ms"],
                       elapsed_s=block["elapsed_s"], stopped=None)
    want = json.loads(json.dumps(host.block(PipelineOptions(clips=3, image=Path("validation.jpg")))))
    assert block == want and summary_differences(block, want) == []
    # a failure in the second clip: the first is kept, the run is partial, the reason is the error's line
    args[6:8] = [1, tmp_path / "failed.json"]
    proc = run_java(kotlin, DRIVER, args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    failed = aa.load_app_report((tmp_path / "failed.json").read_text(), "the Kotlin report")
    assert failed["status"] == "partial" and len(failed["pipeline"]["clips"]) == 1 and failed["pipeline"]["partial"]
    assert failed["pipeline"]["stopped"] == failed["error"] == "IllegalStateException: stand-in failure in clip 2"


_PIPELINE_AM = r'''
# stand-in for `am instrument -e pipeline true` and the app: the app's own Android-free Kotlin (PipelinePlan.parse,
# PipelineClips.run, PipelineReport) on the JVM, with PipelineReportOracle.kt's stand-in for the ExecuTorch programs,
# on the files the host staged on the simulated phone; the report and video land in the app's files folder
import json, os, subprocess, sys
from pathlib import Path
args = sys.argv[1:]
root = Path(os.environ["MI2V_DEVICE_ROOT"])
(root / "am-argv.json").write_text(json.dumps(args))
extras = {args[i + 1]: args[i + 2] for i in range(len(args) - 1) if args[i] == "-e"}
assert extras["pipeline"] == "true" and args[-1] == "org.mi2v.bench.test/androidx.test.runner.AndroidJUnitRunner"
files = root / "data/data/org.mi2v.bench/files"
files.mkdir(parents=True, exist_ok=True)
proc = subprocess.run(["java", "-cp", os.environ["MI2V_KOTLIN_CP"], "org.mi2v.bench.PipelineReportOracleKt", "clips",
                       extras["plan"], extras["image"], extras["noise"], str(files / extras["video"]), extras["clips"],
                       "-1", str(files / extras["output"]), str(root / "am-parsed.json")], capture_output=True, text=True)
if proc.returncode != 0:
    sys.stdout.write("INSTRUMENTATION_RESULT: shortMsg=" + " ".join(proc.stderr.split()) + "\nINSTRUMENTATION_CODE: 0\n")
else:
    sys.stdout.write(Path(os.environ["MI2V_INSTRUMENT_OUT"]).read_text())
'''


@pytest.mark.slow
def test_pipeline_via_app_on_the_simulated_phone(kotlin, tmp_path, monkeypatch):
    """`mi2v bench --pipeline --via app` through the real adb client and server against the simulated phone: the
    host installs nothing (the builds are there), stages the programs and inputs, runs the stand-in `am` (which runs
    the app's Kotlin loop on the JVM), reads the report and pulls the video, compares it with PyTorch fp32 (the
    stand-in's video is not the model's: below the gate, exit 4) and saves the merged report."""
    folder = _manifest(tmp_path / "art")
    monkeypatch.setenv("MI2V_KOTLIN_CP", kotlin)
    with _app_phone(tmp_path, monkeypatch) as (adb, phone, app_dir):
        (phone.root / "system/bin/am").write_text(f"#!{sys.executable}\n" + _PIPELINE_AM)
        out = tmp_path / "pipeline.json"
        proc = run_cli("bench", "--artifacts", folder, "--device", f"adb:{phone.serial}", "--via", "app", "--pipeline",
                       "--clips", 2, "--adb", adb.path, "--adb-port", adb.server_port, "--app-dir", app_dir,
                       "--report", out, env=adb.env)
        argv = json.loads((phone.root / "am-argv.json").read_text())
        parsed = json.loads((phone.root / "am-parsed.json").read_text())
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode == 4 and len(errors) == 1 and "below the artifacts'" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert argv[argv.index("clips") + 1] == "2" and parsed["components"]["decoder"]["stages"] == [
        f"{D}/decoder.s0.pte", f"{D}/decoder.s1.pte"]
    rep = json.loads(out.read_text())
    aa.load_app_report(json.dumps(rep), "the merged report")
    block = rep["pipeline"]
    assert len(block["clips"]) == 2 and not block["partial"] and rep["protocol"]["mode"] == "pipeline"
    assert rep["device"]["simulated_device"] is True and rep["device"]["serial"] == phone.serial
    assert rep["protocol"]["timed_region"] == "PipelineLoop.generate"
    quality = block["quality"]
    assert quality["reference"] == "pytorch-fp32" and quality["passed"] is False
    assert quality["compared"].startswith("uint8 frames") and quality["distinct_videos"] == 1
    assert all(c["psnr_db_min"] == quality["psnr_db_min"] for c in block["clips"])
    assert sorted(rep["staging"]["pushed"]) == ["decoder.s0.pte", "decoder.s1.pte", "denoiser.pte", "encoder.pte",
                                                "pipeline/image.f32", "pipeline/noise.f32"]
    assert [c["component"] for c in rep["components"]] == ["encoder", "denoiser", "decoder"]
    assert [len(c["runs"][0]["samples_ms"]) for c in rep["components"]] == [1, 2, 1]  # the warm clip's
    assert not any("differs from the host's arithmetic" in w for w in rep["warnings"])
