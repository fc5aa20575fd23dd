"""The tile grid, the measured receptive field and the stitching loop (mi2v_export/tiling.py,
mi2v_export/models/receptive.py): exact when the halo covers the field, blended and measured when smaller."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mi2v_export import tiling
from mi2v_export.errors import BadInputError
from mi2v_export.models.receptive import decoder_probe, receptive_field

pytestmark = pytest.mark.unit


class ToyDecoder(nn.Module):
    """Three 3x3 convs at latent resolution (field 3), a ×4 nearest upsample and one 3x3 conv at ×4 (field +1/4):
    the field is 4 latent pixels each side when rounded up to whole latent pixels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.low = nn.Sequential(*[nn.Conv2d(4, 4, 3, padding=1) for _ in range(3)])
        self.high = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, z):
        b, c, t, h, w = z.shape
        x = z.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        x = self.high(nn.functional.interpolate(torch.tanh(self.low(x)), scale_factor=4))
        return x.reshape(b, t, 2, 4 * h, 4 * w).permute(0, 2, 1, 3, 4)


def test_the_measured_field_of_a_known_stack():
    assert receptive_field(ToyDecoder(), decoder_probe(4), 1, 4) == 4


def test_a_global_operation_is_refused():
    class Global(nn.Module):
        def forward(self, z):
            return z - z.mean(dim=(-2, -1), keepdim=True)

    with pytest.raises(BadInputError, match="cannot be tiled exactly"):
        receptive_field(Global(), decoder_probe(4), 1, 1)


@pytest.mark.parametrize("frame,tile", [((13, 17), (4, 5)), ((9, 9), (3, 3)), ((12, 20), (12, 7))])
def test_cores_partition_the_frame_and_windows_stay_inside(frame, tile):
    grid = tiling.plan_grid(frame, tile, halo=2, receptive_field=2)
    for axis in (grid.rows, grid.cols):
        covered = np.zeros(axis.frame, int)
        for start, win in zip(axis.starts, axis.windows):
            covered[start:min(start + axis.tile, axis.frame)] += 1
            assert 0 <= win and win + axis.window <= axis.frame
        assert (covered == 1).all()
    assert grid.exact


def test_exact_halo_reproduces_the_whole_frame_and_a_short_one_is_blended():
    model = ToyDecoder().eval()
    z = torch.randn(1, 4, 2, 19, 23)
    with torch.no_grad():
        whole = model(z).numpy()
        run = lambda a: model(torch.from_numpy(a)).numpy()  # noqa: E731
        exact = tiling.run_tiled(run, z.numpy(), tiling.plan_grid((19, 23), (5, 6), 4, 4), 1, 4)
        short = tiling.run_tiled(run, z.numpy(), tiling.plan_grid((19, 23), (5, 6), 1, 4), 1, 4)
    assert exact.shape == whole.shape
    assert np.linalg.norm(exact - whole) / np.linalg.norm(whole) < 1e-6
    err = np.linalg.norm(short - whole) / np.linalg.norm(whole)
    assert 1e-6 < err < 0.5


def test_an_encoder_direction_stitches_latents():
    """Video in (×4 pixels per grid unit), latent out: an average pool by 4 then a 3x3 conv (field 1)."""
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 2, 3, padding=1)
    model = lambda a: conv(nn.functional.avg_pool2d(torch.from_numpy(a), 4)).detach().numpy()  # noqa: E731
    x = np.random.default_rng(0).standard_normal((1, 3, 40, 52)).astype(np.float32)
    grid = tiling.plan_grid((10, 13), (3, 4), 1, 1)
    out = tiling.run_tiled(model, x, grid, 4, 1)
    np.testing.assert_allclose(out, model(x), rtol=1e-5, atol=1e-6)


def test_the_record_round_trips_and_refuses_another_frame():
    plan = tiling.plan_stage((23, 40), (46, 80), (736, 1280), (256, 256), 3)
    record = plan.record()
    assert record["tile"] == [8, 8] and record["grid"] == [3, 5] and record["exact"]
    assert record["scale_in"] == 1 and record["scale_out"] == 2 and record["unit_px"] == [32, 32]
    assert tiling.stage_from_record(record, (23, 40)) == plan
    assert tiling.tile_count(record) == 15
    with pytest.raises(BadInputError, match="export it again"):
        tiling.stage_from_record(record, (12, 40))


def test_a_downsampling_stage_plans_on_its_output_grid_and_keeps_a_ragged_axis_whole():
    """The 720p encoder's last stage: 45 rows → 23 (ceil division) cannot split rows; 80 columns → 40 can."""
    plan = tiling.plan_stage((45, 80), (23, 40), (720, 1280), (256, 256), 2)
    assert plan.scale_in == 2 and plan.scale_out == 1
    assert plan.grid.rows.count == 1 and plan.grid.cols.count > 1
    assert plan.unit_px == (None, 32)
    x = np.random.default_rng(0).standard_normal((1, 2, 1, 45, 80)).astype(np.float32)

    def pool(w):  # a 2x2 stride-2 average with a ceil-divided last row: a field of 0 output units
        h = (w.shape[-2] + 1) // 2
        padded = np.concatenate([w, np.zeros_like(w[..., :1, :])], axis=-2)[..., : 2 * h, :]
        return padded.reshape(*w.shape[:-2], h, 2, w.shape[-1] // 2, 2).mean(axis=(-3, -1))
    assert np.allclose(tiling.run_tiled(pool, x, plan.grid, plan.scale_in, plan.scale_out), pool(x))


@pytest.mark.parametrize("text", ["100x64", "64", "0x64", "axb", "-32x64"])
def test_bad_tiles_are_one_line_errors(text):
    with pytest.raises(BadInputError, match="--tile"):
        tiling.parse_tile(text)


def test_a_tile_larger_than_the_frame_is_refused():
    assert tiling.parse_tile("256x320") == (256, 320)
    with pytest.raises(BadInputError, match="larger than"):
        tiling.check_tile_fits((256, 320), (128, 192))
    tiling.check_tile_fits((736, 1280), (720, 1280))  # 720 rows are 23 latent rows: 736 is the whole frame
    with pytest.raises(BadInputError, match="736x1280 in whole latent pixels"):
        tiling.check_tile_fits((768, 1280), (720, 1280))
