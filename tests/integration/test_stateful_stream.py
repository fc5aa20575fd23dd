"""The stateful streaming experiment (benchmarks/stateful_stream.py) at the tiny preset: the Turbo-VAED's last stage
as one model carrying each convolution's last rows from band to band equals the stage run whole, for bands of one
and several latent rows, and the equality is not vacuous (without the frame's padding masks it fails)."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def experiment():
    spec = importlib.util.spec_from_file_location("stateful_stream", REPO / "benchmarks" / "stateful_stream.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("rows", [1, 2, 5])
def test_one_stateful_model_streams_the_last_stage_exactly(experiment, rows):
    assert experiment.check("tiny", rows) <= 1e-5


def test_without_the_padding_masks_it_is_wrong(experiment, monkeypatch):
    monkeypatch.setattr(experiment.Band, "mask", lambda self, x, lag, frame: x)
    assert experiment.check("tiny", 2) > 1e-2
