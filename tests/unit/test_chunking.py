"""Time chunks (mi2v_export/chunking.py, issue 24) on numpy stand-ins for the VAE's temporal layers: a stage that
doubles the frame rate (drop the first frame, as the temporal upsamplers do), one that halves it keeping the first
frame alone (the causal encoder), and one that keeps it, each with a temporal field of a few frames. Chunked and
stitched, each equals its whole-clip run bit for bit; plans that cannot split say so; records round-trip and a
record for another clip is refused."""

from __future__ import annotations

import numpy as np
import pytest

from mi2v_export import chunking
from mi2v_export.errors import BadInputError


def _smooth(x: np.ndarray, field: int) -> np.ndarray:
    """A temporal box filter of `field` frames each side, edges replicated (a stack of temporal convolutions)."""
    pad = np.concatenate([x[..., :1, :, :]] * field + [x] + [x[..., -1:, :, :]] * field, axis=-3)
    return sum(pad[..., k:k + x.shape[-3], :, :] * (k + 1) for k in range(2 * field + 1))


def up2(x: np.ndarray, field: int = 2) -> np.ndarray:
    y = np.repeat(_smooth(x, field), 2, axis=-3)[..., 1:, :, :]  # n frames → 2(n - 1) + 1
    return _smooth(y, 1)


def down2(x: np.ndarray, field: int = 2) -> np.ndarray:
    y = _smooth(x, field)
    return np.concatenate([y[..., :1, :, :], (y[..., 1::2, :, :] + y[..., 2::2, :, :]) / 2], axis=-3)


def same(x: np.ndarray) -> np.ndarray:
    return _smooth(x, 3)


@pytest.mark.parametrize("stage, field, t_in", [(up2, 3, 17), (down2, 3, 33), (same, 3, 33)])
@pytest.mark.parametrize("chunk", [8, 16])
def test_a_chunked_stage_equals_its_whole_clip(stage, field, t_in, chunk):
    x = np.random.default_rng(0).standard_normal((1, 2, t_in, 3, 4)).astype(np.float32)
    whole = stage(x)
    plan = chunking.plan_time(t_in, whole.shape[-3], 1 + 8 * 4, chunk, field + 1)
    assert plan is not None and plan.count > 1
    got = chunking.run_chunked(stage, x, plan)
    assert got.shape == whole.shape
    np.testing.assert_array_equal(got, whole)


def test_a_halo_short_of_the_field_is_not_exact():
    """The plan's halo is what makes it exact: the same loop with half the field differs (the test above is not
    passing by accident)."""
    x = np.random.default_rng(1).standard_normal((1, 2, 33, 3, 4)).astype(np.float32)
    plan = chunking.plan_time(33, 65, 65, 8, 1)
    assert not np.allclose(chunking.run_chunked(up2, x, plan), up2(x))


def test_time_scales_and_plans_that_cannot_split():
    assert chunking.time_scales(9, 17) == (1, 2) and chunking.time_scales(65, 9) == (8, 1)
    assert chunking.time_scales(5, 5) == (1, 1)
    assert chunking.time_scales(1, 9) is None and chunking.time_scales(3, 8) is None
    assert chunking.plan_time(3, 5, 17, 8, 6) is None  # the field covers the clip: one window
    assert chunking.plan_time(1, 1, 1, 8, 0) is None


def test_a_record_round_trips_and_another_clip_is_refused():
    plan = chunking.plan_time(33, 65, 65, 16, 5)
    back = chunking.time_from_record(plan.record(), 33)
    assert back == plan and chunking.time_from_record(None, 33) is None
    with pytest.raises(BadInputError, match="chunked in time for 33 input frames, not 17"):
        chunking.time_from_record(plan.record(), 17)
    with pytest.raises(BadInputError, match="does not match its own plan"):
        chunking.time_from_record({**plan.record(), "window": plan.axis.window + 1}, 33)


@pytest.mark.parametrize("frames", [0, 12, -8])
def test_a_chunk_that_is_not_whole_latent_frames_is_refused(frames):
    with pytest.raises(BadInputError, match="positive multiple of 8"):
        chunking.check_chunk(frames)
