"""Export rewrites: exact module swaps that let a target lower the models (shared/spec/vae-export.md §6).

Each rewrite swaps modules of an already-loaded model for small modules built from the *same weights* (or switches
a module's class to a subclass whose forward is written differently), so the result computes the same function;
nothing in the model files changes. All of them are in one registry, `LOWERING_REWRITES`; which a target applies
is listed in `FOR_TARGET` (module swaps) and `TRACE_FOR_TARGET`; each can be switched off on its own. Trace-time substitutions for code that is a function rather than a module are context
managers (`rope_rank5`) that restore the original on exit.

| name  | fixes                                                                   | where                              |
|-------|-------------------------------------------------------------------------|------------------------------------|
| conv3d_as_conv2d | B2: nn.Conv3d has no XNNPACK / portable 5-D kernel → Conv2d over frames | every nn.Conv3d (LTX, Turbo-VAED)  |
| shuffle_rank5 | B1: rank-8 depth-to-space / space-to-depth → chains of rank-≤5 reshapes | LTX upsampler, (un)patchify        |
| causal_pad_cat | B3/B4: `concatenate` + repeat-by-0 temporal padding → `cat` of edge slices | LTXVideoCausalConv3d            |
| rms_norm_view | RMSNorm's last-axis mean of a 5-D tensor stays portable → (N,1,C,1) mean | diffusers RMSNorm (no affine)     |
| rms_norm_fp16 | RMSNorm on Core ML fp16 overflows for |x| > 256 → F.rms_norm             | diffusers RMSNorm (no affine)      |
| layer_norm_view | native_layer_norm is never delegated to XNNPACK → mean/var over (N,1,C,1) | nn.LayerNorm over one axis        |
| rms_norm_rank4 | QNN HTP refuses Sqrt on 5-D tensors → RMSNorm on a rank-4 view (leading axes merged) | diffusers RMSNorm (no affine) |
| layer_norm_rank4 | QNN HTP refuses 5-D LayerNormalization → LayerNorm on a rank-4 view | nn.LayerNorm over one axis |

Left alone on purpose: the denoiser's functional LayerNorm stays `native_layer_norm` (portable) on XNNPACK. Traced
as delegable mean/variance reductions it cut the 720p graph from 132 to 100 delegate subgraphs but ran 8 % slower
(13.95 vs 12.86 s median per forward, both .pte files timed side by side on this host). In an fp16 graph it runs in
fp32 (`layer_norm_fp32`): the portable fp16 kernel accumulates in fp16.

Trace-time substitutions (context managers, active only while torch.export traces):
| channel_rms_view | Turbo-VAED's channel RMS (5-D mean over dim 1, portable) → (N,1,C,1) mean | models.turbo_vaed.channel_rms_norm |
| rope_rank5 | the denoiser's rank-6 RoPE rotate-half → rank ≤ 5 (Core ML)              | models.rope.rotate_half_per_axis   |
| conv2d_batch1 | Vulkan takes only batch-1 2-D convs; conv3d_as_conv2d and GLUMBConv put frames in the batch → one conv per frame | F.conv2d |
| channel_rms_rank4 | QNN HTP: Turbo-VAED's channel RMS on the rank-4 view (B, C, T·H, W) | models.turbo_vaed.channel_rms_norm |
| frame_conditioning_without_gather | QNN HTP's GatherND gives wrong values (denoiser at 19 dB) → slice+expand+cat | models.denoiser.spread_over_frames |
| layer_norm_fp32 | ExecuTorch's portable fp16 LayerNorm accumulates in fp16 (14 dB on 1152 channels; the 270M denoiser 15 dB) → LayerNorm in fp32, cast back | models.denoiser.layer_norm |
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------------------
# conv3d_as_conv2d — Conv3d as Conv2d over (B·T_out) frames


class Conv3dAsConv2d(nn.Module):
    """An nn.Conv3d (zeros padding, dilation 1) computed with 2-D convolutions on (B·T_out, ·, H, W) frames.

    groups == 1: the kt temporal taps are folded into the input channels and one Conv2d does the work (the
    weight (O, C, kt, kh, kw) becomes (O, kt·C, kh, kw), stored under the same name `weight`).
    groups > 1 (depthwise): one Conv2d per temporal tap, summed (`taps.k` holds tap k's (O, C/G, kh, kw) slice).
    """

    def __init__(self, conv: nn.Conv3d):
        super().__init__()
        if conv.padding_mode != "zeros" or tuple(conv.dilation) != (1, 1, 1):
            raise ValueError("Conv3dAsConv2d needs zeros padding and dilation 1")
        if isinstance(conv.padding, str):
            raise ValueError("Conv3dAsConv2d needs numeric padding")
        out_c, in_per_group, kt, kh, kw = conv.weight.shape
        self.kt, self.st = int(kt), int(conv.stride[0])
        self.pad_t = int(conv.padding[0])
        self.stride_hw = tuple(int(s) for s in conv.stride[1:])
        self.pad_hw = tuple(int(p) for p in conv.padding[1:])
        self.groups = int(conv.groups)
        w = conv.weight.detach()
        if self.groups == 1:
            self.weight = nn.Parameter(w.permute(0, 2, 1, 3, 4).reshape(out_c, kt * in_per_group, kh, kw).clone(),
                                       requires_grad=False)
            self.taps = None
        else:
            self.register_parameter("weight", None)
            self.taps = nn.ParameterList([nn.Parameter(w[:, :, k].clone(), requires_grad=False) for k in range(kt)])
        self.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False) if conv.bias is not None else None

    def _frames(self, x: torch.Tensor, k: int, t_out: int) -> torch.Tensor:
        if self.kt == 1 and self.st == 1:
            return x
        if t_out == 1 or self.st == 1:  # a unit-step slice: XNNPACK takes it, a strided one stays portable
            return x[:, :, k:k + self.st * (t_out - 1) + 1]
        return x[:, :, k:k + self.st * (t_out - 1) + 1:self.st]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_t:
            x = F.pad(x, (0, 0, 0, 0, self.pad_t, self.pad_t))
        b, _, t, _, _ = x.shape
        t_out = (t - self.kt) // self.st + 1
        if self.taps is None:
            y = self._frames(x, 0, t_out) if self.kt == 1 else torch.cat(
                [self._frames(x, k, t_out) for k in range(self.kt)], dim=1)
            c = y.shape[1]
            y = y.permute(0, 2, 1, 3, 4).reshape(b * t_out, c, y.shape[3], y.shape[4])
            y = F.conv2d(y, self.weight, self.bias, self.stride_hw, self.pad_hw)
        else:
            y = None
            for k, w in enumerate(self.taps):
                f = self._frames(x, k, t_out)
                f = f.permute(0, 2, 1, 3, 4).reshape(b * t_out, f.shape[1], f.shape[3], f.shape[4])
                term = F.conv2d(f, w, self.bias if k == 0 else None, self.stride_hw, self.pad_hw, 1, self.groups)
                y = term if y is None else y + term
        _, o, ho, wo = y.shape
        return y.reshape(b, t_out, o, ho, wo).permute(0, 2, 1, 3, 4)


def _swap_children(model: nn.Module, match: Callable[[nn.Module], bool], build: Callable[[nn.Module], nn.Module]) -> int:
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if match(child):
                setattr(parent, name, build(child))
                count += 1
    return count


def apply_conv3d_as_conv2d(model: nn.Module) -> int:
    return _swap_children(model, lambda m: type(m) is nn.Conv3d, Conv3dAsConv2d)


# ---------------------------------------------------------------------------------------------------------------
# shuffle_rank5 — rank-≤5 depth-to-space / space-to-depth

# factors are (size, axis) from the outermost channel sub-index to the innermost; axis 2/3/4 = T/H/W


def depth_to_space(x: torch.Tensor, factors: list[tuple[int, int]]) -> torch.Tensor:
    """Move channel sub-indices into T/H/W: channel = ((c·f0 + i0)·f1 + i1)…, i_k → axis_k (as index·f + i_k)."""
    for size, axis in reversed(factors):
        if size == 1:
            continue
        b, ct, t, h, w = x.shape
        y = x.reshape(b * (ct // size), size, t, h, w)
        if axis == 4:
            x = y.permute(0, 2, 3, 4, 1).reshape(b, ct // size, t, h, w * size)
        elif axis == 3:
            x = y.permute(0, 2, 3, 1, 4).reshape(b, ct // size, t, h * size, w)
        else:
            x = y.permute(0, 2, 1, 3, 4).reshape(b, ct // size, t * size, h, w)
    return x


def space_to_depth(x: torch.Tensor, factors: list[tuple[int, int]]) -> torch.Tensor:
    """Inverse of depth_to_space with the same factor list."""
    for size, axis in factors:
        if size == 1:
            continue
        b, ct, t, h, w = x.shape
        if axis == 4:
            x = x.reshape(b * ct, t, h, w // size, size).permute(0, 4, 1, 2, 3).reshape(b, ct * size, t, h, w // size)
        elif axis == 3:
            x = x.reshape(b * ct, t, h // size, size, w).permute(0, 3, 1, 2, 4).reshape(b, ct * size, t, h // size, w)
        else:
            x = x.reshape(b * ct, t // size, size, h, w).permute(0, 2, 1, 3, 4).reshape(b, ct * size, t // size, h, w)
    return x


def _ltx_classes():
    from diffusers.models.autoencoders import autoencoder_kl_ltx as ltx

    return ltx


def _make_r5_classes():
    ltx = _ltx_classes()

    class R5Upsampler3d(ltx.LTXVideoUpsampler3d):
        """LTXVideoUpsampler3d (no residual) with its rank-8 pixel shuffle as a rank-≤5 chain."""

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            s = self.stride
            x = depth_to_space(self.conv(hidden_states), [(s[0], 2), (s[1], 3), (s[2], 4)])
            return x[:, :, s[0] - 1:]

    class R5Encoder3d(ltx.LTXVideoEncoder3d):
        """LTXVideoEncoder3d with a rank-≤5 patchify (inference forward, no gradient checkpointing)."""

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            p, p_t = self.patch_size, self.patch_size_t
            x = space_to_depth(hidden_states, [(p_t, 2), (p, 4), (p, 3)])
            x = self.conv_in(x)
            for down_block in self.down_blocks:
                x = down_block(x)
            x = self.mid_block(x)
            x = self.norm_out(x.movedim(1, -1)).movedim(-1, 1)
            x = self.conv_act(x)
            x = self.conv_out(x)
            last_channel = x[:, -1:].repeat(1, x.size(1) - 2, 1, 1, 1)
            return torch.cat([x, last_channel], dim=1)

    class R5Decoder3d(ltx.LTXVideoDecoder3d):
        """LTXVideoDecoder3d (no timestep conditioning) with a rank-≤5 unpatchify."""

        def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
            x = self.conv_in(hidden_states)
            x = self.mid_block(x, temb)
            for up_block in self.up_blocks:
                x = up_block(x, temb)
            x = self.norm_out(x.movedim(1, -1)).movedim(-1, 1)
            x = self.conv_act(x)
            x = self.conv_out(x)
            return depth_to_space(x, [(self.patch_size_t, 2), (self.patch_size, 4), (self.patch_size, 3)])

    return R5Upsampler3d, R5Encoder3d, R5Decoder3d


def apply_shuffle_rank5(model: nn.Module) -> int:
    try:
        ltx = _ltx_classes()
    except ImportError:
        return 0
    up_cls, enc_cls, dec_cls = _make_r5_classes()
    count = 0
    for m in model.modules():
        if type(m) is ltx.LTXVideoUpsampler3d and not m.residual:
            m.__class__ = up_cls
            count += 1
        elif type(m) is ltx.LTXVideoEncoder3d:
            m.__class__ = enc_cls
            count += 1
        elif type(m) is ltx.LTXVideoDecoder3d and m.time_embedder is None and m.timestep_scale_multiplier is None:
            m.__class__ = dec_cls
            count += 1
    return count


# ---------------------------------------------------------------------------------------------------------------
# pad — temporal replicate padding without repeat / concatenate


def apply_causal_pad_cat(model: nn.Module) -> int:
    try:
        ltx = _ltx_classes()
    except ImportError:
        return 0

    class CatPaddedCausalConv3d(ltx.LTXVideoCausalConv3d):
        """LTXVideoCausalConv3d padding time with `cat` of edge-frame slices (none for kt = 1)."""

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            kt = self.kernel_size[0]
            x = hidden_states
            if kt > 1:
                first = x[:, :, :1]
                if self.is_causal:
                    x = torch.cat([first] * (kt - 1) + [x], dim=2)
                else:
                    n = (kt - 1) // 2
                    if n:
                        x = torch.cat([first] * n + [x] + [x[:, :, -1:]] * n, dim=2)
            return self.conv(x)

    count = 0
    for m in model.modules():
        if type(m) is ltx.LTXVideoCausalConv3d:
            m.__class__ = CatPaddedCausalConv3d
            count += 1
    return count


# ---------------------------------------------------------------------------------------------------------------
# rms_norm_view / rms_norm_fp16 — diffusers RMSNorm without affine weights


def _rms_classes():
    from diffusers.models.normalization import RMSNorm

    class DelegableRMSNorm(RMSNorm):
        """Mean over (-2, -1) of an (N, 1, C, 1) view: XNNPACK takes it; the last-axis 5-D mean stays portable."""

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            shape = hidden_states.shape
            c = shape[-1]
            v = hidden_states.to(torch.float32).pow(2).reshape(-1, 1, c, 1).mean(dim=(-2, -1), keepdim=True)
            v = v.reshape(*shape[:-1], 1)
            return (hidden_states * torch.rsqrt(v + self.eps)).to(hidden_states.dtype)

    class FusedRMSNorm(RMSNorm):
        """`F.rms_norm`: coremltools lowers it overflow-safely in fp16 (x / max|x| before squaring)."""

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            return F.rms_norm(hidden_states, (hidden_states.shape[-1],), eps=self.eps)

    return RMSNorm, DelegableRMSNorm, FusedRMSNorm


def _apply_rms(model: nn.Module, which: int) -> int:
    try:
        classes = _rms_classes()
    except ImportError:
        return 0
    base, new = classes[0], classes[which]
    count = 0
    for m in model.modules():
        if type(m) is base and m.weight is None:
            m.__class__ = new
            count += 1
    return count


def apply_rms_norm_view(model: nn.Module) -> int:
    return _apply_rms(model, 1)


def apply_rms_norm_fp16(model: nn.Module) -> int:
    return _apply_rms(model, 2)


# ---------------------------------------------------------------------------------------------------------------
# ln — LayerNorm over one axis from delegable ops


class _LayerNormParameters(nn.Module):
    """Holds an nn.LayerNorm's own parameters (same keys), for the LayerNorm rewrites below to share."""

    def __init__(self, ln: nn.LayerNorm):
        super().__init__()
        self.normalized_shape = tuple(ln.normalized_shape)
        self.eps = ln.eps
        self.weight = ln.weight
        self.bias = ln.bias


class DelegableLayerNorm(_LayerNormParameters):
    """nn.LayerNorm over the last axis as mean / variance reductions on an (N, 1, C, 1) view (XNNPACK takes
    them; `native_layer_norm` stays on portable kernels and splits the delegate graph). Same weights and keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        c = shape[-1]
        y = x.reshape(-1, 1, c, 1)
        d = y - y.mean(dim=(-2, -1), keepdim=True)
        var = (d * d).mean(dim=(-2, -1), keepdim=True)
        out = (d * torch.rsqrt(var + self.eps)).reshape(shape)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


def apply_layer_norm_view(model: nn.Module) -> int:
    return _swap_children(model, lambda m: type(m) is nn.LayerNorm and len(m.normalized_shape) == 1,
                          DelegableLayerNorm)


# ---------------------------------------------------------------------------------------------------------------
# Trace-time substitutions and converter registrations


def _rotate_half_rank5(x: torch.Tensor) -> torch.Tensor:
    """`models.rope.rotate_half_per_axis` without its rank-6 view (Core ML allows rank ≤ 5); same values."""
    *lead, d = x.shape
    y = x.reshape(-1, 3, 2, d // 6)
    x1, x2 = y.unbind(-2)
    return torch.stack([-x2, x1], dim=-2).reshape(*lead, d)


def _channel_rms_delegable(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Turbo-VAED's `channel_rms_norm` with the channel mean taken on an (N, 1, C, 1) view (XNNPACK-delegable)."""
    c = x.shape[1]
    v = x.pow(2).movedim(1, -1).reshape(-1, 1, c, 1).mean(dim=(-2, -1), keepdim=True)
    v = v.reshape(x.shape[0], *x.shape[2:], 1).movedim(-1, 1)
    return x * torch.rsqrt(v + eps)


@contextlib.contextmanager
def _channel_rms_as(form: Callable[[torch.Tensor, float], torch.Tensor]) -> Iterator[None]:
    """Trace Turbo-VAED's channel RMS norm through `form(x, eps)`; the original is restored on exit."""
    from mi2v_export.models import turbo_vaed

    original = turbo_vaed.channel_rms_norm
    eps = turbo_vaed.RMS_EPS
    turbo_vaed.channel_rms_norm = lambda x, eps=eps: form(x, eps)
    try:
        yield
    finally:
        turbo_vaed.channel_rms_norm = original


def turbo_channel_rms() -> contextlib.AbstractContextManager:
    """While exporting for ExecuTorch: trace Turbo-VAED's channel RMS norm through a delegable form."""
    return _channel_rms_as(_channel_rms_delegable)


def _conv2d_batch_one(conv2d: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # F.conv2d's signature
        if input.dim() != 4 or input.shape[0] == 1:
            return conv2d(input, weight, bias, stride, padding, dilation, groups)
        return torch.cat([conv2d(x, weight, bias, stride, padding, dilation, groups) for x in input.split(1)])
    return conv


@contextlib.contextmanager
def conv2d_batch_one() -> Iterator[None]:
    """While exporting for Vulkan: every 2-D convolution over a batch of frames is traced as one batch-1
    convolution per frame (the same weight) joined with cat. ExecuTorch's Vulkan partitioner skips a conv whose
    batch is not 1 ("op args not supported"), and the conv3d_as_conv2d rewrite and the denoiser's GLUMBConv put the frames in
    the batch, so without this every VAE conv stays on the portable CPU kernels."""
    original = F.conv2d
    F.conv2d = _conv2d_batch_one(original)
    try:
        yield
    finally:
        F.conv2d = original


@contextlib.contextmanager
def _swapped(owner, name: str, replacement) -> Iterator[None]:
    """Trace-time substitution: `owner.name` is `replacement` inside the block, the original again after."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def rope_rank5() -> Iterator[None]:
    """While exporting for Core ML: trace the denoiser's RoPE rotate-half through a rank-≤5 form."""
    from mi2v_export.models import rope

    with _swapped(rope, "rotate_half_per_axis", _rotate_half_rank5):
        yield


_coreml_registered = False


def register_coreml_aliases() -> None:
    """coremltools converters for ops torch.export leaves that it does not know: `concatenate` → cat (B3) and
    `alias` → noop (B5, the encoder on one image). Idempotent."""
    global _coreml_registered
    if _coreml_registered:
        return
    from coremltools.converters.mil.frontend.torch.ops import cat, noop
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op

    register_torch_op(cat, torch_alias=["concat", "concatenate"], override=True)
    register_torch_op(noop, torch_alias=["alias"], override=True)
    _coreml_registered = True


# ---------------------------------------------------------------------------------------------------------------
# QNN HTP: the HTP refuses Sqrt and LayerNormalization on 5-D tensors, and its GatherND returns wrong values
# (measured on the QNN 2.51 simulator: the denoiser's per-frame conditioning came out at 2 dB). Each form below
# computes the same function with every norm on a rank-4 view and no gather.


def as_rank4(x: torch.Tensor) -> torch.Tensor:
    """A 5-D (or higher) tensor as 4-D with its leading axes merged: (B, T, H, W, C) → (B·T, H, W, C)."""
    return x if x.dim() <= 4 else x.reshape(-1, *x.shape[-3:])


def _rms_over_last_axis_rank4(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x², last axis) + eps) on a rank-4 view (the HTP's channel axis is the last one)."""
    y = as_rank4(x)
    v = y.to(torch.float32).pow(2).mean(dim=-1, keepdim=True)
    return (y * torch.rsqrt(v + eps)).to(x.dtype).reshape(x.shape)


def _rank4_rms_class():
    from diffusers.models.normalization import RMSNorm

    class RankFourRMSNorm(RMSNorm):
        """diffusers RMSNorm (no affine) on a rank-4 view (leading axes merged)."""

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            return _rms_over_last_axis_rank4(hidden_states, self.eps)

    return RMSNorm, RankFourRMSNorm


def apply_rms_norm_rank4(model: nn.Module) -> int:
    try:
        base, new = _rank4_rms_class()
    except ImportError:
        return 0
    count = 0
    for m in model.modules():
        if type(m) is base and m.weight is None:
            m.__class__ = new
            count += 1
    return count


class RankFourLayerNorm(_LayerNormParameters):
    """nn.LayerNorm over the last axis, applied to a rank-4 view (one LayerNormalization the HTP takes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(as_rank4(x), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.reshape(x.shape)


def apply_layer_norm_rank4(model: nn.Module) -> int:
    return _swap_children(model, lambda m: type(m) is nn.LayerNorm and len(m.normalized_shape) == 1,
                          RankFourLayerNorm)


def _channel_rms_rank4(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Turbo-VAED's `channel_rms_norm` (over dim 1 of (B, C, T, H, W)) on the rank-4 view (B, C, T·H, W)."""
    b, c, t, h, w = x.shape
    y = x.reshape(b, c, t * h, w)
    return (y * torch.rsqrt(y.pow(2).mean(dim=1, keepdim=True) + eps)).reshape(x.shape)


def channel_rms_rank4() -> contextlib.AbstractContextManager:
    """While exporting for QNN: trace Turbo-VAED's channel RMS norm with its Sqrt on a rank-4 view."""
    return _channel_rms_as(_channel_rms_rank4)


def _spread_over_frames_by_slices(values: torch.Tensor, frames: int) -> torch.Tensor:
    """`models.denoiser.spread_over_frames` as slice + expand + cat instead of an index gather; same values."""
    b, _, d = values.shape
    if frames == 1:
        return values[:, :1]
    return torch.cat([values[:, :1], values[:, 1:2].expand(b, frames - 1, d)], dim=1)


@contextlib.contextmanager
def frame_conditioning_without_gather() -> Iterator[None]:
    """While exporting for QNN: spread the denoiser's two conditioning rows over the frames without GatherND."""
    from mi2v_export.models import denoiser

    with _swapped(denoiser, "spread_over_frames", _spread_over_frames_by_slices):
        yield


def _layer_norm_in_fp32(x: torch.Tensor, eps: float) -> torch.Tensor:
    """The denoiser's LayerNorm as an fp32 island: what PyTorch's own fp16 LayerNorm does (fp32 accumulation, one
    rounding of the output); a no-op on fp32 graphs."""
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)


@contextlib.contextmanager
def layer_norm_fp32() -> Iterator[None]:
    """While exporting for ExecuTorch: the denoiser's functional LayerNorm (portable, never delegated) in fp32."""
    from mi2v_export.kernels import denoiser as mobile_denoiser
    from mi2v_export.models import denoiser

    with _swapped(denoiser, "layer_norm", _layer_norm_in_fp32), \
            _swapped(mobile_denoiser, "layer_norm", _layer_norm_in_fp32):
        yield


# ---------------------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class LoweringRewrite:
    """One lowering rewrite: a module swap (`apply`, returns how many modules it swapped) or a trace-time
    substitution (`trace`, a context manager entered around torch.export)."""

    name: str
    summary: str
    apply: Callable[[nn.Module], int] | None = None
    trace: Callable[[], contextlib.AbstractContextManager] | None = None


LOWERING_REWRITES: dict[str, LoweringRewrite] = {r.name: r for r in (
    LoweringRewrite("conv3d_as_conv2d", "nn.Conv3d → Conv2d over frames (temporal taps folded into channels)",
                    apply=apply_conv3d_as_conv2d),
    LoweringRewrite("shuffle_rank5", "rank-8 pixel (un)shuffle → rank-≤5 reshape/permute chains", apply=apply_shuffle_rank5),
    LoweringRewrite("causal_pad_cat", "temporal edge padding with cat of slices (no repeat, no concatenate)",
                    apply=apply_causal_pad_cat),
    LoweringRewrite("rms_norm_view", "RMSNorm mean over an (N,1,C,1) view (delegable)", apply=apply_rms_norm_view),
    LoweringRewrite("rms_norm_fp16", "RMSNorm as F.rms_norm (fp16-safe on Core ML)", apply=apply_rms_norm_fp16),
    LoweringRewrite("layer_norm_view", "LayerNorm as mean/variance over an (N,1,C,1) view (delegable)",
                    apply=apply_layer_norm_view),
    LoweringRewrite("channel_rms_view", "Turbo-VAED channel RMS as an (N,1,C,1) mean (while tracing)",
                    trace=turbo_channel_rms),
    LoweringRewrite("rope_rank5", "rank-6 RoPE rotate-half as rank ≤ 5 (while tracing)", trace=rope_rank5),
    LoweringRewrite("conv2d_batch1", "a batch of frames as one batch-1 conv per frame (while tracing)",
                    trace=conv2d_batch_one),
    LoweringRewrite("rms_norm_rank4", "RMSNorm on a rank-4 view with leading axes merged (QNN HTP: no 5-D Sqrt)",
                    apply=apply_rms_norm_rank4),
    LoweringRewrite("layer_norm_rank4", "LayerNorm on a rank-4 view with leading axes merged (QNN HTP: no 5-D "
                    "LayerNormalization)", apply=apply_layer_norm_rank4),
    LoweringRewrite("channel_rms_rank4", "Turbo-VAED channel RMS on the rank-4 view (B, C, T·H, W) (while tracing)",
                    trace=channel_rms_rank4),
    LoweringRewrite("frame_conditioning_without_gather", "the denoiser's per-frame conditioning as slice + expand "
                    "+ cat, no GatherND (wrong on the QNN HTP) (while tracing)",
                    trace=frame_conditioning_without_gather),
    LoweringRewrite("layer_norm_fp32", "the denoiser's LayerNorm computed in fp32 and cast back (ExecuTorch's "
                    "portable fp16 LayerNorm accumulates in fp16) (while tracing)", trace=layer_norm_fp32),
)}

# What each target (and ExecuTorch delegate) applies, in order: module swaps, then trace-time substitutions.
FOR_TARGET: dict[str, tuple[str, ...]] = {
    "onnx": (),
    "executorch": ("causal_pad_cat", "shuffle_rank5", "conv3d_as_conv2d", "rms_norm_view", "layer_norm_view"),
    "coreml": ("causal_pad_cat", "rms_norm_fp16"),
    "qnn": ("shuffle_rank5", "rms_norm_rank4", "layer_norm_rank4"),  # onnx --delegate qnn (exporters/qnn.py)
}
TRACE_FOR_TARGET: dict[str, tuple[str, ...]] = {
    "onnx": (),
    "executorch": ("channel_rms_view", "layer_norm_fp32"),
    "coreml": ("rope_rank5",),
    "qnn": ("channel_rms_rank4", "frame_conditioning_without_gather"),
}


@contextlib.contextmanager
def tracing(names: tuple[str, ...] | list[str]) -> Iterator[None]:
    """Enter the named trace-time substitutions (restored on exit, also on errors)."""
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(LOWERING_REWRITES[name].trace())
        yield


def apply_rewrites(model: nn.Module, names: tuple[str, ...] | list[str]) -> dict[str, int]:
    """Apply the named rewrites in place; returns name → number of modules swapped (0 = nothing to rewrite)."""
    done = {}
    for name in names:
        done[name] = LOWERING_REWRITES[name].apply(model)
    return done
