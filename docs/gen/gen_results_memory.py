"""How the memory results are shown: the tiled-VAE comparison (benchmarks/tiled_vae.py) and onnxruntime's memory
settings (benchmarks/ort_memory_settings.py), from the fields their writers record (their docstrings describe
the JSON). A value a file lacks shows as a dash.
"""

from __future__ import annotations

import gen_plots as plots
from gen_common import DASH, code, escape, figure, mb, notes, num, table


# files written before benchmarks/tiled_vae.py recorded its method: each process held its previous output through the
# next call, so their process peaks include one output more than a caller that drops it (runtime memory does not)
_OLD_PEAK = ("the process's peak above the baseline, holding the previous call's output through the next call (one "
             "output more than the measured runtime memory)")


def _memory(form: dict) -> int | None:
    return (form.get("runtime_memory") or {}).get("bytes")


def _tiles(form: dict) -> str:
    """The tile of each stage (a budget tiles each stage apart), or the one tile of files written before that; the
    last `streamed_stages` stages run band by band together (mi2v_export/streaming.py)."""
    per = form.get("stage_tiles") or ([form["tile"]] if form.get("tile") else [])
    streamed = form.get("streamed_stages") or 0
    text = " / ".join("×".join(map(str, t)) for t in per[:len(per) - streamed]) or ""
    if streamed:
        text += f"{' / ' if text else ''}{streamed} steps streamed in {'×'.join(map(str, per[-1]))} bands"
    text = text or "whole frame"
    if form.get("time_chunk"):  # stages chunked in time (mi2v_export/chunking.py): chunks per stage, 1 = whole clip
        text += (f"; in time, {form['time_chunk']}-frame chunks "
                 f"({' / '.join(map(str, form.get('time_chunks') or []))} per stage)")
    return text


def tiled_vae(data: dict, anchor: str, images: dict) -> str:
    forms = data.get("forms", [])
    rows = [[escape(f.get("form")), code(f.get("file")), _tiles(f),
             num(f.get("tiles_per_call"), "d"), num(f.get("median_s"), ".2f", unit=" s"),
             num(f.get("time_ratio_vs_untiled"), ".2f", unit="x"), mb(_memory(f)),
             mb((f.get("runtime_memory") or {}).get("planned_bytes")), mb(f.get("process_peak_bytes_median")),
             num(f.get("rel_l2_vs_untiled"), ".1e"), num(f.get("export_rel_l2"), ".1e")] for f in forms]
    budget = data.get("budget") or {}
    lines = [f"- **{code(data.get('component'))}** ({escape(str(data.get('decoder') or 'LTX encoder'))}) on "
             f"{code(data.get('target'))}{'/' + data['delegate'] if data.get('delegate') else ''}, "
             f"{code(data.get('precision', 'fp32'))}, {code(data.get('resolution'))} × {data.get('frames')} frames, "
             f"{data.get('rounds')} rounds × {data.get('per_process')} runs per fresh process, forms taking turns",
             *([f"- **ran beside**: {escape(data['beside'], True)}"] if data.get("beside") else []),
             *([f"- **note**: {escape(data['note'], True)}"] if data.get("note") else []),
             *(["- **exports reused** from an earlier run in the same folder (their export figures are that run's)"]
               if data.get("reused_exports") else []),
             f"- **process peak over runs**: {escape(data.get('process_peak_method') or _OLD_PEAK, True)}",
             *([f"- **budget** {num(budget.get('budget_mib'), 'g')} MiB"
                + (f": refused ({escape(budget['refused'], True)}); the table's budget form is the smallest "
                   f"feasible, {num(budget.get('smallest_feasible_mib'), 'g')} MiB" if budget.get("refused") else "")]
               if budget else []), "",
             table(["form", "file", "tile (px; per stage)", "tile runs per call", "time per call (median)", "vs untiled",
                    "runtime memory (measured)", "planned", "process peak over runs", "rel L2 vs untiled",
                    "rel L2 vs PyTorch (export)"], rows)]
    if len(forms) > 1:
        labels = [f.get("form") for f in forms]
        png = plots.bar_panels(anchor, labels, [
            ("measured runtime memory (MiB)", [(_memory(f) or 0) / 2 ** 20 for f in forms], None),
            ("time vs untiled", [f.get("time_ratio_vs_untiled") for f in forms], 1.0)])
        lines.append(figure(images, anchor, png, f"{anchor}: memory and time per form"))
    return "\n".join(lines)


def ort_memory(data: dict, anchor: str, images: dict) -> str:
    settings = data.get("settings", {})
    rows = [[code(name), escape(str(s.get("setting") or "defaults")), mb(s.get("runtime_memory_bytes")),
             _spread(s.get("runtime_memory_runs")), num(s.get("median_run_s"), ".2f", unit=" s"),
             num(s.get("time_vs_default"), ".2f", unit="x"), escape(s.get("error") or "", True)]
            for name, s in settings.items()]
    rounds = data.get("rounds") or 1
    return "\n".join([f"- **model** {code(data.get('model'))} {escape(data.get('label') or '')}, "
                      f"{mb(data.get('model_bytes'))}, {data.get('repeats')} runs per process, {rounds} fresh "
                      f"process{'es' if rounds > 1 else ''} per setting" + (", settings taking turns" if rounds > 1
                                                                              else ""), "",
                      table(["setting", "session options", "memory above baseline (median)",
                             "memory over processes (min-max)", "median run", "vs default", "error"], rows)])


def _spread(values: list | None) -> str:
    return f"{mb(min(values))} – {mb(max(values))}" if values and len(values) > 1 else "–"


def qnn_tiled(data: dict, anchor: str, images: dict) -> str:
    """benchmarks/qnn_tiled.py: per stage its window and HTP shares, the stitched CPU check, one simulated tile."""
    rows = [[code(s.get("file")), code(s.get("input_window")), code(s.get("grid")),
             num((s.get("target_info") or {}).get("htp_node_share"), ".3f"),
             num((s.get("target_info") or {}).get("htp_flop_share"), ".3f"),
             num((s.get("target_info") or {}).get("compile_s"), ".1f", unit=" s")] for s in data.get("stages", [])]
    cpu, sim = data.get("stitched_cpu") or {}, data.get("tile_on_simulator") or {}
    error = (data.get("export") or {}).get("error")
    lines = [f"- **{code(data.get('component'))}** {code(data.get('resolution'))} × {data.get('frames')} frames, "
             f"tile {code(data.get('tile'))}, {code(data.get('precision'))} on the HTP of {code(data.get('soc'))}"
             + (f"; export failed: {escape(error, True)}" if error else ""), "",
             table(["stage", "window (input)", "grid", "HTP node share", "HTP FLOP share", "compile"], rows), "",
             f"- **stitched whole frame, CPU EP, the same graphs**: rel L2 {num(cpu.get('rel_l2'), '.1e')}, PSNR "
             f"{num(cpu.get('psnr_db'), '.1f')} dB against PyTorch fp32",
             f"- **one tile on the HTP simulator** (stage {sim.get('stage', '—')}, window {code(sim.get('window'))}): "
             f"PSNR {num(sim.get('psnr_db'), '.1f')} dB, {num(sim.get('seconds'), '.0f', unit=' s')} (simulated, "
             "no phone speed)"]
    return "\n".join(lines)


def tile_cost(data: dict, anchor: str, images: dict) -> str:
    """benchmarks/tile_cost.py: each stage's share of the MACs, each candidate tile's recompute and the
    component's estimated time ratio, the probes' measured memory beside them, and measured ratios against the
    estimate."""
    stages = data.get("stages", [])
    target = data.get("target_ratio")
    lines = [f"- **{code(data.get('component'))}** ({code(data.get('part'))}), {code(data.get('resolution'))} × "
             f"{data.get('frames')} frames; {escape(data.get('method') or '')}", "",
             table(["stage", "steps", "input → output", "MACs", "share", "halo (units, px each side)"],
                   [[s["stage"], escape(", ".join(s["steps"]), True),
                     f"{'×'.join(map(str, s['input_shape'][-2:]))} → {'×'.join(map(str, s['output_shape'][-2:]))}",
                     num(s["gmac"], ".1f", unit=" G"), num(s["share"], ".1%"),
                     f"{s['field_units']} ({s['field_units'] * max(u or 0 for u in s['unit_px'])} px)"]
                    for s in stages]), ""]
    if stages:
        top = max(stages, key=lambda s: s["share"])["stage"]
        probes = {}
        for p in data.get("probes", []):
            if p.get("stage") == top and p.get("bytes") is not None:
                probes.setdefault(tuple(p["tile"]), []).append(f"{mb(p['bytes'])} ({code(p.get('source'))})")
        rows = [[f"{c['tile'][0]}×{c['tile'][1]}", c["windows"], f"{c['window_out'][0]}×{c['window_out'][1]}",
                 num(c["work"], ".2f", unit="x"), num(c["estimate"], ".2f", unit="x")
                 + (" ✓" if target and c["estimate"] <= target else ""),
                 "; ".join(probes.get(tuple(c["tile"]), [])) or DASH]
                for c in data.get("candidates", []) if c["stage"] == top]
        lines += [f"Stage {top}, the one with most of the MACs, tiled alone (✓: within {num(target, 'g')}x); the "
                  "memory is what a budget search measured for that stage and tile, where it did, with the file it "
                  "is from (its runtime, host and settings are that file's):", "",
                  table(["tile (video px)", "windows", "window (output px)", "stage work", "component estimate",
                         "measured memory (probe)"], rows), ""]
    measured = data.get("measured", [])
    if measured:
        lines += ["Tiled runs measured, against the estimate for their stages' tiles:", "",
                  table(["file", "form", "runtime", "tile per stage", "measured", "estimated", "runtime memory"],
                        [[code(m["source"]), escape(str(m.get("form")), True), escape(str(m.get("runtime")), True),
                          " / ".join("×".join(map(str, t)) for t in m.get("stage_tiles") or []),
                          num(m.get("measured"), ".2f", unit="x"),
                          num(m.get("estimate"), ".2f", unit="x") if m.get("estimate") is not None
                          else escape(m.get("why_not") or DASH, True), mb(m.get("runtime_memory_bytes"))]
                         for m in measured])]
    return "\n".join(lines)


def stateful_stream(data: dict, anchor: str, images: dict) -> str:
    """benchmarks/stateful_stream.py: the Turbo-VAED's last stage as one model streaming row bands with carried
    state, against the stage run whole, in fresh processes."""
    forms = data.get("forms") or {}
    rows = [[escape(name), num(f.get("median_s"), ".2f", unit=" s"), num(f.get("time_ratio_vs_whole"), ".2f", unit="x"),
             mb(f.get("peak_bytes_median"))] for name, f in forms.items()]
    return "\n".join([
        f"- **runtime** {code(data.get('runtime', 'onnxruntime'))}; "
        f"the last stage, {code(data.get('stage_input'))} → {code(data.get('stage_output'))}, bands of "
        f"{data.get('band_px')} video rows; {data.get('states')} state tensors, output lag {data.get('lag_rows')} rows",
        f"- {data.get('rounds')} rounds × {data.get('per_process')} runs per fresh process, forms taking turns",
        f"- **memory**: {escape(data.get('peak_method') or '', True)}",
        f"- stitched output against the whole stage's: rel L2 {num(data.get('rel_l2_vs_whole'), '.1e')}",
        *notes(data), "",
        table(["form", "time per call (median)", "vs whole stage", "peak above baseline"], rows)])


def mib(value: object) -> str:
    """Memory in MiB, the unit of `--memory-budget`."""
    return num(value, ".0f", 2 ** 20, " MiB")


def _clip(data: dict) -> str:
    return f"{data.get('resolution')} × {data.get('frames')}"


def tiling_summary(tiled: list, pipelines: list) -> str:
    """The tiling page's first table: per tiled-VAE results file (component, target, clip) each tiled form's
    measured and planned memory after against the untiled form's before, with its time and error; then each whole
    run's peak (benchmarks/pipeline.py). `tiled` and `pipelines` are the page's results (name, anchor, data)."""
    rows = []
    for r in tiled:
        forms = r.data.get("forms") or []
        before = next((f for f in forms if f.get("form") == "untiled"), {})
        part = f"{r.data.get('component')} ({r.data.get('decoder') or 'LTX encoder'})"
        target = code(r.data.get("target")) + (f"/{r.data['delegate']}" if r.data.get("delegate") else "")
        refused = (r.data.get("budget") or {}).get("smallest_feasible_mib")
        for f in forms:
            if f is before:
                continue
            label = f.get("form") or ""
            if refused and label.startswith("budget"):  # the budget was refused; the file exported the one it named
                label += f" (refused: exported at {refused:g} MiB)"
            rows.append([f"[{code(r.path.name)}](#{r.anchor})", escape(part), target, _clip(r.data), escape(label), mib(_memory(before)), mib(_memory(f)),
                         mib((before.get("runtime_memory") or {}).get("planned_bytes")),
                         mib((f.get("runtime_memory") or {}).get("planned_bytes")),
                         num(f.get("time_ratio_vs_untiled"), ".2f", unit="x"), num(f.get("rel_l2_vs_untiled"), ".1e")])
    runs = [[f"[{code(p.path.name)}](pipeline.md#{p.anchor})", kv_forms(p.data),
             mib((p.data.get("peak_rss_kb") or 0) * 1024 or None),
             num(((p.data.get("quality") or {}).get("psnr_db_min")), ".1f", unit=" dB")] for p in pipelines]
    return "\n".join([
        "## At a glance\n",
        "Each tiled form against the untiled one of the same file (before → after): measured runtime memory (a "
        "fresh process's peak above its baseline), the planned bytes where the runtime plans memory (ExecuTorch), "
        "time and error side by side. MiB, the unit of `--memory-budget`. Machines differ between files: each "
        "file's section below names its own.\n",
        table(["file", "component", "target", "clip", "form", "measured before", "measured after",
               "planned before", "planned after", "time vs untiled", "rel L2 vs untiled"], rows),
        "\nThe whole image-to-video run ([pipeline page](pipeline.md)): the run's peak resident memory (the whole "
        "process) and its worst frame against the all-fp32 PyTorch run.\n",
        table(["file", "components (precision, tiled)", "run peak", "worst frame"], runs), ""])


def kv_forms(data: dict) -> str:
    """A pipeline file's components as `name precision[, tiled]`."""
    parts = [f"{c} {r.get('precision')}{' tiled' if r.get('tiled') else ''}"
             for c, r in (data.get("components") or {}).items()]
    return escape(", ".join(parts)) or DASH
