"""The `pipeline` block's arithmetic (mi2v_export/devices/pipeline_bench.py): cold apart from warm, the measured
per-frame figure next to the computed one with the difference split, drift and throttling, partial runs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mi2v_export.devices.pipeline_bench import PipelineOptions, PipelineRun
from mi2v_export.parity import VIDEO_PSNR_MIN_DB
from mi2v_export.pipeline.report import gate_of

pytestmark = pytest.mark.unit

FRAMES = 9


def _result(encode=10.0, steps=(20.0, 20.0), decode=60.0, loads=(1.0, 2.0, 3.0), seed=0) -> SimpleNamespace:
    """A GenerateResult as the sampler returns it (seconds), with frames that hash by `seed`."""
    ms = 1e-3
    timings = {"preprocess": 2 * ms, "postprocess": 3 * ms, "encode": encode * ms, "denoise": sum(steps) * ms,
               "decode": decode * ms, **{f"load_{c}": v * ms for c, v in zip(("encoder", "denoiser", "decoder"),
                                                                                   loads)}}
    frames = np.full((FRAMES, 4, 4, 3), seed, dtype=np.uint8)
    return SimpleNamespace(timings=timings, step_times=[s * ms for s in steps], frames=frames,
                           memory={"peak_rss_bytes": 100 * 2 ** 20, "baseline_rss_bytes": 50 * 2 ** 20,
                                   "method": "vmhwm-reset"})


def _snap(status=None) -> dict:
    return {"thermal_status": status}


def _accounted(result) -> float:
    return sum(v for k, v in result.timings.items() if k != "denoise") * 1e3 + sum(result.step_times) * 1e3


def test_cold_warm_and_the_measured_figure_next_to_the_computed_one():
    run = PipelineRun(steps=2, frames=FRAMES)
    cold = _result(encode=30.0, loads=(50.0, 60.0, 70.0))
    run.add(cold, _accounted(cold) + 5.0, 0.0, _snap(), _snap(), {})
    for _ in range(3):
        warm = _result()
        run.add(warm, _accounted(warm) + 1.0, 1.0, _snap(), _snap(), {})
    block = run.block(PipelineOptions(clips=4))
    assert [c["cold"] for c in block["clips"]] == [True, False, False, False]
    assert block["cold"]["total_ms"] == pytest.approx(_accounted(cold) + 5.0)
    assert block["cold"]["first_run_ms"]["denoiser"] == pytest.approx(20.0)
    assert block["warm"]["clips"] == 3 and block["clips"][0]["glue_ms"] == pytest.approx(5.0)
    head = block["headline"]
    assert head["computed_per_frame_ms"] == pytest.approx((10.0 + 2 * 20.0 + 60.0) / FRAMES)
    total = _accounted(_result()) + 1.0
    assert head["measured_per_frame_ms"] == pytest.approx(total / FRAMES)
    parts = head["difference_ms"]
    assert parts == pytest.approx({"load": 6.0, "pre_post": 5.0, "transfer": 0.0, "glue": 1.0})
    assert head["difference_ms_per_frame"] * FRAMES == pytest.approx(sum(parts.values()))
    assert not block["partial"] and block["peak_rss_kb"] == 100 * 1024


def test_a_devices_own_time_is_the_computed_figure_and_the_rest_is_transfer():
    run = PipelineRun(steps=2, frames=FRAMES)
    device = {c: {"device_ms": own, "device_load_ms": 0.0, "transfer_ms": wall - own, "peak_rss_kb": 2048}
              for c, own, wall in (("encoder", 4.0, 10.0), ("denoiser", 30.0, 40.0), ("decoder", 50.0, 60.0))}
    for _ in range(2):
        r = _result()
        run.add(r, _accounted(r), 0.0, _snap(), _snap(), device)
    head = run.block(PipelineOptions(clips=2))["headline"]
    assert head["computed_per_frame_ms"] == pytest.approx((4.0 + 30.0 + 50.0) / FRAMES)
    assert head["difference_ms"]["transfer"] == pytest.approx(26.0)


def test_drift_throttling_and_a_partial_run():
    run = PipelineRun(steps=2, frames=FRAMES)
    for i, decode in enumerate((60.0, 60.0, 60.0, 90.0)):
        r = _result(decode=decode, seed=i % 2)
        run.add(r, _accounted(r), float(i), _snap(0), _snap(0 if i < 3 else 2), {})
    block = run.block(PipelineOptions(clips=6, duration_s=1.0))
    sustained = block["sustained"]
    assert sustained["drift"] == pytest.approx(_accounted(_result(decode=90.0)) / _accounted(_result()))
    assert sustained["throttled"] and len(sustained["signs"]) == 2
    assert block["partial"] and block["stopped"] is None  # fewer clips than asked
    assert len(run.videos) == 2  # two distinct videos, each compared once


def test_no_clip_yet_gives_an_empty_but_valid_block():
    block = PipelineRun(steps=1, frames=FRAMES).block(PipelineOptions(clips=3))
    assert block["clips"] == [] and block["cold"] is None and block["headline"] is None and block["partial"]


def test_a_mixed_run_is_held_to_its_least_precise_components_gate():
    """A w8a8 denoiser (gate 30 dB) with fp16 VAE parts (gate 40 dB): the video is judged at 30 dB, the gate
    the denoiser alone was exported against; a run whose manifests carry no gate falls back to its precision's."""
    def stage(gate, precision):
        return SimpleNamespace(gate_db=gate, precision=precision)

    mixed = {"encoder": stage(40.0, "fp16"), "denoiser": stage(30.0, "w8a8"), "decoder": stage(40.0, "fp16")}
    assert gate_of(mixed) == 30.0
    assert gate_of({"denoiser": stage(None, "fp32"), "decoder": stage(40.0, "fp16")}) == 40.0
    assert gate_of({"denoiser": stage(None, "fp32"), "decoder": stage(None, "fp32")}) == VIDEO_PSNR_MIN_DB["fp32"]
