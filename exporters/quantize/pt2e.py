"""PT2E and torchao quantization of the PyTorch module, before lowering: ExecuTorch's XNNPACK and Vulkan
delegates, and Core ML's w8a8 (converted afterwards by coremltools). Every quantizer here takes
`(module, args, calibration, keep, component)` and returns the module to lower; exporters/quantize/__init__.py
says which one makes which (target, delegate, precision).

ExecuTorch XNNPACK (after the export rewrites):
    w8a8  PT2E `XNNPACKQuantizer`, int8 symmetric per-channel weights, static int8 activations, observers fed with
          the calibration records (what the component sees in the real sampler)
    w8    the same quantizer with dynamic int8 activations (8da8w: per-token ranges at run time, no calibration)
    w4    torchao `Int8DynamicActivationIntxWeightConfig(int4, PerGroup(32))` on nn.Linear (8da4w); XNNPACK lowers
          it; a Linear whose input size is not a multiple of 32 gets int8 per-channel weights instead (XNNPACK's
          int4 groups must be multiples of 32). w8 and w4 reach nn.Linear only, so pointwise 1x1 Conv2d are
          first rewritten as the Linear they are (`conv1x1_as_linear`); other convolutions stay float.

ExecuTorch 1.5's Vulkan quantized linears, on nn.Linear (1x1 convs made Linear first); convs stay float:
    w8a8  static int8 per-tensor inputs + int8 per-channel weights (linear inputs only): the backend fuses them
          into `et_vk.linear_q8ta_q8csw`
    w8    int8 per-channel weights only (`VulkanQuantizer`): fused into `aten._weight_int8pack_mm`
    w4    int4 weights in groups of 32 (torchao `IntxWeightOnlyConfig`): fused into `et_vk.linear_q4gsw`; a Linear
          whose input size is not a multiple of 32 gets int8 per-channel weights instead

Static w8a8 at the inputs of linear / conv nodes only (`ConvLinearInputQuantizer`), for Core ML and Vulkan. Core ML:
coremltools' own activation calibration (`linear_quantize_activations`) runs Core ML predictions, i.e. needs macOS,
and its PT2E `CoreMLQuantizer` imports `torch.ao.quantization.quantizer`, which torch 2.13 no longer has. So the
module is quantized here with torchao's PT2E and converted: coremltools turns the quantize / dequantize pairs into
Core ML's `quantize` / `dequantize` and the int8 weights into `constexpr_affine_dequantize`, the W8A8 form the
Neural Engine runs in int8 from A17 Pro / M4. The quantized GraphModule is also the PyTorch stand-in that checks the
artifact off macOS (`verified_on: "pytorch-simulated"`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, Quantizer

from mi2v_export.errors import BadInputError

from .units import int8_units, kept, outside_units

W4_GROUP = 32
LINEAR_AND_CONV = ("linear", "conv1d", "conv2d", "conv3d", "convolution")  # aten ops whose inputs get int8

# Components whose XNNPACK w8a8 quantizes these aten ops only (default: every pattern XNNPACKQuantizer knows, conv,
# linear, add, mul, cat, ...). Turbo-VAED's residual adds and RMS-norm multiplies each cost ~2 dB in int8 (tiny
# decoder, PyTorch-simulated: 33.3 dB every pattern, 36.4 dB conv / linear only; 720p: 29.4 dB, under the gate).
XNNPACK_W8A8_OPS = {"decoder": ("conv2d", "linear")}

# (the delegate's name, what to use instead for a component without Linear layers)
XNNPACK_REMEDY = ("XNNPACK", "w8a8 or fp16 for it, e.g. --precision denoiser={precision},decoder=w8a8,encoder=fp16")
VULKAN_REMEDY = ("Vulkan", "fp16 for it, e.g. --precision denoiser=w8a8,decoder=fp16,encoder=fp16")


# ---------------------------------------------------------------------------------------------------------------
# The quantizers of the table


def xnnpack_w8a8(module, args, calibration, keep: Sequence[str], component: str):
    return _pt2e(module, args, dynamic=False, calibration=calibration or [args], keep=keep,
                 ops=XNNPACK_W8A8_OPS.get(component))


def xnnpack_w8(module, args, calibration, keep: Sequence[str], component: str):
    return _pt2e(_with_linears(module, "w8", keep, component, XNNPACK_REMEDY), args, dynamic=True,
                 calibration=[args], keep=keep)


def xnnpack_w4(module, args, calibration, keep: Sequence[str], component: str):
    return _torchao_8da4w(_with_linears(module, "w4", keep, component, XNNPACK_REMEDY), keep,
                          int8_units(component, "w4", keep))


def vulkan_w8a8(module, args, calibration, keep: Sequence[str], component: str):
    module = _with_linears(module, "w8a8", keep, component, VULKAN_REMEDY)
    return conv_linear_inputs(module, args, calibration or [args], keep, ops=("linear",))


def vulkan_w8(module, args, calibration, keep: Sequence[str], component: str):
    return _vulkan_int8_weights(_with_linears(module, "w8", keep, component, VULKAN_REMEDY), args, keep)


def vulkan_w4(module, args, calibration, keep: Sequence[str], component: str):
    return _torchao_weight_only_int4(_with_linears(module, "w4", keep, component, VULKAN_REMEDY), keep,
                                     int8_units(component, "w4", keep))


def coreml_w8a8(module, args, calibration, keep: Sequence[str], component: str):
    return conv_linear_inputs(module, args, calibration, keep)


# ---------------------------------------------------------------------------------------------------------------
# Linear layers: 1x1 convs as Linear, and the refusal of a component without any


def _with_linears(module: torch.nn.Module, precision: str, keep: Sequence[str], component: str,
                  remedy: tuple[str, str]) -> torch.nn.Module:
    """The module with its 1x1 convs as Linear, or BadInputError when it has no Linear to quantize: w8 and w4 on
    XNNPACK, and every integer precision on Vulkan, reach nn.Linear only, so a convolutional component (the VAE
    encoder, Turbo-VAED: 3x3 convs; XNNPACK's dynamic conv fails to lower their rank-5 frames) would stay fp32
    under an integer label (measured: the 720p Turbo-VAED "w8" was 1.00x the fp32 bytes)."""
    module = conv1x1_as_linear(module, keep)
    if not any(isinstance(m, torch.nn.Linear) and not kept(n, keep) for n, m in module.named_modules()):
        name, instead = remedy
        raise BadInputError(f"--precision {precision} on ExecuTorch {name} quantizes Linear layers and 1x1 convs "
                            f"only, and the {component} has none (it would stay fp32): use "
                            + instead.format(precision=precision))
    return module


class Conv1x1AsLinear(torch.nn.Module):
    """A pointwise Conv2d as the nn.Linear it is (channels moved last and back; same numbers up to summation
    order), so that the Linear-only weight quantizers (8da8w, torchao 8da4w) reach it: 45 % of the denoiser's
    weights sit in the 1x1 convs of its GLUMBConv feed-forward."""

    def __init__(self, conv: torch.nn.Conv2d):
        super().__init__()
        self.linear = torch.nn.Linear(conv.in_channels, conv.out_channels, bias=conv.bias is not None)
        with torch.no_grad():
            self.linear.weight.copy_(conv.weight.reshape(conv.out_channels, conv.in_channels))
            if conv.bias is not None:
                self.linear.bias.copy_(conv.bias)

    @property
    def weight(self) -> torch.Tensor:  # callers read conv.weight.dtype (e.g. the denoiser's patch embedding)
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.movedim(1, -1)).movedim(-1, 1)


def _is_pointwise(m: torch.nn.Module) -> bool:
    return (isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.groups == 1
            and m.padding in ((0, 0), "valid") and m.dilation == (1, 1))


def conv1x1_as_linear(module: torch.nn.Module, keep: Sequence[str] = ()) -> torch.nn.Module:
    """Swap every pointwise Conv2d outside the `keep` units for Conv1x1AsLinear (in place; returns `module`)."""
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            fqn = f"{name}.{attr}" if name else attr
            if _is_pointwise(sub) and not kept(fqn, keep):
                setattr(child, attr, Conv1x1AsLinear(sub))
    return module


# ---------------------------------------------------------------------------------------------------------------
# PT2E


def _pt2e(module, args, *, dynamic: bool, calibration: Sequence[tuple], keep: Sequence[str] = (),
          ops: Sequence[str] | None = None):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    graph = torch.export.export(module, args, strict=False).module()
    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    # dynamic (w8): nn.Linear only, as torchao's 8da8w. XNNPACK's dynamic conv is 2-D only, and a dynamically
    # quantized patch-embedding conv made the channels-last pass cast the rank-5 latent (lowering fails)
    quantizer = XNNPACKQuantizer().set_module_type(torch.nn.Linear, config) if dynamic else \
        XNNPACKQuantizer().set_global(config) if ops is None else XNNPACKQuantizer()
    for op in ops or ():
        quantizer.set_operator_type(getattr(torch.ops.aten, op).default, config)
    if keep:  # the recipe's float units
        quantizer.set_filter_function(outside_units(keep))
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for sample in (calibration if not dynamic else calibration[:1]):
            prepared(*sample)
    return convert_pt2e(prepared)


def _vulkan_int8_weights(module, args, keep: Sequence[str] = ()):
    from executorch.backends.vulkan.quantizer.vulkan_quantizer import (
        VulkanQuantizer,
        get_symmetric_quantization_config,
    )

    class WeightOnly(VulkanQuantizer):
        def transform_for_annotation(self, model):  # VulkanQuantizer turns scalars into tensors, which breaks its
            return model  # own RMSNorm fusion (it reads eps as a scalar); weight-only needs no scalar annotated

    quantizer = WeightOnly().set_global(get_symmetric_quantization_config(is_dynamic=False, weight_bits=8))
    if keep:
        quantizer.set_filter_function(outside_units(keep))
    prepared = prepare_pt2e(torch.export.export(module, args, strict=False).module(), quantizer)
    with torch.no_grad():
        prepared(*args)
    return convert_pt2e(prepared)


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


def conv_linear_inputs(module: torch.nn.Module, args: tuple, calibration: Sequence[tuple], keep: Sequence[str] = (),
                       ops: Sequence[str] = LINEAR_AND_CONV) -> torch.fx.GraphModule:
    """The w8a8 GraphModule of `module`, activations calibrated on `calibration` (tuples of inputs); `keep`:
    submodule names left float (a recipe's fp32 units); `ops`: the aten ops quantized."""
    graph = torch.export.export(module, args, strict=False).module()
    prepared = prepare_pt2e(graph, ConvLinearInputQuantizer(keep, ops))
    with torch.no_grad():
        for sample in calibration or [args]:
            prepared(*sample)
    return convert_pt2e(prepared)


# ---------------------------------------------------------------------------------------------------------------
# torchao


def _torchao_8da4w(module, keep: Sequence[str] = (), int8: Sequence[str] = ()):
    """int4 weights in groups of 32 on every nn.Linear whose input size XNNPACK can group (a multiple of 32);
    the others, and the `int8` units, get int8 per-channel weights (XNNPACK refuses other int4 group sizes). The
    270M denoiser's linears are all multiples of 32; the tiny preset's mostly are not."""
    from torchao.quantization import quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig

    quantize_(module, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                            weight_granularity=PerGroup(W4_GROUP)),
              filter_fn=_linears(grouped=True, keep=keep, int8=int8))
    quantize_(module, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)),
              filter_fn=_linears(grouped=False, keep=keep, int8=int8))
    return module


def _torchao_weight_only_int4(module, keep: Sequence[str] = (), int8: Sequence[str] = ()):
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import IntxWeightOnlyConfig, quantize_

    quantize_(module, IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(W4_GROUP)),
              filter_fn=_linears(grouped=True, keep=keep, int8=int8))
    quantize_(module, IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
              filter_fn=_linears(grouped=False, keep=keep, int8=int8))
    return module


def _linears(grouped: bool, keep: Sequence[str], int8: Sequence[str] = ()):
    """torchao `filter_fn` of the w4 passes: the nn.Linear outside `keep` that get int4 groups (grouped: input size a
    multiple of the group, outside the `int8` units) or int8 per channel (not grouped: the others)."""
    def accept(m, fqn) -> bool:
        if not isinstance(m, torch.nn.Linear) or kept(fqn, keep):
            return False
        return (m.in_features % W4_GROUP == 0 and not kept(fqn, int8)) is grouped
    return accept


def int4_linears(module: torch.nn.Module, keep: Sequence[str], int8: Sequence[str]) -> int:
    """How many nn.Linear of `module` the w4 passes give int4 groups (the others get int8 per channel)."""
    accept = _linears(grouped=True, keep=keep, int8=int8)
    return sum(1 for fqn, m in module.named_modules() if accept(m, fqn))
