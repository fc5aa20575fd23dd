"""`mi2v bench --pipeline --device adb:SERIAL --via app`: the whole image-to-video run timed inside the Android app.

The app runs the host's sampler in Kotlin (apps/android/.../PipelineLoop.kt, PipelineClips.kt) over ExecuTorch
programs (EtPipeline.kt), clip after clip, and writes the report's `pipeline` block with the host's arithmetic
(PipelineReport.kt, mirroring mi2v_export/devices/pipeline_bench.py). This module is the host's side of it:

* stages every component's `.pte` (a tiled encoder / decoder: each stage's file, its `tiling` record in the plan
  with the phone paths), the image tensor `preprocess_image` makes of the photo and the host's noise draw (a CPU
  torch.Generator seeded as `Pipeline.generate` seeds it, which the app cannot reproduce) as raw float32 files,
  and the plan (apps/android_app.py `build_plan` plus output names, tiling records and a `pipeline` block);
* runs `am instrument … -e pipeline true -e clips N -e image … -e noise … -e video mi2v-app-video …`, reads the
  report back (`run-as … cat`), then each distinct video the clips made (uint8 frames, F × H × W × 3, named by
  its sha256): `run-as … cat files/<video> > /data/local/tmp/…` (the redirection is the shell user's, which can
  write there and `adb pull` it), checked against the clip's sha256.

devices/android_app.py `AppDevice` calls it from the pipeline bench (devices/pipeline_bench.py), which compares the
videos with PyTorch fp32 and merges everything into the normal report. `pipeline_commands` is the dry run.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..devices.adb import quote
from ..devices.base import Say, quiet
from ..devices.selection import remote_name
from ..errors import DeviceError
from ..files import sha256_file
from ..pipeline import preprocess_image
from ..runtimes.sessions import check_record
from .android_app import (APP_DIR, DEVICE_DIR, INSTRUMENTATION, PACKAGE, PLAN_NAME, REPORT_NAME, TEST_CLASS,
                          TEST_PACKAGE, AppArtifact, build_plan, ensure_installed, instrument_and_read, push_missing,
                          staged_dir)
from .build import Command, apk_paths

INPUT_DIR = "pipeline"  # under DEVICE_DIR: the image tensor and the noise draw
IMAGE_FILE = f"{INPUT_DIR}/image.f32"
NOISE_FILE = f"{INPUT_DIR}/noise.f32"
VIDEO_PREFIX = "mi2v-app-video"  # in the app's files folder: VIDEO_PREFIX-<sha256[:16]>.u8 per distinct video


def video_name(sha256: str) -> str:
    return f"{VIDEO_PREFIX}-{sha256[:16]}.u8"


def program_files(item: AppArtifact) -> list[str]:
    """The entry's program files as the app runs them: its `.pte`, or each tile stage's (stage 0 is the entry's
    own file; runtimes/sessions.py `check_record` refuses a record whose stage files are not the entry's)."""
    tiling = getattr(item.entry, "tiling", None)
    if not tiling:
        return [item.entry.file if item.entry is not None else item.path.name]
    check_record(item.entry)
    return [stage["file"] for stage in tiling["stages"]]


def _local(item: AppArtifact, name: str) -> Path:
    """A program file of the item on this machine (manifest names are relative to its folder)."""
    return item.folder / name if item.folder is not None else item.path.parent / name


def pipeline_plan(items: Sequence[AppArtifact], config: Any, image: str,
                  device_dir: str = DEVICE_DIR) -> dict[str, Any]:
    """The plan file (`-e plan`): build_plan's, each component with its output names and (tiled) its tiling record
    with phone paths, and the `pipeline` block the app's PipelinePlan.parse reads (PipelineClips.kt)."""
    geo = config.geometry
    plan = build_plan(items, geo.frames, device_dir)
    for item, comp in zip(items, plan["components"]):
        comp["outputs"] = [t.to_dict() for t in item.entry.outputs]
        comp["inputs"] = comp["inputs"] or []
        tiling = getattr(item.entry, "tiling", None)
        comp["tiling"] = None
        if tiling:
            stages = [{**s, "file": f"{device_dir}/{remote_name(s['file'])}"} for s in tiling["stages"]]
            comp["tiling"] = {**tiling, "stages": stages}
    plan["pipeline"] = {"height": geo.height, "width": geo.width, "frames": geo.frames, "steps": config.steps,
                        "flow_score": float(config.flow_score), "posterior": config.posterior,
                        "seed": int(config.seed), "image": image}
    return plan


def pipeline_inputs(image: Any, config: Any) -> tuple[np.ndarray, np.ndarray]:
    """The image tensor (1, 3, 1, H, W) and the noise (1, 128, T, h, w), float32, exactly as the host's
    `Pipeline.generate` makes them (mi2v_export/pipeline/sampler.py): preprocess_image, then torch.randn from a CPU
    generator seeded with the config's seed."""
    geo = config.geometry
    x = preprocess_image(image, geo.height, geo.width, config.fit)
    generator = torch.Generator(device="cpu").manual_seed(int(config.seed))
    noise = torch.randn(geo.latent_shape, generator=generator, dtype=torch.float32)
    return x.numpy().astype("<f4"), noise.numpy().astype("<f4")


def pipeline_args(clips: int, duration_s: float | None, device_dir: str = DEVICE_DIR) -> list[str]:
    """The remote `am instrument` argv of the in-app pipeline (Mi2vBenchmarkTest.kt `pipeline`)."""
    argv = ["am", "instrument", "-w", "-r", "-e", "pipeline", "true", "-e", "plan", f"{device_dir}/{PLAN_NAME}",
            "-e", "image", f"{device_dir}/{IMAGE_FILE}", "-e", "noise", f"{device_dir}/{NOISE_FILE}",
            "-e", "clips", str(clips)]
    if duration_s is not None:
        argv += ["-e", "duration", repr(float(duration_s))]
    return argv + ["-e", "video", VIDEO_PREFIX, "-e", "output", REPORT_NAME, "-e", "class", TEST_CLASS,
                   INSTRUMENTATION]


def pull_command(name: str, device_dir: str = DEVICE_DIR) -> str:
    """The device shell text that copies a file from the app's files folder to the staging folder."""
    return f"{quote(['run-as', PACKAGE, 'cat', f'files/{name}'])} > {quote([f'{device_dir}/{name}'])}"


def pipeline_commands(serial: str, items: Sequence[AppArtifact], clips: int, duration_s: float | None, *,
                      app_dir: Path = APP_DIR, adb: str = "adb", keep: bool = False) -> list[Command]:
    """What `--pipeline --via app` runs, in order (notes say which steps are conditional)."""
    def sh(remote: Any, note: str = "") -> Command:
        return Command((adb, "-s", serial, "shell", quote(remote)), note=note)

    d = DEVICE_DIR
    names = [remote_name(f) for item in items for f in program_files(item)]
    cmds = [sh(["pm", "path", PACKAGE], "is the app installed? (then sha256sum of its base.apk)"),
            sh(["pm", "path", TEST_PACKAGE], "is the test APK installed?")]
    cmds += [Command((adb, "-s", serial, "install", "-r", "-t", str(apk)),
                     note="only if missing or another build is installed") for apk in apk_paths(app_dir)]
    cmds.append(sh(["mkdir", "-p", d, f"{d}/{INPUT_DIR}"]))
    cmds.append(sh(["sha256sum", *[f"{d}/{n}" for n in names], f"{d}/{IMAGE_FILE}", f"{d}/{NOISE_FILE}"],
                   "files already there with the same sha256 are not pushed again"))
    for item in items:
        cmds += [Command((adb, "-s", serial, "push", str(_local(item, f)), f"{d}/{remote_name(f)}"),
                         note="only if not already there") for f in program_files(item)]
    cmds.append(Command((adb, "-s", serial, "push", f"<temporary>/{IMAGE_FILE}", f"{d}/{IMAGE_FILE}"),
                        note="the image tensor (1, 3, 1, H, W) float32, only if not already there"))
    cmds.append(Command((adb, "-s", serial, "push", f"<temporary>/{NOISE_FILE}", f"{d}/{NOISE_FILE}"),
                        note="the host's noise draw (seed 0) float32, only if not already there"))
    cmds.append(Command((adb, "-s", serial, "push", f"<temporary>/{PLAN_NAME}", f"{d}/{PLAN_NAME}"),
                        note="the plan: programs, tiling records, the pipeline block"))
    cmds.append(sh(["run-as", PACKAGE, "rm", "-f", f"files/{REPORT_NAME}"], "no stale report"))
    cmds.append(sh(pipeline_args(clips, duration_s)))
    cmds.append(sh(["run-as", PACKAGE, "cat", f"files/{REPORT_NAME}"], "the report the app wrote"))
    video = f"{VIDEO_PREFIX}-SHA16.u8"
    cmds.append(sh(pull_command(video), "each distinct video the clips made (SHA16: its sha256's first 16 digits)"))
    cmds.append(Command((adb, "-s", serial, "pull", f"{d}/{video}", "<temporary>/"),
                        note="checked against the clip's sha256, compared with PyTorch fp32"))
    if not keep:
        cmds.append(sh(["rm", "-rf", d]))
    return cmds


def run_pipeline_app(dev: Any, items: Sequence[AppArtifact], config: Any, image: Any, image_name: str,
                     clips: int, duration_s: float | None, *, app_dir: Path = APP_DIR, reinstall: bool = False,
                     keep: bool = False, timeout: float = 3600.0,
                     say: Say = quiet) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """Install when needed, stage, instrument, read the report and the videos. Returns (the app's report, checked
    against the schema and holding a `pipeline` block; {sha256: uint8 frames (F, H, W, 3)}; the staging facts)."""
    installed = ensure_installed(dev, app_dir, say, reinstall)
    with staged_dir(dev, keep):
        with tempfile.TemporaryDirectory(prefix="mi2v-app-pipeline-") as tmp:
            pushed = _push(dev, items, config, image, image_name, Path(tmp), say)
            say(f"running the pipeline in the app on {dev.serial}: {clips} clip(s)"
                + (f", at least {duration_s:g} s" if duration_s else ""))
            app = instrument_and_read(dev, pipeline_args(clips, duration_s), timeout)
            block = app.get("pipeline")
            if not isinstance(block, dict) or not isinstance(block.get("clips"), list):
                raise DeviceError(f"the app's report from {dev.serial} has no pipeline block: the installed app "
                                  "predates `--pipeline`; rebuild and reinstall it (`make android`, --reinstall)")
            videos = pull_videos(dev, block, config, Path(tmp), say)
    return app, videos, {"remote_dir": DEVICE_DIR, "pushed": pushed, "installed": installed, "kept": keep}


def _push(dev: Any, items: Sequence[AppArtifact], config: Any, image: Any, image_name: str, tmp: Path,
          say: Say) -> list[str]:
    """The programs, the two input tensors (only what the phone lacks) and the plan; returns the names pushed."""
    dev.mkdirs(f"{DEVICE_DIR}/{INPUT_DIR}")
    remote = {}
    for item in items:
        for f in program_files(item):
            local = _local(item, f)
            remote[f"{DEVICE_DIR}/{remote_name(f)}"] = (local, sha256_file(local))
    (tmp / INPUT_DIR).mkdir()
    for name, array in zip((IMAGE_FILE, NOISE_FILE), pipeline_inputs(image, config)):
        (tmp / name).write_bytes(array.tobytes())
        remote[f"{DEVICE_DIR}/{name}"] = (tmp / name, sha256_file(tmp / name))
    pushed = push_missing(dev, remote, say)
    plan = tmp / PLAN_NAME
    plan.write_text(json.dumps(pipeline_plan(items, config, image_name), indent=2) + "\n")
    dev.push(plan, f"{DEVICE_DIR}/{PLAN_NAME}")
    return pushed


def pull_videos(dev: Any, block: dict[str, Any], config: Any, tmp: Path, say: Say = quiet) -> dict[str, np.ndarray]:
    """Each distinct video of the clips, copied out of the app's files folder and pulled; its frames must have
    the sha256 the app reported for them (DeviceError otherwise)."""
    geo = config.geometry
    shape = (geo.frames, geo.height, geo.width, 3)
    videos = {}
    for sha in dict.fromkeys(c["video_sha256"] for c in block["clips"]):
        name = video_name(sha)
        rc, out, err = dev.shell(pull_command(name))
        if rc != 0:
            detail = (err.strip() or out.strip() or "no output").splitlines()[-1]
            raise DeviceError(f"cannot copy the app's video {name} on {dev.serial} ({detail})")
        say(f"pulling the video {name}")
        local = dev.pull(f"{DEVICE_DIR}/{name}", tmp / name)
        data = local.read_bytes()
        if len(data) != int(np.prod(shape)) or hashlib.sha256(data).hexdigest() != sha:
            raise DeviceError(f"the video {name} pulled from {dev.serial} is not the one the app reported "
                              f"({len(data)} bytes for {shape} frames, or another sha256)")
        videos[sha] = np.frombuffer(data, np.uint8).reshape(shape)
    return videos


__all__ = ["IMAGE_FILE", "NOISE_FILE", "VIDEO_PREFIX", "pipeline_args", "pipeline_commands", "pipeline_inputs",
           "pipeline_plan", "program_files", "pull_videos", "run_pipeline_app", "video_name"]
