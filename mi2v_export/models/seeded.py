"""Deterministic per-key weights: the recipe of tests/data/golden/README.md, so golden references can be rebuilt.

Each tensor is drawn from its own generator seeded by `crc32(key) ^ seed`, so the weights depend only on the key
names and shapes, never on module construction order. A re-implementation that reproduces the upstream key names
therefore gets bit-identical weights and can be compared with the golden outputs to the last decimal.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import torch
from torch import nn


def _is_norm_weight(key: str) -> bool:
    """`...<module>.weight` where the owning module's name contains "norm" (kept around 1, like a trained norm)."""
    return key.endswith(".weight") and "norm" in key.rsplit(".", 2)[-2]


def seeded_tensor(key: str, shape: Sequence[int], seed: int) -> torch.Tensor:
    """One fp32 tensor of the recipe: fan-in scaled normal for matrices/kernels, 0.1·normal (+1 for norms) else."""
    shape = tuple(int(s) for s in shape)
    generator = torch.Generator().manual_seed((zlib.crc32(key.encode()) ^ seed) & 0xFFFFFFFF)
    tensor = torch.randn(shape, generator=generator, dtype=torch.float32)
    if len(shape) >= 2 and not key.endswith("scale_shift_table"):
        return tensor / math.sqrt(math.prod(shape[1:]))
    tensor = tensor * 0.1
    if _is_norm_weight(key):
        tensor = tensor + 1.0
    return tensor


def seeded_state_dict(shapes: Mapping[str, Sequence[int]], seed: int) -> dict[str, torch.Tensor]:
    """key → shape in, key → seeded fp32 tensor out (same order), exactly as tests/data/golden/README.md describes."""
    return {key: seeded_tensor(key, shape, seed) for key, shape in shapes.items()}


def state_dict_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """key → shape of a module's state dict; works on `meta`-device modules, so nothing is allocated."""
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
