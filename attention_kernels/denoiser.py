"""The rewritten denoiser: the reference's own submodules (shared, not copied) driven by a rewritten forward.

`MobileDenoiser` subclasses the reference `MobileI2VDenoiser` and registers the same children under the same names
(x_embedder, t_embedder, flow_embedder, t_block, flow_block, y_embedder, attention_y_norm, blocks, final_layer), so
`state_dict()` has the reference's keys and shapes. Rewrites (see plan.py) replace blocks / attention modules with
the forms in this package and switch the layout; with no rewrite enabled the forward is the reference's, op for op.
"""

from __future__ import annotations

import torch
from torch import nn

from mi2v_export.models.denoiser import DiTBlock, FinalLayer, GLUMBConv, MobileI2VDenoiser, layer_norm, modulate
from mi2v_export.models.rope import rope_angles

from .layout import Conv1x1, cf_to_tokens, layer_norm_channels, tokens_to_cf
from .rope import RopeTables


def _rope_arg(attn: nn.Module, rope: RopeTables):
    """Rewritten attention takes the shared RoPE tables; a reference module takes the raw angle table."""
    return rope if getattr(attn, "takes_rope_tables", False) else rope.angles


def rows(m: torch.Tensor, count: int) -> tuple[torch.Tensor, ...]:
    """(B,T,count,C) → `count` tensors (B,T,1,C), the reference's unsqueeze + unbind (the XNNPACK export traces
    slices instead: `denoiser_delegable` in exporters/rewrites/trace.py)."""
    return m.unsqueeze(3).unbind(2)


def glumbconv(mlp: GLUMBConv, x: torch.Tensor) -> torch.Tensor:
    """The block's feed-forward, called through this name so the XNNPACK export can trace its halves as slices."""
    return mlp(x)


class MobileBlock(nn.Module):
    """DiT block over the reference block's parameters; token-major (B,T,S,C) or channels-first (B·T,C,1,S)."""

    def __init__(self, ref: DiTBlock):
        super().__init__()
        self.eps = ref.eps
        self.attn = ref.attn
        self.mlp = ref.mlp
        self.scale_shift_table = ref.scale_shift_table

    def forward(self, x: torch.Tensor, mod: torch.Tensor, rope: RopeTables, hw: tuple[int, int]) -> torch.Tensor:
        """Token-major, as the reference: x (B,T,S,C), mod (B,T,6,C)."""
        b, t, s, c = x.shape
        m = self.scale_shift_table[None, None] + mod  # (B,T,6,C)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = rows(m, 6)  # (B,T,1,C) each
        h = modulate(layer_norm(x, self.eps), shift_msa, scale_msa)
        x = x + gate_msa * self.attn(h.reshape(b, t * s, c), _rope_arg(self.attn, rope)).view(b, t, s, c)
        h = modulate(layer_norm(x, self.eps), shift_mlp, scale_mlp)
        h = h.reshape(b * t, hw[0], hw[1], c).permute(0, 3, 1, 2)
        h = glumbconv(self.mlp, h).permute(0, 2, 3, 1).reshape(b, t, s, c)
        return x + gate_mlp * h

    def forward_cf(self, x: torch.Tensor, mod: torch.Tensor, rope: RopeTables, frames: int,
                   hw: tuple[int, int]) -> torch.Tensor:
        """Channels-first: x (B·T, C, 1, S); mod (B,T,6,C) broadcast per frame as (B·T, C, 1, 1)."""
        bt, c, _, s = x.shape
        m = (self.scale_shift_table[None, None] + mod).reshape(bt, 6 * c, 1, 1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = m.chunk(6, dim=1)
        h = modulate(layer_norm_channels(x, self.eps), shift_msa, scale_msa)
        if hasattr(self.attn, "forward_cf"):
            a = self.attn.forward_cf(h, rope, frames)
        else:  # a reference attention module inside a channels-first block: round-trip through tokens
            a = tokens_to_cf(self.attn(cf_to_tokens(h, frames), _rope_arg(self.attn, rope)), frames)
        x = x + gate_msa * a
        h = modulate(layer_norm_channels(x, self.eps), shift_mlp, scale_mlp)
        return x + gate_mlp * glumbconv(self.mlp, h.view(bt, c, hw[0], hw[1])).view(bt, c, 1, s)


class MobileFinalLayer(nn.Module):
    """FinalLayer over the reference parameters, token-major or channels-first (1x1 conv to the latent channels)."""

    def __init__(self, ref: FinalLayer):
        super().__init__()
        self.eps = ref.eps
        self.linear = ref.linear
        self.scale_shift_table = ref.scale_shift_table

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        shift, scale = rows(self.scale_shift_table[None, None] + t_emb[:, :, None], 2)
        return self.linear(modulate(layer_norm(x, self.eps), shift, scale))

    def forward_cf(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        bt, c = x.shape[:2]
        shift, scale = (self.scale_shift_table[None, None] + t_emb[:, :, None]).reshape(bt, 2 * c, 1, 1).chunk(2, 1)
        return self.linear(modulate(layer_norm_channels(x, self.eps), shift, scale))


class MobileDenoiser(MobileI2VDenoiser):
    """forward(latent (B,128,T,H,W), timestep (B,), flow_score (B,)) → velocity, like the reference."""

    def __init__(self, reference: MobileI2VDenoiser):
        nn.Module.__init__(self)
        self.config = reference.config
        for name, child in reference.named_children():
            setattr(self, name, child)
        self.blocks = nn.ModuleList(MobileBlock(b) for b in reference.blocks)
        self.final_layer = MobileFinalLayer(reference.final_layer)
        self.channels_first = False
        self.rope_cache = None  # RopeCache for one grid (rope_tables rewrite)
        self.step_constants = None  # StepConstants (step_constants rewrite)
        self.rewrite_report: dict = {}
        self.train(reference.training)

    def to_channels_first(self) -> None:
        self.channels_first = True
        for block in self.blocks:
            if hasattr(block.attn, "to_channels_first"):
                block.attn.to_channels_first()
        self.final_layer.linear = Conv1x1(self.final_layer.linear)

    def conditioning(self, timestep: torch.Tensor, flow_score: torch.Tensor, frames: int):
        if self.step_constants is not None:
            return self.step_constants(timestep, flow_score, frames)
        return self.frame_conditioning(timestep, flow_score, frames)

    def rope_for(self, grid: tuple[int, int, int], device) -> RopeTables:
        cfg = self.config
        cache = self.rope_cache
        if cache is not None and cache.grid == grid:
            return RopeTables(cache.angles, grid, cfg.head_dim, fixed=cache.fixed())
        return RopeTables(rope_angles(grid, cfg.head_dim, cfg.rope_scales, cfg.rope_theta, device=device), grid,
                          cfg.head_dim)

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor, flow_score: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        b, cin, t, h, w = latent.shape
        s, c = h * w, cfg.hidden_size
        x, timestep, flow_score = self.embed_inputs(latent, timestep, flow_score)  # x (B·T, C, H, W): channels-first
        t_emb, mod = self.conditioning(timestep, flow_score, t)
        mod = mod.view(b, t, 6, c)
        rope = self.rope_for((t, h, w), latent.device)
        if self.channels_first:
            x = x.view(b * t, c, 1, s)
            for block in self.blocks:
                x = block.forward_cf(x, mod, rope, t, (h, w))
            out = self.final_layer.forward_cf(x, t_emb)  # (B·T, 128, 1, S)
            return out.view(b, t, cin, s).transpose(1, 2).reshape(b, cin, t, h, w)
        x = x.flatten(2).transpose(1, 2).reshape(b, t, s, c)
        for block in self.blocks:
            x = block(x, mod, rope, (h, w))
        out = self.final_layer(x, t_emb)  # (B,T,S,128)
        return out.view(b, t, h, w, cin).permute(0, 4, 1, 2, 3)
