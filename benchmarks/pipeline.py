"""The whole image-to-video run measured against the figure computed from per-component medians, on one folder.

In one run, back to back on this host: `mi2v bench` (each component alone: `--warmup` + `--iterations`, the
computed per-frame headline) and `mi2v bench --pipeline --clips N` (the whole run, clip after clip). The result
puts the measured per-frame latency (warm clips' p50) next to both computed figures, the one from the
per-component bench and the one from the stage medians inside the pipeline, and splits the difference into
loads, pre/post-processing, transfers and glue (mi2v_export/devices/pipeline_bench.py). CPU model, flags and load
average are recorded; both reports are kept beside the result.

    python benchmarks/pipeline.py --artifacts DIR --clips 3 --json benchmarks/results/pipeline_720p_onnx.json

The JSON: {"benchmark": "pipeline", "machine": {...}, "artifacts", "config": {clips, iterations, warmup, steps},
"components": {component: {file, precision, tiled, alone_p50_ms, in_pipeline_p50_ms, load_ms}},
"per_frame_ms": {"measured", "computed_alone", "computed_in_pipeline"}, "difference_ms": {...}, "cold": {...},
"warm": {...}, "peak_rss_kb", "quality": {...}, "reports": {"components", "pipeline"}}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from mi2v_export import contract
from mi2v_export.manifest import read_manifest

MI2V = Path(sys.executable).with_name("mi2v")


def run_bench(artifacts: Path, report: Path, *extra: str) -> dict:
    cmd = [str(MI2V), "bench", "--artifacts", str(artifacts), "--report", str(report), "--cooldown", "0", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(report.read_text())


def components(alone: dict, pipeline: dict, folder: Path) -> dict:
    """Per component: the artifact, its times alone and inside the run, and its memory as the manifest records
    it (measured at export in a fresh process; ExecuTorch's planned bytes beside it)."""
    manifest, rows = read_manifest(folder), {}
    for a, p in zip(alone["components"], pipeline["components"]):
        art = a.get("artifact") or {}
        memory = manifest.find(a["component"]).runtime_memory or {}
        rows[a["component"]] = {"file": art.get("file"), "precision": art.get("precision"),
                                "runtime_memory_bytes": memory.get("bytes"), "planned_bytes": memory.get("planned_bytes"),
                                "tiled": bool((art.get("tiling") or {}) or a["runs"][0].get("tiles")),
                                "alone_p50_ms": a["summary"]["latency_ms"].get("p50"),
                                "in_pipeline_p50_ms": p["summary"]["latency_ms"].get("p50"),
                                "alone_load_ms": a["summary"]["load_ms"].get("median"),
                                "in_pipeline_load_ms": p["summary"]["load_ms"].get("median")}
    return rows


def machine(load_before: list[float]) -> dict:
    return {"cpu_model": contract.cpu_model(), "cpu_flags": contract.cpu_flags(), "cores": os.cpu_count(),
            "load_avg_start": load_before, "load_avg_end": list(os.getloadavg())}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    load_before = list(os.getloadavg())
    stem = args.json.with_suffix("")
    common = ("--runtime", args.runtime, "--steps", str(args.steps))
    alone = run_bench(args.artifacts, Path(f"{stem}.components.json"), "--iterations", str(args.iterations),
                      "--warmup", str(args.warmup), *common)
    whole = run_bench(args.artifacts, Path(f"{stem}.pipeline.json"), "--pipeline", "--clips", str(args.clips),
                      *common)
    block = whole["pipeline"]
    head = block["headline"]
    result = {
        "benchmark": "pipeline", "machine": machine(load_before), "artifacts": whole["artifacts"],
        "config": {"clips": args.clips, "iterations": args.iterations, "warmup": args.warmup, "steps": args.steps,
                   "runtime": args.runtime},
        "components": components(alone, whole, args.artifacts),
        "per_frame_ms": {"measured": head["measured_per_frame_ms"],
                         "computed_alone": alone["per_frame_ms"][str(args.steps)],
                         "computed_in_pipeline": head["computed_per_frame_ms"]},
        "difference_ms": head["difference_ms"], "cold": block["cold"], "warm": block["warm"],
        "peak_rss_kb": block["peak_rss_kb"], "quality": block["quality"],
        "reports": {"components": Path(f"{stem}.components.json").name, "pipeline": Path(f"{stem}.pipeline.json").name},
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["per_frame_ms"], indent=2))


if __name__ == "__main__":
    main()
