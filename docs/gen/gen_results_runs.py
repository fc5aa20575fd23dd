"""How the whole-run, int8-limit and runtime-comparison results are shown: benchmarks/pipeline.py (the measured
per-frame latency next to the computed ones), benchmarks/int8_ceiling.py (fp32 and int8 GEMM ceilings at the
denoiser's shapes and the w8a8 step's share of them) and benchmarks/litert.py (one component on three runtimes side
by side), from the fields their writers record (their docstrings describe the JSON). A value a file lacks shows as
a dash.
"""

from __future__ import annotations

import gen_plots as plots
from gen_common import code, escape, figure, kv, mb, notes, num, table


def pipeline(data: dict, anchor: str, images: dict) -> str:
    per_frame, diff = data.get("per_frame_ms") or {}, data.get("difference_ms") or {}
    rows = [[c, code(r.get("file")), code(r.get("precision")), "yes" if r.get("tiled") else "no",
             num(r.get("alone_p50_ms"), ".0f"), num(r.get("in_pipeline_p50_ms"), ".0f"),
             num(r.get("alone_load_ms"), ".0f"), num(r.get("in_pipeline_load_ms"), ".0f"),
             mb(r.get("runtime_memory_bytes")), mb(r.get("planned_bytes"))]
            for c, r in (data.get("components") or {}).items()]
    cold, warm, quality = data.get("cold") or {}, data.get("warm") or {}, data.get("quality") or {}
    total = (warm.get("total_ms") or {})
    out = [f"- **config**: {kv(data.get('config', {}))}",
           *([f"- **ran beside**: {escape(data['beside'], True)}"] if data.get("beside") else []),
           f"- **per frame (ms)**: measured (warm p50) **{num(per_frame.get('measured'), '.1f')}**; computed from "
           f"each component alone {num(per_frame.get('computed_alone'), '.1f')}; computed from the stages inside "
           f"the run {num(per_frame.get('computed_in_pipeline'), '.1f')}",
           f"- **difference per clip (ms)**: {kv({k: round(v) for k, v in diff.items()})}",
           f"- **clips**: cold {num(cold.get('total_ms'), '.0f', unit=' ms')} (stages opened in "
           f"{num(cold.get('prepare_ms'), '.0f', unit=' ms')}); warm p50 {num(total.get('p50'), '.0f', unit=' ms')}"
           f", p95 {num(total.get('p95'), '.0f', unit=' ms')} over {warm.get('clips')} clip(s)",
           f"- **peak resident memory of the run**: {mb((data.get('peak_rss_kb') or 0) * 1024 or None)}",
           f"- **video vs PyTorch fp32**: worst frame {num(quality.get('psnr_db_min'), '.1f', unit=' dB')} (gate "
           f"{num(quality.get('gate_db'), 'g', unit=' dB')})" if quality.get("reference") else
           f"- **video**: {escape(str(quality.get('reason') or 'not compared'))}", "",
           table(["component", "artifact", "precision", "tiled", "alone p50 (ms)", "in the run p50 (ms)",
                  "alone load (ms)", "in the run load (ms)", "memory (measured at export)", "planned"], rows)]
    labels = ["measured", "computed (alone)", "computed (in the run)"]
    values = [per_frame.get("measured"), per_frame.get("computed_alone"), per_frame.get("computed_in_pipeline")]
    if all(isinstance(v, (int, float)) for v in values):
        png = plots.bar_panels(anchor, labels, [("per-frame latency (ms)", values, None)])
        out.append(figure(images, anchor, png, f"{anchor}: measured and computed per-frame latency"))
    return "\n".join(out)


def int8_ceiling(data: dict, anchor: str, images: dict) -> str:
    host, ceil = data.get("host") or {}, data.get("ceilings") or {}
    flags = ", ".join(f for f, on in (host.get("flags") or {}).items() if on)
    forms = data.get("forms") or {}
    shapes = sorted({row["shape"] for f in forms.values() for row in f.get("shapes", [])})
    rows = [[code(name), f.get("precision"), *(num(_rate(f, s), ".1f") for s in shapes),
             escape(f.get("error") or "", True)] for name, f in forms.items()]
    steps = [[escape(s.get("source")), code(s.get("precision")), num(s["all_flops"].get("step_ms"), ".0f"),
              num(s["all_flops"].get("effective_gops"), ".1f"),
              num(100 * (s["all_flops"].get("share_of_int8_ceiling") or 0), ".1f", unit=" %"),
              num(100 * (s["gemm_flops_only"].get("share_of_int8_ceiling") or 0), ".1f", unit=" %")]
             for s in data.get("step") or []]
    out = [f"- **host**: {escape(str(host.get('cpu')))}, {host.get('threads')} thread(s); int8 / fp32 flags: "
           f"{escape(flags)}; load {escape(str(host.get('load_avg_before')))} → "
           f"{escape(str(host.get('load_avg_after')))}", *notes(data),
           f"- **preset** {code(data.get('preset'))}, geometry {code(data.get('geometry'))}: one step "
           f"{num(data.get('step_gop'), '.0f')} GOP, of which GEMMs {num(data.get('gemm_gop'), '.0f')} GOP "
           f"(timed shapes: {num(100 * (data.get('timed_share') or 0), '.1f')} % of them)",
           f"- **ceilings (GOP/s, FLOP-weighted)**: fp32 {num((ceil.get('fp32') or {}).get('overall_gops'), '.1f')}, "
           f"int8 {num((ceil.get('int8') or {}).get('overall_gops'), '.1f')}; int8 / fp32 "
           f"{num(data.get('int8_over_fp32'), '.2f', unit='x')}", "",
           table(["form", "precision", *(f"{s} GOP/s" for s in shapes), "error"], rows)]
    if steps:
        out += ["", table(["step time from", "precision", "step (ms)", "effective GOP/s", "share of int8 ceiling",
                           "GEMM FLOPs only"], steps)]
    return "\n".join(out)


def _rate(form: dict, shape: str) -> float | None:
    return next((row.get("gops") for row in form.get("shapes", []) if row["shape"] == shape), None)


def litert(data: dict, anchor: str, images: dict) -> str:
    cells = data.get("cells") or []
    rows = [[c.get("component"), code(c.get("precision")), c.get("target"), code(c.get("runtime")), mb(c.get("bytes")),
             num(c.get("median_s"), ".2f", unit=" s"), num(c.get("ratio_vs_onnxruntime"), ".2f", unit="x"),
             f"{num(c.get('psnr_db_min'), '.1f')} / {num(c.get('psnr_db_mean'), '.1f')}", num(c.get("ssim_min"), ".4f"),
             mb(c.get("runtime_memory_bytes")), mb(c.get("planned_memory_bytes")),
             num(c.get("export_trajectory_db"), ".1f"), len(c.get("kept_float_units") or []) if c.get("margin") else "",
             escape(c.get("error") or "", True)] for c in cells]
    out = [f"- **config**: {kv(data.get('config', {}))}", f"- **beside it**: {escape(str(data.get('beside')))}", "",
           table(["component", "precision", "target", "runtime", "size", "median per call", "x onnxruntime",
                  "video PSNR min / mean (dB)", "SSIM min", "measured memory", "planned memory",
                  "export trajectory (dB)", "units kept float", "error"], rows)]
    groups = list(dict.fromkeys(f"{c.get('component')} {c.get('precision')}" for c in cells))
    targets = list(dict.fromkeys(c.get("target") for c in cells))
    series = {t: [next((c.get("ratio_vs_onnxruntime") for c in cells if c.get("target") == t
                        and f"{c.get('component')} {c.get('precision')}" == g), None) for g in groups] for t in targets}
    if groups and any(isinstance(v, (int, float)) for vs in series.values() for v in vs):
        png = plots.grouped_bars(anchor, groups, series, "time per call / onnxruntime's")
        out.append(figure(images, anchor, png, f"{anchor}: time per call relative to onnxruntime"))
    return "\n".join(out)


def layer_norm_forms(data: dict, anchor: str, images: dict) -> str:
    host = data.get("host") or {}
    rows = [[code(name), num(f.get("median_ms"), ".3f"), num(f.get("max_abs_error"), ".1e"),
             escape(", ".join(f.get("outside_delegate") or []) or "-", True)]
            for name, f in (data.get("forms") or {}).items()]
    return "\n".join([f"- **host**: {escape(str(host.get('cpu')))}, {host.get('cores')} core(s); load "
                      f"{escape(str(host.get('load_avg_before')))} → {escape(str(host.get('load_avg_after')))}",
                      f"- **preset** {code(data.get('preset'))}: {data.get('tokens')} tokens x {data.get('hidden')} "
                      f"channels, {data.get('reps')} interleaved runs after {data.get('warmup')} warm-up", "",
                      table(["form", "median (ms)", "max abs error", "outside the delegate"], rows)])
