"""Core ML weight compression of the converted ML Program (coremltools.optimize.coreml), and its PyTorch stand-in.

w8 / w4 compress the converted weights; w8a8 quantizes in PyTorch (PT2E, exporters/quantize/pt2e.py) before
conversion, since coremltools' own activation calibration (`linear_quantize_activations`) runs Core ML predictions,
i.e. needs macOS. Each compressor takes the converted MLModel and returns the compressed one; each `simulated_*`
takes the PyTorch module and returns a copy whose weights went through the same compression and back.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

W4_GROUP = 16  # palettes per grouped channel of 16 (iOS 18)
WEIGHT_THRESHOLD = 2048  # coremltools' default: smaller tensors stay fp16


def compress_w8(mlmodel):
    """`linear_quantize_weights`: int8, linear symmetric, per output channel."""
    import coremltools.optimize.coreml as cto

    op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", granularity="per_channel",
                                     weight_threshold=WEIGHT_THRESHOLD)
    return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op))


def compress_w4(mlmodel):
    """`palettize_weights`: 4-bit k-means palettes per grouped channel, groups of 16 (iOS 18)."""
    import coremltools.optimize.coreml as cto

    op = cto.OpPalettizerConfig(nbits=4, mode="kmeans", granularity="per_grouped_channel",
                                group_size=W4_GROUP, weight_threshold=WEIGHT_THRESHOLD)
    return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op))


def simulated_w8(module: torch.nn.Module) -> torch.nn.Module:
    from coremltools.optimize.coreml._quantization_passes import linear_quantize_weights

    def roundtrip(w, blocks: list[int], axis: int):
        blocks[axis] = 1
        params = linear_quantize_weights.blockwise_compress(w, 8, "LINEAR_SYMMETRIC", True, blocks)
        return None if params is None else linear_quantize_weights.decompress(params)

    return _simulated(module, roundtrip)


def simulated_w4(module: torch.nn.Module) -> torch.nn.Module:
    from coremltools.optimize.coreml._quantization_passes import palettize_weights

    def roundtrip(w, blocks: list[int], axis: int):
        blocks[axis] = W4_GROUP
        params = palettize_weights.blockwise_compress(w, "KMEANS", 4, blocks)
        return None if params is None else palettize_weights.decompress(params)

    return _simulated(module, roundtrip)


def _simulated(module: torch.nn.Module, roundtrip: Callable) -> torch.nn.Module:
    """A copy of `module` whose conv / linear weights went through `roundtrip(weight, blocks, axis)` (the same
    coremltools compression and back, fp16 first as in the converted model): the PyTorch stand-in for a compressed
    .mlpackage off macOS."""
    sim = copy.deepcopy(module)
    for m in sim.modules():
        if not isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
                              torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)):
            continue
        w = m.weight.detach().half().float().numpy()
        if w.size <= WEIGHT_THRESHOLD:
            continue
        axis = 1 if isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)) else 0
        dense = roundtrip(w, [0] * w.ndim, axis)
        if dense is not None:
            m.weight.data = torch.from_numpy(dense.astype("float32")).reshape(m.weight.shape)
    return sim
