"""LiteRT artifacts on a phone (issue 26): `benchmark_model` as the runner, over a real adb client and server, on the
simulated phone (mi2v_export/simulator: its stand-in of benchmark_model runs the .tflite on this host with
ai-edge-litert and prints the real tool's lines, so its timings are the host's). Timing, the output check through
--input_layer_value_files / --output_filepath, and the whole run (`--pipeline`)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def tflite(tmp_path_factory):
    out = tmp_path_factory.mktemp("litert-phone") / "art"
    proc = run_cli("export", "--target", "litert", "--preset", "tiny", "--component", "all", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _adb_args(adb) -> list[str]:
    return ["--adb", adb.path, "--adb-port", str(adb.server_port)]


@pytest.mark.slow  # LiteRT on the simulated phone: the issue behind it is closed; the host runs LiteRT by default
def test_benchmark_model_times_every_component_and_checks_its_outputs(adb, phone, tflite, tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("bench", "--artifacts", tflite, "--device", f"adb:{phone.serial}", *_adb_args(adb),
                   "--iterations", "3", "--warmup", "1", "--cooldown", "0", "--report", out, env=adb.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"]["simulated_device"] is True
    for comp in report["components"]:
        assert comp["status"] == "ok", comp
        assert comp["runtime"]["runner"] == "benchmark_model" and comp["runtime"]["backend"] == "xnnpack"
        run = comp["runs"][0]
        assert run["mean_only_ms"] > 0 and run["load_ms"] is not None  # the tool prints no per-run times
        assert run["peak_rss_kb"]
        check = comp["output_check"]
        assert check["passed"] is True and check["runtime"].startswith("benchmark_model/xnnpack"), check


@pytest.mark.slow  # make test's budget: the phone timing and output check above stay in it
def test_the_whole_run_on_the_phone_through_benchmark_model(adb, phone, tflite, tmp_path):
    out = tmp_path / "p.json"
    proc = run_cli("bench", "--pipeline", "--clips", "2", "--artifacts", tflite, "--device", f"adb:{phone.serial}",
                   *_adb_args(adb), "--cooldown", "0", "--report", out, env=adb.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    block = json.loads(out.read_text())["pipeline"]
    assert len(block["clips"]) == 2 and block["quality"]["passed"] is True
    clip = block["clips"][1]
    assert set(clip["device_ms"]) == {"encoder", "denoiser", "decoder"}  # what benchmark_model reported, per stage
    assert all(ms > 0 for ms in clip["device_ms"].values())
