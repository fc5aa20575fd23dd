"""Size, host time, video quality and runtime memory of the denoiser and Turbo-VAED per target and precision.

    python benchmarks/precision.py --preset tiny --json /tmp/p.json                  # smoke run (minutes)
    flock /tmp/mi2v-heavy.lock python benchmarks/precision.py --json benchmarks/results/precision_720p.json
                                                                   # 720x1280x17, 270M seeded weights (hours)

For each (target, component) every precision of `--precisions` is exported with `mi2v export` (the library call,
--no-verify: the quality figure is measured here, the same way for every cell; `--reuse` measures an export already
in --work instead), then timed side by side: one
warm-up each, then `--runs` rounds, each round running every precision once (so fp32 and the quantized forms see
the same machine load); the median per precision is reported with the speed-up over fp32. Video quality: the 2-step
trajectory on the packaged validation image with that one artifact (PyTorch fp32 for the other components) against
the all-PyTorch fp32 run, per-frame PSNR (min and mean) and min SSIM. Runtime memory: the ExecuTorch memory plan's
planned bytes; for onnxruntime the measured peak of a fresh process that loads and runs the artifact, minus the same
process without it (mi2v_export/runtimes/measure.py).

The JSON is {"machine": {cpu, flags, load_avg, ...}, "config": {...}, "cells": [{"target", "component",
"precision", "bytes", "compression", "median_s", "runs_s", "speedup_vs_fp32", "psnr_db_min", "psnr_db_mean",
"ssim_min", "runtime_memory_bytes", "error"}, with --gates also "export_trajectory_db", "kept_float_units" and
"margin": {"before_db", "after_db", "bytes_ratio"}]}; it is rewritten after every cell, so a cut-off run keeps its
rows.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

from mi2v_export import runtimes
from mi2v_export.runtimes import measure

TARGETS = ("executorch", "onnx")
COMPONENTS = ("denoiser", "decoder")


def machine_info() -> dict:
    from mi2v_export.contract import cpu_flags, cpu_model

    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_avg_start": list(os.getloadavg()), "cpu": cpu_model(),
            "flags": cpu_flags()}


def export_cell(target: str, component: str, precision: str, args, work: Path) -> tuple:
    from mi2v_export.exporters.orchestrate import ExportRequest, run_export

    out = work / f"{target}_{component}_{precision}"
    if args.reuse and (out / "manifest.json").is_file():
        from mi2v_export.manifest import read_manifest
        from mi2v_export.shapes import parse_resolution

        manifest = read_manifest(out)
        if (tuple(manifest.resolution), manifest.frames, manifest.preset) == (
                parse_resolution(args.resolution), args.frames, args.preset):
            return manifest, manifest.find(component, target)
    request = ExportRequest(target=target, out_dir=out, components=component, preset=args.preset,
                            resolution=args.resolution, frames=args.frames, precision=precision, verify=args.gates,
                            test_vectors=False, calibration=Path(args.calibration) if args.calibration else None,
                            attention=args.attention, rewrite=list(args.rewrite))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = run_export(request)
    return report.manifest, report.entries[0]


def gate_fields(entry) -> dict:
    """With --gates: the export's own trajectory and, where the margin kept units float (exporters/margin.py),
    how many, the video before and after, and the bytes they cost."""
    auto = entry.recipe if (entry.recipe or {}).get("origin") == "auto-margin" else None
    if not entry.trajectory and auto is None:
        return {}
    return {"export_trajectory_db": (entry.trajectory or {}).get("psnr_db_min"),
            "kept_float_units": [u for u, p in auto["units"].items() if p != auto["precision"]] if auto else [],
            "margin": {"before_db": auto["trajectory_db"]["before"], "after_db": auto["trajectory_db"]["after"],
                       "bytes_ratio": auto["cost"]["ratio"]} if auto else None}


def stage_of(manifest, entry):
    from mi2v_export.pipeline import artifact_stage

    return artifact_stage(entry.component, manifest.path_of(entry), entry)


def time_side_by_side(stages: dict, inputs: dict, runs: int) -> dict:
    """{precision: [seconds per run]}: one warm-up each, then `runs` rounds over every precision."""
    times = {p: [] for p in stages}
    for s in stages.values():
        s.run(**inputs)
    for _ in range(runs):
        for p, s in stages.items():
            t0 = time.perf_counter()
            s.run(**inputs)
            times[p].append(time.perf_counter() - t0)
    return times


def memory_of(entry, manifest) -> int | None:
    """ExecuTorch: the memory plan's bytes; else the runtime layer's measured peak of a fresh process that loads
    the artifact and runs it once (mi2v_export/runtimes/measure.py)."""
    if entry.target == "executorch":
        return entry.runtime_memory_bytes
    return measure.measure(runtimes.for_entry(entry)[0].name, manifest.path_of(entry))["bytes"]


def quality_of(component: str, stage, torch_stages: dict, references: dict, config, image) -> dict:
    """Trajectory PSNR/SSIM against the fp32 run with the same posterior mode (an exported encoder gives no
    log-variance, so its run uses the posterior mean; `references` caches the fp32 run per mode)."""
    from mi2v_export.pipeline import Pipeline, compare_runs

    stages = dict(torch_stages)
    stages[component] = stage
    result = Pipeline(stages).generate(image, config)
    if result.posterior not in references:
        references[result.posterior] = Pipeline(torch_stages).generate(image, config, posterior=result.posterior)
    s = compare_runs(result, references[result.posterior], 0.0)["summary"]
    return {"psnr_db_min": s["min_psnr_db"], "psnr_db_mean": s["mean_psnr_db"], "ssim_min": s["min_ssim"]}


def measure_cell(row: dict, component: str, target: str, precision: str, args, work: Path,
                 quality_args: tuple) -> tuple | None:
    """Export one cell and fill its size, runtime memory and video quality into `row`; (manifest, entry) or None.
    The artifact's session is dropped afterwards: at 720p every live onnxruntime session holds gigabytes, and
    holding them all through the next cell's quantize_static ran this 24 GB host out of memory."""
    try:
        manifest, entry = export_cell(target, component, precision, args, work)
        row.update(bytes=entry.bytes, compression=entry.compression,
                   runtime_memory_bytes=memory_of(entry, manifest), **gate_fields(entry))
        stage = stage_of(manifest, entry)
        row.update(quality_of(component, stage, *quality_args))
        del stage
        gc.collect()
        return manifest, entry
    except Exception as exc:  # noqa: BLE001 - a cell that fails is a row with its error
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        traceback.print_exc()
        return None


def time_cells(exported: dict, inputs: dict, runs: int, rows: dict[str, dict]) -> None:
    """Time every exported precision of one (target, component) side by side; fill median / runs / speed-up into
    its row (`rows`: precision → row)."""
    stages = {p: stage_of(*me) for p, me in exported.items() if me is not None}
    times = time_side_by_side(stages, inputs, runs)
    base = statistics.median(times["fp32"]) if times.get("fp32") else None
    for p, ts in times.items():
        med = statistics.median(ts)
        rows[p].update(median_s=med, runs_s=ts, speedup_vs_fp32=base / med if base else None)
    del stages
    gc.collect()


def run(args) -> dict:
    from mi2v_export import calibration
    from mi2v_export.exporters.components import example_inputs
    from mi2v_export.pipeline import GenerateConfig, Pipeline, load_image, torch_stage
    from mi2v_export.presets import get_preset
    from mi2v_export.shapes import geometry, parse_resolution

    preset = get_preset(args.preset)
    h, w = parse_resolution(args.resolution) if args.resolution else (preset.height, preset.width)
    args.frames = args.frames or preset.frames
    args.resolution = f"{h}x{w}"
    geo = geometry(h, w, args.frames)
    result = {"machine": machine_info(), "config": {"preset": preset.name, "resolution": [h, w],
                                                     "frames": args.frames, "runs": args.runs,
                                                     "calibration": args.calibration or "packaged",
                                                     "weights": "seeded (seed 0)", "attention": args.attention,
                                                     "rewrite": list(args.rewrite)}, "cells": [],
              **({"note": args.note} if args.note else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_stages = {c: torch_stage(c, preset.name) for c in ("encoder", "denoiser", "decoder")}
    config = GenerateConfig(h, w, args.frames, steps=2, seed=0)
    image = load_image(calibration.VALIDATION_IMAGE)
    references = {"sample": Pipeline(torch_stages).generate(image, config)}
    work = Path(args.work)
    for component in args.components:
        inputs = example_inputs(component, geo)
        for target in args.targets:
            exported, rows = {}, {}
            for precision in args.precisions:
                row = rows[precision] = {"target": target, "component": component, "precision": precision}
                result["cells"].append(row)
                exported[precision] = measure_cell(row, component, target, precision, args, work,
                                                   (torch_stages, references, config, image))
                write(args.json, result)
            time_cells(exported, inputs, args.runs, rows)
            write(args.json, result)
    result["machine"]["load_avg_end"] = list(os.getloadavg())
    write(args.json, result)
    return result


def write(path: str, result: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(path)


def _fmt(value, spec: str, scale: float = 1.0, unit: str = "") -> str:
    return "–" if value is None else f"{float(value) * scale:{spec}}{unit}"


def markdown(paths: list[str]) -> str:
    """The README table of one or more result files."""
    lines = ["| component | target | precision | size | x fp32 bytes | time per call (median) | speed-up vs fp32 | "
             "video PSNR min / mean (dB) | SSIM min | runtime memory |", "|---|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        for c in json.loads(Path(path).read_text())["cells"]:
            head = f"| {c['component']} | {c['target']} | {c['precision']} |"
            if c.get("error"):
                lines.append(f"{head} error: {c['error'][:80]} | | | | | | |")
                continue
            lines.append(f"{head} {_fmt(c.get('bytes'), '.2f', 1e-6, ' MB')} | {_fmt(c.get('compression'), '.2f')} | "
                         f"{_fmt(c.get('median_s'), '.1f', 1e3, ' ms')} | {_fmt(c.get('speedup_vs_fp32'), '.2f', 1, 'x')} | "
                         f"{_fmt(c.get('psnr_db_min'), '.1f')} / {_fmt(c.get('psnr_db_mean'), '.1f')} | "
                         f"{_fmt(c.get('ssim_min'), '.4f')} | {_fmt(c.get('runtime_memory_bytes'), '.1f', 1e-6, ' MB')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="mobilei2v-270m")
    ap.add_argument("--resolution", default=None, help="HxW (default: the preset's)")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--components", default=",".join(COMPONENTS))
    ap.add_argument("--precisions", default="fp32,fp16,w8a8,w8,w4")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--calibration", default=None, help="calibration images folder (default: the packaged set)")
    ap.add_argument("--attention", default="reference", help="the denoiser's attention plan, every cell alike")
    ap.add_argument("--rewrite", action="append", default=[], help="NAME=VALUE on top of the plan (repeatable)")
    ap.add_argument("--work", default="/tmp/mi2v-precision-bench")
    ap.add_argument("--note", default=None, help="what ran beside it, or anything the reader should know")
    ap.add_argument("--json", default="benchmarks/results/precision.json")
    ap.add_argument("--gates", action="store_true", help="export with the gates on (component, trajectory and the "
                    "3 dB margin that keeps costly units float): the cells the default `mi2v export` writes")
    ap.add_argument("--reuse", action="store_true",
                    help="measure a cell's export already in --work (same preset and size) instead of exporting again")
    ap.add_argument("--markdown", nargs="+", default=None, help="print the README table of result files and exit")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(args.markdown))
        return 0
    args.targets = args.targets.split(",")
    args.components = args.components.split(",")
    args.precisions = args.precisions.split(",")
    run(args)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
