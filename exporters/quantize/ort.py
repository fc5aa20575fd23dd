"""onnxruntime quantization of an exported .onnx file, in place: the ONNX target's integer precisions. Every
quantizer here takes `(path, out, records, excluded, int8)` (the fp32 model, where to write, the calibration records,
the nodes left float, the units w4 gives int8) and returns what it did for the manifest; `quantize_in_place` wraps
the one exporters/quantize/__init__.py chose for the (target, delegate, precision).

    w8a8  `quantize_static`, QDQ, U8S8 (uint8 activations, per-channel int8 weights), calibrated (min-max) on the
          calibration records, on the MatMuls, Gemms and group-1 convs (`as_integer_friendly`)
    w8a16 `quantize_static`, QDQ on every node, uint16 activations + uint8 weights (the QNN HTP's format, here for
          comparing with the HTP; the QNN path itself quantizes in exporters/quantize/qnn.py)
    w8    `quantize_dynamic`, int8 per-channel weights, dynamic activations, on the MatMuls and Gemms; other group-1
          convs int8 weights only (`as_integer_friendly`)
    w4    `MatMulNBitsQuantizer`, 4-bit symmetric blocks of 32 on every MatMul (1x1 convs and Gemms first made
          MatMul by `as_matmuls`; other convs stay float, so a component whose weights are mostly convs is refused)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

from mi2v_export.errors import BadInputError

from .pt2e import W4_GROUP


def quantize_in_place(path: Path, quantize: Callable, tool: str, records: Sequence[dict] | None,
                      keep: Sequence[str] = (), int8: Sequence[str] = ()) -> dict:
    """Quantize the .onnx file at `path` in place with `quantize` (one of this module's quantizers, made with
    `tool`); returns what was done (for target_info). `keep`: submodule names whose nodes stay float (a recipe's
    fp32 units); `int8`: those w4 gives int8 weights (int8_units, without the `keep` ones)."""
    import logging

    import onnxruntime.quantization  # noqa: F401 - imported before its loggers are quieted below
    import onnxruntime.quantization.matmul_nbits_quantizer  # noqa: F401 - its import sets the root logger to INFO

    for name in ("", "onnxruntime.quantization.matmul_nbits_quantizer"):  # advice/INFO lines, not for the CLI
        logging.getLogger(name).setLevel(logging.ERROR)
    tmp = path.with_suffix(".q.onnx")
    excluded = nodes_of_units(path, keep)
    info = {"tool": tool, **quantize(path, tmp, records or [], excluded, int8)}
    tmp.replace(path)
    info["nodes_kept_float"] = len(excluded)
    return info


# ---------------------------------------------------------------------------------------------------------------
# The quantizers of the table


def static_w8a8(path: Path, out: Path, records: Sequence[dict], excluded: list[str], int8: Sequence[str]) -> dict:
    """U8S8 (uint8 asymmetric activations, int8 symmetric per-channel weights), onnxruntime's fast x86 form (VNNI
    multiplies u8 by s8): the 270M denoiser at 128x224 ran 2.30x fp32 as U8S8 against 1.78x as S8S8, both 40.8 dB,
    side by side."""
    from onnxruntime.quantization import QuantType

    ops = ["MatMul", "Gemm", "Conv"]
    return _integer_friendly(path, out, excluded, ops, conv_weights=False, run=lambda src, options: _static(
        src, out, records, options, activation=QuantType.QUInt8, weight=QuantType.QInt8))


def dynamic_w8(path: Path, out: Path, records: Sequence[dict], excluded: list[str], int8: Sequence[str]) -> dict:
    """int8 per-channel weights with dynamic activations on the MatMuls and Gemms; other group-1 convs int8 weights
    only (dequantized in the graph)."""
    import onnxruntime.quantization as oq

    def run(src: Path, options: dict) -> dict:
        oq.quantize_dynamic(str(src), str(out), weight_type=oq.QuantType.QInt8, per_channel=True, **options)
        return {"weights": "int8 per channel"}

    return _integer_friendly(path, out, excluded, ["MatMul", "Gemm"], conv_weights=True, run=run)


def static_w8a16(path: Path, out: Path, records: Sequence[dict], excluded: list[str], int8: Sequence[str]) -> dict:
    """QDQ on every node: uint16 activations, uint8 weights (the QNN HTP's format, for comparing with it)."""
    from onnxruntime.quantization import QuantType

    return _static(path, out, records, {"nodes_to_exclude": excluded}, activation=QuantType.QUInt16,
                   weight=QuantType.QUInt8, extra_options={"UseQDQContribOps": True})


def matmul_nbits_w4(path: Path, out: Path, records: Sequence[dict], excluded: list[str], int8: Sequence[str]) -> dict:
    """4-bit MatMulNBits on every MatMul but the `excluded` nodes and those of the `int8` units, which get
    onnxruntime's dynamic int8 (per-channel weights) instead."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    int8_nodes = nodes_of_units(path, int8)
    model = onnx.load(str(path))
    rewritten = as_matmuls(model, set(excluded))
    _require_matmul_weights(model, "w4")
    as_int8 = [n.name for n in model.graph.node if n.op_type == "MatMul"  # a rewritten Gemm / 1x1 conv: "<name>_matmul"
               and (n.name in int8_nodes or n.name.removesuffix("_matmul") in int8_nodes)]
    config = DefaultWeightOnlyQuantConfig(block_size=W4_GROUP, is_symmetric=True, bits=4)
    q = MatMulNBitsQuantizer(model, algo_config=config, nodes_to_exclude=list(excluded) + as_int8)
    q.process()
    q.model.save_model_to_file(str(out), use_external_data_format=False)
    nodes = sum(1 for n in q.model.model.graph.node if n.op_type == "MatMulNBits")
    if as_int8:
        _dynamic_int8(out, as_int8)
    return {"bits": 4, "block_size": W4_GROUP, "matmul_nbits": nodes, "rewritten_as_matmul": rewritten,
            "int8_matmuls": len(as_int8)}


# ---------------------------------------------------------------------------------------------------------------
# Running onnxruntime's quantizers


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


def _static(src: Path, out: Path, records: Sequence[dict], options: dict, *, activation, weight,
            extra_options: dict | None = None) -> dict:
    """onnxruntime's static QDQ quantizer, per-channel weights, calibrated on `records` in bounded memory."""
    import onnxruntime.quantization as oq

    config = {"quant_format": oq.QuantFormat.QDQ, "activation_type": activation, "weight_type": weight,
              "per_channel": True, "calibration_data_reader": _Reader(records)}
    if extra_options:
        config["extra_options"] = extra_options
    with calibration_in_bounded_memory():
        oq.quantize_static(str(src), str(out), **config, **options)
    return {"format": "QDQ", "calibration_records": len(records)}


def _integer_friendly(path: Path, out: Path, excluded: list[str], ops: list[str], *, conv_weights: bool,
                      run: Callable[[Path, dict], dict]) -> dict:
    """`run(src, options)` on the integer-friendly form of `path` (`as_integer_friendly`), quantizing `ops` only."""
    src = path.with_suffix(".integer.onnx")
    rewritten, float_nodes = as_integer_friendly(path, src, excluded, conv_weights)
    try:
        info = run(src, {"nodes_to_exclude": excluded + float_nodes, "op_types_to_quantize": ops})
    finally:
        src.unlink(missing_ok=True)
    return dict(info, quantized_ops=ops, rewritten=rewritten, float_nodes=len(float_nodes))


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


def as_integer_friendly(path: Path, out: Path, excluded: Sequence[str],
                        conv_weights: bool) -> tuple[dict, list[str]]:
    """Write `path` to `out` in the form onnxruntime's integer kernels pay off on; returns what was rewritten and
    the nodes that stay float: the MatMuls of two activations (attention scores and values) and depthwise convs.

    1x1 convs and Gemms become MatMul (`as_matmuls`); with `conv_weights` (w8) the other group-1 convs get int8
    weights only (`conv_weights_as_int8`): onnxruntime's dynamic ConvInteger and QDQ around every elementwise op
    cost more than they save. 720p denoiser on an AVX-512 host: w8 0.34x, w8a8 0.75x the fp32 speed before. After (270M models
    at 128x224, side by side with fp32): denoiser w8 2.27x at 41.6 dB, w8a8 2.54x at 40.8 dB (was 0.88x at
    35.1 dB); Turbo-VAED w8 0.97x at 39.0 dB (was 0.30x at 35.5 dB), w8a8 1.15x at 34.5 dB (was 0.99x at 31.9)."""
    import onnx

    model = onnx.load(str(path))
    counts = as_matmuls(model, set(excluded))
    if conv_weights:
        counts["int8_weight_convs"] = conv_weights_as_int8(model, set(excluded))
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    pairs = [n.name for n in graph.node if n.op_type == "MatMul" and not any(i in inits for i in n.input)]
    depthwise = [n.name for n in graph.node if n.op_type == "Conv" and conv_groups(n) > 1]
    onnx.save(model, str(out))
    return counts, pairs + depthwise


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
