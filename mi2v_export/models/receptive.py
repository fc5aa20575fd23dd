"""Measure how far a VAE output pixel reads into its input, by autograd: the halo that makes tiling exact.

Why measure instead of summing kernel sizes: the encoder and the two decoders mix convolutions, strided
downsamplers, pixel shuffles and depthwise convolutions (mi2v_export/models/ltx_vae.py, turbo_vaed.py), and a checkpoint
may change their layout; the gradient of one output cell with respect to the input is exactly zero outside the
receptive field and (with random or trained weights and smooth activations) non-zero inside it. The probe grows its
input until the field no longer touches the probe's border, so a model with a global operation is reported as such
instead of being tiled wrongly.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import BadInputError

MAX_PROBE_UNITS = 64        # grid units a side: beyond this the model is treated as not tileable


def _reach(grad: torch.Tensor, centre: int, scale_in: int) -> tuple[int, bool]:
    """Grid units the non-zero gradient reaches from `centre` along the last two axes, and whether it touches the
    input's border (then the probe was too small)."""
    reach, touches = 0, False
    for axis in (-2, -1):
        other = tuple(d for d in range(grad.dim()) if d != grad.dim() + axis)
        used = grad.abs().amax(dim=other).nonzero().flatten()
        if used.numel() == 0:
            continue
        lo, hi = int(used.min()), int(used.max())
        touches |= lo == 0 or hi == grad.shape[axis] - 1
        reach = max(reach, centre - lo // scale_in, hi // scale_in - centre)
    return reach, touches


def receptive_field(module: nn.Module, make_input, scale_in: int, scale_out: int, start: int = 9,
                    limit: int = MAX_PROBE_UNITS) -> int:
    """Grid units each side that one output grid cell reads. `make_input(n)` builds an input of n×n grid units
    (all other axes as small as the model allows); `scale_in` / `scale_out` are the array pixels per grid unit of
    the input and the output (decoder: 1 and 32; encoder: 32 and 1)."""
    units = start
    while units <= limit:
        x = make_input(units).detach().requires_grad_(True)
        centre = units // 2
        y = module(x)
        lo, hi = centre * scale_out, (centre + 1) * scale_out
        y[..., lo:hi, lo:hi].float().sum().backward()
        reach, touches = _reach(x.grad.detach(), centre, scale_in)
        if not touches:
            return reach
        units = 2 * units + 1
    raise BadInputError(f"{type(module).__name__}: an output pixel reads more than {units // 4} latent "
                        "pixels each side (a global operation?); it cannot be tiled exactly")


def temporal_field(module: nn.Module, make_input, scale_in: int, scale_out: int, start: int = 9,
                   limit: int = MAX_PROBE_UNITS) -> int:
    """Units each side (the coarser side's frames, mi2v_export/chunking.py) that the output frames one unit owns
    read. `make_input(f)` builds an input of f frames (small in space); `scale_in` / `scale_out` are frames per unit
    on each side. The probe grows until the field no longer touches its ends, as `receptive_field` does."""
    units = start
    while units <= limit:
        x = make_input(scale_in * (units - 1) + 1).detach().requires_grad_(True)
        centre = units // 2
        y = module(x)
        y[:, :, centre * scale_out:(centre + 1) * scale_out].float().sum().backward()
        read = x.grad.detach().abs().sum(dim=(0, 1, 3, 4)).nonzero().flatten()
        lo, hi = int(read.min()), int(read.max())
        if lo > 0 and hi < x.shape[2] - 1:
            return max(centre - lo // scale_in, -(-hi // scale_in) - centre)
        units = 2 * units + 1
    raise BadInputError(f"{type(module).__name__}: an output frame reads more than {units // 4} frames each side "
                        "(a global operation in time?); it cannot be chunked exactly")


def decoder_probe(channels: int, dtype: torch.dtype = torch.float32):
    """Input maker for a decoder: one latent frame, n×n latent pixels."""
    generator = torch.Generator().manual_seed(0)
    return lambda n: torch.randn(1, channels, 1, n, n, generator=generator, dtype=dtype)


def encoder_probe(dtype: torch.dtype = torch.float32, scale: int = 32):
    """Input maker for the encoder: one video frame, n×n latent pixels of video."""
    generator = torch.Generator().manual_seed(0)
    return lambda n: torch.rand(1, 3, 1, n * scale, n * scale, generator=generator, dtype=dtype) * 2 - 1

