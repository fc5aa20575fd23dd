"""Integer precisions (w8a8, w8, w4, w8a16) for the exporters: one table, `QUANTIZERS`, says which function makes
each (target, delegate, precision) and with what tool; one module per framework holds the functions:

    pt2e.py    PT2E / torchao on the PyTorch module before lowering (ExecuTorch XNNPACK and Vulkan; Core ML w8a8)
    ort.py     onnxruntime on the exported .onnx file (the ONNX target)
    qnn.py     onnxruntime's QNN configuration: QDQ models for the Qualcomm HTP (ONNX, delegate qnn)
    coreml.py  coremltools compression of the converted ML Program (Core ML w8 / w4)
    litert.py  ai-edge-quantizer on the converted .tflite (LiteRT; the same file for every LiteRT delegate)
    units.py   the units a recipe keeps float, those w4 gives int8, the PT2E filter

Adding a precision to a target is one row here (and the precision in its exporter's `supported`); the structure
tests check that both name the same cells and that every target and delegate named here is registered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import coreml, litert, ort, pt2e, qnn
from .pt2e import Conv1x1AsLinear, conv1x1_as_linear, int4_linears
from .units import SENSITIVE_UNITS, int8_units, plan_of

__all__ = ["QUANTIZERS", "Quantizer", "quantizer", "executorch_quantize", "onnx_quantize", "qnn_quantize",
           "SENSITIVE_UNITS", "int8_units", "plan_of", "int4_linears", "Conv1x1AsLinear", "conv1x1_as_linear"]

MODULE, CONVERTED = "module", "converted"  # what a quantizer works on: the PyTorch module, or the lowered model


@dataclass(frozen=True)
class Quantizer:
    quantize: Callable[..., Any]  # the framework module's function (its signature: that module's docstring)
    tool: str  # how it is made (the manifest's target_info.quantization.tool)
    stage: str = MODULE  # MODULE: quantizes the PyTorch module before lowering; CONVERTED: the lowered model / file
    simulated: Callable[..., Any] | None = None  # module → its PyTorch stand-in, for a CONVERTED one no runtime here runs


_COREML_W8A8 = ("torchao PT2E (int8 per-channel weights, int8 activations at every linear / conv input, calibrated) "
                "→ coremltools quantize / dequantize + constexpr_affine_dequantize")

# (target, delegate, precision) → how that cell is quantized
QUANTIZERS: dict[tuple[str, str | None, str], Quantizer] = {
    ("executorch", "xnnpack", "w8a8"): Quantizer(
        pt2e.xnnpack_w8a8, "PT2E XNNPACKQuantizer (static int8 activations, int8 per-channel weights)"),
    ("executorch", "xnnpack", "w8"): Quantizer(
        pt2e.xnnpack_w8, "PT2E XNNPACKQuantizer (dynamic int8 activations, int8 per-channel weights: 8da8w)"),
    ("executorch", "xnnpack", "w4"): Quantizer(pt2e.xnnpack_w4, "torchao 8da4w (int4 groups of 32)"),
    ("executorch", "vulkan", "w8a8"): Quantizer(
        pt2e.vulkan_w8a8, "PT2E, linear inputs int8 per tensor + int8 per-channel weights → et_vk.linear_q8ta_q8csw"),
    ("executorch", "vulkan", "w8"): Quantizer(
        pt2e.vulkan_w8, "PT2E VulkanQuantizer, int8 per-channel weights only → aten._weight_int8pack_mm"),
    ("executorch", "vulkan", "w4"): Quantizer(
        pt2e.vulkan_w4, "torchao IntxWeightOnlyConfig (int4 groups of 32) → et_vk.linear_q4gsw"),
    ("onnx", None, "w8a8"): Quantizer(ort.static_w8a8, "onnxruntime.quantization.quantize_static", CONVERTED),
    ("onnx", None, "w8"): Quantizer(ort.dynamic_w8, "onnxruntime.quantization.quantize_dynamic", CONVERTED),
    ("onnx", None, "w4"): Quantizer(ort.matmul_nbits_w4, "onnxruntime MatMulNBitsQuantizer", CONVERTED),
    ("onnx", None, "w8a16"): Quantizer(ort.static_w8a16, "onnxruntime.quantization.quantize_static", CONVERTED),
    ("onnx", "qnn", "w8a16"): Quantizer(qnn.w8a16, "onnxruntime.quantization (QNN config)", CONVERTED),
    ("onnx", "qnn", "w8a8"): Quantizer(qnn.w8a8, "onnxruntime.quantization (QNN config)", CONVERTED),
    ("coreml", None, "w8a8"): Quantizer(pt2e.coreml_w8a8, _COREML_W8A8),
    ("coreml", None, "w8"): Quantizer(
        coreml.compress_w8, "coremltools.optimize.coreml.linear_quantize_weights (int8 linear symmetric, per channel)",
        CONVERTED, coreml.simulated_w8),
    ("coreml", None, "w4"): Quantizer(
        coreml.compress_w4, "coremltools.optimize.coreml.palettize_weights (4-bit k-means, per grouped channel of "
        f"{coreml.W4_GROUP})", CONVERTED, coreml.simulated_w4),
    **{("litert", delegate, precision): Quantizer(quantize, tool, CONVERTED)
       for delegate, precisions in ((None, "w8a8 w8 w4"), ("gpu", "w8a8 w8 w4"), ("qualcomm", "w8a8"),
                                    ("mediatek", "w8a8"), ("google-tensor", "w8a8"))
       for precision, (quantize, tool) in {
           "w8a8": (litert.static_w8a8, "ai-edge-quantizer static int8 on FULLY_CONNECTED / CONV_2D / "
                                        "BATCH_MATMUL (float I/O)"),
           "w8": (litert.dynamic_w8, "ai-edge-quantizer dynamic_wi8_afp32"),
           "w4": (litert.dynamic_w4, f"ai-edge-quantizer dynamic_wi4b32_afp32 (int4 blocks of {litert.W4_BLOCK})"),
       }.items() if precision in precisions.split()},
}


def quantizer(target: str, delegate: str | None, precision: str) -> Quantizer:
    """The table's row for a cell; ValueError for one no exporter should have asked for (exporters check their
    `supported` precisions first)."""
    try:
        return QUANTIZERS[target, delegate, precision]
    except KeyError:
        where = target + (f" --delegate {delegate}" if delegate else "")
        raise ValueError(f"no quantization for --target {where} --precision {precision}") from None


def executorch_quantize(module, args: tuple, precision: str, calibration: Sequence[tuple] | None,
                        keep: Sequence[str] = (), component: str = "component", delegate: str = "xnnpack"):
    """The module to lower for `precision` on an ExecuTorch delegate (a quantized GraphModule or the
    torchao-quantized module). `keep`: submodule names (of `module`) left in float (a recipe's fp32 units)."""
    return quantizer("executorch", delegate, precision).quantize(module, args, calibration, keep, component)


def onnx_quantize(path: Path, precision: str, records: Sequence[dict] | None, keep: Sequence[str] = (),
                  int8: Sequence[str] = ()) -> dict:
    """Quantize the .onnx file at `path` in place; returns what was done (for target_info). `keep`: submodule
    names whose nodes stay float (a recipe's fp32 units); `int8`: those w4 gives int8 weights."""
    q = quantizer("onnx", None, precision)
    return ort.quantize_in_place(path, q.quantize, q.tool, records, keep, int8)


def qnn_quantize(fp32_model: Path, qdq_model: Path, precision: str, feeds: list[dict]) -> dict:
    """Write the QDQ model of `fp32_model` for the QNN HTP, calibrated on `feeds`; returns what was done."""
    q = quantizer("onnx", "qnn", precision)
    return {"tool": q.tool, **q.quantize(fp32_model, qdq_model, feeds)}
