"""ai-edge-quantizer on a converted `.tflite` file: the LiteRT target's precisions. Every function here takes
`(src, out, records, keep)` (the fp32 `.tflite`, where to write, the calibration records by input name, the
tensor-name scopes left float) and returns what it did for the manifest.

    w8a8  static int8 activations + int8 per-channel weights on the fully-connected, conv and batch-matmul ops
          (ONNX's w8a8 set, exporters/quantize/ort.py), calibrated (min-max) on the records; norms, activations
          and the rest stay float. Quantizing every op the quantizer supports (its static_wi8_ai8 recipe) cost the
          tiny denoiser 50.4 → 45.9 dB and the Turbo-VAED 42.0 → 38.4 dB, side by side. The graph's inputs and
          outputs stay float, so the sampler feeds it like every other artifact.
    w8    dynamic range: int8 per-channel weights, activations quantized at run time by the kernels
    w4    dynamic range: int4 weights in blocks of 32 (the other targets' w4 group) on the fully-connected ops
          whose input width is a multiple of 32; int8 per channel on the others and on the convs
    fp16  (not an integer precision: the exporter calls `fp16_weights` itself) fp16 weights, float compute on the CPU
          (the GPU delegate computes in fp16)

Keeping units float: the converter names each tensor by the module path it came from (`<Class>_<attribute>` per
level, exporters/targets/litert/convert.py `unit_scopes`), and a recipe entry with NO_QUANTIZE on a unit's scope,
added after the precision's own, wins for that unit's ops (ai-edge-quantizer uses the latest recipe entry whose
scope matches an op's name; docs/guides/litert.md#sources).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Sequence
from pathlib import Path

W4_BLOCK = 32
SIGNATURE = "serving_default"  # the one signature litert_torch.convert writes


def _run(src: Path, out: Path, records: Sequence[dict] | None, configure: Callable, keep: Sequence[str]) -> dict:
    """Build a Quantizer on `src`, `configure` its recipe, leave the `keep` scopes float, calibrate when the recipe
    needs it and write `out`; the quantizer's progress report stays out of the CLI's output. Calibration reads the
    min / max through the runtime's profiler hooks: the default mode keeps every intermediate tensor alive, which
    for the 720p denoiser is tens of GB and fails to allocate."""
    from ai_edge_quantizer import calibrator, quantizer, qtyping

    q = _lean(quantizer.Quantizer)(str(src))
    configure(q, quantizer, qtyping)
    for scope in keep:
        q.update_quantization_recipe(regex=scope_regex(scope), operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                     algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE)
    sink = io.StringIO()  # its report on stdout, tqdm's bars on stderr
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        calibration = None
        if q.need_calibration:
            calibration = q.calibrate({SIGNATURE: [dict(r) for r in records or []]}, num_threads=1,
                                      mode=calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED)
        result = q.quantize(calibration, enable_progress_bar=False, enable_progress_report=False)
    out.write_bytes(bytes(result.quantized_model))
    return {"calibration_records": len(records or []) if calibration is not None else 0,
            "scopes_kept_float": len(keep)}


INTEGER_OPS = ("FULLY_CONNECTED", "CONV_2D", "BATCH_MATMUL")  # what w8a8 quantizes


def scope_regex(scope: str) -> str:
    """The ops of one unit: its scope as whole path levels of an op's name (`…/DiTBlock_1/…`, `…/DiTBlock_1;`), so
    that `blocks.1` never takes `blocks.10` with it."""
    return rf"(?:^|/|;){re.escape(scope)}(?:/|;|$)"


def _lean(base: type) -> type:
    """ai-edge-quantizer's Quantizer whose check that every tensor was calibrated reads the calibration result alone.
    Its own check builds an interpreter that keeps every tensor allocated at once: for the 720p denoiser that
    allocation fails (RuntimeError). With one signature, "a tensor of the signature has no min / max" is "a tensor
    has no min / max"."""

    class Lean(base):
        def _ensure_model_qsv_sufficient(self, calibration_result):
            empty = [name for name, qsv in calibration_result.items() if not qsv]
            if empty:
                raise ValueError(f"Missing QSVs (min/max) for tensor {empty[0]}")

    return Lean


def _float_io(q, quantizer, qtyping) -> None:
    for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        q.update_quantization_recipe(regex=".*", operation_name=op, algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE)


def static_w8a8(src: Path, out: Path, records: Sequence[dict] | None, keep: Sequence[str] = (),
                int8: Sequence[str] = ()) -> dict:
    """int8 activations (min-max calibrated) and int8 per-channel weights; float graph I/O."""
    if not records:
        raise ValueError("w8a8 needs calibration records")

    def configure(q, quantizer, qtyping):
        for op in INTEGER_OPS:
            q.add_static_config(regex=".*", operation_name=getattr(qtyping.TFLOperationName, op),
                                activation_num_bits=8, weight_num_bits=8)
        _float_io(q, quantizer, qtyping)

    return {"activations": "int8 static (min-max)", "weights": "int8 per channel", "io": "float32",
            "ops": list(INTEGER_OPS),
            **_run(src, out, records, configure, keep)}


def dynamic_w8(src: Path, out: Path, records: Sequence[dict] | None, keep: Sequence[str] = (),
               int8: Sequence[str] = ()) -> dict:
    """int8 per-channel weights; the kernels quantize activations at run time (dynamic range)."""
    from ai_edge_quantizer import recipe

    return {"activations": "dynamic int8", "weights": "int8 per channel",
            **_run(src, out, None, lambda q, *_: q.load_quantization_recipe(recipe.dynamic_wi8_afp32()), keep)}


def dynamic_w4(src: Path, out: Path, records: Sequence[dict] | None, keep: Sequence[str] = (),
               int8: Sequence[str] = ()) -> dict:
    """int4 weights in blocks of 32 on the fully-connected ops whose input width allows the blocks; int8 per
    channel on the rest (ai-edge-quantizer refuses a block that does not divide the width) and on the `int8`
    scopes (the denoiser's sensitive units, exporters/quantize/units.py)."""
    narrow = _fc_outputs_not_divisible(src, W4_BLOCK)

    def configure(q, quantizer, qtyping):
        q.add_dynamic_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=8)
        q.add_dynamic_config(regex=".*", operation_name=qtyping.TFLOperationName.FULLY_CONNECTED, num_bits=4,
                             granularity=qtyping.QuantGranularity.BLOCKWISE_32)
        for regex in [f"^{re.escape(name)};$" for name in narrow] + [scope_regex(s) for s in int8]:
            q.add_dynamic_config(regex=regex, operation_name=qtyping.TFLOperationName.FULLY_CONNECTED, num_bits=8)

    return {"activations": "dynamic int8", "weights": f"int4 blocks of {W4_BLOCK} (fully connected), else int8",
            "int8_fully_connected": len(narrow), "int8_scopes": len(int8), **_run(src, out, None, configure, keep)}


def _fc_outputs_not_divisible(src: Path, block: int) -> list[str]:
    """Output tensor names of the FULLY_CONNECTED ops whose weight's input width is not a multiple of `block`, read
    from the flatbuffer (ai-edge-litert's schema reader: no interpreter, no kernels)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(Path(src).read_bytes(), 0)
    graph, fc = model.Subgraphs(0), schema.BuiltinOperator.FULLY_CONNECTED
    out = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) != fc:
            continue
        weight = graph.Tensors(op.Inputs(1))
        if weight.ShapeAsNumpy()[-1] % block:
            out.append(graph.Tensors(op.Outputs(0)).Name().decode())
    return out


def fp16_weights(src: Path, out: Path, keep: Sequence[str] = ()) -> dict:
    """fp16 weights (FLOAT_CASTING); the CPU dequantizes them once at load, the GPU delegate runs in fp16."""

    def configure(q, quantizer, qtyping):
        config = qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True)
        q.update_quantization_recipe(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                     algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING, op_config=config)

    return {"weights": "float16", "compute": "float32 on the CPU, float16 on the GPU delegate",
            **_run(src, out, None, configure, keep)}
