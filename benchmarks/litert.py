"""LiteRT next to onnxruntime and ExecuTorch XNNPACK: the same component and precision on the three runtimes, timed
side by side in one run, with sizes, video quality and measured runtime memory (issue 26).

    python benchmarks/litert.py --preset tiny --json /tmp/l.json                       # smoke run (minutes)
    flock /tmp/mi2v-heavy.lock python benchmarks/litert.py --work /work/bench/lt720 --reuse \\
        --json benchmarks/results/litert_720p.json                                     # 720x1280x17 (an hour)

Cells: (component, precision) from `--cells` (default: the 270M denoiser fp32 and w8a8, the Turbo-VAED fp32),
each exported for `--targets` with `mi2v export` (the library call; with the gates on, as a user gets it: the
trajectory gate and, for w8a8, the gate margin; `--reuse` takes an export already in --work, named
`<target>_<component>_<precision>`). Per cell: one warm-up per target, then `--runs` rounds, each running every
target once (so the three see the same machine load); medians and the ratio to onnxruntime. Video quality: the
2-step trajectory on the packaged validation image with that artifact (PyTorch fp32 for the other components)
against the all-PyTorch fp32 run (benchmarks/precision.py `quality_of`). Memory: the peak of a fresh process that
loads the artifact and runs it once, minus the same process without it (mi2v_export/runtimes/measure.py), for every
target alike; ExecuTorch's planned bytes beside it.

The JSON is {"benchmark": "litert", "machine": {cpu, flags, load_avg_start/end}, "config", "beside": what else ran, "cells": [{"component",
"precision", "target", "runtime", "bytes", "median_s", "runs_s", "ratio_vs_onnxruntime", "psnr_db_min",
"psnr_db_mean", "ssim_min", "runtime_memory_bytes", "planned_memory_bytes", "export_trajectory_db",
"kept_float_units", "error"}]}; rewritten after every cell.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import traceback
import warnings
from pathlib import Path

from precision import export_cell, gate_fields, machine_info, quality_of, stage_of, time_side_by_side, write

from mi2v_export import runtimes
from mi2v_export.runtimes import measure

TARGETS = ("onnx", "executorch", "litert")
CELLS = ("denoiser:fp32", "denoiser:w8a8", "decoder:fp32")


def measure_target(row: dict, component: str, target: str, precision: str, args, work: Path, quality_args: tuple):
    """Export (or reuse) one target's artifact and fill size, memory, gate and video quality into `row`."""
    try:
        manifest, entry = export_cell(target, component, precision, args, work)
        runtime = runtimes.runnable(entry)
        row.update(bytes=entry.bytes, runtime=runtime.name if runtime else None, **gate_fields(entry),
                   planned_memory_bytes=(entry.runtime_memory or {}).get("planned_bytes"))
        row["runtime_memory_bytes"] = measure.measure(runtime.name, manifest.path_of(entry))["bytes"]
        stage = stage_of(manifest, entry)
        row.update(quality_of(component, stage, *quality_args))
        del stage
        gc.collect()
        return manifest, entry
    except Exception as exc:  # noqa: BLE001 - a target that fails is a row with its error
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        traceback.print_exc()
        return None


def time_targets(exported: dict, inputs: dict, runs: int, rows: dict[str, dict]) -> None:
    """Time the targets of one cell side by side; medians and the ratio to onnxruntime's median."""
    stages = {t: stage_of(*me) for t, me in exported.items() if me is not None}
    times = time_side_by_side(stages, inputs, runs)
    base = statistics.median(times["onnx"]) if times.get("onnx") else None
    for t, ts in times.items():
        med = statistics.median(ts)
        rows[t].update(median_s=med, runs_s=ts, ratio_vs_onnxruntime=med / base if base else None)
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
    args.resolution, args.calibration = f"{h}x{w}", None
    geo = geometry(h, w, args.frames)
    result = {"benchmark": "litert", "machine": machine_info(), "beside": args.beside, "cells": [],
              "config": {"preset": preset.name, "resolution": [h, w], "frames": args.frames, "runs": args.runs,
                         "gates": args.gates, "weights": "seeded (seed 0)", "threads": "each runtime's default"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_stages = {c: torch_stage(c, preset.name) for c in ("encoder", "denoiser", "decoder")}
    config = GenerateConfig(h, w, args.frames, steps=2, seed=0)
    image = load_image(calibration.VALIDATION_IMAGE)
    quality_args = (torch_stages, {"sample": Pipeline(torch_stages).generate(image, config)}, config, image)
    work = Path(args.work)
    for cell in args.cells:
        component, precision = cell.split(":")
        exported, rows = {}, {}
        for target in args.targets:
            row = rows[target] = {"component": component, "precision": precision, "target": target}
            result["cells"].append(row)
            exported[target] = measure_target(row, component, target, precision, args, work, quality_args)
            write(args.json, result)
        time_targets(exported, example_inputs(component, geo), args.runs, rows)
        write(args.json, result)
    result["machine"]["load_avg_end"] = list(os.getloadavg())
    write(args.json, result)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="mobilei2v-270m")
    ap.add_argument("--resolution", default=None, help="HxW (default: the preset's)")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--cells", default=",".join(CELLS), help="component:precision, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-gates", dest="gates", action="store_false", help="export without the gates")
    ap.add_argument("--work", default="/tmp/mi2v-litert-bench")
    ap.add_argument("--reuse", action="store_true", help="measure exports already in --work")
    ap.add_argument("--beside", default="nothing else ran", help="what else ran on the machine (recorded)")
    ap.add_argument("--json", default="benchmarks/results/litert.json")
    args = ap.parse_args(argv)
    args.targets, args.cells = args.targets.split(","), args.cells.split(",")
    run(args)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
