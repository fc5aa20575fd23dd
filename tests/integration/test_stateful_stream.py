"""The stateful streaming experiment (benchmarks/stateful_stream.py) at the tiny preset: the Turbo-VAED's last stage
as one model carrying each convolution's last rows from band to band equals the stage run whole, for bands of one
and several latent rows, and the equality is not vacuous (without the frame's padding masks it fails); the same
for its ExecuTorch XNNPACK form (3-D convolutions folded), in PyTorch and on the ExecuTorch runtime."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

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


def test_the_xnnpack_form_folds_its_3d_convolutions_and_stays_exact(experiment):
    stages, _ = experiment.last_stage("tiny")
    assert experiment.fold_conv3d(stages[-1].module) > 0
    assert not any(type(m).__name__ == "Conv3d" for m in stages[-1].module.modules())
    assert experiment.check("tiny", 2, "xnnpack") <= 1e-5


@pytest.mark.slow  # an experiment's runtime check (two lowerings, fresh processes); the folded form's exactness
# stays in the default run above
def test_on_the_executorch_runtime_it_equals_the_whole_stage(experiment, tmp_path):
    """Both forms lowered to XNNPACK and run in fresh processes, as the 720p measurement runs them."""
    args = SimpleNamespace(preset="tiny", band=32, runtime="xnnpack", rounds=1, per_process=1, work=str(tmp_path),
                           reuse=False, note=None)
    result = experiment.measure(args)
    assert result["rel_l2_vs_whole"] <= 1e-5 and result["pytorch_rel_l2"] <= 1e-5
    assert result["states"] > 0 and (tmp_path / "stateful.pte").is_file()
    assert all(form["peak_bytes_median"] > 0 for form in result["forms"].values())
