"""Softmax attention (blocks 7 and 15) with an explicit softmax, query chunks and head groups.

Reference (`SoftmaxAttention`): one 5-D permute of qkv, RoPE through reshape/unbind/stack, then the whole
(B, h, N, N) score tensor (16 × 2760² × 4 B ≈ 488 MB at 720p), scaled after the matmul, softmax, P·V.

Here (Apple's split-einsum recipe, `SPLIT_EINSUM_V2`): the heads are processed in groups of `heads_per_group`
(1 = one head after another), the queries in chunks of `query_chunk` tokens, so at most
G × chunk × N scores exist at a time (≈ 5.6 MB for one head and 512 queries at 720p, a cache-sized tile). The
1/√d scale is folded into q (N·d multiplies instead of N²), RoPE is one gather with a signed sin table, and the
softmax is either the runtime's softmax on the last axis (`softmax="native"`: ONNX Softmax / XNNPACK softmax; never
scaled_dot_product_attention, which decomposes badly on XNNPACK and breaks Vulkan lowering) or written out as
max-subtract, exp, sum, reciprocal-multiply (`softmax="split"`, Apple's split softmax, for runtimes without a
softmax kernel).

Precision as the reference: q, k and RoPE in fp32, scores and softmax in fp32, probabilities cast to v's dtype
before P·V.
"""

from __future__ import annotations

import torch
from torch import nn

from mi2v_export.models.denoiser import SoftmaxAttention

from .layout import Conv1x1
from .linear_attention import head_groups
from .rope import apply_rope, pieces


def split_softmax(s: torch.Tensor) -> torch.Tensor:
    e = (s - s.amax(-1, keepdim=True)).exp()
    return e * e.sum(-1, keepdim=True).reciprocal()


class MobileSoftmaxAttention(nn.Module):
    takes_rope_tables = True  # forward gets the shared RopeTables, not the raw angle table

    def __init__(self, ref: SoftmaxAttention, heads_per_group: int = 1, query_chunk: int = 512,
                 softmax: str = "native"):
        super().__init__()
        if softmax not in ("native", "split"):
            raise ValueError(f"softmax must be 'native' or 'split', got {softmax!r}")
        self.heads, self.head_dim, self.scale = ref.heads, ref.head_dim, ref.scale
        self.qkv, self.proj = ref.qkv, ref.proj
        self.heads_per_group, self.query_chunk, self.softmax = heads_per_group, query_chunk, softmax

    def extra_repr(self) -> str:
        return (f"heads={self.heads}, heads_per_group={self.heads_per_group or self.heads}, "
                f"query_chunk={self.query_chunk or 'all'}, softmax={self.softmax}")

    def _core(self, q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B·G, N, d) scaled, kt (B·G, d, N), v (B·G, N, d) → (B·G, N, d); 3-D bmm only (no broadcast
        matmul, whose expand_copy ExecuTorch runs outside the XNNPACK delegate)."""
        n = q.shape[1]
        chunk = n if self.query_chunk <= 0 else min(self.query_chunk, n)
        outs = []
        for c0 in range(0, n, chunk):
            s = torch.bmm(q[:, c0:c0 + chunk], kt)  # (B·G, L, N) fp32
            p = s.softmax(dim=-1) if self.softmax == "native" else split_softmax(s)
            outs.append(torch.bmm(p.to(v.dtype), v))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    # token-major: x (B, N, C) ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, rope) -> torch.Tensor:
        b, n, c = x.shape
        h, d = self.heads, self.head_dim
        q, k, v = pieces(self.qkv(x), c, -1)
        cos, sin = rope.get(torch.float32, "tokens")
        q = apply_rope(q.float().view(b, n, h, d), cos, sin, 3) * self.scale
        k = apply_rope(k.float().view(b, n, h, d), cos, sin, 3)
        v = v.reshape(b, n, h, d)
        outs = []
        for h0, h1 in head_groups(h, self.heads_per_group):
            g = h1 - h0
            o = self._core(q[:, :, h0:h1].transpose(1, 2).reshape(b * g, n, d),
                           k[:, :, h0:h1].permute(0, 2, 3, 1).reshape(b * g, d, n),
                           v[:, :, h0:h1].transpose(1, 2).reshape(b * g, n, d))
            outs.append(o.view(b, g, n, d).transpose(1, 2).reshape(b, n, g * d))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        return self.proj(out)

    # channels-first: x (B·T, C, 1, S) ---------------------------------------------------------------------------
    def forward_cf(self, x: torch.Tensor, rope, frames: int) -> torch.Tensor:
        bt, c, _, s = x.shape
        b, h, d, n = bt // frames, self.heads, self.head_dim, frames * s
        q, k, v = pieces(self.qkv(x), c, 1)
        cos, sin = rope.get(torch.float32, "channels")  # (T, 1, d, S)
        if b > 1:
            cos, sin = cos.repeat(b, 1, 1, 1), sin.repeat(b, 1, 1, 1)
        q = apply_rope(q.float().reshape(bt, h, d, s), cos, sin, 2) * self.scale
        k = apply_rope(k.float().reshape(bt, h, d, s), cos, sin, 2)

        def all_tokens(t: torch.Tensor) -> torch.Tensor:  # (B·T, h, d, S) → (B, C, N): frames side by side
            return t.reshape(b, frames, h * d, s).transpose(1, 2).reshape(b, h * d, n)

        q, k, v = all_tokens(q), all_tokens(k), all_tokens(v.reshape(bt, h, d, s))
        outs = []
        for h0, h1 in head_groups(h, self.heads_per_group):
            g = h1 - h0
            kt = k[:, h0 * d:h1 * d].reshape(b * g, d, n)
            o = self._core(q[:, h0 * d:h1 * d].reshape(b * g, d, n).transpose(1, 2), kt,
                           v[:, h0 * d:h1 * d].reshape(b * g, d, n).transpose(1, 2))
            outs.append(o.transpose(1, 2).reshape(b, g * d, n))  # (B, G·d, N)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        out = out.reshape(b, c, frames, s).transpose(1, 2).reshape(bt, c, 1, s)
        return self.proj(out)

    def to_channels_first(self) -> None:
        self.qkv, self.proj = Conv1x1(self.qkv), Conv1x1(self.proj)
