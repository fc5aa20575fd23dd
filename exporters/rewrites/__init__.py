"""Export rewrites: exact module swaps that let a target lower the models.

Each rewrite swaps modules of an already-loaded model for small modules built from the *same weights* (or switches
a module's class to a subclass whose forward is written differently), so the result computes the same function;
nothing in the model files changes. All of them are in one registry, `LOWERING_REWRITES`; which a target applies
its exporter declares (`Exporter.rewrites`, module swaps, and `Exporter.trace_rewrites`, exporters/base.py); each can
be switched off on its own. The module swaps live in `modules.py`; the trace-time substitutions for code that is a
function rather than a module are context managers (`rope_rank5`, in `trace.py`) that restore the original on exit.

| name  | fixes                                                                   | where                              |
|-------|-------------------------------------------------------------------------|------------------------------------|
| conv3d_as_conv2d | B2: nn.Conv3d has no XNNPACK / portable 5-D kernel → Conv2d over frames | every nn.Conv3d (LTX, Turbo-VAED)  |
| shuffle_rank5 | B1: rank-8 depth-to-space / space-to-depth → chains of rank-≤5 reshapes | LTX upsampler, (un)patchify        |
| causal_pad_cat | B3/B4: `concatenate` + repeat-by-0 temporal padding → `cat` of edge slices | LTXVideoCausalConv3d            |
| rms_norm_view | RMSNorm's last-axis mean of a 5-D tensor stays portable → (N,1,C,1) mean | diffusers RMSNorm (no affine)     |
| rms_norm_fp16 | RMSNorm on Core ML fp16 overflows for |x| > 256 → F.rms_norm             | diffusers RMSNorm (no affine)      |
| layer_norm_view | native_layer_norm is never delegated to XNNPACK → mean/var over (N,1,C,1) | nn.LayerNorm over one axis        |
| rms_norm_rank4 | QNN HTP refuses Sqrt on 5-D tensors → RMSNorm on a rank-4 view (leading axes merged) | diffusers RMSNorm (no affine) |
| layer_norm_rank4 | QNN HTP refuses 5-D LayerNormalization → LayerNorm on a rank-4 view | nn.LayerNorm over one axis |

The denoiser's functional LayerNorm: `layer_norm_fp32` keeps it an fp32 island in fp16 graphs (ExecuTorch's
portable fp16 kernel accumulates in fp16); on XNNPACK `denoiser_delegable` (applied after it, so it wins) traces
it as fp32 mean / variance products with a constant column, which the delegate runs as fully-connected (an earlier
session measured a pooled-view form of it 8 % slower on the fp32 reference-plan graph, where other portable ops
cut the graph anyway; benchmarks/results/layer_norm_forms_720p_amd.json sets the two forms side by side); with
the mobile plan's slices the 720p w8a8 step lowers into 4 delegate subgraphs and 14 portable ops (132 and 414 with
the reference plan; docs/guides/precision.md).

Trace-time substitutions (context managers, active only while torch.export traces):
| channel_rms_view | Turbo-VAED's channel RMS (5-D mean over dim 1, portable) → (N,1,C,1) mean | models.turbo_vaed.channel_rms_norm |
| rope_rank5 | the denoiser's rank-6 RoPE rotate-half → rank ≤ 5 (Core ML)              | models.rope.rotate_half_per_axis   |
| conv2d_batch1 | Vulkan takes only batch-1 2-D convs; conv3d_as_conv2d and GLUMBConv put frames in the batch → one conv per frame | F.conv2d |
| channel_rms_rank4 | QNN HTP: Turbo-VAED's channel RMS on the rank-4 view (B, C, T·H, W) | models.turbo_vaed.channel_rms_norm |
| frame_conditioning_without_gather | QNN HTP's GatherND gives wrong values (denoiser at 19 dB) → slice+expand+cat | models.denoiser.spread_over_frames |
| square_as_mul | the LiteRT converter refuses `tfl.pow` → pow(x, 2) as x·x | every pow(x, 2) while converting |
| layer_norm_fp32 | ExecuTorch's portable fp16 LayerNorm accumulates in fp16 (14 dB on 1152 channels; the 270M denoiser 15 dB) → LayerNorm in fp32, cast back | models.denoiser.layer_norm |
| denoiser_delegable | XNNPACK: the denoiser's `native_layer_norm`, the mobile plan's last-axis mean / sum, unbind and chunk are portable and cut the delegate graph → fp32 products with constant columns (mean, sum), slices | models.denoiser.layer_norm, kernels.layout.token_mean, kernels.linear_attention.token_sum, kernels.denoiser.rows / glumbconv |
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch import nn

from .modules import (
    Conv3dAsConv2d,
    DelegableLayerNorm,
    RankFourLayerNorm,
    apply_causal_pad_cat,
    apply_conv3d_as_conv2d,
    apply_layer_norm_rank4,
    apply_layer_norm_view,
    apply_rms_norm_fp16,
    apply_rms_norm_rank4,
    apply_rms_norm_view,
    apply_shuffle_rank5,
    as_rank4,
    depth_to_space,
    space_to_depth,
)
from .trace import (
    _spread_over_frames_by_slices,
    channel_rms_rank4,
    conv2d_batch_one,
    frame_conditioning_without_gather,
    layer_norm_fp32,
    denoiser_delegable,
    register_coreml_aliases,
    rope_rank5,
    square_as_mul,
    turbo_channel_rms,
)

__all__ = ["LOWERING_REWRITES", "LoweringRewrite", "apply_rewrites", "tracing", "register_coreml_aliases",
           "Conv3dAsConv2d", "DelegableLayerNorm", "RankFourLayerNorm", "as_rank4", "conv2d_batch_one",
           "depth_to_space", "space_to_depth", "_spread_over_frames_by_slices"]

# ---------------------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class LoweringRewrite:
    """One lowering rewrite: a module swap (`apply`, returns how many modules it swapped) or a trace-time
    substitution (`trace`, a context manager entered around torch.export)."""

    name: str
    summary: str
    apply: Callable[[nn.Module], int] | None = None
    trace: Callable[[], contextlib.AbstractContextManager] | None = None


LOWERING_REWRITES: dict[str, LoweringRewrite] = {r.name: r for r in (
    LoweringRewrite("conv3d_as_conv2d", "nn.Conv3d → Conv2d over frames (temporal taps folded into channels)",
                    apply=apply_conv3d_as_conv2d),
    LoweringRewrite("shuffle_rank5", "rank-8 pixel (un)shuffle → rank-≤5 reshape/permute chains", apply=apply_shuffle_rank5),
    LoweringRewrite("causal_pad_cat", "temporal edge padding with cat of slices (no repeat, no concatenate)",
                    apply=apply_causal_pad_cat),
    LoweringRewrite("rms_norm_view", "RMSNorm mean over an (N,1,C,1) view (delegable)", apply=apply_rms_norm_view),
    LoweringRewrite("rms_norm_fp16", "RMSNorm as F.rms_norm (fp16-safe on Core ML)", apply=apply_rms_norm_fp16),
    LoweringRewrite("layer_norm_view", "LayerNorm as mean/variance over an (N,1,C,1) view (delegable)",
                    apply=apply_layer_norm_view),
    LoweringRewrite("channel_rms_view", "Turbo-VAED channel RMS as an (N,1,C,1) mean (while tracing)",
                    trace=turbo_channel_rms),
    LoweringRewrite("rope_rank5", "rank-6 RoPE rotate-half as rank ≤ 5 (while tracing)", trace=rope_rank5),
    LoweringRewrite("conv2d_batch1", "a batch of frames as one batch-1 conv per frame (while tracing)",
                    trace=conv2d_batch_one),
    LoweringRewrite("rms_norm_rank4", "RMSNorm on a rank-4 view with leading axes merged (QNN HTP: no 5-D Sqrt)",
                    apply=apply_rms_norm_rank4),
    LoweringRewrite("layer_norm_rank4", "LayerNorm on a rank-4 view with leading axes merged (QNN HTP: no 5-D "
                    "LayerNormalization)", apply=apply_layer_norm_rank4),
    LoweringRewrite("channel_rms_rank4", "Turbo-VAED channel RMS on the rank-4 view (B, C, T·H, W) (while tracing)",
                    trace=channel_rms_rank4),
    LoweringRewrite("frame_conditioning_without_gather", "the denoiser's per-frame conditioning as slice + expand "
                    "+ cat, no GatherND (wrong on the QNN HTP) (while tracing)",
                    trace=frame_conditioning_without_gather),
    LoweringRewrite("layer_norm_fp32", "the denoiser's LayerNorm computed in fp32 and cast back (ExecuTorch's "
                    "portable fp16 LayerNorm accumulates in fp16) (while tracing)", trace=layer_norm_fp32),
    LoweringRewrite("denoiser_delegable", "the denoiser's LayerNorm (fp32), the mobile plan's q / k RMSNorm and "
                    "normaliser sum as reductions XNNPACK takes, its modulation rows and GLUMBConv halves as slices "
                    "(while tracing)", trace=denoiser_delegable),
    LoweringRewrite("square_as_mul", "pow(x, 2) as x·x (the LiteRT converter refuses tfl.pow) (while tracing)",
                    trace=square_as_mul),
)}

# What each target (and ExecuTorch delegate) applies, in order: module swaps, then trace-time substitutions.


@contextlib.contextmanager
def tracing(names: tuple[str, ...] | list[str]) -> Iterator[None]:
    """Enter the named trace-time substitutions (restored on exit, also on errors)."""
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(LOWERING_REWRITES[name].trace())
        yield


def apply_rewrites(model: nn.Module, names: tuple[str, ...] | list[str]) -> dict[str, int]:
    """Apply the named rewrites in place; returns name → number of modules swapped (0 = nothing to rewrite)."""
    done = {}
    for name in names:
        done[name] = LOWERING_REWRITES[name].apply(model)
    return done
