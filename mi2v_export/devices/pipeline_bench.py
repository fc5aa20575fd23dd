"""`mi2v bench --pipeline`: the whole image-to-video run as one measurement, on the device, clip after clip.

The per-component bench (devices/bench.py) times each model alone after warm-up and *computes* a per-frame figure
from the medians. A user's phone does more: it loads and releases each stage, pays the first run's compile and
weight packing, moves tensors between stages, and heats up over repeated clips. Here the real sampler
(mi2v_export/pipeline/sampler.py: encode, 1 or 2 Euler steps, decode with its tiles, crop) runs `--clips N` times
(or for `--duration S`) on stages the device kind provides (`BenchDevice.pipeline_stage`) — or, on a device that
runs the whole loop itself (the Android app, `--via app`: `BenchDevice.pipeline_clips`), there, its clip records
summarised here — and each clip is recorded: loads, stage times, the on-device time and the transfers apart (a
phone's runner reports its own time), total, per frame, time to first frame, peak memory and the device's state
before and after.

The first clip is the cold one (first load and first run); the others are warm, summarised as p50 / p95. The
measured per-frame latency stands next to the one computed from the stage medians, and the difference is split
into loads, pre/post-processing, transfers and the host's glue between stages (the Euler update, copies). The
video of every clip is compared with the all-fp32 PyTorch run of the same seed (`--checkpoint` for real weights;
artifacts exported with seeded weights need none). A failure or Ctrl-C in the middle keeps the clips done so far:
the report is saved with `pipeline.partial` and the reason.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration import VALIDATION_IMAGE
from ..contract import COMPONENTS, DECODER, DENOISER, ENCODER
from ..errors import BadInputError, DeviceError, Mi2vError, VerificationError, first_line
from ..integrity import check_entry
from ..manifest import read_manifest
from ..parity import _json_float, frame_metrics
from ..pipeline import (GenerateConfig, Pipeline, checkpoint_parts, compare_runs, decoder_kind_of, load_image,
                        torch_stage)
from ..pipeline.report import run_gate
from .base import BenchDevice, BenchOptions, Say, quiet
from .bench import BenchOutcome, checked_protocol, default_report_path, new_report, save_report, start_report
from .registry import kind_for, parse_device
from .report import BenchReport, ComponentResult, RunResult, percentile
from .selection import Selection, describe_artifact

PIPELINE_FORMAT = 1
SEED = 0


@dataclass
class PipelineOptions:
    """What `--pipeline` adds to the bench's options."""

    clips: int = 3
    duration_s: float | None = None  # sustained: clips back to back until this many seconds have passed
    image: Path | None = None  # default: the validation photo shipped in the package
    checkpoints: list[Path] = field(default_factory=list)  # the fp32 reference's weights (else the manifest's seed)


def check_options(popts: PipelineOptions) -> None:
    """Bad values in one line before any device work; the reference's checkpoints are read here too (a wrong file
    must not wait for every clip to have run)."""
    if popts.clips < 1:
        raise BadInputError(f"--clips {popts.clips}: the pipeline bench runs at least one clip")
    if popts.duration_s is not None and not (math.isfinite(popts.duration_s) and popts.duration_s > 0):
        raise BadInputError(f"--duration {popts.duration_s:g}: give a positive number of seconds")
    checkpoint_parts(popts.checkpoints)


def run_pipeline_bench(opts: BenchOptions, popts: PipelineOptions, say: Say = quiet,
                       echo: Say = print) -> BenchOutcome:
    """The pipeline benchmark on the device `--device` names. Once the device has answered the report is saved
    whatever happens (a failed clip, a device gone, Ctrl-C), with the clips done so far. A dry run (`--via app`)
    prints the commands through `echo` once the artifacts are chosen, and touches no device."""
    check_options(popts)
    transport, serial = parse_device(opts.device)
    kind = kind_for(transport, opts.via)
    kind.requires(None)
    iterations, warmup, cooldown = checked_protocol(opts, kind)
    opts = replace(opts, iterations=iterations, warmup=warmup, cooldown=cooldown, components=COMPONENTS)
    manifest = read_manifest(opts.artifacts)
    image = load_image(popts.image or VALIDATION_IMAGE)
    json_path = Path(opts.json_path) if opts.json_path else default_report_path(transport, serial)
    device = kind.open(opts, manifest, serial, json_path, say, None)[0]
    selections = _selections(device, manifest, opts)
    if opts.dry_run:
        device.print_pipeline_commands(selections, popts, echo)
        return BenchOutcome()
    report = new_report(opts, manifest, device.transport, serial)
    report.protocol = {"mode": "pipeline", "steps": opts.steps, "clips": popts.clips, "duration_s": popts.duration_s,
                       "seed": SEED, "inputs": f"image {image_name(popts)}", "posterior": "mean"}
    start_report(device, report)
    report.protocol["mode"] = "pipeline"  # over a device's own (the app's facts say "app")
    run = PipelineRun(opts.steps, manifest.frames)
    path = device.report_path(json_path)
    try:
        error = _measure(device, selections, manifest, opts, popts, image, run, report, say)
    except KeyboardInterrupt:
        run.stopped = "interrupted (Ctrl-C)"
        _close(device, report, run, popts, selections, manifest, run.stopped, path)
        raise
    saved = _close(device, report, run, popts, selections, manifest, str(error) if error else None, path)
    return BenchOutcome(reports=[(report, saved)], error=error)


def _measure(device: BenchDevice, selections: dict[str, Selection], manifest: Any, opts: BenchOptions,
             popts: PipelineOptions, image: Any, run: PipelineRun, report: BenchReport,
             say: Say) -> Mi2vError | None:
    """Stages, clips and the reference comparison; the first error: one that stops the run marks it `stopped`
    (its clips are kept), a video below the gate does not."""
    try:
        config = GenerateConfig(*manifest.resolution, manifest.frames, steps=opts.steps, seed=SEED, posterior="mean")
        if device.runs_pipeline:
            _device_clips(device, selections, manifest, opts, image, config, popts, run, report, say)
        else:
            stages = _stages(device, selections, manifest, opts, report, run)
            _clips(device, Pipeline(stages), image, config, popts, run, say)
            stages.clear()  # the artifacts' sessions go before the reference's models come
        run.quality = _quality(manifest, [sel.entry for sel in selections.values()], popts, image, config, run, say)
    except Mi2vError as exc:
        run.stopped = str(exc)
        return exc
    except Exception as exc:  # a runtime's own error in the middle of a clip: the clips done are kept all the same
        run.stopped = f"{type(exc).__name__}: {first_line(exc)}"
        return DeviceError(run.stopped)
    if run.quality.get("passed") is False:
        return VerificationError(f"the video the device produced reaches {float(run.quality['psnr_db_min']):.1f} dB "
                                 "on its "
                                 f"worst frame against PyTorch fp32, below the artifacts' {run.quality['gate_db']:g} "
                                 "dB gate")
    return None


def _close(device: BenchDevice, report: BenchReport, run: PipelineRun, popts: PipelineOptions,
           selections: dict[str, Selection], manifest: Any, error: str | None, path: Path) -> Path:
    report.error = report.error or error
    report.pipeline = run.block(popts)
    report.components = run.components(selections, manifest)
    try:
        device.finish(report)
    finally:
        saved = save_report(report, path)
    return saved


def image_name(popts: PipelineOptions) -> str:
    return Path(popts.image or VALIDATION_IMAGE).name


def _selections(device: BenchDevice, manifest: Any, opts: BenchOptions) -> dict[str, Selection]:
    """One runnable artifact per component, or one line naming what is missing (nothing is measured then)."""
    chosen = {s.component: s for s in device.select(manifest, opts)}
    missing = [f"{c} ({chosen[c].reason})" if c in chosen and chosen[c].reason else c
               for c in COMPONENTS if c not in chosen or chosen[c].entry is None]
    if missing:
        raise BadInputError(f"--pipeline runs the whole video: {manifest.folder} has no artifact for "
                            f"{'; '.join(missing)} that runs on {opts.device}; export every component "
                            "(`mi2v export --component all`)")
    return chosen


def _stages(device: BenchDevice, selections: dict[str, Selection], manifest: Any, opts: BenchOptions,
            report: BenchReport, run: PipelineRun) -> dict[str, Any]:
    """Each component checked against its manifest (mi2v_export/integrity.py) and opened as a pipeline stage on
    the device; the seconds this takes are the cold start's `prepare_ms` (a first load happens there)."""
    stages = {}
    t0 = time.perf_counter()
    for component, sel in selections.items():
        _check_files(sel, manifest, opts, report)
        device.prepare(sel)
        stages[component] = device.pipeline_stage(sel)
        if stages[component] is None:
            raise BadInputError(f"--pipeline is not available on {opts.device} yet: time the components one by "
                                "one (without --pipeline)")
    run.prepare_ms = (time.perf_counter() - t0) * 1000
    return stages


def _check_files(sel: Selection, manifest: Any, opts: BenchOptions, report: BenchReport) -> None:
    """The component's files against the manifest (mi2v_export/integrity.py), differences recorded."""
    for changed in check_entry(manifest, sel.entry, allow_modified=opts.allow_modified):
        report.modified_files.append(changed.to_dict())
        report.warnings.append(f"{changed.file} differs from manifest.json: run with --allow-modified")


def _device_clips(device: BenchDevice, selections: dict[str, Selection], manifest: Any, opts: BenchOptions,
                  image: Any, config: GenerateConfig, popts: PipelineOptions, run: PipelineRun, report: BenchReport,
                  say: Say) -> None:
    """The clips of a device that runs the whole loop itself (the Android app, devices/android_app.py): its clip
    records become the run's (summarised here with the same arithmetic; a summary of its own that differs is a
    warning), its videos the ones compared."""
    for sel in selections.values():
        _check_files(sel, manifest, opts, report)
    block, run.videos = device.pipeline_clips(selections, image, config, popts, say)
    run.clips = [dict(c) for c in block["clips"]]
    run.prepare_ms, run.elapsed_s = (block.get("cold") or {}).get("prepare_ms"), block.get("elapsed_s")
    for clip in run.clips:
        say(f"clip {clip['clip'] + 1}: {clip['total_ms']:.0f} ms ({clip['per_frame_ms']:.1f} ms per frame)")
    report.warnings += summary_differences(block, run.block(popts))
    if block.get("stopped"):
        raise DeviceError(f"the app stopped after {len(run.clips)} clip(s): {block['stopped']}")


def summary_differences(app: dict[str, Any], host: dict[str, Any], rel: float = 1e-9) -> list[str]:
    """The summary parts of the app's `pipeline` block that the host's arithmetic on the same clips does not
    reproduce (PipelineReport.kt mirrors PipelineRun): one warning each."""
    def same(a: Any, b: Any) -> bool:
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
        return a == b
    return [f"the app's pipeline summary '{key}' differs from the host's arithmetic on its clips"
            for key in ("cold", "warm", "headline", "sustained", "peak_rss_kb") if not same(app.get(key), host.get(key))]


def _clips(device: BenchDevice, pipe: Pipeline, image: Any, config: GenerateConfig, popts: PipelineOptions,
           run: PipelineRun, say: Say) -> None:
    """Clips back to back: at least `clips`, and with a duration until it has passed and at least two ran (a
    drift needs a first and a last clip, however long one clip takes)."""
    start = time.perf_counter()
    least = popts.clips if popts.duration_s is None else max(popts.clips, 2)
    while True:
        index = len(run.clips)
        elapsed = time.perf_counter() - start
        if index >= least and (popts.duration_s is None or elapsed >= popts.duration_s):
            break
        before = device.snapshot()
        t0 = time.perf_counter()
        result = pipe.generate(image, config)
        total = (time.perf_counter() - t0) * 1000
        run.add(result, total, elapsed, before, device.snapshot(), _device_times(pipe))
        say(f"clip {index + 1}: {total:.0f} ms ({total / config.frames:.1f} ms per frame)")
    run.elapsed_s = time.perf_counter() - start


def _device_times(pipe: Pipeline) -> dict[str, dict[str, float]]:
    """Per component the time the device itself reported and the transfers, when its stage keeps them (a phone's
    runner); in-process stages report none (their stage time is the device time)."""
    times = {}
    for component, stage in pipe.stages.items():
        take = getattr(stage, "take_times", None)
        if take is not None:
            times[component] = take()
    return times


def _quality(manifest: Any, entries: list, popts: PipelineOptions, image: Any, config: GenerateConfig,
             run: PipelineRun, say: Say) -> dict[str, Any]:
    """Every distinct video the clips produced against the all-fp32 PyTorch run (same seed and posterior mode)."""
    seeded = (manifest.source or {}).get("weights") == "seeded"
    if not popts.checkpoints and not seeded:
        return {"reference": None, "reason": "the artifacts carry checkpoint weights: pass --checkpoint FILE "
                "(repeatable) to compare the video with the PyTorch fp32 run"}
    say("reference: the same clip on PyTorch fp32")
    parts = checkpoint_parts(popts.checkpoints)
    decoder = decoder_kind_of(manifest) or "turbo-vaed"
    stages = {c: torch_stage(c, manifest.preset, decoder, parts) for c in COMPONENTS}
    reference = Pipeline(stages).generate(image, config)
    gate = _gate(entries)
    worst = {digest: _worst_psnr(result, reference, gate) for digest, result in run.videos.items()}
    for clip in run.clips:
        clip["psnr_db_min"] = _json_float(worst[clip["video_sha256"]])
    low = min(worst.values())
    frames = any(isinstance(v, np.ndarray) for v in run.videos.values())
    return {"reference": "pytorch-fp32", "image": image_name(popts), "gate_db": gate, "psnr_db_min": _json_float(low),
            "passed": bool(low >= gate), "distinct_videos": len(worst),
            **({"compared": "uint8 frames (the device's video as written)"} if frames else {})}


def _worst_psnr(result: Any, reference: Any, gate: float) -> float:
    """The worst frame's PSNR of a run against the reference: `compare_runs` on the float video of a host-driven
    run; for the uint8 frames a device wrote (the Android app), against the reference's uint8 frames, both mapped
    to [0, 1] (parity.frame_metrics), so a video bit for bit the reference's is infinite, as compare_runs says."""
    if isinstance(result, np.ndarray):
        return min(f["psnr_db"] for f in frame_metrics(result / 255.0, reference.frames / 255.0, data_range=1.0))
    return float(compare_runs(result, reference, gate)["summary"]["min_psnr_db"])


def _gate(entries: list) -> float:
    """The video gate of the artifacts that ran, as `mi2v generate --compare-to reference` judges
    (mi2v_export/pipeline/report.py `run_gate`: the loosest trajectory gate they passed at export)."""
    gates = [float(e.trajectory["gate_db"]) for e in entries if (e.trajectory or {}).get("gate_db")]
    kinds = {e.precision or e.dtype for e in entries} - {"fp32"}
    precision = "fp32" if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"
    return run_gate(gates, precision)


@dataclass
class PipelineRun:
    """The clips measured so far and their summary: the report's `pipeline` block (format PIPELINE_FORMAT)."""

    steps: int
    frames: int
    clips: list[dict[str, Any]] = field(default_factory=list)
    videos: dict[str, Any] = field(default_factory=dict)  # sha256 of the frames → one result that made them
    prepare_ms: float | None = None
    elapsed_s: float | None = None
    quality: dict[str, Any] | None = None
    stopped: str | None = None

    def add(self, result: Any, total_ms: float, started_s: float, before: dict, after: dict,
            device_times: dict[str, dict[str, float]]) -> None:
        t = {k: v * 1000 for k, v in result.timings.items()}
        loads = {c: t[f"load_{c}"] for c in COMPONENTS}
        stages = {ENCODER: t["encode"], DENOISER: t["denoise"], DECODER: t["decode"]}
        digest = hashlib.sha256(result.frames.tobytes()).hexdigest()
        self.videos.setdefault(digest, result)
        accounted = t["preprocess"] + sum(loads.values()) + sum(stages.values()) + t["postprocess"]
        self.clips.append({
            "clip": len(self.clips), "cold": not self.clips, "started_s": round(started_s, 3),
            "load_ms": loads, "stage_ms": stages, "step_ms": [s * 1000 for s in result.step_times],
            "preprocess_ms": t["preprocess"], "postprocess_ms": t["postprocess"],
            "device_ms": {c: v["device_ms"] for c, v in device_times.items()},
            "device_load_ms": {c: v["device_load_ms"] for c, v in device_times.items()},
            "device_peak_rss_kb": {c: v["peak_rss_kb"] for c, v in device_times.items() if v.get("peak_rss_kb")},
            "transfer_ms": {c: v["transfer_ms"] for c, v in device_times.items()},
            "glue_ms": max(total_ms - accounted, 0.0), "total_ms": total_ms,
            "per_frame_ms": total_ms / self.frames, "first_frame_ms": total_ms - t["postprocess"],
            "peak_rss_kb": _kb(result.memory.get("peak_rss_bytes")),
            "baseline_rss_kb": _kb(result.memory.get("baseline_rss_bytes")),
            "memory_method": result.memory.get("method"), "video_sha256": digest, "psnr_db_min": None,
            "conditions": {"before": before, "after": after},
        })

    def block(self, popts: PipelineOptions) -> dict[str, Any]:
        warm = self.clips[1:] or self.clips[:1]
        return {
            "format": PIPELINE_FORMAT, "steps": self.steps, "frames": self.frames, "seed": SEED,
            "image": image_name(popts), "clips_requested": popts.clips, "duration_s": popts.duration_s,
            "elapsed_s": self.elapsed_s, "clips": self.clips, "cold": self._cold(),
            "warm": _warm(warm, bool(self.clips[1:])), "headline": self._headline(warm),
            "peak_rss_kb": max((c["peak_rss_kb"] for c in self.clips if c["peak_rss_kb"]), default=None),
            "device_peak_rss_kb": max((kb for c in self.clips for kb in c["device_peak_rss_kb"].values()),
                                      default=None),
            "quality": self.quality, "sustained": _sustained(self.clips, popts),
            "partial": self.stopped is not None or len(self.clips) < popts.clips, "stopped": self.stopped,
        }

    def _cold(self) -> dict[str, Any] | None:
        if not self.clips:
            return None
        first = self.clips[0]
        return {"prepare_ms": self.prepare_ms, "total_ms": first["total_ms"],
                "first_frame_ms": first["first_frame_ms"], "load_ms": sum(first["load_ms"].values()),
                "first_run_ms": {**first["stage_ms"], DENOISER: first["step_ms"][0]}}

    def _headline(self, warm: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Measured per frame (warm p50) next to the computed one (each stage's p50: the device's own time where
        it reports one, as the per-component bench would), and what makes the difference per clip."""
        if not warm:
            return None

        def p50(values) -> float:
            return percentile(list(values), 50)
        own = {c: p50(_own_times(k, c)[0] for k in warm) for c in (ENCODER, DECODER)}
        step = p50(s for k in warm for s in _own_times(k, DENOISER))
        computed = (own[ENCODER] + self.steps * step + own[DECODER]) / self.frames
        measured = p50(c["total_ms"] for c in warm) / self.frames
        return {"measured_per_frame_ms": measured, "computed_per_frame_ms": computed,
                "difference_ms_per_frame": measured - computed,
                "difference_ms": {"load": p50(sum(c["load_ms"].values()) + sum(c["device_load_ms"].values())
                                              for c in warm),
                                  "pre_post": p50(c["preprocess_ms"] + c["postprocess_ms"] for c in warm),
                                  "transfer": p50(sum(c["transfer_ms"].values()) for c in warm),
                                  "glue": p50(c["glue_ms"] for c in warm)},
                "from": "warm clips" if self.clips[1:] else "the cold clip (only one clip ran)"}

    def components(self, selections: dict[str, Selection], manifest: Any) -> list[ComponentResult]:
        """The report's components: each stage's times over the warm clips (the cold clip's as warm-up), so the
        per-component figures and `bench compare` read a pipeline report like any other."""
        out = []
        for component in COMPONENTS:
            sel = selections.get(component)
            comp = ComponentResult(component, status="ok" if self.clips else "skipped")
            if sel is not None and sel.entry is not None:
                comp.artifact = describe_artifact(manifest, sel.entry)
                comp.runtime = {"name": sel.runtime, "timed_region": "pipeline stage (load excluded)"}
            times = [_stage_times(c, component) for c in self.clips]
            if times:
                comp.runs = [RunResult(load_ms=statistics.median(c["load_ms"][component] for c in self.clips),
                                       warmup_ms=times[0] if len(times) > 1 else [],
                                       samples_ms=[s for t in (times[1:] or times) for s in t],
                                       peak_rss_kb=max((c["peak_rss_kb"] or 0) for c in self.clips) or None,
                                       peak_rss_scope="pipeline")]
            out.append(comp)
        return out


def _stage_times(clip: dict[str, Any], component: str) -> list[float]:
    return clip["step_ms"] if component == DENOISER else [clip["stage_ms"][component]]


def _own_times(clip: dict[str, Any], component: str) -> list[float]:
    """A stage's times without transfers: the device's own report where there is one (a phone's runner; the
    denoiser's split evenly over the steps), else the stage's time here."""
    if component not in clip["device_ms"]:
        return _stage_times(clip, component)
    own = clip["device_ms"][component]
    return [own / len(clip["step_ms"])] * len(clip["step_ms"]) if component == DENOISER else [own]


def _kb(value: int | None) -> int | None:
    return None if value is None else int(value) // 1024


def _stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95), "min": min(values),
            "max": max(values), "mean": statistics.fmean(values)}


def _warm(warm: list[dict[str, Any]], real: bool) -> dict[str, Any] | None:
    if not warm:
        return None
    return {"clips": len(warm) if real else 0, "total_ms": _stats([c["total_ms"] for c in warm]),
            "per_frame_ms": _stats([c["per_frame_ms"] for c in warm]),
            "first_frame_ms": _stats([c["first_frame_ms"] for c in warm]),
            "stage_ms": {c: percentile([k["stage_ms"][c] for k in warm], 50) for c in COMPONENTS},
            "load_ms": {c: percentile([k["load_ms"][c] for k in warm], 50) for c in COMPONENTS}}


def _sustained(clips: list[dict[str, Any]], popts: PipelineOptions) -> dict[str, Any] | None:
    """Drift of the last warm clip against the first, and the signs of throttling the snapshots show."""
    warm = clips[1:]
    if popts.duration_s is None and len(warm) < 2:
        return None
    drift = warm[-1]["total_ms"] / warm[0]["total_ms"] if len(warm) >= 2 else None
    signs = []
    status = [c["conditions"]["after"].get("thermal_status") for c in clips]
    if any(s is not None for s in status) and max(s or 0 for s in status) > (status[0] or 0):
        signs.append(f"thermal status rose to {max(s or 0 for s in status)}")
    if drift is not None and drift > 1.10:
        signs.append(f"the last warm clip took {drift:.2f}x the first")
    return {"duration_s": popts.duration_s, "clips": len(clips), "drift": drift, "throttled": bool(signs),
            "signs": signs}


__all__ = ["PIPELINE_FORMAT", "PipelineOptions", "PipelineRun", "check_options", "run_pipeline_bench",
           "summary_differences"]
