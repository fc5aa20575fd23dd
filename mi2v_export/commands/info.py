"""`mi2v info`: shapes, token count, parameters and GFLOP per component for a preset and video size."""

from __future__ import annotations

import typer
from rich.table import Table

from ..bounds import check_cap
from ..flops import component_stats
from ..presets import get_preset
from ..shapes import geometry, parse_resolution
from ._options import Frames, Json, Preset, Resolution
from ._render import console, human_count, print_json


def _shape(shape) -> str:
    return "x".join(map(str, shape))


def info(
    preset: Preset = "mobilei2v-270m",
    resolution: Resolution = None,
    frames: Frames = None,
    json_out: Json = False,
) -> None:
    """Latent shape, token count, parameters and GFLOP per component (one denoiser step)."""
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
