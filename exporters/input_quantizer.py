"""Static w8a8 at the inputs of linear / conv nodes only (PT2E), for Core ML and ExecuTorch Vulkan.

Core ML: coremltools' own activation calibration (`linear_quantize_activations`) runs Core ML predictions, i.e. needs macOS,
and its PT2E `CoreMLQuantizer` imports `torch.ao.quantization.quantizer`, which torch 2.13 no longer has. So the
module is quantized here with torchao's PT2E and converted: coremltools turns the quantize / dequantize pairs into
Core ML's `quantize` / `dequantize` and the int8 weights into `constexpr_affine_dequantize`, the W8A8 form the
Neural Engine runs in int8 from A17 Pro / M4. The quantized GraphModule is also the PyTorch stand-in that checks the
artifact off macOS (`verified_on: "pytorch-simulated"`).

Vulkan (ExecuTorch 1.5): linear nodes only (its quantized conv is not there yet); the Vulkan backend fuses a
per-tensor int8 input with per-channel int8 weights into `et_vk.linear_q8ta_q8csw`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, Quantizer
from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

LINEAR_AND_CONV = ("linear", "conv1d", "conv2d", "conv3d", "convolution")  # aten ops whose inputs get int8


def outside_units(keep: Sequence[str]):
    """PT2E `set_filter_function`: nodes outside the `keep` units (set_module_name(name, None) is "not supported
    yet" in ExecuTorch 1.5). Used here and by exporters/quantize.py."""
    kept = [get_module_name_filter(name) for name in keep]
    return lambda node: not any(f(node) for f in kept)


class ConvLinearInputQuantizer(Quantizer):
    """Annotates the activation and weight inputs of linear and convolution nodes only: norms, SiLU / GELU, add and
    cat stay float, as in Apple's W8A8 for Stable Diffusion. The int8 scheme is XNNPACK's: symmetric per-channel
    weights, asymmetric per-tensor activations (Core ML's `quantize` takes a zero point), histogram-calibrated."""

    def __init__(self, keep: Sequence[str] = (), ops: Sequence[str] = LINEAR_AND_CONV):
        super().__init__()
        self.ops = tuple(ops)
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

        self.config = get_symmetric_quantization_config(is_per_channel=True)
        self.outside = outside_units(keep)

    def _wanted(self, node) -> bool:
        target = node.target
        return (node.op == "call_function" and isinstance(target, torch._ops.OpOverload)
                and target.namespace == "aten" and target._opname in self.ops
                and self.outside(node))

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        for node in model.graph.nodes:
            if self._wanted(node):
                act, weight = node.args[0], node.args[1]
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={act: self.config.input_activation, weight: self.config.weight}, _annotated=True)
        return model

    def validate(self, model: torch.fx.GraphModule) -> None:
        pass


def quantize(module: torch.nn.Module, args: tuple, calibration: Sequence[tuple], keep: Sequence[str] = (),
             ops: Sequence[str] = LINEAR_AND_CONV) -> torch.fx.GraphModule:
    """The w8a8 GraphModule of `module`, activations calibrated on `calibration` (tuples of inputs); `keep`:
    submodule names left float (a recipe's fp32 units); `ops`: the aten ops quantized."""
    graph = torch.export.export(module, args, strict=False).module()
    prepared = prepare_pt2e(graph, ConvLinearInputQuantizer(keep, ops))
    with torch.no_grad():
        for sample in calibration or [args]:
            prepared(*sample)
    return convert_pt2e(prepared)
