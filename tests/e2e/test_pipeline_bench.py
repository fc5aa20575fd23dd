"""`mi2v bench --pipeline` (issue 25): the whole image-to-video run as one measurement, clip after clip, on the host
(in process) and on the simulated phone (real adb client and server; the phone's executor_runner runs each stage,
window by window for the tiled encoder and decoder). The artifacts are the real tiny preset, exported by the
project's exporters with seeded weights, so the video is compared with the all-fp32 PyTorch run."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mi2v_export.devices.report import BenchReport
from mi2v_export.simulator.phone import SimulatedPhone

from tests.conftest import MI2V_EXE, run_cli


@pytest.fixture(scope="module")
def tiny(tiny_tiled) -> Path:
    """Every component of the tiny preset, fp32, ONNX and XNNPACK, encoder and decoder tiled (tests/e2e/conftest.py)."""
    return tiny_tiled


def _bench(*args, env=None) -> subprocess.CompletedProcess:
    return run_cli("bench", "--pipeline", "--cooldown", "0", *args, env=env)


def _check_block(report: dict, clips: int) -> dict:
    block = report["pipeline"]
    assert len(block["clips"]) == clips and not block["partial"] and block["stopped"] is None
    assert [c["cold"] for c in block["clips"]] == [True] + [False] * (clips - 1)
    for clip in block["clips"]:
        assert all(clip["load_ms"][c] >= 0 and clip["stage_ms"][c] > 0 for c in ("encoder", "denoiser", "decoder"))
        assert len(clip["step_ms"]) == 2
        assert clip["total_ms"] >= sum(clip["stage_ms"].values()) + sum(clip["load_ms"].values())
        assert clip["first_frame_ms"] <= clip["total_ms"]
        assert clip["per_frame_ms"] == pytest.approx(clip["total_ms"] / 9)
    head = block["headline"]
    assert head["measured_per_frame_ms"] > head["computed_per_frame_ms"] > 0
    assert report["headline"]["source"] == "pipeline (measured)"
    assert report["headline"]["per_frame_ms"] == head["measured_per_frame_ms"]
    assert block["warm"]["clips"] == clips - 1 and block["warm"]["total_ms"]["n"] == clips - 1
    quality = block["quality"]
    assert quality["reference"] == "pytorch-fp32" and quality["passed"] and quality["psnr_db_min"] >= 60
    return block


def test_pipeline_on_the_host_measures_whole_runs(exported, tmp_path):
    """On the untiled tiny ONNX export other files share (tests/cache.py): the whole run in `make test`; the tiled
    folder's runs are in the heavy tier."""
    tiny, _ = exported(tmp_path / "onnx", "--target", "onnx", "--preset", "tiny", "--json")
    out = tmp_path / "host.json"
    proc = _bench("--artifacts", tiny, "--runtime", "onnxruntime", "--clips", "3", "--report", out)
    assert proc.returncode == 0, proc.stderr
    report = BenchReport.load(out).to_dict()  # schema-validated
    block = _check_block(report, 3)
    assert {c["runtime"]["name"] for c in report["components"]} == {"onnxruntime"}
    denoiser = next(c for c in report["components"] if c["component"] == "denoiser")
    assert len(denoiser["runs"][0]["samples_ms"]) == 4  # 2 warm clips × 2 steps
    assert block["clips"][0]["peak_rss_kb"] > 0
    assert "per frame, measured" in proc.stdout and "whole runs" in proc.stdout

    again = tmp_path / "again.json"
    assert _bench("--artifacts", tiny, "--runtime", "onnxruntime", "--clips", "1", "--duration", "2",
                  "--report", again).returncode == 0
    sustained = json.loads(again.read_text())["pipeline"]["sustained"]
    assert sustained["duration_s"] == 2 and sustained["clips"] >= 2 and isinstance(sustained["throttled"], bool)
    rows = json.loads(run_cli("bench", "compare", out, again, "--json").stdout)
    measured = next(r for r in rows if r["metric"] == "pipeline per-frame ms (measured)")
    assert measured["a"] > 0 and measured["b"] > 0 and measured["ratio"] > 0


@pytest.mark.heavy  # the tiled tiny artifacts (100 s to build) and whole clips on them
def test_pipeline_with_a_process_per_stage_reports_its_loads_transfers_and_peaks(tiny, tmp_path):
    out, plot = tmp_path / "processes.json", tmp_path / "clips.png"
    proc = _bench("--artifacts", tiny, "--runtime", "onnxruntime", "--clips", "2", "--stage-processes",
                  "--report", out, "--plot", plot)
    assert proc.returncode == 0, proc.stderr
    block = _check_block(BenchReport.load(out).to_dict(), 2)
    for clip in block["clips"]:  # each call a fresh process: its own load, run, peak; the rest is transfers
        assert all(clip["device_load_ms"][c] > 0 and clip["transfer_ms"][c] > 0 for c in clip["device_ms"])
        assert set(clip["device_peak_rss_kb"]) == {"encoder", "denoiser", "decoder"}
    assert block["device_peak_rss_kb"] > 0 and plot.stat().st_size > 10_000
    other = _bench("--artifacts", tiny, "--device", "adb:emulator-5554", "--stage-processes")
    assert other.returncode == 2 and "--device host" in other.stderr


@pytest.mark.heavy  # the tiled tiny artifacts (100 s to build) and whole clips on them
def test_pipeline_on_the_simulated_phone_runs_each_stage_on_its_runner(tiny, adb, phone, tmp_path):
    out = tmp_path / "phone.json"
    proc = _bench("--artifacts", tiny, "--device", f"adb:{phone.serial}", "--adb", adb.path, "--adb-port",
                  str(adb.server_port), "--clips", "2", "--report", out, env=adb.env)
    assert proc.returncode == 0, proc.stderr
    report = BenchReport.load(out).to_dict()
    block = _check_block(report, 2)
    assert report["device"]["simulated_device"] is True
    for clip in block["clips"]:  # the runner's own time, its model loads and the transfers, apart
        assert set(clip["device_ms"]) == {"encoder", "denoiser", "decoder"}
        assert all(clip["device_ms"][c] > 0 and clip["transfer_ms"][c] > 0 for c in clip["device_ms"])
        assert all(clip["device_ms"][c] < clip["stage_ms"][c] for c in clip["device_ms"])
    assert block["headline"]["difference_ms"]["transfer"] > 0
    assert {"encoder.s3.pte", "decoder.s3.pte", "denoiser.pte"} <= set(report["staging"]["pushed"])


def test_pipeline_refuses_a_folder_without_every_component(exported, tmp_path):
    """Refused before any stage runs, so the untiled tiny ONNX export other files share serves (tests/cache.py)."""
    onnx, _ = exported(tmp_path / "onnx", "--target", "onnx", "--preset", "tiny", "--json")
    folder = tmp_path / "two"
    shutil.copytree(onnx, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["components"] = [e for e in manifest["components"] if e["component"] != "decoder"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "r.json"
    proc = _bench("--artifacts", folder, "--clips", "2", "--report", out)
    assert proc.returncode == 2 and "decoder" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()
    zero = _bench("--artifacts", onnx, "--clips", "0")
    assert zero.returncode == 2 and "--clips 0" in zero.stderr and len(zero.stderr.strip().splitlines()) == 1
    alone = run_cli("bench", "--artifacts", onnx, "--clips", "2")
    assert alone.returncode == 2 and "only with --pipeline" in alone.stderr


@pytest.mark.slow  # a minute: it waits for a whole clip on the simulated phone
def test_a_phone_that_disconnects_mid_run_keeps_the_clips_done(tiny, adb, tmp_path):
    """The phone goes away after the first clip: one line, the device error's exit code (5), and the report with
    the clips done, marked partial."""
    out = tmp_path / "gone.json"
    with SimulatedPhone() as gone:
        assert adb.connect(gone.serial).state == "device"
        cmd = [str(MI2V_EXE), "bench", "--pipeline", "--artifacts", str(tiny), "--device", f"adb:{gone.serial}",
               "--adb", str(adb.path), "--adb-port", str(adb.server_port), "--clips", "50", "--report", str(out)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**adb.env, "COLUMNS": "200", "NO_COLOR": "1"})
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 600
        while not any(line.startswith("clip 1:") for line in lines) and time.monotonic() < deadline:
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.2)
        gone.stop()
        proc.wait(timeout=300)
        reader.join(timeout=10)
    adb.disconnect(gone.serial)
    assert proc.returncode == 5, "".join(lines)
    error = [line for line in lines if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in "".join(lines)
    block = json.loads(out.read_text())["pipeline"]
    assert block["partial"] is True and block["stopped"] and 1 <= len(block["clips"]) < 50


@pytest.mark.heavy  # the tiled tiny artifacts; tests/integration/test_profiling.py reads profiles in make test
@pytest.mark.parametrize("runtime, component", [("onnxruntime", "denoiser"), ("executorch", "decoder")])
def test_profile_gives_each_components_top_operators_on_the_host(tiny, runtime, component, tmp_path):
    """onnxruntime's profiler on a whole model; ExecuTorch's ETDump on a tiled one (its stages weighed)."""
    out = tmp_path / "profile.json"
    proc = run_cli("bench", "--artifacts", tiny, "--runtime", runtime, "--profile", "--iterations", "1",
                   "--warmup", "0", "--component", component, "--report", out)
    assert proc.returncode == 0, proc.stderr
    report = BenchReport.load(out)  # schema-validated; the traces are checked to stay beside the report
    profile = report.component(component).profile
    assert profile["runtime"].startswith(runtime) and profile["runs"] >= 1 and profile["ops"], profile
    ops = profile["ops"]
    assert [o["total_ms"] for o in ops] == sorted((o["total_ms"] for o in ops), reverse=True)
    assert 0.5 < sum(o["share"] for o in ops) <= 1.0 + 1e-6
    assert (out.parent / profile["trace"]).is_file()
    if runtime == "executorch":  # XNNPACK's own operators, inside the delegate, over the 4 tile stages
        assert profile["delegated_share"] > 0.5 and any(o["delegated"] for o in ops)
        assert any("tile stages" in note for note in profile["notes"])
    else:
        assert any(o["op"] in ("Conv", "MatMul", "Gemm", "FusedConv", "FusedMatMul") for o in ops)
    assert "top operators" in proc.stdout


@pytest.mark.slow  # half a minute; the host's profiles cover the reading, this the phone's ETDump path
def test_profile_on_the_simulated_phone_reads_the_runners_etdump(tiny, adb, phone, tmp_path):
    out = tmp_path / "phone-profile.json"
    proc = run_cli("bench", "--artifacts", tiny, "--device", f"adb:{phone.serial}", "--adb", adb.path,
                   "--adb-port", str(adb.server_port), "--runtime", "executorch", "--profile", "--iterations", "1",
                   "--warmup", "0", "--cooldown", "0", "--component", "denoiser,decoder", "--report", out,
                   env=adb.env)
    assert proc.returncode == 0, proc.stderr
    report = BenchReport.load(out)
    denoiser = report.component("denoiser").profile
    assert denoiser["tool"].startswith("ExecuTorch ETDump") and denoiser["ops"] and denoiser["delegated_share"] > 0
    assert "tiled" in report.component("decoder").profile["reason"]
