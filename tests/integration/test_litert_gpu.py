"""The structural GPU-delegate check (exporters/targets/litert/gpu.py) on tiny models converted by litert_torch."""

from __future__ import annotations

import json

import pytest

from mi2v_export.exporters.targets.litert.gpu import METHOD, NOT_HANDLED, _Node, _op_reason, _T, gpu_support

torch = pytest.importorskip("torch")
litert_torch = pytest.importorskip("litert_torch")


class ConvLinear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class Rank6(torch.nn.Module):
    """A conv, a rank-6 reshape/permute (refused: the delegate takes rank <= 4) and a float cumsum (taken)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.conv(x).reshape(1, 2, 2, 2, 2, 4).permute(0, 5, 3, 4, 1, 2)
        return torch.cumsum(y.reshape(1, 64), dim=1)


def _export(module, shape, path):
    litert_torch.convert(module.eval(), (torch.randn(*shape),)).export(str(path))
    return path


def test_conv_linear_all_on_gpu(tmp_path):
    r = gpu_support(_export(ConvLinear(), (1, 3, 8, 8), tmp_path / "conv_linear.tflite"))
    json.dumps(r)  # JSON-safe
    assert r["method"] == METHOD
    assert r["nodes"] == r["nodes_on_gpu"] and r["node_share"] == 1.0 and r["refused"] == []
    # conv 8x8x8 outputs x 3x3x3 taps + linear 10 x 512, two FLOPs per multiply-accumulate
    assert r["conv_matmul_flops"] == 2 * (8 * 8 * 8 * 27 + 10 * 512)
    assert r["flop_share"] == 1.0 and r["partitions"] == 1 and r["node_share_eligible"] == 1.0


def test_rank6_permute_refused_cumsum_taken(tmp_path):
    r = gpu_support(_export(Rank6(), (1, 4, 4, 4), tmp_path / "rank6.tflite"))
    refused = {x["op"]: x for x in r["refused"]}
    assert "TRANSPOSE" in refused and "rank >= 5" in refused["TRANSPOSE"]["reason"]
    assert "CUMSUM" not in refused  # float input, constant int32 axis: gpu_compatibility.cc takes it
    assert 0 < r["node_share_eligible"] < 1 and r["flop_share_eligible"] == 1.0  # the conv is eligible
    assert r["partitions"] >= 2 and r["largest_partition_nodes"] < r["nodes_eligible"]
    # the delegate keeps only the largest partition: what it runs is that partition alone
    assert r["nodes_on_gpu"] == r["largest_partition_nodes"] and r["node_share"] < r["node_share_eligible"]


def test_rules_by_hand():
    f32 = _T((1, 64), "FLOAT32", False, 0)
    axis = _T((), "INT32", True, 0)
    assert _op_reason(_Node("CUMSUM", 1, [f32, axis], [f32], {})) is None
    assert _op_reason(_Node("CUMSUM", 1, [f32, axis._replace(const=False)], [f32], {})) is not None
    assert _op_reason(_Node("BROADCAST_TO", 2, [f32, axis], [f32], {})) == NOT_HANDLED
    i16 = f32._replace(dtype="INT16", scales=1)  # a w8a16 activation: LOGISTIC has no int path, ADD has one
    assert "INT16" in _op_reason(_Node("LOGISTIC", 1, [i16], [i16], {}))
    assert _op_reason(_Node("ADD", 1, [i16, i16], [i16], {})) is None
    assert "version" in _op_reason(_Node("RESHAPE", 2, [f32, axis], [f32], {}))
