"""RoPE3D tables shared by the rewritten attention modules.

The reference rotates with `rotate_half_per_axis` (reshape to (..., 3, 2, d/6), unbind, negate, stack, reshape).
Here the rotate-half is one split into the six d/6 pieces and one concat that swaps each axis' halves, with the sign
folded into the sin table: `x·cos + swap(x)·(sign·sin)`. Negation is exact, so `(-x2)·sin == x2·(-sin)` bit for
bit and the result equals the reference exactly. (A gather with a permutation index is the same maths in one op,
but onnxruntime's Gather on the last axis is slower than the split/concat pair; see benchmarks/attention.py.)

Tables are computed once per forward (the reference recomputes cos/sin in every block) and memoised per
(dtype, layout); `RopeCache` can also hold them as constants for a fixed latent grid (the `rope_tables` rewrite).
"""

from __future__ import annotations

import torch
from torch import nn

from mi2v_export.models.rope import rope_angles, rope_cos_sin


def rotate_half_index(head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(perm, sign) with rotate_half_per_axis(x) == x[..., perm] * sign for a head vector of size head_dim."""
    part = head_dim // 6  # each axis slice [x1, x2] of size 2·part → [-x2, x1]
    perm, sign = [], []
    for axis in range(3):
        base = axis * 2 * part
        perm += [base + part + j for j in range(part)] + [base + j for j in range(part)]
        sign += [-1.0] * part + [1.0] * part
    return torch.tensor(perm, dtype=torch.long), torch.tensor(sign, dtype=torch.float32)


class RopeTables:
    """cos / signed-sin tables for one forward, built lazily per (dtype, layout) from the angle table.

    layouts: "tokens" → (N, 1, d) to broadcast over (B, N, h, d); "channels" → (T, 1, d, S) to broadcast over the
    per-frame channels-first (B·T, h, d, S) view.
    """

    def __init__(self, angles: torch.Tensor, grid: tuple[int, int, int], head_dim: int,
                 fixed: dict | None = None):
        self.angles, self.grid, self.head_dim = angles, grid, head_dim
        self._memo: dict = dict(fixed or {})
        self.sign = rotate_half_index(head_dim)[1].to(angles.device)

    def get(self, dtype: torch.dtype, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dtype, layout)
        if key not in self._memo:
            self._memo[key] = build_tables(self.angles, self.grid, self.head_dim, dtype, layout, self.sign)
        return self._memo[key]


def build_tables(angles: torch.Tensor, grid: tuple[int, int, int], head_dim: int, dtype: torch.dtype, layout: str,
                 sign: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    if sign is None:
        sign = rotate_half_index(head_dim)[1].to(angles.device)
    cos, sin = rope_cos_sin(angles, dtype)  # (N, d), exactly the reference's tables
    sin = sin * sign.to(dtype)
    if layout == "tokens":
        return cos[:, None, :], sin[:, None, :]
    if layout == "channels":
        t, h, w = grid
        return (cos.view(t, h * w, head_dim).transpose(1, 2).reshape(t, 1, head_dim, h * w),
                sin.view(t, h * w, head_dim).transpose(1, 2).reshape(t, 1, head_dim, h * w))
    raise ValueError(f"unknown RoPE table layout {layout!r}")


def rotate_half_split(x: torch.Tensor, dim: int) -> torch.Tensor:
    """rotate_half_per_axis without the sign: [a1, a2, b1, b2, c1, c2] → [a2, a1, b2, b1, c2, c1] along `dim`."""
    a1, a2, b1, b2, c1, c2 = pieces(x, x.shape[dim] // 6, dim)
    return torch.cat([a2, a1, b2, b1, c2, c1], dim)


def take(x: torch.Tensor, dim: int, start: int, size: int) -> torch.Tensor:
    """x[..., start:start + size, ...] on axis `dim` written as indexing, which torch.export records as
    `aten.slice` (`narrow` stays `aten.narrow`, which the XNNPACK quantizer does not know: its int8 slices then got
    their own ranges, and XNNPACK runs a slice only when its input and output ranges match)."""
    return x[(slice(None),) * (dim % x.dim()) + (slice(start, start + size),)]


def pieces(x: torch.Tensor, size: int, dim: int) -> list[torch.Tensor]:
    """Equal slices along `dim` as separate slice ops (ExecuTorch's XNNPACK delegate takes slice_copy but runs
    split_with_sizes_copy as a portable, single-threaded kernel)."""
    return [take(x, dim, start, size) for start in range(0, x.shape[dim], size)]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dim: int):
    """x·cos + swap(x)·sin_signed; `dim` is the head-vector axis of x."""
    return x * cos + rotate_half_split(x, dim) * sin


class RopeCache(nn.Module):
    """Precomputed RoPE tables (non-persistent buffers, so the state dict is unchanged) for one latent grid."""

    def __init__(self, grid: tuple[int, int, int], head_dim: int, scales, theta: float, dtypes: tuple,
                 layouts: tuple[str, ...]):
        super().__init__()
        self.grid = tuple(int(g) for g in grid)
        self.names: dict = {}
        angles = rope_angles(self.grid, head_dim, tuple(scales), theta)
        self.register_buffer("angles", angles, persistent=False)
        for dtype in dtypes:
            for layout in layouts:
                cos, sin = build_tables(angles, self.grid, head_dim, dtype, layout)
                tag = f"{str(dtype).split('.')[-1]}_{layout}"
                self.register_buffer(f"cos_{tag}", cos.contiguous(), persistent=False)
                self.register_buffer(f"sin_{tag}", sin.contiguous(), persistent=False)
                self.names[(dtype, layout)] = tag

    def fixed(self) -> dict:
        return {key: (getattr(self, f"cos_{tag}"), getattr(self, f"sin_{tag}")) for key, tag in self.names.items()}
