"""How far one output pixel of each VAE part reads (mi2v_export/models/receptive.py), and what that leaves for
exact spatial tiling at a resolution.

For each part: the receptive field measured by autograd (latent pixels each side), the share of the gradient mass
beyond each distance (how fast the dependence decays: what a blended, smaller halo loses), the frame in latent
pixels, and the smallest exact window (tile of one latent pixel + 2 x field) against the frame: when the window
covers the frame, exact tiling cannot save memory there. Seeded weights unless --checkpoint.

`--frames N` (repeatable) adds the same question in time for each decoder's stages (mi2v_export/models/stages.py
`stages_of`, cut as the tiled export cuts them at this resolution): how many of its own input frames one output
frame of a stage reads each side, and whether a time chunk of one frame plus that halo is shorter than the stage's
input, i.e. whether chunking in time could save memory at that clip length.

    python benchmarks/vae_receptive_field.py --preset mobilei2v-270m --resolution 720x1280 --frames 17 \
        --frames 121 --json out.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from mi2v_export import contract
from mi2v_export.checkpoints import LTX_DECODER, LTX_ENCODER, TURBO_VAED
from mi2v_export.models import build_part, seed_part
from mi2v_export.models.receptive import decoder_probe, encoder_probe, receptive_field
from mi2v_export.models.stages import stages_of
from mi2v_export.presets import get_preset
from mi2v_export.shapes import parse_resolution

SCALE = 32


def probe(part: str, preset: str) -> tuple[torch.nn.Module, object, int, int]:
    module = seed_part(build_part(part, preset)).eval()
    if part == LTX_ENCODER:
        return module, encoder_probe(), SCALE, 1
    return module, decoder_probe(get_preset(preset).ltx_vae.latent_channels), 1, SCALE


def decay(module, make_input, scale_in: int, scale_out: int, units: int) -> list[float]:
    """Share of |d output cell / d input| beyond Chebyshev distance k latent pixels, k = 0 .. units // 2."""
    x = make_input(units).detach().requires_grad_(True)
    c = units // 2
    module(x)[..., c * scale_out:(c + 1) * scale_out, c * scale_out:(c + 1) * scale_out].sum().backward()
    g = x.grad.abs().sum(dim=tuple(range(x.dim() - 2))).numpy()
    g = g.reshape(units, scale_in, units, scale_in).sum(axis=(1, 3))
    ys, xs = np.indices(g.shape)
    dist = np.maximum(abs(ys - c), abs(xs - c))
    return [float(g[dist > k].sum() / g.sum()) for k in range(c + 1)]


def measure(part: str, preset: str, frame: tuple[int, int], decay_units: int) -> dict:
    module, make_input, s_in, s_out = probe(part, preset)
    t0 = time.perf_counter()
    try:
        field, note = receptive_field(module, make_input, s_in, s_out, start=decay_units, limit=decay_units), None
    except Exception as exc:  # a field wider than the probe cap: report the bound
        field, note = None, f"the probe of {decay_units} latent pixels was too small: {exc}"
    seconds = time.perf_counter() - t0
    window = None if field is None else 1 + 2 * field
    return {"part": part, "receptive_field_latent_px": field, "note": note, "probe_s": round(seconds, 1),
            "frame_latent_px": list(frame), "smallest_exact_window_latent_px": window,
            "exact_tiling_can_split": None if window is None else [window < frame[0], window < frame[1]],
            "gradient_mass_beyond": decay(module, make_input, s_in, s_out, decay_units)}


def temporal_field(stage, probe_frames: int, probe_px: int = 4) -> int | None:
    """Input frames one output frame of `stage` reads each side, by autograd on a `probe_frames`-frame input of
    `probe_px` square pixels (time does not depend on space: the stage's convolutions pad space with zeros); None
    when it reaches the probe's ends."""
    channels = stage.input_shape[1]
    x = torch.randn(1, channels, probe_frames, probe_px, probe_px, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    y = stage.module(x)
    middle = (y.shape[2] - 1) // 2
    y[:, :, middle].sum().backward()
    read = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3, 4))).flatten().tolist()
    centre = round(middle * (probe_frames - 1) / max(y.shape[2] - 1, 1))
    if read[0] == 0 or read[-1] == probe_frames - 1:
        return None
    return max(centre - read[0], read[-1] - centre)


@functools.cache
def seeded(part: str, preset: str) -> torch.nn.Module:
    """A part with the seeded weights, built once for every clip length asked."""
    return seed_part(build_part(part, preset)).eval()


def time_chunking(part: str, preset: str, frame: tuple[int, int], frames: int) -> dict:
    """Per stage of a decoder at `frames` video frames: its input frames, its temporal field, and whether an exact
    time chunk (one frame + the field each side) is shorter than its input."""
    module = seeded(part, preset)
    channels = get_preset(preset).ltx_vae.latent_channels
    latent_frames = 1 + (frames - 1) // 8
    rows = []
    for k, stage in enumerate(stages_of(module, (1, channels, latent_frames, *frame))):
        field = next((f for f in (temporal_field(stage, 2 * n + 1) for n in (12, 24)) if f is not None), None)
        t_in = stage.input_shape[2]
        chunk = t_in if field is None else min(1 + 2 * field, t_in)
        rows.append({"stage": k, "input_frames": t_in, "output_frames": stage.output_shape[2],
                     "temporal_field_frames": field, "smallest_exact_chunk_frames": chunk,
                     "chunking_can_split": chunk < t_in,
                     "output_mib": round(4 * int(np.prod(stage.output_shape)) / 2 ** 20, 1)})
    return {"part": part, "frames": frames, "latent_frames": latent_frames, "stages": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="mobilei2v-270m")
    ap.add_argument("--resolution", default="720x1280")
    ap.add_argument("--decay-units", type=int, default=31, help="probe size (latent px) for the decay profile")
    ap.add_argument("--parts", default=f"{TURBO_VAED},{LTX_DECODER},{LTX_ENCODER}")
    ap.add_argument("--frames", type=int, action="append", default=[],
                    help="video frames (8k+1) for the per-stage temporal field; repeatable")
    ap.add_argument("--note", default=None, help="what else ran, or anything the reader should know")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    h, w = parse_resolution(args.resolution)
    frame = (-(-h // SCALE), -(-w // SCALE))
    torch.manual_seed(0)
    results = [measure(p, args.preset, frame, args.decay_units) for p in args.parts.split(",")]
    out = {"benchmark": "vae_receptive_field", "preset": args.preset, "resolution": args.resolution,
           "machine": {"cpu_model": contract.cpu_model(), "cpu_flags": contract.cpu_flags(),
                       "load_average": list(os.getloadavg())},
           "torch": torch.__version__, "note": args.note, "parts": results,
           "time_chunking": [time_chunking(p, args.preset, frame, f) for p in args.parts.split(",")
                             if p != LTX_ENCODER for f in args.frames]}
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    for r in results:
        mass = ", ".join(f"{m:.1e}" for m in r["gradient_mass_beyond"])
        print(f"{r['part']}: field {r['receptive_field_latent_px']} latent px each side; frame {frame}; "
              f"gradient mass beyond k = 0, 1, ...: {mass}")
    for r in out["time_chunking"]:
        for st in r["stages"]:
            print(f"{r['part']} {r['frames']} frames, stage {st['stage']}: {st['input_frames']} input frames, "
                  f"reads {st['temporal_field_frames']} each side, chunking can split: {st['chunking_can_split']}")


if __name__ == "__main__":
    main()
