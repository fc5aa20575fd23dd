"""The XNNPACK trace rewrite `denoiser_delegable` (exporters/rewrites/trace.py): the forms it traces compute what
the mobile plan's own forms compute, the slices bit for bit, the reductions to fp32 rounding."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from mi2v_export.exporters import rewrites
from mi2v_export.kernels import denoiser as mobile
from mi2v_export.kernels import linear_attention as mobile_linear
from mi2v_export.kernels import rewrite
from mi2v_export.kernels.layout import rms_norm_tokens, token_sum
from mi2v_export.kernels.rope import pieces
from mi2v_export.models import denoiser, load_denoiser
from mi2v_export.models.denoiser import GLUMBConv

TRACE = rewrites.LOWERING_REWRITES["denoiser_delegable"].trace


def test_slice_forms_are_bit_exact():
    mlp, x = GLUMBConv(16, 24), torch.randn(2, 16, 5, 7)
    m = torch.randn(1, 3, 6, 8)
    plain = mobile.glumbconv(mlp, x), mobile.rows(m, 6)
    with TRACE():
        sliced = mobile.glumbconv(mlp, x), mobile.rows(m, 6)
    assert torch.equal(plain[0], sliced[0]) and all(torch.equal(a, b) for a, b in zip(plain[1], sliced[1]))
    assert mobile.rows(m, 6)[0].shape == (1, 3, 1, 8)  # restored after the block


def test_reductions_match_to_fp32_rounding():
    x, w = torch.randn(2, 7, 72) * 3 + 1, torch.randn(72)
    plain = denoiser.layer_norm(x, 1e-6), rms_norm_tokens(x, w, 1e-6), token_sum(x)
    with TRACE():
        traced = denoiser.layer_norm(x, 1e-6), mobile_linear.rms_norm_tokens(x, w, 1e-6), mobile_linear.token_sum(x)
    for a, b in zip(plain, traced):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    assert torch.allclose(plain[0], F.layer_norm(x, (72,), eps=1e-6), atol=1e-6)


def test_slices_trace_as_aten_slice_not_narrow():
    """The XNNPACK quantizer shares a slice's int8 range with its input only for `aten.slice`."""
    class Split(torch.nn.Module):
        def forward(self, x):
            return tuple(p * 2 for p in pieces(x, 4, -1))

    graph = torch.export.export(Split(), (torch.randn(3, 12),), strict=False).graph
    ops = {str(n.target) for n in graph.nodes if n.op == "call_function"}
    assert "aten.slice.Tensor" in ops and "aten.narrow.default" not in ops


def test_mobile_denoiser_traced_with_the_rewrite_equals_the_reference():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_denoiser(preset="tiny")
    grid = (3, 4, 6)
    model = rewrite(ref, "mobile", grid=grid)
    args = (torch.randn(1, 128, *grid, generator=torch.Generator().manual_seed(2)), torch.tensor([700.0]),
            torch.tensor([1.5]))
    with TRACE(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(model, args, strict=False)
    with torch.no_grad():
        out, want = ep.module()(*args), ref(*args)
    assert ((out - want).norm() / want.norm()).item() <= 1e-6


def test_reductions_trace_as_products_with_a_constant_column():
    """XNNPACK runs a matrix product as its fp32 fully-connected kernel only against a constant: the column must be
    lifted as one (no `aten.full` op in the graph), and the int8 quantizer leaves `mm` float."""
    class Norms(torch.nn.Module):
        def forward(self, x):
            return denoiser.layer_norm(x, 1e-6), mobile_linear.token_sum(x)

    x = torch.randn(2, 9, 48)
    with TRACE():
        ep = torch.export.export(Norms(), (x,), strict=False)
    ops = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert ops.count("aten.mm.default") == 3 and not any("full" in op or "mean" in op for op in ops), ops
    assert len(ep.constants) == 3  # a column per product: two 1/C (mean, variance), one of ones (sum)
    norm, total = ep.module()(x)
    assert torch.allclose(norm, F.layer_norm(x, (48,), eps=1e-6), atol=1e-5)
    assert torch.allclose(total, x.sum(-1, keepdim=True), atol=1e-4)
