"""The ExecuTorch program around the lowering: graph clean-up before it, what the lowered edge program delegates,
and reading a written .pte back (its Program flatbuffer, its memory plan).

The delegation summary counts operator nodes with ExecuTorch's own `get_delegation_info` (devtools), and the share
of FLOPs (2·MAC of convolutions and matmuls, mi2v_export/flops.py) that runs inside a delegate.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

from mi2v_export.flops import FX_FLOPS_COUNTED, fx_graph_flops

_NOT_AN_OP = "getitem"  # get_delegation_info counts the tuple-unpacking nodes too; they are no operators


def drop_noop_views(ep) -> int:
    """Remove `alias` and full-range `slice` nodes (no-ops: e.g. `x[:, :, :1]` on a one-frame video). ExecuTorch
    keeps them as portable `alias_copy` / `slice_copy` ops that split the delegate graph."""
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
    import torch
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

    conv.define_node = define_node
    try:
        yield
    finally:
        conv.define_node = original


def delegation_summary(edge_manager) -> dict:
    """Ops and FLOPs inside delegate subgraphs vs on portable kernels, from the lowered edge program. Op names are
    ExecuTorch's (`get_delegation_info`: the node names without their numeric suffix, e.g. aten_convolution_default)."""
    from executorch.devtools.backend_debug import get_delegation_info

    gm = edge_manager.exported_program().graph_module
    info = get_delegation_info(gm)
    ops = {name: b for name, b in info.delegation_by_operator.items() if name != _NOT_AN_OP}
    delegated = Counter({name: b.delegated for name, b in ops.items() if b.delegated})
    portable = Counter({name: b.non_delegated for name, b in ops.items() if b.non_delegated})
    lowered = [m for _, m in gm.named_children() if hasattr(m, "backend_id")]
    flops_delegated = sum(fx_graph_flops(m.original_module.graph_module.graph) for m in lowered)
    flops_portable = fx_graph_flops(gm.graph)
    n_del, n_port = sum(delegated.values()), sum(portable.values())
    total_flops = flops_delegated + flops_portable
    return {
        "backends": dict(Counter(m.backend_id for m in lowered)),
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "ops_delegated": n_del,
        "ops_portable": n_port,
        "ops_share_delegated": round(n_del / (n_del + n_port), 4) if n_del + n_port else None,
        "flops_delegated": flops_delegated,
        "flops_portable": flops_portable,
        "flops_share_delegated": round(flops_delegated / total_flops, 6) if total_flops else None,
        "flops_counted": FX_FLOPS_COUNTED,
        "portable_ops": dict(portable.most_common()),
        "delegated_ops": dict(delegated.most_common()),
    }


def output_meta(edge_manager) -> list:
    """The lowered program's output tensors (fake tensors carrying shape and dtype)."""
    gm = edge_manager.exported_program().graph_module
    out = next(n for n in gm.graph.nodes if n.op == "output")
    values = out.args[0] if isinstance(out.args[0], (list, tuple)) else [out.args[0]]
    return [v.meta["val"] for v in values]


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
