"""How each kind of results file is shown: one function per kind, from the fields its writer records.

The writers document their JSON in their docstrings (in benchmarks/: precision.py, qnn.py, qnn_decoder_blocks.py,
release_plan.py, w4_sensitive_units.py, xnnpack_fp16_gemm.py, attention.py, vae_receptive_field.py; `mi2v bench` writes the
`mi2v.bench/1` report, `mi2v export --json` the manifest entries); the device and plan kinds are in
gen_results_devices. A renderer gets the parsed file, its anchor and a dict to put its figures in
(`img/<anchor>.png` → PNG bytes, relative to the page) and returns Markdown. A value a file lacks shows as a dash.
"""

from __future__ import annotations

import gen_plots as plots
from gen_common import DASH, code, escape, figure, gib, kv, mb, notes, num, table


# --- benchmarks/precision.py: {"machine", "config", "cells": [...]} -------------------------------------------------

def precision(data: dict, anchor: str, images: dict) -> str:
    cells = data.get("cells", [])
    rows = [[c.get("component"), c.get("target"), code(c.get("precision")), mb(c.get("bytes")),
             num(c.get("compression"), ".2f"), num(c.get("median_s"), ".1f", 1e-3, " ms"),
             num(c.get("speedup_vs_fp32"), ".2f", unit="x"),
             f"{num(c.get('psnr_db_min'))} / {num(c.get('psnr_db_mean'))}", num(c.get("ssim_min"), ".4f"),
             mb(c.get("runtime_memory_bytes")), escape(c.get("error") or "", True)] for c in cells]
    header = ["component", "target", "precision", "size", "x fp32 bytes", "time per call (median)",
              "speed-up vs fp32", "video PSNR min / mean (dB)", "SSIM min", "runtime memory", "error"]
    if any("kept_float_units" in c for c in cells):  # benchmarks/precision.py --gates: the export's own margin
        header.append("kept float by the 3 dB margin")
        for row, c in zip(rows, cells):
            m = c.get("margin") or {}
            row.append(f"{len(c.get('kept_float_units') or [])} unit(s): {num(m.get('before_db'))} → "
                       f"{num(m.get('after_db'))} dB, x{num(m.get('bytes_ratio'), '.2f')} bytes" if m else DASH)
    out = [f"- **config**: {kv(data.get('config', {}))}", *notes(data), "", table(header, rows)]
    if len(cells) > 1:
        labels = [f"{c.get('component')} {c.get('precision')}" for c in cells]
        png = plots.bar_panels(anchor, labels, [
            ("x fp32 bytes", [c.get("compression") for c in cells], None),
            ("speed-up vs fp32", [c.get("speedup_vs_fp32") for c in cells], 1.0),
            ("video PSNR, worst frame (dB)", [c.get("psnr_db_min") for c in cells], None)])
        out.append(figure(images, anchor, png, f"{anchor}: size, speed-up and worst-frame PSNR per precision"))
    return "\n".join(out)


# --- a mixed-precision export with its recipe (mi2v quantize analyze + mi2v export --recipe) -----------------------

def recipe(data: dict, anchor: str, images: dict) -> str:
    rec = data["recipe"]
    analysis = rec.get("analysis", {})
    units = rec.get("units", {})
    rows = [[code(u), code(units.get(u, "")), num((analysis.get(u) or {}).get("psnr_db_min"), ".2f")]
            for u in dict.fromkeys([*units, *analysis])]
    traj, parity = data.get("trajectory", {}), data.get("parity", {})
    summary = [[code(data.get("precision")), mb(data.get("bytes")), num(data.get("compression"), ".3f"),
                mb(data.get("runtime_memory_bytes")), num(parity.get("psnr_db"), ".2f"),
                f"{num(traj.get('psnr_db_min'), '.2f')} / {num(traj.get('psnr_db'), '.2f')}",
                num(traj.get("ssim_min"), ".4f"), num(traj.get("gate_db"), ".0f")]]
    out = [*notes(data), f"- **recipe**: component {escape(str(rec.get('component')))}, precision "
           f"{escape(str(rec.get('precision')))}, unit PSNR floor {num(rec.get('unit_psnr_db'))} dB; "
           f"simulated worst frame {kv(rec.get('simulated_psnr_db_min', {}))}",
           f"- **quantization**: {kv(data.get('quantization', {}))}", "",
           table(["precision", "size", "x fp32 bytes", "runtime memory", "component PSNR (dB)",
                  "trajectory PSNR min / mean (dB)", "SSIM min", "trajectory gate (dB)"], summary),
           table(["unit", "recipe", "worst-frame PSNR with this unit quantized alone (dB)"], rows)]
    png = plots.bar_panels(anchor, list(analysis), [("worst-frame PSNR (dB)", [
        (analysis[u] or {}).get("psnr_db_min") for u in analysis], rec.get("unit_psnr_db"))])
    out.append(figure(images, anchor, png, f"{anchor}: PSNR per unit quantized alone"))
    return "\n".join(out)


# --- benchmarks/w4_sensitive_units.py -------------------------------------------------------------------------

def w4_units(data: dict, anchor: str, images: dict) -> str:
    results = data.get("results", {})
    rows = [[code(k), num(v.get("psnr_db_min"), ".2f"), num(v.get("psnr_db"), ".2f")] for k, v in results.items()]
    out = [f"- **config**: {kv(data.get('config', {}))}; wall {num(data.get('wall_s'))} s",
           f"- **sensitive units** ({num(data.get('sensitive_units_share_of_weights'), '.1%')} of the "
           f"weights): {', '.join(code(u) for u in data.get('sensitive_units', []))}", "",
           table(["variant", "video PSNR worst frame (dB)", "mean (dB)"], rows)]
    png = plots.bar_panels(anchor, list(results), [("worst-frame PSNR (dB)",
                                                    [v.get("psnr_db_min") for v in results.values()], None)])
    out.append(figure(images, anchor, png, f"{anchor}: worst-frame PSNR per variant"))
    return "\n".join(out)


# --- benchmarks/xnnpack_fp16_gemm.py --------------------------------------------------------------------------

def fp16_gemm(data: dict, anchor: str, images: dict) -> str:
    rows = data.get("rows", [])
    keys = [k for k in (rows[0] if rows else {}) if k != "K"]
    out = [table(["K", *(escape(k, True) for k in keys)], [[r.get("K"), *(num(r.get(k)) for k in keys)]
                                                          for r in rows])]
    png = plots.lines(anchor, [r.get("K") for r in rows], {k: [r.get(k) for r in rows] for k in keys},
                      "reduction length K", "PSNR vs fp32 accumulation (dB)", logx=True)
    out.append(figure(images, anchor, png, f"{anchor}: fp16 Linear PSNR against K"))
    return "\n".join(out)


# --- one or more manifest entries of `mi2v export` (Core ML / Vulkan at 720p, PyTorch stand-in numerics) -------

def _entry_row(e: dict) -> list:
    parity, traj, export = e.get("parity", {}), e.get("trajectory") or {}, e.get("export", {})
    runs = parity.get("verified_on") or []
    where = sorted({r.get("runtime", "") for r in runs}) if isinstance(runs, list) else [str(runs)]
    return [e.get("component"), e.get("target"), e.get("delegate") or DASH, code(e.get("precision")),
            mb(e.get("bytes")), num(e.get("compression"), ".3f"), num(parity.get("psnr_db"), ".2f"),
            escape(", ".join(where), True), f"{num(traj.get('psnr_db_min'))} / {num(traj.get('psnr_db'))}",
            num(traj.get("ssim_min"), ".4f"), mb(e.get("runtime_memory_bytes")), num(export.get("wall_s"), ".0f"),
            gib(export.get("peak_rss_bytes"))]


def _delegation(e: dict) -> list[str]:
    d = e.get("delegation") or {}
    out = []
    if d:
        out.append(f"- **delegation** ({e.get('component')}): {num(d.get('ops_delegated'), 'd')} ops delegated, "
                   f"{num(d.get('ops_portable'), 'd')} portable ({kv(d.get('portable_ops', {}))}); "
                   f"{num(d.get('flops_share_delegated'), '.1%')} of the counted FLOPs delegated")
    quant = (e.get("target_info") or {}).get("quantization")
    if quant:
        out.append(f"- **quantization** ({e.get('component')}): {kv(quant)}")
    ops = (e.get("target_info") or {}).get("vulkan_ops") or {}
    kernels = {k: v for k, v in ops.items() if k.startswith("et_vk.linear")}
    if kernels:
        out.append(f"- **Vulkan linear kernels**: {kv(kernels)}")
    return out


def export(data: dict, anchor: str, images: dict) -> str:
    entries = data.get("entries", [])
    out = [*notes(data), f"- **process peak RSS**: {gib(data.get('process_peak_rss_bytes'))}"]
    for e in entries:
        out += _delegation(e)
    out += ["", table(["component", "target", "delegate", "precision", "size", "x fp32 bytes",
                       "component PSNR (dB)", "verified on", "trajectory PSNR min / mean (dB)", "SSIM min",
                       "runtime memory", "export wall (s)", "export peak RSS"], [_entry_row(e) for e in entries])]
    return "\n".join(out)


# --- benchmarks/attention.py: {"machine", "gemm_gflops", "cases": [...]} --------------------------------------

def attention(data: dict, anchor: str, images: dict) -> str:
    cases = data.get("cases", [])
    rows = [[code(c.get("name")), c.get("runtime"), code(c.get("shape")), num(c.get("reference_ms"), ".2f"),
             num(c.get("rewritten_ms"), ".2f"), num(c.get("speedup"), ".2f", unit="x"), num(c.get("gflops"))]
            for c in cases]
    out = [f"- **fp32 GEMM ceiling measured in the same run**: {num(data.get('gemm_gflops'))} GFLOP/s", "",
           table(["case", "runtime", "shape", "reference (ms)", "rewritten (ms)", "speed-up", "GFLOP/s"], rows)]
    if cases:
        png = plots.bar_panels(anchor, [f"{c.get('name')} {c.get('runtime')}" for c in cases],
                               [("speed-up, rewritten vs reference", [c.get("speedup") for c in cases], 1.0)])
        out.append(figure(images, anchor, png, f"{anchor}: speed-up per case"))
    return "\n".join(out)


# --- benchmarks/vae_receptive_field.py: {"preset", "resolution", "machine", "torch", "parts": [...]} -------------

def _pair(value: object) -> str:
    return " x ".join(map(str, value)) if isinstance(value, list) else DASH


def receptive_field(data: dict, anchor: str, images: dict) -> str:
    parts = data.get("parts", [])
    rows = [[code(p.get("part")), num(p.get("receptive_field_latent_px"), "d"), _pair(p.get("frame_latent_px")),
             num(p.get("smallest_exact_window_latent_px"), "d"), _pair(p.get("exact_tiling_can_split")),
             num(p.get("probe_s"), ".0f"), escape(p.get("note") or "", True)] for p in parts]
    out = [f"- **preset** {code(data.get('preset'))} at {code(data.get('resolution'))}, torch "
           f"{escape(str(data.get('torch')))}", *notes(data), "",
           table(["part", "receptive field (latent px each side)", "frame (latent px)",
                  "smallest exact window (latent px)", "exact tiles can split (rows, columns)", "probe (s)", "note"],
                 rows)]
    chunks = [[code(r.get("part")), num(r.get("frames"), "d"), num(st.get("stage"), "d"),
               num(st.get("input_frames"), "d"), num(st.get("output_frames"), "d"),
               num(st.get("temporal_field_frames"), "d"), num(st.get("smallest_exact_chunk_frames"), "d"),
               escape(str(st.get("chunking_can_split"))), num(st.get("output_mib"), ".1f")]
              for r in data.get("time_chunking", []) for st in r.get("stages", [])]
    if chunks:
        out += ["", "In time, per stage as the tiled export cuts it (one output frame reads this many of the stage's "
                "input frames each side):", "",
                table(["part", "video frames", "stage", "input frames", "output frames",
                       "temporal field (input frames each side)", "smallest exact chunk (input frames)",
                       "chunking can split", "stage output (MiB, fp32)"], chunks)]
    curves = {p.get("part"): p.get("gradient_mass_beyond") or [] for p in parts}
    longest = max((len(c) for c in curves.values()), default=0)
    if longest:
        png = plots.lines(anchor, list(range(longest)), {k: v + [None] * (longest - len(v)) for k, v in curves.items()},
                          "distance k from the output pixel (latent px)", "share of |gradient| beyond k", logy=True)
        out.append(figure(images, anchor, png, f"{anchor}: gradient mass beyond each distance, per part"))
    return "\n".join(out)


def other(data: object, anchor: str, images: dict) -> str:
    """A file of a kind the generator does not know: its top-level keys, so it is at least listed."""
    keys = list(data) if isinstance(data, dict) else [type(data).__name__]
    return "Top-level keys: " + ", ".join(code(k) for k in keys) + "\n"
