"""`mi2v info`: shapes, token count, parameters and GFLOP per component for a preset and video size."""

from __future__ import annotations

import typer
from rich.table import Table

from ..bounds import check_cap
from ..contract import PresetName
from ._render import console, human_count, print_json


def _shape(shape) -> str:
    return "x".join(map(str, shape))


def info(
    preset: PresetName = typer.Option("mobilei2v-270m", help="model preset"),
    resolution: str | None = typer.Option(None, help="HEIGHTxWIDTH, e.g. 720x1280 (default: the preset's)"),
    frames: int | None = typer.Option(None, min=1, help="video frames, 8k+1 (default: the preset's)"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Latent shape, token count, parameters and GFLOP per component (one denoiser step)."""
    from ..flops import component_stats
    from ..presets import get_preset
    from ..shapes import geometry, parse_resolution

    p = get_preset(preset.value)
    h, w = parse_resolution(resolution) if resolution else (p.height, p.width)
    geo = geometry(h, w, frames if frames is not None else p.frames)
    check_cap(p, geo.height, geo.width, geo.frames)
    stats = component_stats(p, geo)
    data = {
        "preset": p.name,
        "resolution": [geo.height, geo.width],
        "frames": geo.frames,
        "latent_shape": list(geo.latent_shape),
        "tokens": geo.tokens,
        "decoded_size": [geo.decoded_height, geo.decoded_width],
        "components": [s.to_dict() for s in stats],
    }
    if json_out:
        print_json(data)
        return
    console.print(f"[bold]{p.name}[/] — {p.description}")
    console.print(f"video {geo.height}x{geo.width}x{geo.frames} → latent {tuple(geo.latent_shape)}, "
                  f"{geo.tokens} tokens ({geo.latent_t} frames x {geo.latent_h}x{geo.latent_w}); decoded "
                  f"{geo.decoded_height}x{geo.decoded_width}, cropped to {geo.height}x{geo.width}")
    table = Table(title="components")
    for col in ("component", "model", "parameters", "GFLOP", "input", "output"):
        table.add_column(col, justify="right" if col in ("parameters", "GFLOP") else "left")
    for s in stats:
        label = s.component + (" (per step)" if s.component == "denoiser" else "")
        table.add_row(label, s.model, human_count(s.parameters), f"{s.gflop:,.1f}", _shape(s.input_shape),
                      _shape(s.output_shape))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("info")(info)
