"""Time chunks of the tiled decoder (issue 24: "where time chunking pays, chunk in time too") at the tiny preset on
a 41-frame clip: the runtime layer's stage loop (time windows, then tiles) on the PyTorch stages of both decoders
equals the whole decoder; `mi2v export --time-chunk` writes a format-3 record whose stitched run passes its gate on
onnxruntime (and ExecuTorch XNNPACK, slow tier), `mi2v verify` passes it, and a record that lies about its format or
its clip is refused in one line. (Bad --time-chunk flags: tests/integration/test_tiled_export.py.)"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from exporters import tiled
from mi2v_export import chunking, models, tiling
from mi2v_export.models.receptive import receptive_field
from mi2v_export.models.stages import stages_of
from mi2v_export.runtimes.sessions import TIMED_FORMAT, run_stage
from tests.conftest import run_cli

FRAMES = 41  # 6 latent frames: the last two stages of either decoder can be split in time at 8 frames a chunk
CHUNKED = ("--preset", "tiny", "--component", "decoder", "--frames", str(FRAMES), "--resolution", "64x96",
           "--time-chunk", "8", "--tile", "32x96", "--json")


def _stage_record(stage, video_hw, video_frames) -> dict:
    """A stage's tiling entry as the exporter writes it: spatial plan (64 px tiles) and time plan (8 frames)."""
    s_in, s_out, _, _ = tiling.stage_scales(stage.input_shape[-2:], stage.output_shape[-2:])
    c, t = stage.input_shape[1:3]
    probe = lambda n: torch.randn(1, c, t, n * s_in, n * s_in)  # noqa: E731
    field = receptive_field(stage.module, probe, s_in, s_out)
    plan = tiling.plan_stage(stage.input_shape[-2:], stage.output_shape[-2:], video_hw, (64, 64), field)
    tp = chunking.plan_time(stage.input_shape[2], stage.output_shape[2], video_frames, 8,
                            tiled.stage_time_field(stage))
    return {"plan": plan.record(), **({"time": tp.record()} if tp else {})}


@pytest.mark.parametrize("kind", ["turbo-vaed", "ltx"])
def test_the_stage_loop_with_time_chunks_equals_the_whole_decoder(kind):
    model = models.load_decoder(kind, preset="tiny").eval()
    z = torch.randn(1, 128, 1 + (FRAMES - 1) // 8, 4, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(z).numpy()
    stages = stages_of(model, tuple(z.shape))
    records = [_stage_record(s, want.shape[-2:], FRAMES) for s in stages]  # fields by autograd
    assert sum("time" in r for r in records) >= 2, records  # the high-resolution stages are chunked
    x = z.numpy()
    with torch.no_grad():
        for stage, record in zip(stages, records):
            x = run_stage(lambda w, m=stage.module: m(torch.from_numpy(w)).numpy(), x, record)
    assert x.shape == want.shape
    assert np.linalg.norm(x - want) / np.linalg.norm(want) < 1e-5


@pytest.mark.parametrize("target", [
    ["--target", "onnx"], pytest.param(["--target", "executorch", "--delegate", "xnnpack"], marks=pytest.mark.slow)])
def test_a_time_chunked_export_is_exact_and_verifies(target, tmp_path, exported):
    out, stdout = exported(tmp_path / "chunked", *target, *CHUNKED)
    e = json.loads(stdout)["artifacts"][0]
    t = e["tiling"]
    assert t["format"] == TIMED_FORMAT and t["exact"] and t["time_chunk"] == 8, t
    timed = [s for s in t["stages"] if "time" in s]
    assert len(timed) >= 2 and all(s["time"]["chunks"] > 1 for s in timed)
    assert all(s["input_window"][2] < s["time"]["frames"] for s in timed)  # each model holds a part of the clip
    assert t["tiles"] == sum(a * b * n for (a, b), n in zip(t["grid"], t["time_chunks"]))
    assert e["outputs"][0]["shape"][2] == FRAMES
    assert e["parity"]["rel_l2"] <= 1e-5, e["parity"]  # the stitched run against PyTorch
    proc = run_cli("verify", out, "--json")
    assert proc.returncode == 0, proc.stderr


def test_the_encoder_is_never_chunked_in_time():
    """It reads one frame (the conditioning image): --time-chunk leaves it untiled, or tiled in space only."""
    spec = SimpleNamespace(name="encoder", inputs={"image": torch.zeros(1, 3, 1, 64, 96)})
    assert not tiled.request_for(spec, tiled.TileRequest(time_chunk=8)).active
    both = tiled.request_for(spec, tiled.TileRequest(tile=(32, 96), time_chunk=8))
    assert both.tile == (32, 96) and both.time_chunk is None
    decoder = SimpleNamespace(name="decoder", inputs={"latent": torch.zeros(1, 128, 6, 2, 3)})
    assert tiled.request_for(decoder, tiled.TileRequest(time_chunk=8)).time_chunk == 8


@pytest.mark.parametrize("edit, says", [
    (lambda t: t.update(format=2), "chunks stages in time but says format 2"),
    (lambda t: next(s for s in t["stages"] if "time" in s)["time"].update(frames=99),
     "chunked in time for"),
])
def test_a_time_record_that_lies_is_refused_in_one_line(edit, says, tmp_path, exported):
    out, _ = exported(tmp_path / "chunked", "--target", "onnx", *CHUNKED)
    data = json.loads((out / "manifest.json").read_text())
    edit(data["components"][0]["tiling"])
    (out / "manifest.json").write_text(json.dumps(data))
    proc = run_cli("verify", out, "--no-record", "--allow-modified")
    assert proc.returncode != 0 and says in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_budget_with_a_time_chunk_searches_tiles_of_each_chunk(tmp_path):
    """`--memory-budget` with `--time-chunk` on a long clip: the smallest feasible budget it names counts the
    chunks, the budget it then meets is met exactly, and every probe of a chunked stage was a chunked window. (The
    budget's own choice among chunks is the candidates' front, tests/integration/test_tiled_export.py.)"""
    out = tmp_path / "budget"
    args = ["export", "--target", "onnx", "--preset", "tiny", "--component", "decoder", "--frames", str(FRAMES),
            "--time-chunk", "8"]
    proc = run_cli(*args, "--memory-budget", "1", "--out", out)
    assert proc.returncode == 2 and "no tile fits" in proc.stderr and not out.exists(), proc.stderr
    need = int(proc.stderr.rsplit("--memory-budget ", 1)[1].split()[0])
    proc = run_cli(*args, "--memory-budget", str(need + 20), "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    e = json.loads(proc.stdout)["artifacts"][0]
    t = e["tiling"]
    assert e["runtime_memory"]["bytes"] <= (need + 20) * 2 ** 20 and e["parity"]["rel_l2"] <= 1e-5
    assert t["format"] == TIMED_FORMAT and max(t["time_chunks"]) > 1
    chunked = {k for k, s in enumerate(t["stages"]) if "time" in s}
    assert chunked and all("time_chunks" in p for p in t["probes"] if p["stage"] in chunked), t["probes"]
