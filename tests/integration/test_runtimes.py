"""The runtime layer (mi2v_export.runtimes): the registry and its artifact selection, the one dtype map, the
peak-memory probe, and real sessions on onnxruntime, the ExecuTorch runtime and the PyTorch stand-in.

Real here: an ONNX model built with onnx.helper, a .pte exported with ExecuTorch (portable kernels), onnxruntime,
the ExecuTorch pybindings, /proc. Tests marked `unit` run in-process in a few seconds; the others export or spawn.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from mi2v_export import runtimes
from mi2v_export.errors import BadInputError, MissingDependencyError
from mi2v_export.runtimes import dtypes, memory
from mi2v_export.runtimes.sessions import run_sets

MB = 1 << 20


def _entry(target, delegate=None, inputs=(), outputs=(), precision="fp32"):
    return SimpleNamespace(target=target, delegate=delegate, precision=precision, target_info={}, flags={},
                           inputs=[SimpleNamespace(name=n) for n in inputs],
                           outputs=[SimpleNamespace(name=n) for n in outputs])


# ---- registry -------------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_registry_names_and_the_one_selection():
    names = runtimes.names()
    assert names[:2] == ["onnxruntime", "qnn-htp-simulator"]
    assert {f"executorch-{d}" for d in ("xnnpack", "portable", "vulkan", "coreml", "qnn")} <= set(names)
    assert {f"coreml-{u}" for u in ("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne")} <= set(names)
    assert {"pytorch", "pytorch-simulated"} <= set(names)
    chosen = {(t, d): [r.name for r in runtimes.for_entry(_entry(t, d))]
              for t, d in (("onnx", None), ("onnx", "qnn"), ("executorch", None), ("executorch", "xnnpack"),
                           ("executorch", "vulkan"))}
    assert chosen == {("onnx", None): ["onnxruntime"], ("onnx", "qnn"): ["qnn-htp-simulator"],
                      ("executorch", None): ["executorch-portable"], ("executorch", "xnnpack"): ["executorch-xnnpack"],
                      ("executorch", "vulkan"): ["executorch-vulkan"]}
    assert len(runtimes.for_target("coreml")) == 4 and not runtimes.for_target("tflite")
    assert runtimes.why_not(_entry("tflite")) == "no runtime in mi2v's registry runs tflite artifacts"
    assert runtimes.runnable(_entry("onnx")).name == "onnxruntime" and runtimes.why_not(_entry("onnx")) is None
    # a QNN program needs the phone's HTP even where this executorch build registers QnnBackend
    assert runtimes.why_not(_entry("executorch", "qnn")) == "QNN .pte files run only on a Snapdragon device"
    assert [r.family for r in runtimes.for_path("x/denoiser.pte")] == ["executorch"] * 5
    assert {r.name for r in runtimes.for_path("a.onnx")} == {"onnxruntime", "qnn-htp-simulator"}
    with pytest.raises(BadInputError, match="unknown runtime tensorrt; choose from onnxruntime, "):
        runtimes.get("tensorrt")
    with pytest.raises(RuntimeError, match="two runtimes named"):
        runtimes.register(type(runtimes.get("onnxruntime"))())


@pytest.mark.unit
def test_a_runtime_that_is_missing_says_so_in_one_line(monkeypatch):
    for module in ("onnxruntime", "onnxruntime_qnn", "executorch", "torch"):
        monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as if it were not installed
    reasons = {name: runtimes.get(name).available() for name in
               ("onnxruntime", "qnn-htp-simulator", "executorch-xnnpack", "pytorch", "coreml-all")}
    assert reasons["onnxruntime"] == "onnxruntime is not installed (pip install onnxruntime)"
    assert "pip install onnxruntime-qnn==" in reasons["qnn-htp-simulator"]
    assert reasons["executorch-xnnpack"] == "executorch is not installed (pip install executorch)"
    assert reasons["pytorch"] == "torch is not installed (pip install torch)"
    if sys.platform != "darwin":
        assert reasons["coreml-all"] == f"Core ML prediction needs macOS (this host is {sys.platform})"
    assert all(why and "\n" not in why for why in reasons.values())
    with pytest.raises(MissingDependencyError) as err:
        runtimes.get("onnxruntime").load("model.onnx")
    assert "pip install onnxruntime" in str(err.value) and "\n" not in str(err.value)
    assert runtimes.why_not(_entry("onnx")) == "onnxruntime is not installed (pip install onnxruntime)"


# ---- dtypes ---------------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_the_dtype_map_round_trips_every_type():
    import torch
    from onnx import TensorProto

    assert {d.name for d in dtypes.DTYPES} == {"bool", "int8", "int16", "int32", "int64", "uint8", "float16",
                                               "bfloat16", "float32", "float64"}
    for d in dtypes.DTYPES:
        torch_dtype = getattr(torch, d.torch)
        assert dtypes.from_torch(torch_dtype) is d and dtypes.torch_dtype(d.name) is torch_dtype
        assert dtypes.from_onnx(d.onnx) is d and dtypes.from_onnx_elem(d.onnx_elem) is d
        assert dtypes.from_et(d.et_scalar) is d and dtypes.by_name(d.short) is d
        onnx_name = {"float32": "FLOAT", "float64": "DOUBLE"}.get(d.name, d.name.upper())
        assert getattr(TensorProto, onnx_name) == d.onnx_elem
        if d.numpy is not None:
            assert dtypes.from_numpy(np.dtype(d.numpy)) is d and dtypes.numpy_dtype(d.name) == np.dtype(d.numpy)
            assert torch.from_numpy(np.zeros(1, dtypes.numpy_dtype(d.name))).dtype == torch_dtype
    assert dtypes.numpy_dtype("bfloat16") == np.float32  # numpy has none: held as float32, cast at the runtime
    assert dtypes.from_coreml(65552).name == "float16" and dtypes.by_name("nonsense") is None


# ---- memory ---------------------------------------------------------------------------------------------------------


_PROBE = """
import json, numpy as np
from mi2v_export.runtimes import memory
scope = memory.reset_peak()
before, rss = memory.peak_rss_bytes(), memory.rss_bytes()
block = np.ones(200 * 2**20, dtype=np.uint8)  # written, so resident
print(json.dumps({"scope": scope, "before": before, "rss": rss, "after": memory.peak_rss_bytes(),
                  "kb": memory.peak_rss_kb(), "last": int(block[-1])}))
"""


def test_the_memory_probe_grows_with_a_200_mb_allocation():
    """In a fresh interpreter: a long-lived one (a test worker) may reuse freed, still resident heap pages."""
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] > 0 and got["kb"] > 0 and got["last"] == 1
    if got["rss"] is not None:  # Linux: the peak covers what is resident now
        assert got["after"] >= got["rss"] + 180 * MB
    if got["scope"] == memory.RESET:
        assert got["after"] - got["before"] >= 180 * MB


@pytest.mark.unit
def test_ru_maxrss_is_bytes_on_macos_and_kib_on_linux(monkeypatch):
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.maxrss_bytes(5_000_000) == 5_000_000
    monkeypatch.setattr(memory.sys, "platform", "linux")
    assert memory.maxrss_bytes(5_000) == 5_000 * 1024


def test_child_peak_measures_the_child_alone():
    code = "import numpy as np, sys; a = np.ones({} * 2**20, np.uint8); print(int(a.sum() > 0)); sys.exit(3)"
    small = memory.child_peak([sys.executable, "-c", code.format(1)], timeout=120)
    big = memory.child_peak([sys.executable, "-c", code.format(300)], timeout=120)
    assert small.returncode == big.returncode == 3 and big.stdout.strip() == "1"
    assert big.peak_bytes - small.peak_bytes >= 250 * MB
    with pytest.raises(subprocess.TimeoutExpired):
        memory.child_peak([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)


# ---- onnxruntime ----------------------------------------------------------------------------------------------------


def _onnx_model(path):
    """y = float(x) · float(m) + float(k): a float16, a bool and an int8 input (the types the old maps missed)."""
    import onnx
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=f), helper.make_node("Cast", ["m"], ["mf"], to=f),
             helper.make_node("Cast", ["k"], ["kf"], to=f), helper.make_node("Mul", ["xf", "mf"], ["p"]),
             helper.make_node("Add", ["p", "kf"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 3]),
              helper.make_tensor_value_info("m", TensorProto.BOOL, [2, 3]),
              helper.make_tensor_value_info("k", TensorProto.INT8, [2, "n"])]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", f, [2, None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@pytest.mark.unit
def test_onnxruntime_session_casts_inputs_by_name(tmp_path):
    path = _onnx_model(tmp_path / "m.onnx")
    rt = runtimes.get("onnxruntime")
    assert rt.available() is None and rt.version()
    with rt.load(path, threads=1) as session:
        assert [(t.name, t.dtype) for t in session.inputs] == [("x", "float16"), ("m", "bool"), ("k", "int8")]
        assert session.inputs[2].static_shape() == (2, 1) and session.backend == "cpu" and session.threads == 1
        x = np.arange(6, dtype=np.float64).reshape(2, 3)
        out = session.run({"k": np.full((2, 3), -2.0), "m": x % 2, "x": x})  # every input in float64
        assert np.array_equal(out["y"], x * (x % 2) - 2) and out["y"].dtype == np.float32
        assert session.run(session.ones())["y"].shape == (2, 3)  # k (2, 1) broadcast
    sets = [{"x": x, "m": x > 2, "k": np.zeros((2, 3))}]
    assert np.array_equal(run_sets(rt, path, _entry("onnx"), sets)[0]["y"], x * (x > 2))
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(BadInputError, match=r"^bad.onnx: onnxruntime cannot load it \(") as err:
        rt.load(tmp_path / "bad.onnx")
    assert "\n" not in str(err.value)


# ---- ExecuTorch and the PyTorch stand-in --------------------------------------------------------------------------


class _Mixed:
    """forward(x fp32, n int32, h fp16) → (x·2 + n, h·2): dtypes the session must cast to from the metadata."""

    @staticmethod
    def module():
        import torch

        class Mixed(torch.nn.Module):
            def forward(self, x, n, h):
                return x * 2 + n.to(torch.float32), h * 2

        return Mixed().eval()

    @staticmethod
    def args():
        import torch

        return (torch.arange(6, dtype=torch.float32).reshape(2, 3), torch.tensor([[1, 2, 3]], dtype=torch.int32),
                torch.ones(2, 3, dtype=torch.float16))


def test_executorch_session_on_a_portable_program(tmp_path):
    import torch
    from executorch.exir import to_edge

    program = to_edge(torch.export.export(_Mixed.module(), _Mixed.args())).to_executorch()
    path = tmp_path / "mixed.pte"
    path.write_bytes(program.buffer)
    rt = runtimes.runnable(_entry("executorch"))
    assert rt.name == "executorch-portable" and rt.version()
    entry = _entry("executorch", inputs=("x", "n", "h"), outputs=("y", "h2"))
    with rt.load(path, entry) as session:
        assert [(t.name, t.dtype, t.shape) for t in session.inputs] == [
            ("x", "float32", (2, 3)), ("n", "int32", (1, 3)), ("h", "float16", (2, 3))]
        assert session.output_names == ["y", "h2"] and session.backend == "portable"
        feeds = {"x": np.arange(6.0).reshape(2, 3), "n": np.array([[1.0, 2.0, 3.0]]), "h": np.full((2, 3), 1.5)}
        first = session.run(feeds)
        second = session.run({**feeds, "x": np.zeros((2, 3))})  # outputs are copies: the first stays intact
        assert np.array_equal(first["y"], np.arange(6.0).reshape(2, 3) * 2 + [1, 2, 3])
        assert np.array_equal(second["y"], np.tile([1.0, 2.0, 3.0], (2, 1)))
        assert first["h2"].dtype == np.float16 and np.all(first["h2"] == 3.0)
    with runtimes.get("executorch-xnnpack").load(path) as unnamed:  # no entry: positional names
        assert unnamed.input_names == ["input_0", "input_1", "input_2"] and unnamed.output_names[0] == "output_0"
    (tmp_path / "bad.pte").write_bytes(b"\x00garbage")
    with pytest.raises(BadInputError, match="bad.pte: the ExecuTorch runtime cannot load it"):
        rt.load(tmp_path / "bad.pte")


@pytest.mark.unit
def test_the_pytorch_stand_in_runs_a_module_through_the_same_session():
    import torch

    module = _Mixed.module()
    with runtimes.get("pytorch-simulated").load(module=module, input_names=["x", "n", "h"],
                                                output_names=["y", "h2"]) as session:
        out = session.run({k: v.numpy() for k, v in zip(("x", "n", "h"), _Mixed.args())})
    want = module(*_Mixed.args())
    assert np.array_equal(out["y"], want[0].numpy()) and np.array_equal(out["h2"], want[1].numpy())
    half = torch.nn.Linear(3, 2).half()
    with runtimes.get("pytorch").load(module=half, input_names=["a"], output_names=["b"]) as session:
        assert session.dtype == "float16"  # float inputs are cast to the module's dtype
        assert session.run({"a": np.ones((1, 3), np.float32)})["b"].dtype == np.float16
    assert not runtimes.get("pytorch").accepts(_entry("onnx"))  # a stand-in never runs an artifact file


def test_the_registry_imports_no_torch():
    code = ("import sys\nfrom mi2v_export import runtimes\n"
            "reasons = [r.available() for r in runtimes.all() if r.family in ('onnxruntime', 'coreml', 'pytorch')]\n"
            "assert 'torch' not in sys.modules and 'executorch' not in sys.modules, sorted(sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
