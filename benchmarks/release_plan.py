"""Wall time and whole-plan peak memory of `mi2v plan --executor local` with --jobs 1 vs --jobs 2.

    python benchmarks/release_plan.py plans/bench-720p.toml --json out.json [--jobs 1,2] [--repeat N] [--table TABLE]

Each run builds every job of the plan from scratch into its own folder (`--out` under a temporary folder) with
the memory table at TABLE (default: a fresh file in the work folder, so the --jobs 1 run starts from the defaults and
the later runs use what it learned). A sampler reads /proc every 0.5 s and sums the RSS of the plan process and all
its descendants: `plan_peak_rss_bytes` is what the machine had to hold at once. Writes {"machine": {cpu, cores,
mem_total, loadavg before/after}, "runs": [{"jobs", "repeat", "wall_s", "rc", "plan_peak_rss_bytes",
"job_results"}], "summary": {jobs: {"median_wall_s", "max_plan_peak_rss_bytes", "runs"}}, "memory_table": {...}} and
prints it. With --repeat N the --jobs values alternate N times (each run from scratch) and the summary has medians.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    """`pid` and all its descendants (children of every thread: the plan starts exports from worker threads)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for children in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(k) for k in children.read_text().split()]
            except OSError:
                pass
    return out


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _sample(pid: int, stop: threading.Event, peak: list[int]) -> None:
    while not stop.wait(0.5):
        peak[0] = max(peak[0], sum(_rss(p) for p in _children(pid)))


def run_once(plan: Path, jobs: int, work: Path, table: Path, repeat: int = 0) -> dict:
    out = work / (f"jobs-{jobs}" + (f"-r{repeat}" if repeat else ""))
    env = dict(os.environ, MI2V_MEMORY_TABLE=str(table))
    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "mi2v_export.cli", "plan", str(plan), "--jobs", str(jobs), "--out", str(out)], env=env)
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=_sample, args=(child.pid, stop, peak), daemon=True)
    sampler.start()
    rc = child.wait()
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    results = json.loads((out / "plan-run.json").read_text())["jobs"] if (out / "plan-run.json").exists() else []
    return {"jobs": jobs, "repeat": repeat, "wall_s": round(wall, 1), "rc": rc, "plan_peak_rss_bytes": peak[0],
            "job_results": [{k: r.get(k) for k in ("name", "status", "wall_s", "peak_rss_bytes", "reason")}
                            for r in results]}


def summary(runs: list[dict]) -> dict:
    import statistics

    out = {}
    for n in sorted({r["jobs"] for r in runs}):
        mine = [r for r in runs if r["jobs"] == n and r["rc"] == 0]
        if mine:
            out[str(n)] = {"median_wall_s": statistics.median(r["wall_s"] for r in mine), "runs": len(mine),
                           "max_plan_peak_rss_bytes": max(r["plan_peak_rss_bytes"] for r in mine)}
    return out


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in lscpu.splitlines() if ln.startswith("Flags")), [])
    mem = next(int(ln.split()[1]) * 1024 for ln in Path("/proc/meminfo").read_text().splitlines()
               if ln.startswith("MemTotal"))
    return {"cpu": model, "cores": os.cpu_count(), "avx512": any(f.startswith("avx512") for f in flags),
            "avx2": "avx2" in flags, "mem_total_bytes": mem, "loadavg_before": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plan", type=Path)
    ap.add_argument("--jobs", default="1,2")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--table", type=Path)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="mi2v-release-bench-"))
    table = args.table or work / "memory-table.json"
    report = {"plan": str(args.plan), "machine": machine(), "runs": []}
    for r in range(args.repeat):
        for n in [int(v) for v in args.jobs.split(",")]:
            report["runs"].append(run_once(args.plan.absolute(), n, work, table, r if args.repeat > 1 else 0))
            report["runs"][-1]["loadavg_after"] = os.getloadavg()
            if args.json:
                args.json.write_text(json.dumps(report, indent=2))
    report["summary"] = summary(report["runs"])
    report["memory_table"] = json.loads(table.read_text()) if table.exists() else None
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
