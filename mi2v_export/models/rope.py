"""3-D rotary position embedding (RoPE3D) for any latent grid (T, H, W).

Each head vector of size d is split in three equal parts rotated by the frame, row and column index
(d = 72 → 24 channels per axis), rotate-half pairing (j with j + D/2), inverse frequencies
theta^(-2j/D). Positions are divided by a per-axis scale: the trained (1, 1.4375, 2.5) maps the 23x40 grid of
720p onto a 16x16 base. Unlike upstream, the grid comes from the input and each axis uses its own scale.
"""

from __future__ import annotations

import torch


def rope_angles(grid: tuple[int, int, int], head_dim: int, scales: tuple[float, float, float],
                theta: float = 10000.0, device=None) -> torch.Tensor:
    """Angle table (N, head_dim // 2 ... as 3 axes) of shape (N, 3, D/2) for tokens in frame-major order."""
    if head_dim % 6:
        raise ValueError(f"RoPE3D needs a head dim divisible by 6, got {head_dim}")
    axis_dim = head_dim // 3
    inv_freq = 1.0 / (theta ** (torch.arange(0, axis_dim, 2, dtype=torch.float32, device=device) / axis_dim))
    per_axis = []
    for length, scale in zip(grid, scales):
        pos = torch.arange(length, dtype=torch.float32, device=device) / scale
        per_axis.append(torch.outer(pos, inv_freq))  # (length, D/2)
    t, h, w = grid
    at = per_axis[0][:, None, None, :].expand(t, h, w, -1)
    ah = per_axis[1][None, :, None, :].expand(t, h, w, -1)
    aw = per_axis[2][None, None, :, :].expand(t, h, w, -1)
    return torch.stack([at, ah, aw], dim=3).reshape(t * h * w, 3, axis_dim // 2)


def rope_cos_sin(angles: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (N, head_dim) in the layout `apply_rope` expects; angles are cast to `dtype` first
    (upstream's linear attention casts the angle table to the model dtype before cos/sin)."""
    a = angles.to(dtype)
    a = torch.cat([a, a], dim=-1)  # (N, 3, D): [θ_0..θ_{D/2-1}, θ_0..θ_{D/2-1}] per axis
    n = a.shape[0]
    return a.cos().reshape(n, -1), a.sin().reshape(n, -1)


def rotate_half_per_axis(x: torch.Tensor) -> torch.Tensor:
    """For each of the three axis slices [x1, x2] → [-x2, x1]."""
    *lead, d = x.shape
    x = x.reshape(*lead, 3, 2, d // 6)
    x1, x2 = x.unbind(-2)
    return torch.stack([-x2, x1], dim=-2).reshape(*lead, d)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., N, head_dim) rotated by the tables (N, head_dim)."""
    return x * cos + rotate_half_per_axis(x) * sin
