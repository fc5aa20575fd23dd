"""Video VAE modules: Turbo-VAED golden parity, LTX encoder/decoder vs diffusers, shapes, seeded weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mi2v_export.errors import BadInputError
from mi2v_export.models.ltx_vae import LTXDecoder, LTXEncoder, build_ltx_vae
from mi2v_export.models.seeded import parameter_count, seeded_state_dict, state_dict_shapes
from mi2v_export.models.turbo_vaed import TurboVAED
from mi2v_export.presets import PRESETS

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
REAL = PRESETS["mobilei2v-270m"]
TINY = PRESETS["tiny"]
# (frames, height, width) → latent (t, h, w)
VIDEO_GRIDS = [((9, 128, 192), (2, 4, 6)), ((17, 96, 160), (3, 3, 5))]


def _randn(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# ---------------------------------------------------------------- seeded weights

@pytest.mark.unit
def test_seeded_weights_are_deterministic_and_per_key():
    shapes = {"a.conv.weight": (8, 4, 3, 3), "a.conv.bias": (8,), "b.norm3.weight": (16,), "b.norm3.bias": (16,)}
    first = seeded_state_dict(shapes, seed=0)
    again = seeded_state_dict(dict(reversed(list(shapes.items()))), seed=0)  # order must not matter
    assert list(first) == list(shapes)
    for key in shapes:
        assert first[key].dtype == torch.float32 and tuple(first[key].shape) == shapes[key]
        assert torch.equal(first[key], again[key])
        assert not torch.equal(first[key], seeded_state_dict(shapes, seed=1)[key])
    assert abs(first["b.norm3.weight"].mean().item() - 1.0) < 0.1  # norm weights around 1
    assert first["b.norm3.bias"].abs().max().item() < 1.0  # other vectors: 0.1 · normal
    assert first["a.conv.weight"].std().item() == pytest.approx(1 / 6, rel=0.3)  # fan-in 36 → std 1/6


# ---------------------------------------------------------------- Turbo-VAED

def test_turbo_vaed_golden_parity():
    meta_path, npz_path = GOLDEN / "turbo_vaed_seed0.json", GOLDEN / "turbo_vaed_seed0.npz"
    if not npz_path.exists():
        pytest.skip(f"golden file {npz_path} not present")
    meta = json.loads(meta_path.read_text())
    golden_shapes = {key: tuple(shape) for key, shape in meta["keys"].items()}
    assert TurboVAED.expected_shapes(REAL.turbo_vaed) == golden_shapes  # same 86 keys, same order

    model = TurboVAED(REAL.turbo_vaed).eval()
    model.load_state_dict(seeded_state_dict(golden_shapes, meta["seed"]), strict=True)
    assert parameter_count(model) == 41_896_023

    reference = np.load(npz_path)
    z = torch.from_numpy(reference["z"])
    assert torch.equal(z, _randn((1, 128, *meta["latent_thw"]), meta["seed"] + 1))
    with torch.no_grad():
        video = model(z)
    expected = torch.from_numpy(reference["video"])
    assert tuple(video.shape) == tuple(meta["video_shape"]) == model.output_shape(tuple(z.shape))
    assert _rel_l2(video, expected) <= 1e-4
    assert (video - expected).abs().max().item() <= 1e-3


@pytest.mark.parametrize(("video", "latent"), VIDEO_GRIDS)
def test_tiny_turbo_vaed_shapes(video, latent):
    cfg = TINY.turbo_vaed
    model = TurboVAED(cfg).eval()
    model.load_state_dict(seeded_state_dict(TurboVAED.expected_shapes(cfg), seed=3), strict=True)
    with torch.no_grad():
        out = model(_randn((1, 128, *latent), 4))
    assert tuple(out.shape) == (1, 3, *video)
    assert torch.isfinite(out).all()


@pytest.mark.unit
def test_turbo_vaed_720p_geometry_on_meta():
    with torch.device("meta"):
        model = TurboVAED(REAL.turbo_vaed)
        out = model(torch.empty(1, 128, 3, 23, 40))
    assert tuple(out.shape) == (1, 3, 17, 736, 1280)


@pytest.mark.unit
def test_turbo_vaed_rejects_wrong_latent():
    with pytest.raises(BadInputError):
        TurboVAED(TINY.turbo_vaed)(torch.zeros(1, 64, 2, 4, 6))


# ---------------------------------------------------------------- LTX encoder / decoder

@pytest.fixture(scope="module")
def tiny_ltx():
    """Seeded tiny LTX encoder + decoder, and the whole diffusers VAE holding the same weights."""
    cfg = TINY.ltx_vae
    encoder, decoder = LTXEncoder(cfg).eval(), LTXDecoder(cfg).eval()
    encoder.load_state_dict(seeded_state_dict(LTXEncoder.expected_shapes(cfg), seed=5), strict=True)
    decoder.load_state_dict(seeded_state_dict(LTXDecoder.expected_shapes(cfg), seed=5), strict=True)
    vae = build_ltx_vae(cfg).eval()
    missing, unexpected = vae.load_state_dict({**encoder.state_dict(), **decoder.state_dict()}, strict=False)
    assert sorted(missing) == ["latents_mean", "latents_std"] and not unexpected
    return encoder, decoder, vae


@pytest.mark.parametrize(("video", "latent"), VIDEO_GRIDS)
def test_tiny_ltx_shapes_and_match_diffusers(tiny_ltx, video, latent):
    encoder, decoder, vae = tiny_ltx
    image = _randn((1, 3, *video), 6).clamp(-1, 1)
    with torch.no_grad():
        mean = encoder(image)
        assert tuple(mean.shape) == (1, 128, *latent)
        assert torch.equal(mean, vae.encode(image).latent_dist.mean)
        out = decoder(mean)
        assert tuple(out.shape) == (1, 3, *video)
        assert torch.equal(out, vae.decode(mean).sample)


def test_ltx_encoder_mean_vs_sample(tiny_ltx):
    encoder, _, vae = tiny_ltx
    image = _randn((1, 3, 9, 128, 192), 7).clamp(-1, 1)
    with torch.no_grad():
        moments = encoder.moments(image)
        mean = encoder(image)
        sample = encoder.sample(image, torch.Generator().manual_seed(8))
        upstream = vae.encode(image).latent_dist.sample(torch.Generator().manual_seed(8))
    assert moments.shape[1] == 256
    assert torch.equal(moments[:, 128:], moments[:, 128:129].expand_as(moments[:, 128:]))  # one shared logvar
    assert torch.equal(sample, upstream)
    assert not torch.allclose(sample, mean)
    std = torch.exp(0.5 * moments[:, 128:129].clamp(-30.0, 20.0))
    noise = (sample - mean) / std
    assert torch.allclose(noise, _randn(mean.shape, 8), atol=1e-4)


@pytest.mark.unit
@pytest.mark.parametrize(("height", "width", "frames"), [(130, 192, 9), (128, 190, 9), (128, 192, 8)])
def test_ltx_encoder_rejects_bad_geometry(tiny_ltx, height, width, frames):
    encoder = tiny_ltx[0]
    with pytest.raises(BadInputError):
        encoder(torch.zeros(1, 3, frames, height, width))


@pytest.mark.unit
def test_ltx_720p_geometry_and_real_key_shapes():
    cfg = REAL.ltx_vae
    encoder_shapes, decoder_shapes = LTXEncoder.expected_shapes(cfg), LTXDecoder.expected_shapes(cfg)
    assert all(k.startswith("encoder.") for k in encoder_shapes)
    assert all(k.startswith("decoder.") for k in decoder_shapes)
    assert encoder_shapes["encoder.conv_out.conv.weight"] == (129, 512, 3, 3, 3)
    with torch.device("meta"):
        vae = build_ltx_vae(cfg)
        whole = {k: v for k, v in state_dict_shapes(vae).items() if not k.startswith("latents_")}
        assert {**encoder_shapes, **decoder_shapes} == whole
        encoder, decoder = LTXEncoder(cfg), LTXDecoder(cfg)
        assert (parameter_count(encoder), parameter_count(decoder)) == (180_404_353, 238_789_296)
        latent = encoder(torch.empty(1, 3, 17, 720, 1280))
        video = decoder(torch.empty(1, 128, 3, 23, 40))
    assert tuple(latent.shape) == (1, 128, 3, 23, 40)
    assert tuple(video.shape) == (1, 3, 17, 736, 1280)
