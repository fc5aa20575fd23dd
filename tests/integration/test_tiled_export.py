"""Tiled VAE exports (issue 24) at the tiny preset, through `mi2v export` / `mi2v verify` as a user runs them:
the stitched output against PyTorch on onnxruntime and on ExecuTorch XNNPACK, the stages and their fields, the
measured memory, the budget search, and every bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from exporters import tile_search, tiled
from mi2v_export import models, runtimes, tiling
from mi2v_export.manifest import read_manifest
from mi2v_export.models.receptive import decoder_probe, receptive_field
from mi2v_export.models.stages import Chain, split, stages_of, steps_of, tensor_limit
from mi2v_export.runtimes.sessions import open_session
from tests.conftest import run_cli, tiny_vae_part


TINY = ["--preset", "tiny"]


def _one_error(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("part", ["turbo-vaed", "ltx-decoder", "ltx-encoder"])
def test_the_stages_compose_to_the_model(part):
    model, x = tiny_vae_part(part)
    with torch.no_grad():
        whole = model(x)
        chained = Chain(steps_of(model))(x)
    assert torch.equal(whole, chained)
    stages = stages_of(model, tuple(x.shape))
    assert len(stages) >= 2 and stages[0].input_shape == tuple(x.shape)
    assert stages[-1].output_shape == tuple(whole.shape)
    for a, b in zip(stages, stages[1:]):
        assert a.output_shape == b.input_shape


@pytest.mark.parametrize("part", ["turbo-vaed", "ltx-decoder", "ltx-encoder"])
def test_a_stage_cut_between_its_steps_composes_to_it_and_cuts_only_at_small_tensors(part):
    """What the budget search does with a stage that does not fit at its smallest window (bound by its weights):
    its parts run in order give the stage's output bit for bit, every cut is at a tensor no larger than the
    component's input or output, and each weight is in exactly one part."""
    model, x = tiny_vae_part(part)
    stages = stages_of(model, tuple(x.shape))
    limit = tensor_limit(stages)
    cut_any = False
    for stage in stages:
        parts = split(stage, limit)
        cut_any |= len(parts) > 1
        assert parts[0].input_shape == stage.input_shape and parts[-1].output_shape == stage.output_shape
        assert all(math.prod(p.input_shape) <= limit for p in parts[1:])
        assert sum(len(p.module.steps) for p in parts) == len(stage.module.steps)
        params = [id(w) for p in parts for w in p.module.parameters()]
        assert len(params) == len(set(params)) == len(list(stage.module.parameters()))
        y = torch.randn(stage.input_shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            want, got = stage.module(y), y
            for p in parts:
                got = p.module(got)
        assert torch.equal(want, got)
    if part == "ltx-encoder":  # its last stage (down blocks, mid block, head on the latent grid) can be cut
        assert cut_any and len(split(stages[-1], limit)) == len(stages[-1].module.steps)


def test_each_stage_reads_far_less_than_the_whole_decoder():
    """The point of cutting: every stage's field, in video pixels, is narrower than the whole Turbo-VAED's."""
    model, _ = tiny_vae_part("turbo-vaed")
    whole = receptive_field(model, decoder_probe(128), 1, 32) * 32
    stages = stages_of(model, (1, 128, 2, 8, 8))
    video = (8 * 32, 8 * 32)
    for stage in stages:
        s_in, s_out, _, _ = tiling.stage_scales(stage.input_shape[-2:], stage.output_shape[-2:])
        c, t = stage.input_shape[1:3]
        probe = lambda n, c=c, t=t, s=s_in: torch.randn(1, c, t, n * s, n * s)  # noqa: E731
        field = receptive_field(stage.module, probe, s_in, s_out)
        plan = tiling.plan_stage(stage.input_shape[-2:], stage.output_shape[-2:], video, (64, 64), field)
        assert field * plan.unit_px[0] < whole, (field, plan.unit_px, whole)


@pytest.mark.parametrize("target", [  # XNNPACK's tiled export is the e2e tests' fixture (tests/e2e/conftest.py)
    ["--target", "onnx"], pytest.param(["--target", "executorch", "--delegate", "xnnpack"], marks=pytest.mark.slow)])
def test_tiled_export_is_exact_and_verifies(target, tmp_path):
    out = tmp_path / "tiled"
    proc = run_cli("export", *target, *TINY, "--component", "encoder,decoder", "--tile", "64x64", "--out", out,
                   "--json")
    assert proc.returncode == 0, proc.stderr
    entries = {e["component"]: e for e in json.loads(proc.stdout)["artifacts"]}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == 2
    for name, e in entries.items():
        t = e["tiling"]
        assert t["exact"] and t["blending"] == "none" and t["tile"] == [64, 64] and t["format"] == 1
        assert t["tiles"] > len(t["stages"]), t  # at least one stage really runs several windows
        assert e["parity"]["rel_l2"] <= 1e-5, e["parity"]
        assert [f["role"] for f in e["extra_files"] if f["role"].startswith("tile_stage")]
        assert e["inputs"][0]["shape"] == ([1, 3, 1, 128, 192] if name == "encoder" else [1, 128, 2, 4, 6])
        memory = e["runtime_memory"]
        assert memory["bytes"] > 0 and memory["baseline_bytes"] > 0 and "fresh process" in memory["method"]
        for stage in t["stages"]:
            assert (out / stage["file"]).is_file()
    proc = run_cli("verify", out, "--json")
    assert proc.returncode == 0, proc.stderr
    checks = json.loads(proc.stdout)
    checks = checks.get("artifacts", checks) if isinstance(checks, dict) else checks
    assert all(c["passed"] for c in checks), checks


def test_a_smaller_halo_is_blended_and_measured(tmp_path):
    out = tmp_path / "blend"
    proc = run_cli("export", "--target", "onnx", *TINY, "--component", "decoder", "--tile", "32x32", "--halo", "0",
                   "--out", out, "--json", "--no-verify")
    assert proc.returncode == 0, proc.stderr
    e = json.loads(proc.stdout)["artifacts"][0]
    assert e["tiling"]["exact"] is False and e["tiling"]["blending"] == "linear"


def test_a_corrupted_stage_fails_verify_naming_the_component(tmp_path, exported):
    out, _ = exported(tmp_path / "tiled", "--target", "onnx", *TINY, "--component", "decoder", "--tile", "64x64")
    manifest = json.loads((out / "manifest.json").read_text())
    stage = manifest["components"][0]["tiling"]["stages"][-1]["file"]
    data = bytearray((out / stage).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / stage).write_bytes(bytes(data))
    proc = run_cli("verify", out)
    assert proc.returncode != 0
    assert "decoder" in proc.stdout + proc.stderr and stage in proc.stdout + proc.stderr


@pytest.mark.heavy  # the tile search measures peaks of several candidate exports: 40 s
def test_memory_budget_picks_a_tile_that_fits_or_names_the_smallest_feasible(tmp_path):
    out = tmp_path / "budget"
    proc = run_cli("export", "--target", "onnx", *TINY, "--component", "decoder", "--memory-budget", "1",
                   "--out", out)
    assert proc.returncode == 2
    line = _one_error(proc)
    assert "no tile fits" in line and "--memory-budget" in line
    need = int(line.rsplit("--memory-budget ", 1)[1].split()[0])
    assert not out.exists()
    proc = run_cli("export", "--target", "onnx", *TINY, "--component", "decoder", "--memory-budget",
                   str(need + 20), "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    e = json.loads(proc.stdout)["artifacts"][0]
    assert e["runtime_memory"]["bytes"] <= (need + 20) * 2 ** 20
    assert e["tiling"]["probes"] and e["tiling"]["memory_budget_mib"] == need + 20
    assert not [p for p in out.iterdir() if p.name.startswith(".probe")]


@pytest.mark.parametrize("flags, says", [
    (["--tile", "100x64"], "multiples of 32"),
    (["--tile", "64"], "HxW"),
    (["--tile", "256x256"], "larger than the 128x192 frame"),
    (["--tile", "64x64", "--memory-budget", "100"], "cannot be combined"),
    (["--memory-budget", "-3"], "positive number of MiB"),
    (["--halo", "32"], "give --tile or --memory-budget"),
    (["--tile", "64x64", "--halo", "7"], "multiple of 32"),
    (["--tile", "64x64", "--component", "denoiser"], "encoder and decoder only"),
    (["--tile", "64x64", "--precision", "w8a8"], "fp32 or fp16"),
    (["--stream-rows", "48"], "positive multiple of 32"),
    (["--stream-rows", "0"], "positive multiple of 32"),
    (["--stream-rows", "160"], "more than the frame's 128 rows"),
    (["--stream-rows", "32", "--tile", "64x64"], "--tile and --stream-rows cannot be combined"),
    (["--stream-rows", "32", "--memory-budget", "100"], "--memory-budget and --stream-rows cannot be combined"),
    (["--stream-rows", "32", "--halo", "32"], "streamed bands are exact"),
    (["--time-chunk", "12"], "positive multiple of 8"),
    (["--time-chunk", "8", "--stream-rows", "32"], "--time-chunk and --stream-rows cannot be combined"),
    (["--time-chunk", "8", "--component", "encoder"], "applies to the decoder"),
    (["--time-chunk", "8"], "no stage of the decoder can be split in time at 9 frames"),
])
def test_bad_tiling_flags_are_one_line_and_write_nothing(flags, says, tmp_path):
    out = tmp_path / "out"
    args = ["export", "--target", "onnx", *TINY, *flags, "--out", out]
    if "--component" not in flags:
        args += ["--component", "decoder"]
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert says in _one_error(proc)
    assert not out.exists()


def test_an_older_reader_refuses_a_tiled_folder_and_this_one_refuses_a_newer_record(tmp_path, exported):
    out, _ = exported(tmp_path / "tiled", "--target", "onnx", *TINY, "--component", "decoder", "--tile", "64x64")
    older = tmp_path / "older"
    shutil.copytree(out, older)
    data = json.loads((older / "manifest.json").read_text())
    assert data["schema_version"] == 2  # what a version-1 reader (every mi2v before tiling) refuses in one line
    data["components"][0]["tiling"]["format"] = 99
    (older / "manifest.json").write_text(json.dumps(data))
    proc = run_cli("verify", older, "--no-record", "--allow-modified")
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "tiling record format 99 is not supported" in text


def test_one_stage_model_is_resident_at_a_time_and_old_records_keep_every_stage(tmp_path, exported):
    """Residency "stage" (what exports write): each stage loads before its windows and is released after, its
    load time reported; a record without the field (exports before it) keeps every stage loaded; an unknown
    residency is refused in one line."""
    out, _ = exported(tmp_path / "tiled", "--target", "onnx", *TINY, "--component", "decoder", "--tile", "64x64")
    manifest = read_manifest(out)
    entry = manifest.find("decoder")
    assert entry.tiling["residency"] == "stage" and len(entry.tiling["stage_tiles"]) == len(entry.tiling["stages"])
    runtime = runtimes.runnable(entry)
    with open_session(runtime, manifest.path_of(entry), entry) as session:
        assert sum(s is not None for s in session.stages) == 1
        first = session.run(session.ones())
        assert all(s is None for s in session.stages)
        summary = session.tile_summary()
        assert all(t["load_ms"] is not None and t["load_ms"] > 0 for t in summary[1:]), summary
        second = session.run(session.ones())
    entry.tiling.pop("residency")
    with open_session(runtime, manifest.path_of(entry), entry) as session:
        assert all(s is not None for s in session.stages)
        kept = session.run(session.ones())
        assert all(s is not None for s in session.stages)
    name = session.outputs[0].name
    assert np.array_equal(first[name], second[name]) and np.array_equal(first[name], kept[name])
    data = json.loads((out / "manifest.json").read_text())
    data["components"][0]["tiling"]["residency"] = "some"
    (out / "manifest.json").write_text(json.dumps(data))
    proc = run_cli("verify", out, "--no-record", "--allow-modified")
    assert proc.returncode != 0 and "residency 'some' is not supported" in proc.stdout + proc.stderr


@pytest.mark.parametrize("latent_frames", [None, 6])
def test_budget_candidates_start_whole_and_shrink_per_stage(latent_frames):
    """Each stage's candidate plans: the whole frame first (one window, no halo, the whole clip), then ever smaller
    windows; the early latent stages and the last one are searched apart. On a long clip (6 latent frames, 41
    video frames) windows cut in time compete on the same front and some stay on it; on the preset's short clip
    none is cut in time."""
    model, z = tiny_vae_part("turbo-vaed")
    shape = tuple(z.shape) if latent_frames is None else (*z.shape[:2], latent_frames, *z.shape[3:])
    stages = stages_of(model, shape)
    fields, timed = [2] * len(stages), []
    for k, stage in enumerate(stages):
        cands = tile_search.stage_candidates("decoder", stages, fields, tiled.TileRequest(), k)
        assert cands[0][1].grid.count == 1 and cands[0][2] is None
        costs = [tile_search.cost(stage, p, tp) for _, p, tp in cands]
        work = [tile_search.work(stage, p, tp) for _, p, tp in cands]
        assert costs == sorted(costs, reverse=True) and len(set(costs)) == len(costs)
        assert work == sorted(work) and len(set(work)) == len(work)  # a smaller window always costs more work
        timed += [tp for *_, tp in cands if tp is not None]
    assert bool(timed) == (latent_frames is not None)


def test_stitching_on_numpy_matches_the_model_for_every_stage():
    """The runtime layer's loop on the PyTorch stages (no exporter): exact at the stages' fields."""
    model, z = tiny_vae_part("turbo-vaed")
    z = torch.randn(1, 128, 2, 8, 12, generator=torch.Generator().manual_seed(1))
    stages = stages_of(model, tuple(z.shape))
    x = z.numpy()
    with torch.no_grad():
        want = model(z).numpy()
    for stage in stages:
        s_in, s_out, _, _ = tiling.stage_scales(stage.input_shape[-2:], stage.output_shape[-2:])
        c, t = stage.input_shape[1:3]
        probe = lambda n, c=c, t=t, s=s_in: torch.randn(1, c, t, n * s, n * s)  # noqa: E731
        field = receptive_field(stage.module, probe, s_in, s_out)
        plan = tiling.plan_stage(stage.input_shape[-2:], stage.output_shape[-2:], want.shape[-2:], (64, 64), field)
        assert plan.grid.count > 1 or stage is stages[0]
        with torch.no_grad():
            x = tiling.run_tiled(lambda w, m=stage.module: m(torch.from_numpy(w)).numpy(), x, plan.grid,
                                 plan.scale_in, plan.scale_out)
    assert np.linalg.norm(x - want) / np.linalg.norm(want) < 1e-5


def test_models_package_is_untouched_by_tiling():
    """Tiling cuts the loaded model without changing it (the stages share its modules and weights)."""
    model = models.load_decoder("turbo-vaed", preset="tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stages_of(model, (1, 128, 2, 4, 6))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("target", [["--target", "coreml"],
                                    pytest.param(["--target", "executorch", "--delegate", "vulkan"], marks=pytest.mark.slow)])
def test_targets_without_a_runtime_here_still_tile_and_say_why_not_run(target, tmp_path):
    out = tmp_path / "tiled"
    proc = run_cli("export", *target, *TINY, "--component", "decoder", "--tile", "64x64", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    e = json.loads(proc.stdout)["artifacts"][0]
    assert len(e["tiling"]["stages"]) >= 2 and e["parity"]["verified_on"] == [] and e["parity"]["reason"]
    assert all((out / s["file"]).exists() for s in e["tiling"]["stages"])


@pytest.mark.slow
def test_qnn_tiles_are_all_on_the_htp_and_stitch_on_the_simulator(tmp_path):
    out = tmp_path / "qnn"
    proc = run_cli("export", "--target", "onnx", "--delegate", "qnn", "--precision", "fp16", *TINY, "--component",
                   "decoder", "--tile", "64x64", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    e = json.loads(proc.stdout)["artifacts"][0]
    assert e["target_info"]["htp_node_share"] == 1.0
    assert all(s["target_info"]["htp_node_share"] == 1.0 for s in e["tiling"]["stages"])
    assert e["parity"]["verified_on"][0]["runtime"] == "qnn-htp-simulator" and e["parity"]["psnr_db"] >= 40


def test_generate_runs_tiled_artifacts_one_stage_at_a_time_and_within_a_budget(tmp_path, exported):
    """Two decoders (whole frame and tiled): the budget between their measured memories picks the smaller one
    (at this toy size either may be smaller: four small sessions have their own overheads). Both folders are the
    exports other tests read too (tests/cache.py)."""
    whole, _ = exported(tmp_path / "whole", "--target", "onnx", "--preset", "tiny", "--json")
    tiled, _ = exported(tmp_path / "tiled", "--target", "onnx", *TINY, "--component", "decoder", "--tile", "64x64")
    memory = {f.name: json.loads((f / "manifest.json").read_text())["components"] for f in (whole, tiled)}
    decoders = {"whole": next(e for e in memory["whole"] if e["component"] == "decoder")["runtime_memory_bytes"],
                "tiled": memory["tiled"][0]["runtime_memory_bytes"]}
    small = min(decoders, key=decoders.get)
    budget = sum(decoders.values()) / 2 / 2 ** 20
    report = tmp_path / "report.json"
    image = "mi2v_export/data/validation/chelsea.png"
    proc = run_cli("generate", "--image", image, "--artifacts", whole, "--artifacts", tiled, "--out",
                   tmp_path / "v.mp4", "--memory-budget", f"{budget:.2f}", "--compare-to", "reference", "--report",
                   report)
    assert proc.returncode == 0, proc.stderr
    assert "run peak resident memory" in proc.stdout
    data = json.loads(report.read_text())
    assert data["backends"]["decoder"].endswith("(tiled)") == (small == "tiled") and data["summary"]["passed"]
    assert data["memory"]["artifacts"]["peak_rss_bytes"] > data["memory"]["artifacts"]["baseline_rss_bytes"]
    proc = run_cli("generate", "--image", image, "--artifacts", whole, "--artifacts", tiled, "--out",
                   tmp_path / "w.mp4", "--memory-budget", f"{min(decoders.values()) / 2 ** 20 / 4:.2f}")
    assert proc.returncode == 2 and "artifact fits" in _one_error(proc)


def test_artifact_stages_are_resident_one_at_a_time(tmp_path, exported):
    """Building the stages checks them and lets them go; each loads before its run and is released after it."""
    from mi2v_export.pipeline import GenerateConfig, Pipeline, build_stages, load_image
    from mi2v_export.shapes import geometry

    out, _ = exported(tmp_path / "a", "--target", "onnx", "--preset", "tiny", "--json")
    geo = geometry(128, 192, 9)
    stages = build_stages("tiny", "turbo-vaed", geo, [out])
    assert all(s.session is None for s in stages.values())
    seen = []
    for name, stage in stages.items():
        run = stage.run
        stage.run = lambda _run=run, **kw: (seen.append([n for n, s in stages.items() if s.session is not None]),
                                            _run(**kw))[1]
    result = Pipeline(stages).generate(load_image("mi2v_export/data/validation/chelsea.png"),
                                       GenerateConfig(height=128, width=192, frames=9, steps=1))
    assert all(len(resident) == 1 for resident in seen), seen
    assert all(s.session is None for s in stages.values())
    assert result.timings["load"] > 0
