"""--precision: names, the per-component parser, the (target, delegate) support table, one-line errors."""

from __future__ import annotations

import json
import os
import sys
import warnings
from types import SimpleNamespace

import pytest
import torch

from mi2v_export import parity
from mi2v_export import precision as P
from mi2v_export.errors import BadInputError
from mi2v_export.exporters.base import get_exporter
from mi2v_export.exporters.orchestrate import ExportRequest, prepare, run_export
from mi2v_export.exporters.quantize import SENSITIVE_UNITS
from mi2v_export.manifest import read_manifest
from mi2v_export.shapes import geometry

from tests.conftest import run_cli



def _plain(**request):
    """An export request that writes what the quantizer makes: no 3 dB margin keeping units float (the margin is
    tests/integration/test_margin.py's), so the structure asserted here is the quantizer's."""
    return ExportRequest(gate_margin=0, **request)

def error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


def test_names_are_the_contract():
    assert [p.value for p in P.Precision] == ["fp32", "fp16", "w8a8", "w8", "w4", "w8a16", "mixed"]
    assert P.Precision.FP16.float_dtype == "fp16" and P.Precision.W8A8.float_dtype == "fp32"
    assert P.Precision.W8A8.quantized and not P.Precision.FP16.quantized


def test_parse_one_and_per_component():
    assert P.parse("W8A8") is P.Precision.W8A8
    assert P.parse("denoiser=w8a8, decoder=fp16") == {"denoiser": P.Precision.W8A8, "decoder": P.Precision.FP16}
    assert P.parse(None) is None


@pytest.mark.parametrize("text,match", [
    ("int3", "unknown precision 'int3'; choose one of: fp32, fp16, w8a8, w8, w4, w8a16"),
    ("vae=fp16", "expected COMPONENT=PRECISION pairs"),
    ("denoiser=fp16,denoiser=fp32", "denoiser is named twice"),
    ("mixed", "pass --recipe FILE"),
])
def test_parse_errors(text, match):
    with pytest.raises(BadInputError, match=match):
        P.parse(text)


def cells(target: str, delegate: str | None = None) -> tuple:
    """What the exporter of (target, delegate) declares it produces, and its label in errors."""
    return get_exporter(target, delegate).precisions_for(delegate), P.target_label(target, delegate)


def test_resolve_defaults_alias_and_components():
    comps = ["encoder", "denoiser", "decoder"]
    got = P.resolve("denoiser=fp16", None, comps, *cells("onnx"), "fp32")
    assert got == {"encoder": P.Precision.FP32, "denoiser": P.Precision.FP16, "decoder": P.Precision.FP32}
    assert set(P.resolve(None, "fp16", comps, *cells("onnx"), "fp32").values()) == {P.Precision.FP16}
    assert set(P.resolve(None, None, comps, *cells("coreml"), "fp16").values()) == {P.Precision.FP16}
    with pytest.raises(BadInputError, match="disagree"):
        P.resolve("fp32", "fp16", comps, *cells("onnx"), "fp32")
    with pytest.raises(BadInputError, match="does not include"):
        P.resolve("decoder=fp16", None, ["denoiser"], *cells("onnx"), "fp32")
    with pytest.raises(BadInputError, match="unknown dtype 'int8'; choose one of: fp32, fp16"):
        P.resolve(None, "int8", comps, *cells("onnx"), "fp32")


def test_each_exporter_declares_its_precisions():
    """The support table as the exporters declare it (one home: `Exporter.supported`, ExecuTorch per delegate)."""
    F32, F16, W8A8, W8, W4, W8A16 = (P.Precision(p) for p in ("fp32", "fp16", "w8a8", "w8", "w4", "w8a16"))
    assert cells("onnx")[0] == (F32, F16, W8A8, W8, W4, W8A16)
    assert cells("onnx", "qnn")[0] == (F16, W8A16, W8A8)
    assert cells("coreml")[0] == (F32, F16, W8A8, W8, W4)
    assert cells("executorch", "xnnpack")[0] == cells("executorch", "vulkan")[0] == (F32, F16, W8A8, W8, W4)
    assert cells("executorch", "qnn")[0] == (F16,) and cells("executorch", "coreml")[0] == (F32, F16)
    assert [p.value for p in P.Precision if p.quantized] == ["w8a8", "w8", "w4", "w8a16", "mixed"]


def test_unsupported_cell_is_one_line_naming_what_is_supported(tmp_path):
    with pytest.raises(BadInputError) as info:
        prepare(ExportRequest(target="executorch", delegate="qnn", out_dir=tmp_path / "o", preset="tiny",
                              precision="fp32"))
    text = str(info.value)
    assert "\n" not in text and "--delegate qnn does not support --precision fp32" in text and "fp16" in text
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("target,prec,says", [
    ("executorch", "w8", "quantizes Linear layers and 1x1 convs only, and the decoder has none"),
    pytest.param("executorch", "w4", "quantizes Linear layers and 1x1 convs only, and the decoder has none",
                 marks=pytest.mark.slow),  # the same refusal as w8 (exporters/quantize/pt2e.py)
    ("onnx", "w4", "quantizes MatMul weights only, and this component keeps"),
])
def test_weight_only_precisions_refuse_a_convolutional_component(tmp_path, target, prec, says):
    """XNNPACK w8 / w4 reach Linear layers (and 1x1 convs) only, onnxruntime w4 MatMuls only; Turbo-VAED is 3x3
    convs, so it would have stayed about fp32 size under a w8/w4 label: one line naming what to use instead, exit 2,
    nothing written."""
    delegate = ["--delegate", "xnnpack"] if target == "executorch" else []
    proc = run_cli("export", "--target", target, *delegate, "--preset", "tiny", "--component", "decoder",
                   "--precision", prec, "--out", tmp_path / "o")
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = error_line(proc)
    assert says in line and ("use w8a8 or fp16" in line or "use w8 or w8a8" in line)
    assert not (tmp_path / "o").exists()


def test_cli_precision_errors_exit_2(tmp_path):
    proc = run_cli("export", "--target", "onnx", "--preset", "tiny", "--precision", "int3", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "unknown precision 'int3'" in error_line(proc)
    proc = run_cli("export", "--target", "onnx", "--preset", "tiny", "--calibration", tmp_path / "none",
                   "--precision", "fp16", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "--calibration" in error_line(proc)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------------------------
# Every supported (target, precision) cell that runs here: export the tiny denoiser, gate it on the real runtime,
# and check the manifest tells the truth about it.

RUNS_HERE = [(t, d, p.value) for t, d in (("onnx", None), ("executorch", "xnnpack"))
             for p in get_exporter(t, d).precisions_for(d) if p is not P.Precision.FP32]
# PT2E calibration and XNNPACK lowering of a quantized graph take minutes even at the tiny preset on a loaded
# 2-core host: the ExecuTorch cells run with `make test-slow` (make test keeps every onnxruntime cell, and the
# XNNPACK w8a8 decoder and Vulkan w8a8 tests below lower ExecuTorch integer graphs).
SLOW_CELLS = {("executorch", "w8a8"), ("executorch", "w4"), ("executorch", "fp16"), ("executorch", "w8")}
CELLS = [pytest.param(t, d, p, id=f"{t}-{p}", marks=[pytest.mark.slow] if (t, p) in SLOW_CELLS else [])
         for t, d, p in RUNS_HERE]


@pytest.fixture(scope="module")
def calibration_cache(tmp_path_factory):
    """One calibration cache for the module: the first integer cell records the sampler, the others reuse it."""
    path = tmp_path_factory.mktemp("mi2v-cache")
    old = os.environ.get("MI2V_CACHE")
    os.environ["MI2V_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MI2V_CACHE", None)
    else:
        os.environ["MI2V_CACHE"] = old


class _Fp32Bytes(dict):
    """target → bytes of its fp32 tiny denoiser, exported when a cell of that target first asks (the ExecuTorch
    cells run only with `make test-slow`)."""

    def __init__(self, tmp_path_factory):
        super().__init__()
        self.factory = tmp_path_factory

    def __missing__(self, target: str) -> int:
        delegate = "xnnpack" if target == "executorch" else None
        report = run_export(_plain(target=target, delegate=delegate, out_dir=self.factory.mktemp(f"fp32-{target}"),
                                   preset="tiny", components="denoiser", precision="fp32", verify=False))
        self[target] = report.entries[0].bytes
        return self[target]


@pytest.fixture(scope="module")
def fp32_denoisers(tmp_path_factory):
    """The fp32 tiny denoiser's bytes per target: the size every other precision is compared with."""
    return _Fp32Bytes(tmp_path_factory)


# bytes / fp32 bytes at the tiny preset, with margin (measured: fp16 0.51-0.52, integer 0.21-0.32; before
# the pointwise-conv rewrite and the int8 fallback the XNNPACK w4 denoiser was 0.96: nothing was compressed)
MAX_COMPRESSION = {"fp16": 0.6, "w8a8": 0.4, "w8": 0.4, "w4": 0.4, "w8a16": 0.4}


@pytest.mark.parametrize("target,delegate,prec", CELLS)
def test_cell_exports_gates_and_records(tmp_path, calibration_cache, fp32_denoisers, target, delegate, prec):
    report = run_export(_plain(target=target, delegate=delegate, out_dir=tmp_path / "a", preset="tiny",
                                      components="denoiser", precision=prec))
    e = read_manifest(tmp_path / "a").find("denoiser")
    assert e.precision == prec and e.dtype == P.Precision(prec).float_dtype
    assert e.bytes == (tmp_path / "a" / e.file).stat().st_size
    assert e.bytes < fp32_denoisers[target]  # every reduced precision is smaller than fp32 here
    assert e.compression <= MAX_COMPRESSION[prec], (prec, e.compression)  # the weights really shrank
    assert e.compression == pytest.approx(e.bytes / e.export["fp32_bytes"], rel=1e-3)
    gate = e.parity["gate"]
    run = e.parity["verified_on"][-1]
    assert run["runtime"] in ("onnxruntime", "executorch-xnnpack") and run["passed"] and gate["passed"]
    assert gate["threshold"] == parity.gate_for(prec).threshold
    traj = e.trajectory
    assert traj["image"] == "chelsea.png" and traj["steps"] == 2 and traj["passed"]
    assert float(traj["psnr_db_min"]) >= traj["gate_db"] == parity.TRAJECTORY_PSNR_MIN_DB[prec]
    assert 0 < traj["ssim_min"] <= 1 and traj["verified_on"] == {"denoiser": run["runtime"].split("-")[0]}
    assert isinstance(e.runtime_memory_bytes, int) and e.runtime_memory_bytes > 0
    if P.Precision(prec).quantized:
        assert e.calibration["digest"] and e.calibration["size"] > 0
        assert e.parity["inputs"].startswith("held-out")
        assert e.target_info["quantization"]["precision"] == prec
        if target == "onnx" and prec in ("w8a8", "w8"):
            assert_only_weight_matmuls_are_integer(tmp_path / "a" / e.file)
        if prec == "w4":  # the sensitive units get int8 weights, the rest int4
            assert e.target_info["quantization"]["int8_units"] == [f"model.{u}" for u in SENSITIVE_UNITS]
            if target == "onnx":
                q = e.target_info["quantization"]
                assert q["int8_matmuls"] > 0 and q["matmul_nbits"] > 0
    else:
        assert e.calibration is None
    assert report.entries[0].precision == prec


def assert_only_weight_matmuls_are_integer(path):
    """onnxruntime w8a8 / w8: no ConvInteger (slow), every 1x1 conv a quantized MatMul, and the MatMuls of two
    activations (attention) float."""
    import onnx

    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    consts = {i.name for i in graph.initializer}
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in consts}
    assert "ConvInteger" not in ops
    assert all(n.op_type != "Conv" or graph_attr(n, "group") > 1 for n in graph.node)  # only depthwise stay Conv
    weight_mm = [n for n in graph.node if n.op_type in ("MatMul", "MatMulInteger") and set(n.input) & (
        consts | dequantized)]
    assert weight_mm and all(n.op_type == "MatMulInteger" or n.input[1] in dequantized for n in weight_mm)
    pairs = [n for n in graph.node if n.op_type == "MatMul" and not set(n.input) & (consts | dequantized)]
    producers = {o: n.op_type for n in graph.node for o in n.output}
    assert pairs and not any(producers.get(i) == "DequantizeLinear" for n in pairs for i in n.input)


@pytest.mark.parametrize("prec", ["w8", "w8a8"])
def test_onnx_integer_decoder_shrinks_without_conv_integer(tmp_path, calibration_cache, prec):
    """Turbo-VAED is 3x3 convs: w8 stores them int8 (dequantized in the graph), w8a8 runs them as QDQ convs."""
    import onnx

    run_export(_plain(target="onnx", out_dir=tmp_path / "a", preset="tiny", components="decoder",
                             precision=prec))
    e = read_manifest(tmp_path / "a").find("decoder")
    assert e.compression <= MAX_COMPRESSION[prec] and e.parity["gate"]["passed"] and e.trajectory["passed"]
    graph = onnx.load(str(tmp_path / "a" / e.file)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    full = [n for n in graph.node if n.op_type == "Conv" and graph_attr(n, "group") == 1]
    assert full and all(n.input[1] in dequantized for n in full)  # every group-1 conv has int8 weights
    assert "ConvInteger" not in [n.op_type for n in graph.node]
    if prec == "w8a8":  # ... and 8-bit activations, uint8 (U8S8: onnxruntime's fast x86 form)
        assert all(n.input[0] in dequantized for n in full)
        inits = {i.name: i for i in graph.initializer}
        act_zero_points = {inits[n.input[2]].data_type for n in graph.node if n.op_type == "QuantizeLinear"}
        assert act_zero_points == {onnx.TensorProto.UINT8}


def graph_attr(node, name: str, default=1):
    return next((a.i for a in node.attribute if a.name == name), default)


# ---------------------------------------------------------------------------------------------------------------
# Mixed precision: analyze writes a recipe, export applies it, the manifest carries it


@pytest.fixture(scope="module")
def tiny_recipe(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe") / "denoiser.json"
    proc = run_cli("quantize", "analyze", "--preset", "tiny", "--component", "denoiser", "--precision", "w8a8",
                   "--unit-psnr", "30", "--out", out, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_analyze_measures_every_unit(tiny_recipe):
    from mi2v_export import recipe as rc

    data = rc.load(tiny_recipe, "denoiser")
    assert data["precision"] == "w8a8" and data["validation"]["image"] == "chelsea.png"
    assert set(data["units"]) == set(data["analysis"]) >= {"t_embedder", "final_layer", "blocks.0", "blocks.1"}
    for unit, a in data["analysis"].items():  # the rule: below the unit threshold keeps fp32
        assert data["units"][unit] == ("w8a8" if float(a["psnr_db_min"]) >= 30 else "fp32")
    sim = {k: float(v) for k, v in data["simulated_psnr_db_min"].items()}
    assert sim["recipe"] >= sim["all_units"] - 1e-6


def test_recipe_round_trip_through_export(tmp_path, calibration_cache, tiny_recipe):
    data = json.loads(tiny_recipe.read_text())
    for unit in ("t_embedder", "t_block", "final_layer"):  # a user keeps the sensitive units by hand too
        data["units"][unit] = "fp32"
    data["units"]["blocks.0"] = "w8a8"
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(data))
    run_export(_plain(target="onnx", out_dir=tmp_path / "a", preset="tiny", components="denoiser",
                             recipe=path))
    e = read_manifest(tmp_path / "a").find("denoiser")
    assert e.precision == "mixed" and e.recipe == data
    q = e.target_info["quantization"]
    assert q["applied"] == "w8a8" and set(q["kept_float"]) >= {"model.t_embedder", "model.final_layer"}
    assert q["nodes_kept_float"] > 0 and e.parity["gate"]["passed"] and e.trajectory["passed"]


@pytest.mark.parametrize("dynamic", [False, True], ids=["w8a8", "w8"])
def test_executorch_recipe_keeps_its_float_units_unquantized(dynamic):
    """A recipe's float units stay out of the PT2E quantizer (ExecuTorch 1.5 refuses set_module_name(name, None):
    every ExecuTorch export with a recipe keeping a unit failed with an AssertionError before)."""
    from mi2v_export.exporters.quantize.pt2e import _pt2e

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.kept, self.quantized = torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)

        def forward(self, x):
            return self.quantized(self.kept(x))

    args = (torch.randn(4, 64),)
    graph = _pt2e(Two().eval(), args, dynamic=dynamic, calibration=[args], keep=["kept"])
    quantized_weights = {n.args[0].target for n in graph.graph.nodes
                         if "dequantize_per_channel" in str(n.target) and n.args[0].op == "get_attr"}
    linears = [n for n in graph.graph.nodes if n.target == torch.ops.aten.linear.default]
    weights_of = {n.meta["nn_module_stack"][next(reversed(n.meta["nn_module_stack"]))][0]: n.args[1]
                  for n in linears}
    assert len(quantized_weights) == 1
    assert weights_of["kept"].op == "get_attr" and weights_of["kept"].target not in quantized_weights
    assert weights_of["quantized"].op != "get_attr" or weights_of["quantized"].target in quantized_weights


def test_recipe_errors_are_one_line(tmp_path, tiny_recipe):
    with pytest.raises(BadInputError, match="not the encoder|does not include"):
        prepare(ExportRequest(target="onnx", out_dir=tmp_path / "o", preset="tiny", components="encoder",
                              recipe=tiny_recipe))
    with pytest.raises(BadInputError, match="does not support --precision w8a8"):
        prepare(ExportRequest(target="executorch", delegate="coreml", out_dir=tmp_path / "o", preset="tiny",
                              components="denoiser", recipe=tiny_recipe))
    weights_only = tmp_path / "w8.json"
    data = json.loads(tiny_recipe.read_text())
    weights_only.write_text(json.dumps(dict(data, precision="w8", units={u: "w8" for u in data["units"]})))
    with pytest.raises(BadInputError, match="Core ML recipes take w8a8 only"):
        prepare(ExportRequest(target="coreml", out_dir=tmp_path / "o", preset="tiny", components="denoiser",
                              recipe=weights_only))
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something-else"}')
    with pytest.raises(BadInputError, match="not a mi2v-precision-recipe"):
        prepare(ExportRequest(target="onnx", out_dir=tmp_path / "o", preset="tiny", recipe=bad))


# ---------------------------------------------------------------------------------------------------------------
# Core ML: compressed weights, checked by their decompressed values in PyTorch (no Core ML runtime off macOS)


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS Core ML itself runs the artifact")
def test_coreml_w8_is_verified_honestly_as_pytorch_simulated(tmp_path, calibration_cache):
    run_export(_plain(target="coreml", out_dir=tmp_path / "a", preset="tiny", components="denoiser",
                             precision="w8"))
    e = read_manifest(tmp_path / "a").find("denoiser")
    run = e.parity["verified_on"][-1]
    assert e.precision == "w8" and run["runtime"] == "pytorch-simulated" and run["runtime_version"]
    assert e.parity["gate"]["passed"]
    assert "linear_quantize_weights" in e.target_info["quantization"]["tool"]
    assert e.trajectory["passed"] and e.trajectory["verified_on"] == {"denoiser": "pytorch-simulated"}
    assert e.compression < 0.35  # int8 weights: about a quarter of the fp32 bytes, plus what stays fp16
    assert e.target_info["compute_precision"] == "fp16"  # the Neural Engine computes in fp16 (was fp32 before)


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS Core ML itself runs the artifact")
def test_coreml_w8a8_quantizes_weights_and_activations_and_is_checked_in_pytorch(tmp_path, calibration_cache,
                                                                                  tiny_recipe):
    """PT2E in PyTorch, converted: the ML Program holds int8 weights and activation quantize / dequantize pairs at
    every linear / conv input, computes in fp16, and its gate ran the quantized graph (pytorch-simulated). A w8a8
    recipe keeps its float units out of the quantizer."""
    import coremltools as ct

    from mi2v_export.exporters.targets.coreml import mil_op_histogram

    data = json.loads(tiny_recipe.read_text())
    data["units"].update({u: "fp32" for u in ("t_embedder", "t_block", "final_layer")})
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(data))
    for name, request in (("all", {"precision": "w8a8"}), ("mixed", {"recipe": recipe})):
        run_export(_plain(target="coreml", out_dir=tmp_path / name, preset="tiny", components="denoiser",
                                 **request))
    ops = {}
    for name in ("all", "mixed"):
        e = read_manifest(tmp_path / name).find("denoiser")
        run = e.parity["verified_on"][-1]
        assert run["runtime"] == "pytorch-simulated" and run["passed"] and e.parity["inputs"].startswith("held-out")
        assert e.target_info["compute_precision"] == "fp16" and e.target_info["quantization"]["applied"] == "w8a8"
        assert e.calibration["size"] > 0 and e.trajectory["passed"]  # the 2-step video with the stand-in
        assert e.trajectory["verified_on"] == {"denoiser": "pytorch-simulated"}
        spec = ct.models.MLModel(str(tmp_path / name / e.file), skip_model_load=True).get_spec()
        ops[name] = mil_op_histogram(spec)
        assert any("w8a8 ops present" in c for c in e.structure["checks"])
    e = read_manifest(tmp_path / "all").find("denoiser")
    assert e.precision == "w8a8" and e.compression < 0.35
    linears_and_convs = ops["all"]["linear"] + ops["all"]["conv"]
    assert ops["all"]["quantize"] == ops["all"]["constexpr_affine_dequantize"] == linears_and_convs
    mixed = read_manifest(tmp_path / "mixed").find("denoiser")
    assert mixed.precision == "mixed" and "model.final_layer" in mixed.target_info["quantization"]["kept_float"]
    assert 0 < ops["mixed"]["quantize"] < ops["all"]["quantize"]


def test_coreml_structural_check_refuses_a_label_without_its_ops():
    from mi2v_export.errors import VerificationError
    from mi2v_export.exporters.targets.coreml import _compression_check

    ops = {"linear": 3, "constexpr_affine_dequantize": 3}
    assert "constexpr_affine_dequantize×3" in _compression_check("d.mlpackage", ops, "w8")
    with pytest.raises(VerificationError, match="labelled w8a8 but has no quantize"):
        _compression_check("d.mlpackage", ops, "w8a8")
    with pytest.raises(VerificationError, match="no constexpr_lut_to_dense"):
        _compression_check("d.mlpackage", ops, "w4")


# ---------------------------------------------------------------------------------------------------------------
# ExecuTorch Vulkan: quantized linears, structural checks (no Vulkan runtime here) + the quantized graph in PyTorch


# the tiny denoiser's int4-eligible linears (input size a multiple of 32) are all in the units w4 keeps at int8
@pytest.mark.parametrize("prec,check", [pytest.param("w8a8", "Vulkan w8a8 kernel: et_vk.linear_q8ta_q8csw",
                                                     marks=pytest.mark.heavy),  # 40 s; the others: slow
                                        pytest.param("w8", "Vulkan w8 kernel: aten._weight_int8pack_mm",
                                                     marks=pytest.mark.slow),
                                        pytest.param("w4", "Vulkan w4: no Linear takes int4 groups",
                                                     marks=pytest.mark.slow)])
def test_vulkan_integer_cells_lower_to_their_kernels(tmp_path, calibration_cache, prec, check):
    run_export(_plain(target="executorch", delegate="vulkan", out_dir=tmp_path / "a", preset="tiny",
                             components="denoiser", precision=prec))
    e = read_manifest(tmp_path / "a").find("denoiser")
    assert e.precision == prec and e.compression < 0.4  # fp32: 1.0
    run = e.parity["verified_on"][-1]
    assert run["runtime"] == "pytorch-simulated" and run["passed"] and e.parity["inputs"].startswith("held-out")
    assert any(c.startswith(check) for c in e.structure["checks"])
    assert e.delegation["flops_share_delegated"] == 1.0  # the convs too (quantized under the trace rewrites)
    assert e.trajectory["passed"] and e.trajectory["verified_on"] == {"denoiser": "pytorch-simulated"}


def test_vulkan_w4_groups_of_32_become_the_fused_int4_kernel():
    from executorch.exir import to_edge_transform_and_lower

    from mi2v_export.exporters.quantize import executorch_quantize, int4_linears, int8_units
    from mi2v_export.exporters.targets.executorch import delegates as etx

    class Wrapper(torch.nn.Module):  # named like the export wrapper: int8_units are "model.<unit>"
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Module()
            self.model.blocks = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.Linear(96, 64))
            self.model.final_layer = torch.nn.Linear(64, 32)

        def forward(self, x):
            return self.model.final_layer(self.model.blocks(x))

    torch.manual_seed(0)
    x = torch.randn(1, 16, 64)
    module = executorch_quantize(Wrapper().eval(), (x,), "w4", None, component="denoiser", delegate="vulkan")
    assert int4_linears(module, [], int8_units("denoiser", "w4")) == 2  # the final layer is int8
    edge = to_edge_transform_and_lower(torch.export.export(module, (x,), strict=False),
                                       partitioner=etx._vulkan_partitioners(None))
    assert etx.vulkan_ops(edge).get("et_vk.linear_q4gsw.default") == 2


def test_vulkan_refuses_integer_precisions_for_a_component_without_linears(tmp_path):
    proc = run_cli("export", "--target", "executorch", "--delegate", "vulkan", "--preset", "tiny", "--component",
                   "decoder", "--precision", "w8a8", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "on ExecuTorch Vulkan quantizes Linear layers and 1x1 convs only" in error_line(proc)
    assert not (tmp_path / "o").exists()


def test_vulkan_kernel_check_refuses_a_label_without_its_kernel():
    from mi2v_export.errors import VerificationError
    from mi2v_export.exporters.base import Artifact
    from mi2v_export.exporters.targets.executorch.delegates import _vulkan_kernel_check

    artifact = Artifact(file="d.pte", inputs=[], outputs=[], target_info={"vulkan_ops": {"aten.addmm.default": 4}})
    with pytest.raises(VerificationError, match="labelled w4 but its Vulkan graph has no et_vk.linear_q4gsw"):
        _vulkan_kernel_check(artifact, "w4")


def test_coreml_w4_needs_ios18(tmp_path):
    with pytest.raises(BadInputError, match="needs --min-ios 18"):
        prepare(ExportRequest(target="coreml", out_dir=tmp_path / "o", preset="tiny", precision="w4"))


def test_xnnpack_w8a8_decoder_quantizes_at_convs_and_linears_only():
    """Turbo-VAED's residual adds and RMS-norm multiplies stay float (each cost ~2 dB in int8): no add / mul output
    is quantized, while XNNPACK's every-pattern default (the other components) quantizes them."""
    from mi2v_export.exporters import components, rewrites
    from mi2v_export.exporters.quantize import executorch_quantize

    exporter = get_exporter("executorch")
    spec = components.load_component("decoder", preset="tiny", geo=geometry(128, 192, 9), reference=False)
    rewrites.apply_rewrites(spec.module, exporter.rewrites)

    def quantized_inputs(component: str) -> set[str]:
        with rewrites.tracing(exporter.trace_rewrites), torch.no_grad():
            graph = executorch_quantize(spec.module, spec.args, "w8a8", [spec.args], component=component)
        return {getattr(q.args[0].target, "__name__", "").split(".")[0] for q in graph.graph.nodes
                if q.op == "call_function" and getattr(q.target, "__name__", "").startswith("quantize_per_tensor")}

    decoder = quantized_inputs("decoder")
    assert "conv2d" in decoder and not decoder & {"add", "mul"}
    assert quantized_inputs("every-pattern") & {"add", "mul"}


def test_pointwise_convs_become_exact_linears_for_the_linear_only_quantizers():
    from mi2v_export.exporters.quantize import Conv1x1AsLinear, conv1x1_as_linear

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1), torch.nn.Conv2d(16, 16, 3, padding=1, groups=16),
                            torch.nn.Conv2d(16, 4, 1, bias=False), torch.nn.Conv2d(4, 4, 1, stride=2))
    x = torch.randn(3, 8, 5, 7)
    ref = m(x)
    conv1x1_as_linear(m, keep=["3"])
    assert [type(c).__name__ for c in m] == ["Conv1x1AsLinear", "Conv2d", "Conv1x1AsLinear", "Conv2d"]
    assert isinstance(m[0].linear, torch.nn.Linear) and m[0].weight is m[0].linear.weight
    torch.testing.assert_close(m(x), ref, rtol=0, atol=1e-5)
    assert not isinstance(m[3], Conv1x1AsLinear)  # strided, and kept


class _DenoiserLayerNorm(torch.nn.Module):
    def forward(self, x):
        from mi2v_export.models import denoiser

        return denoiser.layer_norm(x, 1e-6)


def _xnnpack_fp16_psnr(module, x: torch.Tensor, trace: tuple[str, ...]) -> float:
    """The fp16 module lowered as `--precision fp16` lowers it (XNNPACK partitioner, the given trace rewrites), run
    on the ExecuTorch runtime, against fp32 PyTorch."""
    from executorch.runtime import Runtime

    from mi2v_export.exporters import rewrites
    from mi2v_export.exporters.base import ExportOptions
    from mi2v_export.exporters.targets.executorch import DELEGATES

    options = ExportOptions(target="executorch", delegate="xnnpack", dtype="fp16", precision="fp16")
    with rewrites.tracing(trace), torch.no_grad():
        program = DELEGATES["xnnpack"].lower(module.half(), (x.half(),), options, False).to_executorch()
    out = Runtime.get().load_program(program.buffer).load_method("forward").execute([x.half()])[0]
    return parity.psnr_db(out.float().numpy(), module.float()(x).numpy())


def test_executorch_fp16_layer_norm_is_an_fp32_island():
    """ExecuTorch's portable fp16 LayerNorm (never delegated) accumulates in fp16: on the 270M denoiser's 1152
    channels it is ~14 dB, which took the whole denoiser to 15 dB. The ExecuTorch trace rewrites run it in fp32."""
    torch.manual_seed(0)
    x = torch.randn(1, 64, 1152) * 3 + 1.5
    trace = get_exporter("executorch").trace_rewrites
    assert "layer_norm_fp32" in trace
    assert _xnnpack_fp16_psnr(_DenoiserLayerNorm(), x, trace) > 70
    assert _xnnpack_fp16_psnr(_DenoiserLayerNorm(), x, ()) < 30  # the runtime defect the island works around


@pytest.mark.parametrize("attention", ["reference", "mobile"])
def test_layer_norm_fp32_keeps_the_fp32_denoiser_exact(attention):
    from mi2v_export.exporters import components, rewrites

    spec = components.load_component("denoiser", preset="tiny", geo=geometry(128, 192, 9), attention=attention)
    with rewrites.tracing(["layer_norm_fp32"]), torch.no_grad():
        out = spec.module(*spec.args)
    assert torch.equal(out, next(iter(spec.reference.values()))) if attention == "reference" else \
        parity.rel_l2(out, next(iter(spec.reference.values()))) < 1e-5


@pytest.mark.parametrize("flags,message", [(["--resolution", "12x7"], "height 12 is too small"),
                                           (["--frames", "4"], "frames 4 is not 8k+1"),
                                           (["--checkpoint", "/nonexistent/w.pt"], "no such file")])
def test_w4_sensitive_units_benchmark_bad_input_is_one_usage_line(tmp_path, flags, message):
    import subprocess

    from tests.conftest import REPO

    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "w4_sensitive_units.py"), *flags,
                           "--json", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert message in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow  # quantizing and lowering the tiny denoiser takes 85 s here
def test_xnnpack_w8a8_mobile_denoiser_is_one_delegate_graph():
    """The mobile plan's denoiser at w8a8 lowers to XNNPACK nearly whole: its slices are traced as `aten.slice`
    (which the quantizer gives their input's int8 range, so XNNPACK takes them), the modulation rows and the
    GLUMBConv halves are slices rather than unbind / chunk, and its norms' means are fp32 products XNNPACK takes. At
    720p: 132 delegate subgraphs and 414 portable ops (reference plan) became 4 and 14
    (benchmarks/results/precision_720p_executorch_mobile_margin.json against precision_720p_executorch_margin.json)."""
    from mi2v_export.exporters import rewrites
    from mi2v_export.exporters.quantize import executorch_quantize
    from mi2v_export.exporters.targets.executorch.delegates import DELEGATES
    from mi2v_export.exporters.targets.executorch.program import delegation_summary
    from mi2v_export.kernels import rewrite
    from mi2v_export.models import load_denoiser

    grid = (3, 4, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = rewrite(load_denoiser(preset="tiny"), "mobile", grid=grid)
    args = (torch.randn(1, 128, *grid, generator=torch.Generator().manual_seed(3)), torch.tensor([900.0]),
            torch.tensor([1.0]))
    trace = get_exporter("executorch").trace_rewrites + DELEGATES["xnnpack"].extra_trace
    with rewrites.tracing(trace), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = executorch_quantize(model, args, "w8a8", [args], component="denoiser")
        edge = DELEGATES["xnnpack"].lower(graph, args, SimpleNamespace(dtype="fp32"), False)
    summary = delegation_summary(edge)
    portable = summary["portable_ops"]
    body = {"aten_slice_copy_tensor", "aten_split_with_sizes_copy_default", "aten_squeeze_copy_dims",
            "aten_native_layer_norm_default", "aten_mean_dim", "aten_sum_dim_int_list", "aten_cat_default",
            "aten_mm_default"}
    assert not body & set(portable), portable
    assert portable.get("aten_expand_copy_default", 0) <= 2, portable  # the prologue's timestep / flow broadcast
    assert summary["delegated_subgraphs"] <= 4, summary
