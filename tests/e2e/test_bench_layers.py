"""The layers under `mi2v bench`: runner output parsers, statistics and the report schema, the host driver, and the
host runners executed through the real adb client on the simulated phone.

Parser fixtures marked SYNTHETIC follow the upstream format strings (executor_runner.cpp v1.3+, ORT
performance_runner.cc, toybox time.c, dumpsys); their numbers are made up. Everything else runs a small model
exported here with torch.onnx.export(dynamo=True, opset 18) and ExecuTorch XNNPACK.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mi2v_export import runtimes
from mi2v_export.devices import host, output_check
from mi2v_export.devices.host import bench_artifact, host_facts, runtime_for
from mi2v_export.devices.report import (
    SCHEMA,
    BenchReport,
    ComponentResult,
    RunResult,
    compare,
    latency_stats,
    percentile,
    validate,
)
from mi2v_export.devices.android_session import device_facts
from mi2v_export.devices.runner_checks import runner_failure
from mi2v_export.devices.selection import family_of
from mi2v_export.devices.runners import (
    EXECUTOR_RUNNER,
    ORT_PERF_TEST,
    backends_in_pte,
    parse_battery,
    parse_executor_runner,
    parse_meminfo,
    parse_ort_csv,
    parse_ort_perf_test,
    parse_thermalservice,
    parse_toybox_time,
    pte_runtime,
)
from mi2v_export.simulator.host_runners import is_host_runner, write_host_runner
from mi2v_export.simulator.phone import SimulatedPhone
from mi2v_export.errors import BadInputError, DeviceError


# ---- parsers (SYNTHETIC values, upstream formats) ------------------------------------------------------------------

ET_POSIX = """\
I 00:00:00.000100 executorch:executor_runner.cpp:238] Resetting threadpool with num threads = 4
I 00:00:00.001200 executorch:executor_runner.cpp:383] Model file /data/local/tmp/mi2v/ab/denoiser.pte is loaded.
I 00:00:00.001300 executorch:executor_runner.cpp:393] Using method forward
I 00:00:00.001400 executorch:executor_runner.cpp:466] Setting up CPU planned buffer 0, size 123456.
I 00:00:00.040000 executorch:executor_runner.cpp:530] Model loaded in 39.300000 ms.
I 00:00:00.052000 executorch:executor_runner.cpp:690] Iteration 1 of 3: 12.500000 ms
I 00:00:00.063000 executorch:executor_runner.cpp:690] Iteration 2 of 3: 11.000000 ms
I 00:00:00.074000 executorch:executor_runner.cpp:690] Iteration 3 of 3: 11.250000 ms
I 00:00:00.074100 executorch:executor_runner.cpp:698] Model executed successfully 3 time(s) in 34.750000 ms.
I 00:00:00.074200 executorch:executor_runner.cpp:705] 1 outputs: 
Real time (s): 0.080000
User time (s): 0.200000
System time (s): 0.010000
Max RSS (KiB): 51234
Major faults: 0
"""

ET_LOGCAT_PRE_1_3 = """\
08-22 10:00:00.000  1234  1234 I ExecuTorch: Model file model.pte is loaded.
08-22 10:00:01.000  1234  1234 I ExecuTorch: Model executed successfully 10 time(s) in 120.000000 ms.
"""

ET_MISSING_BACKEND = """\
E 00:00:00.002000 executorch:method.cpp:120] Backend VulkanBackend is not registered.
F 00:00:00.002100 executorch:executor_runner.cpp:523] Loading of method forward failed with status 0x14
"""

ORT_STDOUT = """\
Session creation time cost: 0.0512 s
First inference time cost: 23 ms
Total inference time cost: 0.2 s
Total inference requests: 10
Average inference time cost total: 20 ms
Total inference run time: 0.21 s
Number of inferences per second: 47.6
Avg CPU usage: 97 %
Peak working set size: 104857600 bytes
Min Latency: 0.018 s
Max Latency: 2.5e-02 s
P50 Latency: 0.0199 s
P90 Latency: 0.022 s
"""

ORT_LEGACY = "Session creation time cost:0.05 s\nAverage inference time cost:20.5 ms\nP50 Latency is 0.0201sec\n"


@pytest.mark.unit
def test_parse_executor_runner_posix_and_logcat():
    r = parse_executor_runner(ET_POSIX)
    assert r.samples_ms == [12.5, 11.0, 11.25] and r.load_ms == 39.3 and r.total_ms == 34.75
    assert r.executions == 3 and r.method == "forward" and r.peak_rss_kb == 51234 and not r.errors
    assert abs(r.mean_ms - 34.75 / 3) < 1e-9
    old = parse_executor_runner(ET_LOGCAT_PRE_1_3)  # before v1.3: the total only → mean only
    assert old.samples_ms == [] and old.mean_ms == 12.0 and not old.per_iteration
    bad = parse_executor_runner(ET_MISSING_BACKEND)
    assert bad.missing_backends == ["VulkanBackend"] and "failed with status 0x14" in bad.errors[0]


@pytest.mark.unit
def test_parse_ort_outputs():
    r = parse_ort_perf_test(ORT_STDOUT, "m,0.020,1,97,0\nm,0.0185,1,97,1\nm,0.021,1,97,2\n")
    assert r.load_ms == pytest.approx(51.2) and r.first_iteration_ms == 23 and r.mean_ms == 20
    assert r.executions == 10 and r.peak_rss_kb == 102400
    assert r.summary["max"] == pytest.approx(25.0) and r.summary["p50"] == pytest.approx(19.9)
    assert r.samples_ms == pytest.approx([20.0, 18.5, 21.0])
    legacy = parse_ort_perf_test(ORT_LEGACY)
    assert legacy.load_ms == pytest.approx(50) and legacy.mean_ms == 20.5
    assert legacy.summary["p50"] == pytest.approx(20.1)
    assert parse_ort_csv("m,0.002,1,2,1\nm,0.001,1,2,0\n") == pytest.approx([1.0, 2.0])  # ordered by run index
    assert parse_ort_perf_test("QNN is not supported in this build.\n").errors


@pytest.mark.unit
def test_parse_device_facts_from_the_simulated_phone_files(tmp_path):
    with SimulatedPhone(root=tmp_path / "root") as p:
        meta = p.root / ".mi2v"
        thermal = parse_thermalservice((meta / "thermalservice.txt").read_text())
        battery = parse_battery((meta / "battery.txt").read_text())
        mem = parse_meminfo((p.root / "proc/meminfo").read_text())
    assert thermal.status == 0 and thermal.temps_c["AP"] == 36.5 and thermal.temps_c["battery"] == 29.5
    assert battery == {"level": 80, "temp_c": 29.5, "plugged": "usb"}
    assert mem["MemTotal"] == p.profile.mem_total_kb
    assert parse_toybox_time("nothing") is None


# ---- statistics and report -----------------------------------------------------------------------------------------


@pytest.mark.unit
def test_nearest_rank_stats():
    samples = [float(x) for x in range(1, 11)]  # 1..10
    assert percentile(samples, 50) == 5 and percentile(samples, 90) == 9 and percentile(samples, 99) == 10
    assert percentile(samples, 10) == 1 and percentile([7.0], 99) == 7
    s = latency_stats([3.0, 1.0, 2.0, 100.0])
    assert (s["n"], s["min"], s["p50"], s["max"]) == (4, 1.0, 2.0, 100.0)
    assert latency_stats([]) == {"n": 0}


def _component(name: str, samples: list[float], status: str = "ok") -> ComponentResult:
    return ComponentResult(name, status=status, artifact={"format": "pte"},
                           runs=[RunResult(load_ms=5.0, samples_ms=samples, exit_code=0)] if samples else [])


@pytest.mark.unit
def test_report_headline_partial_status_roundtrip_and_compare(tmp_path):
    rep = BenchReport(device={"transport": "host", "simulated_device": False}, frames=17,
                      components=[_component("encoder", [34.0, 34.0]), _component("denoiser", [170.0, 170.0]),
                                  _component("decoder", [136.0])])
    assert rep.per_frame_ms(1) == pytest.approx((34 + 170 + 136) / 17)
    assert rep.per_frame_ms(2) == pytest.approx((34 + 2 * 170 + 136) / 17)
    assert rep.status == "ok"
    path = rep.save(tmp_path / "a.json")
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA and data["per_frame_ms"]["2"] == pytest.approx(30.0)
    assert data["protocol"]["percentile_method"] == "nearest-rank"
    assert data["components"][1]["summary"]["latency_ms"]["p50"] == 170.0
    again = BenchReport.load(path)
    assert again.per_frame_ms(2) == rep.per_frame_ms(2)
    faster = BenchReport(device={}, frames=17, components=[_component("encoder", [17.0]),
                                                            _component("denoiser", [85.0]),
                                                            _component("decoder", [68.0])])
    rows = {r["metric"]: r for r in compare(rep, faster)}
    assert rows["per-frame ms (2 steps)"]["ratio"] == pytest.approx(0.5)
    partial = BenchReport(device={}, frames=17, components=[_component("encoder", [1.0]),
                                                            _component("denoiser", [], status="failed")])
    assert partial.status == "partial" and partial.per_frame_ms(1) is None
    with pytest.raises(BadInputError, match="not supported"):
        validate({**data, "schema": "mi2v.bench/9"})
    with pytest.raises(BadInputError, match="not a mi2v bench report"):
        validate({"schema": "mi2v.manifest/1"})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BadInputError, match="not valid JSON"):
        BenchReport.load(tmp_path / "bad.json")


# ---- a small exported model ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory):
    """A conv + linear model exported to ONNX (dynamo, opset 18) and to ExecuTorch with XNNPACK."""
    torch = pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("tiny-artifacts")

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, image):
            return self.fc(torch.relu(self.conv(image)).mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = Tiny().eval()
    example = (torch.randn(1, 3, 32, 32),)
    torch.onnx.export(model, example, str(out / "tiny.onnx"), dynamo=True, opset_version=18,
                      input_names=["image"], output_names=["out"])
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = to_edge_transform_and_lower(torch.export.export(model, example),
                                          partitioner=[XnnpackPartitioner()]).to_executorch()
    (out / "tiny.pte").write_bytes(program.buffer)
    return out


def test_host_bench_onnx_and_pte(tiny_artifacts):
    for name, backend in (("tiny.onnx", "cpu"), ("tiny.pte", "xnnpack")):
        r = bench_artifact(tiny_artifacts / name, warmup=2, iterations=7, threads=1)
        assert len(r.samples_ms) == 7 and len(r.warmup_ms) == 2 and r.backend == backend
        assert r.load_ms > 0 and all(s > 0 for s in r.samples_ms) and r.peak_rss_kb > 0
    assert backends_in_pte((tiny_artifacts / "tiny.pte").read_bytes()) == ["XnnpackBackend"]
    with pytest.raises(BadInputError, match="runs on executorch, not onnxruntime"):
        runtime_for(tiny_artifacts / "tiny.pte", "onnxruntime")
    with pytest.raises(BadInputError, match="needs a Mac"):
        runtime_for("x.mlpackage")
    assert host_facts()["transport"] == "host"


@pytest.mark.unit
def test_the_runtimes_layer_decides_what_runs_here(tmp_path, monkeypatch):
    """Which runtime family runs an artifact, whether the host runs it and which ExecuTorch runtime loads a bare .pte
    are mi2v_export.runtimes' answers (issue 23), not tables of the devices; the raw outputs of a phone runner are
    read with its dtype table (bfloat16 widened to float32)."""
    def entry(target, delegate=None):
        return SimpleNamespace(target=target, delegate=delegate, file=f"x.{target}")

    assert [family_of(entry(t)) for t in ("onnx", "executorch", "coreml", "tflite")] == [
        "onnxruntime", "executorch", "coreml", None]
    qnn_pte = host._host_refuses(entry("executorch", "qnn"), "executorch")
    assert "which this machine cannot execute (QNN .pte files run only on a Snapdragon device" in qnn_pte
    assert host._host_refuses(entry("onnx"), "onnxruntime") is None
    assert pte_runtime(["XnnpackBackend"])[0].name == "executorch-xnnpack"
    assert pte_runtime([])[0].name == "executorch-portable"
    assert pte_runtime(["QnnBackend", "MPSBackend"])[1] == ["QnnBackend", "MPSBackend"]
    # a runtime that is not installed at all is no refusal: the run says what to install (its own exit code)
    vulkan = runtimes.get("executorch-vulkan")
    monkeypatch.setattr(type(vulkan), "version", lambda self: None)
    assert host._host_refuses(entry("executorch", "vulkan"), "executorch") is None

    half, bf16 = np.array([1.5, -2.0], np.float16), np.array([0x3FC0, 0xC000], np.uint16)  # bf16 1.5, -2.0
    (tmp_path / "o-0.bin").write_bytes(half.tobytes())
    (tmp_path / "o-1.bin").write_bytes(bf16.tobytes())
    outs = [SimpleNamespace(name="h", dtype="float16", shape=[2]), SimpleNamespace(name="b", dtype="bfloat16",
                                                                                   shape=[1, 2])]
    got = output_check.raw_outputs([tmp_path / "o-0.bin", tmp_path / "o-1.bin"], SimpleNamespace(outputs=outs))
    assert got["h"].dtype == np.float16 and np.array_equal(got["h"], half)
    assert got["b"].dtype == np.float32 and got["b"].tolist() == [[1.5, -2.0]]
    outs[0].dtype = "complex7"
    with pytest.raises(BadInputError, match="output 'h' has dtype 'complex7'"):
        output_check.raw_outputs([tmp_path / "o-0.bin"], SimpleNamespace(outputs=outs[:1]))


def test_host_runners_print_the_real_formats(tiny_artifacts, tmp_path):
    et = write_host_runner(EXECUTOR_RUNNER, tmp_path)
    ort = write_host_runner(ORT_PERF_TEST, tmp_path)
    assert is_host_runner(et.read_bytes())
    proc = subprocess.run([str(et), f"--model_path={tiny_artifacts / 'tiny.pte'}", "--num_executions", "6",
                           "--print_output=none", "--cpu_threads=1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    r = parse_executor_runner(proc.stdout + proc.stderr)
    assert len(r.samples_ms) == 6 and r.executions == 6 and r.load_ms > 0
    assert r.total_ms == pytest.approx(sum(r.samples_ms), rel=1e-3, abs=1e-3)
    help_text = subprocess.run([str(et), "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "num_executions" in help_text and "print_output" in help_text
    bad_flag = subprocess.run([str(et), "--print_all_output"], capture_output=True, text=True, timeout=60)
    assert bad_flag.returncode == 1 and "unknown command line flag 'print_all_output'" in bad_flag.stderr
    csv = tmp_path / "runs.csv"
    proc = subprocess.run([str(ort), "-e", "cpu", "-m", "times", "-r", "9", "-I", "-x", "1", "-s",
                           str(tiny_artifacts / "tiny.onnx"), str(csv)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    o = parse_ort_perf_test(proc.stdout, csv.read_text())
    assert len(o.samples_ms) == 9 and o.executions == 9 and o.summary["p50"] > 0 and o.load_ms > 0
    nnapi = subprocess.run([str(ort), "-e", "nnapi", "-I", str(tiny_artifacts / "tiny.onnx")],
                           capture_output=True, text=True, timeout=60)
    assert nnapi.returncode == 1 and "NNAPI is not supported in this build." in nnapi.stderr


# ---- -e qnn: the stand-in behaves like a QNN build, on the HTP simulator of the onnxruntime-qnn wheel --------------


@pytest.fixture(scope="module")
def qnn_context(tiny_artifacts, tmp_path_factory):
    """The tiny ONNX model compiled for the SM8650 HTP: an EPContext model with its context binary beside it."""
    from mi2v_export import qnn

    out = tmp_path_factory.mktemp("qnn-context")
    found, _ = qnn.compile_context(tiny_artifacts / "tiny.onnx", out / "tiny_ctx.onnx", "SM8650", fp16=True)
    assert found.htp_node_share == 1.0
    return out / "tiny_ctx.onnx"


def wheel_qnn_libraries(folder: Path) -> Path:
    """The QNN runtime libraries of the onnxruntime-qnn wheel (x86_64: the HTP simulator) copied into `folder`, as
    a user copies the Android ones beside the runner."""
    import shutil

    import onnxruntime_qnn

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("libQnnHtp.so", "libQnnSystem.so"):
        shutil.copy2(Path(onnxruntime_qnn.__file__).parent / name, folder / name)
    return folder


def test_host_ort_perf_test_runs_qnn_on_the_htp_simulator(qnn_context, tmp_path):
    ort = write_host_runner(ORT_PERF_TEST, tmp_path)
    libs = wheel_qnn_libraries(tmp_path / "libs")
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    csv = tmp_path / "runs.csv"
    cmd = [str(ort), "-e", "qnn", "-i", "backend_type|htp soc_model|57 htp_arch|75", "-m", "times", "-r", "5", "-I",
           "-s", str(qnn_context), str(csv)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**env, "LD_LIBRARY_PATH": str(libs)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    o = parse_ort_perf_test(proc.stdout, csv.read_text())
    assert len(o.samples_ms) == 5 and o.executions == 5 and o.load_ms > 0 and o.summary["p50"] > 0
    # backend_path instead of the library search; both at once is the QNN EP's own refusal
    by_path = ["-i", f"backend_path|{libs / 'libQnnHtp.so'} soc_model|57 htp_arch|75"]
    proc = subprocess.run([str(ort), "-e", "qnn", *by_path, "-m", "times", "-r", "2", "-I", str(qnn_context)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and "Total inference requests: 2" in proc.stdout, proc.stdout + proc.stderr
    both = subprocess.run([str(ort), "-e", "qnn", "-i", f"backend_type|htp backend_path|{libs}/libQnnHtp.so", "-I",
                           str(qnn_context)], capture_output=True, text=True, timeout=120, env=env)
    assert both.returncode == 1 and "Only one of 'backend_type' and 'backend_path'" in both.stderr
    # no QNN library where the loader looks: the QNN EP's load failure, no session, no result file
    csv.unlink()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1 and not csv.exists()
    assert 'QNN SetupBackend failed Unable to load backend, error:  dlopen failed: library "libQnnHtp.so" not found' \
        in proc.stderr
    assert parse_ort_perf_test(proc.stdout).errors[0].startswith(f"Load model from {qnn_context} failed:")
    bad = subprocess.run([str(ort), "-e", "qnn", "-i", "backend_type=htp", "-I", str(qnn_context)],
                         capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 1 and "Use a '|' to separate the key and value" in bad.stderr


# ---- the runners through the real adb client on the simulated phone ------------------------------------------------


@pytest.fixture(scope="module")
def sim(adb, phone):
    return adb.pick_device(phone.serial)


def test_executor_runner_flow_on_the_simulated_phone(sim, tiny_artifacts, tmp_path):
    props = sim.getprop()
    assert device_facts(props, sim.serial)["simulated_device"] is True
    runner = write_host_runner(EXECUTOR_RUNNER, tmp_path)
    model = tiny_artifacts / "tiny.pte"
    d = "/data/local/tmp/mi2v/" + hashlib.sha256(runner.read_bytes() + model.read_bytes()).hexdigest()[:8]
    sim.mkdirs(d)
    sim.push(runner, f"{d}/executor_runner")
    sim.push(model, f"{d}/model.pte")
    assert sim.sha256_many([f"{d}/model.pte"])[f"{d}/model.pte"] == hashlib.sha256(model.read_bytes()).hexdigest()
    sim.shell(["chmod", "755", f"{d}/executor_runner"], check=True)
    assert "num_executions" in sim.shell(f"cd {d} && ./executor_runner --help").out
    rc, out, err = sim.shell(f"cd {d} && toybox time -v taskset 1 ./executor_runner --model_path={d}/model.pte "
                             "--num_executions=8 --cpu_threads=1 --print_output=none", timeout=120)
    assert rc == 0, err
    r = parse_executor_runner(out + err)
    assert len(r.samples_ms) == 8 and r.load_ms > 0 and r.peak_rss_kb > 10_000
    assert f"Model file {d}/model.pte is loaded." in err  # device paths, as a phone prints them
    # a corrupt model: the runner's own failure, surfaced with its exit status
    sim.shell(f"head -c 100 {d}/model.pte > {d}/broken.pte", check=True)
    rc, _, err = sim.shell(f"cd {d} && ./executor_runner --model_path={d}/broken.pte")
    assert rc == 1 and "Failed to parse model file" in err
    sim.remove(d)


def test_ort_flow_with_result_file_pull(sim, tiny_artifacts, tmp_path):
    runner = write_host_runner(ORT_PERF_TEST, tmp_path)
    d = "/data/local/tmp/mi2v/ort"
    sim.push(runner, f"{d}/onnxruntime_perf_test")
    for f in sorted(tiny_artifacts.glob("tiny.onnx*")):  # the model and its external-data file, names unchanged
        sim.push(f, f"{d}/{f.name}")
    rc, out, err = sim.shell(f"cd {d} && LD_LIBRARY_PATH={d} ./onnxruntime_perf_test -e cpu -m times -r 12 -I -x 1 "
                             f"-s tiny.onnx {d}/runs_0.csv", timeout=120)
    assert rc == 0, out + err
    local = sim.pull(f"{d}/runs_0.csv", tmp_path / "runs_0.csv")
    o = parse_ort_perf_test(out, local.read_text())
    assert len(o.samples_ms) == 12 and o.mean_ms > 0
    rc, out, err = sim.shell(f"cd {d} && ./onnxruntime_perf_test -e qnn -I tiny.onnx")  # no QNN library there
    assert rc == 1 and "Unable to load backend" in err and "Load model from tiny.onnx failed" in out
    line = runner_failure(ORT_PERF_TEST, rc, out + err, [], parse_ort_perf_test(out + err).errors)
    assert 'could not load its backend (dlopen failed: library "libQnnHtp.so" not found)' in line
    assert "\n" not in line and "com.qualcomm.qti:qnn-runtime" in line
    with pytest.raises(DeviceError, match="does not exist on"):
        sim.pull(f"{d}/runs_9.csv", tmp_path / "none.csv")
    sim.remove(d)
