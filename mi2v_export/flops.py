"""FLOP counts, one convention everywhere: matmuls and convolutions, FLOP = 2·MAC; elementwise work (norms,
activations, RoPE) is not counted, as is customary.

Per component (`mi2v info`): parameters and FLOPs measured by running each model on `meta` tensors under torch's
FlopCounterMode, on the exact forward that gets exported, so deduplicated embeddings and the skipped text path are
reflected automatically. Per node of an exported graph, from its tensor shapes: `fx_node_flops` (a torch.export /
ExecuTorch edge node: the share of FLOPs inside delegates) and `onnx_node_flops` (an ONNX model: the share on the
Qualcomm HTP). Torch-free to import (the per-node counters need no torch; FlopCounterMode is imported where used).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .presets import Preset
from .shapes import VideoGeometry

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ComponentStats:
    component: str
    model: str
    parameters: int
    gflop: float
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def counted(module: torch.nn.Module, *inputs: torch.Tensor) -> tuple[int, Any]:
    """(FLOPs, output) of one forward of `module` on `inputs` under torch's FlopCounterMode (no grad)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = module(*inputs)
    return counter.get_total_flops(), out


def _measure(module: torch.nn.Module, *inputs: torch.Tensor) -> tuple[float, tuple[int, ...]]:
    flops, out = counted(module, *inputs)
    return flops / 1e9, tuple(out.shape)


def component_stats(preset: Preset, geo: VideoGeometry) -> list[ComponentStats]:
    """Encoder (one conditioning image), one denoiser step, and both decoders for one video of `geo`."""
    import torch

    from .models import build_part

    lat = geo.latent_shape
    stats = []
    with torch.device("meta"):
        rows = [
            ("encoder", "ltx-encoder", (torch.empty(1, 3, 1, geo.height, geo.width),)),
            ("denoiser", "denoiser", (torch.empty(lat), torch.empty(1), torch.empty(1))),
            ("decoder", "turbo-vaed", (torch.empty(lat),)),
            ("decoder", "ltx-decoder", (torch.empty(lat),)),
        ]
        for component, part, inputs in rows:
            module = build_part(part, preset, device="meta").eval()
            gflop, out_shape = _measure(module, *inputs)
            params = sum(p.numel() for p in module.parameters())
            stats.append(ComponentStats(component, part, params, gflop, tuple(inputs[0].shape), out_shape))
    return stats


# ---------------------------------------------------------------------------------------------------------------
# Per node of an exported graph

FX_FLOPS_COUNTED = "2·MAC of convolution / conv2d / mm / bmm / matmul / addmm / linear"


def op_name(target) -> str:
    """'aten.convolution' style name of an FX node's target (the `.default` overload dropped)."""
    name = getattr(target, "__name__", None) or str(target)
    text = str(target)
    if text.startswith(("aten.", "dim_order_ops.", "quantized_decomposed.", "et_vk.", "llama.")):
        name = text
    return name.rsplit(".default", 1)[0] if name.endswith(".default") else name


def _val(node):
    return node.meta.get("val") if hasattr(node, "meta") else None


def _numel(shape) -> int:
    return int(math.prod(int(s) for s in shape))


def fx_node_flops(node) -> int:
    """2·MAC of a convolution / matmul node of an exported graph from its tensor metadata; 0 for everything else."""
    name = op_name(node.target)
    out = _val(node)
    try:
        if name in ("aten.conv1d", "aten.conv2d", "aten.conv3d"):  # kept whole by some partitioners (Core ML)
            w = _val(node.args[1])
            return 2 * _numel(out.shape) * int(w.shape[1]) * _numel(w.shape[2:])
        if "convolution" in name:
            x, w = _val(node.args[0]), _val(node.args[1])
            transposed = bool(node.args[6]) if len(node.args) > 6 else False
            groups = int(node.args[8]) if len(node.args) > 8 else 1
            k = _numel(w.shape[2:])
            if transposed:
                return 2 * _numel(x.shape) * (int(w.shape[1])) * k
            return 2 * _numel(out.shape) * int(w.shape[1]) * k if groups else 0
        if name in ("aten.mm", "aten.bmm", "aten.matmul", "aten.addmm", "aten.linear"):
            a = _val(node.args[1] if name == "aten.addmm" else node.args[0])
            return 2 * _numel(out.shape) * int(a.shape[-1])
    except (AttributeError, IndexError, TypeError):
        return 0
    return 0


def fx_graph_flops(graph) -> int:
    """The FLOPs of an FX graph's operator nodes (`fx_node_flops`)."""
    return sum(fx_node_flops(n) for n in graph.nodes if n.op == "call_function")


def onnx_node_flops(path: Path) -> dict[str, int]:
    """node name → FLOPs (2·MAC) of its Conv / ConvTranspose / MatMul / Gemm, from ONNX shape inference."""
    import onnx
    from onnx import shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {}
    for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    for t in model.graph.initializer:
        shapes[t.name] = list(t.dims)
    out = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
            continue
        ins = [shapes.get(n) for n in node.input[:2]]
        y = shapes.get(node.output[0])
        if not y or any(s is None for s in ins):
            continue
        if node.op_type in ("Conv", "ConvTranspose"):
            w = ins[1]  # (O, C/G, k...) or (C, O/G, k...)
            per_out = _numel(w[1:]) if node.op_type == "Conv" else _numel(w[2:]) * w[0] // max(y[1], 1)
            out[node.name] = 2 * _numel(y) * per_out
        else:
            out[node.name] = 2 * _numel(y) * int(ins[0][-1])
    return out
