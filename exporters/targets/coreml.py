"""Core ML `.mlpackage`: torch.export → run_decompositions({}) → coremltools ML Program.

fp16 compute precision by default and for every compressed precision (the Neural Engine computes in fp16; only
`--precision fp32` converts in fp32), minimum deployment target iOS 17 (or 18, which keeps SDPA fused), compute
units recorded in the manifest. Integer precisions: w8 / w4 compress the converted weights
(exporters/quantize/coreml.py), w8a8 quantizes the module in PyTorch before conversion (exporters/quantize/pt2e.py).
Rewrites: pad + frms (exporters/rewrites), coremltools aliases for `concatenate` / `alias`, and the rank-≤5 RoPE
trace for the denoiser (Core ML allows rank ≤ 5).

Core ML runs only on macOS: elsewhere the artifact is checked structurally (it loads as a spec, the I/O names and
shapes are the contract's, it is an ML Program of the expected spec version) and `verified_on` is null.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mi2v_export import runtimes
from mi2v_export.contract import COMPUTE_UNITS, COREMLTOOLS_UNIT
from mi2v_export.errors import BadInputError, MissingDependencyError, VerificationError
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
    register,
)

MIN_IOS = (17, 18)
COMPUTE = {"fp16": "FLOAT16", "fp32": "FLOAT32"}  # compute precision → coremltools.precision member
INT8_WEIGHTS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")  # iOS 17 / iOS 18 spelling
REQUIRED_OPS = {"w8": (INT8_WEIGHTS,), "w4": (("constexpr_lut_to_dense",),),  # one op of each group must be there
                "w8a8": (("quantize",), ("dequantize",), INT8_WEIGHTS)}
SPEC_VERSION = {17: 8, 18: 9}  # Core ML model spec version of each deployment target


def compute_unit(name: str):
    import coremltools as ct

    if name not in COMPUTE_UNITS:
        raise BadInputError(f"unknown compute units {name!r}; choose one of: {', '.join(COMPUTE_UNITS)}")
    return getattr(ct.ComputeUnit, COREMLTOOLS_UNIT[name])


def deployment_target(min_ios: int):
    import coremltools as ct

    if min_ios not in MIN_IOS:
        raise BadInputError(f"--min-ios {min_ios}: choose one of {', '.join(map(str, MIN_IOS))}")
    return getattr(ct.target, f"iOS{min_ios}")


def mil_op_histogram(spec) -> dict[str, int]:
    ops: Counter = Counter()
    try:
        for fn in spec.mlProgram.functions.values():
            for block in fn.block_specializations.values():
                for op in block.operations:
                    ops[op.type] += 1
    except AttributeError:
        return {}
    return dict(ops.most_common())


def _compression_check(file: str, ops: dict[str, int], precision: str) -> str:
    """The ML Program really holds `precision`'s ops (int8 weights, palettes, activation quantize); else
    VerificationError (a compression that silently did nothing would be labelled falsely)."""
    found = []
    for group in REQUIRED_OPS[precision]:
        present = [f"{op}×{ops[op]}" for op in group if ops.get(op)]
        if not present:
            raise VerificationError(f"{file}: labelled {precision} but has no {' / '.join(group)} op")
        found += present
    return f"{precision} ops present: {', '.join(found)}"


def _tensor_infos(features) -> list:
    from coremltools.proto import FeatureTypes_pb2

    from mi2v_export.manifest import TensorInfo

    names = {FeatureTypes_pb2.ArrayFeatureType.FLOAT32: "float32", FeatureTypes_pb2.ArrayFeatureType.FLOAT16: "float16",
             FeatureTypes_pb2.ArrayFeatureType.DOUBLE: "float64", FeatureTypes_pb2.ArrayFeatureType.INT32: "int32"}
    out = []
    for f in features:
        arr = f.type.multiArrayType
        out.append(TensorInfo(f.name, tuple(int(s) for s in arr.shape), names.get(arr.dataType, str(arr.dataType))))
    return out


@dataclass
class CoreMLOptions(TargetOptions):
    compute_units: str = "all"  # contract.COMPUTE_UNITS
    min_ios: int = 17  # minimum deployment target (MIN_IOS)


@register
class CoreMLExporter(Exporter):
    name = "coreml"
    extension = ".mlpackage"
    summary = "Core ML ML Program (.mlpackage), fp16, iOS 17+"
    cli_order = 1
    options_type = CoreMLOptions
    supported = (Precision.FP32, Precision.FP16, Precision.W8A8, Precision.W8, Precision.W4)
    runtime = "coreml"
    test_vector_format = "npz"
    rewrites = ("causal_pad_cat", "rms_norm_fp16")
    trace_rewrites = ("rope_rank5",)

    def default_dtype(self, delegate: str | None) -> str:
        return "fp16"

    def resolve(self, options: ExportOptions) -> ExportOptions:
        options = super().resolve(options)
        own = options.target_options
        if own.compute_units not in COMPUTE_UNITS:
            raise BadInputError(f"unknown compute units {own.compute_units!r}; choose one of: "
                                f"{', '.join(COMPUTE_UNITS)}")
        if own.min_ios not in MIN_IOS:
            raise BadInputError(f"--min-ios {own.min_ios}: choose one of {', '.join(map(str, MIN_IOS))}")
        return options

    def host_runtime(self, options: ExportOptions) -> runtimes.Runtime | None:
        """Core ML on the compute units of the export (runtimes/coreml.py, macOS only)."""
        units = options.target_options.compute_units
        runtime = next(r for r in runtimes.for_entry(options) if r.units == units)
        return runtime if runtime.available() is None else None

    def runs_here(self, options: ExportOptions) -> bool:
        return super().runs_here(options) or is_quantized(options.precision)  # compressed: simulated in PyTorch

    def keeps_units(self, precision: str) -> bool:
        return precision == "w8a8"  # coremltools compresses every weight alike at w8 / w4

    def check_environment(self, options: ExportOptions) -> None:
        try:
            import coremltools  # noqa: F401
        except ImportError:
            raise MissingDependencyError("--target coreml needs coremltools (pip install coremltools)") from None
        if "w4" in {str(p) for p in options.precisions.values()} and options.target_options.min_ios < 18:
            raise BadInputError("--precision w4 on Core ML (4-bit palettes per grouped channel) needs --min-ios 18")
        if options.recipe and options.recipe["precision"] != "w8a8":
            raise BadInputError(f"--recipe with precision {options.recipe['precision']} on Core ML: coremltools "
                                "compresses the converted weights all alike; Core ML recipes take w8a8 only")

    def export(self, spec: ComponentSpec, out_dir: Path, options: ExportOptions,
               progress: ProgressCallback) -> Artifact:
        from .. import rewrites as rw
        from ..quantize import CONVERTED, MODULE, plan_of, quantizer

        file, own = self.file_name(spec.name), options.target_options
        stages: dict[str, float] = {}
        progress(ProgressEvent(spec.name, "rewrite", "start", ", ".join(self.rewrites)))
        applied = rw.apply_rewrites(spec.module, self.rewrites)
        rw.register_coreml_aliases()
        progress(ProgressEvent(spec.name, "rewrite", "done", ", ".join(f"{n}×{c}" for n, c in applied.items() if c)))
        applied_precision, keep = plan_of(options)
        q = quantizer(self.name, None, applied_precision) if is_quantized(applied_precision) else None
        module = spec.module
        if q is not None and q.stage == MODULE:
            module = self._quantize_module(spec, options, q, keep, progress, stages)
        compute = "fp32" if options.precision == "fp32" else "fp16"
        mlmodel = self._convert(spec, module, compute, own, progress, stages)
        if q is not None and q.stage == CONVERTED:
            progress(ProgressEvent(spec.name, "quantize", "start", options.precision))
            t0 = time.perf_counter()
            mlmodel = q.quantize(mlmodel)
            stages["quantize"] = time.perf_counter() - t0
            progress(ProgressEvent(spec.name, "quantize", "done", seconds=stages["quantize"]))
        progress(ProgressEvent(spec.name, "serialize", "start", "save .mlpackage"))
        t0 = time.perf_counter()
        mlmodel.save(str(out_dir / file))
        stages["serialize"] = time.perf_counter() - t0
        progress(ProgressEvent(spec.name, "serialize", "done", seconds=stages["serialize"]))
        mspec = mlmodel.get_spec()
        info = {"format": "mlprogram", "compute_precision": compute, "compute_units": own.compute_units,
                "minimum_deployment_target": f"iOS{own.min_ios}",
                "spec_version": int(mspec.specificationVersion), "rewrites": applied,
                "trace_rewrites": list(self.trace_rewrites), "mil_ops": mil_op_histogram(mspec)}
        if q is not None:
            info["quantization"] = {"precision": options.precision, "applied": applied_precision,
                                    "kept_float": keep, "tool": q.tool,
                                    "calibration_records": len(options.calibration or [])}
        return Artifact(file=file, inputs=_tensor_infos(mspec.description.input),
                        outputs=_tensor_infos(mspec.description.output), target_info=info, stages_s=stages,
                        rewrites=[n for n, c in applied.items() if c])

    def _convert(self, spec: ComponentSpec, module, compute: str, own: CoreMLOptions, progress: ProgressCallback,
                 stages: dict):
        """torch.export (under the trace rewrites) and coremltools.convert to an ML Program."""
        import coremltools as ct
        import torch

        from .. import rewrites as rw

        progress(ProgressEvent(spec.name, "export", "start", "torch.export"))
        t0 = time.perf_counter()
        with rw.tracing(self.trace_rewrites), torch.no_grad():
            ep = torch.export.export(module, spec.args, strict=False)
        ep = ep.run_decompositions({})
        stages["export"] = time.perf_counter() - t0
        progress(ProgressEvent(spec.name, "export", "done", seconds=stages["export"]))
        progress(ProgressEvent(spec.name, "lower", "start", "coremltools.convert (mlprogram)"))
        t0 = time.perf_counter()
        mlmodel = ct.convert(ep, convert_to="mlprogram", compute_precision=getattr(ct.precision, COMPUTE[compute]),
                             minimum_deployment_target=deployment_target(own.min_ios),
                             compute_units=compute_unit(own.compute_units),
                             outputs=[ct.TensorType(name=n) for n in spec.output_names])
        del ep
        stages["lower"] = time.perf_counter() - t0
        progress(ProgressEvent(spec.name, "lower", "done", seconds=stages["lower"]))
        return mlmodel

    def _quantize_module(self, spec: ComponentSpec, options: ExportOptions, q, keep: list[str],
                         progress: ProgressCallback, stages: dict):
        """The quantized module to convert (w8a8: PT2E, exporters/quantize/pt2e.py), kept as this artifact's
        PyTorch stand-in."""
        import torch

        from .. import rewrites as rw

        progress(ProgressEvent(spec.name, "quantize", "start", options.precision))
        t0 = time.perf_counter()
        records = [tuple(r[n] for n in spec.inputs) for r in (options.calibration or [])]
        with rw.tracing(self.trace_rewrites), torch.no_grad():
            module = q.quantize(spec.module, spec.args, records, keep, spec.name)
        self._remember_simulated(spec, options.precision, module)
        stages["quantize"] = time.perf_counter() - t0
        progress(ProgressEvent(spec.name, "quantize", "done", seconds=stages["quantize"]))
        return module

    def _run_simulated(self, spec: ComponentSpec, options: ExportOptions) -> ArtifactRun:
        """Off macOS, compressed artifacts are checked in PyTorch, recorded as verified_on "pytorch-simulated": w8 /
        w4 by their decompressed weights (the same coremltools compression), w8a8 by the quantized GraphModule that
        was converted (its int8 weights and activation quantize / dequantize). Compute is fp32 there, fp16 in Core
        ML."""
        from ..quantize import QUANTIZERS
        from ..tensors import run_simulated

        module = self._recalled_simulated(spec, options.precision)  # w8a8: set when quantizing
        q = QUANTIZERS.get((self.name, None, options.precision))
        if module is None and (q is None or q.simulated is None):
            return ArtifactRun(outputs=None, verified_on=None, reason="a w8a8 Core ML artifact is checked in PyTorch "
                               "by the export that quantized it; Core ML prediction needs macOS")
        if module is None:
            module = q.simulated(spec.module)
            self._remember_simulated(spec, options.precision, module)
        return run_simulated(module, spec)

    def inspect(self, artifact: Artifact, out_dir: Path, spec: ComponentSpec, options: ExportOptions) -> list[str]:
        import coremltools as ct

        path = out_dir / artifact.file
        try:
            mspec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
        except Exception as exc:  # noqa: BLE001
            raise VerificationError(f"{artifact.file}: does not load as a Core ML model spec ({exc})"[:400]) from None
        checks = ["loads as a Core ML spec"]
        if mspec.WhichOneof("Type") != "mlProgram":
            raise VerificationError(f"{artifact.file}: is a {mspec.WhichOneof('Type')}, not an ML Program")
        min_ios = options.target_options.min_ios
        want_version = SPEC_VERSION[min_ios]
        if mspec.specificationVersion < want_version:
            raise VerificationError(f"{artifact.file}: spec version {mspec.specificationVersion} is below "
                                    f"iOS{min_ios}'s {want_version}")
        checks.append(f"ML Program, spec version {mspec.specificationVersion} (iOS{min_ios}+)")
        ins = [(f.name, tuple(f.type.multiArrayType.shape)) for f in mspec.description.input]
        outs = [f.name for f in mspec.description.output]
        want_in = [(n, tuple(x.shape)) for n, x in spec.inputs.items()]
        if ins != want_in or outs != list(spec.output_names):
            raise VerificationError(f"{artifact.file}: I/O {ins} → {outs} differ from the contract {want_in} → "
                                    f"{list(spec.output_names)}")
        checks.append("I/O names and static shapes match the contract")
        from ..quantize import plan_of

        applied, _ = plan_of(options)
        if applied in REQUIRED_OPS:
            checks.append(_compression_check(artifact.file, mil_op_histogram(mspec), applied))
        return checks

    def run(self, artifact: Artifact, out_dir: Path, spec: ComponentSpec, options: ExportOptions) -> ArtifactRun:
        if self.host_runtime(options) is None and is_quantized(options.precision):
            return self._run_simulated(spec, options)
        feeds = {n: x.numpy() for n, x in spec.inputs.items()}
        return self.run_here(out_dir / artifact.file, feeds, options, spec.output_names)
