"""What a tile costs in compute: each stage's share of a tiled VAE component's multiply-accumulates, and how much
each candidate tile makes it recompute (its halos), against what tiled runs measured.

Why: an exact tile recomputes its halo (a stage's receptive field each side), so a stage's work grows as its
windows shrink, and the time of a tiled component follows the work of the stages that hold most of its MACs. This
says, without running the model, which tiles keep a component within a time ratio (the issue's 1.25x), and, joined
with the probes a `--memory-budget` export measured (benchmarks/tiled_vae.py results), what memory such a tile
needs. Counted on the meta device (no weights, no memory): seconds at 720p.

- stages, fields and candidate tiles: exactly the export's (exporters/tiled.py `stage_fields`,
  exporters/tile_search.py `stage_candidates`);
- MACs: torch's FlopCounterMode over each stage on meta tensors (convolutions and matrix products; the norms and
  activations it does not count are a small share of a VAE);
- a stage's work for a tile: the input elements over all its windows against the whole frame (`tile_search.work`);
- a component's estimate for per-stage tiles: the sum over stages of share x work.

    python benchmarks/tile_cost.py --component decoder --resolution 720x1280 --frames 17 \\
        --measured benchmarks/results/tiled_720p_onnx_decoder_stages.json --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from mi2v_export import contract, tiling
from mi2v_export.errors import BadInputError
from mi2v_export.exporters import components, tile_search, tiled
from mi2v_export.models import build_part, seed_part
from mi2v_export.models.stages import Stage, _on_meta, stages_of
from mi2v_export.presets import get_preset
from mi2v_export.shapes import geometry, parse_resolution

PARTS = {"encoder": "ltx-encoder", "turbo-vaed": "turbo-vaed", "ltx": "ltx-decoder"}
METHOD = ("MACs counted by torch's FlopCounterMode on the meta device; a stage's work for a tile is the input "
          "elements over all its windows (halos recomputed) against the whole frame; a component's estimate is the "
          "sum over stages of MAC share x work")


def stage_macs(stage: Stage) -> int:
    """Multiply-accumulates of one stage on its whole frame (meta tensors: no memory, no weights read)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        _on_meta(stage.module, torch.empty(stage.input_shape, device="meta"))
    return counter.get_total_flops() // 2


def stage_rows(name: str, stages: list[Stage], fields: list[int]) -> list[dict]:
    macs = [stage_macs(s) for s in stages]
    video = tiled.video_hw(name, stages)
    rows = []
    for k, (stage, field, m) in enumerate(zip(stages, fields, macs)):
        unit = tiling.plan_stage(stage.input_shape[-2:], stage.output_shape[-2:], video, video, field).unit_px
        rows.append({"stage": k, "steps": [type(s).__name__ for s in stage.module.steps],
                     "input_shape": list(stage.input_shape), "output_shape": list(stage.output_shape),
                     "field_units": field, "unit_px": list(unit), "gmac": round(m / 1e9, 2),
                     "share": round(m / sum(macs), 4)})
    return rows


def candidates(name: str, stages: list[Stage], fields: list[int], shares: list[float]) -> list[dict]:
    """Each stage's candidate tiles (the budget search's, largest window first) with their work and the
    component's estimate when only that stage is tiled so."""
    out = []
    for k, stage in enumerate(stages):
        plans = tile_search.stage_candidates(name, stages, fields, tiled.TileRequest(), k)
        whole = tile_search.work(stage, plans[0][1], plans[0][2])
        for tile, p, tp in plans:
            work = tile_search.work(stage, p, tp) / whole
            win_out = tiled.window_shape(stage, p, tp)[1]
            out.append({"stage": k, "tile": list(tiled.stage_tile_px(p, tiled.video_hw(name, stages))),
                        "windows": tile_search.windows(p, tp), "window_out": list(win_out[-2:]),
                        "work": round(work, 3), "estimate": round(1 + shares[k] * (work - 1), 3),
                        **({} if tp is None else {"time_chunks": tp.count})})
    return out


def estimate(name: str, stages: list[Stage], fields: list[int], shares: list[float],
             stage_tiles: list[list[int]]) -> float:
    """The component's time ratio estimated for per-stage tiles (video pixels, as a tiling record lists them)."""
    video, total = tiled.video_hw(name, stages), 0.0
    for stage, field, share, tile in zip(stages, fields, shares, stage_tiles):
        p = tiling.plan_stage(stage.input_shape[-2:], stage.output_shape[-2:], video, tuple(tile), field)
        whole = tiling.plan_stage(stage.input_shape[-2:], stage.output_shape[-2:], video, video, field)
        total += share * tile_search.work(stage, p) / tile_search.work(stage, whole)
    return round(total, 3)


def measured_rows(path: Path, name: str, stages, fields, shares) -> tuple[list[dict], list[dict]]:
    """(each tiled form of a tiled_vae results file with its measured and estimated ratio, its probes)."""
    data = json.loads(path.read_text())
    forms, probes = [], []
    for form in data.get("forms", []):
        tiles = form.get("stage_tiles") or ([form["tile"]] * len(stages) if form.get("tile") else None)
        if tiles is None:  # the untiled form: the ratios' 1.0
            continue
        row = {"source": path.name, "form": form.get("form"), "stage_tiles": tiles,
               "measured": form.get("time_ratio_vs_untiled"), "runtime": form.get("runtime"),
               "runtime_memory_bytes": (form.get("runtime_memory") or {}).get("bytes")}
        if len(tiles) == len(stages):
            row["estimate"] = estimate(name, stages, fields, shares, tiles)
        else:
            row["estimate"] = None
            row["why_not"] = f"{len(tiles)} stages (a budget cut a stage between its steps), not the {len(stages)} here"
        forms.append(row)
        probes += [dict(p, source=path.name, runtime=form.get("runtime")) for p in form.get("probes") or []]
    return forms, probes


def run(args) -> dict:
    preset = get_preset(args.preset)
    h, w = parse_resolution(args.resolution)
    geo = geometry(h, w, args.frames or preset.frames)
    part = PARTS["encoder" if args.component == "encoder" else args.decoder]
    spec_input = next(iter(components.example_inputs(args.component, geo).values()))
    stages = stages_of(seed_part(build_part(part, preset)), tuple(spec_input.shape))
    fields = [tiled.stage_field(s) for s in stages]
    rows = stage_rows(args.component, stages, fields)
    shares = [r["share"] for r in rows]
    result = {"benchmark": "tile_cost", "component": args.component, "part": part, "preset": preset.name,
              "resolution": f"{h}x{w}", "frames": geo.frames, "method": METHOD, "target_ratio": args.target,
              "machine": {"cpu_model": contract.cpu_model(), "load_average": list(os.getloadavg())},
              "stages": rows, "candidates": candidates(args.component, stages, fields, shares),
              "measured": [], "probes": []}
    for path in args.measured:
        forms, probes = measured_rows(Path(path), args.component, stages, fields, shares)
        result["measured"] += forms
        result["probes"] += probes
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--component", choices=("encoder", "decoder"), default="decoder")
    ap.add_argument("--decoder", choices=("turbo-vaed", "ltx"), default="turbo-vaed")
    ap.add_argument("--preset", default="mobilei2v-270m")
    ap.add_argument("--resolution", default="720x1280")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--target", type=float, default=1.25, help="the time ratio to find tiles within")
    ap.add_argument("--measured", nargs="*", default=[], help="benchmarks/tiled_vae.py results to set beside")
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    for path in args.measured:
        if not Path(path).is_file():
            print(f"error: --measured {path}: no such file", file=sys.stderr)
            return 2
    try:
        result = run(args)
    except BadInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    for r in result["stages"]:
        print(f"stage {r['stage']}: {r['gmac']} GMAC ({r['share']:.1%}), field {r['field_units']} units")
    for m in result["measured"]:
        print(f"{m['source']} {m['form']}: measured {m['measured']}, estimated {m.get('estimate')}")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
