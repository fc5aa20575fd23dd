"""QNN through onnxruntime's QNN EP (`--target onnx --delegate qnn`): the tiny preset compiled for a Snapdragon HTP
and run on the HTP simulator of the onnxruntime-qnn wheel, CPU fallback disabled; the QNN lowering rewrites
(exact in fp32); and the one-line failures (unknown SoC, a node the HTP refuses, the wheel missing).

Budget: one module-scoped export of the three tiny components (~1 min on 2 cores: the simulator is slow for the
decoder's convolutions); everything else uses toys.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from mi2v_export import models, parity, qnn, runtimes
from mi2v_export.errors import BadInputError, VerificationError
from mi2v_export.exporters import components, rewrites
from mi2v_export.exporters.base import get_exporter
from mi2v_export.exporters.orchestrate import ExportRequest, run_export
from mi2v_export.manifest import read_manifest
from mi2v_export.presets import get_preset
from mi2v_export.shapes import geometry

from tests.conftest import run_cli, tiny_vae_part

TINY = get_preset("tiny")
TINY_GEO = geometry(TINY.height, TINY.width, TINY.frames)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]


# ---------------------------------------------------------------------------------------------------------------
# The tiny preset on the simulated HTP (fp16, all nodes on the HTP)


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("qnn") / "fp16"
    report = run_export(ExportRequest(target="onnx", delegate="qnn", out_dir=out, preset="tiny", soc="SM8650"))
    return out, report


@pytest.mark.heavy  # the tiny fp16 export of every component for the HTP: a minute; w8a16 stays in make test
def test_tiny_fp16_all_on_the_htp_and_gated_on_the_simulator(fp16_export):
    out, report = fp16_export
    manifest = read_manifest(out)
    assert [e.component for e in manifest.components] == ["encoder", "denoiser", "decoder"]
    for e in manifest.components:
        assert (e.target, e.delegate, e.precision, e.file) == ("onnx", "qnn", "fp16", f"{e.component}_ctx.onnx")
        info = e.target_info
        assert (info["soc"], info["htp_arch"], info["soc_model"]) == ("SM8650", "v75", 57)
        assert info["qnn_sdk_version"] == qnn.versions()["qnn_sdk_version"] and info["qnn_sdk_version"]
        assert info["htp_node_share"] == 1.0 and info["htp_flop_share"] == 1.0 and info["cpu_nodes"] == []
        roles = {f.role: f.file for f in e.extra_files}
        assert roles["qnn_source"] == f"{e.component}.onnx"
        binary = out / roles["qnn_context_binary"]
        assert binary.stat().st_size == info["context_binary_bytes"] > 0
        runs = e.parity["verified_on"]
        assert [(r["runtime"], r["runtime_version"], r["passed"]) for r in runs] == [(qnn.RUNTIME, "2.7.0", True)]
        assert e.parity["psnr_db"] >= 40.0, (e.component, e.parity)


@pytest.mark.heavy  # the tiny fp16 export of every component for the HTP: a minute; w8a16 stays in make test
def test_context_model_runs_with_cpu_fallback_disabled_and_matches_pytorch(fp16_export):
    """The EPContext model alone (what a phone loads) runs on the simulator with fallback disabled: one EPContext
    node, on the QNN EP; its output matches the PyTorch fp32 reference of the seeded input."""
    out, _ = fp16_export
    model = onnx.load(str(out / "denoiser_ctx.onnx"), load_external_data=False)
    assert [n.op_type for n in model.graph.node] == ["EPContext"]
    session = qnn.create_session(out / "denoiser_ctx.onnx", "SM8650", fp16=True)
    assert qnn.placement(session).cpu_nodes == []
    del session
    spec = components.load_component("denoiser", preset="tiny", geo=TINY_GEO)
    feeds = {k: v.numpy() for k, v in spec.inputs.items()}
    with runtimes.get(qnn.RUNTIME).load(out / "denoiser_ctx.onnx", soc="SM8650", fp16=True) as session:
        got = session.run(feeds)["velocity"]
    assert parity.psnr_db(got, spec.reference["velocity"]) >= 40.0


@pytest.mark.heavy  # the tiny fp16 export of every component for the HTP: a minute; w8a16 stays in make test
def test_denoiser_source_has_no_gather_and_rank4_rope(fp16_export):
    """The two causes of the 19 dB denoiser: GatherND (wrong on the HTP) and rank-5/6 RoPE ops (refused)."""
    out, _ = fp16_export
    from onnx import shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(out / "denoiser.onnx")))
    assert not [n for n in model.graph.node if n.op_type.startswith("Gather")]
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in model.graph.value_info}
    assert max(ranks.get(n.output[0], 0) for n in model.graph.node if n.op_type != "Transpose") <= 5


# ---------------------------------------------------------------------------------------------------------------
# Rewrites: exact in fp32


@pytest.mark.parametrize("part", ["ltx-encoder", "ltx-decoder", "turbo-vaed"])
def test_qnn_rewrites_keep_the_vae_function_and_put_norms_on_rank4(part):
    model, x = tiny_vae_part(part)
    with torch.no_grad():
        ref = model(x)
    m = copy.deepcopy(model)
    exporter = get_exporter("onnx", "qnn")
    counts = rewrites.apply_rewrites(m, exporter.rewrites)
    with rewrites.tracing(exporter.trace_rewrites), torch.no_grad():
        out = m(x)
        graph = torch.export.export(m, (x,)).graph
    assert parity.rel_l2(out, ref) < 1e-6, (part, counts)
    aten = torch.ops.aten
    norms = [n for n in graph.nodes if n.target in (aten.rsqrt.default, aten.sqrt.default, aten.layer_norm.default)]
    assert norms and all(n.args[0].meta["val"].dim() <= 4 for n in norms), part


def test_frame_conditioning_without_gather_is_exact():
    model = models.load_denoiser(preset="tiny")
    inputs = components.example_inputs("denoiser", TINY_GEO)
    with torch.no_grad():
        ref = model(*inputs.values())
        with rewrites.tracing(["frame_conditioning_without_gather"]):
            out = model(*inputs.values())
            graph = torch.export.export(model, tuple(inputs.values())).graph
    assert torch.equal(out, ref)
    assert not [n for n in graph.nodes if n.target == torch.ops.aten.index.Tensor]
    for frames in (1, 2, 5):
        values = torch.randn(2, 2, 7)
        want = values[:, [0] + [1] * (frames - 1)]
        assert torch.equal(rewrites._spread_over_frames_by_slices(values, frames), want)


# ---------------------------------------------------------------------------------------------------------------
# One-line failures


def test_unknown_soc_is_one_line_listing_the_table():
    assert qnn.soc_info("sm8550").htp_arch == 73
    with pytest.raises(BadInputError, match="unknown SoC 'SM9999'; supported: SM8450 .*SM8750"):
        qnn.soc_info("SM9999")
    proc = run_cli("export", "--target", "onnx", "--delegate", "qnn", "--soc", "SM9999", "--preset", "tiny")
    lines = error_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1
    assert all(name in lines[0] for name in qnn.SOCS), lines


class RankFiveSqrtDenoiser(nn.Module):
    """The denoiser's I/O with a Sqrt on a 5-D tensor, which the HTP refuses."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(128, 128, 1)

    def forward(self, latent, timestep, flow_score):
        h = self.conv(latent)
        return h * (h * h + 1.0).sqrt() * (timestep / 1000.0) + flow_score


def test_a_node_the_htp_refuses_fails_the_export_unless_fallback_is_allowed(tmp_path, monkeypatch):
    monkeypatch.setitem(components.LOADERS, "denoiser", lambda *a: RankFiveSqrtDenoiser())
    out = tmp_path / "out"
    request = ExportRequest(target="onnx", delegate="qnn", out_dir=out, components="denoiser", preset="tiny")
    with pytest.raises(VerificationError, match=r"not all on the HTP of SM8650: 1 node\(s\) the HTP refuses: "
                                                r"Sqrt x1") as err:
        run_export(request)
    assert err.value.exit_code == 4 and "\n" not in str(err.value) and not out.exists()

    request.allow_cpu_fallback = True
    request.min_psnr = 1.0  # the toy is no denoiser: its 2-step video diverges in any precision (not under test here)
    entry = run_export(request).entries[0]
    info = entry.target_info
    assert 0 < info["htp_node_share"] < 1 and [c.split(" ")[1] for c in info["cpu_nodes"]] == ["(Sqrt)"]
    assert info["htp_flop_share"] == 1.0  # the only conv runs on the HTP
    assert [r["runtime"] for r in entry.parity["verified_on"]] == [qnn.RUNTIME] and entry.parity["psnr_db"] >= 40.0
    assert entry.flags["allow_cpu_fallback"] is True


def test_a_compile_the_qnn_ep_cannot_finish_is_one_line(tmp_path):
    """onnxruntime's own failure while compiling (here: the EPContext model's folder is missing; at 720p the HTP's
    QNN_COMMON_ERROR_MEM_ALLOC) becomes a VerificationError of one line naming the model and the SoC."""
    source = tmp_path / "toy.onnx"
    torch.onnx.export(nn.Conv2d(4, 4, 3, padding=1), (torch.zeros(1, 4, 8, 8),), str(source), dynamo=True,
                      opset_version=18)
    with pytest.raises(VerificationError) as err:
        qnn.compile_context(source, tmp_path / "missing" / "toy_ctx.onnx", "SM8650", fp16=True)
    text = str(err.value)
    assert text.startswith("toy.onnx: the QNN EP could not compile it for SM8650: ") and "\n" not in text
    assert err.value.exit_code == 4
    mem = qnn.compile_failure(source, "SM8650", RuntimeError("Failed to finalize QNN graph. Error: "
                                                             "QNN_COMMON_ERROR_MEM_ALLOC: Memory allocation"))
    assert "cannot hold this graph at this size" in mem and "--tile" in mem


def test_missing_wheel_is_one_line():
    code = ("import sys; sys.modules['onnxruntime_qnn'] = None; from mi2v_export.cli import main; "
            "sys.argv = ['mi2v', 'export', '--target', 'onnx', '--delegate', 'qnn', '--preset', 'tiny']; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    lines = error_lines(proc)
    assert proc.returncode == 3 and len(lines) == 1 and "pip install onnxruntime-qnn==2.7.0" in lines[0], lines


def test_placement_counts_shares():
    placement = qnn.Placement(htp_nodes=["a", "b", "c"], cpu_nodes=[("d", "Sqrt")])
    assert placement.htp_node_share == 0.75
    assert placement.describe_cpu() == "1 node(s) the HTP refuses: Sqrt x1; e.g. d"
    assert np.isclose(qnn.Placement([], []).htp_node_share, 1.0)


def test_executorch_qnn_guard_names_the_sdk_it_needs_and_the_onnx_path(monkeypatch):
    from mi2v_export.errors import MissingDependencyError
    from mi2v_export.exporters.targets.executorch.delegates import check_qnn_sdk

    monkeypatch.delenv("QNN_SDK_ROOT", raising=False)
    with pytest.raises(MissingDependencyError) as err:
        check_qnn_sdk()
    assert "SDK 2.37" in str(err.value) and "--target onnx --delegate qnn" in str(err.value)


@pytest.mark.heavy  # the tiny fp16 export of every component for the HTP: a minute; w8a16 stays in make test
def test_host_bench_runs_qnn_artifacts_on_the_simulator_and_marks_them_simulated(fp16_export, tmp_path):
    out, _ = fp16_export
    report = tmp_path / "bench.json"
    proc = run_cli("bench", "--artifacts", str(out), "--device", "host", "--component", "encoder",
                   "--iterations", "1", "--warmup", "0", "--report", str(report))
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    data = json.loads(report.read_text())
    comp = data["components"][0]
    assert comp["status"] == "ok" and comp["runtime"]["simulated"] is True and comp["runtime"]["soc"] == "SM8650"
    assert comp["runs"][0]["backend"] == qnn.RUNTIME and len(comp["runs"][0]["samples_ms"]) == 1
    assert any("simulated timings" in w for w in data["warnings"])


@pytest.mark.heavy  # the tiny fp16 export of every component for the HTP: a minute; w8a16 stays in make test
def test_phone_bench_runs_the_context_model_with_onnxruntime_perf_test_on_the_qnn_simulator(fp16_export, adb, phone,
                                                                                            tmp_path):
    """`mi2v bench --device adb:SERIAL` on the simulated phone: DIR/runners/<abi>/ holds onnxruntime_perf_test (the
    host stand-in of a QNN build) and the QNN libraries (the wheel's x86_64 ones), pushed with it; the EPContext
    model runs on the HTP simulator through the real adb client and server."""
    import json
    import shutil

    import onnxruntime_qnn

    from mi2v_export.simulator.host_runners import write_host_runner
    from mi2v_export.simulator.phone import host_abi

    out, _ = fp16_export
    art = tmp_path / "art"  # the export, plus a runners folder
    art.mkdir()
    for f in out.iterdir():  # copies: a manifest's files may not lead out of its folder (mi2v_export/safepath.py)
        shutil.copytree(f, art / f.name) if f.is_dir() else shutil.copy2(f, art / f.name)
    runners = art / "runners" / host_abi()
    runners.mkdir(parents=True)
    write_host_runner("onnxruntime_perf_test", runners)
    report = tmp_path / "phone.json"
    args = ["bench", "--artifacts", str(art), "--device", f"adb:{phone.serial}", "--adb", adb.path, "--adb-port",
            str(adb.server_port), "--component", "encoder", "--iterations", "3", "--warmup", "1", "--cooldown", "0",
            "--report", str(report)]
    proc = run_cli(*args, env=adb.env)  # the QNN libraries are not there yet
    lines = error_lines(proc)
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-2000:]
    assert "needs libQnnHtp.so, libQnnSystem.so beside" in lines[0] and "com.qualcomm.qti:qnn-runtime" in lines[0]
    for name in ("libQnnHtp.so", "libQnnSystem.so"):
        shutil.copy2(Path(onnxruntime_qnn.__file__).parent / name, runners / name)
    proc = run_cli(*args, env=adb.env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(report.read_text())
    comp = data["components"][0]
    assert data["device"]["simulated_device"] is True and comp["status"] == "ok", comp
    assert comp["runtime"]["runner"] == "onnxruntime_perf_test" and comp["runtime"]["backend"] == "qnn-htp"
    assert {"libQnnHtp.so", "libQnnSystem.so"} <= set(comp["runtime"]["runner_libs"])
    assert {"encoder_ctx.onnx", "libQnnHtp.so", "libQnnSystem.so"} <= set(data["staging"]["pushed"])
    assert comp["runtime"]["simulated"] is True and comp["runtime"]["soc"] == "SM8650"
    run = comp["runs"][0]
    assert run["backend"] == "qnn-htp" and len(run["samples_ms"]) == 3 and len(run["warmup_ms"]) == 1
    assert all(ms > 0 for ms in run["samples_ms"]) and run["load_ms"] > 0
    assert any("QNN HTP simulator" in w and "simulated timings" in w for w in data["warnings"])


# ---------------------------------------------------------------------------------------------------------------
# w8a16: QDQ calibrated on what each component sees in the real sampler (mi2v_export.calibration), gated on the
# held-out records of the validation image


@pytest.fixture(scope="module")
def w8a16_export(tmp_path_factory):
    results = {}

    def export(name: str):
        if name not in results:
            out = tmp_path_factory.mktemp(f"w8a16-{name}") / "out"
            report = run_export(ExportRequest(target="onnx", delegate="qnn", out_dir=out, components=name,
                                              preset="tiny", precision="w8a16", soc="SM8650"))
            results[name] = (out, report.entries[0])
        return results[name]

    return export


@pytest.mark.parametrize("name", ["denoiser", pytest.param("encoder", marks=pytest.mark.slow),
                                  pytest.param("decoder", marks=pytest.mark.slow)])
def test_tiny_w8a16_all_on_the_htp_and_gated_on_the_simulator(w8a16_export, name):
    out, entry = w8a16_export(name)
    info = entry.target_info
    assert info["htp_node_share"] == 1.0 and info["precision"] == "w8a16" and entry.precision == "w8a16"
    assert {f.role: f.file for f in entry.extra_files}["qnn_source"] == f"{name}.qdq.onnx"
    assert info["source"]["quantization"]["calibration_samples"] > 0
    gate = entry.parity["gate"]
    assert (gate["metric"], gate["threshold"], gate["passed"]) == ("psnr_db", 30.0, True), entry.parity
    assert [r["runtime"] for r in entry.parity["verified_on"]] == [qnn.RUNTIME]


def test_qnn_bench_reuse_without_an_export_is_one_usage_line(tmp_path):
    """benchmarks/qnn.py --reuse simulates an existing export; without one it stops with exit 2 and one line."""
    import subprocess
    import sys

    from tests.conftest import REPO

    for extra in ([], ["--out", str(tmp_path)]):
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "qnn.py"), "--component", "denoiser",
                               "--reuse", "--json", str(tmp_path / "r.json"), *extra],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].endswith("--reuse needs --out DIR holding an export "
                                                              "(DIR/manifest.json)")
    assert not (tmp_path / "r.json").exists()


def _load_benchmark(name: str):
    import importlib.util

    from tests.conftest import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmark imports its sibling benchmarks/qnn.py
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def test_decoder_blocks_chained_are_the_decoder_and_twins_share_a_signature():
    """benchmarks/qnn_decoder_blocks.py sums per-block simulator times into a whole decode: that is only right if
    its blocks, chained, are exactly the decoder, and if blocks it calls twins run the same graph on the same shapes."""
    blocks = _load_benchmark("qnn_decoder_blocks")
    spec = components.load_component("decoder", preset="tiny", geo=TINY_GEO, reference=True)
    decoder = spec.module.model.decoder
    stages = blocks.decoder_stages(decoder)
    io = blocks.stage_io(stages, spec.inputs["latent"])
    last = list(io.values())[-1][1]
    assert torch.equal(last, next(iter(spec.reference.values())))
    by_signature = {}
    for name, (x, _, _, sig) in io.items():
        by_signature.setdefault(sig, []).append(name)
    twins = [names for names in by_signature.values() if len(names) > 1]
    assert twins, "the tiny Turbo-VAED has repeated resnets with one signature"
    for names in twins:
        shapes = {tuple(io[n][0].shape) for n in names}
        kinds = {type(stages[n]).__name__ for n in names}
        assert len(shapes) == 1 and len(kinds) == 1, names
    assert blocks.distinct(io) == [names[0] for names in by_signature.values()]


def test_decoder_blocks_bench_runs_one_block_on_the_simulator(tmp_path):
    """One tiny block (with a twin: up_blocks.0.resnets.0) through the per-block QNN bench: all on the HTP,
    simulated, within the fp16 gate, and the whole-decode sum says which seconds are measured and which are
    estimated."""
    from tests.conftest import REPO

    out = tmp_path / "blocks.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "qnn_decoder_blocks.py"), "--preset", "tiny",
                           "--stages", "mid_block.resnets.0", "--work", str(tmp_path / "w"), "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    result = json.loads(out.read_text())
    row = result["stages"]["mid_block.resnets.0"]
    assert row["htp_node_share"] == 1.0 and row["context_binary_bytes"] > 0
    assert row["simulator"]["finished"] and row["simulator"]["psnr_db"] >= parity.gate_for("fp16").threshold
    whole = result["whole_decode"]
    assert whole["seconds_from"]["measured"] == row["simulator"]["seconds"]
    assert whole["seconds_from"]["measured_twin"] > 0 and whole["seconds_from"]["flop_rate"] > 0
    assert whole["whole_decode_s"] == pytest.approx(sum(whole["seconds_from"].values()), abs=0.2)
    assert result["host"]["cpu"] and result["host"]["flags"]


def test_decoder_blocks_bench_bad_input_is_one_usage_line(tmp_path):
    """An unknown block, or --resume on a JSON of another configuration: exit 2, one line, nothing written."""
    import json

    from tests.conftest import REPO

    script = [sys.executable, str(REPO / "benchmarks" / "qnn_decoder_blocks.py"), "--preset", "tiny"]
    proc = subprocess.run([*script, "--stages", "nope", "--json", str(tmp_path / "a.json")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown block(s) nope; the blocks are: conv_in," in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "a.json").exists()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"preset": "tiny", "resolution": [64, 64], "frames": 9, "soc": "SM8650"}))
    proc = subprocess.run([*script, "--resume", "--json", str(other)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("holds another configuration")
