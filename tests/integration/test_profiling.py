"""Per-op profiles from the runtimes' own profilers (mi2v_export.runtimes.profiling): a tiny conv + linear model
exported to ONNX and to two .pte programs (XNNPACK-lowered with its ETRecord, and portable), profiled for real."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mi2v_export.errors import BadInputError
from mi2v_export.runtimes import profiling

RUNS = 3


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.linear = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.linear(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{"onnx", "xnnpack", "portable", "etrecord", "x"}: the tiny model's files and its input."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    root = tmp_path_factory.mktemp("profiling")
    torch.manual_seed(0)
    module, x = Tiny().eval(), torch.randn(1, 3, 16, 16)
    out = {"x": x.numpy(), "onnx": root / "tiny.onnx", "etrecord": root / "tiny_xnnpack.etrecord"}
    torch.onnx.export(module, (x,), str(out["onnx"]), dynamo=False, opset_version=18, input_names=["x"])
    for name, partitioner in (("xnnpack", [XnnpackPartitioner()]), ("portable", [])):
        edge = to_edge_transform_and_lower(torch.export.export(module, (x,)), partitioner=partitioner,
                                           generate_etrecord=name == "xnnpack")
        program = edge.to_executorch()
        out[name] = root / f"tiny_{name}.pte"
        out[name].write_bytes(program.buffer)
        if name == "xnnpack":
            program.get_etrecord().save(str(out["etrecord"]))
    return out


def check_shape(profile: profiling.Profile) -> None:
    """Positive times, shares summing to 1, longest first, the total their sum, the trace kept."""
    assert profile.ops and profile.runs == RUNS and profile.total_ms > 0
    times = [o.total_ms for o in profile.ops]
    assert times == sorted(times, reverse=True)
    assert sum(o.share for o in profile.ops) == pytest.approx(1.0)
    assert sum(times) == pytest.approx(profile.total_ms)
    assert profile.trace and (profiling.Path(profile.trace)).is_file()
    assert profile.run_ms is not None and profile.run_ms > 0
    d = profile.to_dict(top=2)
    assert len(d["ops"]) == min(2, len(profile.ops)) and d["op_types"] == len(profile.ops)
    json.dumps(d)


def test_onnxruntime_profile_names_the_op_types_and_the_provider(models, tmp_path):
    profile = profiling.profile_onnx(models["onnx"], {"x": models["x"]}, RUNS, tmp_path, threads=1, name="tiny")
    check_shape(profile)
    ops = {o.op: o for o in profile.ops}
    assert "Conv" in ops and ({"Gemm", "MatMul"} & set(ops)), sorted(ops)
    assert ops["Conv"].total_ms > 0 and ops["Conv"].calls == 1
    assert all(o.where == "CPUExecutionProvider" and o.delegated is False for o in profile.ops)
    assert profile.delegated_share == 0.0 and profile.runtime == "onnxruntime"
    assert profile.trace == str(tmp_path / "tiny.onnxruntime-profile.json")
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnxruntime-profile.json"]  # no dated trace left


def test_onnxruntime_warmup_runs_are_dropped(models, tmp_path):
    profile = profiling.profile_onnx(models["onnx"], {"x": models["x"]}, RUNS, tmp_path, warmup=2)
    events = json.loads(profiling.Path(profile.trace).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(kernels) // (RUNS + 2)
    assert len(kernels) == per_run * (RUNS + 2)  # all five runs are in the trace
    assert sum(o.calls for o in profile.ops) == per_run  # the profile counts the three measured ones, per run
    again = profiling.read_onnx_trace(profile.trace, RUNS + 2, warmup=0)
    assert sum(o.calls for o in again.ops) == per_run


def test_executorch_xnnpack_profile_marks_the_delegate_events(models, tmp_path):
    profile = profiling.profile_executorch(models["xnnpack"], [models["x"]], RUNS, tmp_path, models["etrecord"])
    check_shape(profile)
    assert profile.runtime == "executorch-xnnpack" and profile.trace.endswith("tiny_xnnpack.etdump")
    delegated = [o for o in profile.ops if o.delegated]
    portable = [o for o in profile.ops if o.delegated is False]
    assert all(o.where == "XnnpackBackend" for o in delegated)
    # the XNNPACK wheel logs its own operators inside each DELEGATE_CALL; the "#1" instance suffixes are merged
    assert any(o.op.startswith("Convolution") for o in delegated), [o.op for o in delegated]
    assert any(o.op.startswith("Fully Connected") for o in delegated), [o.op for o in delegated]
    assert not any("#" in o.op for o in profile.ops)
    assert any(o.op == "DELEGATE_CALL overhead" for o in delegated)
    assert [o.op for o in portable] == ["aten.mean.out"] and portable[0].where == "portable"
    assert not {"Method::execute", "OPERATOR_CALL", "DELEGATE_CALL"} & {o.op for o in profile.ops}
    assert 0 < profile.delegated_share < 1
    assert profile.delegated_share == pytest.approx(sum(o.share for o in delegated))
    assert not any("no ETRecord" in n for n in profile.notes)


def test_executorch_portable_profile_has_no_delegated_op(models, tmp_path):
    inputs = {"x": models["x"]}  # a mapping: its values in order
    profile = profiling.profile_executorch(models["portable"], inputs, RUNS, tmp_path)
    check_shape(profile)
    assert profile.runtime == "executorch-portable" and profile.delegated_share == 0.0
    ops = {o.op: o for o in profile.ops}
    assert {"aten.convolution.out", "aten.addmm.out", "aten.mean.out", "aten.relu.out"} <= set(ops), sorted(ops)
    assert all(o.delegated is False and o.where == "portable" and o.calls == 1 for o in profile.ops)
    assert any("no ETRecord" in n for n in profile.notes)
    # the op time is inside the method's run time (nested events are not counted twice)
    assert profile.total_ms <= profile.run_ms


def test_executorch_without_etrecord_still_names_the_backend(models, tmp_path):
    profile = profiling.profile_executorch(models["xnnpack"], [models["x"]], RUNS, tmp_path, warmup=0)
    assert {o.where for o in profile.ops if o.delegated} == {"XnnpackBackend"}
    assert any("no ETRecord" in n for n in profile.notes)


def test_an_opaque_delegate_call_counts_whole(models, tmp_path, monkeypatch):
    """A build whose delegate logs nothing inside: each DELEGATE_CALL is one delegated op, with a note."""
    etdump = tmp_path / "x.etdump"
    profiling.profile_executorch(models["xnnpack"], [models["x"]], RUNS, tmp_path, name="x")
    real = profiling._inspector

    def without_delegate_events(path, etrecord):
        inspector = real(path, etrecord)
        for block in inspector.event_blocks:
            block.events = [e for e in block.events if not e.is_delegated_op]
        return inspector

    monkeypatch.setattr(profiling, "_inspector", without_delegate_events)
    profile = profiling.read_etdump(etdump, RUNS, warmup=1, backends=["XnnpackBackend"])
    calls = [o for o in profile.ops if o.op == "DELEGATE_CALL"]
    assert len(calls) == 1 and calls[0].delegated and calls[0].calls == 2  # two subgraphs, one row
    assert any("internals not profiled" in n for n in profile.notes)


def test_table_rows_rank_and_fold_the_rest():
    ops = [profiling.OpTime("Conv", 2, 3.0, 0.6, False, "CPUExecutionProvider"),
           profiling.OpTime("Gemm", 1, 1.5, 0.3, True, "QNNExecutionProvider"),
           profiling.OpTime("Relu", 1, 0.5, 0.1, None, "")]
    profile = profiling.Profile("onnxruntime", profiling.ORT_TOOL, 2, 5.0, ops, 0.3)
    rows = profiling.table_rows(profile, top=2)
    assert [r["op"] for r in rows] == ["Conv", "Gemm", "(1 more op types)"]
    assert rows[0] == {"op": "Conv", "where": "CPUExecutionProvider", "delegated": "no", "calls": 2, "ms": 3.0,
                       "share": "60.0%"}
    assert rows[1]["delegated"] == "yes" and rows[2]["share"] == "10.0%"
    assert len(profiling.table_rows(profile)) == 3 and profile.top(1) == ops[:1]


def test_bad_run_counts_are_refused(models, tmp_path):
    with pytest.raises(BadInputError):
        profiling.profile_onnx(models["onnx"], {"x": models["x"]}, 0, tmp_path)
    with pytest.raises(BadInputError):
        profiling.profile_executorch(models["portable"], [models["x"]], 1, tmp_path, warmup=-1)
    with pytest.raises(BadInputError, match="cannot load"):
        profiling.profile_onnx(models["portable"], {"x": np.zeros(1)}, 1, tmp_path)
