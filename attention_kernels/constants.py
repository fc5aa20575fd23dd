"""Per-step constants: the (timestep, flow_score) → modulation path baked for a fixed sampling schedule.

Everything the denoiser derives from (timestep, flow_score) — the sinusoidal embeddings, t_embedder / flow_embedder
MLPs and the t_block / flow_block adaLN projections — depends on nothing else. For a distilled sampler with 1–2
known timesteps it can be computed once at rewrite time (by the reference model's own `frame_conditioning`, so the
values are bit-identical) and stored as constants: two rows per schedule entry (frame 0 at σ = 0, the other frames
at t). The forward keeps its (latent, timestep, flow_score) signature:

- with one schedule entry the constants are used directly (the exported graph ignores timestep / flow_score);
- with several, each batch row picks its entry with an exact one-hot select (`(t == t_k) & (f == f_k)`), which is
  exportable without control flow;
- in eager mode a (timestep, flow_score) that is not in the schedule raises `BakedScheduleError`. An exported graph
  cannot raise on values: there an unknown pair gives zero modulation, which is why the manifest must record the
  schedule (see `describe_plan`).
"""

from __future__ import annotations

import torch
from torch import nn

from mi2v_export.errors import BadInputError
from mi2v_export.models import denoiser


class BakedScheduleError(BadInputError):
    """A module with baked per-step constants was called with a (timestep, flow_score) it was not baked for."""


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()


class StepConstants(nn.Module):
    """Holds t_emb (K, 2, C) and mod (K, 2, 6C) for K (timestep, flow_score) pairs (non-persistent buffers)."""

    def __init__(self, model: nn.Module, schedule):
        super().__init__()
        pairs = [(float(t), float(f)) for t, f in schedule]
        if not pairs:
            raise BadInputError("step_constants needs a schedule: one or more (timestep, flow_score) pairs")
        if len(set(pairs)) != len(pairs):
            raise BadInputError(f"duplicate entries in the baked schedule {pairs}")
        self.pairs = pairs
        device = model.x_embedder.proj.weight.device
        t_embs, mods = [], []
        with torch.no_grad():
            for t, f in pairs:
                te, mod = model.frame_conditioning(torch.tensor([t], device=device), torch.tensor([f], device=device), 2)
                t_embs.append(te[0])
                mods.append(mod[0])
        self.register_buffer("t_emb", torch.stack(t_embs), persistent=False)  # (K, 2, C)
        self.register_buffer("mod", torch.stack(mods), persistent=False)  # (K, 2, 6C)
        self.register_buffer("schedule", torch.tensor(pairs, dtype=torch.float64), persistent=False)  # (K, 2)

    def extra_repr(self) -> str:
        return f"schedule={self.pairs}"

    def check(self, timestep: torch.Tensor, flow_score: torch.Tensor) -> None:
        got = torch.stack([timestep.double(), flow_score.double()], dim=1)  # (B, 2)
        ok = (got[:, None, :] == self.schedule[None]).all(-1).any(-1)
        if not bool(ok.all()):
            bad = [tuple(round(v, 6) for v in row) for row in got[~ok].tolist()]
            raise BakedScheduleError(
                f"this denoiser has its time/flow modulation baked for (timestep, flow_score) in {self.pairs}; got "
                f"{bad}. Rewrite it again with that pair in the schedule, or without step_constants.")

    def forward(self, timestep: torch.Tensor, flow_score: torch.Tensor, frames: int):
        """timestep, flow_score (B,) → t_emb (B, T, C), mod (B, T, 6C), like `frame_conditioning`."""
        b = timestep.shape[0]
        if not _tracing():
            self.check(timestep, flow_score)
        k = self.t_emb.shape[0]
        if k == 1:
            t_emb, mod = self.t_emb.expand(b, -1, -1), self.mod.expand(b, -1, -1)
        else:
            sched = self.schedule.to(torch.float32)
            sel = ((timestep.float()[:, None] == sched[None, :, 0])
                   & (flow_score.float()[:, None] == sched[None, :, 1])).to(self.mod.dtype)  # (B, K) one-hot
            t_emb = (sel @ self.t_emb.reshape(k, -1)).view(b, 2, -1)
            mod = (sel @ self.mod.reshape(k, -1)).view(b, 2, -1)
        return denoiser.spread_over_frames(t_emb, frames), denoiser.spread_over_frames(mod, frames)
