"""Row streaming (mi2v_export/streaming.py) on numpy band models: the streamed chain equals the chain run whole,
for steps that keep, double and halve the rows, and no map between the steps is ever whole."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from mi2v_export import streaming, tiling
from mi2v_export.errors import BadInputError


def conv_rows(taps: np.ndarray):
    """A vertical convolution with zero padding: an exact band model of field len(taps) // 2."""
    pad = len(taps) // 2
    def run(x: np.ndarray) -> np.ndarray:
        p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(pad, pad), (0, 0)])
        return sum(t * p[..., i:i + x.shape[-2], :] for i, t in enumerate(taps))
    return run


def up_rows(x: np.ndarray) -> np.ndarray:
    return conv_rows(np.array([0.25, 0.5, 0.25]))(np.repeat(x, 2, axis=-2))


def down_rows(x: np.ndarray) -> np.ndarray:
    y = conv_rows(np.array([0.5, 1.0, 0.5]))(x)
    return y[..., ::2, :]


STEPS = [  # (run, field in units, rows scale in, rows scale out)
    (conv_rows(np.array([1.0, -2.0, 3.0])), 1, 1, 1),
    (up_rows, 1, 1, 2),
    (conv_rows(np.array([0.1, 0.2, 0.4, 0.2, 0.1])), 2, 1, 1),
    (down_rows, 2, 2, 1),
    (conv_rows(np.array([2.0, 1.0, -1.0])), 1, 1, 1),
]


def plans_for(rows: int, cols: int, band_units: int):
    """Each step's full-width band plan (tiling.plan_stage: windows clamped inside the frame, halo = field)."""
    plans, hw = [], (rows, cols)
    for _, field, s_in, s_out in STEPS:
        out = (hw[0] * s_out // s_in, hw[1])
        plans.append(tiling.plan_stage(hw, out, hw if s_out >= s_in else out, (band_units, cols), field))
        hw = out
    return plans


def whole(x: np.ndarray) -> np.ndarray:
    for run, *_ in STEPS:
        x = run(x)
    return x


@pytest.mark.parametrize("rows, band", [(40, 4), (40, 7), (33, 5), (16, 16)])
def test_streamed_chain_equals_the_whole_chain(rows, band):
    x = np.random.default_rng(rows + band).standard_normal((2, 3, rows, 9))
    got = streaming.run_streamed([r for r, *_ in STEPS], x, plans_for(rows, 9, band))
    np.testing.assert_allclose(got, whole(x), rtol=1e-12, atol=1e-12)


def test_no_map_between_the_steps_is_whole():
    """Streamed, the largest live allocation is a few bands; run whole, each step's map is the frame."""
    x = np.random.default_rng(0).standard_normal((8, 16, 256, 64))
    runs, plans = [r for r, *_ in STEPS], plans_for(256, 64, 8)
    tracemalloc.start()
    streaming.run_streamed(runs, x, plans)
    streamed = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    whole(x)
    full = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert streamed < full / 2, (streamed, full)


def test_a_plan_that_splits_columns_is_refused():
    plan = tiling.plan_stage((16, 16), (16, 16), (16, 16), (4, 4), 1)
    with pytest.raises(BadInputError, match="full-width"):
        streaming.run_streamed([conv_rows(np.array([1.0, 1.0, 1.0]))], np.zeros((1, 16, 16)), [plan])
