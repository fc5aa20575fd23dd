"""Results of runs on (simulated) hardware and of release plans: the QNN HTP simulator (benchmarks/qnn.py,
benchmarks/qnn_decoder_blocks.py), `mi2v bench` reports (`mi2v.bench/1`) and release-plan runs
(benchmarks/release_plan.py). Same interface as gen_results_kinds: (data, anchor, images) → Markdown; `qnn_summary`
puts every QNN file of a page into one table.
"""

from __future__ import annotations

import gen_plots as plots
from gen_common import DASH, code, escape, figure, gib, kv, mb, notes, num, short, table


# --- benchmarks/qnn.py: one component at one size ----------------------------------------------------------------

def _qnn_row(data: dict, anchor: str) -> list:
    info, sim = data.get("target_info", {}), data.get("simulator", {})
    size = "x".join(str(v) for v in (data.get("resolution"), data.get("frames")) if v) or "preset default"
    return [f"[{escape(data.get('component', ''))}](#{anchor})", data.get("preset"), size, code(data.get("precision")),
            data.get("soc"), num(info.get("htp_node_share"), ".0%"), num(info.get("htp_flop_share"), ".0%"),
            mb(info.get("context_binary_bytes")), num(info.get("compile_s"), ".1f"), num(sim.get("psnr_db"), ".1f"),
            num(sim.get("rel_l2"), ".1e"), num(sim.get("seconds"), ".1f"), num(data.get("export_s"), ".0f")]


QNN_HEADER = ["component", "preset", "video", "precision", "SoC", "nodes on the HTP", "conv/matmul FLOPs on the HTP",
              "context binary", "compile (s)", "simulator PSNR vs PyTorch fp32 (dB)", "rel L2", "simulator run (s)",
              "export (s)"]


def qnn_summary(results: list, images: dict) -> str:
    """Every benchmarks/qnn.py file of the page in one table, with a figure of the simulator PSNR of the tiny ones."""
    rows = [_qnn_row(r.data, r.anchor) for r in results]
    out = ["## All QNN component runs {#qnn-components}\n",
           "One row per file below (each section there names its machine and load).\n", table(QNN_HEADER, rows)]
    tiny = [r.data for r in results if r.data.get("preset") == "tiny"]
    components = list(dict.fromkeys(d.get("component") for d in tiny))
    precisions = list(dict.fromkeys(d.get("precision") for d in tiny))
    if components and precisions:
        psnr = {(d.get("component"), d.get("precision")): (d.get("simulator") or {}).get("psnr_db") for d in tiny}
        png = plots.grouped_bars("tiny preset on the HTP simulator", components,
                                 {p: [psnr.get((c, p)) for c in components] for p in precisions},
                                 "PSNR vs PyTorch fp32 (dB)")
        out.append(figure(images, "qnn-tiny-psnr", png, "tiny preset: simulator PSNR per component and precision"))
    return "\n".join(out)


def qnn(data: dict, anchor: str, images: dict) -> str:
    info = data.get("target_info", {})
    source = info.get("source", {})
    out = [f"- **target**: {kv({k: info.get(k) for k in ('soc', 'product', 'soc_model', 'htp_arch', 'qnn_sdk_version', 'onnxruntime_qnn', 'onnxruntime')})}",
           f"- **source model**: {kv({k: v for k, v in source.items() if k != 'quantization'})}",
           f"- **files**: {kv({k: mb(v) for k, v in data.get('files', {}).items()})}",
           f"- **simulator**: {kv(data.get('simulator', {}))}"]
    if source.get("quantization"):
        out.append(f"- **quantization**: {kv(source['quantization'])}")
    if info.get("cpu_nodes"):
        out.append(f"- **nodes left on the CPU**: {kv(info['cpu_nodes'])}")
    return "\n".join(out) + "\n"


# --- benchmarks/qnn_decoder_blocks.py ------------------------------------------------------------------------

def _block_row(name: str, s: dict) -> list:
    sim = s.get("simulator") or {}
    how = f"{num(s.get('tiles'), '.1f')} row bands" if s.get("tiles") else ("whole" if sim else "twin (not run)")
    return [code(name), code(s.get("input_shape")), num(s.get("gflop"), ".1f"), how, num(sim.get("seconds"), ".0f"),
            num(sim.get("psnr_db"), ".1f"), mb(s.get("context_binary_bytes")), num(s.get("compile_s"), ".1f")]


def qnn_blocks(data: dict, anchor: str, images: dict) -> str:
    stages = data.get("stages", {})
    rows = [_block_row(name, s) for name, s in stages.items()]
    out = [f"- **run**: {kv({k: data.get(k) for k in ('component', 'model', 'preset', 'resolution', 'frames', 'soc', 'precision')})}",
           *notes(data), f"- **whole decode**: {kv(data.get('whole_decode', {}))}", "",
           table(["block", "input (B, C, T, H, W)", "GFLOP", "on the HTP as", "simulator (s)",
                  "PSNR vs PyTorch fp32 (dB)", "context binary", "compile (s)"], rows)]
    ran = {n: s for n, s in stages.items() if s.get("simulator")}
    png = plots.bar_panels(anchor, list(ran), [
        ("simulator seconds", [s["simulator"].get("seconds") for s in ran.values()], None),
        ("PSNR vs PyTorch fp32 (dB)", [s["simulator"].get("psnr_db") for s in ran.values()], None)])
    out.append(figure(images, anchor, png, f"{anchor}: simulator time and PSNR per block"))
    return "\n".join(out)


# --- `mi2v bench` reports (schema mi2v.bench/1) ----------------------------------------------------------------

def _component_row(c: dict) -> list:
    art, rt, summary = c.get("artifact") or {}, c.get("runtime") or {}, c.get("summary") or {}
    lat, check = summary.get("latency_ms") or {}, c.get("output_check") or {}
    where = "/".join(str(v) for v in (art.get("target"), art.get("delegate"), art.get("precision")) if v)
    return [c.get("component"), c.get("status"), code(art.get("file", DASH)), escape(where, True),
            escape(f"{rt.get('name', '')} ({rt.get('runner', '')})", True), num(lat.get("n"), "d"),
            num(lat.get("p50"), ".2f"), num(lat.get("p90"), ".2f"), num(lat.get("min"), ".2f"),
            num(lat.get("max"), ".2f"), num((summary.get("load_ms") or {}).get("median"), ".1f"),
            num(summary.get("peak_rss_kb"), ".0f", 1024, " MiB"), escape(str(check.get("passed", DASH)), True)]


def bench_report(data: dict, anchor: str, images: dict) -> str:
    device = data.get("device", {})
    facts = {k: device.get(k) for k in ("model", "soc_manufacturer", "soc_model", "abi", "os", "os_version",
                                        "simulated_device", "serial", "transport")}
    components = data.get("components", [])
    out = [f"- **device**: {kv(facts)}", f"- **protocol**: {kv(data.get('protocol', {}))}",
           f"- **status**: {escape(str(data.get('status')))}; created {escape(str(data.get('created_utc')))}",
           f"- **per-frame latency (ms) by steps**: {kv(data.get('per_frame_ms', {}))}; headline "
           f"{kv(data.get('headline', {}))}"]
    out += [f"- **not controlled**: {escape(u)}" for u in (data.get("conditions") or {}).get("uncontrolled", [])]
    out += [f"- **warning**: {escape(w)}" for w in data.get("warnings", [])]
    out += ["", table(["component", "status", "artifact", "target/delegate/precision", "runtime (runner)", "n",
                       "p50 (ms)", "p90 (ms)", "min (ms)", "max (ms)", "load (ms)", "peak RSS", "output check"],
                      [_component_row(c) for c in components])]
    out += _pipeline_lines(data.get("pipeline"))
    out += [line for c in components for line in _profile_lines(c)]
    samples = [[v for run in c.get("runs", []) for v in run.get("samples_ms", [])] for c in components]
    if any(samples):
        png = plots.boxes(anchor, [c.get("component", "") for c in components], samples, "iteration time (ms)")
        out.append(figure(images, anchor, png, f"{anchor}: timed iterations per component"))
    return "\n".join(out)


def _profile_lines(component: dict, top: int = 10) -> list[str]:
    """`mi2v bench --profile`: a component's top operators by time, from the runtime's own profiler."""
    profile = component.get("profile")
    if not profile or not profile.get("ops"):
        return []
    rows = [[code(o.get("op")), escape(str(o.get("where"))), "yes" if o.get("delegated") else "no", o.get("calls"),
             num(o.get("total_ms"), ".1f"),  # already per run, as `mi2v bench --profile` prints it
             num(100 * (o.get("share") or 0), ".1f", unit=" %")] for o in profile["ops"][:top]]
    return ["", f"Top operators of the {escape(str(component.get('component')))}, {escape(str(profile.get('tool')))}"
            f", {profile.get('runs')} run(s), {num(profile.get('total_ms'), '.0f')} ms of operators per run:", "",
            table(["op", "where", "delegated", "calls", "ms / run", "share"], rows)]


def _pipeline_lines(block: dict | None) -> list[str]:
    """`mi2v bench --pipeline`: the measured and computed per-frame figures, and one row per clip."""
    if not block:
        return []
    head = block.get("headline") or {}
    rows = [[c.get("clip"), "cold" if c.get("cold") else "warm", num(sum((c.get("load_ms") or {}).values()), ".0f"),
             *(num((c.get("stage_ms") or {}).get(k), ".0f") for k in ("encoder", "denoiser", "decoder")),
             num(c.get("glue_ms"), ".0f"), num(c.get("total_ms"), ".0f"), num(c.get("per_frame_ms"), ".1f"),
             num(c.get("psnr_db_min"), ".1f")] for c in block.get("clips", [])]
    return ["", f"- **whole runs**: measured {num(head.get('measured_per_frame_ms'), '.2f')} ms per frame, computed "
            f"from the stage medians {num(head.get('computed_per_frame_ms'), '.2f')} ms; difference per clip "
            f"{kv(head.get('difference_ms') or {})}; partial: {block.get('partial')}", "",
            table(["clip", "", "load (ms)", "encode (ms)", "denoise (ms)", "decode (ms)", "glue (ms)", "total (ms)",
                   "per frame (ms)", "PSNR (dB)"], rows)]


# --- benchmarks/release_plan.py ------------------------------------------------------------------------------

def _run_rows(runs: list) -> tuple[list, list]:
    summary, jobs = [], []
    for run in runs:
        label = f"--jobs {run.get('jobs')}" + (f" #{run['repeat']}" if "repeat" in run else "")
        summary.append([code(label), num(run.get("wall_s"), ".1f"), run.get("rc"), gib(run.get("plan_peak_rss_bytes")),
                        escape(short(run.get("loadavg_after", DASH)), True)])
        jobs += [[code(label), code(j.get("name")), j.get("status"), num(j.get("wall_s"), ".1f"),
                  gib(j.get("peak_rss_bytes")), escape(j.get("reason") or "", True)] for j in run.get("job_results", [])]
    return summary, jobs


def release_plan(data: dict, anchor: str, images: dict) -> str:
    runs = data.get("runs", [])
    summary, jobs = _run_rows(runs)
    entries = (data.get("memory_table") or {}).get("entries", {})
    memory = [[code(k), gib(v.get("peak_rss_bytes")), gib(v.get("last_rss_bytes")), v.get("samples")]
              for k, v in entries.items()]
    out = [f"- **plan**: {code(data.get('plan'))}", *notes(data), "",
           table(["run", "wall (s)", "exit", "plan peak memory (all processes, sampled)", "load after"], summary),
           table(["run", "job", "status", "wall (s)", "peak RSS of the export", "reason"], jobs),
           "Memory table learned by the run (`component/target/delegate/precision/preset/video`):\n",
           table(["key", "largest peak", "last peak", "samples"], memory)]
    if data.get("summary"):
        rows = [[code(f"--jobs {k}"), num(v.get("median_wall_s"), ".1f"), v.get("runs"),
                 gib(v.get("max_plan_peak_rss_bytes"))] for k, v in data["summary"].items()]
        out.append(table(["jobs", "median wall (s)", "runs", "largest plan peak"], rows))
    if len(runs) > 1:
        png = plots.bar_panels(anchor, [f"--jobs {r.get('jobs')}" for r in runs],
                               [("wall (s)", [r.get("wall_s") for r in runs], None)])
        out.append(figure(images, anchor, png, f"{anchor}: wall time per --jobs"))
    return "\n".join(out)
