"""Typed presets: model dimensions and default video size for each named configuration.

`mobilei2v-270m` is the released model (upstream `Mobiledit_300M_P1_D16` + LTX-Video 0.9.0 VAE + Turbo-VAED-LTX).
`tiny` runs the same code paths at toy size for fast tests: head dim 72, the linear/softmax block pattern, 128
latent channels and the same 32x spatial / 8x temporal VAE compression, so every shape rule is exercised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import BadInputError

LATENT_CHANNELS = 128


@dataclass(frozen=True)
class DenoiserConfig:
    hidden_size: int = 1152
    depth: int = 16
    num_heads: int = 16  # head dim = hidden_size // num_heads = 72 (RoPE3D needs it divisible by 6)
    softmax_blocks: tuple[int, ...] = (7, 15)  # all other blocks use ReLU linear attention (LiteLA)
    in_channels: int = LATENT_CHANNELS
    mlp_ratio: float = 2.5
    frequency_embedding_size: int = 256
    caption_channels: int = 896  # text path: keys kept loadable, never computed
    model_max_length: int = 300
    rope_scales: tuple[float, float, float] = (1.0, 1.4375, 2.5)  # trained (t, h, w) RoPE scales
    rope_theta: float = 10000.0
    linear_attn_eps: float = 1e-8
    qk_norm_eps: float = 1e-5
    norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def ffn_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)


@dataclass(frozen=True)
class LTXVAEConfig:
    """Arguments of diffusers' `AutoencoderKLLTXVideo` (LTX-Video 0.9.0 values by default)."""

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    decoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: tuple[int, ...] = (4, 3, 3, 3, 4)
    decoder_layers_per_block: tuple[int, ...] = (4, 3, 3, 3, 4)
    latent_channels: int = LATENT_CHANNELS
    scaling_factor: float = 1.0


@dataclass(frozen=True)
class TurboVAEDConfig:
    """Turbo-VAED decoder (`configs/Turbo-VAED-LTX.json` upstream)."""

    decoder_block_out_channels: tuple[int, ...] = (64, 128, 256, 512)
    decoder_layers_per_block: tuple[int, ...] = (3, 2, 3, 1, 1)
    decoder_is_dw_conv: tuple[bool, ...] = (False, False, False, True, True)
    decoder_dw_kernel_size: int = 5
    spatio_temporal_scaling: tuple[bool, ...] = (True, True, True, False)
    latent_channels: int = LATENT_CHANNELS
    out_channels: int = 3
    patch_size: int = 4
    resnet_norm_eps: float = 1e-6
    decoder_causal: bool = False


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    denoiser: DenoiserConfig
    ltx_vae: LTXVAEConfig
    turbo_vaed: TurboVAEDConfig
    height: int
    width: int
    frames: int
    extra: dict = field(default_factory=dict)
    # The largest video any command accepts for this preset (mi2v_export/bounds.py): 2048 px a side covers 1080p
    # and portrait 2K; 121 frames is 7 s at 17 fps. Bigger requests are refused at once, before any work.
    max_side: int = 2048
    max_frames: int = 121


PRESETS: dict[str, Preset] = {
    "mobilei2v-270m": Preset(
        name="mobilei2v-270m",
        description="MobileI2V 270M denoiser + LTX-Video 0.9.0 VAE + Turbo-VAED-LTX decoder, 720p",
        denoiser=DenoiserConfig(),
        ltx_vae=LTXVAEConfig(),
        turbo_vaed=TurboVAEDConfig(),
        height=720,
        width=1280,
        frames=17,
    ),
    "tiny": Preset(
        name="tiny",
        description="toy-size model on the same code paths (head dim 72, linear/softmax pattern), for tests",
        denoiser=DenoiserConfig(hidden_size=144, depth=4, num_heads=2, softmax_blocks=(1, 3), caption_channels=32,
                                model_max_length=8),
        ltx_vae=LTXVAEConfig(block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(8, 16, 32, 32),
                             layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1)),
        # last block 64 wide like the real one, so the two pixel_shuffle(2) stages end at 4 channels (64 → 16 → 4);
        # with 16 they would end at 1 channel, where the final channel-RMS norm degenerates to sign(x)
        turbo_vaed=TurboVAEDConfig(decoder_block_out_channels=(64, 32, 32, 64), decoder_layers_per_block=(1, 1, 1, 1, 1)),
        height=128,
        width=192,
        frames=9,
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise BadInputError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
