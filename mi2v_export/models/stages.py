"""The VAE encoder and decoders as a chain of steps, cut into stages that can each be tiled with their own halo.

Why stages: an output pixel of the whole 720p Turbo-VAED reads 20 latent pixels each side (measured by
benchmarks/vae_receptive_field.py), and a 720p latent is only 23 rows high, so no window smaller than the frame
makes the whole network exact. Each block alone reads only a few of *its own* input pixels, so the chain is cut
where the tensor between two steps is small (no larger than the component's input or output), every stage runs on
its own windows with a halo that covers the stage's own receptive field, and the small tensors between stages are
kept whole. Tiling stays exact (the norms are per pixel over channels), and the large feature maps of the late,
high-resolution blocks never exist whole.

A step is any module mapping one 5-D tensor (B, C, T, H, W) to another; the steps below restate the forward of
mi2v_export/models/turbo_vaed.py and of diffusers' LTX encoder / decoder (mi2v_export/models/ltx_vae.py) step by
step, and `stages_of` checks on the meta device that the chain produces the model's output shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadInputError
from .ltx_vae import LTXDecoder, LTXEncoder
from .shuffle import depth_to_space, space_to_depth
from . import turbo_vaed
from .turbo_vaed import TurboVAED


class Chain(nn.Module):
    """Steps applied in order: one stage (or a whole component, for checking)."""

    def __init__(self, steps: list[nn.Module]):
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
        return x


class _NoTemb(nn.Module):
    """A diffusers block called without a timestep embedding (MobileI2V's VAE has no timestep conditioning)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, None)


class _Upsampler2dStep(nn.Module):
    """Turbo-VAED's 2-D stage: channel RMS → SiLU → per-frame conv → pixel shuffle."""

    def __init__(self, upsampler: nn.Module):
        super().__init__()
        self.upsampler = upsampler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsampler(F.silu(turbo_vaed.channel_rms_norm(x)))


class _TurboHead(nn.Module):
    def __init__(self, conv_out: nn.Module):
        super().__init__()
        self.conv_out = conv_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(turbo_vaed.channel_rms_norm(x)))


class _LTXDecoderHead(nn.Module):
    """norm_out → act → conv_out → unpatchify, as diffusers' LTXVideoDecoder3d.forward ends (its rank-8
    unpatchify as the rank-≤5 chain of mi2v_export/models/shuffle.py: XNNPACK allows at most 6 dims)."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.norm_out, self.conv_act, self.conv_out = decoder.norm_out, decoder.conv_act, decoder.conv_out
        self.p, self.p_t = decoder.patch_size, decoder.patch_size_t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_out(self.conv_act(self.norm_out(x.movedim(1, -1)).movedim(-1, 1)))
        return depth_to_space(x, [(self.p_t, 2), (self.p, 4), (self.p, 3)])


class _LTXEncoderIn(nn.Module):
    """patchify → conv_in, as diffusers' LTXVideoEncoder3d.forward begins (rank-≤5 patchify, as above)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.conv_in, self.p, self.p_t = encoder.conv_in, encoder.patch_size, encoder.patch_size_t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_in(space_to_depth(x, [(self.p_t, 2), (self.p, 4), (self.p, 3)]))


class _LTXEncoderHead(nn.Module):
    """norm_out → act → conv_out, keeping the posterior mean (LTXEncoder.forward's first `latent_channels`)."""

    def __init__(self, encoder: nn.Module, latent_channels: int):
        super().__init__()
        self.norm_out, self.conv_act, self.conv_out = encoder.norm_out, encoder.conv_act, encoder.conv_out
        self.latent_channels = latent_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_out(self.conv_act(self.norm_out(x.movedim(1, -1)).movedim(-1, 1)))
        return x[:, : self.latent_channels]


def steps_of(model: nn.Module) -> list[nn.Module]:
    """The model's forward as a list of steps (BadInputError for a model that is not one of the VAE parts)."""
    model = getattr(model, "model", model)  # the exporters' named-I/O wrapper
    if isinstance(model, TurboVAED):
        d = model.decoder
        post = [_Upsampler2dStep(getattr(d, f"upsampler2d_{k}")) for k in range(1, d.num_2d_stages + 1)]
        return [d.conv_in, d.mid_block, *d.up_blocks, *post, _TurboHead(d.conv_out)]
    if isinstance(model, LTXDecoder):
        d = model.decoder
        return [d.conv_in, _NoTemb(d.mid_block), *(_NoTemb(b) for b in d.up_blocks), _LTXDecoderHead(d)]
    if isinstance(model, LTXEncoder):
        e = model.encoder
        return [_LTXEncoderIn(e), *e.down_blocks, e.mid_block, _LTXEncoderHead(e, model.cfg.latent_channels)]
    raise BadInputError(f"{type(model).__name__} cannot be tiled: only the VAE encoder and decoders can")


@dataclass(frozen=True)
class Stage:
    """One stage: its module, whole-frame input and output shapes (B, C, T, H, W) on the export's frame."""

    module: Chain
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


def _meta_shapes(steps: list[nn.Module], shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The shape after each step for a whole-frame input of `shape`, computed on the meta device (no memory)."""
    shapes = [tuple(shape)]
    x = torch.empty(shape, device="meta")
    with torch.no_grad():
        for step in steps:
            x = _on_meta(step, x)
            shapes.append(tuple(x.shape))
    return shapes


def _on_meta(step: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a step on a meta tensor, its weights swapped for meta tensors of the same shapes (the real ones stay)."""
    params = {**dict(step.named_parameters()), **dict(step.named_buffers())}
    meta = {k: torch.empty_like(v, device="meta") for k, v in params.items()}
    return torch.func.functional_call(step, meta, (x,))


def stages_of(model: nn.Module, input_shape: tuple[int, ...]) -> list[Stage]:
    """Cut the model's steps before every step that changes the spatial size, where the tensor there is no larger
    than the component's input or output (so the tensors kept whole between stages stay small)."""
    steps = steps_of(model)
    shapes = _meta_shapes(steps, input_shape)
    return _cut(steps, shapes, max(_numel(shapes[0]), _numel(shapes[-1])), resizing_only=True)


def _cut(steps: list[nn.Module], shapes: list[tuple[int, ...]], limit: int, resizing_only: bool) -> list[Stage]:
    """Stages of `steps` (`shapes`: the tensor before each step and after the last), cut before each step whose
    input has at most `limit` elements (and, with `resizing_only`, whose output differs from it in size)."""
    groups: list[list[int]] = [[]]
    for i in range(len(steps)):
        resizes = shapes[i][-2:] != shapes[i + 1][-2:]
        if (resizes or not resizing_only) and groups[-1] and _numel(shapes[i]) <= limit:
            groups.append([])
        groups[-1].append(i)
    return [Stage(Chain([steps[i] for i in g]), shapes[g[0]], shapes[g[-1] + 1]) for g in groups]


def tensor_limit(stages: list[Stage]) -> int:
    """Elements a tensor kept whole between stages may have: the component's input or output, whichever is larger
    (stages_of cuts only there)."""
    return max(_numel(stages[0].input_shape), _numel(stages[-1].output_shape))


def split(stage: Stage, limit: int) -> list[Stage]:
    """The stage cut between each of its steps where the tensor is at most `limit` elements, resizing or not (one
    stage where no such point exists). Why: a stage whose smallest window still does not fit a memory budget is
    bound by its weights, not its feature maps (the 720p LTX encoder's last stage holds 574 MB of fp32 weights on a
    23x40 latent grid), and each part then holds only its own steps' weights; the tensors between them are as small
    as any kept whole."""
    steps = list(stage.module.steps)
    return _cut(steps, _meta_shapes(steps, stage.input_shape), limit, resizing_only=False)


def _block_parts(step: nn.Module) -> list[nn.Module]:
    """A block's sub-modules in the order its forward calls them (the VAE's up, mid and down blocks: an optional
    width-changing `conv_in`, the up-samplers, the resnets; a down block: resnets, down-samplers, `conv_out`), or
    the step itself. A block with a timestep embedder is kept whole (its resnets read the embedding)."""
    block = step.block if isinstance(step, _NoTemb) else step
    resnets = getattr(block, "resnets", None)
    if not isinstance(resnets, nn.ModuleList) or getattr(block, "time_embedder", None) is not None:
        return [step]
    def listed(name: str) -> list[nn.Module]:
        value = getattr(block, name, None)
        return [] if value is None else list(value) if isinstance(value, nn.ModuleList) else [value]
    if hasattr(block, "downsamplers"):
        parts = [*resnets, *listed("downsamplers"), *listed("conv_out")]
    else:
        parts = [*listed("conv_in"), *listed("upsamplers"), *resnets]
    return [_NoTemb(p) if isinstance(step, _NoTemb) else p for p in parts]


def fine_steps(stage: Stage) -> list[Stage]:
    """The stage as one stage per smallest step (each block's own resnets and samplers): what a row-streamed stage
    runs (mi2v_export/streaming.py), each part with the small receptive field of its own convolutions. Checked
    against the stage on a small seeded input; a model whose blocks run otherwise keeps its steps as they are."""
    steps = [p for step in stage.module.steps for p in _block_parts(step)]
    if len(steps) > len(stage.module.steps) and not _same_output(Chain(steps), stage):
        steps = list(stage.module.steps)
    shapes = _meta_shapes(steps, stage.input_shape)
    return [Stage(Chain([step]), shapes[i], shapes[i + 1]) for i, step in enumerate(steps)]


def _same_output(chain: Chain, stage: Stage) -> bool:
    """Whether `chain` computes what the stage does, on a seeded input of the stage's channels and frames, 8 × 8."""
    b, c, t = stage.input_shape[:3]
    x = torch.randn(b, c, t, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        try:
            return torch.equal(chain(x), stage.module(x))
        except RuntimeError:
            return False


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


__all__ = ["Chain", "Stage", "fine_steps", "split", "steps_of", "stages_of", "tensor_limit"]
