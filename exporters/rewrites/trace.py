"""Trace-time substitutions of the lowering rewrites: for code that is a function rather than a module, context
managers that swap the function while torch.export traces and restore the original on exit (also on errors); and
the coremltools converter registrations the Core ML lowerings need. The registry: exporters/rewrites/__init__.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import unset_fake_temporarily
from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing

from mi2v_export.kernels import denoiser as mobile_denoiser
from mi2v_export.kernels import layout as mobile_layout
from mi2v_export.kernels import linear_attention as mobile_linear
from mi2v_export.kernels.rope import take
from mi2v_export.models import denoiser, rope, turbo_vaed

# ---------------------------------------------------------------------------------------------------------------
# Trace-time substitutions and converter registrations


def _rotate_half_rank5(x: torch.Tensor) -> torch.Tensor:
    """`models.rope.rotate_half_per_axis` without its rank-6 view (Core ML allows rank ≤ 5); same values."""
    *lead, d = x.shape
    y = x.reshape(-1, 3, 2, d // 6)
    x1, x2 = y.unbind(-2)
    return torch.stack([-x2, x1], dim=-2).reshape(*lead, d)


def _channel_rms_delegable(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Turbo-VAED's `channel_rms_norm` with the channel mean taken on an (N, 1, C, 1) view (XNNPACK-delegable)."""
    c = x.shape[1]
    v = x.pow(2).movedim(1, -1).reshape(-1, 1, c, 1).mean(dim=(-2, -1), keepdim=True)
    v = v.reshape(x.shape[0], *x.shape[2:], 1).movedim(-1, 1)
    return x * torch.rsqrt(v + eps)


@contextlib.contextmanager
def _channel_rms_as(form: Callable[[torch.Tensor, float], torch.Tensor]) -> Iterator[None]:
    """Trace Turbo-VAED's channel RMS norm through `form(x, eps)`; the original is restored on exit."""
    original = turbo_vaed.channel_rms_norm
    eps = turbo_vaed.RMS_EPS
    turbo_vaed.channel_rms_norm = lambda x, eps=eps: form(x, eps)
    try:
        yield
    finally:
        turbo_vaed.channel_rms_norm = original


def turbo_channel_rms() -> contextlib.AbstractContextManager:
    """While exporting for ExecuTorch: trace Turbo-VAED's channel RMS norm through a delegable form."""
    return _channel_rms_as(_channel_rms_delegable)


def _conv2d_batch_one(conv2d: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # F.conv2d's signature
        if input.dim() != 4 or input.shape[0] == 1:
            return conv2d(input, weight, bias, stride, padding, dilation, groups)
        return torch.cat([conv2d(x, weight, bias, stride, padding, dilation, groups) for x in input.split(1)])
    return conv


@contextlib.contextmanager
def conv2d_batch_one() -> Iterator[None]:
    """While exporting for Vulkan: every 2-D convolution over a batch of frames is traced as one batch-1
    convolution per frame (the same weight) joined with cat. ExecuTorch's Vulkan partitioner skips a conv whose
    batch is not 1 ("op args not supported"), and the conv3d_as_conv2d rewrite and the denoiser's GLUMBConv put the frames in
    the batch, so without this every VAE conv stays on the portable CPU kernels."""
    original = F.conv2d
    F.conv2d = _conv2d_batch_one(original)
    try:
        yield
    finally:
        F.conv2d = original


@contextlib.contextmanager
def _swapped(owner, name: str, replacement) -> Iterator[None]:
    """Trace-time substitution: `owner.name` is `replacement` inside the block, the original again after."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def rope_rank5() -> Iterator[None]:
    """While exporting for Core ML: trace the denoiser's RoPE rotate-half through a rank-≤5 form."""
    with _swapped(rope, "rotate_half_per_axis", _rotate_half_rank5):
        yield


_coreml_registered = False


def register_coreml_aliases() -> None:
    """coremltools converters for ops torch.export leaves that it does not know: `concatenate` → cat (B3) and
    `alias` → noop (B5, the encoder on one image). Idempotent."""
    global _coreml_registered
    if _coreml_registered:
        return
    from coremltools.converters.mil.frontend.torch.ops import cat, noop
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op

    register_torch_op(cat, torch_alias=["concat", "concatenate"], override=True)
    register_torch_op(noop, torch_alias=["alias"], override=True)
    _coreml_registered = True



def _channel_rms_rank4(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Turbo-VAED's `channel_rms_norm` (over dim 1 of (B, C, T, H, W)) on the rank-4 view (B, C, T·H, W)."""
    b, c, t, h, w = x.shape
    y = x.reshape(b, c, t * h, w)
    return (y * torch.rsqrt(y.pow(2).mean(dim=1, keepdim=True) + eps)).reshape(x.shape)


def channel_rms_rank4() -> contextlib.AbstractContextManager:
    """While exporting for QNN: trace Turbo-VAED's channel RMS norm with its Sqrt on a rank-4 view."""
    return _channel_rms_as(_channel_rms_rank4)


def _spread_over_frames_by_slices(values: torch.Tensor, frames: int) -> torch.Tensor:
    """`models.denoiser.spread_over_frames` as slice + expand + cat instead of an index gather; same values."""
    b, _, d = values.shape
    if frames == 1:
        return values[:, :1]
    return torch.cat([values[:, :1], values[:, 1:2].expand(b, frames - 1, d)], dim=1)


@contextlib.contextmanager
def frame_conditioning_without_gather() -> Iterator[None]:
    """While exporting for QNN: spread the denoiser's two conditioning rows over the frames without GatherND."""
    with _swapped(denoiser, "spread_over_frames", _spread_over_frames_by_slices):
        yield


def _layer_norm_in_fp32(x: torch.Tensor, eps: float) -> torch.Tensor:
    """The denoiser's LayerNorm as an fp32 island: what PyTorch's own fp16 LayerNorm does (fp32 accumulation, one
    rounding of the output); a no-op on fp32 graphs."""
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)


@contextlib.contextmanager
def layer_norm_fp32() -> Iterator[None]:
    """While exporting for ExecuTorch: the denoiser's functional LayerNorm (portable, never delegated) in fp32."""
    with _swapped(denoiser, "layer_norm", _layer_norm_in_fp32), \
            _swapped(mobile_denoiser, "layer_norm", _layer_norm_in_fp32):
        yield


def _constant_column(size: int, value: float, dtype: torch.dtype) -> torch.Tensor:
    """A (size, 1) column filled with `value`, made outside the trace that asks for it: a tensor made while
    torch.export traces is an op in the graph (`aten.full`, which ExecuTorch does not fold), and XNNPACK takes a
    matrix product as its fast fully-connected kernel only when the right-hand side is a constant. A new one for
    every use: one constant shared by products that land in different delegate subgraphs (the reference plan cuts
    the graph) breaks ExecuTorch's `to_executorch`, which re-runs each delegate's own program with its constants."""
    with unset_fake_temporarily(), disable_proxy_modes_tracing():
        return torch.full((size, 1), value, dtype=dtype, device="cpu")


def _last_axis_product(x: torch.Tensor, value: float) -> torch.Tensor:
    """x (..., C) times a constant (C, 1) column of `value`, kept as (..., 1); fp32 products like the reductions."""
    *lead, c = x.shape
    return torch.mm(x.reshape(-1, c), _constant_column(c, value, x.dtype)).reshape(*lead, 1)


def _inner_mean(x: torch.Tensor) -> torch.Tensor:
    """mean(-1, keepdim=True) as a product with a constant column of 1/C. ExecuTorch's XNNPACK lowering takes a
    mean only as global average pooling over the two inner axes of a 4-D tensor (one channel: a slow reduction),
    and a last-axis mean of a 3-D tensor not at all (portable kernels, a cut in the delegate graph); as a product it
    is XNNPACK's fp32 fully-connected kernel: a 720p LayerNorm (2760 x 1152) 5.1 ms against 10.1 ms as the
    pooled view (benchmarks/results/layer_norm_forms_720p_amd.json). The int8 quantizer leaves `mm` float."""
    return _last_axis_product(x, 1.0 / x.shape[-1])


def _layer_norm_delegable(x: torch.Tensor, eps: float) -> torch.Tensor:
    """The denoiser's LayerNorm in fp32 (as `_layer_norm_in_fp32`) from delegable mean / variance products."""
    y = x.float()
    d = y - _inner_mean(y)
    return (d * torch.rsqrt(_inner_mean(d * d) + eps)).to(x.dtype)


def _token_sum_delegable(x: torch.Tensor) -> torch.Tensor:
    """`kernels.layout.token_sum` (the linear attention's normaliser) as an fp32 product with a column of ones."""
    return _last_axis_product(x.float(), 1.0).to(x.dtype)


def _rows_as_slices(m: torch.Tensor, count: int) -> list[torch.Tensor]:
    """`kernels.denoiser.rows` as slices (unbind is a split plus squeezes on portable kernels); same values."""
    return [take(m, 2, i, 1) for i in range(count)]


def _glumbconv_halves_as_slices(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`GLUMBConv.forward` with its value / gate halves as two slices instead of `chunk` (a portable split)."""
    x = mlp.depth_conv(mlp.inverted_conv(x))
    half = x.shape[1] // 2
    return mlp.point_conv(take(x, 1, 0, half) * F.silu(take(x, 1, half, half)))


@contextlib.contextmanager
def denoiser_delegable() -> Iterator[None]:
    """While exporting for ExecuTorch XNNPACK: the denoiser's LayerNorm, the mobile plan's q / k RMSNorm mean and
    normaliser sum as products with constant columns (XNNPACK's fully-connected kernel), and its modulation rows
    and GLUMBConv halves as slices. Only there: onnxruntime fuses the plain forms (with 4-D-view means in the plan
    itself its 720p w8a8 step measured 2.54 s against 2.29 s, benchmarks/results/
    precision_720p_onnx_denoiser_mobile_slices.json; this host's fp32 step slowed as well, so part of it is drift)
    and has no delegate graph for them to keep whole."""
    with _swapped(denoiser, "layer_norm", _layer_norm_delegable), \
            _swapped(mobile_denoiser, "layer_norm", _layer_norm_delegable), \
            _swapped(mobile_denoiser, "rows", _rows_as_slices), \
            _swapped(mobile_denoiser, "glumbconv", _glumbconv_halves_as_slices), \
            _swapped(mobile_layout, "token_mean", _inner_mean), \
            _swapped(mobile_linear, "token_sum", _token_sum_delegable):
        yield


def _square_as_mul(pow_: Callable) -> Callable:
    def power(x, exponent, *args, **kwargs):
        if isinstance(exponent, (int, float)) and not isinstance(exponent, bool) and exponent == 2:
            return x * x
        return pow_(x, exponent, *args, **kwargs)
    return power


@contextlib.contextmanager
def square_as_mul() -> Iterator[None]:
    """While converting for LiteRT: every `x.pow(2)` / `x ** 2` / `torch.pow(x, 2)` is traced as `x * x`. The LiteRT
    converter marks `tfl.pow` illegal ("failed to legalize operation 'tfl.pow'"): the diffusers RMSNorm of the LTX
    encoder and decoder and Turbo-VAED's channel RMS square their input this way. Same values (x·x is what pow(x, 2)
    computes)."""
    with _swapped(torch.Tensor, "pow", _square_as_mul(torch.Tensor.pow)), \
            _swapped(torch.Tensor, "__pow__", _square_as_mul(torch.Tensor.__pow__)), \
            _swapped(torch, "pow", _square_as_mul(torch.pow)):
        yield
