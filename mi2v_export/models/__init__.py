"""Public model API (a contract other tools call): `load_denoiser`, `load_decoder`, `load_encoder`.

`checkpoint=None` builds seeded random weights (the golden recipe, seed 0) and warns: useful for export and speed
work before a user has real weights, never for real videos.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..checkpoints import DENOISER, LTX_DECODER, LTX_ENCODER, TURBO_VAED, load_part_weights, read_checkpoint
from ..errors import BadInputError
from ..presets import Preset, get_preset

DECODER_KINDS = {"turbo-vaed": TURBO_VAED, "ltx": LTX_DECODER}


def _build_denoiser(preset: Preset) -> nn.Module:
    from .denoiser import MobileI2VDenoiser

    return MobileI2VDenoiser(preset.denoiser)


def _build_turbo_vaed(preset: Preset) -> nn.Module:
    from .turbo_vaed import TurboVAED

    return TurboVAED(preset.turbo_vaed)


def _build_ltx_encoder(preset: Preset) -> nn.Module:
    from .ltx_vae import LTXEncoder

    return LTXEncoder(preset.ltx_vae)


def _build_ltx_decoder(preset: Preset) -> nn.Module:
    from .ltx_vae import LTXDecoder

    return LTXDecoder(preset.ltx_vae)


@dataclass(frozen=True)
class PartSpec:
    label: str
    build: Callable[[Preset], nn.Module]


# One entry per loadable model part; checkpoints.detect_parts names the same parts.
PARTS: dict[str, PartSpec] = {
    DENOISER: PartSpec("MobileI2V denoiser", _build_denoiser),
    LTX_ENCODER: PartSpec("LTX-Video encoder", _build_ltx_encoder),
    LTX_DECODER: PartSpec("LTX-Video decoder", _build_ltx_decoder),
    TURBO_VAED: PartSpec("Turbo-VAED decoder", _build_turbo_vaed),
}


def build_part(part: str, preset: str | Preset, device: str | torch.device | None = None) -> nn.Module:
    """Build a part with default-initialised weights; `device="meta"` gives shapes without memory."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    with torch.device(device) if device is not None else _nullcontext():
        return PARTS[part].build(preset)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def expected_shapes(part: str, preset: str | Preset) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in build_part(part, preset, device="meta").state_dict().items()}


def seed_part(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fill a module with the golden README's per-key seeded weights (reproducible from the key names alone)."""
    from .seeded import seeded_state_dict

    sd = seeded_state_dict({k: tuple(v.shape) for k, v in module.state_dict().items()}, seed)
    module.load_state_dict(sd, strict=True)
    return module


def _load(part: str, checkpoint: str | os.PathLike | None, preset: str, dtype: torch.dtype, seed: int) -> nn.Module:
    spec = PARTS[part]
    module = build_part(part, preset)
    if checkpoint is None:
        warnings.warn(f"{spec.label}: no checkpoint given, using seeded random weights (seed {seed}); outputs are "
                      "meaningless as video but numerically reproducible", stacklevel=3)
        seed_part(module, seed)
    else:
        load_part_weights(module, read_checkpoint(checkpoint), part, f"{spec.label} of preset {preset!r}")
    return module.to(dtype).eval().requires_grad_(False)


def load_denoiser(checkpoint: str | os.PathLike | None = None, preset: str = "mobilei2v-270m",
                  dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """MobileI2V denoiser: forward(latent (B,128,T,H,W), timestep (B,) 0-1000, flow_score (B,)) → velocity."""
    if dtype not in (torch.float32, torch.float16):
        raise BadInputError(f"denoiser dtype must be float32 or float16, got {dtype}")
    return _load(DENOISER, checkpoint, preset, dtype, seed)


def load_decoder(kind: str = "turbo-vaed", checkpoint: str | os.PathLike | None = None,
                 preset: str = "mobilei2v-270m", dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """Video decoder: forward(latent (B,128,t,h,w)) → video (B,3,1+8(t-1),32h,32w) in [-1,1], uncropped."""
    if kind not in DECODER_KINDS:
        raise BadInputError(f"unknown decoder {kind!r}; choose one of: {', '.join(DECODER_KINDS)}")
    return _load(DECODER_KINDS[kind], checkpoint, preset, dtype, seed)


def load_encoder(checkpoint: str | os.PathLike | None = None, preset: str = "mobilei2v-270m",
                 dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """LTX-Video encoder: forward(image (B,3,F,H,W) in [-1,1]) → posterior mean latent; `.sample(x, generator)`."""
    return _load(LTX_ENCODER, checkpoint, preset, dtype, seed)


__all__ = ["load_denoiser", "weight_bytes", "load_decoder", "load_encoder", "build_part", "expected_shapes", "seed_part", "PARTS",
           "DECODER_KINDS"]


def weight_bytes(preset: str | Preset, components, decoder: str = "turbo-vaed") -> dict[str, int]:
    """fp32 weight bytes per component ("encoder", "denoiser", "decoder"), counted on models built on the `meta`
    device (no memory; mi2v_export/bounds.py sizes its estimates with them)."""
    parts = {"encoder": LTX_ENCODER, "denoiser": DENOISER, "decoder": DECODER_KINDS.get(decoder, TURBO_VAED)}
    out = {}
    with torch.device("meta"):
        for c in components:
            out[c] = 4 * sum(p.numel() for p in build_part(parts[c], preset).parameters())
    return out
