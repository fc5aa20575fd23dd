"""Measured runtime memory (mi2v_export/runtimes/measure.py): a fresh process's peak with the model minus its peak
without it, on the real onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mi2v_export.runtimes import measure

WEIGHT_MB = 64


def _matmul_model(path, rows: int) -> None:
    """x (1, 1024) @ W (1024, rows): W is rows x 4 KiB of fp32 initializer, so the model holds rows * 4 KiB."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((1024, rows)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "m",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, rows])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def test_the_measured_bytes_follow_the_model_and_exclude_the_runtime(tmp_path):
    big, small = tmp_path / "big.onnx", tmp_path / "small.onnx"
    _matmul_model(big, WEIGHT_MB * 256)
    _matmul_model(small, 16)
    got_big = measure.measure("onnxruntime", big)
    got_small = measure.measure("onnxruntime", small)
    assert got_big["runtime"] == "onnxruntime" and "fresh process" in got_big["method"]
    assert got_big["bytes"] == got_big["peak_bytes"] - got_big["baseline_bytes"]
    # the weights are resident at least once; the runtime's libraries are in the baseline, not in the figure
    assert WEIGHT_MB * 2**20 <= got_big["bytes"] < 4 * WEIGHT_MB * 2**20
    # a session costs some tens of MB whatever the model (threads, arena); the difference is the weights
    grown = (got_big["bytes"] - got_small["bytes"]) / 2**20
    assert 0.9 * WEIGHT_MB <= grown <= 3 * WEIGHT_MB
    assert got_small["baseline_bytes"] > 10 * 2**20


def test_a_file_the_runtime_cannot_load_gives_no_figure_and_says_why(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    got = measure.measure("onnxruntime", bad)
    assert got["bytes"] is None
    assert "cannot load" in got["error"]
