"""The phone apps' in-app pipeline loop (apps/android/app/src/main/kotlin/org/mi2v/bench/PipelineLoop.kt) with the
host as its oracle.

Real tiny-preset ONNX components (every one, exported by the project's exporter at 120x184, so the decoder's 128x192
is cropped) run on this host through `mi2v generate`'s own code (`pipeline.run_generate`: build_stages, then
Pipeline.generate), recording every load, run (inputs and outputs) and release of a stage, and the noise the host
draws from its torch generator. Three cases: 1 and 2 steps with the ONNX encoder (the contract's encoder gives only
the posterior mean, so generate falls back to it), and 2 steps with the encoder left out of the artifacts and run
by PyTorch through `--fallback pytorch` (it gives the log-variance: a posterior sample, and a second noise draw).
Those go to case folders as raw little-endian files. The Kotlin loop, compiled with a real kotlinc and run with java
(apps/android/app/src/test/kotlin/org/mi2v/bench/PipelineLoopOracle.kt), runs on the same image bytes and noise with
a runner that requires each call to be the host's next one with the host's inputs and hands back the host's
outputs; its schedules (also 3, 4, 7, 30 and 1000 steps), reference latent, latents, video and uint8 frames must be
the host's.

Bit for bit everywhere, except the posterior sample's latents: the host's `exp` is torch's float32 one (SLEEF, not
always correctly rounded), the loop's is Math.exp rounded to float32, so a value of the reference latent (and the
latents' frame 0, which is it) may be an ulp off; those are allowed 1e-6 of the tensor's largest |value|. Nothing
else is computed differently: the schedule's float64 part is numpy's float64, which the JVM's doubles reproduce.
Copies of a case with one recorded denoiser input one ulp off, or with a decoder output changed, must fail.
The Swift copy (apps/ios/Sources/Mi2vBench/PipelineLoop.swift) is not compiled here (no Swift toolchain).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mi2v_export.pipeline.run as generate_module
from mi2v_export.pipeline import GenerateRequest, flow_schedule, run_generate
from mi2v_export.exporters.orchestrate import ExportRequest, run_export
from tests import cache
from tests.e2e.kotlin_jvm import MAIN, TEST, compile_kotlin, require_kotlin, run_java, write_raw

KOTLIN = [MAIN / "PipelineLoop.kt", MAIN / "TileLoop.kt", MAIN / "StreamLoop.kt",
          MAIN / "ChunkLoop.kt", MAIN / "BenchCore.kt",
          TEST / "PipelineLoopOracle.kt", TEST / "OracleCases.kt"]
HEIGHT, WIDTH, FRAMES = 120, 184, 9  # not multiples of 32: the decoded 128x192 is cropped
SCHEDULE_STEPS = (1, 2, 3, 4, 7, 30, 1000)
SAMPLE_TOLERANCE = 1e-6
# name, steps, seed, flow score (1.7: not a float32), the encoder's back-end
CASES = (("steps1-onnx-mean", 1, 3, 2.0, "onnx"), ("steps2-onnx-mean", 2, 11, 1.7, "onnx"),
         ("steps2-pytorch-sample", 2, 5, 2.0, "pytorch"))


def _build(out: Path) -> None:
    run_export(ExportRequest(target="onnx", out_dir=out, preset="tiny", components="all",
                             resolution=f"{HEIGHT}x{WIDTH}", frames=FRAMES, verify=False, test_vectors=False))


def _export(request) -> Path:
    """The tiny preset, every component, ONNX fp32 at 120x184, built once per source version in pytest's cache
    (tests/cache.py)."""
    return cache.cached(request.config, "pipeline-loop", _build, f"{HEIGHT}x{WIDTH}x{FRAMES}")


def _without_encoder(export: Path, folder: Path) -> Path:
    """The export less its encoder: generate's `--fallback pytorch` then runs the PyTorch encoder (seeded weights),
    the one stage that gives the posterior's log-variance."""
    folder.mkdir()
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["components"] = [e for e in manifest["components"] if e["component"] != "encoder"]
    for entry in manifest["components"]:
        for name in [entry["file"], *entry.get("extra_files", [])]:
            shutil.copy(export / name, folder / name)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _arrays(tensors: dict) -> dict:
    return {name: t.detach().cpu().numpy().copy() for name, t in tensors.items()}


def _record_stage(component: str, stage, events: list) -> None:
    """Each load, run (its inputs and outputs) and release of the stage, in order, into `events` (not the load an
    artifact stage's run makes sure of itself)."""
    load, run, release = stage.load, stage.run, stage.release
    running = []

    def recorded_load():
        if not running:
            events.append({"event": "load", "component": component})
        load()

    def recorded_run(**inputs):
        running.append(True)
        try:
            outputs = run(**inputs)
        finally:
            running.pop()
        events.append({"event": "run", "component": component, "inputs": _arrays(inputs),
                       "outputs": _arrays(outputs)})
        return outputs

    def recorded_release():
        events.append({"event": "release", "component": component})
        release()

    stage.load, stage.run, stage.release = recorded_load, recorded_run, recorded_release


def _recorded_generate(request: GenerateRequest, monkeypatch):
    """`mi2v generate`'s run_generate, its stages recorded, and every draw from a torch generator once they are
    built (the noise, then the posterior noise when it samples; not the seeded weights of a PyTorch stage)."""
    events, draws, built = [], [], []
    build_stages, randn = generate_module.build_stages, torch.randn

    def recording_build(*args, **kwargs):
        stages = build_stages(*args, **kwargs)
        for component, stage in stages.items():
            _record_stage(component, stage, events)
        built.append(True)
        return stages

    def recording_randn(*args, **kwargs):
        out = randn(*args, **kwargs)
        if built and kwargs.get("generator") is not None:
            draws.append(out.numpy().copy())
        return out

    with monkeypatch.context() as patch:
        patch.setattr(generate_module, "build_stages", recording_build)
        patch.setattr(torch, "randn", recording_randn)
        run = run_generate(request)
    return run, events, draws


def _write_case(folder: Path, name: str, request: GenerateRequest, rgb: np.ndarray, run, events: list,
                draws: list, tolerance: float) -> dict:
    folder.mkdir()
    result = run.result

    def raw(array, stem: str) -> dict:
        return write_raw(folder, f"{stem}.bin", np.asarray(array))

    for k, event in enumerate(events):
        if event["event"] == "run":
            event["inputs"] = {n: raw(a, f"call{k}.in.{n}") for n, a in event["inputs"].items()}
            event["outputs"] = {n: raw(a, f"call{k}.out.{n}") for n, a in event["outputs"].items()}
    schedules = [(s, flow_schedule(s)) for s in SCHEDULE_STEPS]
    case = {"name": name, "latent_tolerance": tolerance,
            "config": {"height": HEIGHT, "width": WIDTH, "frames": FRAMES, "steps": request.steps,
                       "flow_score": request.flow_score, "posterior": request.posterior},
            "image_rgb": write_raw(folder, "image.u8", rgb), "noise": raw(draws[0], "noise"),
            "posterior_noise": raw(draws[1], "posterior-noise") if len(draws) > 1 else None,
            "events": events, "posterior": result.posterior,
            "schedule": {"timesteps": raw(result.schedule.timesteps, "timesteps"),
                         "sigmas": raw(result.schedule.sigmas, "sigmas")},
            "schedules": [{"steps": s, "timesteps": raw(f.timesteps, f"schedule{s}.t"),
                           "sigmas": raw(f.sigmas, f"schedule{s}.sigma")} for s, f in schedules],
            "cond_latent": raw(result.cond_latent, "cond-latent"),
            "latents": [raw(z, f"latent{i}") for i, z in enumerate(result.latents)],
            "video": raw(result.video, "video"), "frames": write_raw(folder, "frames.u8", result.frames)}
    (folder / "case.json").write_text(json.dumps(case))
    return case


def _host_cases(tmp_path: Path, export: Path, monkeypatch) -> tuple[list[Path], list[dict]]:
    image = tmp_path / "image.png"
    rgb = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(image)  # already HxW: preprocess_image only normalises it
    no_encoder = _without_encoder(export, tmp_path / "no-encoder")
    folders, cases = [], []
    for name, steps, seed, flow_score, encoder in CASES:
        sample = encoder == "pytorch"
        request = GenerateRequest(image=image, out=tmp_path / f"{name}.mp4", steps=steps, seed=seed,
                                  flow_score=flow_score, artifacts=[no_encoder if sample else export],
                                  fallback="pytorch" if sample else "none")
        run, events, draws = _recorded_generate(request, monkeypatch)
        assert run.result.posterior == ("sample" if sample else "mean")
        assert len(draws) == (2 if sample else 1)
        assert [e["component"] for e in events if e["event"] == "run"] == ["encoder", *["denoiser"] * steps,
                                                                            "decoder"]
        folders.append(tmp_path / name)
        cases.append(_write_case(folders[-1], name, request, rgb, run, events, draws,
                                 SAMPLE_TOLERANCE if sample else 0.0))
    return folders, cases


def _tampered(source: Path, target: Path, file: str, index: int, value=None) -> Path:
    """A copy of a case with one value of a recorded file changed: to `value`, else one ulp up."""
    shutil.copytree(source, target)
    values = np.fromfile(target / file, dtype="<f4")
    values[index] = np.nextafter(values[index], np.float32(np.inf)) if value is None else value
    values.tofile(target / file)
    return target


@pytest.mark.slow
def test_kotlin_pipeline_loop_matches_the_host(tmp_path, request, monkeypatch):
    kotlinc = require_kotlin()
    export = _export(request)
    folders, cases = _host_cases(tmp_path, export, monkeypatch)
    # the loop is exercised: 1 and 2 steps, the mean and a posterior sample, a crop, a clamp
    runs = [k for k, e in enumerate(cases[1]["events"]) if e["event"] == "run"]  # encoder, 2 steps, decoder
    decoded = np.fromfile(folders[1] / f"call{runs[3]}.out.video.bin", dtype="<f4")
    assert decoded.size > FRAMES * 3 * HEIGHT * WIDTH and np.abs(decoded).max() > 1.0

    cp = compile_kotlin(kotlinc, KOTLIN, tmp_path / "classes")
    proc = run_java(cp, "org.mi2v.bench.PipelineLoopOracle", folders)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok ") == len(CASES)
    lines = {line.split(":")[0][3:]: line for line in proc.stdout.splitlines() if line.startswith("ok ")}
    for name, *_, encoder in CASES:
        if encoder == "onnx":  # no exp anywhere: every value bit for bit
            assert "bit for bit: true" in lines[name], lines[name]

    # one denoiser input an ulp off (step 2's latent: the Euler update of step 1) and the decoder's first output
    # value (kept by the crop) changed are both caught
    latent = cases[1]["events"][runs[2]]["inputs"]["latent"]
    bad_step = _tampered(folders[1], tmp_path / "tampered-step", latent["file"], int(np.prod(latent["shape"])) // 3)
    new = np.float32(-0.5 if decoded[0] > 0 else 0.5)
    bad_video = _tampered(folders[1], tmp_path / "tampered-video", f"call{runs[3]}.out.video.bin", 0, new)
    proc = run_java(cp, "org.mi2v.bench.PipelineLoopOracle", [bad_step, bad_video])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.count("MISMATCH") == 2, proc.stdout
    assert f"call {runs[2]} (denoiser) input latent: value" in proc.stdout, proc.stdout
    assert "video: value 0 is" in proc.stdout, proc.stdout
