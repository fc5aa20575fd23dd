"""onnxruntime's memory settings on one exported artifact: peak resident memory and latency, side by side.

Each setting runs in its own fresh process (mi2v_export/runtimes/memory.py `child_peak`): load the model, run it
`--repeats` times on inputs of ones, report per-run latency; the peak is that process's own, minus a process that
only imports onnxruntime (the baseline). Settings: the default session, the CPU arena off, the memory-pattern
planner off, both off, weight prepacking off, and both off with large buffers mapped apart (`map_large_buffers`,
mi2v_export/runtimes/memory.py: what a tiled or low-memory session runs with). With `--rounds N` every setting
runs in N fresh processes, the settings taking turns; the figures are medians, and each process's memory is kept
(`runtime_memory_runs`: a glibc heap's reuse differs between processes). One run compares them all; the CPU model,
flags and load are recorded.

    python benchmarks/ort_memory_settings.py --model artifacts/onnx-720p/decoder.onnx --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from mi2v_export import contract
from mi2v_export.runtimes import memory

SETTINGS = {
    "default": {},
    "arena_off": {"enable_cpu_mem_arena": False},
    "mem_pattern_off": {"enable_mem_pattern": False},
    "arena_and_pattern_off": {"enable_cpu_mem_arena": False, "enable_mem_pattern": False},
    "prepacking_off": {"config": {"session.disable_prepacking": "1"}},
    "arena_and_pattern_off_mapped": {"enable_cpu_mem_arena": False, "enable_mem_pattern": False,
                                     "map_large_buffers": True},
}

_CHILD = """
import json, sys, time
import onnxruntime as ort
from mi2v_export import runtimes
from mi2v_export.runtimes import memory
model, setting, repeats = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
if model == "-":
    print(json.dumps({"baseline": True})); sys.exit(0)
so = ort.SessionOptions()
so.log_severity_level = 3
for key, value in setting.items():
    if key == "map_large_buffers":
        assert memory.map_large_buffers()
    elif key == "config":
        for k, v in value.items():
            so.add_session_config_entry(k, v)
    else:
        setattr(so, key, value)
t0 = time.perf_counter()
session = runtimes.get("onnxruntime").load(model, session_options=so, providers=["CPUExecutionProvider"])
load_s = time.perf_counter() - t0
prepared = session.prepare(session.ones())
times = []
for _ in range(repeats):
    t0 = time.perf_counter(); session.execute(prepared); times.append(time.perf_counter() - t0)
print(json.dumps({"load_s": load_s, "run_s": times}))
"""


def run_setting(model: str, setting: dict, repeats: int) -> dict:
    child = memory.child_peak([sys.executable, "-c", _CHILD, model, json.dumps(setting), str(repeats)],
                              timeout=3600)
    if child.returncode:
        return {"error": (child.stderr.strip().splitlines() or ["failed"])[-1]}
    out = json.loads(child.stdout.strip().splitlines()[-1])
    out["peak_bytes"] = child.peak_bytes
    return out


def run_rounds(model: str, rounds: int, repeats: int, baseline: int) -> dict[str, dict]:
    """Every setting in `rounds` fresh processes, taking turns; medians over the processes."""
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for _ in range(rounds):
        for name, setting in SETTINGS.items():
            runs[name].append(run_setting(model, setting, repeats))
    rows = {}
    for name, got in runs.items():
        ok = [g for g in got if "error" not in g]
        row = {"setting": SETTINGS[name]}
        if not ok:
            rows[name] = {**row, "error": got[0]["error"]}
            continue
        memories = [g["peak_bytes"] - baseline for g in ok]
        times = [t for g in ok for t in g["run_s"]]
        rows[name] = {**row, "load_s": statistics.median(g["load_s"] for g in ok), "run_s": times,
                      "peak_bytes": int(statistics.median(g["peak_bytes"] for g in ok)),
                      "runtime_memory_bytes": int(statistics.median(memories)), "runtime_memory_runs": memories,
                      "median_run_s": statistics.median(times)}
        print(name, {k: v for k, v in rows[name].items() if k not in ("run_s", "setting")}, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="an .onnx file (e.g. a 720p decoder from mi2v export)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1, help="fresh processes per setting, the settings taking turns")
    ap.add_argument("--label", default="", help="what the model is, for the results page")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    load_before = list(os.getloadavg())
    baseline = run_setting("-", {}, 0)["peak_bytes"]
    rows = run_rounds(args.model, args.rounds, args.repeats, baseline)
    default = rows["default"].get("median_run_s")
    for row in rows.values():
        if default and row.get("median_run_s"):
            row["time_vs_default"] = row["median_run_s"] / default
    out = {"benchmark": "ort_memory_settings", "model": Path(args.model).name, "label": args.label,
           "model_bytes": Path(args.model).stat().st_size, "repeats": args.repeats, "rounds": args.rounds,
           "baseline_bytes": baseline,
           "machine": {"cpu_model": contract.cpu_model(), "cpu_flags": contract.cpu_flags(),
                       "load_average": load_before, "load_average_after": list(os.getloadavg())},
           "settings": rows}
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
