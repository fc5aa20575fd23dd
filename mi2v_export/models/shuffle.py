"""Depth-to-space and space-to-depth as chains of rank-≤5 reshapes and permutes.

Why: XNNPACK allows at most 6 dims (shared/spec/vae-export.md, B1), and diffusers' LTX patchify / unpatchify and
its 0.9.0 upsampler use rank-8 views. The exporters' `shuffle_rank5` rewrite (exporters/rewrites/modules.py) and
the tiling stages (mi2v_export/models/stages.py) both use these. Factors are (size, axis) from the outermost
channel sub-index to the innermost; axis 2/3/4 = T/H/W.
"""

from __future__ import annotations

import torch


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
