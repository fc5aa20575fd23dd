"""ONNX for the Qualcomm HTP (`--target onnx --delegate qnn --soc SM8650`): an EPContext model per component.

Steps: the QNN lowering rewrites (`QnnExporter.rewrites`: every norm on a rank-4 view, no GatherND; the
denoiser additionally gets the exact `mobile` attention plan when it was exported with the reference attention,
for its rank-4 RoPE and attention) → torch.onnx export (fp32 graph) → for w8a16 / w8a8 a QDQ model from
onnxruntime.quantization's QNN configuration (exporters/quantize/qnn.py), calibrated on the real sampler's inputs
→ onnxruntime's QNN EP
compiles it for the SoC's HTP into `<component>_ctx.onnx` + its context binary (`ep.context_enable`), which a
phone loads without compiling. fp16 is the fp32 graph compiled with `enable_htp_fp16_precision` (the HTP computes
in fp16; the model's I/O stay float32).

All on the HTP or nothing: unless `allow_cpu_fallback`, the export fails (VerificationError, exit 4, nothing
written) naming the nodes the HTP refuses; with it, the node and FLOP shares on the HTP are recorded.
`run` executes the EPContext model on the HTP simulator of the onnxruntime-qnn wheel (the runtime layer's
`qnn-htp-simulator`), CPU fallback disabled.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path

from mi2v_export import qnn
from mi2v_export.errors import BadInputError, VerificationError
from mi2v_export.precision import Precision

from ..base import (
    Artifact,
    ArtifactRun,
    ComponentSpec,
    ExportOptions,
    ProgressCallback,
    ProgressEvent,
    TargetOptions,
    register,
)
from .onnx import OnnxExporter, _onnx_tensor_infos


def precision_of(options: ExportOptions) -> str:
    return str(options.precision or "fp16")


@dataclass
class QnnOptions(TargetOptions):
    soc: str = qnn.DEFAULT_SOC  # the Snapdragon SoC to compile for (qnn.SOCS)
    allow_cpu_fallback: bool = False  # accept nodes the HTP refuses (run by onnxruntime's CPU EP)
    opset: int = 18  # of the source model (OnnxExporter)


@register
class QnnExporter(OnnxExporter):
    name = "onnx"
    delegate = "qnn"
    summary = "Qualcomm HTP through onnxruntime's QNN EP: EPContext model compiled for one Snapdragon SoC"
    options_type = QnnOptions
    # PSNR gates against PyTorch fp32: the project's (parity.gate_for). Measured on the simulator (tiny, SM8650;
    # README "Qualcomm HTP"): w8a16 36.2-51.9 dB (gate 30), w8a8 31.1-39.8 dB (gate 25).
    supported = (Precision.FP16, Precision.W8A16, Precision.W8A8)  # fp16 on the HTP, QDQ integers
    rewrites = ("shuffle_rank5", "rms_norm_rank4", "layer_norm_rank4")
    trace_rewrites = ("channel_rms_rank4", "frame_conditioning_without_gather")

    def default_dtype(self, delegate: str | None) -> str:
        return "fp16"

    def resolve(self, options: ExportOptions) -> ExportOptions:
        options.target_options.soc = qnn.soc_info(options.target_options.soc).name
        return options

    def check_environment(self, options: ExportOptions) -> None:
        super().check_environment(options)
        qnn.check_available()

    def gate(self, options: ExportOptions):
        from mi2v_export import parity  # numpy: kept out of the CLI's start-up

        return parity.gate_for(precision_of(options))

    def file_name(self, component: str) -> str:
        return f"{component}_ctx.onnx"

    def keeps_units(self, precision: str) -> bool:
        return False  # onnxruntime's QNN configuration quantizes the whole graph (exporters/quantize/qnn.py)

    # -- export ----------------------------------------------------------------------------------------------
    def export(self, spec: ComponentSpec, out_dir: Path, options: ExportOptions,
               progress: ProgressCallback) -> Artifact:
        from .. import rewrites as rw

        precision, soc = precision_of(options), options.target_options.soc
        applied = self._lower(spec, progress)
        fp32 = copy.copy(options)  # the plain fp32 source; the QNN path quantizes it itself (QNN config)
        fp32.dtype, fp32.precision, fp32.recipe = "fp32", "fp32", None
        with rw.tracing(self.trace_rewrites):
            source = OnnxExporter().export(spec, out_dir, fp32, progress)  # <component>.onnx
        source_file = source.file
        if precision != "fp16":
            source_file = self._quantize(spec, out_dir, source, precision, options.calibration, progress)
        ctx_file = self.file_name(spec.name)
        progress(ProgressEvent(spec.name, "lower", "start", f"QNN EP → HTP context for {soc} ({precision})"))
        found, compile_s = qnn.compile_context(out_dir / source_file, out_dir / ctx_file, soc, fp16=precision == "fp16",
                                               allow_cpu_fallback=options.target_options.allow_cpu_fallback)
        progress(ProgressEvent(spec.name, "lower", "done", f"{len(found.htp_nodes)} nodes on the HTP",
                               seconds=compile_s))
        return self._artifact(spec, out_dir, options, source, source_file, found, compile_s, applied)

    def _lower(self, spec: ComponentSpec, progress: ProgressCallback) -> list[str]:
        """The QNN rewrites on spec.module (and the mobile attention plan on a reference denoiser)."""
        from .. import rewrites as rw
        from ..components import apply_attention

        applied = [name for name, n in rw.apply_rewrites(spec.module, self.rewrites).items() if n]
        if spec.name == "denoiser" and spec.attention is None and _is_reference_denoiser(spec.module.model):
            t, h, w = spec.inputs["latent"].shape[2:]
            spec.module.model, spec.attention = apply_attention(spec.module.model, "mobile", _Grid(t, h, w), {})
            applied.append("attention=mobile")
        if applied:
            progress(ProgressEvent(spec.name, "rewrite", "info", "QNN: " + ", ".join(applied)))
        return applied + list(self.trace_rewrites)

    def _quantize(self, spec: ComponentSpec, out_dir: Path, source: Artifact, precision: str, records,
                  progress: ProgressCallback) -> str:
        """The QDQ model `<component>.qdq.onnx` of the fp32 source, calibrated on `records` (the inputs the
        component sees inside the real sampler, from the orchestrator's calibration step)."""
        from ..quantize import qnn_quantize

        if not records:
            raise BadInputError(f"--precision {precision} on QNN needs calibration records for the {spec.name} "
                                "(recorded from the real sampler by mi2v export)")
        feeds = [{k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in r.items()} for r in records]
        progress(ProgressEvent(spec.name, "lower", "start", f"QDQ {precision} (onnxruntime.quantization, QNN config)"))
        t0 = time.perf_counter()
        qdq_file = f"{spec.name}.qdq.onnx"
        source.target_info["quantization"] = qnn_quantize(out_dir / source.file, out_dir / qdq_file, precision, feeds)
        os.remove(out_dir / source.file)
        progress(ProgressEvent(spec.name, "lower", "done", "QDQ model", seconds=time.perf_counter() - t0))
        return qdq_file

    def _artifact(self, spec, out_dir, options, source, source_file, found, compile_s, applied) -> Artifact:
        import onnx

        ctx_file = self.file_name(spec.name)
        model = onnx.load(str(out_dir / ctx_file), load_external_data=False)
        binaries = qnn.context_binaries(out_dir / ctx_file)
        extra = {"qnn_source": source_file}
        extra.update({f"qnn_context_binary{'' if i == 0 else f'_{i}'}": b.name for i, b in enumerate(binaries)})
        soc = qnn.SOCS[options.target_options.soc]
        info = {"soc": soc.name, "product": soc.product, "soc_model": soc.soc_model, "htp_arch": f"v{soc.htp_arch}",
                **qnn.versions(), "precision": precision_of(options),
                "htp_node_share": found.htp_node_share, "htp_flop_share": _flop_share(out_dir / source_file, found),
                "cpu_nodes": [f"{name} ({op})" for name, op in found.cpu_nodes],
                "compile_s": round(compile_s, 3), "context_binary_bytes": sum(b.stat().st_size for b in binaries),
                "source": {k: v for k, v in source.target_info.items() if k != "nodes"}, "embed_mode": 0}
        stages = dict(source.stages_s, compile=compile_s)
        return Artifact(file=ctx_file, inputs=_onnx_tensor_infos(model.graph.input),
                        outputs=_onnx_tensor_infos(model.graph.output), extra_files=extra, target_info=info,
                        stages_s=stages, rewrites=applied)

    # -- checks ----------------------------------------------------------------------------------------------
    def inspect(self, artifact: Artifact, out_dir: Path, spec: ComponentSpec, options: ExportOptions) -> list[str]:
        import onnx

        source = out_dir / artifact.extra_files["qnn_source"]
        try:
            onnx.checker.check_model(str(source))
        except Exception as exc:  # noqa: BLE001 - checker raises ValidationError and friends
            raise VerificationError(f"{source.name}: onnx.checker rejects the model ({exc})"[:400]) from None
        model = onnx.load(str(out_dir / artifact.file), load_external_data=False)
        ops = {n.op_type for n in model.graph.node}
        if "EPContext" not in ops:
            raise VerificationError(f"{artifact.file}: no EPContext node (ops: {', '.join(sorted(ops))})")
        checks = ["onnx.checker on the source model", "EPContext node present"]
        names_in, names_out = [t.name for t in artifact.inputs], [t.name for t in artifact.outputs]
        if names_in != list(spec.inputs) or names_out != list(spec.output_names):
            raise VerificationError(f"{artifact.file}: I/O names {names_in} → {names_out} differ from the contract "
                                    f"{list(spec.inputs)} → {list(spec.output_names)}")
        want = [tuple(x.shape) for x in spec.args]
        if [t.shape for t in artifact.inputs] != want:
            raise VerificationError(f"{artifact.file}: input shapes {[t.shape for t in artifact.inputs]} != {want}")
        missing = [f for f in artifact.extra_files.values() if not (out_dir / f).exists()]
        if missing:
            raise VerificationError(f"{artifact.file}: files it needs are missing: {', '.join(missing)}")
        return checks + ["I/O names match the contract", "static input shapes", "context binary beside it"]

    def run(self, artifact: Artifact, out_dir: Path, spec: ComponentSpec, options: ExportOptions) -> ArtifactRun:
        """On the HTP simulator (runtimes/onnx.py, `qnn-htp-simulator`), as compiled: the SoC, fp16 and fallback."""
        feeds = {name: x.float().numpy() for name, x in spec.inputs.items()}
        return self.run_here(out_dir / artifact.file, feeds, options, spec.output_names,
                             soc=options.target_options.soc, fp16=precision_of(options) == "fp16",
                             allow_cpu_fallback=options.target_options.allow_cpu_fallback)


def _is_reference_denoiser(model) -> bool:
    from mi2v_export.models.denoiser import MobileI2VDenoiser

    return type(model) is MobileI2VDenoiser


class _Grid:
    """The latent grid `apply_attention` reads from a geometry."""

    def __init__(self, t: int, h: int, w: int):
        self.latent_t, self.latent_h, self.latent_w = int(t), int(h), int(w)


def _flop_share(source: Path, found: qnn.Placement) -> float | None:
    """Share of conv / matmul FLOPs (2·MAC) in nodes on the HTP."""
    from mi2v_export.flops import onnx_node_flops

    flops = onnx_node_flops(source)
    total = sum(flops.values())
    if not total:
        return None
    on_cpu = sum(flops.get(name, 0) for name, _ in found.cpu_nodes)
    return round((total - on_cpu) / total, 6)
