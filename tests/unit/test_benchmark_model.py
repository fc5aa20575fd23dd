"""LiteRT's benchmark_model: the parser against the real tool's output quoted from upstream, the argv, the
--output_filepath reader, and the simulated phone's host stand-in round-tripped through them (a 1.5 KB .tflite)."""

from __future__ import annotations

import base64
import contextlib
import io

import numpy as np
import pytest

from mi2v_export.devices.benchmark_model import (BENCHMARK_MODEL, parse_benchmark_model, read_outputs, runner_args,
                                                 signature_io)

pytestmark = pytest.mark.unit

# Verbatim: google-ai-edge/LiteRT tflite/tools/benchmark/README.md (383870e0), the end of its op-profiling example
# (the tool before TF 2.3 wrote "Average inference timings"; "Timings (microseconds)" is the op profiler's table).
README_OP_PROFILING_TAIL = """\
Timings (microseconds): count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929
Memory (bytes): count=0
31 nodes observed


Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9
"""
# Verbatim: tensorflow/tensorflow tensorflow/lite/tools/benchmark/experimental/delegate_performance/android/README.md
# (9babf19f), a logcat line of the current format.
DELEGATE_PERFORMANCE_LOGCAT = ("    ... tflite  : Inference timings in us: Init: 5811, First inference: 67743, "
                               "Warmup (avg): 65539, Inference (avg): 65155.5\n")
# Verbatim: a full benchmark_model run quoted in Larq's "Getting started" guide (larq docs, compute-engine), with the
# two phases' "Running benchmark" and Stat lines (a build whose log has no "INFO: " prefix).
LARQ_GUIDE_RUN = """\
STARTING!
Duplicate flags: num_threads
Min num runs: [50]
Min runs duration (seconds): [1]
Max runs duration (seconds): [150]
Inter-run delay (seconds): [-1]
Num threads: [1]
...
...
Loaded model quicknet.tflite
The input model file size (MB): 3.34914
Initialized session in 3.501ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=12 first=156677 curr=33205 min=32578 max=156677 avg=43268.1 std=34197

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=33228 curr=33130 min=32687 max=33239 avg=33071.8 std=129

Inference timings in us: Init: 3501, First inference: 156677, Warmup (avg): 43268.1, Inference (avg): 33071.8
"""

# litert_torch.convert of forward(zeta: f32[1,6], alpha: i32[1,6]) -> {"sum": zeta + alpha, "prod": (2 * zeta)
# .reshape(2, 3)}: its serving_default signature lists alpha, zeta / prod, sum, its subgraph zeta, alpha / sum, prod.
TINY_TFLITE = base64.b64decode(
    "HAAAAFRGTDMUACAABAAIAAwAEAAUAAAAGAAcABQAAAADAAAAUAAAAEQAAACYAQAADAAAAAQBAABQAAAACwAAAJAFAACMBQAA"
    "iAUAALAEAABgBAAAfAUAAHgFAAB0BQAAcAUAAEQBAAAEAQAAAQAAAHgBAAAEAAAAuAMAADADAACUAgAACAIAAAEAAAAQAAAA"
    "AAAKABAADAAIAAQACgAAAAwAAAAcAAAAJAAAAA8AAABzZXJ2aW5nX2RlZmF1bHQAAgAAACgAAAAQAAAAAgAAAFAAAAAwAAAA"
    "wP///wUAAAAEAAAAAwAAAHN1bQDU////BwAAAAQAAAAEAAAAcHJvZAAAAAAO/P//BAAAAAQAAAB6ZXRhAAAAAAgADAAIAAQA"
    "CAAAAAEAAAAEAAAABQAAAGFscGhhAAAAAgAAAEgAAAAEAAAAyP///wgAAAAKAAAAFwAAAGtlZXBfc3RhYmxlaGxvX2NvbnN0"
    "YW50AHb8//8EAAAABAAAAHRydWUIAAwABAAIAAgAAAAIAAAACQAAABMAAABtaW5fcnVudGltZV92ZXJzaW9uALL8//8EAAAA"
    "EAAAADEuNS4wAAAAAAAAAAAAAAAPAAAATUxJUiBDb252ZXJ0ZWQuAAAADgAYAAQACAAMABAAFAAOAAAATAAAADwAAAAsAAAA"
    "FAAAAAQAAAAEAAAAbWFpbgAAAAAEAAAA+AEAAFwBAADMAAAATAAAAAIAAAAFAAAABwAAAAIAAAAAAAAAAQAAAAgAAABMAwAA"
    "6AIAAHwCAAA0AgAA9AEAAGQBAADQAAAARAAAAAAACgAQAAQACAAMAAoAAAADAAAAEAAAAAQAAAABAAAABwAAAAIAAAAGAAAA"
    "AgAAAGj+//8WAAAAAAAAFgEAAAAq/f//AAAAATAAAAAIAAAACAAAADAAAAAbAAAAc2VydmluZ19kZWZhdWx0X3Byb2Rfb3V0"
    "cHV0AAIAAAACAAAAAwAAABT9//+C////AAAAFQIAAAAYAAAADAAAAAQAAAAw/f//AQAAAAYAAAACAAAAAAAAAAMAAADw/v//"
    "EgAAAAAAABIBAAAAsv3//wAAAAEkAAAABwAAAAgAAAAkAAAADAAAAF9fbWFpbl9fLk07MwAAAAACAAAAAQAAAAYAAAD0/f//"
    "AAAOABgACAAMABAABwAUAA4AAAAAAAALAQAAABgAAAAMAAAABAAAALz9//8BAAAABQAAAAIAAAAAAAAABAAAAAAACgAIAAAA"
    "AAAEAAoAAAABAAAAQv7//wAAAAEwAAAABgAAAAgAAAAwAAAAGgAAAHNlcnZpbmdfZGVmYXVsdF9zdW1fb3V0cHV0AAACAAAA"
    "AQAAAAYAAACQ/v//AAAKAAwAAAAEAAgACgAAABAAAAAEAAAAAQAAAAQAAAABAAAAAQAAAAwAEAALAAAADAAEAAwAAAA1AAAA"
    "AAAANQEAAADO/v//AAAAASQAAAAFAAAACAAAACQAAAAMAAAAX19tYWluX18uTTsyAAAAAAIAAAABAAAABgAAAKz+//8K////"
    "AAAAASQAAAAEAAAACAAAABwAAAAMAAAAX19tYWluX18uTTsxAAAAAAAAAADg/v//uv///wQAAAAEAAAAAAAAQK7///8AAAIB"
    "IAAAAAMAAAAIAAAAHAAAAAsAAABfX21haW5fXy5NOwABAAAAAgAAAIj///8AAAYACAAEAAYAAAAEAAAACAAAAAIAAAADAAAA"
    "AAAWABgACAAGAAwAEAAUAAAAAAAAAAcAFgAAAAAAAgEsAAAAAgAAAAgAAAAwAAAAFQAAAHNlcnZpbmdfZGVmYXVsdF9hbHBo"
    "YQAAAAIAAAABAAAABgAAAAQABgAEAAAAAAAWABgACAAAAAwAEAAUAAAAAAAAAAcAFgAAAAAAAAEsAAAAAQAAAAgAAAAsAAAA"
    "FAAAAHNlcnZpbmdfZGVmYXVsdF96ZXRhAAAAAAIAAAABAAAABgAAAPz///8EAAQABAAAAA=="
)


def test_reads_the_readme_format_and_skips_the_op_profiler_table():
    out = parse_benchmark_model(README_OP_PROFILING_TAIL)
    assert out.runner == BENCHMARK_MODEL
    assert out.load_ms == pytest.approx(38.467) and out.mean_ms == pytest.approx(79.7609)
    assert out.executions is None and out.summary == {} and out.samples_ms == [] and out.errors == []


def test_reads_a_logcat_line():
    out = parse_benchmark_model(DELEGATE_PERFORMANCE_LOGCAT)
    assert (out.load_ms, out.first_iteration_ms) == (pytest.approx(5.811), pytest.approx(67.743))
    assert out.mean_ms == pytest.approx(65.1555) and out.peak_rss_kb is None


def test_reads_both_phases_of_a_full_run():
    out = parse_benchmark_model(LARQ_GUIDE_RUN)
    assert out.executions == 50 and out.total_ms == pytest.approx(50 * 33.0718)
    assert out.first_iteration_ms == pytest.approx(156.677) and out.mean_ms == pytest.approx(33.0718)
    assert out.summary == pytest.approx({"min": 32.687, "max": 33.239, "std": 0.129, "warmup_avg": 43.2681})
    assert not out.per_iteration  # the tool prints no per-run times


def test_runner_args_make_exactly_n_runs_and_escape_colons():
    args = runner_args("/d/m.tflite", 2, 7, 4, {"a:0": "/d/a.bin", "b": "/d/b.bin"}, "/d/out.bin",
                       shapes={"a:0": (1, 6), "b": [2, 3]})
    assert args == ["--graph=/d/m.tflite", "--warmup_runs=2", "--warmup_min_secs=0", "--num_runs=7", "--min_secs=0",
                    "--max_secs=86400", "--use_xnnpack=true", "--report_peak_memory_footprint=true",
                    "--num_threads=4", "--input_layer=a:0,b", "--input_layer_shape=1,6:2,3",
                    "--input_layer_value_files=a::0:/d/a.bin,b:/d/b.bin", "--output_filepath=/d/out.bin"]
    assert "--num_threads" not in " ".join(runner_args("m", 1, 1, None))
    for shapes in (None, {"c": (1,)}):
        with pytest.raises(ValueError):
            runner_args("m", 1, 1, None, {"a": "/d/a.bin"}, shapes=shapes)


def test_read_outputs_splits_the_raw_file_and_refuses_what_it_cannot_split():
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7, 8], dtype=np.int64)
    got = read_outputs(a.tobytes() + b.tobytes(), [("a", (2, 3), np.float32), ("b", (2,), "int64")])
    assert np.array_equal(got["a"], a) and np.array_equal(got["b"], b) and got["b"].dtype == np.int64
    with pytest.raises(ValueError, match="wrote 24 bytes"):
        read_outputs(a.tobytes(), [("a", (2, 3), np.float32), ("b", (2,), "int64")])
    with pytest.raises(NotImplementedError):
        read_outputs(b"", [("s", (1,), object)])


def _stand_in(argv: list[str]) -> tuple[int, str]:
    from mi2v_export.simulator.benchmark_model import benchmark_model

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = benchmark_model(argv)
    return rc, out.getvalue() + err.getvalue()


def test_stand_in_round_trip(tmp_path):
    pytest.importorskip("ai_edge_litert")
    model = tmp_path / "tiny.tflite"
    model.write_bytes(TINY_TFLITE)
    assert signature_io(model) == ("serving_default", ["zeta", "alpha"], ["sum", "prod"])
    zeta, alpha = np.arange(6, dtype=np.float32).reshape(1, 6), np.full((1, 6), 3, dtype=np.int32)
    zeta.tofile(tmp_path / "zeta.bin")
    alpha.tofile(tmp_path / "alpha.bin")
    args = runner_args(str(model), 2, 5, 1, {n: str(tmp_path / f"{n}.bin") for n in ("zeta", "alpha")},
                       str(tmp_path / "out.bin"), shapes={"zeta": (1, 6), "alpha": (1, 6)})
    rc, text = _stand_in(args)
    assert rc == 0, text
    out = parse_benchmark_model(text)
    assert out.errors == [] and out.executions == 5 and out.method == "serving_default"
    assert out.mean_ms > 0 and out.first_iteration_ms > 0 and out.load_ms > 0 and out.peak_rss_kb > 0
    assert {"min", "max", "p5", "p50", "p95", "warmup_avg"} <= set(out.summary)
    got = read_outputs((tmp_path / "out.bin").read_bytes(), [("sum", (1, 6), np.float32), ("prod", (2, 3), np.float32)])
    assert np.array_equal(got["sum"], zeta + alpha) and np.array_equal(got["prod"], (2 * zeta).reshape(2, 3))


def test_stand_in_fails_like_the_tool(tmp_path):
    pytest.importorskip("ai_edge_litert")
    rc, text = _stand_in([f"--graph={tmp_path / 'missing.tflite'}"])
    assert rc == 1 and parse_benchmark_model(text).errors == [
        f"Could not open '{tmp_path / 'missing.tflite'}'.", "The model allocation is null/empty",
        f"Failed to load model {tmp_path / 'missing.tflite'}", "Benchmarking failed."]
    (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer at all")
    rc, text = _stand_in([f"--graph={tmp_path / 'bad.tflite'}", "--num_runs", "3"])
    assert rc == 1 and "WARN: Unconsumed cmdline flags: --num_runs 3" in text
    assert parse_benchmark_model(text).errors[0] == "The model is not a valid Flatbuffer buffer"
    rc, text = _stand_in([f"--graph={tmp_path / 'bad.tflite'}", "--num_runs=three"])
    assert rc == 1 and "ERROR: Failed to parse flag 'num_runs' against argv '--num_runs=three'" in text
