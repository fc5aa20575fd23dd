"""Parameter and FLOP counts per component, measured by running each model on `meta` tensors.

FLOPs come from torch's FlopCounterMode (matmuls and convolutions, FLOP = 2·MAC) on the exact forward that gets
exported, so deduplicated embeddings and the skipped text path are reflected automatically; elementwise work
(norms, activations, RoPE) is not counted, as is customary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .presets import Preset
from .shapes import VideoGeometry


@dataclass(frozen=True)
class ComponentStats:
    component: str
    model: str
    parameters: int
    gflop: float
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def _measure(module: torch.nn.Module, *inputs: torch.Tensor) -> tuple[float, tuple[int, ...]]:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = module(*inputs)
    return counter.get_total_flops() / 1e9, tuple(out.shape)


def component_stats(preset: Preset, geo: VideoGeometry) -> list[ComponentStats]:
    """Encoder (one conditioning image), one denoiser step, and both decoders for one video of `geo`."""
    from .models import build_part

    lat = geo.latent_shape
    stats = []
    with torch.device("meta"):
        rows = [
            ("encoder", "ltx-encoder", (torch.empty(1, 3, 1, geo.height, geo.width),)),
            ("denoiser", "denoiser", (torch.empty(lat), torch.empty(1), torch.empty(1))),
            ("decoder", "turbo-vaed", (torch.empty(lat),)),
            ("decoder", "ltx-decoder", (torch.empty(lat),)),
        ]
        for component, part, inputs in rows:
            module = build_part(part, preset, device="meta").eval()
            gflop, out_shape = _measure(module, *inputs)
            params = sum(p.numel() for p in module.parameters())
            stats.append(ComponentStats(component, part, params, gflop, tuple(inputs[0].shape), out_shape))
    return stats
