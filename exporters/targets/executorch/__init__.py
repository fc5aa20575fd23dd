"""ExecuTorch `.pte`: torch.export → to_edge_transform_and_lower(partitioner) → to_executorch, one delegate each
(delegates.py: XNNPACK, Vulkan, QNN, Core ML).

Every delegate gets the export rewrites for ExecuTorch (`ExecuTorchExporter.rewrites`: c2d, r5, pad, rms; see
exporters/rewrites), Core ML additionally the rank-≤5 RoPE trace and coremltools' op aliases. Integer precisions
quantize the module first (exporters/quantize/pt2e.py). The test vectors (`<component>.bpte`, a BundledProgram with
the sampler inputs and the PyTorch fp32 outputs, with tolerances) are written by mi2v_export.testvectors after export
and, where the runtime here can run them, checked by `run`; `etrecord` writes `<component>.etrecord` for per-op
profiling with the Inspector. The delegation summary and the .pte reading: program.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mi2v_export import runtimes
from mi2v_export.errors import MissingDependencyError, VerificationError
from mi2v_export.precision import Precision, is_quantized
from mi2v_export.qnn import DEFAULT_SOC
from mi2v_export.runtimes.executorch import check_bundled

from ...base import (
    Artifact,
    ArtifactRun,
    ComponentSpec,
    Exporter,
    ExportOptions,
    ProgressCallback,
    ProgressEvent,
    TargetOptions,
    register,
    run_artifact,
)
from .delegates import DELEGATES, Delegate
from .program import delegation_summary, output_meta, planned_memory_bytes, read_program


@dataclass
class ExecuTorchOptions(TargetOptions):
    etrecord: bool = False  # also write <component>.etrecord for per-op profiling
    compute_units: str = "all"  # delegate coreml (contract.COMPUTE_UNITS)
    min_ios: int = 17  # delegate coreml: minimum deployment target
    soc: str = DEFAULT_SOC  # delegate qnn: the Snapdragon SoC


@register
class ExecuTorchExporter(Exporter):
    name = "executorch"
    extension = ".pte"
    summary = "ExecuTorch .pte with an XNNPACK, Vulkan, QNN or Core ML delegate"
    cli_order = 2
    options_type = ExecuTorchOptions
    runtime = "executorch"
    test_vector_format = "bundled-program"
    rewrites = ("causal_pad_cat", "shuffle_rank5", "conv3d_as_conv2d", "rms_norm_view", "layer_norm_view")
    trace_rewrites = ("channel_rms_view", "layer_norm_fp32")

    def delegates(self) -> dict[str, str]:
        return {k: d.description for k, d in DELEGATES.items()}

    def default_delegate(self) -> str:
        return "xnnpack"

    def default_dtype(self, delegate: str | None) -> str:
        return DELEGATES[delegate or "xnnpack"].default_dtype

    def precisions_for(self, delegate: str | None) -> tuple[Precision, ...]:
        return DELEGATES[delegate].supported if delegate in DELEGATES else ()

    def manifest_flags(self, options: ExportOptions) -> dict:
        own = options.target_options
        return {name: getattr(own, name) for name in ("etrecord", *DELEGATES[options.delegate].flags)}

    def check_environment(self, options: ExportOptions) -> None:
        try:
            import executorch.exir  # noqa: F401
        except ImportError:
            raise MissingDependencyError("--target executorch needs the executorch package") from None
        delegate = DELEGATES[options.delegate]
        if delegate.check is not None:
            delegate.check(options)

    def planned_memory(self, artifact: Artifact) -> int | None:
        """The memory plan's activation buffers (what the XNNPACK / Vulkan delegates allocate is not in it)."""
        return artifact.target_info.get("planned_memory_bytes")

    def export(self, spec: ComponentSpec, out_dir: Path, options: ExportOptions,
               progress: ProgressCallback) -> Artifact:
        import torch

        from ... import rewrites as rw
        from ...tensors import cast_inputs, tensor_infos

        delegate = DELEGATES[options.delegate]
        stages: dict[str, float] = {}
        names = self.rewrites + delegate.extra_rewrites
        trace = self.trace_rewrites + delegate.extra_trace
        progress(ProgressEvent(spec.name, "rewrite", "start", ", ".join(names + trace)))
        applied = rw.apply_rewrites(spec.module, names)
        half = options.dtype == "fp16" and delegate.half_graph
        module = spec.module.half() if half else spec.module
        progress(ProgressEvent(spec.name, "rewrite", "done", ", ".join(f"{n}×{c}" for n, c in applied.items() if c)))
        args = cast_inputs(spec, options.dtype if delegate.half_graph else "fp32")
        module, quantization = (_quantize(module, args, spec, options, trace, progress, stages)  # integer precisions
                                if is_quantized(options.precision) else (module, None))
        if quantization and self.host_runtime(options) is None:  # checked in PyTorch instead (run())
            self._remember_simulated(spec, options.precision, module)
        progress(ProgressEvent(spec.name, "lower", "start", f"torch.export + {delegate.name} partitioner"))
        t0 = time.perf_counter()
        with rw.tracing(trace), torch.no_grad():
            edge = delegate.lower(module, args, options, options.target_options.etrecord)
        stages["lower"] = time.perf_counter() - t0
        delegation, out_meta = delegation_summary(edge), output_meta(edge)
        described = delegate.describe(edge, options.target_options) if delegate.describe else {}
        progress(ProgressEvent(spec.name, "lower", "done",
                               f"{delegation['ops_delegated']} ops in {delegation['delegated_subgraphs']} "
                               f"subgraph(s), {delegation['ops_portable']} portable", seconds=stages["lower"]))
        info = {"delegate": delegate.name, "backend_id": delegate.backend_id, "rewrites": applied,
                "trace_rewrites": list(trace), "graph_dtype": "float16" if half else "float32"}
        if options.dtype == "fp16" and not delegate.half_graph:
            info["backend_precision"] = "fp16"
        extra = self._serialize(edge, spec, out_dir, options, info, quantization, described, progress, stages)
        return Artifact(file=self.file_name(spec.name), inputs=tensor_infos(spec.inputs, args),
                        outputs=tensor_infos(spec.output_names, out_meta), extra_files=extra, target_info=info,
                        delegation=delegation, stages_s=stages,
                        rewrites=[n for n, c in applied.items() if c] + list(trace))

    def _serialize(self, edge, spec: ComponentSpec, out_dir: Path, options: ExportOptions, info: dict,
                   quantization: dict | None, described: dict, progress: ProgressCallback, stages: dict) -> dict:
        """to_executorch, the .pte (and its ETRecord) written; fills the rest of `info`; returns the extra files."""
        progress(ProgressEvent(spec.name, "serialize", "start", "to_executorch"))
        t0 = time.perf_counter()
        program = edge.to_executorch()
        del edge
        with open(out_dir / self.file_name(spec.name), "wb") as f:
            program.write_to_file(f)
        info["planned_memory_bytes"] = planned_memory_bytes(program)
        if quantization:
            info["quantization"] = quantization
        info.update(described)
        extra: dict[str, str] = {}
        if options.target_options.etrecord:
            extra["etrecord"] = f"{spec.name}.etrecord"
            program.get_etrecord().save(str(out_dir / extra["etrecord"]))
        stages["serialize"] = time.perf_counter() - t0
        progress(ProgressEvent(spec.name, "serialize", "done", seconds=stages["serialize"]))
        return extra

    def inspect(self, artifact: Artifact, out_dir: Path, spec: ComponentSpec, options: ExportOptions) -> list[str]:
        from ...quantize import plan_of

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
        kernel = delegate.kernel_check(artifact, plan_of(options)[0]) if delegate.kernel_check else None
        if kernel is not None:
            checks.append(kernel)
        if "bundled_program" in artifact.extra_files:
            checks.append(_check_bundle_deserializes(out_dir / artifact.extra_files["bundled_program"]))
        return checks

    def runs_here(self, options: ExportOptions) -> bool:
        return super().runs_here(options) or is_quantized(options.precision)  # integer: simulated

    def run(self, artifact: Artifact, out_dir: Path, spec: ComponentSpec, options: ExportOptions) -> ArtifactRun:
        """On the delegate's ExecuTorch runtime here (runtimes/executorch.py), then the BundledProgram's own check;
        where none runs it, the quantized graph that was lowered (in PyTorch) or the runtime layer's reason."""
        from ...tensors import cast_inputs, run_simulated

        runtime = self.host_runtime(options)
        simulated = self._recalled_simulated(spec, options.precision) if runtime is None else None
        if simulated is not None:
            return run_simulated(simulated, spec)  # the quantized graph that was lowered
        if runtime is None:
            return ArtifactRun(outputs=None, verified_on=None, reason=runtimes.why_not(options))
        args = cast_inputs(spec, options.dtype if DELEGATES[options.delegate].half_graph else "fp32")
        result = run_artifact(runtime, out_dir / artifact.file, dict(zip(spec.inputs, (a.numpy() for a in args))),
                              spec.output_names, input_names=list(spec.inputs), output_names=list(spec.output_names))
        if "bundled_program" in artifact.extra_files:
            self._check_bundle(out_dir / artifact.extra_files["bundled_program"], artifact.test_vectors)
        return result

    @staticmethod
    def _check_bundle(path: Path, bundle: dict) -> None:
        try:  # runs each bundled input through the bundled program and compares with the expected output
            check_bundled(path.read_bytes(), bundle["sets"], bundle["rtol"], bundle["atol"])
        except Exception as exc:  # noqa: BLE001 - the runtime raises RuntimeError on a mismatch
            raise VerificationError(f"{path.name}: the bundled expected output does not match on this host's "
                                    f"runtime ({exc})"[:400]) from None
        bundle["verified_on_host"] = True


def _check_bundle_deserializes(path: Path) -> str:
    from executorch.devtools.bundled_program.serialize import deserialize_from_flatbuffer_to_bundled_program

    try:
        deserialize_from_flatbuffer_to_bundled_program(path.read_bytes())
    except Exception as exc:  # noqa: BLE001
        raise VerificationError(f"{path.name}: does not deserialize ({exc})"[:400]) from None
    return "bundled program deserializes"


def _quantize(module, args, spec: ComponentSpec, options: ExportOptions, trace: tuple[str, ...],
              progress: ProgressCallback, stages: dict) -> tuple:
    """The integer precision's module to lower (exporters/quantize) and its target_info record."""
    import torch

    from ... import quantize
    from ... import rewrites as rw

    progress(ProgressEvent(spec.name, "quantize", "start", options.precision))
    t0 = time.perf_counter()
    records = [tuple(r[n] for n in spec.inputs) for r in (options.calibration or [])]
    applied_precision, keep = quantize.plan_of(options)
    q = quantize.quantizer("executorch", options.delegate, applied_precision)
    # the quantizer's torch.export runs under the lowering's trace rewrites too (without them the XNNPACK w8a8
    # Turbo-VAED kept its channel RMS as 29 means on portable kernels)
    with rw.tracing(trace), torch.no_grad():
        module = q.quantize(module, args, records, keep, spec.name)
    stages["quantize"] = time.perf_counter() - t0
    progress(ProgressEvent(spec.name, "quantize", "done", seconds=stages["quantize"]))
    int8 = quantize.int8_units(spec.name, applied_precision, keep)
    info = {"precision": options.precision, "calibration_records": len(records), "applied": applied_precision,
            "kept_float": keep, "tool": q.tool, "int8_units": int8}
    if applied_precision == "w4":
        info["int4_linears"] = quantize.int4_linears(module, keep, int8)
    return module, info


__all__ = ["DELEGATES", "Delegate", "ExecuTorchExporter", "ExecuTorchOptions"]
