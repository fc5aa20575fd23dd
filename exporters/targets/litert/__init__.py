"""LiteRT (formerly TensorFlow Lite) `.tflite`: `litert_torch.convert` (the native LiteRT converter, no
TensorFlow), ai-edge-quantizer for the reduced precisions (exporters/quantize/litert.py), checked on
ai-edge-litert's Interpreter here (mi2v_export/runtimes/litert.py: LiteRT's CPU kernels with XNNPACK).

Steps: the rewrites LiteRT needs (`LiteRTExporter.rewrites` / `trace_rewrites`: Conv3d as Conv2d over frames, since
the converter crashes on Turbo-VAED's grouped Conv3d, and pow(x, 2) as x·x, since it marks `tfl.pow` illegal), then
the conversion of the module with its contract-named inputs and a dict of contract-named outputs (so the file's
signature carries the names), then the precision's pass on the file. Delegates:

    (none)   the CPU (XNNPACK) form, run and gated here
    gpu      the same file plus a structural check of what LiteRT's GPU delegate takes (gpu.py), in the manifest
    qualcomm | mediatek | google-tensor   ahead-of-time NPU compilation when the vendor's SDK is installed (npu.py);
             without it one line naming the package, exit 3, nothing written
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from mi2v_export import runtimes
from mi2v_export.errors import Mi2vError, MissingDependencyError, VerificationError, first_line
from mi2v_export.manifest import TensorInfo
from mi2v_export.precision import Precision
from mi2v_export.runtimes.litert import INSTALL, NPU_DELEGATES

from ...base import (
    Artifact,
    ArtifactRun,
    ComponentSpec,
    Exporter,
    ExportOptions,
    ProgressCallback,
    ProgressEvent,
    register,
)
from . import npu
from .gpu import gpu_support

GPU = "gpu"
NPU_PRECISIONS = (Precision.FP32, Precision.FP16, Precision.W8A8)  # what the vendors' NPU compilers take
# how the two halves of the converter name an op they refuse: litert_torch's lowering of the exported graph, and the
# MLIR legalization to TFLite ops
_REFUSED_OP = re.compile(r"Lowering not found: ([\w.]+)|failed to legalize operation '([\w.]+)'")


class ConverterError(Mi2vError):
    """The LiteRT converter refused a component (exit 2): the op it names is the fact a user acts on."""


@register
class LiteRTExporter(Exporter):
    name = "litert"
    extension = ".tflite"
    summary = "LiteRT .tflite (litert-torch converter), checked on ai-edge-litert's CPU runtime"
    cli_order = 3
    supported = (Precision.FP32, Precision.FP16, Precision.W8A8, Precision.W8, Precision.W4)
    runtime = "litert"
    test_vector_format = "npz"
    rewrites = ("conv3d_as_conv2d",)
    trace_rewrites = ("square_as_mul",)

    def delegates(self) -> dict[str, str]:
        return {GPU: "LiteRT GPU delegate: the CPU file plus a structural check of the ops the GPU takes",
                **{name: v.description for name, v in npu.VENDORS.items()}}

    def precisions_for(self, delegate: str | None) -> tuple[Precision, ...]:
        return NPU_PRECISIONS if delegate in NPU_DELEGATES else self.supported

    def resolve(self, options: ExportOptions) -> ExportOptions:
        if options.delegate is None:  # the CPU form
            return options
        return super().resolve(options)

    def check_environment(self, options: ExportOptions) -> None:
        for module in ("litert_torch", "ai_edge_litert", "ai_edge_quantizer"):
            why = runtimes.base.missing(module, INSTALL)
            if why:
                raise MissingDependencyError(f"--target litert needs {why}")
        if options.delegate in NPU_DELEGATES:
            npu.check_sdk(options.delegate)

    # -- export ------------------------------------------------------------------------------------------------
    def export(self, spec: ComponentSpec, out_dir: Path, options: ExportOptions,
               progress: ProgressCallback) -> Artifact:
        from ... import rewrites as rw

        file = self.file_name(spec.name)
        path, stages = out_dir / file, {}
        progress(ProgressEvent(spec.name, "rewrite", "start", ", ".join(self.rewrites + self.trace_rewrites)))
        applied = rw.apply_rewrites(spec.module, self.rewrites)
        progress(ProgressEvent(spec.name, "rewrite", "done", ", ".join(f"{n}×{c}" for n, c in applied.items() if c)))
        stages["convert"] = self._convert(spec, path, progress)
        info = {"converter": f"litert-torch {runtimes.base.package_version('litert-torch')}", "rewrites": applied,
                "trace_rewrites": list(self.trace_rewrites), "delegate": options.delegate or "cpu"}
        if options.precision != "fp32":
            t0 = time.perf_counter()
            info["quantization"] = _reduce(spec, path, options, progress)
            stages["quantize"] = time.perf_counter() - t0
        if options.delegate == GPU:
            gpu = info["gpu"] = gpu_support(path)
            info["gpu_node_share"], info["gpu_flop_share"] = gpu["node_share"], gpu["flop_share"]
            flops = "no conv/matmul" if gpu["flop_share"] is None else f"{gpu['flop_share']:.0%} of conv/matmul FLOPs"
            progress(ProgressEvent(spec.name, "gpu", "info", f"GPU delegate (structural check): its one partition "
                                   f"takes {gpu['node_share']:.0%} of {gpu['nodes']} nodes and {flops}; "
                                   f"{gpu['node_share_eligible']:.0%} of the nodes pass its rules, in "
                                   f"{gpu['partitions']} runs"))
        extra = {}
        if options.delegate in NPU_DELEGATES:
            info["npu"] = _compiled_for_npu(spec.name, path, out_dir, options.delegate)
            extra.update({f"npu_{m['target']}": m["file"] for m in info["npu"]["models"]})
        inputs, outputs = signature_infos(path, spec)
        return Artifact(file=file, inputs=inputs, outputs=outputs, extra_files=extra, target_info=info,
                        stages_s=stages, rewrites=[n for n, c in applied.items() if c] + list(self.trace_rewrites))

    def _convert(self, spec: ComponentSpec, path: Path, progress: ProgressCallback) -> float:
        """litert_torch.convert of the module (fp32) with named inputs and outputs into `path`; seconds taken."""
        import torch

        from ... import rewrites as rw
        from .convert import convert_quietly, named_outputs

        progress(ProgressEvent(spec.name, "export", "start", "litert_torch.convert"))
        t0 = time.perf_counter()
        try:
            with rw.tracing(self.trace_rewrites), torch.no_grad():
                module = named_outputs(spec.module, list(spec.inputs), spec.output_names)
                convert_quietly(module, dict(spec.inputs), path)
        except (Mi2vError, MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the converter raises ValueError, RuntimeError, AssertionError, …
            raise _converter_error(spec.name, exc) from None
        seconds = time.perf_counter() - t0
        progress(ProgressEvent(spec.name, "export", "done", seconds=seconds))
        return seconds

    # -- checks ------------------------------------------------------------------------------------------------
    def inspect(self, artifact: Artifact, out_dir: Path, spec: ComponentSpec, options: ExportOptions) -> list[str]:
        path = out_dir / artifact.file
        try:
            inputs, outputs = signature_infos(path, spec)
        except (ValueError, RuntimeError) as exc:
            raise VerificationError(f"{artifact.file}: LiteRT cannot read it ({first_line(exc)})") from None
        names_in, names_out = [t.name for t in inputs], [t.name for t in outputs]
        if names_in != list(spec.inputs) or names_out != list(spec.output_names):
            raise VerificationError(f"{artifact.file}: signature {names_in} → {names_out} differs from the contract "
                                    f"{list(spec.inputs)} → {list(spec.output_names)}")
        want = [tuple(x.shape) for x in spec.args]
        if [t.shape for t in inputs] != want:
            raise VerificationError(f"{artifact.file}: input shapes {[t.shape for t in inputs]} != {want}")
        return ["serving_default signature names match the contract", "static input shapes"]

    def run(self, artifact: Artifact, out_dir: Path, spec: ComponentSpec, options: ExportOptions) -> ArtifactRun:
        """On ai-edge-litert's Interpreter here (runtimes/litert.py), as many threads as torch uses."""
        import torch

        feeds = {name: x.numpy() for name, x in spec.inputs.items()}
        return self.run_here(out_dir / artifact.file, feeds, options, spec.output_names,
                             threads=max(1, torch.get_num_threads()))


def signature_infos(path: Path, spec: ComponentSpec) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The file's signature inputs and outputs as manifest TensorInfos, in the contract's order."""
    with runtimes.get("litert").load(path, threads=1) as session:
        order_in, order_out = list(spec.inputs), list(spec.output_names)
        ins = sorted(session.inputs, key=lambda t: order_in.index(t.name) if t.name in order_in else len(order_in))
        outs = sorted(session.outputs,
                      key=lambda t: order_out.index(t.name) if t.name in order_out else len(order_out))
        return ([TensorInfo(t.name, tuple(t.shape), t.dtype) for t in ins],
                [TensorInfo(t.name, tuple(t.shape), t.dtype) for t in outs])


def _converter_error(component: str, exc: Exception) -> ConverterError:
    """One line: the op the converter refused (its MLIR name) and the component, else the converter's first line."""
    found = _REFUSED_OP.search(str(exc))
    if found:
        return ConverterError(f"the LiteRT converter refuses op {found.group(1) or found.group(2)} in the {component} "
                              "(no LiteRT kernel for it; a lowering rewrite must replace it)")
    return ConverterError(f"the LiteRT converter failed on the {component}: {first_line(exc)}")


def _compiled_for_npu(component: str, path: Path, out_dir: Path, vendor: str) -> dict:
    """The vendor's ahead-of-time compilation (npu.py); anything its compiler raises becomes one line."""
    try:
        return npu.compile_for_npu(path, out_dir, vendor, None)
    except (Mi2vError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - ai-edge-litert's aot_compile and the vendor plugins raise anything
        raise Mi2vError(f"the {vendor} NPU compilation of the {component} failed: {first_line(exc)}") from None


def _reduce(spec: ComponentSpec, path: Path, options: ExportOptions, progress: ProgressCallback) -> dict:
    """fp16 weights or the integer precision's quantizer (exporters/quantize) on the file, in place; what was done."""
    from ... import quantize
    from ...quantize import litert as aeq
    from .convert import unit_scopes

    progress(ProgressEvent(spec.name, "quantize", "start", options.precision))
    applied, keep = quantize.plan_of(options)
    int8 = quantize.int8_units(spec.name, applied, keep)  # w4: the denoiser's sensitive units get int8 weights
    scopes, int8_scopes = unit_scopes(spec.module, keep), unit_scopes(spec.module, int8)
    tmp = path.with_suffix(".q.tflite")
    try:
        if applied == "fp16":
            info = {"tool": "ai-edge-quantizer FLOAT_CASTING", **aeq.fp16_weights(path, tmp, scopes)}
        else:
            q = quantize.quantizer("litert", options.delegate, applied)
            records = [{n: t.numpy() for n, t in r.items()} for r in (options.calibration or [])]
            info = {"tool": q.tool, **q.quantize(path, tmp, records, scopes, int8=int8_scopes)}
    except (Mi2vError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - ai-edge-quantizer raises ValueError, RuntimeError, …
        raise Mi2vError(f"ai-edge-quantizer failed on the {spec.name} ({applied}): {first_line(exc)}") from None
    tmp.replace(path)
    info.update(precision=options.precision, applied=applied, kept_float=list(keep), int8_units=int8)
    progress(ProgressEvent(spec.name, "quantize", "done"))
    return info

