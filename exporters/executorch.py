"""ExecuTorch `.pte`: torch.export → to_edge_transform_and_lower(partitioner) → to_executorch, one delegate each.

Delegates (`DELEGATES`, a registry like the targets'):
    xnnpack  CPU; runs in the pip runtime here, so the artifact is executed and gated.
    vulkan   Android GPU; lowered here, structural check only (the pip runtime has no Vulkan backend); integer
             precisions also run their quantized graph in PyTorch (verified_on "pytorch-simulated") and must show
             their Vulkan kernel in the delegate payload (`vulkan_ops`).
    qnn      Qualcomm HTP; needs the Qualcomm SDK (QNN_SDK_ROOT): checked before any work, and executorch is never
             allowed to download it. Lowered through executorch's own `to_edge_transform_and_lower_to_qnn`.
    coreml   Core ML inside ExecuTorch (Apple); structural check only on Linux.

Every delegate gets the export rewrites for ExecuTorch (c2d, r5, pad, rms; see rewrites.py), Core ML additionally
the rank-≤5 RoPE trace and coremltools' op aliases. The test vectors (`<component>.bpte`, a BundledProgram
with the sampler inputs and the PyTorch fp32 outputs, with tolerances) are written by mi2v_export.testvectors after
export and, where the runtime here can run them, checked by `run`; `etrecord` writes
`<component>.etrecord` for per-op profiling with the Inspector.

The delegation summary counts operator nodes inside delegate subgraphs vs left on portable kernels, and the share
of FLOPs (2·MAC of convolutions and matmuls, as mi2v_export.flops counts them) that runs in a delegate.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mi2v_export.contract import runs_on_host
from mi2v_export.errors import MissingDependencyError, VerificationError

from . import quantize
from . import rewrites as rw
from .base import (
    Artifact,
    ComponentSpec,
    Exporter,
    ExportOptions,
    ProgressCallback,
    ProgressEvent,
    ArtifactRun,
    cast_inputs,
    register,
    run_simulated,
    tensor_infos,
)

# ---------------------------------------------------------------------------------------------------------------
# Delegates


@dataclass(frozen=True)
class Delegate:
    name: str
    backend_id: str  # the id recorded in the .pte
    description: str
    default_dtype: str = "fp32"
    half_graph: bool = True  # fp16 = cast the module to half (False: fp32 graph, backend computes in fp16)
    extra_rewrites: tuple[str, ...] = ()
    extra_trace: tuple[str, ...] = ()  # trace-time substitutions (rewrites.LOWERING_REWRITES) on top of ExecuTorch's
    no_runtime_reason: str = ""
    lower: Callable | None = field(default=None, compare=False)  # (module, args, options, etrecord) → edge manager


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

    from .coreml import compute_unit, deployment_target

    rw.register_coreml_aliases()
    specs = CoreMLBackend.generate_compile_specs(
        minimum_deployment_target=deployment_target(options.min_ios),
        compute_precision=ct.precision.FLOAT16 if options.dtype == "fp16" else ct.precision.FLOAT32,
        compute_unit=compute_unit(options.compute_units))
    return [CoreMLPartitioner(compile_specs=specs)]


def drop_noop_views(ep) -> int:
    """Remove `alias` and full-range `slice` nodes (no-ops: e.g. `x[:, :, :1]` on a one-frame video). ExecuTorch
    keeps them as portable `alias_copy` / `slice_copy` ops that split the delegate graph (vae-export.md §7)."""
    import torch

    aten = torch.ops.aten
    removed = 0
    graph = ep.graph_module.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or not node.args or not hasattr(node.args[0], "meta"):
            continue
        src = node.args[0]
        noop = False
        if node.target in (aten.alias.default, aten.alias_copy.default):
            noop = True
        elif node.target is aten.slice.Tensor:
            a, b = node.meta.get("val"), src.meta.get("val")
            step = node.args[4] if len(node.args) > 4 else 1
            noop = a is not None and b is not None and tuple(a.shape) == tuple(b.shape) and step == 1
        if noop and node.meta.get("val") is not None and src.meta.get("val") is not None and \
                node.meta["val"].dtype == src.meta["val"].dtype:
            node.replace_all_uses_with(src)
            graph.erase_node(node)
            removed += 1
    if removed:
        graph.eliminate_dead_code()
        ep.graph_module.recompile()
    return removed


@contextlib.contextmanager
def fp16_conv_weights():
    """Serialize fp16 convolution weights as fp16. ExecuTorch 1.5.1's XNNPACK conv visitor forces every static
    conv weight and bias to fp32 (`force_fp32=True`, XNNPACK converts them when it builds the operator): an fp16
    decoder .pte was as large as the fp32 one (tiny Turbo-VAED: 9.04 vs 9.00 MB). XNNPACK's fp16 convolution
    takes fp16 static weights itself, so fp16 constants of a float (unquantized) conv keep their dtype."""
    import executorch.backends.xnnpack.operators  # noqa: F401 - registers the visitors
    from executorch.backends.xnnpack.operators.node_visitor import _node_visitor_dict

    conv = _node_visitor_dict["aten.convolution.default"]  # register_node_visitor leaves the module name None
    original = conv.define_node

    def define_node(self, node, xnn_graph, vals_to_ids, debug_handle):
        plain = self.define_tensor

        def define_tensor(tensor, *a, quant_params=None, force_fp32=False, **kw):
            val = tensor.meta.get("val") if hasattr(tensor, "meta") else None
            if quant_params is None and val is not None and val.dtype == torch.float16:
                force_fp32 = False
            return plain(tensor, *a, quant_params=quant_params, force_fp32=force_fp32, **kw)

        self.define_tensor = define_tensor
        try:
            return original(self, node, xnn_graph, vals_to_ids, debug_handle)
        finally:
            del self.define_tensor

    import torch

    conv.define_node = define_node
    try:
        yield
    finally:
        conv.define_node = original


def _generic_lower(partitioners: Callable[[ExportOptions], list]):
    def lower(module, args, options: ExportOptions, etrecord: bool):
        import torch
        from executorch.exir import to_edge_transform_and_lower

        ep = torch.export.export(module, args, strict=False)
        drop_noop_views(ep)
        half = options.dtype == "fp16" and options.delegate == "xnnpack"
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

    try:
        soc = QcomChipset[options.soc]
    except KeyError:
        from mi2v_export.errors import BadInputError

        raise BadInputError(f"unknown Qualcomm SoC {options.soc!r}; e.g. SM8650 (8 Gen 3), SM8750 (8 Elite)") from None
    specs = generate_qnn_executorch_compiler_spec(soc_model=soc, backend_options=generate_htp_compiler_spec(
        use_fp16=options.dtype == "fp16"))
    return to_edge_transform_and_lower_to_qnn(module, args, specs, generate_etrecord=etrecord)


DELEGATES: dict[str, Delegate] = {d.name: d for d in (
    Delegate("xnnpack", "XnnpackBackend", "XNNPACK (CPU, Android/iOS/desktop)",
             lower=_generic_lower(_xnnpack_partitioners)),
    Delegate("vulkan", "VulkanBackend", "Vulkan (Android GPU)",
             no_runtime_reason="the ExecuTorch runtime on this host has no VulkanBackend; run it on the device "
                               "(mi2v bench)", lower=_generic_lower(_vulkan_partitioners), extra_trace=("conv2d_batch1",)),
    Delegate("qnn", "QnnBackend", "Qualcomm AI Engine Direct (Hexagon HTP)",
             default_dtype="fp16", half_graph=False,
             no_runtime_reason="QNN .pte files run only on a Snapdragon device", lower=_qnn_lower),
    Delegate("coreml", "CoreMLBackend", "Core ML (Apple CPU/GPU/ANE)", default_dtype="fp16",
             half_graph=False, extra_trace=("rope_rank5",),
             no_runtime_reason="the ExecuTorch runtime on this host has no CoreMLBackend (Core ML needs macOS/iOS)",
             lower=_generic_lower(_coreml_partitioners)),
)}


QUANTIZATION_TOOLS = {  # (delegate, integer precision) → how it is made (target_info.quantization.tool)
    ("xnnpack", "w8a8"): "PT2E XNNPACKQuantizer (static int8 activations, int8 per-channel weights)",
    ("xnnpack", "w8"): "PT2E XNNPACKQuantizer (dynamic int8 activations, int8 per-channel weights: 8da8w)",
    ("xnnpack", "w4"): "torchao 8da4w (int4 groups of 32)",
    ("vulkan", "w8a8"): "PT2E, linear inputs int8 per tensor + int8 per-channel weights → et_vk.linear_q8ta_q8csw",
    ("vulkan", "w8"): "PT2E VulkanQuantizer, int8 per-channel weights only → aten._weight_int8pack_mm",
    ("vulkan", "w4"): "torchao IntxWeightOnlyConfig (int4 groups of 32) → et_vk.linear_q4gsw",
}
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


def _vulkan_kernel_check(artifact: Artifact, precision: str) -> str:
    """The integer precision's Vulkan kernel is in the delegate (a quantization the backend did not fuse or take
    would leave float linears under an integer label)."""
    kernel = VULKAN_KERNELS[precision]
    count = (artifact.target_info.get("vulkan_ops") or {}).get(kernel, 0)
    if precision == "w4" and artifact.target_info.get("quantization", {}).get("int4_linears") == 0:
        return "Vulkan w4: no Linear takes int4 groups of 32 (input sizes / int8 units), all int8 per channel"
    if not count:
        raise VerificationError(f"{artifact.file}: labelled {precision} but its Vulkan graph has no {kernel}")
    return f"Vulkan {precision} kernel: {kernel}×{count}"


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


# ---------------------------------------------------------------------------------------------------------------
# Delegation summary


def _op_name(target) -> str:
    name = getattr(target, "__name__", None) or str(target)
    text = str(target)
    if text.startswith(("aten.", "dim_order_ops.", "quantized_decomposed.", "et_vk.", "llama.")):
        name = text
    return name.rsplit(".default", 1)[0] if name.endswith(".default") else name


def _val(node):
    v = node.meta.get("val") if hasattr(node, "meta") else None
    return v


def _numel(shape) -> int:
    return int(math.prod(int(s) for s in shape))


def node_flops(node) -> int:
    """2·MAC of a convolution / matmul node from its tensor metadata; 0 for everything else (elementwise work
    is not counted, as in mi2v_export.flops)."""
    name = _op_name(node.target)
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
        if name in ("aten.mm", "aten.bmm", "aten.matmul"):
            a = _val(node.args[0])
            return 2 * _numel(out.shape) * int(a.shape[-1])
        if name == "aten.addmm":
            a = _val(node.args[1])
            return 2 * _numel(out.shape) * int(a.shape[-1])
        if name == "aten.linear":
            x = _val(node.args[0])
            return 2 * _numel(out.shape) * int(x.shape[-1])
    except (AttributeError, IndexError, TypeError):
        return 0
    return 0


def delegation_summary(edge_manager) -> dict:
    """Ops and FLOPs inside delegate subgraphs vs on portable kernels, from the lowered edge program."""
    gm = edge_manager.exported_program().graph_module
    delegated: Counter = Counter()
    portable: Counter = Counter()
    backends: Counter = Counter()
    flops_delegated = flops_portable = 0
    subgraphs = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        if "executorch_call_delegate" in str(node.target):
            lowered = getattr(gm, node.args[0].target)
            subgraphs += 1
            backends[lowered.backend_id] += 1
            for n in lowered.original_module.graph_module.graph.nodes:
                if n.op == "call_function" and n.target is not operator.getitem:
                    delegated[_op_name(n.target)] += 1
                    flops_delegated += node_flops(n)
        else:
            portable[_op_name(node.target)] += 1
            flops_portable += node_flops(node)
    n_del, n_port = sum(delegated.values()), sum(portable.values())
    total_flops = flops_delegated + flops_portable
    return {
        "backends": dict(backends),
        "delegated_subgraphs": subgraphs,
        "ops_delegated": n_del,
        "ops_portable": n_port,
        "ops_share_delegated": round(n_del / (n_del + n_port), 4) if n_del + n_port else None,
        "flops_delegated": flops_delegated,
        "flops_portable": flops_portable,
        "flops_share_delegated": round(flops_delegated / total_flops, 6) if total_flops else None,
        "flops_counted": "2·MAC of convolution / conv2d / mm / bmm / matmul / addmm / linear",
        "portable_ops": dict(portable.most_common()),
        "delegated_ops": dict(delegated.most_common()),
    }


# ---------------------------------------------------------------------------------------------------------------
# .pte reading


def read_program(path: Path):
    """The .pte's Program flatbuffer (without the weight segments), parsed by executorch's own deserialiser."""
    from executorch.exir._serialize._flatbuffer_program import _flatbuffer_to_program
    from executorch.exir._serialize._program import _get_extended_header

    with open(path, "rb") as f:
        head = f.read(64)
        eh = _get_extended_header(head)
        f.seek(0)
        data = f.read(eh.program_size) if eh is not None else f.read()
    return _flatbuffer_to_program(data)


def planned_memory_bytes(program) -> int:
    """Activation memory the program's memory plan reserves for `forward` (sum of its non-constant buffers)."""
    plan = next(p for p in program.executorch_program.execution_plan if p.name == "forward")
    return int(sum(plan.non_const_buffer_sizes))


# ---------------------------------------------------------------------------------------------------------------
# The exporter


@register
class ExecuTorchExporter(Exporter):
    name = "executorch"
    extension = ".pte"
    summary = "ExecuTorch .pte with an XNNPACK, Vulkan, QNN or Core ML delegate"

    def delegates(self) -> dict[str, str]:
        return {k: d.description for k, d in DELEGATES.items()}

    def default_delegate(self) -> str:
        return "xnnpack"

    def default_dtype(self, delegate: str | None) -> str:
        return DELEGATES[delegate or "xnnpack"].default_dtype

    def check_environment(self, options: ExportOptions) -> None:
        try:
            import executorch.exir  # noqa: F401
        except ImportError:
            raise MissingDependencyError("--target executorch needs the executorch package") from None
        if options.delegate == "qnn":
            check_qnn_sdk()
            if options.dtype != "fp16":
                from mi2v_export.errors import BadInputError

                raise BadInputError("--delegate qnn runs floating point on the HTP in fp16 only; use --dtype fp16")
        if options.delegate == "coreml":
            try:
                import coremltools  # noqa: F401
            except ImportError:
                raise MissingDependencyError("--delegate coreml needs coremltools") from None

    def export(self, spec: ComponentSpec, out_dir: Path, options: ExportOptions,
               progress: ProgressCallback) -> Artifact:
        import torch

        delegate = DELEGATES[options.delegate]
        file = self.file_name(spec.name)
        stages: dict[str, float] = {}
        module = spec.module
        names = rw.FOR_TARGET["executorch"] + delegate.extra_rewrites
        trace = rw.TRACE_FOR_TARGET["executorch"] + delegate.extra_trace
        progress(ProgressEvent(spec.name, "rewrite", "start", ", ".join(names + trace)))
        applied = rw.apply_rewrites(module, names)
        applied_names = [n for n, c in applied.items() if c]
        if options.dtype == "fp16" and delegate.half_graph:
            module = module.half()
        progress(ProgressEvent(spec.name, "rewrite", "done", ", ".join(f"{n}×{c}" for n, c in applied.items() if c)))
        args = cast_inputs(spec, options.dtype if delegate.half_graph else "fp32")
        module, quantization = (_quantize(module, args, spec, options, trace, progress, stages)  # integer precisions
                                if options.precision not in ("fp32", "fp16") else (module, None))
        if quantization and not runs_on_host(self.name, delegate.name):  # checked in PyTorch instead (run())
            self._remember_simulated(spec, options.precision, module)

        progress(ProgressEvent(spec.name, "lower", "start", f"torch.export + {delegate.name} partitioner"))
        t0 = time.perf_counter()
        with rw.tracing(trace), torch.no_grad():
            edge = delegate.lower(module, args, options, options.etrecord)
        stages["lower"] = time.perf_counter() - t0
        delegation = delegation_summary(edge)
        out_meta = _output_meta(edge)
        backend_ops = vulkan_ops(edge) if delegate.name == "vulkan" else None
        progress(ProgressEvent(spec.name, "lower", "done",
                               f"{delegation['ops_delegated']} ops in {delegation['delegated_subgraphs']} "
                               f"subgraph(s), {delegation['ops_portable']} portable", seconds=stages["lower"]))
        progress(ProgressEvent(spec.name, "serialize", "start", "to_executorch"))
        t0 = time.perf_counter()
        program = edge.to_executorch()
        del edge
        with open(out_dir / file, "wb") as f:
            program.write_to_file(f)
        extra: dict[str, str] = {}
        info: dict = {"delegate": delegate.name, "backend_id": delegate.backend_id, "rewrites": applied,
                      "trace_rewrites": list(trace),
                      "graph_dtype": "float16" if options.dtype == "fp16" and delegate.half_graph else "float32"}
        if options.dtype == "fp16" and not delegate.half_graph:
            info["backend_precision"] = "fp16"
        info.update(planned_memory_bytes=planned_memory_bytes(program), **({"quantization": quantization}
                                                                            if quantization else {}),
                    **({"vulkan_ops": backend_ops} if backend_ops is not None else {}))
        if delegate.name == "coreml":
            info.update(compute_units=options.compute_units, minimum_deployment_target=f"iOS{options.min_ios}")
        if delegate.name == "qnn":
            info["soc"] = options.soc
        if options.etrecord:
            extra["etrecord"] = f"{spec.name}.etrecord"
            program.get_etrecord().save(str(out_dir / extra["etrecord"]))
        stages["serialize"] = time.perf_counter() - t0
        progress(ProgressEvent(spec.name, "serialize", "done", seconds=stages["serialize"]))
        del program

        return Artifact(file=file, inputs=tensor_infos(spec.inputs, args),
                        outputs=tensor_infos(spec.output_names, out_meta), extra_files=extra, target_info=info,
                        delegation=delegation, stages_s=stages, rewrites=applied_names + list(trace))

    def inspect(self, artifact: Artifact, out_dir: Path, spec: ComponentSpec, options: ExportOptions) -> list[str]:
        delegate = DELEGATES[options.delegate]
        path = out_dir / artifact.file
        try:
            program = read_program(path)
        except Exception as exc:  # noqa: BLE001 - any parse failure means a broken file
            raise VerificationError(f"{artifact.file}: does not deserialize as an ExecuTorch program ({exc})"[:400]) \
                from None
        checks = ["program deserializes"]
        plans = {p.name: p for p in program.execution_plan}
        if "forward" not in plans:
            raise VerificationError(f"{artifact.file}: no forward method (has {', '.join(plans)})")
        plan = plans["forward"]
        if len(plan.inputs) != len(spec.inputs) or len(plan.outputs) != len(spec.output_names):
            raise VerificationError(f"{artifact.file}: forward takes {len(plan.inputs)} inputs / gives "
                                    f"{len(plan.outputs)} outputs, the contract has {len(spec.inputs)} / "
                                    f"{len(spec.output_names)}")
        checks.append(f"forward: {len(plan.inputs)} inputs, {len(plan.outputs)} outputs")
        ids = sorted({d.id for d in plan.delegates})
        if delegate.backend_id not in ids:
            raise VerificationError(f"{artifact.file}: no {delegate.backend_id} delegate in the program "
                                    f"(delegates: {', '.join(ids) or 'none'})")
        checks.append(f"delegates present: {', '.join(ids)}")
        applied, _ = quantize.plan_of(options)
        if delegate.name == "vulkan" and applied in VULKAN_KERNELS:
            checks.append(_vulkan_kernel_check(artifact, applied))
        if "bundled_program" in artifact.extra_files:
            from executorch.devtools.bundled_program.serialize import deserialize_from_flatbuffer_to_bundled_program

            data = (out_dir / artifact.extra_files["bundled_program"]).read_bytes()
            try:
                deserialize_from_flatbuffer_to_bundled_program(data)
            except Exception as exc:  # noqa: BLE001
                raise VerificationError(f"{artifact.extra_files['bundled_program']}: does not deserialize "
                                        f"({exc})"[:400]) from None
            checks.append("bundled program deserializes")
        return checks

    def runs_here(self, options: ExportOptions) -> bool:
        return super().runs_here(options) or options.precision not in ("fp32", "fp16")  # integer: simulated

    def run(self, artifact: Artifact, out_dir: Path, spec: ComponentSpec, options: ExportOptions) -> ArtifactRun:
        delegate = DELEGATES[options.delegate]
        if not runs_on_host(self.name, delegate.name):
            simulated = self._recalled_simulated(spec, options.precision)
            if simulated is not None:
                return run_simulated(simulated, spec)  # the quantized graph that was lowered
            return ArtifactRun(outputs=None, verified_on=None, reason=delegate.no_runtime_reason)
        from executorch.runtime import Runtime

        runtime = Runtime.get()
        if not runtime.backend_registry.is_available(delegate.backend_id):
            return ArtifactRun(outputs=None, verified_on=None,
                             reason=f"this executorch build has no {delegate.backend_id}")
        args = cast_inputs(spec, options.dtype if delegate.half_graph else "fp32")
        program = runtime.load_program(out_dir / artifact.file)
        method = program.load_method("forward")
        outs = method.execute(list(args))
        outputs = {n: o.detach().float().numpy() if hasattr(o, "detach") else o
                   for n, o in zip(spec.output_names, outs)}
        del method, program
        if "bundled_program" in artifact.extra_files:
            self._check_bundle(out_dir / artifact.extra_files["bundled_program"], artifact.test_vectors)
        return ArtifactRun(outputs=outputs, verified_on=f"executorch-{delegate.name}")

    @staticmethod
    def _check_bundle(path: Path, bundle: dict) -> None:
        from executorch.extension.pybindings import portable_lib

        bp = portable_lib._load_bundled_program_from_buffer(path.read_bytes())
        try:  # runs each bundled input through the bundled program and compares with the expected output
            for n in range(bundle["sets"]):
                bp.verify_result_with_bundled_expected_output("forward", n, bundle["rtol"], bundle["atol"])
        except Exception as exc:  # noqa: BLE001 - the runtime raises RuntimeError on a mismatch
            raise VerificationError(f"{path.name}: the bundled expected output does not match on this host's "
                                    f"runtime ({exc})"[:400]) from None
        bundle["verified_on_host"] = True


def _quantize(module, args, spec: ComponentSpec, options: ExportOptions, trace: tuple[str, ...],
              progress: ProgressCallback, stages: dict) -> tuple:
    """The integer precision's module to lower (exporters/quantize.py) and its target_info record."""
    import torch

    progress(ProgressEvent(spec.name, "quantize", "start", options.precision))
    t0 = time.perf_counter()
    records = [tuple(r[n] for n in spec.inputs) for r in (options.calibration or [])]
    applied_precision, keep = quantize.plan_of(options)
    # the quantizer's torch.export runs under the lowering's trace rewrites too (without them the XNNPACK w8a8
    # Turbo-VAED kept its channel RMS as 29 means on portable kernels)
    with rw.tracing(trace), torch.no_grad():
        module = quantize.executorch_quantize(module, args, applied_precision, records, keep, spec.name,
                                              options.delegate)
    stages["quantize"] = time.perf_counter() - t0
    progress(ProgressEvent(spec.name, "quantize", "done", seconds=stages["quantize"]))
    int8 = quantize.int8_units(spec.name, applied_precision, keep)
    info = {"precision": options.precision, "calibration_records": len(records), "applied": applied_precision,
            "kept_float": keep, "tool": QUANTIZATION_TOOLS[options.delegate, applied_precision], "int8_units": int8}
    if applied_precision == "w4":
        info["int4_linears"] = quantize.int4_linears(module, keep, int8)
    return module, info


def _output_meta(edge_manager) -> list:
    """The lowered program's output tensors (fake tensors carrying shape and dtype)."""
    gm = edge_manager.exported_program().graph_module
    out = next(n for n in gm.graph.nodes if n.op == "output")
    values = out.args[0] if isinstance(out.args[0], (list, tuple)) else [out.args[0]]
    return [v.meta["val"] for v in values]
