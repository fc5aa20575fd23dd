"""LiteLA (ReLU linear attention) re-associated: K^T·V (d×d per head) first, the normaliser as its own reduction.

Reference (mi2v_export/models/denoiser.py `LinearAttention`): pads V with a row of ones to (B,h,d+1,N) and computes
`(v_pad @ k) @ q^T`, slicing the last row off as the normaliser; q/k/v are split with a 5-D-ish view chain and RoPE
rotates through a reshape/unbind/stack. Here, per head group:

    kv   = K_g^T V_g · s              (G, d, d)       contraction over all N tokens
    ksum = Σ_n K_g[n] · s             (G, d)          the normaliser's own reduction (no ones row, no pad, no slice)
    out  = (Q_g kv) / (Q_g ksum + eps · s)

s = 2^-ceil(log2 N) (`token_scale`) cancels in the ratio and, a power of two, changes no fp32 rounding; without it
Q·kv and Q·ksum grow with N and leave fp16's range at 720p (N = 2760: |Q·kv| up to 7.1e4 > 65504 with seeded
weights; the QNN HTP runs this core in fp16 and the 720p denoiser fell to 18.8 dB).

Two layouts, same weights: token-major `forward(x (B,N,C), rope)` (a drop-in for the reference module) and
channels-first `forward_cf(x (B·T,C,1,S), rope, frames)` used by the channels-first block, where a head is a free
channel slice (B·T, G, d, S), per-frame partial K^T·V sums are added over the frames, and nothing is transposed
except the small d×d products. Only 4-D tensors, no 5-D permutes.

Parameters are the reference module's own (`qkv`, `q_norm`, `k_norm`, `proj`), so state-dict keys are unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mi2v_export.models.denoiser import FP16_MAX, LinearAttention

from .layout import Conv1x1, rms_norm_channels, rms_norm_tokens, token_sum
from .rope import apply_rope, pieces


def token_scale(tokens: int) -> float:
    """2^-ceil(log2 N): brings sums over N tokens back to the size of one term (exact in fp32, see above)."""
    return 2.0 ** -math.ceil(math.log2(max(tokens, 1)))


def head_groups(heads: int, heads_per_group: int) -> list[tuple[int, int]]:
    g = heads if heads_per_group <= 0 else min(heads_per_group, heads)
    return [(h0, min(h0 + g, heads)) for h0 in range(0, heads, g)]


class MobileLinearAttention(nn.Module):
    takes_rope_tables = True  # forward gets the shared RopeTables, not the raw angle table

    def __init__(self, ref: LinearAttention, heads_per_group: int = 0, fp32_accumulate: bool = True):
        super().__init__()
        self.heads, self.head_dim, self.eps = ref.heads, ref.head_dim, ref.eps
        self.qkv, self.q_norm, self.k_norm, self.proj = ref.qkv, ref.q_norm, ref.k_norm, ref.proj
        self.heads_per_group = heads_per_group
        self.fp32_accumulate = fp32_accumulate

    def extra_repr(self) -> str:
        return f"heads={self.heads}, heads_per_group={self.heads_per_group or self.heads}, " \
               f"fp32_accumulate={self.fp32_accumulate}"

    def _acc(self, t: torch.Tensor) -> torch.Tensor:
        return t.float() if self.fp32_accumulate else t

    # token-major: x (B, N, C) ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, rope) -> torch.Tensor:
        b, n, c = x.shape
        h, d = self.heads, self.head_dim
        q, k, v = pieces(self.qkv(x), c, -1)
        q = rms_norm_tokens(q, self.q_norm.weight, self.q_norm.eps)
        k = rms_norm_tokens(k, self.k_norm.weight, self.k_norm.eps)
        cos, sin = rope.get(x.dtype, "tokens")  # (N, 1, d): upstream's LiteLA RoPE runs in the model dtype
        q = F.relu(apply_rope(q.view(b, n, h, d), cos, sin, 3))
        k = F.relu(apply_rope(k.view(b, n, h, d), cos, sin, 3))
        v = v.view(b, n, h, d)
        outs, scale = [], token_scale(n)
        for h0, h1 in head_groups(h, self.heads_per_group):
            g = h1 - h0
            qg, kg, vg = (self._acc(t[:, :, h0:h1]) for t in (q, k, v))  # (B, N, G, d)
            kt = kg.permute(0, 2, 3, 1).reshape(b * g, d, n)
            kv = torch.bmm(kt, vg.transpose(1, 2).reshape(b * g, n, d)) * scale  # (B·G, d, d): K^T V
            ksum = token_sum(kt) * scale  # (B·G, d, 1): the normaliser's own reduction
            qh = qg.transpose(1, 2).reshape(b * g, n, d)
            out = torch.bmm(qh, kv) / (torch.bmm(qh, ksum) + self.eps * scale)  # (B·G, N, d)
            outs.append(out.to(x.dtype).view(b, g, n, d).transpose(1, 2).reshape(b, n, g * d))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        return self.proj(out).clip(-FP16_MAX, FP16_MAX)

    # channels-first: x (B·T, C, 1, S) ---------------------------------------------------------------------------
    def forward_cf(self, x: torch.Tensor, rope, frames: int) -> torch.Tensor:
        bt, c, _, s = x.shape
        b, h, d = bt // frames, self.heads, self.head_dim
        q, k, v = pieces(self.qkv(x), c, 1)  # (B·T, C, 1, S) each
        q = rms_norm_channels(q, self.q_norm.weight, self.q_norm.eps)
        k = rms_norm_channels(k, self.k_norm.weight, self.k_norm.eps)
        cos, sin = rope.get(x.dtype, "channels")  # (T, 1, d, S)
        if b > 1:
            cos, sin = cos.repeat(b, 1, 1, 1), sin.repeat(b, 1, 1, 1)
        q = F.relu(apply_rope(q.reshape(bt, h, d, s), cos, sin, 2))  # (B·T, h, d, S): a head is a channel slice
        k = F.relu(apply_rope(k.reshape(bt, h, d, s), cos, sin, 2))
        v = v.reshape(bt, h, d, s)
        outs, scale = [], token_scale(frames * s)
        for h0, h1 in head_groups(h, self.heads_per_group):
            g = h1 - h0
            qg, kg, vg = (self._acc(t[:, h0:h1]).reshape(bt * g, d, s) for t in (q, k, v))
            # per-frame partial V·K^T (= (K^T V)^T), summed over the frames; the d×d products are tiny
            vk = torch.bmm(vg, kg.transpose(1, 2)).view(b, frames, g * d * d).sum(1) * scale
            ksum = kg.sum(-1).view(b, frames, g * d).sum(1) * scale
            vk = vk[:, None].expand(b, frames, g * d * d).reshape(bt * g, d, d)
            ksum = ksum[:, None].expand(b, frames, g * d).reshape(bt * g, 1, d)
            out = torch.bmm(vk, qg) / (torch.bmm(ksum, qg) + self.eps * scale)  # (B·T·G, d, S)
            outs.append(out.to(x.dtype).view(bt, g * d, 1, s))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        return self.proj(out).clip(-FP16_MAX, FP16_MAX)

    def to_channels_first(self) -> None:
        """Swap qkv/proj for 1x1 convs over the same storage (same state-dict keys and shapes)."""
        self.qkv, self.proj = Conv1x1(self.qkv), Conv1x1(self.proj)
