"""ONNX: `torch.onnx.export(dynamo=True)`, opset 18, simplified with onnxsim, verified on onnxruntime (CPU).

- fp16: the module and its inputs are cast to half before export, so the graph's I/O are float16 (the models keep
  their own fp32 islands, e.g. the denoiser's attention core).
- Integer precisions: onnxruntime's quantizers on the exported file (exporters/quantize/ort.py).
- Weights above protobuf's 2 GB limit go to external data (`<component>.onnx.data`, listed in the manifest);
  onnxsim cannot load such models, so they are left unsimplified (recorded in target_info).
- No rewrites are needed (ONNX takes Conv3d and the rank-8 reshapes as they are).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

from mi2v_export.errors import MissingDependencyError, VerificationError
from mi2v_export.precision import Precision, is_quantized

from ..base import (
    Artifact,
    ArtifactRun,
    ComponentSpec,
    Exporter,
    ExportOptions,
    ProgressCallback,
    ProgressEvent,
    TargetOptions,
    delegated_exporters,
    register,
)

PROTOBUF_LIMIT = 2 * 1024 ** 3
EXTERNAL_DATA_MARGIN = 64 * 1024 ** 2  # graph + constants folded by the exporter on top of the parameters


def _param_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


@contextlib.contextmanager
def _quiet():
    """torch.onnx prints progress lines on stdout; keep them out of the CLI's output (and its --json)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        yield


def _onnx_tensor_infos(values) -> list:
    import onnx
    from onnx import helper

    from mi2v_export.manifest import TensorInfo

    out = []
    for v in values:
        t = v.type.tensor_type
        dims = tuple(int(d.dim_value) for d in t.shape.dim)
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type != onnx.TensorProto.UNDEFINED \
            else "undefined"
        out.append(TensorInfo(v.name, dims, dtype))
    return out


# What onnxscript's no-op rules take for "x + 0", "x - 0", "x * 1" and "x / 1": a scalar within abs 1e-8 / rel 1e-5 of
# the identity (onnxscript/rewriter/_pattern_ir.py `Constant`), which is where the models' epsilons sit (1e-8).
_IDENTITIES = {"Add": 0.0, "Sub": 0.0, "Mul": 1.0, "Div": 1.0}
_NEAR_IDENTITY = 1e-5


def keep_near_identity_constants(model) -> int:
    """Give every scalar operand of Add/Sub/Mul/Div that is near, but not at, its identity the shape (1,).

    torch.onnx's optimizer (onnxscript 0.7) removes `x + c` for any scalar |c| <= 1e-8, so the RMS norms' and the
    linear attention's `+ 1e-8` vanished and an all-zero pixel gave 0/0 = NaN (docs/guides/onnx.md). Its rules match
    scalars only; a one-element vector broadcasts to the same values and keeps the operation. Returns how many.
    """
    import onnx_ir as ir

    kept = 0
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        identity = _IDENTITIES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if identity is None:
            continue
        for index, value in enumerate(node.inputs):
            tensor = ir.convenience.get_const_tensor(value) if value is not None else None
            if tensor is None or tensor.shape.rank() != 0:
                continue
            c = tensor.numpy()
            if c.dtype.kind != "f" or float(c) == identity or abs(float(c) - identity) > _NEAR_IDENTITY:
                continue
            vector = ir.Value(name=f"{value.name or 'constant'}_kept_{kept}", const_value=ir.tensor(c.reshape(1)))
            vector.shape, vector.dtype = ir.Shape([1]), tensor.dtype
            model.graph.register_initializer(vector)
            node.replace_input_with(index, vector)
            kept += 1
    return kept


@dataclass
class OnnxOptions(TargetOptions):
    opset: int = 18  # not a CLI flag: recorded in the manifest's flags


@register
class OnnxExporter(Exporter):
    name = "onnx"
    extension = ".onnx"
    summary = "ONNX opset 18 (torch.onnx dynamo exporter), checked on onnxruntime CPU"
    cli_order = 0
    options_type = OnnxOptions
    supported = (Precision.FP32, Precision.FP16, Precision.W8A8, Precision.W8, Precision.W4, Precision.W8A16)
    runtime = "onnxruntime"
    test_vector_format = "onnx-testdata"

    def delegates(self):
        return {name: e.summary for name, e in delegated_exporters(self.name).items()}

    def resolve(self, options: ExportOptions) -> ExportOptions:
        if options.delegate is None:  # plain ONNX; a delegate has an exporter of its own (base.DELEGATED)
            return options
        return super().resolve(options)

    def check_environment(self, options: ExportOptions) -> None:
        for mod in ("onnx", "onnxscript", "onnxruntime"):
            try:
                __import__(mod)
            except ImportError:
                raise MissingDependencyError(f"--target onnx needs the {mod} package (pip install {mod})") from None

    def export(self, spec: ComponentSpec, out_dir: Path, options: ExportOptions,
               progress: ProgressCallback) -> Artifact:
        import onnx

        file = self.file_name(spec.name)
        path = out_dir / file
        stages = {"export": self._torch_export(spec, path, options, progress)}
        data_file = f"{file}.data"
        has_data = (out_dir / data_file).exists()
        info = {"opset": options.target_options.opset, "exporter": "torch.onnx dynamo", "external_data": has_data,
                "simplifier": None}
        if not has_data:
            progress(ProgressEvent(spec.name, "serialize", "start", "onnxsim"))
            t0 = time.perf_counter()
            info["simplifier"] = self._simplify(path)
            stages["simplify"] = time.perf_counter() - t0
            progress(ProgressEvent(spec.name, "serialize", "done", info["simplifier"].get("result", ""),
                                   seconds=stages["simplify"]))
        else:
            info["simplifier"] = {"tool": None, "result": "skipped: external data (weights above 2 GB)"}
        if is_quantized(options.precision):
            t0 = time.perf_counter()
            info["quantization"] = _quantize(spec, path, options, progress)
            stages["quantize"] = time.perf_counter() - t0
        model = onnx.load(str(path), load_external_data=False)
        info["nodes"] = len(model.graph.node)
        info["ir_version"] = int(model.ir_version)
        return Artifact(file=file, inputs=_onnx_tensor_infos(model.graph.input),
                        outputs=_onnx_tensor_infos(model.graph.output),
                        extra_files={"external_data": data_file} if has_data else {},
                        target_info=info, stages_s=stages)

    @staticmethod
    def _torch_export(spec: ComponentSpec, path: Path, options: ExportOptions, progress: ProgressCallback) -> float:
        """torch.onnx.export of the module (cast to half for fp16) into `path`; returns the seconds it took."""
        import torch

        from ..tensors import TORCH_DTYPES, cast_inputs

        module = spec.module
        if options.dtype == "fp16":
            module = copy.deepcopy(module).to(TORCH_DTYPES["fp16"])
        args = cast_inputs(spec, options.dtype)
        external = _param_bytes(module) + EXTERNAL_DATA_MARGIN > PROTOBUF_LIMIT
        progress(ProgressEvent(spec.name, "export", "start", "torch.onnx.export (dynamo, opset 18)"))
        t0 = time.perf_counter()
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(module, args, dynamo=True, optimize=False, verbose=False,
                                        opset_version=options.target_options.opset, input_names=list(spec.inputs),
                                        output_names=list(spec.output_names))
            keep_near_identity_constants(program.model)
            program.optimize()
            program.save(str(path), external_data=external)
        seconds = time.perf_counter() - t0
        progress(ProgressEvent(spec.name, "export", "done", seconds=seconds))
        return seconds

    @staticmethod
    def _simplify(path: Path) -> dict:
        """Run onnxsim; keep its result only when it validates (a failed simplification is recorded, not fatal)."""
        import onnx

        try:
            import onnxsim
        except ImportError:
            return {"tool": None, "result": "skipped: onnxsim not installed"}
        model = onnx.load(str(path))
        before = len(model.graph.node)
        try:
            simplified, ok = onnxsim.simplify(model)
        except Exception as exc:  # noqa: BLE001 - onnxsim raises plain Exceptions on graphs it cannot handle
            return {"tool": f"onnxsim {onnxsim.__version__}", "result": f"failed, kept original ({exc})"[:300],
                    "nodes_before": before}
        if not ok:
            return {"tool": f"onnxsim {onnxsim.__version__}", "result": "check failed, kept original",
                    "nodes_before": before}
        tmp = path.with_suffix(".sim.onnx")
        onnx.save(simplified, str(tmp))
        os.replace(tmp, path)
        return {"tool": f"onnxsim {onnxsim.__version__}", "result": "ok", "nodes_before": before,
                "nodes_after": len(simplified.graph.node)}

    def inspect(self, artifact: Artifact, out_dir: Path, spec: ComponentSpec, options: ExportOptions) -> list[str]:
        import onnx

        path = out_dir / artifact.file
        try:
            onnx.checker.check_model(str(path))
        except Exception as exc:  # noqa: BLE001 - checker raises ValidationError and friends
            raise VerificationError(f"{artifact.file}: onnx.checker rejects the model ({exc})"[:400]) from None
        checks = ["onnx.checker.check_model"]
        names_in = [t.name for t in artifact.inputs]
        names_out = [t.name for t in artifact.outputs]
        if names_in != list(spec.inputs) or names_out != list(spec.output_names):
            raise VerificationError(f"{artifact.file}: I/O names {names_in} → {names_out} differ from the contract "
                                    f"{list(spec.inputs)} → {list(spec.output_names)}")
        checks.append("I/O names match the contract")
        want = [tuple(x.shape) for x in spec.args]
        if [t.shape for t in artifact.inputs] != want:
            raise VerificationError(f"{artifact.file}: input shapes {[t.shape for t in artifact.inputs]} != {want}")
        checks.append("static input shapes")
        return checks

    def run(self, artifact: Artifact, out_dir: Path, spec: ComponentSpec, options: ExportOptions) -> ArtifactRun:
        """On onnxruntime's CPU EP (runtimes/onnx.py), with as many threads as torch uses."""
        import torch

        from ..tensors import cast_inputs

        feeds = {name: x.numpy() for name, x in zip(spec.inputs, cast_inputs(spec, options.dtype))}
        return self.run_here(out_dir / artifact.file, feeds, options, spec.output_names,
                             threads=max(1, torch.get_num_threads()))


def _quantize(spec: ComponentSpec, path: Path, options: ExportOptions, progress: ProgressCallback) -> dict:
    """Quantize the exported file in place (exporters/quantize); the manifest's target_info.quantization."""
    from .. import quantize

    progress(ProgressEvent(spec.name, "quantize", "start", options.precision))
    t0 = time.perf_counter()
    records = [{n: t.numpy() for n, t in r.items()} for r in (options.calibration or [])]
    applied_precision, keep = quantize.plan_of(options)
    int8 = quantize.int8_units(spec.name, applied_precision, keep)
    info = dict(quantize.onnx_quantize(path, applied_precision, records, keep=keep, int8=int8),
                precision=options.precision, applied=applied_precision, kept_float=keep, int8_units=int8)
    progress(ProgressEvent(spec.name, "quantize", "done", seconds=time.perf_counter() - t0))
    return info
