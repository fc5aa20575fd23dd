"""Integer precisions (w8a8, w8, w4, w8a16) for the exporters: one function per runtime, the APIs of our pins.

ExecuTorch XNNPACK (on the module, after the export rewrites, before lowering):
    w8a8  PT2E `XNNPACKQuantizer`, int8 symmetric per-channel weights, static int8 activations, observers fed with
          the calibration records (what the component sees in the real sampler)
    w8    the same quantizer with dynamic int8 activations (8da8w: per-token ranges at run time, no calibration)
    w4    torchao `Int8DynamicActivationIntxWeightConfig(int4, PerGroup(32))` on nn.Linear (8da4w); XNNPACK lowers
          it; a Linear whose input size is not a multiple of 32 gets int8 per-channel weights instead (XNNPACK's
          int4 groups must be multiples of 32). w8 and w4 reach nn.Linear only, so pointwise 1x1 Conv2d are
          first rewritten as the Linear they are (`conv1x1_as_linear`); other convolutions stay float.

ONNX (on the exported fp32 .onnx file, in place):
    w8a8  `quantize_static`, QDQ, U8S8 (uint8 activations, per-channel int8 weights), calibrated (min-max) on the
          calibration records, on the MatMuls, Gemms and group-1 convs (`as_integer_friendly`)
    w8a16 `quantize_static`, QDQ on every node, uint16 activations + uint8 weights (the QNN HTP's format, here for
          comparing with the HTP; the QNN path itself quantizes in exporters/qnn_quantize.py)
    w8    `quantize_dynamic`, int8 per-channel weights, dynamic activations, on the MatMuls and Gemms; other group-1
          convs int8 weights only (`as_integer_friendly`)
    w4    `MatMulNBitsQuantizer`, 4-bit symmetric blocks of 32 on every MatMul (1x1 convs and Gemms first made
          MatMul by `as_matmuls`; other convs stay float, so a component whose weights are mostly convs is refused)
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import torch

from .input_quantizer import outside_units

W4_GROUP = 32


# The denoiser's embedders, adaLN modulation MLPs and final layer (8 % of its weights), known to be sensitive: w4
# gives them int8 weights, not int4 (benchmarks/w4_sensitive_units.py measures why).
SENSITIVE_UNITS = ("x_embedder", "t_embedder", "t_block", "flow_embedder", "flow_block", "y_embedder", "final_layer")


def int8_units(component: str, precision: str, keep: Sequence[str] = ()) -> list[str]:
    """Submodules (names under the export wrapper's `model`) that `precision` quantizes to int8 instead, but for
    those a recipe keeps float (`keep`)."""
    units = [f"model.{u}" for u in SENSITIVE_UNITS] if (component, precision) == ("denoiser", "w4") else []
    return [u for u in units if not _kept(u, keep)]


def plan_of(options) -> tuple[str, list[str]]:
    """(integer precision to apply, submodule names kept float) of a component: its precision, or for "mixed" the
    recipe's precision and its fp32/fp16 units (names under the export wrapper's `model`)."""
    if options.precision != "mixed":
        return options.precision, []
    from mi2v_export.recipe import kept_units

    return options.recipe["precision"], [f"model.{u}" for u in kept_units(options.recipe)]


# ---------------------------------------------------------------------------------------------------------------
# ExecuTorch


def _kept(fqn: str, keep: Sequence[str]) -> bool:
    """Whether submodule `fqn` lies in one of the `keep` units (a recipe's float units)."""
    return any(fqn == k or fqn.startswith(k + ".") for k in keep)


def executorch_quantize(module: torch.nn.Module, args: tuple, precision: str,
                        calibration: Sequence[tuple] | None, keep: Sequence[str] = (),
                        component: str = "component", delegate: str = "xnnpack") -> torch.nn.Module:
    """The module to lower for `precision` (a quantized GraphModule or the torchao-quantized module). `keep`:
    submodule names (of `module`) left in float (a recipe's fp32 units)."""
    int8 = int8_units(component, precision, keep)
    if delegate == "vulkan":
        return _vulkan(_with_linears(module, precision, keep, component, delegate), args, precision, calibration,
                       keep, int8)
    if precision == "w8a8":
        return _pt2e(module, args, dynamic=False, calibration=calibration or [args], keep=keep,
                     ops=XNNPACK_W8A8_OPS.get(component))
    if precision == "w8":
        return _pt2e(_with_linears(module, precision, keep, component), args, dynamic=True, calibration=[args], keep=keep)
    if precision == "w4":
        return _torchao_8da4w(_with_linears(module, precision, keep, component), keep, int8)
    raise ValueError(f"no ExecuTorch quantization for {precision!r}")


def _with_linears(module: torch.nn.Module, precision: str, keep: Sequence[str], component: str,
                  delegate: str = "xnnpack") -> torch.nn.Module:
    """The module with its 1x1 convs as Linear, or BadInputError when it has no Linear to quantize: w8 and w4 on
    XNNPACK, and every integer precision on Vulkan, reach nn.Linear only, so a convolutional component (the VAE
    encoder, Turbo-VAED: 3x3 convs; XNNPACK's dynamic conv fails to lower their rank-5 frames) would stay fp32
    under an integer label (measured: the 720p Turbo-VAED "w8" was 1.00x the fp32 bytes)."""
    from mi2v_export.errors import BadInputError

    module = conv1x1_as_linear(module, keep)
    if not any(isinstance(m, torch.nn.Linear) and not _kept(n, keep) for n, m in module.named_modules()):
        name, instead = _LINEAR_ONLY_REMEDY[delegate]
        raise BadInputError(f"--precision {precision} on ExecuTorch {name} quantizes Linear layers and 1x1 convs "
                            f"only, and the {component} has none (it would stay fp32): use "
                            + instead.format(precision=precision))
    return module


# delegate → (its name, what to use instead for a component without Linear layers)
_LINEAR_ONLY_REMEDY = {
    "xnnpack": ("XNNPACK", "w8a8 or fp16 for it, e.g. --precision denoiser={precision},decoder=w8a8,encoder=fp16"),
    "vulkan": ("Vulkan", "fp16 for it, e.g. --precision denoiser=w8a8,decoder=fp16,encoder=fp16"),
}


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
            if _is_pointwise(sub) and not _kept(fqn, keep):
                setattr(child, attr, Conv1x1AsLinear(sub))
    return module


# Components whose XNNPACK w8a8 quantizes these aten ops only (default: every pattern XNNPACKQuantizer knows, conv,
# linear, add, mul, cat, ...). Turbo-VAED's residual adds and RMS-norm multiplies each cost ~2 dB in int8 (tiny
# decoder, PyTorch-simulated: 33.3 dB every pattern, 36.4 dB conv / linear only; 720p: 29.4 dB, under the gate).
XNNPACK_W8A8_OPS = {"decoder": ("conv2d", "linear")}


def _pt2e(module, args, *, dynamic: bool, calibration: Sequence[tuple], keep: Sequence[str] = (),
          ops: Sequence[str] | None = None):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

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


def _torchao_8da4w(module, keep: Sequence[str] = (), int8: Sequence[str] = ()):
    """int4 weights in groups of 32 on every nn.Linear whose input size XNNPACK can group (a multiple of 32);
    the others, and the `int8` units, get int8 per-channel weights (XNNPACK refuses other int4 group sizes). The 270M denoiser's linears
    are all multiples of 32; the tiny preset's mostly are not."""
    from torchao.quantization import quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig

    quantize_(module, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                            weight_granularity=PerGroup(W4_GROUP)),
              filter_fn=_linears(grouped=True, keep=keep, int8=int8))
    quantize_(module, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)),
              filter_fn=_linears(grouped=False, keep=keep, int8=int8))
    return module


def _linears(grouped: bool, keep: Sequence[str], int8: Sequence[str] = ()):
    """torchao `filter_fn` of the w4 passes: the nn.Linear outside `keep` that get int4 groups (grouped: input size a
    multiple of the group, outside the `int8` units) or int8 per channel (not grouped: the others)."""
    def accept(m, fqn) -> bool:
        if not isinstance(m, torch.nn.Linear) or _kept(fqn, keep):
            return False
        return (m.in_features % W4_GROUP == 0 and not _kept(fqn, int8)) is grouped
    return accept


def int4_linears(module: torch.nn.Module, keep: Sequence[str], int8: Sequence[str]) -> int:
    """How many nn.Linear of `module` the w4 passes give int4 groups (the others get int8 per channel)."""
    accept = _linears(grouped=True, keep=keep, int8=int8)
    return sum(1 for fqn, m in module.named_modules() if accept(m, fqn))


def _vulkan(module, args, precision: str, calibration: Sequence[tuple] | None, keep: Sequence[str] = (),
            int8: Sequence[str] = ()):
    """ExecuTorch 1.5's Vulkan quantized linears, on nn.Linear (1x1 convs made Linear first); convs stay float:
        w8a8  static int8 per-tensor inputs + int8 per-channel weights (input_quantizer, linear only): the backend
              fuses them into `et_vk.linear_q8ta_q8csw`
        w8    int8 per-channel weights only (`VulkanQuantizer`): fused into `aten._weight_int8pack_mm`
        w4    int4 weights in groups of 32 (torchao `IntxWeightOnlyConfig`): fused into `et_vk.linear_q4gsw`; a
              Linear whose input size is not a multiple of 32 gets int8 per-channel weights instead"""
    if precision == "w8a8":
        from . import input_quantizer

        return input_quantizer.quantize(module, args, calibration or [args], keep, ops=("linear",))
    if precision == "w8":
        return _vulkan_int8_weights(module, args, keep)
    if precision == "w4":
        return _torchao_weight_only_int4(module, keep, int8)
    raise ValueError(f"no Vulkan quantization for {precision!r}")


def _vulkan_int8_weights(module, args, keep: Sequence[str] = ()):
    from executorch.backends.vulkan.quantizer.vulkan_quantizer import (
        VulkanQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

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


def _torchao_weight_only_int4(module, keep: Sequence[str] = (), int8: Sequence[str] = ()):
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import IntxWeightOnlyConfig, quantize_

    quantize_(module, IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(W4_GROUP)),
              filter_fn=_linears(grouped=True, keep=keep, int8=int8))
    quantize_(module, IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
              filter_fn=_linears(grouped=False, keep=keep, int8=int8))
    return module


# ---------------------------------------------------------------------------------------------------------------
# ONNX


class _Reader:
    """onnxruntime CalibrationDataReader over recorded inputs (name → numpy array per record)."""

    def __init__(self, records: Sequence[dict]):
        self.records = list(records)
        self.i = 0

    def get_next(self):
        if self.i >= len(self.records):
            return None
        self.i += 1
        return self.records[self.i - 1]

    def rewind(self):
        self.i = 0


def qdq_config(precision: str, records: Sequence[dict]) -> dict:
    """quantize_static keyword arguments of a QDQ precision (w8a8 or w8a16). w8a8 is U8S8 (uint8 asymmetric
    activations, int8 symmetric per-channel weights), onnxruntime's fast x86 form (VNNI multiplies u8 by s8): the
    270M denoiser at 128x224 ran 2.30x fp32 as U8S8 against 1.78x as S8S8, both 40.8 dB, side by side."""
    from onnxruntime.quantization import QuantFormat, QuantType

    if precision == "w8a8":
        return {"quant_format": QuantFormat.QDQ, "activation_type": QuantType.QUInt8,
                "weight_type": QuantType.QInt8, "per_channel": True, "calibration_data_reader": _Reader(records)}
    if precision == "w8a16":
        return {"quant_format": QuantFormat.QDQ, "activation_type": QuantType.QUInt16,
                "weight_type": QuantType.QUInt8, "per_channel": True, "calibration_data_reader": _Reader(records),
                "extra_options": {"UseQDQContribOps": True}}
    raise ValueError(f"no QDQ configuration for {precision!r}")


def nodes_of_units(path: Path, keep: Sequence[str]) -> list[str]:
    """ONNX nodes that belong to the `keep` submodules: those with a weight or bias initializer named after one
    (the dynamo exporter names initializers by parameter path)."""
    import onnx

    if not keep:
        return []
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node
            if any(i in inits and any(i.startswith(k + ".") for k in keep) for i in n.input)]


@contextlib.contextmanager
def calibration_in_bounded_memory():
    """onnxruntime.quantization's calibration session, run in priority-based node order without the arena.

    Its MinMax calibrator adds a ReduceMin/ReduceMax pair after every tensor; in the default execution order those
    run late and keep every intermediate alive: the 720p denoiser's add up to 23.5 GB, and quantize_static was
    OOM-killed on this 24 GB host even alone (> 19 GB, 2 records). In priority-based order each tensor is reduced
    and freed right after it is made: peak RSS 5.3 GB (the same graph, so the same ranges)."""
    import onnxruntime
    from onnxruntime.quantization.calibrate import CalibraterBase

    def create_inference_session(self):
        so = onnxruntime.SessionOptions()
        so.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # as onnxruntime's own
        so.execution_order = onnxruntime.ExecutionOrder.PRIORITY_BASED
        so.enable_cpu_mem_arena = False
        so.enable_mem_pattern = False
        self.infer_session = onnxruntime.InferenceSession(self.augmented_model_path, sess_options=so,
                                                          providers=self.execution_providers)

    original = CalibraterBase.create_inference_session
    CalibraterBase.create_inference_session = create_inference_session
    try:
        yield
    finally:
        CalibraterBase.create_inference_session = original


INTEGER_OPS = {"w8a8": ["MatMul", "Gemm", "Conv"], "w8": ["MatMul", "Gemm"]}  # onnxruntime's, after the rewrite


def as_integer_friendly(path: Path, out: Path, precision: str, excluded: Sequence[str]) -> tuple[dict, list[str]]:
    """Write `path` to `out` in the form onnxruntime's integer kernels pay off on; returns what was rewritten and
    the nodes that stay float: the MatMuls of two activations (attention scores and values) and depthwise convs.

    1x1 convs and Gemms become MatMul (`as_matmuls`); for w8 the other group-1 convs get int8 weights only
    (`conv_weights_as_int8`): onnxruntime's dynamic ConvInteger and QDQ around every elementwise op cost more than
    they save. 720p denoiser on an AVX-512 host: w8 0.34x, w8a8 0.75x the fp32 speed before. After (270M models
    at 128x224, side by side with fp32): denoiser w8 2.27x at 41.6 dB, w8a8 2.54x at 40.8 dB (was 0.88x at
    35.1 dB); Turbo-VAED w8 0.97x at 39.0 dB (was 0.30x at 35.5 dB), w8a8 1.15x at 34.5 dB (was 0.99x at 31.9)."""
    import onnx

    model = onnx.load(str(path))
    counts = as_matmuls(model, set(excluded))
    if precision == "w8":
        counts["int8_weight_convs"] = conv_weights_as_int8(model, set(excluded))
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    pairs = [n.name for n in graph.node if n.op_type == "MatMul" and not any(i in inits for i in n.input)]
    depthwise = [n.name for n in graph.node if n.op_type == "Conv" and conv_groups(n) > 1]
    onnx.save(model, str(out))
    return counts, pairs + depthwise


def onnx_quantize(path: Path, precision: str, records: Sequence[dict] | None, keep: Sequence[str] = (),
                  int8: Sequence[str] = ()) -> dict:
    """Quantize the .onnx file at `path` in place; returns what was done (for target_info). `keep`: submodule
    names whose nodes stay float (a recipe's fp32 units); `int8`: those w4 gives int8 weights (int8_units, without
    the `keep` ones)."""
    import logging

    import onnxruntime.quantization  # noqa: F401 - imported before its loggers are quieted below
    import onnxruntime.quantization.matmul_nbits_quantizer  # noqa: F401 - its import sets the root logger to INFO

    for name in ("", "onnxruntime.quantization.matmul_nbits_quantizer"):  # advice/INFO lines, not for the CLI
        logging.getLogger(name).setLevel(logging.ERROR)
    tmp = path.with_suffix(".q.onnx")
    excluded = nodes_of_units(path, keep)
    if precision in ("w8a8", "w8"):
        src = path.with_suffix(".integer.onnx")
        rewritten, float_nodes = as_integer_friendly(path, src, precision, excluded)
        options = {"nodes_to_exclude": excluded + float_nodes, "op_types_to_quantize": INTEGER_OPS[precision]}
        try:
            info = _run_quantizer(src, tmp, precision, records, options)
        finally:
            src.unlink(missing_ok=True)
        info.update(quantized_ops=INTEGER_OPS[precision], rewritten=rewritten, float_nodes=len(float_nodes))
    elif precision == "w8a16":
        info = _run_quantizer(path, tmp, precision, records, {"nodes_to_exclude": excluded})
    elif precision == "w4":
        info = _matmul_nbits(path, tmp, excluded, nodes_of_units(path, int8))
    else:
        raise ValueError(f"no ONNX quantization for {precision!r}")
    tmp.replace(path)
    info["nodes_kept_float"] = len(excluded)
    return info


def _run_quantizer(src: Path, out: Path, precision: str, records: Sequence[dict] | None, options: dict) -> dict:
    """onnxruntime's static QDQ quantizer (w8a8, w8a16: calibrated in bounded memory) or its dynamic one (w8)."""
    import onnxruntime.quantization as oq

    if precision in ("w8a8", "w8a16"):
        with calibration_in_bounded_memory():
            oq.quantize_static(str(src), str(out), **qdq_config(precision, records or []), **options)
        return {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                "calibration_records": len(records or [])}
    oq.quantize_dynamic(str(src), str(out), weight_type=oq.QuantType.QInt8, per_channel=True, **options)
    return {"tool": "onnxruntime.quantization.quantize_dynamic", "weights": "int8 per channel"}


def _matmul_nbits(path: Path, out: Path, excluded: Sequence[str] = (), int8_nodes: Sequence[str] = ()) -> dict:
    """4-bit MatMulNBits on every MatMul but the `excluded` nodes and the `int8_nodes`, which get onnxruntime's
    dynamic int8 (per-channel weights) instead."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    model = onnx.load(str(path))
    rewritten = as_matmuls(model, set(excluded))
    _require_matmul_weights(model, "w4")
    int8 = [n.name for n in model.graph.node if n.op_type == "MatMul"  # a rewritten Gemm / 1x1 conv: "<name>_matmul"
            and (n.name in int8_nodes or n.name.removesuffix("_matmul") in int8_nodes)]
    config = DefaultWeightOnlyQuantConfig(block_size=W4_GROUP, is_symmetric=True, bits=4)
    q = MatMulNBitsQuantizer(model, algo_config=config, nodes_to_exclude=list(excluded) + int8)
    q.process()
    q.model.save_model_to_file(str(out), use_external_data_format=False)
    nodes = sum(1 for n in q.model.model.graph.node if n.op_type == "MatMulNBits")
    if int8:
        _dynamic_int8(out, int8)
    return {"tool": "onnxruntime MatMulNBitsQuantizer", "bits": 4, "block_size": W4_GROUP, "matmul_nbits": nodes,
            "rewritten_as_matmul": rewritten, "int8_matmuls": len(int8)}


def _dynamic_int8(path: Path, nodes: Sequence[str]) -> None:
    """onnxruntime's dynamic int8 (per-channel weights) on these MatMul nodes of the .onnx at `path`, in place."""
    import onnxruntime.quantization as oq

    tmp = path.with_suffix(".int8.onnx")
    oq.quantize_dynamic(str(path), str(tmp), weight_type=oq.QuantType.QInt8, per_channel=True,
                        nodes_to_quantize=list(nodes), op_types_to_quantize=["MatMul"])
    tmp.replace(path)


def _require_matmul_weights(model, precision: str, least: float = 0.5) -> None:
    """BadInputError unless MatMuls hold at least `least` of the weights: MatMulNBits reaches MatMul only, and
    Turbo-VAED keeps almost all of its weights in 3x3 convs (720p "w4" decoder: 0.98x the fp32 bytes, 24.4 dB)."""
    from onnx import numpy_helper

    from mi2v_export.errors import BadInputError

    sizes = {i.name: int(numpy_helper.to_array(i).size) for i in model.graph.initializer}
    weighted = [n for n in model.graph.node if n.op_type in ("MatMul", "Conv", "Gemm") and n.input[1] in sizes]
    total = sum(sizes[n.input[1]] for n in weighted)
    in_matmuls = sum(sizes[n.input[1]] for n in weighted if n.op_type == "MatMul")
    if total and in_matmuls / total < least:
        raise BadInputError(f"--precision {precision} on onnxruntime quantizes MatMul weights only, and this "
                            f"component keeps {100 * (1 - in_matmuls / total):.0f} % of its weights in convolutions "
                            "(it would stay about fp32 size): use w8 or w8a8 for it")


def as_matmuls(model, excluded: set[str]) -> dict:
    """MatMulNBits quantizes MatMul only: rewrite, in place, every Gemm with a constant B and every 1x1 Conv
    (group 1, stride 1, no padding) into MatMul (+ Add for the bias; a 1x1 conv between two Transposes that move
    the channels last and back). Exact up to float rounding."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    counts = {"Gemm": 0, "Conv": 0}
    new_nodes = []
    for node in graph.node:
        repl = None
        if node.name not in excluded and node.op_type in counts and len(node.input) > 1 and node.input[1] in inits:
            w = numpy_helper.to_array(inits[node.input[1]])
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            repl = (_gemm_as_matmul(node, w, attrs, graph) if node.op_type == "Gemm"
                    else _conv1x1_as_matmul(node, w, attrs, graph))
        if repl is None:
            new_nodes.append(node)
        else:
            counts[node.op_type] += 1
            new_nodes.extend(repl)
    _set_nodes(graph, new_nodes)
    return counts


def _set_nodes(graph, nodes: list) -> None:
    """Give `graph` these nodes and drop the initializers nothing uses any more (the replaced weights' old copies)."""
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def conv_groups(node) -> int:
    """A Conv node's `group` attribute (1 when absent)."""
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def conv_weights_as_int8(model, excluded: set[str]) -> int:
    """Weight-only int8 for the group-1 convs that `as_matmuls` leaves (kernels larger than 1x1), in place: each
    weight stored int8, symmetric per output channel, and dequantized by a DequantizeLinear in the graph; the conv
    itself runs in float. Returns how many convs. (onnxruntime's dynamic ConvInteger made the 720p Turbo-VAED
    4x slower than fp32.)"""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    done: dict[str, str] = {}
    new_nodes = []
    for node in graph.node:
        weight = node.input[1] if node.op_type == "Conv" and len(node.input) > 1 else None
        if weight in inits and conv_groups(node) == 1 and node.name not in excluded:
            if weight not in done:
                w = numpy_helper.to_array(inits[weight]).astype(np.float32)
                scale = np.abs(w).reshape(w.shape[0], -1).max(1) / 127
                scale[scale == 0] = 1.0
                q = np.clip(np.round(w / scale.reshape(-1, *[1] * (w.ndim - 1))), -127, 127).astype(np.int8)
                done[weight] = f"{weight}_dequantized"
                new_nodes.append(helper.make_node(
                    "DequantizeLinear", [_const(graph, f"{weight}_int8", q), _const(graph, f"{weight}_scale", scale),
                                         _const(graph, f"{weight}_zero", np.zeros_like(scale, np.int8))],
                    [done[weight]], axis=0, name=f"{weight}_dequantize"))
            node.input[1] = done[weight]
        new_nodes.append(node)
    _set_nodes(graph, new_nodes)
    return len(done)


def _const(graph, name: str, value) -> str:
    from onnx import numpy_helper

    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def _gemm_as_matmul(node, w, attrs, graph):
    from onnx import helper

    if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
        return None
    b = w.T.copy() if attrs.get("transB", 0) else w
    name = node.name or node.output[0]
    weight = _const(graph, f"{name}_matmul_weight", b)
    if len(node.input) < 3 or not node.input[2]:
        return [helper.make_node("MatMul", [node.input[0], weight], list(node.output), name=f"{name}_matmul")]
    mid = f"{name}_matmul_out"
    return [helper.make_node("MatMul", [node.input[0], weight], [mid], name=f"{name}_matmul"),
            helper.make_node("Add", [mid, node.input[2]], list(node.output), name=f"{name}_bias")]


def _conv1x1_as_matmul(node, w, attrs, graph):
    from onnx import helper

    rank = w.ndim
    if any(k != 1 for k in w.shape[2:]) or attrs.get("group", 1) != 1 or any(s != 1 for s in attrs.get(
            "strides", [1])) or any(p for p in attrs.get("pads", [0])) or any(d != 1 for d in attrs.get(
            "dilations", [1])) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    name = node.name or node.output[0]
    weight = _const(graph, f"{name}_matmul_weight", w.reshape(w.shape[0], w.shape[1]).T.copy())
    last = [0] + list(range(2, rank)) + [1]
    back = [0, rank - 1] + list(range(1, rank - 1))
    nodes = [helper.make_node("Transpose", [node.input[0]], [f"{name}_cl"], perm=last, name=f"{name}_to_cl"),
             helper.make_node("MatMul", [f"{name}_cl", weight], [f"{name}_mm"], name=f"{name}_matmul")]
    out = f"{name}_mm"
    if len(node.input) > 2 and node.input[2]:
        nodes.append(helper.make_node("Add", [out, node.input[2]], [f"{name}_add"], name=f"{name}_bias"))
        out = f"{name}_add"
    nodes.append(helper.make_node("Transpose", [out], list(node.output), perm=back, name=f"{name}_to_cf"))
    return nodes


# ---------------------------------------------------------------------------------------------------------------
# Core ML: w8 / w4 compress the converted weights (coremltools.optimize.coreml); w8a8 quantizes in PyTorch (PT2E)
# before conversion, since coremltools' own activation calibration (`linear_quantize_activations`) runs Core ML
# predictions, i.e. needs macOS

COREML_W4_GROUP = 16
COREML_WEIGHT_THRESHOLD = 2048  # coremltools' default: smaller tensors stay fp16


def coreml_compress(mlmodel, precision: str):
    """w8: `linear_quantize_weights` (int8, linear symmetric, per output channel); w4: `palettize_weights` (4-bit
    k-means palettes per grouped channel, groups of 16; iOS 18)."""
    import coremltools.optimize.coreml as cto

    if precision == "w8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", granularity="per_channel",
                                         weight_threshold=COREML_WEIGHT_THRESHOLD)
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
    if precision == "w4":
        op = cto.OpPalettizerConfig(nbits=4, mode="kmeans", granularity="per_grouped_channel",
                                    group_size=COREML_W4_GROUP, weight_threshold=COREML_WEIGHT_THRESHOLD)
        return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
    raise ValueError(f"no Core ML compression for {precision!r}")


def coreml_simulated(module: torch.nn.Module, precision: str) -> torch.nn.Module:
    """A copy of `module` whose conv / linear weights went through the same coremltools compression and back
    (fp16 first, as in the converted model): the PyTorch stand-in for a compressed .mlpackage off macOS."""
    import copy

    from coremltools.optimize.coreml._quantization_passes import linear_quantize_weights, palettize_weights

    sim = copy.deepcopy(module)
    for m in sim.modules():
        if not isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
                              torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)):
            continue
        w = m.weight.detach().half().float().numpy()
        if w.size <= COREML_WEIGHT_THRESHOLD:
            continue
        axis = 1 if isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)) else 0
        blocks = [0] * w.ndim
        if precision == "w8":
            blocks[axis] = 1
            params = linear_quantize_weights.blockwise_compress(w, 8, "LINEAR_SYMMETRIC", True, blocks)
            dense = None if params is None else linear_quantize_weights.decompress(params)
        else:
            blocks[axis] = COREML_W4_GROUP
            params = palettize_weights.blockwise_compress(w, "KMEANS", 4, blocks)
            dense = None if params is None else palettize_weights.decompress(params)
        if dense is not None:
            m.weight.data = torch.from_numpy(dense.astype("float32")).reshape(m.weight.shape)
    return sim

