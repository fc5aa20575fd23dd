"""Turbo-VAED: the light video decoder MobileI2V ships instead of the LTX decoder (architecture.md §5.3).

Our own compact re-implementation of the decoder of upstream `AutoencoderKLTurboVAED` (hustvl/Turbo-VAED,
`autoencoder_kl_turbo_vaed.py`, config `configs/Turbo-VAED-LTX.json`). It reads the same 128-channel raw LTX latent
(scaling factor 1.0) and produces the same video geometry as the LTX decoder: (B,128,t,h,w) → (B,3,1+8(t-1),32h,32w),
values in about [-1, 1], uncropped. Only what inference needs is kept: no tiling, no slicing, no timestep
conditioning / noise injection (off in every released config), no training-only feature-alignment heads. The
module names follow upstream, so `TurboVAED().state_dict()` has exactly the keys of a released decoder checkpoint
(prefixed `decoder.`); the released file is a bare decoder state dict, so load it into `model.decoder`.

Structure (upstream lists are given coarse→fine and reversed here, so block 0 is the 512-channel one):
  conv_in 3³ → mid block → up blocks (each: optional channel-changing resnet `conv_in`, optional 2×2×2
  upsampler, resnets) → two 2-D stages [RMS → SiLU → per-frame Conv2d 3×3 → pixel_shuffle(2)] that replace the
  4×4 unpatchify → channel RMS → SiLU → conv_out 3³.
Details that matter for exactness:
  * every 3-D conv pads space with zeros and time by repeating the edge frame (both ends unless causal);
    depthwise-separable convs always pad time symmetrically, even in a causal decoder (as upstream does);
  * RMS norms are over channels, eps 1e-8, without weights; the shortcut LayerNorm is affine, eps 1e-6;
  * in an up block that upsamples, the resnets *after* the upsampler use ReLU (not SiLU) as first activation;
  * the 3-D upsampler is Conv3d C→8C, a temporal ×2 split of channels, a per-frame pixel_shuffle(2), and then
    drops the first frame (t → 2t-1).

Lowering notes (shared/spec/vae-export.md; handled by the exporters, not here): Conv3d has no ExecuTorch kernel
(B2: fold to Conv2d); the temporal padding here is already built with `torch.cat` of edge slices and skipped for
kt = 1 (avoids B3 `concatenate` and B4 repeat-by-0 for Core ML); every reshape stays at rank ≤ 6 — XNNPACK allows at
most 6 dims (B1), so no rank-8 view is used; the hand-written channel RMS norm is the fp16-range risk of §8 (frms).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadInputError
from ..presets import TurboVAEDConfig
from .seeded import state_dict_shapes

RMS_EPS = 1e-8


def channel_rms_norm(x: torch.Tensor, eps: float = RMS_EPS) -> torch.Tensor:
    """RMS-normalise over the channel axis (dim 1) without a learned scale (upstream `RMSNorm(affine=False)`)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def pad_time(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Replicate the first/last frame `before`/`after` times along time (dim 2); identity when both are 0."""
    if before == 0 and after == 0:
        return x
    return torch.cat([x[:, :, :1]] * before + [x] + [x[:, :, -1:]] * after, dim=2)


def per_frame(op: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D op to every frame of a (B, C, T, H, W) video by folding time into the batch."""
    batch = x.shape[0]
    frames = x.transpose(1, 2).flatten(0, 1)  # (B*T, C, H, W)
    return op(frames).unflatten(0, (batch, -1)).transpose(1, 2)


class TimePaddedConv3d(nn.Module):
    """Conv3d with zero spatial padding and edge-frame temporal padding (the LTX 'causal conv')."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, causal: bool = False):
        super().__init__()
        self.causal = causal
        self.time_pad = kernel_size - 1
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, padding=(0, kernel_size // 2, kernel_size // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.causal:
            x = pad_time(x, self.time_pad, 0)
        else:
            x = pad_time(x, self.time_pad // 2, self.time_pad // 2)
        return self.conv(x)


class DepthwiseSeparableConv3d(nn.Module):
    """Depthwise k³ conv then pointwise 1³ conv; time is always padded symmetrically (upstream ignores `causal`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.time_pad = (kernel_size - 1) // 2
        self.depthwise_conv = nn.Conv3d(in_channels, in_channels, kernel_size, groups=in_channels,
                                        padding=(0, kernel_size // 2, kernel_size // 2))
        self.pointwise_conv = nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(pad_time(x, self.time_pad, self.time_pad)))


def _make_conv(in_channels: int, out_channels: int, kernel_size: int, *, depthwise: bool, causal: bool) -> nn.Module:
    if depthwise:
        return DepthwiseSeparableConv3d(in_channels, out_channels, kernel_size)
    return TimePaddedConv3d(in_channels, out_channels, kernel_size, causal)


class ResnetBlock3d(nn.Module):
    """RMS → act → conv → RMS → SiLU → conv, plus a (LayerNorm → 1³ conv) shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, *, causal: bool, dw_kernel_size: int | None,
                 relu_first: bool = False, eps: float = 1e-6):
        super().__init__()
        depthwise = dw_kernel_size is not None
        kernel = dw_kernel_size if depthwise else 3
        self.first_activation = F.relu if relu_first else F.silu
        self.conv1 = _make_conv(in_channels, out_channels, kernel, depthwise=depthwise, causal=causal)
        self.conv2 = _make_conv(out_channels, out_channels, kernel, depthwise=depthwise, causal=causal)
        self.norm3 = self.conv_shortcut = None
        if in_channels != out_channels:
            self.norm3 = nn.LayerNorm(in_channels, eps=eps)
            self.conv_shortcut = _make_conv(in_channels, out_channels, 1, depthwise=depthwise, causal=causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.first_activation(channel_rms_norm(x)))
        h = self.conv2(F.silu(channel_rms_norm(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(self.norm3(x.movedim(1, -1)).movedim(-1, 1))
        return h + x


class Upsampler3d(nn.Module):
    """'Decoupled 3-D pixel shuffle': Conv3d C→8C, split channels ×2 into time, pixel_shuffle(2) per frame, drop
    the first frame, so (C, t, h, w) → (C, 2t-1, 2h, 2w)."""

    def __init__(self, channels: int, causal: bool):
        super().__init__()
        self.conv = TimePaddedConv3d(channels, channels * 8, 3, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)  # channel index = c4 * 2 + dt, where c4 indexes the 4C channels the pixel shuffle consumes
        x = x.unflatten(1, (-1, 2)).transpose(2, 3).flatten(2, 3)  # (B, 4C, 2T, H, W), frame index = t * 2 + dt
        x = per_frame(lambda frames: F.pixel_shuffle(frames, 2), x)
        return x[:, :, 1:]


class MidBlock3d(nn.Module):
    def __init__(self, channels: int, num_layers: int, *, causal: bool, dw_kernel_size: int | None, eps: float):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3d(channels, channels, causal=causal, dw_kernel_size=dw_kernel_size, eps=eps)
            for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return x


class UpBlock3d(nn.Module):
    """Optional width change (`conv_in` resnet), optional 2×2×2 upsampler, then `num_layers` resnets."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, *, upsample: bool, causal: bool,
                 dw_kernel_size: int | None, eps: float):
        super().__init__()
        self.conv_in = None
        if in_channels != out_channels:
            self.conv_in = ResnetBlock3d(in_channels, out_channels, causal=causal, dw_kernel_size=dw_kernel_size,
                                         eps=eps)
        self.upsamplers = nn.ModuleList([Upsampler3d(out_channels, causal)]) if upsample else None
        self.resnets = nn.ModuleList(
            ResnetBlock3d(out_channels, out_channels, causal=causal, dw_kernel_size=dw_kernel_size,
                          relu_first=upsample, eps=eps)
            for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_in is not None:
            x = self.conv_in(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        for resnet in self.resnets:
            x = resnet(x)
        return x


class PixelShuffleUpsampler2d(nn.Module):
    """Per-frame Conv2d 3×3 (C→C) then pixel_shuffle(2): (C, h, w) → (C/4, 2h, 2w). Replaces part of unpatchify."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame(lambda frames: F.pixel_shuffle(self.conv(frames), 2), x)


class TurboVAEDDecoder(nn.Module):
    """The `decoder.*` part of upstream `AutoencoderKLTurboVAED` (see the module docstring)."""

    def __init__(self, cfg: TurboVAEDConfig):
        super().__init__()
        channels = tuple(reversed(cfg.decoder_block_out_channels))
        layers = tuple(reversed(cfg.decoder_layers_per_block))
        depthwise = tuple(reversed(cfg.decoder_is_dw_conv))
        upsample = tuple(reversed(cfg.spatio_temporal_scaling))
        if not (len(layers) == len(depthwise) == len(channels) + 1 and len(upsample) == len(channels)):
            raise ValueError(f"inconsistent Turbo-VAED block lists in {cfg}")
        self.num_2d_stages = {1: 0, 2: 1, 4: 2}.get(cfg.patch_size, -1)
        if self.num_2d_stages < 0:
            raise ValueError(f"Turbo-VAED supports patch_size 1, 2 or 4, not {cfg.patch_size}")
        final = channels[-1]
        if final % 4 ** self.num_2d_stages:
            raise ValueError(f"last block width {final} does not survive {self.num_2d_stages} pixel_shuffle(2) stages")

        def dw(i: int) -> int | None:
            return cfg.decoder_dw_kernel_size if depthwise[i] else None

        causal, eps = cfg.decoder_causal, cfg.resnet_norm_eps
        self.conv_in = TimePaddedConv3d(cfg.latent_channels, channels[0], 3, causal)
        self.mid_block = MidBlock3d(channels[0], layers[0], causal=causal, dw_kernel_size=dw(0), eps=eps)
        self.up_blocks = nn.ModuleList(
            UpBlock3d(channels[max(i - 1, 0)], channels[i], layers[i + 1], upsample=upsample[i], causal=causal,
                      dw_kernel_size=dw(i + 1), eps=eps)
            for i in range(len(channels)))
        width = final
        for stage in range(1, self.num_2d_stages + 1):  # attribute names upsampler2d_1, upsampler2d_2 as upstream
            setattr(self, f"upsampler2d_{stage}", PixelShuffleUpsampler2d(width))
            width //= 4
        self.conv_out = TimePaddedConv3d(width, cfg.out_channels, 3, causal)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for up_block in self.up_blocks:
            x = up_block(x)
        for stage in range(1, self.num_2d_stages + 1):
            x = getattr(self, f"upsampler2d_{stage}")(F.silu(channel_rms_norm(x)))
        return self.conv_out(F.silu(channel_rms_norm(x)))


class TurboVAED(nn.Module):
    """Latent (B, 128, t, h, w) → video (B, 3, 1+8(t-1), 32h, 32w) in about [-1, 1]; equals upstream `decode(z)`
    without tiling. Load a released checkpoint (a bare decoder state dict) with `model.decoder.load_state_dict`."""

    def __init__(self, cfg: TurboVAEDConfig):
        super().__init__()
        self.cfg = cfg
        self.decoder = TurboVAEDDecoder(cfg)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.cfg.spatio_temporal_scaling)

    @property
    def spatial_factor(self) -> int:
        return self.cfg.patch_size * 2 ** sum(self.cfg.spatio_temporal_scaling)

    def output_shape(self, latent_shape: tuple[int, ...]) -> tuple[int, int, int, int, int]:
        b, _, t, h, w = latent_shape
        return (b, self.cfg.out_channels, 1 + self.temporal_factor * (t - 1), self.spatial_factor * h,
                self.spatial_factor * w)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 5 or z.shape[1] != self.cfg.latent_channels:
            raise BadInputError(f"Turbo-VAED expects a latent (B, {self.cfg.latent_channels}, t, h, w), "
                                f"got {tuple(z.shape)}")
        return self.decoder(z)

    @staticmethod
    def expected_shapes(cfg: TurboVAEDConfig) -> dict[str, tuple[int, ...]]:
        """State-dict key → shape for a config, built on the meta device (no memory, no download)."""
        with torch.device("meta"):
            return state_dict_shapes(TurboVAED(cfg))


__all__ = ["TurboVAED", "TurboVAEDDecoder", "channel_rms_norm", "pad_time", "RMS_EPS"]
