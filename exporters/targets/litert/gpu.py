"""Which ops of a `.tflite` LiteRT's GPU delegate (ML Drift: OpenCL / WebGPU) would take, judged on the graph alone.

Why structural: no GPU runs here, and the analyzer bundled with ai-edge-litert (`_pywrap_analyzer_wrapper.
ModelAnalyzer(path, True, True)`) says "compatible" even for a 7-D TRANSPOSE or a STABLEHLO_SORT. So the delegate's
own rules are applied to each node's tensor ranks, dtypes, shapes and const-ness, read from the flatbuffer
(`schema_py_generated`), not through the interpreter, which refuses files with ops it has no CPU kernel for.

Rules transcribed from the delegate's own checks (docs/guides/litert.md#sources lists them with the commits read):
the op-level rules (input counts, const int32 axes, float CUMSUM, 1-D int32 GATHER indices, 3x2/4x2 paddings,
softmax beta 1, FC weights format, strided-slice masks, depthwise channels, SELECT_V2 shapes, numpy broadcasting,
no int16 DEQUANTIZE), which state no rank limit, and the gates around them in the ML Drift delegate's model builder:
its op list (no parser, refused: BROADCAST_TO, GATHER_ND, CONV_3D, STABLEHLO_COMPOSITE, ...), max op versions,
SLICE and CAST bypassing the op rules (SLICE: rank 1-4), TRANSPOSE perms of 2-4 entries, and rank < 5 for every
input/output tensor, constants included ("Tensor dimensions must be less than 5"); runtime tensors must be
float32/16 plus per-op extras.
Quantized inputs: the op rules only refuse int16 DEQUANTIZE; the OpenCL/WebGPU delegates run with
allow_quant_ops=true, so per-tensor int8/uint8 runtime tensors are taken (computed in float, QUANTIZE/DEQUANTIZE
become quantize-dequantize) while int16 activations fail the type gate; quantized FC weights: int8/4/2, 2-D.
A refusal names the first failing rule in the order op, version, tensor gate, op rules (every 5-D node reads
"rank >= 5"). Not modelled: SIGN_BIT activations, CUSTOM options, the partitioner merging independent runs. The
delegate keeps only its largest partition (max_delegated_partitions=1): `node_share` / `flop_share` are that
partition's, `*_eligible` every node that passes the rules.
"""

from __future__ import annotations

import math
from collections import Counter, namedtuple
from itertools import groupby
from pathlib import Path

METHOD = "structural: TensorFlow's GPU delegate rules (gpu_compatibility.cc) applied to the graph; no GPU ran"
NOT_HANDLED = "not supported: op not handled by the GPU delegate"

_T = namedtuple("_T", "shape dtype const scales")  # scales: number of quantization scales (0: not quantized)
_Node = namedtuple("_Node", "op version ins outs opts")  # ins: _T or None (optional input)

# Rule fields: v max op version; rt allowed runtime-input counts; rt_ct allowed (runtime, const) pairs; nin input
# slots; outs outputs; run input that must be runtime; i32c input that must be a const int32 (axes); flt input
# that must be float; rank {input: ranks}; opt {option: value}; flags checked by _flag_reason (bcast, perm, ...).
_U = dict(v=2, rt_ct=((1, 0),), outs=1)  # one-argument elementwise
_B = dict(v=2, rt_ct=((2, 0), (1, 1)), outs=1, bcast=True)  # two-argument elementwise
_RED = dict(rt_ct=((1, 1),), outs=1, i32c=1, rank={0: (1, 2, 3, 4)})  # reductions
_CONV, _R1 = dict(v=6, rt=(1, 2), outs=1, run=0), dict(rt=(1,), outs=1)
RULES: dict[str, dict] = {
    **{op: _U for op in ("CEIL", "COS", "ELU", "EXP", "FLOOR", "LOG", "LOGICAL_NOT", "LOGISTIC", "NEG", "ROUND",
                         "RSQRT", "SIGN", "SIN", "SQRT", "SQUARE", "TANH", "RELU", "RELU6", "RELU_N1_TO_1",
                         "RELU_0_TO_1", "LEAKY_RELU")},
    **{op: _B for op in ("ATAN2", "DIV", "EQUAL", "GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL", "LOGICAL_AND",
                         "LOGICAL_OR", "NOT_EQUAL", "POW", "SQUARED_DIFFERENCE", "SUB", "FLOOR_MOD")},
    **{op: _RED for op in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY", "REDUCE_ALL",
                           "REVERSE_V2")},
    "ABS": {**_U, "v": 5}, "GELU": {**_U, "v": 3}, "HARD_SWISH": _R1, "ADD_N": dict(nin=2), "PRELU": dict(v=1),
    "ADD": {**_B, "v": 6, "nin": 2}, "MUL": {**_B, "v": 8, "nin": 2}, "FLOOR_DIV": {**_B, "v": 3},
    "MAXIMUM": {**_B, "v": 4}, "MINIMUM": {**_B, "v": 4}, "STABLEHLO_CLAMP": dict(rt_ct=((3, 0),), outs=1),
    "CONV_2D": _CONV, "DEPTHWISE_CONV_2D": {**_CONV, "dw": True}, "TRANSPOSE_CONV": {**_CONV, "v": 3, "run": 2},
    "FULLY_CONNECTED": dict(v=14, rt=(1, 2), run=0, fc=True, opt={"WeightsFormat": 0}),
    "BATCH_MATMUL": dict(nin=2, outs=1, rt=(1, 2), run=0), "ARG_MAX": dict(rt_ct=((1, 1),), outs=1),
    "AVERAGE_POOL_2D": {**_R1, "v": 2}, "MAX_POOL_2D": {**_R1, "v": 2}, "LSTM": dict(v=4), "CUSTOM": {},
    "SOFTMAX": dict(v=4, rt_ct=((1, 0),), outs=1, opt={"Beta": 1.0}), "CONCATENATION": dict(v=6), "PACK": {},
    "UNPACK": {}, "SPLIT": dict(rank={1: (1, 2, 3, 4)}), "SPLIT_V": dict(rt_ct=((1, 2),), rank={0: (1, 2, 3, 4)}),
    "RESHAPE": {**_R1, "v": 1}, "TILE": _R1, "TRANSPOSE": {**_R1, "v": 9, "perm": True},
    "SLICE": dict(v=8, run=0, slice=True),
    "STRIDED_SLICE": dict(v=2, sslice=True, opt={"EllipsisMask": 0, "NewAxisMask": 0, "ShrinkAxisMask": 0}),
    "PAD": {**_R1, "v": 5, "pads": True}, "PADV2": {**_R1, "v": 5, "pads": True},
    "MIRROR_PAD": {**_R1, "v": 5, "pads": True, "opt": {"Mode": 0}},  # 0: REFLECT
    "RESIZE_BILINEAR": {**_R1, "v": 3}, "RESIZE_NEAREST_NEIGHBOR": {**_R1, "v": 3},
    "DEPTH_TO_SPACE": _R1, "SPACE_TO_DEPTH": {**_R1, "v": 2}, "CAST": dict(nin=1, rt_ct=((1, 0),), outs=1),
    "CUMSUM": dict(v=1, nin=2, flt=0, i32c=1), "GATHER": dict(rt_ct=((2, 0), (1, 1)), outs=1, gather=True),
    "SELECT": dict(v=1, sel=True), "SELECT_V2": dict(v=1, sel=True), "ONE_HOT": dict(v=1, nin=4),
    "TOPK_V2": dict(v=1, rt=(1,), outs=2, i32c=1), "EMBEDDING_LOOKUP": dict(nin=2, outs=1, embed=True),
    "DYNAMIC_UPDATE_SLICE": dict(nin=3, run=2, rank={2: (1,)}), "QUANTIZE": {**_R1, "v": 2, "quant_out": True},
    "DEQUANTIZE": dict(v=3, nin=1, outs=1, dequant=True),
    "STABLEHLO_BROADCAST_IN_DIM": dict(rt_ct=((1, 1),), outs=1, rank={0: (1, 2, 3, 4), 1: (1,)}),
}
# Custom ops ML Drift parses (NewOperationParser, kTfLiteBuiltinCustom); their options are not checked here.
CUSTOM_OPS = {"Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D", "Resampler",
              "custom_call.GroupNorm", "custom_call.LayerNorm", "custom_call.RmsNorm", "custom_call.PixelShuffle",
              "custom_call.absolute_positional_embedding", "custom_call.rotary_positional_embedding"}

_FLOAT = {"FLOAT32", "FLOAT16"}
_INTS, _UINTS = {"INT8", "INT16", "INT32"}, {"UINT8", "UINT16", "UINT32"}
_IN_BASE, _OUT_BASE = _FLOAT | {"INT8", "UINT8", "INT4", "INT2", "BOOL"}, _FLOAT | {"INT8", "UINT8"}
_INT_OPS = {"ABS", "ADD", "ATAN2", "COS", "DIV", "FLOOR_DIV", "FLOOR_MOD", "MAXIMUM", "MINIMUM", "MUL", "NEG",
            "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "SIGN", "SIN", "STABLEHLO_CLAMP", "SUB", "SUM", "TILE"}
_ANY_OPS = {"STABLEHLO_BROADCAST_IN_DIM", "CAST", "CONCATENATION", "DYNAMIC_UPDATE_SLICE", "GATHER", "PACK", "PAD",
            "PADV2", "RESHAPE", "REVERSE_V2", "SELECT", "SELECT_V2", "SLICE", "STRIDED_SLICE", "TRANSPOSE"}
_COMPARE = {"EQUAL", "NOT_EQUAL", "GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL"}
_LOGICAL, _ANY = {"LOGICAL_AND", "LOGICAL_OR", "LOGICAL_NOT"}, _INTS | _UINTS | {"BOOL", "BFLOAT16"}
# Builtin options read from the flatbuffer: op -> (schema Options class, fields).
_OPTS = {"SOFTMAX": ("SoftmaxOptions", ("Beta",)), "MIRROR_PAD": ("MirrorPadOptions", ("Mode",)),
         "FULLY_CONNECTED": ("FullyConnectedOptions", ("WeightsFormat", "KeepNumDims")),
         "STRIDED_SLICE": ("StridedSliceOptions", ("EllipsisMask", "NewAxisMask", "ShrinkAxisMask")),
         "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptions", ("DepthMultiplier",)),
         "BATCH_MATMUL": ("BatchMatMulOptions", ("AdjX",))}
_FLAGS = {"bcast", "perm", "pads", "slice", "sslice", "gather", "sel", "embed", "quant_out", "dequant", "dw", "fc"}
_CONV_LIKE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "CONV_3D", "TRANSPOSE_CONV"}


def _allowed_types(op: str) -> tuple[set[str], set[str]]:
    """Runtime-tensor dtypes the delegate accepts for `op` (GetOpsToReplaceWithOptions, allow_quant_ops=true)."""
    if op in _LOGICAL:
        return _INTS | {"BOOL"}, _INTS | {"BOOL"}
    ins, outs = set(_IN_BASE), {"INT32"} if op == "ARG_MAX" else set(_OUT_BASE)
    for applies, add_in, add_out in ((op in _ANY_OPS, _ANY, _ANY), (op in _INT_OPS, _INTS, _INTS),
                                     (op in _COMPARE, _INTS | _UINTS, {"BOOL"}), (op == "TOPK_V2", (), {"INT32"}),
                                     (op in {"EMBEDDING_LOOKUP", "ONE_HOT", "DYNAMIC_UPDATE_SLICE"}, {"INT32"}, ())):
        if applies:
            ins, outs = ins | set(add_in), outs | set(add_out)
    return ins, outs


def _len0(t: _T | None) -> int:
    """Entries of a 1-D index tensor (starts, perm); -1 when absent or not 1-D."""
    return t.shape[0] if t is not None and len(t.shape) == 1 else -1


def _layer_reason(n: _Node, flag: str) -> str | None:
    """Depthwise channel rules (CheckDepthwiseConvGpuDelegateCompatibility); FC keep_num_dims + quantized weights."""
    x, w, y = n.ins[0], n.ins[1], n.outs[0]
    dm = n.opts.get("DepthMultiplier", 1)
    if flag == "dw" and any(len(t.shape) != 4 for t in (x, w, y)):
        return "input, filter and output must be 4-D"
    if flag == "dw" and (w.shape[3] != y.shape[3] or y.shape[3] != x.shape[3] * dm or (dm != 1 and x.shape[3] != 1)):
        return "channel counts do not fit depth_multiplier"
    if flag == "fc" and n.opts.get("KeepNumDims") and len(x.shape) != len(y.shape):
        return "keep_num_dims with input rank != output rank"
    if flag == "fc" and w is not None and w.scales and (w.dtype not in {"INT8", "INT4", "INT2"} or not (
            len(w.shape) == 2 or (len(w.shape) == 4 and w.shape[1:3] == (1, 1)))):
        return "quantized weights must be int8/4/2 of rank 2 (or 4 with H=W=1)"
    return None


def _flag_reason(n: _Node, flag: str) -> str | None:
    """The op-specific rules that are more than a count or a rank (see RULES' flags)."""
    ins, out = n.ins, n.outs[0] if n.outs else None
    if flag == "bcast" and all(t is not None and not t.const for t in ins) and not all(
            x == y or 1 in (x, y) for x, y in zip(reversed(ins[0].shape), reversed(ins[-1].shape))):
        return "inputs are not broadcastable"
    if flag == "perm" and not 2 <= _len0(ins[1]) <= 4:
        return "permutation must have 2-4 entries (tensor rank 2-4)"
    if flag == "pads" and (len(ins[1].shape) != 2 or ins[1].shape[0] not in (3, 4) or ins[1].shape[1] != 2):
        return "paddings must be 3x2 or 4x2"
    if flag == "slice" and not (len(ins) >= 3 and 1 <= len(ins[0].shape) <= 4 and _len0(ins[1]) in (
            len(ins[0].shape), 3 if len(ins[0].shape) == 4 else -2)):
        return "SLICE needs a rank 1-4 input and matching starts"
    if flag == "sslice" and (len(ins) < 4 or _len0(ins[1]) not in (len(ins[0].shape), len(ins[0].shape) - 1)):
        return "STRIDED_SLICE needs 4 inputs and starts of the input's rank (or rank-1)"
    if flag == "gather" and (len(ins[1].shape) != 1 or ins[1].dtype != "INT32" or ins[0].dtype != out.dtype):
        return "GATHER needs 1-D int32 indices and matching input/output dtype"
    if flag == "sel" and (len(ins) != 3 or ins[0].dtype not in _FLOAT | {"BOOL"} or any(
            t.shape and t.shape != out.shape and (len(t.shape) > 1 or t.shape[0] > 1) for t in ins[1:])):
        return "SELECT_V2: cond float/bool, branches shaped as the output or scalar"
    if flag == "embed" and (len(ins[0].shape) != 1 or len(ins[1].shape) < 2 or len(ins[1].shape) != len(
            out.shape) or ins[1].dtype not in {"INT8", "INT4", "INT2", "FLOAT32"}):
        return "EMBEDDING_LOOKUP: 1-D ids, rank>=2 int8/4/2/float32 table"
    if flag == "quant_out" and not out.scales:
        return "QUANTIZE output has no quantization parameters"
    if flag == "dequant" and (ins[0].dtype == "INT16" or (not ins[0].const and ins[0].scales > 1) or (
            ins[0].const and not 2 <= len(ins[0].shape) <= 4)):
        return "DEQUANTIZE: no int16, per-tensor runtime input, rank 2-4 constant"
    return _layer_reason(n, flag) if flag in ("dw", "fc") else None


def _count_reason(n: _Node, rule: dict) -> str | None:
    """Input/output counts (CheckInputsOutputs, CheckInputsConstsOutputs, CheckConvolutionInputOutput)."""
    ct = sum(1 for t in n.ins if t is not None and t.const)
    rt = sum(1 for t in n.ins if t is not None) - ct
    if "nin" in rule and len(n.ins) != rule["nin"]:
        return f"expects {rule['nin']} inputs"
    if "outs" in rule and len(n.outs) != rule["outs"]:
        return f"expects {rule['outs']} output(s)"
    if "rt" in rule and rt not in rule["rt"]:
        return f"expects {'/'.join(map(str, rule['rt']))} runtime input(s)"
    if "rt_ct" in rule and (rt, ct) not in rule["rt_ct"]:
        return "expects " + " or ".join(f"{r} runtime + {c} const" for r, c in rule["rt_ct"]) + " inputs"
    if "run" in rule and (len(n.ins) <= rule["run"] or n.ins[rule["run"]] is None or n.ins[rule["run"]].const):
        return f"input {rule['run']} must be a runtime tensor"
    return None


def _op_reason(n: _Node) -> str | None:
    """Why the delegate refuses this node (the first failing rule), or None when it takes it."""
    key = n.op.split(":")[0]
    if key not in RULES or (key == "CUSTOM" and n.op[7:] not in CUSTOM_OPS):
        return NOT_HANDLED
    rule = RULES[key]
    if n.version > rule.get("v", n.version):
        return f"op version {n.version} > {rule['v']} supported"
    reason = _tensor_reason(n) or _count_reason(n, rule)
    for idx, ranks in rule.get("rank", {}).items():
        if reason is None and (len(n.ins) <= idx or n.ins[idx] is None or len(n.ins[idx].shape) not in ranks):
            reason = f"input {idx} must have rank {'/'.join(map(str, ranks))}"
    i, f = rule.get("i32c"), rule.get("flt")
    if reason is None and i is not None and (len(n.ins) <= i or not n.ins[i].const or n.ins[i].dtype != "INT32"):
        reason = f"input {i} (axes) must be a constant int32"
    if reason is None and f is not None and (n.ins[f].dtype not in _FLOAT or n.outs[0].dtype != n.ins[f].dtype):
        reason = "input and output must be float"
    for field, want in rule.get("opt", {}).items():
        reason = reason or (f"{field} must be {want}" if n.opts.get(field, want) != want else None)
    return reason or next((r for flag in rule if flag in _FLAGS and (r := _flag_reason(n, flag))), None)


def _tensor_reason(n: _Node) -> str | None:
    """IsAllAllowedTensors: rank < 5 for every tensor, allowed dtypes for runtime ones; per-tensor quantization."""
    allowed_in, allowed_out = _allowed_types(n.op)
    for tensors, allowed in ((n.ins, allowed_in), (n.outs, allowed_out)):
        for t in filter(None, tensors):
            if len(t.shape) >= 5:
                return "tensor rank >= 5 (the GPU delegate takes rank <= 4)"
            if not t.const and t.dtype not in allowed:
                return f"tensor type {t.dtype} not supported"
            if not t.const and t.dtype in {"INT8", "UINT8"} and t.scales > 1:
                return "per-channel quantized runtime tensor"
    return None


def _macs(n: _Node) -> int:
    """Multiply-accumulates of a conv / matmul node, from its output and weight shapes."""
    out = math.prod(n.outs[0].shape) if n.outs else 0
    w = n.ins[1].shape if len(n.ins) > 1 and n.ins[1] is not None else ()
    if n.op == "CONV_2D" and len(w) == 4:
        return out * w[1] * w[2] * w[3]  # OHWI filter; I is the per-group input depth
    if n.op == "DEPTHWISE_CONV_2D" and len(w) == 4:
        return out * w[1] * w[2]
    if n.op == "FULLY_CONNECTED" and len(w) == 2:
        return out * w[1]
    if n.op == "BATCH_MATMUL" and n.ins[0].shape:
        return out * n.ins[0].shape[-2 if n.opts.get("AdjX") else -1]
    if n.op == "CONV_3D" and len(w) == 5:
        return out * w[0] * w[1] * w[2] * w[3]  # DHWIO filter
    if n.op == "TRANSPOSE_CONV" and len(w) == 4 and len(n.ins) > 2:
        return math.prod(n.ins[2].shape) * w[0] * w[1] * w[2]  # every input element scatters an OHW window
    return 0


def _tensors(model, graph, schema) -> list[_T]:
    """Shape, dtype, const-ness and quantization of every tensor of the main subgraph."""
    dtypes = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    out = []
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        buf = model.Buffers(t.Buffer()) if 0 < t.Buffer() < model.BuffersLength() else None
        const = buf is not None and not t.IsVariable() and (buf.DataLength() > 0 or buf.Size() > 0)
        q = t.Quantization()
        out.append(_T(tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else (), dtypes.get(t.Type(), "?"),
                      const, q.ScaleLength() if q is not None else 0))
    return out


def _nodes(data: bytes) -> list[_Node]:
    """The main subgraph's operators in execution order, with their tensors and the options the rules read."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    graph = model.Subgraphs(0)
    tensors = _tensors(model, graph, schema)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    nodes = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "UNKNOWN")
        if name == "CUSTOM":
            name = "CUSTOM:" + (code.CustomCode() or b"").decode()
        opts = {}
        if name in _OPTS and op.BuiltinOptions() is not None:
            cls, fields = _OPTS[name]
            table = getattr(schema, cls)()
            table.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
            opts = {f: getattr(table, f)() for f in fields}
        ins = [tensors[j] if j >= 0 else None for j in (op.InputsAsNumpy() if op.InputsLength() else [])]
        outs = [tensors[j] for j in (op.OutputsAsNumpy() if op.OutputsLength() else [])]
        nodes.append(_Node(name, code.Version(), ins, outs, opts))
    return nodes


def _runs(flags: list[bool]) -> list[range]:
    """The contiguous runs of GPU nodes in execution order (each would be one delegate partition)."""
    runs, start = [], 0
    for on, group in groupby(flags):
        n = len(list(group))
        if on:
            runs.append(range(start, start + n))
        start += n
    return runs


def gpu_support(path: Path) -> dict:
    """What LiteRT's GPU delegate would take from the `.tflite` at `path`, by its published rules (JSON-safe)."""
    nodes = _nodes(Path(path).read_bytes())
    reasons = [_op_reason(n) for n in nodes]
    macs = [_macs(n) if n.op in _CONV_LIKE else 0 for n in nodes]
    flops = 2 * sum(macs)
    runs = _runs([r is None for r in reasons])
    largest = max(runs, key=len, default=range(0))  # the one partition the delegate keeps
    eligible, eligible_flops = sum(len(r) for r in runs), 2 * sum(macs[i] for r in runs for i in r)
    gpu_flops = 2 * sum(macs[i] for i in largest)
    grouped = Counter((n.op, r) for n, r in zip(nodes, reasons) if r is not None)
    refused = [{"op": op, "count": c, "reason": r} for (op, r), c in sorted(grouped.items(), key=lambda kv: -kv[1])]
    share = lambda part, whole: part / whole if whole else None  # noqa: E731
    return {"method": METHOD, "nodes": len(nodes), "nodes_on_gpu": len(largest),
            "node_share": share(len(largest), len(nodes)), "conv_matmul_flops": flops,
            "conv_matmul_flops_on_gpu": gpu_flops, "flop_share": share(gpu_flops, flops),
            "nodes_eligible": eligible, "node_share_eligible": share(eligible, len(nodes)),
            "flop_share_eligible": share(eligible_flops, flops), "refused": refused[:20], "partitions": len(runs),
            "largest_partition_nodes": len(largest)}
