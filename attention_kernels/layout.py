"""Channels-first helpers (Apple's ANE recipe): 1x1 convs over a shared Linear's storage, norms over the channel axis.

Layout. The channels-first blocks keep activations as (B·T, C, 1, S): the (B, C, 1, N) recipe with the latent
frames folded into the batch. This is the only 4-D channels-first layout in which

- the GLUMBConv FFN takes its input as (B·T, C, H, W) through a free view (no token↔image transpose);
- the per-frame adaLN modulation (frame 0 is the conditioning frame) broadcasts as (B·T, C, 1, 1);
- linear attention needs no transpose at all (per-frame partial K^T·V sums, see linear_attention.py).

For a single frame (T = 1) it is exactly (B, C, 1, N).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _squeeze_weight(module, state_dict, prefix, local_metadata):
    key = prefix + "weight"
    if key in state_dict:
        state_dict[key] = state_dict[key].reshape(module.out_features, module.in_features)


def _unsqueeze_weight(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                      error_msgs):
    key = prefix + "weight"
    if key in state_dict and state_dict[key].dim() == 2:
        state_dict[key] = state_dict[key].reshape(module.out_features, module.in_features, 1, 1)


class Conv1x1(nn.Module):
    """A Linear as a 1x1 Conv2d for (B, C, 1, N) inputs (also accepts token-major (..., C) inputs).

    The 4-D weight is a view of the Linear's parameter (no copy); state-dict hooks store and load it in the Linear's
    2-D shape, so a rewritten model has the reference's keys *and* shapes and loads any checkpoint unchanged.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight
        self.out_features, self.in_features = w.shape
        self.weight = nn.Parameter(w.detach().view(self.out_features, self.in_features, 1, 1),
                                   requires_grad=w.requires_grad)
        self.bias = linear.bias
        self.register_state_dict_post_hook(_squeeze_weight)
        self.register_load_state_dict_pre_hook(_unsqueeze_weight)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, kernel_size=1, bias={self.bias is not None}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return F.conv2d(x, self.weight, self.bias)
        return F.linear(x, self.weight.view(self.out_features, self.in_features), self.bias)


def token_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over the last axis, kept: the q / k RMSNorm's statistic (its own name so the XNNPACK export can trace
    it as a product the delegate takes: `denoiser_delegable` in exporters/rewrites/trace.py)."""
    return x.mean(-1, keepdim=True)


def rms_norm_tokens(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Sana RMSNorm over the last axis (fp32 inside), with x·x instead of pow(x, 2) (same bits, cheaper op)."""
    xf = x.float()
    return (xf * torch.rsqrt(token_mean(xf * xf) + eps)).type_as(x) * weight


def token_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the last (token) axis, kept: the linear attention's normaliser (traced like `token_mean`)."""
    return x.sum(-1, keepdim=True)


def rms_norm_channels(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The same RMSNorm over the channel axis of (B, C, 1, N)."""
    xf = x.float()
    out = (xf * torch.rsqrt((xf * xf).mean(1, keepdim=True) + eps)).type_as(x)
    return out * weight.view(1, -1, 1, 1)


def layer_norm_channels(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Affine-free LayerNorm over the channel axis of (B, C, 1, N) (two-pass mean / biased variance)."""
    xc = x - x.mean(1, keepdim=True)
    return xc * torch.rsqrt((xc * xc).mean(1, keepdim=True) + eps)


def cf_to_tokens(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(B·T, C, 1, S) → (B, T·S, C)."""
    bt, c, _, s = x.shape
    return x.view(bt // frames, frames, c, s).transpose(2, 3).reshape(bt // frames, frames * s, c)


def tokens_to_cf(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, T·S, C) → (B·T, C, 1, S)."""
    b, n, c = x.shape
    s = n // frames
    return x.view(b, frames, s, c).transpose(2, 3).reshape(b * frames, c, 1, s)
