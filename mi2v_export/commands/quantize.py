"""`mi2v quantize analyze`: per-unit sensitivity of a component to a precision, written as a recipe JSON that
`mi2v export --recipe FILE` applies (mi2v_export.recipe)."""

from __future__ import annotations

import warnings

import typer
from rich.table import Table

from .. import bounds
from ..contract import COMPONENTS, choices
from ..errors import BadInputError
from ..files import write_json_atomic
from ..outputs import check_file, write_or_keep
from ..precision import RECIPE_PRECISIONS
from ..presets import get_preset
from ..shapes import geometry, parse_resolution
from ._options import Checkpoints, Decoder, Frames, Json, OneComponent, Out, Preset, Resolution, refine
from ._render import console, print_json, say

app = typer.Typer(help="precision analysis: which units tolerate quantization", no_args_is_help=True)
LowPrecision = choices("LowPrecision", RECIPE_PRECISIONS)  # --precision here: what a recipe tries, not export's


@app.command("analyze")
def analyze(
    component: OneComponent = "denoiser",
    precision: LowPrecision = typer.Option("w8a8", "--precision", help="the low precision to try"),
    preset: Preset = "mobilei2v-270m",
    decoder: Decoder = "turbo-vaed",
    checkpoint: Checkpoints = [],
    resolution: Resolution = None,
    frames: Frames = None,
    unit_psnr: float = typer.Option(40.0, "--unit-psnr", help="a unit keeps fp32 when quantizing it alone drops "
                                    "the video's worst frame below this PSNR (dB)"),
    out: refine(Out, help="recipe JSON to write") = ...,
    json_out: refine(Json, help="print the recipe on stdout") = False,
) -> None:
    """Quantize one unit at a time (simulated in PyTorch), measure the 2-step video's PSNR on the validation image,
    and write the recipe (unit → precision)."""
    from .. import recipe as rc  # torch: not at `mi2v --help`
    from ..models import weight_bytes
    from ..pipeline import checkpoint_parts, torch_stage

    component, precision, decoder = component.value, precision.value, decoder.value
    if out.suffix != ".json":
        raise BadInputError(f"--out {out}: use a .json file name")
    check_file(out, "--out")  # before minutes of analysis (mi2v_export/outputs.py)
    p = get_preset(preset.value)
    h, w = parse_resolution(resolution) if resolution else (p.height, p.width)
    geo = geometry(h, w, frames if frames is not None else p.frames)
    bounds.check_request(p, geo, weight_bytes(p, COMPONENTS, decoder), "run", "this analysis")
    parts = checkpoint_parts(checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stages = {c: torch_stage(c, p.name, decoder, parts) for c in COMPONENTS}
    data = rc.analyze(stages, component, precision, geo, unit_psnr, lambda unit, i, n: say(f"  {i + 1}/{n} {unit}"))
    write_or_keep(out, lambda path: write_json_atomic(path, data), "recipe")
    if json_out:
        print_json(data)
        return
    table = Table("unit", "worst-frame PSNR (dB)", "recipe", title=f"{component} at {precision}, one unit at a time")
    for unit, a in data["analysis"].items():
        table.add_row(unit, f"{float(a['psnr_db_min']):.1f}", data["units"][unit])
    console.print(table)
    s = data["simulated_psnr_db_min"]
    console.print(f"all units {precision}: {float(s['all_units']):.1f} dB; recipe: {float(s['recipe']):.1f} dB; "
                  f"wrote {out}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="quantize")
