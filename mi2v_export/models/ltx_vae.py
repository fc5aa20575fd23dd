"""LTX-Video 0.9.0 causal video VAE (architecture.md §5.1–5.2) through diffusers' `AutoencoderKLLTXVideo`.

MobileI2V encodes the conditioning image with this VAE (and upstream decodes with it too; the released pipeline
swaps the decoder for Turbo-VAED). No re-implementation is needed: diffusers 0.42.1 builds exactly the 0.9.0
network. The config is built here from `LTXVAEConfig` plus the fixed 0.9.0 arguments — never fetched from a hub —
so the expected checkpoint keys and shapes of any preset are known just by building the module.

Key layout: `LTXEncoder` holds `self.encoder` and `LTXDecoder` holds `self.decoder`, so their state-dict keys are
`encoder.*` / `decoder.*`, the same as in a diffusers safetensors file of the whole VAE (which also has the unused
`latents_mean` / `latents_std` buffers).

Lowering notes (shared/spec/vae-export.md; the exporters handle these, nothing is rewritten here):
  * B1 — the patchify / unpatchify and the 0.9.0 depth-to-space upsampler use rank-8 `reshape`/`permute`; the
    XNNPACK runtime allows at most 6 dims → rewrite as rank-≤5 chains ("shuffle_rank5"; Core ML lowers them itself).
  * B2 — `nn.Conv3d` has no XNNPACK and no portable ExecuTorch kernel for 5-D inputs → fold into Conv2d over
    frames with the temporal taps in the input channels ("conv3d_as_conv2d").
  * B3 — `LTXVideoCausalConv3d` pads time with `torch.concatenate`, left as `aten.concatenate` by `torch.export`;
    coremltools has no converter → use `torch.cat` ("causal_pad_cat") or alias it to `cat`.
  * B4 — temporal replicate padding is `x[:, :, :1].repeat(...)`, a repeat by 0 for the 1³ shortcut conv, which
    Core ML rejects → build the padding with `cat` of edge slices and skip it when kt = 1 ("causal_pad_cat").
  * B5 — encoding a single image (T = 1) turns no-op slices into `aten.alias`, unknown to coremltools → register
    `alias` as `noop`.
  * RMSNorm (eps 1e-8, `pow(2).mean(-1)` + `rsqrt`) stays on portable kernels in ExecuTorch ("rms_norm_view") and can
    overflow fp16 on Core ML for |x| > 256 ("rms_norm_fp16": use `F.rms_norm`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import BadInputError
from ..presets import LTXVAEConfig
from ..shapes import geometry
from .seeded import state_dict_shapes

# Arguments of the 0.9.0 VAE that `LTXVAEConfig` does not vary (diffusers' convert_ltx_to_diffusers, "0.9.0").
LTX_090_FIXED_ARGS = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("LTXVideoDownBlock3D",) * 4,
    spatio_temporal_scaling=(True, True, True, False),
    decoder_spatio_temporal_scaling=(True, True, True, False),
    decoder_inject_noise=(False, False, False, False, False),
    downsample_type=("conv", "conv", "conv", "conv"),
    upsample_residual=(False, False, False, False),
    upsample_factor=(1, 1, 1, 1),
    timestep_conditioning=False,
    patch_size=4,
    patch_size_t=1,
    resnet_norm_eps=1e-6,
    encoder_causal=True,
    decoder_causal=False,
)


def ltx_vae_kwargs(cfg: LTXVAEConfig) -> dict:
    """The full `AutoencoderKLLTXVideo(**kwargs)` argument set for a config."""
    return dict(
        LTX_090_FIXED_ARGS,
        latent_channels=cfg.latent_channels,
        block_out_channels=tuple(cfg.block_out_channels),
        decoder_block_out_channels=tuple(cfg.decoder_block_out_channels),
        layers_per_block=tuple(cfg.layers_per_block),
        decoder_layers_per_block=tuple(cfg.decoder_layers_per_block),
        scaling_factor=cfg.scaling_factor,
    )


def build_ltx_vae(cfg: LTXVAEConfig) -> nn.Module:
    """The whole diffusers `AutoencoderKLLTXVideo` (randomly initialised; load 0.9.0 weights with
    `load_state_dict`). diffusers is imported here, when a VAE is built: importing it costs about 2.5 s (it brings
    transformers and torchao), which every `mi2v plan` and every denoiser-only command would otherwise pay."""
    from diffusers import AutoencoderKLLTXVideo

    return AutoencoderKLLTXVideo(**ltx_vae_kwargs(cfg))


def _check_video(image: torch.Tensor) -> None:
    if image.dim() != 5 or image.shape[1] != 3:
        raise BadInputError(f"the LTX encoder expects a video (B, 3, F, H, W) in [-1, 1], got {tuple(image.shape)}")
    _, _, frames, height, width = image.shape
    geometry(int(height), int(width), int(frames))  # raises BadInputError for H/W not multiple of 4, F != 8k+1


class LTXEncoder(nn.Module):
    """Video/image (B, 3, F, H, W) in [-1, 1] → posterior mean latent (B, 128, 1+(F-1)/8, ceil(H/32), ceil(W/32)).

    The diffusers encoder returns 2·128 "moments": 128 means, then one shared log-variance channel (its 129th
    conv output) repeated 128 times. `forward` returns the mean, the deterministic choice for export; `sample`
    draws like upstream MobileI2V (`latent_dist.sample()`), using diffusers' own DiagonalGaussianDistribution.
    """

    def __init__(self, cfg: LTXVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = _take_submodule(cfg, "encoder")

    def moments(self, image: torch.Tensor) -> torch.Tensor:
        _check_video(image)
        return self.encoder(image)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.moments(image)[:, : self.cfg.latent_channels]

    def sample(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution  # see build_ltx_vae

        return DiagonalGaussianDistribution(self.moments(image)).sample(generator)

    @staticmethod
    def expected_shapes(cfg: LTXVAEConfig) -> dict[str, tuple[int, ...]]:
        """State-dict key → shape (`encoder.*`), built on the meta device."""
        with torch.device("meta"):
            return state_dict_shapes(LTXEncoder(cfg))


class LTXDecoder(nn.Module):
    """Latent (B, 128, t, h, w) → video (B, 3, 1+8(t-1), 32h, 32w) in about [-1, 1], uncropped (720p → 736 rows).

    Same as diffusers `vae.decode(z)` without tiling; MobileI2V's scaling factor is 1.0, so no rescaling."""

    def __init__(self, cfg: LTXVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.decoder = _take_submodule(cfg, "decoder")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 5 or z.shape[1] != self.cfg.latent_channels:
            raise BadInputError(f"the LTX decoder expects a latent (B, {self.cfg.latent_channels}, t, h, w), "
                                f"got {tuple(z.shape)}")
        return self.decoder(z)

    @staticmethod
    def expected_shapes(cfg: LTXVAEConfig) -> dict[str, tuple[int, ...]]:
        """State-dict key → shape (`decoder.*`), built on the meta device."""
        with torch.device("meta"):
            return state_dict_shapes(LTXDecoder(cfg))


def _take_submodule(cfg: LTXVAEConfig, name: str) -> nn.Module:
    """Build the whole VAE on the meta device (free), keep one half and give it real, freshly initialised storage.

    Going through `AutoencoderKLLTXVideo` guarantees the half is wired exactly as in the full model, and the meta
    build skips initialising the other half (for the real config that is ~200 M parameters). Inside an enclosing
    `with torch.device("meta")` the half simply stays on meta.
    """
    with torch.device("meta"):
        part = getattr(build_ltx_vae(cfg), name)
    target = torch.empty(0).device  # honours an enclosing `with torch.device(...)`
    if target.type == "meta":
        return part
    part = part.to_empty(device=target)
    for module in part.modules():  # default PyTorch init, as a plain constructor would give
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return part


__all__ = ["LTX_090_FIXED_ARGS", "ltx_vae_kwargs", "build_ltx_vae", "LTXEncoder", "LTXDecoder"]
