"""Tiled against untiled VAE components, side by side: measured peak memory, latency and the stitched output's error.

For one target and component at one resolution: export the whole-frame model, the tiled model a `--budget` picks
(`mi2v export --memory-budget`) and any `--tile` sizes, all fp32 with exact halos. Then, in one run, each form
runs in fresh processes taking turns (A, B, C, A, B, C, …), each process loading the artifact through the runtime
layer (mi2v_export/runtimes/sessions.py, the path `mi2v verify`, `bench` and `generate` use) and running it
`--per-process` times on one seeded input; reported: median latency over all runs, the ratio to the untiled form,
each process's peak above a baseline process that only imports the runtime, the manifest's runtime_memory, and
the stitched output's rel L2 against the untiled output. CPU model, flags and load average are recorded.

    python benchmarks/tiled_vae.py --target onnx --component decoder --budget 512 \\
        --json benchmarks/results/tiled_720p_onnx_decoder.json

A long clip, chunked in time (`--time-chunk F`: whole frames chunked in time, or `--time-tile HxW` tiles; `--budget
0`: no budget form):

    python benchmarks/tiled_vae.py --frames 121 --budget 0 --tile 256x320 --time-chunk 32 \\
        --json benchmarks/results/tiled_720p_onnx_decoder_65f_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mi2v_export import contract
from mi2v_export.runtimes import memory

MI2V = Path(sys.executable).with_name("mi2v")
PEAK_METHOD = "the process's peak above the baseline; each call's output dropped before the next call"

_CHILD = """
import json, sys, time
import numpy as np
from pathlib import Path
from mi2v_export import runtimes
from mi2v_export.manifest import read_manifest
from mi2v_export.runtimes.sessions import open_session
folder, component, runs, save = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
if component == "-":  # the baseline: the runtime imported, no model
    runtimes.get(sys.argv[5]).warm_import() if hasattr(runtimes.get(sys.argv[5]), "warm_import") else None
    print(json.dumps({})); sys.exit(0)
manifest = read_manifest(folder)
entry = manifest.find(component)
runtime = runtimes.runnable(entry)
t0 = time.perf_counter()
session = open_session(runtime, manifest.path_of(entry), entry)
load_s = time.perf_counter() - t0
spec = session.inputs[0]
x = np.random.default_rng(0).standard_normal(spec.static_shape()).astype(np.float32)
if component == "encoder":
    x = np.clip(x * 0.5, -1, 1)
prepared = session.prepare({spec.name: x})
times, raw = [], None
for _ in range(runs):  # the last call's output is dropped first: a caller holds one output, not two
    raw = None
    t0 = time.perf_counter(); raw = session.execute(prepared); times.append(time.perf_counter() - t0)
if save != "-":
    np.save(save, session.collect(raw)[session.outputs[0].name])
print(json.dumps({"load_s": load_s, "run_s": times, "runtime": runtime.name}))
"""


def export(folder: Path, args, extra: list[str]) -> dict:
    if (args.reuse or not extra and args.reuse_untiled) and (folder / "manifest.json").exists():  # an earlier run's
        return next(e for e in json.loads((folder / "manifest.json").read_text())["components"]
                    if e["component"] == args.component)
    cmd = [str(MI2V), "-q", "export", "--target", args.target, "--preset", args.preset, "--component",
           args.component, "--decoder", args.decoder, "--resolution", args.resolution, "--frames", str(args.frames),
           "--out", str(folder), "--json", *extra]
    if args.delegate:
        cmd += ["--delegate", args.delegate]
    if args.precision:
        cmd += ["--precision", args.precision]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    if done.returncode:
        raise ExportFailed((done.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(done.stdout)["artifacts"][0]


class ExportFailed(Exception):
    pass


def export_budget(folder: Path, args) -> tuple[dict, dict]:
    """The budget's export; where it is refused (no tile fits, or the assembled component does not), each refusal
    is recorded and the smallest feasible budget it names is exported instead (at most three tries)."""
    budget, refusals = args.budget, []
    for _ in range(3):
        try:
            entry = export(folder, args, ["--memory-budget", f"{budget:g}"])
        except ExportFailed as exc:
            text = str(exc)
            if "--memory-budget " not in text.split(":", 2)[-1]:
                raise SystemExit(f"export failed: {text}") from None
            refusals.append(text)
            budget = float(text.rsplit("--memory-budget ", 1)[1].split()[0])
            shutil.rmtree(folder, ignore_errors=True)
            continue
        record = {"budget_mib": args.budget}
        if refusals:
            record.update(refused=refusals[0], refusals=refusals, smallest_feasible_mib=budget)
        return entry, record
    raise SystemExit(f"export failed: {refusals[-1]}")


def child(folder: Path, component: str, runs: int, save: str = "-", runtime: str = "") -> dict:
    got = memory.child_peak([sys.executable, "-c", _CHILD, str(folder), component, str(runs), save, runtime],
                            timeout=7200)
    if got.returncode:
        raise SystemExit(f"{folder}: {got.stderr.strip().splitlines()[-1:]}")
    out = json.loads(got.stdout.strip().splitlines()[-1])
    out["peak_bytes"] = got.peak_bytes
    return out


def form_record(name: str, entry: dict) -> dict:
    t = entry.get("tiling") or {}
    return {"form": name, "file": entry["file"], "bytes": entry["bytes"],
            "tile": t.get("tile"), "stage_tiles": t.get("stage_tiles"), "residency": t.get("residency"),
            "tiles_per_call": t.get("tiles"), "stages": len(t.get("stages") or []) or None,
            "time_chunk": t.get("time_chunk"), "time_chunks": t.get("time_chunks"),
            "streamed_stages": sum("stream" in st for st in t.get("stages") or []) or None,
            "grid": t.get("grid"), "exact": t.get("exact"), "probes": t.get("probes"),
            "export_wall_s": entry["export"]["wall_s"], "export_rel_l2": entry["parity"].get("rel_l2"),
            "runtime_memory": entry.get("runtime_memory")}


def export_forms(args, work: Path) -> tuple[dict, dict, dict | None]:
    """(each form's manifest entry, its folder, the budget record or None): untiled, the budget's, each --tile,
    each --stream-rows and each --time-chunk form."""
    forms, folders = {"untiled": export(work / "untiled", args, [])}, {"untiled": work / "untiled"}
    budget = None
    if args.budget:
        forms[f"budget {args.budget:g} MiB"], budget = export_budget(work / "budget", args)
        folders[f"budget {args.budget:g} MiB"] = work / "budget"
    extra = {f"tile {t}": (f"tile-{t}", ["--tile", t]) for t in args.tile}
    extra.update({f"streamed {r} rows": (f"stream-{r}", ["--stream-rows", r]) for r in args.stream_rows})
    spatial = ["--tile", args.time_tile] if args.time_tile else []
    extra.update({(f"tile {args.time_tile} + " if args.time_tile else "") + f"time {f} frames":
                  (f"time-{f}" + (f"-{args.time_tile}" if args.time_tile else ""), [*spatial, "--time-chunk", f])
                  for f in args.time_chunk})
    for name, (sub, flags) in extra.items():
        forms[name] = export(work / sub, args, flags)
        folders[name] = work / sub
    return forms, folders, budget


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="onnx")
    ap.add_argument("--delegate")
    ap.add_argument("--component", default="decoder", choices=["decoder", "encoder"])
    ap.add_argument("--decoder", default="turbo-vaed")
    ap.add_argument("--preset", default="mobilei2v-270m")
    ap.add_argument("--resolution", default="720x1280")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--budget", type=float, default=512)
    ap.add_argument("--precision", help="fp32 (default) or fp16")
    ap.add_argument("--tile", action="append", default=[], help="also a fixed tile HxW (repeatable)")
    ap.add_argument("--stream-rows", action="append", default=[], help="also every stage streamed in bands of "
                    "this many rows (repeatable)")
    ap.add_argument("--time-chunk", action="append", default=[], help="also whole frames (or --time-tile) chunked "
                    "in time by this many video frames (repeatable)")
    ap.add_argument("--time-tile", help="the tile HxW of the --time-chunk forms (default: whole frames)")
    ap.add_argument("--note", help="what the results file should say beside its figures (what ran beside, how a "
                    "form was made)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-process", type=int, default=2)
    ap.add_argument("--work", help="folder for the artifacts (default: a temporary one)")
    ap.add_argument("--reuse-untiled", action="store_true", help="keep an untiled export already in --work")
    ap.add_argument("--reuse", action="store_true", help="keep every export already in --work (time the runtime "
                    "again without exporting; a budget's earlier refusals are not known then)")
    ap.add_argument("--json", required=True)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="mi2v-tiled-"))
    forms, folders, budget = export_forms(args, work)
    records = {name: form_record(name, e) for name, e in forms.items()}
    outputs = {}
    for name, folder in folders.items():  # one accuracy run each, then the timed rounds
        save = str(work / f"{name.replace(' ', '_')}.npy")
        first = child(folder, args.component, 1, save)
        outputs[name] = save
        records[name].update(runtime=first["runtime"], runs_s=[], process_peaks=[])
    baseline = child(folders["untiled"], "-", 0, "-", records["untiled"]["runtime"])["peak_bytes"]
    for _ in range(args.rounds):
        for name, folder in folders.items():
            got = child(folder, args.component, args.per_process)
            records[name]["runs_s"] += got["run_s"]
            records[name]["process_peaks"].append(got["peak_bytes"] - baseline)
    ref = np.load(outputs["untiled"]).astype(np.float64)
    base_median = statistics.median(records["untiled"]["runs_s"])
    for name, rec in records.items():
        y = np.load(outputs[name]).astype(np.float64)
        rec["rel_l2_vs_untiled"] = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
        rec["median_s"] = statistics.median(rec["runs_s"])
        rec["time_ratio_vs_untiled"] = rec["median_s"] / base_median
        rec["process_peak_bytes_median"] = int(statistics.median(rec["process_peaks"]))
    result = {"benchmark": "tiled_vae", "target": args.target, "delegate": args.delegate,
              "component": args.component, "decoder": args.decoder if args.component == "decoder" else None,
              "preset": args.preset, "resolution": args.resolution, "frames": args.frames, "budget": budget,
              "precision": args.precision or "fp32",
              "rounds": args.rounds, "per_process": args.per_process, "baseline_bytes": baseline,
              "reused_exports": bool(args.reuse), **({"note": args.note} if args.note else {}),
              "process_peak_method": PEAK_METHOD,
              "machine": {"cpu_model": contract.cpu_model(), "cpu_flags": contract.cpu_flags(),
                          "cores": os.cpu_count(), "load_average": list(os.getloadavg())},
              "forms": list(records.values())}
    Path(args.json).write_text(json.dumps(result, indent=2))
    for rec in records.values():
        mem = (rec["runtime_memory"] or {}).get("bytes")
        print(f"{rec['form']:>20}: {rec['median_s']:.2f} s ({rec['time_ratio_vs_untiled']:.2f}x), "
              f"process peak {rec['process_peak_bytes_median'] / 2**20:.0f} MiB, runtime_memory "
              f"{(mem or 0) / 2**20:.0f} MiB, rel L2 {rec['rel_l2_vs_untiled']:.1e}, tile {rec['tile']}")


if __name__ == "__main__":
    main()
