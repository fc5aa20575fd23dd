"""ExecuTorch's delegates, one `Delegate` record each (`DELEGATES`, the registry of `--delegate` for ExecuTorch):
how it lowers, which precisions it produces, which options shape its artifacts, and its own checks. Whether this
host runs a delegate's programs is the runtime layer's answer (mi2v_export/runtimes/executorch.py).

    xnnpack  CPU; runs in the pip runtime here, so the artifact is executed and gated.
    vulkan   Android GPU; lowered here, structural check only (the pip runtime has no Vulkan backend); integer
             precisions also run their quantized graph in PyTorch (verified_on "pytorch-simulated") and must show
             their Vulkan kernel in the delegate payload (`vulkan_ops`).
    qnn      Qualcomm HTP; needs the Qualcomm SDK (QNN_SDK_ROOT): checked before any work, and executorch is never
             allowed to download it. Lowered through executorch's own `to_edge_transform_and_lower_to_qnn`.
    coreml   Core ML inside ExecuTorch (Apple); structural check only on Linux.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mi2v_export.errors import BadInputError, MissingDependencyError, VerificationError
from mi2v_export.precision import Precision
from mi2v_export.qnn import SOCS

from ...base import Artifact, ExportOptions
from .program import drop_noop_views, fp16_conv_weights

INTEGERS = (Precision.W8A8, Precision.W8, Precision.W4)


@dataclass(frozen=True)
class Delegate:
    name: str
    backend_id: str  # the id recorded in the .pte
    description: str
    default_dtype: str = "fp32"
    half_graph: bool = True  # fp16 = cast the module to half (False: fp32 graph, backend computes in fp16)
    supported: tuple[Precision, ...] = (Precision.FP32, Precision.FP16)  # in the order errors show
    extra_rewrites: tuple[str, ...] = ()
    extra_trace: tuple[str, ...] = ()  # trace-time substitutions (rewrites.LOWERING_REWRITES) on top of ExecuTorch's
    flags: tuple[str, ...] = ()  # ExecuTorchOptions fields that shape its artifacts (manifest flags), beyond etrecord
    lower: Callable | None = field(default=None, compare=False)  # (module, args, options, etrecord) → edge manager
    check: Callable[[ExportOptions], None] | None = field(default=None, compare=False)  # its environment, at once
    describe: Callable[..., dict] | None = field(default=None, compare=False)  # (edge, options) → target_info
    kernel_check: Callable[[Artifact, str], str | None] | None = field(default=None, compare=False)  # inspect


# ---------------------------------------------------------------------------------------------------------------
# Lowering


def _memoize_vulkan_patterns() -> None:
    """executorch 1.5.1 registers the Vulkan rope pattern-graph builders *before* their lru_cache, so every
    partition re-exports the patterns (≈12 s each, 200 s for the tiny denoiser). Cache them: they are read-only."""
    try:
        from executorch.backends.vulkan.patterns.pattern_registry import fusable_patterns
    except ImportError:
        return
    for entry in fusable_patterns.values():
        fn = getattr(entry, "get_graphs_fn", None)
        if fn is not None and not hasattr(fn, "cache_info"):
            entry.get_graphs_fn = functools.lru_cache(maxsize=1)(fn)


def _xnnpack_partitioners(options: ExportOptions) -> list:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return [XnnpackPartitioner()]


def _vulkan_partitioners(options: ExportOptions) -> list:
    import logging

    root = logging.getLogger()
    level = root.level
    from executorch.backends.vulkan.partitioner.vulkan_partitioner import VulkanPartitioner

    root.setLevel(level)  # its import sets the root logger to INFO: ~200 "skipping node" lines per export

    _memoize_vulkan_patterns()
    return [VulkanPartitioner()]


def _coreml_partitioners(options: ExportOptions) -> list:
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    from ... import rewrites as rw
    from ..coreml import compute_unit, deployment_target

    rw.register_coreml_aliases()
    own = options.target_options
    specs = CoreMLBackend.generate_compile_specs(
        minimum_deployment_target=deployment_target(own.min_ios),
        compute_precision=ct.precision.FLOAT16 if options.dtype == "fp16" else ct.precision.FLOAT32,
        compute_unit=compute_unit(own.compute_units))
    return [CoreMLPartitioner(compile_specs=specs)]


def _generic_lower(partitioners: Callable[[ExportOptions], list], fp16_weights: bool = False):
    """torch.export → drop no-op views → to_edge_transform_and_lower with these partitioners; `fp16_weights`:
    keep fp16 conv weights fp16 in an fp16 graph (XNNPACK, `fp16_conv_weights`)."""
    def lower(module, args, options: ExportOptions, etrecord: bool):
        import torch
        from executorch.exir import to_edge_transform_and_lower

        ep = torch.export.export(module, args, strict=False)
        drop_noop_views(ep)
        half = options.dtype == "fp16" and fp16_weights
        with fp16_conv_weights() if half else contextlib.nullcontext():
            return to_edge_transform_and_lower(ep, partitioner=partitioners(options), generate_etrecord=etrecord)

    return lower


def _qnn_lower(module, args, options: ExportOptions, etrecord: bool):
    from executorch.backends.qualcomm.serialization.qc_schema import QcomChipset
    from executorch.backends.qualcomm.utils.utils import (
        generate_htp_compiler_spec,
        generate_qnn_executorch_compiler_spec,
        to_edge_transform_and_lower_to_qnn,
    )

    soc_name = options.target_options.soc
    try:
        soc = QcomChipset[soc_name]
    except KeyError:
        raise BadInputError(f"unknown Qualcomm SoC {soc_name!r}; e.g. "
                            + ", ".join(f"{s.name} ({s.product})" for s in SOCS.values())) from None
    specs = generate_qnn_executorch_compiler_spec(soc_model=soc, backend_options=generate_htp_compiler_spec(
        use_fp16=options.dtype == "fp16"))
    return to_edge_transform_and_lower_to_qnn(module, args, specs, generate_etrecord=etrecord)


# ---------------------------------------------------------------------------------------------------------------
# Vulkan: its kernels in the delegate payload


VULKAN_KERNELS = {  # integer precision → the Vulkan op its linears must become (checked on the lowered graph)
    "w8a8": "et_vk.linear_q8ta_q8csw.default",
    "w8": "aten._weight_int8pack_mm.default",
    "w4": "et_vk.linear_q4gsw.default",
}


def vulkan_ops(edge_manager) -> dict[str, int]:
    """Op histogram of the Vulkan delegate payloads (the graph after the backend's own fusions, e.g. quantized
    linear patterns into et_vk kernels), read back from their flatbuffers."""
    from executorch.backends.vulkan.serialization.vulkan_graph_serialize import (
        extract_vk_flatbuffer,
        flatbuffer_to_vk_graph,
    )

    ops: Counter = Counter()
    for _, lowered in edge_manager.exported_program().graph_module.named_children():
        if getattr(lowered, "backend_id", None) == "VulkanBackend":
            graph = flatbuffer_to_vk_graph(extract_vk_flatbuffer(lowered.processed_bytes))
            ops.update(op.name for op in graph.chain)
    return dict(ops.most_common())


def _vulkan_kernel_check(artifact: Artifact, precision: str) -> str | None:
    """The integer precision's Vulkan kernel is in the delegate (a quantization the backend did not fuse or take
    would leave float linears under an integer label); None for a precision without one."""
    if precision not in VULKAN_KERNELS:
        return None
    kernel = VULKAN_KERNELS[precision]
    count = (artifact.target_info.get("vulkan_ops") or {}).get(kernel, 0)
    if precision == "w4" and artifact.target_info.get("quantization", {}).get("int4_linears") == 0:
        return "Vulkan w4: no Linear takes int4 groups of 32 (input sizes / int8 units), all int8 per channel"
    if not count:
        raise VerificationError(f"{artifact.file}: labelled {precision} but its Vulkan graph has no {kernel}")
    return f"Vulkan {precision} kernel: {kernel}×{count}"


# ---------------------------------------------------------------------------------------------------------------
# QNN and Core ML: what they need on this host


QNN_SDK_FOR_EXECUTORCH = "2.37"  # what executorch 1.5.1's PyQnnManagerAdaptor is built against


def check_qnn_sdk() -> Path:
    """QNN needs the Qualcomm SDK. Without QNN_SDK_ROOT executorch would try to download it: fail first."""
    root = os.environ.get("QNN_SDK_ROOT", "")
    if not root:
        raise MissingDependencyError(
            f"--target executorch --delegate qnn needs the Qualcomm AI Engine Direct SDK {QNN_SDK_FOR_EXECUTORCH} "
            "(ExecuTorch 1.5.1's QNN adaptor is built for it; the onnxruntime-qnn wheel's libraries do not fit it): "
            "set QNN_SDK_ROOT to its folder and add $QNN_SDK_ROOT/lib/x86_64-linux-clang to LD_LIBRARY_PATH. "
            "Without it, --target onnx --delegate qnn lowers to the same HTP through onnxruntime's QNN EP")
    lib = Path(root) / "lib" / "x86_64-linux-clang"
    if not (lib / "libQnnHtp.so").is_file():
        raise MissingDependencyError(f"QNN_SDK_ROOT={root} has no lib/x86_64-linux-clang/libQnnHtp.so; point it at "
                                     "an unpacked Qualcomm AI Engine Direct SDK")
    if str(lib) not in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        raise MissingDependencyError(f"add {lib} to LD_LIBRARY_PATH (the QNN backend loads libQnnHtp.so by name)")
    return Path(root)


def _check_qnn(options: ExportOptions) -> None:
    check_qnn_sdk()
    if options.dtype != "fp16":
        raise BadInputError("--delegate qnn runs floating point on the HTP in fp16 only; use --dtype fp16")


def _check_coreml(options: ExportOptions) -> None:
    try:
        import coremltools  # noqa: F401
    except ImportError:
        raise MissingDependencyError("--delegate coreml needs coremltools") from None


# ---------------------------------------------------------------------------------------------------------------
# The registry


DELEGATES: dict[str, Delegate] = {d.name: d for d in (
    Delegate("xnnpack", "XnnpackBackend", "XNNPACK (CPU, Android/iOS/desktop)",
             supported=(Precision.FP32, Precision.FP16, *INTEGERS), extra_trace=("denoiser_delegable",),
             lower=_generic_lower(_xnnpack_partitioners, fp16_weights=True)),
    Delegate("vulkan", "VulkanBackend", "Vulkan (Android GPU)", supported=(Precision.FP32, Precision.FP16, *INTEGERS),
             lower=_generic_lower(_vulkan_partitioners),
             extra_trace=("conv2d_batch1",), describe=lambda edge, own: {"vulkan_ops": vulkan_ops(edge)},
             kernel_check=_vulkan_kernel_check),
    Delegate("qnn", "QnnBackend", "Qualcomm AI Engine Direct (Hexagon HTP)",
             default_dtype="fp16", half_graph=False, supported=(Precision.FP16,), flags=("soc",),
             lower=_qnn_lower, check=_check_qnn,
             describe=lambda edge, own: {"soc": own.soc}),
    Delegate("coreml", "CoreMLBackend", "Core ML (Apple CPU/GPU/ANE)", default_dtype="fp16",
             half_graph=False, extra_trace=("rope_rank5",), flags=("compute_units", "min_ios"),
             lower=_generic_lower(_coreml_partitioners), check=_check_coreml,
             describe=lambda edge, own: {"compute_units": own.compute_units,
                                         "minimum_deployment_target": f"iOS{own.min_ios}"}),
)}
