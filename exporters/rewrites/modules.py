"""Module swaps of the lowering rewrites: exact replacements of an already-loaded model's modules by small modules
built from the *same weights* (or a switch of a module's class to a subclass whose forward is written differently),
so the result computes the same function. The registry and what each does: exporters/rewrites/__init__.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mi2v_export.models.shuffle import depth_to_space, space_to_depth

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

# (depth_to_space / space_to_depth live in mi2v_export/models/shuffle.py: the tiling stages use them too)


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
    return _swap_weightless(model, classes[0], classes[which])


def _swap_weightless(model: nn.Module, base: type, new: type) -> int:
    """Give every weightless `base` module the class `new` (same state, other forward); how many were swapped."""
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
    return _swap_weightless(model, base, new)


class RankFourLayerNorm(_LayerNormParameters):
    """nn.LayerNorm over the last axis, applied to a rank-4 view (one LayerNormalization the HTP takes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(as_rank4(x), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.reshape(x.shape)


def apply_layer_norm_rank4(model: nn.Module) -> int:
    return _swap_children(model, lambda m: type(m) is nn.LayerNorm and len(m.normalized_shape) == 1,
                          RankFourLayerNorm)
