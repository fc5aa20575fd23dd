"""A tiled VAE component for the Qualcomm HTP at full size: compiled with every node on the HTP, one tile run on the
HTP simulator, and the stitched whole frame checked on onnxruntime's CPU EP with the same graphs.

1. `mi2v export --target onnx --delegate qnn --precision fp16 --tile T` (CPU fallback off, so the export fails
   unless every node of every stage is on the HTP; `--no-verify`: a stitched 720p decode on the simulator would
   take hours). Recorded: each stage's HTP node and FLOP shares, compile time, context-binary size.
2. The stitched whole frame on onnxruntime's CPU EP, each stage's QNN *source* graph (the graph the HTP compiled)
   run window by window through the runtime layer's tile loop, against the PyTorch fp32 model: rel L2 and PSNR.
3. One window of the stage with the largest window on the HTP simulator (the context binary), against that PyTorch
   stage on the same window: PSNR (the fp16 gate is 40 dB).

    python benchmarks/qnn_tiled.py --component decoder --tile 64x320 --json benchmarks/results/qnn_720p_tiled_decoder.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from mi2v_export import contract, parity, runtimes, tiling
from mi2v_export.exporters import components as comp
from mi2v_export.manifest import read_manifest
from mi2v_export.models.stages import stages_of
from mi2v_export.runtimes.sessions import open_session
from mi2v_export.shapes import geometry, parse_resolution

MI2V = Path(sys.executable).with_name("mi2v")


def export(args, out: Path) -> dict:
    cmd = [str(MI2V), "-q", "export", "--target", "onnx", "--delegate", "qnn", "--precision", "fp16", "--soc",
           args.soc, "--preset", args.preset, "--resolution", args.resolution, "--frames", str(args.frames),
           "--component", args.component, "--tile", args.tile, "--no-verify", "--no-test-vectors", "--out", str(out),
           "--json"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=4 * 3600)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1], "wall_s": time.perf_counter() - t0}
    entry = json.loads(done.stdout)["artifacts"][0]
    entry["wall_s"] = time.perf_counter() - t0
    return entry


def metrics(got: np.ndarray, want: np.ndarray) -> dict:
    m = parity.compare([got], [want])
    return {"rel_l2": m.rel_l2, "psnr_db": m.psnr_db, "max_abs": m.max_abs}


def stitched_on_cpu(folder: Path, entry, x: np.ndarray) -> np.ndarray:
    """Every stage's QNN source graph on onnxruntime's CPU EP, through the runtime layer's TiledSession."""
    sources = {f.role.split(".")[0]: f.file for f in entry.extra_files if f.role.endswith("qnn_source")}
    stages = [dict(s, file=sources[f"s{k}"]) for k, s in enumerate(entry.tiling["stages"])]
    extra = [SimpleNamespace(role=f"tile_stage_{k}", file=s["file"]) for k, s in enumerate(stages) if k]
    view = SimpleNamespace(target="onnx", delegate=None, precision="fp32", file=stages[0]["file"],
                           inputs=entry.inputs, outputs=entry.outputs, tiling=dict(entry.tiling, stages=stages),
                           target_info={}, flags={}, extra_files=extra)
    view.inputs = [SimpleNamespace(name=t.name, shape=t.shape, dtype="float32") for t in entry.inputs]
    view.outputs = [SimpleNamespace(name=t.name, shape=t.shape, dtype="float32") for t in entry.outputs]
    with open_session(runtimes.get("onnxruntime"), folder / stages[0]["file"], view) as session:
        return session.run({entry.inputs[0].name: x})[entry.outputs[0].name]


def one_tile_on_simulator(folder: Path, entry, spec_module, x: torch.Tensor) -> dict:
    """The first window of the stage with the largest window, on the HTP simulator, against PyTorch."""
    stages = stages_of(spec_module, tuple(x.shape))
    sizes = [int(np.prod(s["input_window"])) for s in entry.tiling["stages"]]
    k = int(np.argmax(sizes))
    with torch.no_grad():
        for stage in stages[:k]:
            x = stage.module(x)
    plan = tiling.stage_from_record(entry.tiling["stages"][k]["plan"], tuple(x.shape[-2:]))
    rows, cols = plan.grid.rows, plan.grid.cols
    s = plan.scale_in
    window = x[..., rows.windows[0] * s:(rows.windows[0] + rows.window) * s,
               cols.windows[0] * s:(cols.windows[0] + cols.window) * s].contiguous()
    with torch.no_grad():
        want = stages[k].module(window).numpy()
    stage = entry.tiling["stages"][k]
    ctx = folder / stage["file"]
    t0 = time.perf_counter()
    with runtimes.get("qnn-htp-simulator").load(ctx, SimpleNamespace(target_info=entry.target_info, flags={},
                                                                      precision="fp16")) as session:
        got = session.run({session.input_names[0]: window.numpy()})[session.output_names[0]]
    return {"stage": k, "file": stage["file"], "window": list(window.shape), "seconds": time.perf_counter() - t0,
            **metrics(got.astype(np.float32), want)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--component", default="decoder", choices=["decoder", "encoder"])
    ap.add_argument("--preset", default="mobilei2v-270m")
    ap.add_argument("--resolution", default="720x1280")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--tile", default="64x320")
    ap.add_argument("--soc", default="SM8650")
    ap.add_argument("--work", default="/tmp/mi2v-qnn-tiled")
    ap.add_argument("--skip-simulator", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="the export in --work is already there: check it only")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    out = Path(args.work)
    result = {"benchmark": "qnn_tiled", "component": args.component, "preset": args.preset,
              "resolution": args.resolution, "frames": args.frames, "tile": args.tile, "soc": args.soc,
              "precision": "fp16", "machine": {"cpu_model": contract.cpu_model(), "cpu_flags": contract.cpu_flags(),
                                               "cores": os.cpu_count(), "load_average": list(os.getloadavg())}}
    entry = export(args, out) if not args.reuse else next(
        e for e in json.loads((out / "manifest.json").read_text())["components"] if e["component"] == args.component)
    result["export"] = {k: entry.get(k) for k in ("error", "wall_s", "target_info", "bytes")}
    if "error" in entry:
        Path(args.json).write_text(json.dumps(result, indent=2))
        raise SystemExit(entry["error"])
    result["stages"] = [{"file": s["file"], "input_window": s["input_window"], "grid": s["plan"]["grid"],
                         "target_info": s.get("target_info")} for s in entry["tiling"]["stages"]]
    manifest_entry = read_manifest(out).find(args.component)
    geo = geometry(*parse_resolution(args.resolution), args.frames)
    spec = comp.load_component(args.component, preset=args.preset, geo=geo, reference=True)
    x = next(iter(spec.inputs.values()))
    want = spec.reference[spec.output_names[0]].numpy()
    t0 = time.perf_counter()
    result["stitched_cpu"] = {**metrics(stitched_on_cpu(out, manifest_entry, x.numpy()), want),
                              "seconds": time.perf_counter() - t0, "runtime": "onnxruntime (CPU EP, QNN source graphs)"}
    if not args.skip_simulator:
        result["tile_on_simulator"] = one_tile_on_simulator(out, manifest_entry, spec.module.model, x)
    result["machine"]["load_average_after"] = list(os.getloadavg())
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("stitched_cpu", "tile_on_simulator") if k in result}, indent=1))


if __name__ == "__main__":
    main()
