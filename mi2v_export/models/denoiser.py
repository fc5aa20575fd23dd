"""MobileI2V denoiser (upstream `Mobiledit_300M_P1_D16`), re-implemented for any latent grid.

Checkpoint-compatible: parameter names and shapes are upstream's (shared/spec/architecture.md §1.2), minus the
two unused positional buffers `pos_embed` / `pos_embed_temporal`, which the checkpoint loader drops.

Differences from upstream that do not change the output:
- the token grid comes from the input (no hard-coded 2760 tokens / 23x40 RoPE grid);
- the per-token timestep takes only two values per sample (0 on the conditioning frame 0, t elsewhere) and the flow
  score one, so the time/flow embeddings and adaLN MLPs run once per distinct value and are broadcast per frame;
- the text path (`y_embedder`, `attention_y_norm`) has no effect upstream; its weights are kept loadable and never
  computed.

Precision: `dtype=torch.float32` by default. With float16 weights the forward reproduces upstream's casts: fp32
linear-attention core, fp32 RoPE + softmax scores in the softmax blocks with the probabilities cast to fp16 before
P·V, and the ±65504 clip of the linear-attention output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..presets import DenoiserConfig
from .rope import apply_rope, rope_angles, rope_cos_sin

FP16_MAX = 65504.0


class RMSNorm(nn.Module):
    """RMS norm over the last axis, computed in fp32 and cast back, then scaled (Sana's RMSNorm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        return out * self.weight


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm without affine parameters (the blocks' norm1/norm2 and the final norm)."""
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation `x·(1+scale) + shift` (upstream `t2i_modulate`)."""
    return x * (1 + scale) + shift


def spread_over_frames(values: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, 2, D) → (B, frames, D): value 0 on the conditioning frame 0, value 1 on every other frame."""
    pick = torch.tensor([0] + [1] * (frames - 1), device=values.device)
    return values[:, pick]


def timestep_embedding(s: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos, sin] of a 1-D tensor of scalars, computed in fp32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=s.device) / half)
    args = s.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Scalar → C via a 256-d sinusoidal embedding and a 2-layer SiLU MLP (used for σ and for the flow score)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, hidden_size, bias=True), nn.SiLU(),
                                 nn.Linear(hidden_size, hidden_size, bias=True))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(s, self.frequency_embedding_size).to(self.mlp[0].weight.dtype)
        return self.mlp(emb)


class TextMlp(nn.Module):
    """Names-only twin of timm's Mlp in the unused caption path (fc1 · GELU(tanh) · fc2)."""

    def __init__(self, in_features: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)


class CaptionEmbedder(nn.Module):
    """Unused text path: holds the checkpoint's keys (`y_embedding` buffer, `y_proj`), never called."""

    def __init__(self, caption_channels: int, hidden_size: int, max_length: int):
        super().__init__()
        self.register_buffer("y_embedding", torch.zeros(max_length, caption_channels))
        self.y_proj = TextMlp(caption_channels, hidden_size)


class LinearAttention(nn.Module):
    """LiteLA: ReLU-kernel linear attention with full-width RMS q/k norms and RoPE3D (blocks 0-6, 8-14)."""

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        c = cfg.hidden_size
        self.heads, self.head_dim, self.eps = cfg.num_heads, cfg.head_dim, cfg.linear_attn_eps
        self.qkv = nn.Linear(c, 3 * c, bias=False)
        self.q_norm = RMSNorm(c, cfg.qk_norm_eps)
        self.k_norm = RMSNorm(c, cfg.qk_norm_eps)
        self.proj = nn.Linear(c, c)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, c).unbind(2)
        q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.view(b, n, self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B,h,N,d)
        cos, sin = rope_cos_sin(rope, x.dtype)  # upstream: RoPE in the model dtype
        q, k = F.relu(apply_rope(q, cos, sin)), F.relu(apply_rope(k, cos, sin))
        q, k, v = q.float(), k.float(), v.float()  # fp32_attention: the core always runs in fp32
        v_pad = F.pad(v.transpose(-1, -2), (0, 0, 0, 1), value=1.0)  # (B,h,d+1,N), last row = ones
        out = (v_pad @ k) @ q.transpose(-1, -2)  # (B,h,d+1,N); last row = normaliser Σ_n k_n·q_m
        out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        out = out.to(x.dtype).reshape(b, c, n).transpose(1, 2)
        return self.proj(out).clip(-FP16_MAX, FP16_MAX)


class SoftmaxAttention(nn.Module):
    """Softmax attention with qkv bias and RoPE3D, no q/k norm (blocks 7 and 15); explicit softmax, not SDPA."""

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        c = cfg.hidden_size
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.scale = cfg.head_dim ** -0.5
        self.qkv = nn.Linear(c, 3 * c, bias=True)
        self.proj = nn.Linear(c, c)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        cos, sin = rope_cos_sin(rope, torch.float32)  # fp32_attention: q, k and their RoPE in fp32
        q, k = apply_rope(q.float(), cos, sin), apply_rope(k.float(), cos, sin)
        probs = ((q @ k.transpose(-1, -2)) * self.scale).softmax(dim=-1).to(v.dtype)
        out = (probs @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class ConvLayer(nn.Module):
    """A Conv2d with an optional activation, named `.conv` like upstream's ConvLayer."""

    def __init__(self, cin: int, cout: int, kernel: int, groups: int = 1, bias: bool = True, act: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=bias)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class GLUMBConv(nn.Module):
    """Per-frame 2-D FFN: 1x1 expand + SiLU, 3x3 depthwise, value·SiLU(gate), 1x1 project (no bias)."""

    def __init__(self, hidden_size: int, ffn_hidden: int):
        super().__init__()
        self.inverted_conv = ConvLayer(hidden_size, 2 * ffn_hidden, 1, act=True)
        self.depth_conv = ConvLayer(2 * ffn_hidden, 2 * ffn_hidden, 3, groups=2 * ffn_hidden)
        self.point_conv = ConvLayer(ffn_hidden, hidden_size, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B·T, C, H, W) → (B·T, C, H, W)."""
        x = self.depth_conv(self.inverted_conv(x))
        value, gate = x.chunk(2, dim=1)
        return self.point_conv(value * F.silu(gate))


class DiTBlock(nn.Module):
    """adaLN-single block: modulated attention + modulated GLUMBConv, both gated residuals.

    `x` is kept as (B, T, S, C) so the per-frame modulation (frame 0 = conditioning) broadcasts over the S tokens
    of each frame.
    """

    def __init__(self, cfg: DenoiserConfig, softmax: bool):
        super().__init__()
        self.eps = cfg.norm_eps
        self.attn = SoftmaxAttention(cfg) if softmax else LinearAttention(cfg)
        self.mlp = GLUMBConv(cfg.hidden_size, cfg.ffn_hidden)
        self.scale_shift_table = nn.Parameter(torch.randn(6, cfg.hidden_size) / cfg.hidden_size ** 0.5)

    def forward(self, x: torch.Tensor, mod: torch.Tensor, rope: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """x (B,T,S,C); mod (B,T,6,C) = t_block + flow_block output per frame; rope angles (N,3,D/2)."""
        b, t, s, c = x.shape
        m = (self.scale_shift_table[None, None] + mod).unsqueeze(3)  # (B,T,6,1,C)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = m.unbind(2)
        h = modulate(layer_norm(x, self.eps), shift_msa, scale_msa)
        x = x + gate_msa * self.attn(h.reshape(b, t * s, c), rope).view(b, t, s, c)
        h = modulate(layer_norm(x, self.eps), shift_mlp, scale_mlp)
        h = h.reshape(b * t, hw[0], hw[1], c).permute(0, 3, 1, 2)
        h = self.mlp(h).permute(0, 2, 3, 1).reshape(b, t, s, c)
        return x + gate_mlp * h


class PatchEmbed(nn.Module):
    """1x1 Conv2d patch embedding applied to each latent frame (patch size 1)."""

    def __init__(self, in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=1)


class FinalLayer(nn.Module):
    """LN → modulation by the *pre*-t_block time embedding (no flow term) → Linear to the latent channels."""

    def __init__(self, hidden_size: int, out_channels: int, eps: float):
        super().__init__()
        self.eps = eps
        self.linear = nn.Linear(hidden_size, out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size ** 0.5)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """x (B,T,S,C); t_emb (B,T,C) per frame."""
        shift, scale = (self.scale_shift_table[None, None] + t_emb[:, :, None]).unsqueeze(3).unbind(2)
        return self.linear(modulate(layer_norm(x, self.eps), shift, scale))


class MobileI2VDenoiser(nn.Module):
    """forward(latent (B,128,T,H,W), timestep (B,) on 0-1000, flow_score (B,)) → velocity (B,128,T,H,W).

    Latent frame 0 must hold the clean conditioning latent: it is embedded at σ = 0, the other frames at t/1000.
    """

    def __init__(self, cfg: DenoiserConfig | None = None):
        super().__init__()
        cfg = cfg or DenoiserConfig()
        self.config = cfg
        c = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.in_channels, c)
        self.t_embedder = TimestepEmbedder(c, cfg.frequency_embedding_size)
        self.flow_embedder = TimestepEmbedder(c, cfg.frequency_embedding_size)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))
        self.flow_block = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))
        self.y_embedder = CaptionEmbedder(cfg.caption_channels, c, cfg.model_max_length)
        self.attention_y_norm = RMSNorm(c, cfg.qk_norm_eps)
        self.blocks = nn.ModuleList(DiTBlock(cfg, softmax=i in cfg.softmax_blocks) for i in range(cfg.depth))
        self.final_layer = FinalLayer(c, cfg.in_channels, cfg.norm_eps)

    def frame_conditioning(self, timestep: torch.Tensor, flow_score: torch.Tensor, frames: int):
        """Per-frame time embedding (B,T,C) and adaLN input t_block+flow_block (B,T,6C).

        Upstream embeds min(t, (1-cond_mask)·1000)/1000 per token: 0-or-negative t on frame 0, min(t, 1000)
        elsewhere. Only these two values exist, so embed them once and broadcast over the frames.
        """
        dtype = self.t_embedder.mlp[0].weight.dtype
        t = timestep.to(dtype).float()  # upstream casts the timestep to the model dtype first (fp16 quantisation)
        sigma = torch.stack([torch.clamp(t, max=0.0), torch.clamp(t, max=1000.0)], dim=1) / 1000.0  # (B,2)
        b = sigma.shape[0]
        t_emb = self.t_embedder(sigma.to(dtype).reshape(-1)).view(b, 2, -1)
        t_mod = self.t_block(t_emb)  # (B,2,6C)
        f_mod = self.flow_block(self.flow_embedder(flow_score.float().reshape(-1)))[:, None]  # (B,1,6C); raw score
        mod = t_mod + f_mod  # (B,2,6C)
        return spread_over_frames(t_emb, frames), spread_over_frames(mod, frames)

    def embed_inputs(self, latent: torch.Tensor, timestep: torch.Tensor, flow_score: torch.Tensor):
        """The forward's prologue, shared with the rewritten denoiser: the patch embedding per frame as
        (B·T, C, H, W), and a scalar timestep / flow_score broadcast over the batch."""
        b, cin, t, h, w = latent.shape
        x = latent.to(self.x_embedder.proj.weight.dtype).transpose(1, 2).reshape(b * t, cin, h, w)
        timestep = timestep.reshape(-1).expand(b) if timestep.numel() == 1 else timestep
        flow_score = flow_score.reshape(-1).expand(b) if flow_score.numel() == 1 else flow_score
        return self.x_embedder.proj(x), timestep, flow_score

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor, flow_score: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        b, cin, t, h, w = latent.shape
        s, c = h * w, cfg.hidden_size
        x, timestep, flow_score = self.embed_inputs(latent, timestep, flow_score)
        x = x.flatten(2).transpose(1, 2).reshape(b, t, s, c)
        t_emb, mod = self.frame_conditioning(timestep, flow_score, t)
        mod = mod.view(b, t, 6, c)
        rope = rope_angles((t, h, w), cfg.head_dim, cfg.rope_scales, cfg.rope_theta, device=latent.device)
        for block in self.blocks:
            x = block(x, mod, rope, (h, w))
        out = self.final_layer(x, t_emb)  # (B,T,S,128)
        return out.view(b, t, h, w, cin).permute(0, 4, 1, 2, 3)
