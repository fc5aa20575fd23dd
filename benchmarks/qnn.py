"""QNN figures for one component at one size: node share on the HTP, context-binary size, compile time, and the
HTP simulator's output against PyTorch fp32 (PSNR), with a time limit on the simulator run.

    python benchmarks/qnn.py --component denoiser --resolution 720x1280 --frames 17 --precision fp16 \
        --json artifacts/qnn-denoiser-720p-fp16.json [--soc SM8650] [--sim-timeout 3600] [--out DIR [--reuse]]

`--reuse` runs only the simulator on the export already in `--out` (a 720p denoiser compiles for ~9 minutes).

The export runs without its own verification (`--no-verify`), so a simulator run that does not finish within
--sim-timeout is recorded as such (with the seconds it ran) instead of blocking the export. Heavy at 720p: wrap it
in `flock /tmp/mi2v-heavy.lock`. Seeded weights; the CPU model and load are recorded (the simulator's speed is no
phone figure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mi2v_export.qnn import DEFAULT_SOC

RUN_ON_SIMULATOR = """
import sys, numpy as np
from pathlib import Path
from mi2v_export import qnn, runtimes
feeds = dict(np.load(sys.argv[1]))
with runtimes.get(qnn.RUNTIME).load(Path(sys.argv[2]), soc=sys.argv[3], fp16=sys.argv[4] == 'fp16') as session:
    out = session.run(feeds)
np.save(sys.argv[5], out[session.output_names[0]])
"""


def cpu_record() -> dict:
    from mi2v_export.contract import cpu_flags, cpu_model

    return {"cpu": cpu_model(), "flags": cpu_flags(), "cores": os.cpu_count(), "loadavg_1_5_15": os.getloadavg()}


def simulate(ctx: Path, feeds: dict, soc: str, precision: str, timeout: float) -> dict:
    """The EPContext model on the simulator in a child process (killed after `timeout` seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "feeds.npz", **feeds)
        out = Path(tmp) / "out.npy"
        t0 = time.perf_counter()
        try:
            subprocess.run([sys.executable, "-c", RUN_ON_SIMULATOR, str(Path(tmp) / "feeds.npz"), str(ctx), soc,
                            precision, str(out)], check=True, timeout=timeout, capture_output=True)
        except subprocess.TimeoutExpired:
            return {"finished": False, "seconds": round(time.perf_counter() - t0, 1), "output": None}
        return {"finished": True, "seconds": round(time.perf_counter() - t0, 1), "output": np.load(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--component", required=True, choices=("encoder", "denoiser", "decoder"))
    ap.add_argument("--resolution", default=None)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--preset", default="mobilei2v-270m")
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--soc", default=DEFAULT_SOC)
    ap.add_argument("--sim-timeout", type=float, default=3600.0)
    ap.add_argument("--out", type=Path, default=None, help="artifact folder (default: a temporary one)")
    ap.add_argument("--reuse", action="store_true", help="simulate the export already in --out, do not export")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    if args.reuse and not (args.out and (args.out / "manifest.json").is_file()):
        ap.error("--reuse needs --out DIR holding an export (DIR/manifest.json)")

    from mi2v_export import parity
    from mi2v_export.exporters import components
    from mi2v_export.exporters.orchestrate import ExportRequest, run_export
    from mi2v_export.manifest import read_manifest

    out = args.out or Path(tempfile.mkdtemp(prefix="mi2v-qnn-"))
    t0 = time.perf_counter()
    if args.reuse:
        manifest = read_manifest(out)
    else:
        manifest = run_export(ExportRequest(target="onnx", delegate="qnn", out_dir=out, components=args.component,
                                            preset=args.preset, resolution=args.resolution, frames=args.frames,
                                            precision=args.precision, soc=args.soc, verify=False)).manifest
    entry = manifest.find(args.component, "onnx", "qnn")
    record = {"component": args.component, "preset": args.preset, "resolution": args.resolution,
              "frames": args.frames, "precision": args.precision, "soc": args.soc,
              "export_s": None if args.reuse else time.perf_counter() - t0,
              "target_info": entry.target_info, "files": {f.role: f.bytes for f in entry.extra_files},
              "host": cpu_record()}
    geo = manifest.resolution, manifest.frames
    from mi2v_export.shapes import geometry

    spec = components.load_component(args.component, preset=args.preset, geo=geometry(*geo[0], geo[1]))
    feeds = {k: v.numpy() for k, v in spec.inputs.items()}
    sim = simulate(out / entry.file, feeds, args.soc, args.precision, args.sim_timeout)
    ref = next(iter(spec.reference.values())).numpy()
    record["simulator"] = {"finished": sim["finished"], "seconds": sim["seconds"], "timeout_s": args.sim_timeout}
    if sim["finished"]:
        record["simulator"].update(psnr_db=parity.psnr_db(sim["output"], ref), rel_l2=parity.rel_l2(sim["output"], ref))
    record["host_after"] = cpu_record()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1, default=str))
    print(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main()
