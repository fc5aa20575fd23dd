"""Core ML `.mlpackage`: torch.export → run_decompositions({}) → coremltools ML Program.

fp16 compute precision by default and for every compressed precision (the Neural Engine computes in fp16; only
`--precision fp32` converts in fp32), minimum deployment target iOS 17 (or 18, which keeps SDPA fused), compute
units recorded in the manifest. Integer precisions: w8 / w4 compress the converted weights (exporters/quantize.py),
w8a8 quantizes the module in PyTorch before conversion (exporters/input_quantizer.py). Rewrites: pad + frms (rewrites.py), coremltools
aliases for `concatenate` / `alias`, and the rank-≤5 RoPE trace for the denoiser (Core ML allows rank ≤ 5).

Core ML runs only on macOS: elsewhere the artifact is checked structurally (it loads as a spec, the I/O names and
shapes are the contract's, it is an ML Program of the expected spec version) and `verified_on` is null.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from mi2v_export.contract import COREMLTOOLS_UNIT, runs_on_host
from mi2v_export.errors import BadInputError, MissingDependencyError, VerificationError

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
    register,
    run_simulated,
)

COMPUTE_UNITS = COREMLTOOLS_UNIT  # mi2v spelling → coremltools.ComputeUnit member (mi2v_export.contract)
MIN_IOS = (17, 18)
COMPUTE = {"fp16": "FLOAT16", "fp32": "FLOAT32"}  # compute precision → coremltools.precision member
COREML_TOOLS = {  # integer precision → how it is made (the manifest's target_info.quantization.tool)
    "w8": "coremltools.optimize.coreml.linear_quantize_weights (int8 linear symmetric, per channel)",
    "w4": "coremltools.optimize.coreml.palettize_weights (4-bit k-means, per grouped channel of "
          f"{quantize.COREML_W4_GROUP})",
    "w8a8": "torchao PT2E (int8 per-channel weights, int8 activations at every linear / conv input, calibrated) "
            "→ coremltools quantize / dequantize + constexpr_affine_dequantize",
}
SIMULATED = ("w8", "w4", "w8a8", "mixed")  # checked in PyTorch off macOS
INT8_WEIGHTS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")  # iOS 17 / iOS 18 spelling
REQUIRED_OPS = {"w8": (INT8_WEIGHTS,), "w4": (("constexpr_lut_to_dense",),),  # one op of each group must be there
                "w8a8": (("quantize",), ("dequantize",), INT8_WEIGHTS)}
SPEC_VERSION = {17: 8, 18: 9}  # Core ML model spec version of each deployment target


def compute_unit(name: str):
    import coremltools as ct

    if name not in COMPUTE_UNITS:
        raise BadInputError(f"unknown compute units {name!r}; choose one of: {', '.join(COMPUTE_UNITS)}")
    return getattr(ct.ComputeUnit, COMPUTE_UNITS[name])


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


@register
class CoreMLExporter(Exporter):
    name = "coreml"
    extension = ".mlpackage"
    summary = "Core ML ML Program (.mlpackage), fp16, iOS 17+"

    def default_dtype(self, delegate: str | None) -> str:
        return "fp16"

    def resolve(self, options: ExportOptions) -> ExportOptions:
        options = super().resolve(options)
        if options.compute_units not in COMPUTE_UNITS:
            raise BadInputError(f"unknown compute units {options.compute_units!r}; choose one of: "
                                f"{', '.join(COMPUTE_UNITS)}")
        if options.min_ios not in MIN_IOS:
            raise BadInputError(f"--min-ios {options.min_ios}: choose one of {', '.join(map(str, MIN_IOS))}")
        return options


    def runs_here(self, options: ExportOptions) -> bool:
        return runs_on_host("coreml") or options.precision in SIMULATED  # compressed: simulated in PyTorch

    def check_environment(self, options: ExportOptions) -> None:
        try:
            import coremltools  # noqa: F401
        except ImportError:
            raise MissingDependencyError("--target coreml needs coremltools (pip install coremltools)") from None
        if "w4" in {str(p) for p in options.precisions.values()} and options.min_ios < 18:
            raise BadInputError("--precision w4 on Core ML (4-bit palettes per grouped channel) needs --min-ios 18")
        if options.recipe and options.recipe["precision"] != "w8a8":
            raise BadInputError(f"--recipe with precision {options.recipe['precision']} on Core ML: coremltools "
                                "compresses the converted weights all alike; Core ML recipes take w8a8 only")

    def export(self, spec: ComponentSpec, out_dir: Path, options: ExportOptions,
               progress: ProgressCallback) -> Artifact:
        import coremltools as ct
        import torch

        file = self.file_name(spec.name)
        stages: dict[str, float] = {}
        progress(ProgressEvent(spec.name, "rewrite", "start", ", ".join(rw.FOR_TARGET["coreml"])))
        applied = rw.apply_rewrites(spec.module, rw.FOR_TARGET["coreml"])
        rw.register_coreml_aliases()
        progress(ProgressEvent(spec.name, "rewrite", "done", ", ".join(f"{n}×{c}" for n, c in applied.items() if c)))

        applied_precision, keep = quantize.plan_of(options)
        module = spec.module
        if applied_precision == "w8a8":
            module = self._quantize_w8a8(spec, options, keep, progress, stages)
        progress(ProgressEvent(spec.name, "export", "start", "torch.export"))
        t0 = time.perf_counter()
        with rw.tracing(rw.TRACE_FOR_TARGET["coreml"]), torch.no_grad():
            ep = torch.export.export(module, spec.args, strict=False)
        ep = ep.run_decompositions({})
        stages["export"] = time.perf_counter() - t0
        progress(ProgressEvent(spec.name, "export", "done", seconds=stages["export"]))

        progress(ProgressEvent(spec.name, "lower", "start", "coremltools.convert (mlprogram)"))
        t0 = time.perf_counter()
        compute = "fp32" if options.precision == "fp32" else "fp16"
        mlmodel = ct.convert(ep, convert_to="mlprogram", compute_precision=getattr(ct.precision, COMPUTE[compute]),
                             minimum_deployment_target=deployment_target(options.min_ios),
                             compute_units=compute_unit(options.compute_units),
                             outputs=[ct.TensorType(name=n) for n in spec.output_names])
        del ep
        stages["lower"] = time.perf_counter() - t0
        progress(ProgressEvent(spec.name, "lower", "done", seconds=stages["lower"]))
        if options.precision in ("w8", "w4"):
            progress(ProgressEvent(spec.name, "quantize", "start", options.precision))
            t0 = time.perf_counter()
            mlmodel = quantize.coreml_compress(mlmodel, options.precision)
            stages["quantize"] = time.perf_counter() - t0
            progress(ProgressEvent(spec.name, "quantize", "done", seconds=stages["quantize"]))

        progress(ProgressEvent(spec.name, "serialize", "start", "save .mlpackage"))
        t0 = time.perf_counter()
        mlmodel.save(str(out_dir / file))
        stages["serialize"] = time.perf_counter() - t0
        progress(ProgressEvent(spec.name, "serialize", "done", seconds=stages["serialize"]))
        mspec = mlmodel.get_spec()
        info = {"format": "mlprogram", "compute_precision": compute, "compute_units": options.compute_units,
                "minimum_deployment_target": f"iOS{options.min_ios}",
                "spec_version": int(mspec.specificationVersion), "rewrites": applied,
                "trace_rewrites": list(rw.TRACE_FOR_TARGET["coreml"]),
                "mil_ops": mil_op_histogram(mspec)}
        if applied_precision in SIMULATED:
            info["quantization"] = {"precision": options.precision, "applied": applied_precision,
                                    "kept_float": keep, "tool": COREML_TOOLS[applied_precision],
                                    "calibration_records": len(options.calibration or [])}
        return Artifact(file=file, inputs=_tensor_infos(mspec.description.input),
                        outputs=_tensor_infos(mspec.description.output), target_info=info, stages_s=stages,
                        rewrites=[n for n, c in applied.items() if c])

    def _quantize_w8a8(self, spec: ComponentSpec, options: ExportOptions, keep: list[str],
                       progress: ProgressCallback, stages: dict):
        """The PT2E w8a8 module to convert (exporters/input_quantizer.py), kept as this artifact's PyTorch stand-in."""
        import torch

        from . import input_quantizer

        progress(ProgressEvent(spec.name, "quantize", "start", options.precision))
        t0 = time.perf_counter()
        records = [tuple(r[n] for n in spec.inputs) for r in (options.calibration or [])]
        with rw.tracing(rw.TRACE_FOR_TARGET["coreml"]), torch.no_grad():
            module = input_quantizer.quantize(spec.module, spec.args, records, keep)
        self._remember_simulated(spec, options.precision, module)
        stages["quantize"] = time.perf_counter() - t0
        progress(ProgressEvent(spec.name, "quantize", "done", seconds=stages["quantize"]))
        return module

    def _run_simulated(self, spec: ComponentSpec, options: ExportOptions) -> ArtifactRun:
        """Off macOS, compressed artifacts are checked in PyTorch, recorded as verified_on "pytorch-simulated": w8 /
        w4 by their decompressed weights (the same coremltools compression), w8a8 by the quantized GraphModule that
        was converted (its int8 weights and activation quantize / dequantize). Compute is fp32 there, fp16 in Core ML."""
        module = self._recalled_simulated(spec, options.precision)  # w8a8: set when quantizing
        if module is None and options.precision not in ("w8", "w4"):
            return ArtifactRun(outputs=None, verified_on=None, reason="a w8a8 Core ML artifact is checked in PyTorch "
                               "by the export that quantized it; Core ML prediction needs macOS")
        if module is None:
            module = quantize.coreml_simulated(spec.module, options.precision)
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
        want_version = SPEC_VERSION[options.min_ios]
        if mspec.specificationVersion < want_version:
            raise VerificationError(f"{artifact.file}: spec version {mspec.specificationVersion} is below "
                                    f"iOS{options.min_ios}'s {want_version}")
        checks.append(f"ML Program, spec version {mspec.specificationVersion} (iOS{options.min_ios}+)")
        ins = [(f.name, tuple(f.type.multiArrayType.shape)) for f in mspec.description.input]
        outs = [f.name for f in mspec.description.output]
        want_in = [(n, tuple(x.shape)) for n, x in spec.inputs.items()]
        if ins != want_in or outs != list(spec.output_names):
            raise VerificationError(f"{artifact.file}: I/O {ins} → {outs} differ from the contract {want_in} → "
                                    f"{list(spec.output_names)}")
        checks.append("I/O names and static shapes match the contract")
        applied, _ = quantize.plan_of(options)
        if applied in REQUIRED_OPS:
            checks.append(_compression_check(artifact.file, mil_op_histogram(mspec), applied))
        return checks

    def run(self, artifact: Artifact, out_dir: Path, spec: ComponentSpec, options: ExportOptions) -> ArtifactRun:
        if not runs_on_host("coreml") and options.precision in SIMULATED:
            return self._run_simulated(spec, options)
        if not runs_on_host("coreml"):
            return ArtifactRun(outputs=None, verified_on=None,
                             reason=f"Core ML prediction needs macOS (this host is {sys.platform})")
        import coremltools as ct

        model = ct.models.MLModel(str(out_dir / artifact.file), compute_units=compute_unit(options.compute_units))
        feeds = {n: x.numpy() for n, x in spec.inputs.items()}
        out = model.predict(feeds)
        return ArtifactRun(outputs={n: out[n] for n in spec.output_names}, verified_on=f"coreml-{options.compute_units}")
