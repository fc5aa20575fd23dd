"""`mi2v quantize analyze`: per-unit sensitivity of a component to a precision, written as a recipe JSON that
`mi2v export --recipe FILE` applies (mi2v_export.recipe)."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer
from rich.table import Table

from .. import bounds
from ..contract import COMPONENTS
from ..errors import BadInputError
from ..files import write_json_atomic
from ..outputs import check_file, write_or_keep
from ._render import console, err_console, is_quiet, print_json

app = typer.Typer(help="precision analysis: which units tolerate quantization", no_args_is_help=True)


@app.command("analyze")
def analyze(
    component: str = typer.Option("denoiser", "--component", help="denoiser | decoder | encoder"),
    precision: str = typer.Option("w8a8", "--precision", help="the low precision to try: w8a8 | w8 | w4"),
    preset: str = typer.Option("mobilei2v-270m", "--preset", help="model preset: mobilei2v-270m | tiny"),
    decoder: str = typer.Option("turbo-vaed", "--decoder", help="turbo-vaed | ltx"),
    checkpoint: list[Path] = typer.Option([], "--checkpoint", help="weights file(s); none: seeded weights"),
    resolution: str | None = typer.Option(None, "--resolution", help="HEIGHTxWIDTH (default: the preset's)"),
    frames: int | None = typer.Option(None, "--frames", help="video frames, 8k+1 (default: the preset's)"),
    unit_psnr: float = typer.Option(40.0, "--unit-psnr", help="a unit keeps fp32 when quantizing it alone drops "
                                    "the video's worst frame below this PSNR (dB)"),
    out: Path = typer.Option(..., "--out", help="recipe JSON to write"),
    json_out: bool = typer.Option(False, "--json", help="print the recipe on stdout"),
) -> None:
    """Quantize one unit at a time (simulated in PyTorch), measure the 2-step video's PSNR on the validation image,
    and write the recipe (unit → precision)."""
    from .. import recipe as rc
    from ..models import weight_bytes
    from ..pipeline import checkpoint_parts, torch_stage
    from ..presets import get_preset
    from ..shapes import geometry, parse_resolution

    if component not in ("encoder", "denoiser", "decoder"):
        raise BadInputError(f"unknown component {component!r}; choose one of: encoder, denoiser, decoder")
    if out.suffix != ".json":
        raise BadInputError(f"--out {out}: use a .json file name")
    check_file(out, "--out")  # before minutes of analysis (mi2v_export/outputs.py)
    p = get_preset(preset)
    h, w = parse_resolution(resolution) if resolution else (p.height, p.width)
    geo = geometry(h, w, frames if frames is not None else p.frames)
    bounds.check_request(p, geo, weight_bytes(p, COMPONENTS, decoder), "run", "this analysis")
    parts = checkpoint_parts(checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stages = {c: torch_stage(c, p.name, decoder, parts) for c in ("encoder", "denoiser", "decoder")}
    def progress(unit: str, i: int, n: int) -> None:
        if not is_quiet():  # -q: no progress lines
            err_console.print(f"  {i + 1}/{n} {unit}", highlight=False)

    data = rc.analyze(stages, component, precision, geo, unit_psnr, progress)
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
