"""LiteRT's `benchmark_model` (the TFLite benchmark tool) on a phone: its argv, its log and its --output_filepath.

Why these choices (the tool's behaviour, with its sources, is in docs/guides/litert.md#sources):
  * exactly warm-up + timed runs: the tool loops while `run < N or elapsed < min_secs` and stops past `max_secs`
    (150 s by default, which would cut a slow 720p model short), so both min_secs are 0 and max_secs far off;
  * its log: one `count=N first=F curr=C min=m max=M avg=A std=S p5=.. median=.. p95=..` statistics line per phase
    ("count=N curr=C(all same)" when every run took as long), then "Inference timings in us: Init: I, First
    inference: F, Warmup (avg): W, Inference (avg): A" and "Overall peak memory footprint (MB) via periodic
    monitoring: P" (the largest ru_maxrss sampled). No per-run times are printed: a run gives its mean and these
    statistics only;
  * only "--flag=value" is parsed; an unknown flag is left over with a WARN and ignored;
  * --input_layer_value_files ("name:path,..."; ':' inside written "::") binds files to the subgraph's inputs BY
    POSITION and needs --input_layer and --input_layer_shape beside it; each file holds exactly the tensor's bytes
    (without files the inputs are random); --output_filepath gets the raw bytes of every output tensor, in the
    subgraph's output order, concatenated with no header.
The subgraph order is not the signature's (ai-edge-litert lists signature names sorted), so `signature_io` reads it.
"""

from __future__ import annotations

import math
import mmap
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .runners import RunnerOutput, parse_toybox_time

BENCHMARK_MODEL = "benchmark_model"
MAX_SECS = 86400.0  # the tool's default 150 s would cut a slow model's runs short


def _escape(text: str) -> str:
    """--input_layer_value_files splits items on ',' and name from path on a single ':' ('::' is a literal ':')."""
    if "," in text:
        raise ValueError(f"{text!r}: benchmark_model's --input_layer_value_files cannot carry a ','")
    return text.replace(":", "::")


def runner_args(model: str, warmup: int, iterations: int, threads: int | None,
                inputs: Mapping[str, str] | None = None, output_file: str | None = None, *,
                shapes: Mapping[str, Sequence[int]] | None = None) -> list[str]:
    """The argv after the binary: exactly `warmup` + `iterations` runs (both min_secs at 0, max_secs far off), the
    XNNPACK delegate applied explicitly, the peak memory monitored. `inputs` (name → file on the device) must be in
    the subgraph's input order (`signature_io`) and needs `shapes`: the tool matches them by position and requires
    --input_layer_shape beside --input_layer."""
    args = [f"--graph={model}", f"--warmup_runs={warmup}", "--warmup_min_secs=0", f"--num_runs={iterations}",
            "--min_secs=0", f"--max_secs={MAX_SECS:g}", "--use_xnnpack=true", "--report_peak_memory_footprint=true"]
    if threads:
        args.append(f"--num_threads={threads}")
    if inputs:
        if shapes is None or not set(inputs) <= set(shapes):
            raise ValueError("benchmark_model needs the shape of every input given a value file")
        args += [f"--input_layer={','.join(_escape(n).replace('::', ':') for n in inputs)}",  # split on ',' only
                 "--input_layer_shape=" + ":".join(",".join(str(int(d)) for d in shapes[n]) for n in inputs),
                 "--input_layer_value_files=" + ",".join(f"{_escape(n)}:{_escape(p)}" for n, p in inputs.items())]
    if output_file:
        args.append(f"--output_filepath={output_file}")
    return args


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf"
_RUNNING = re.compile(r"Running benchmark for at least (\d+) iterations")
_STAT = re.compile(r"count=(\d+)(.*)")
_BARE_STAT = re.compile(r"(?:^|INFO: |\btflite\s+: )count=\d")
_TIMINGS = re.compile(rf"Inference timings in us: Init: (?P<init>{_NUM}), First inference: (?P<first>{_NUM}), "
                      rf"Warmup \(avg\): (?P<warm>{_NUM}), Inference \(avg\): (?P<avg>{_NUM})")
_OLD_TIMINGS = re.compile(rf"Average inference timings in us: Warmup: (?P<warm>{_NUM}), Init: (?P<init>{_NUM}), "
                          rf"Inference: (?P<avg>{_NUM})")  # the tool before TF 2.3
_SESSION = re.compile(rf"Initialized session in (?P<ms>{_NUM}) ?ms")
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: (?P<mb>{_NUM})")
_SIGNATURE = re.compile(r"Using signature: (\S+)")
_ERROR = re.compile(r"\b(?:ERROR|FATAL): (.*\S)")


def _number(text: str | None) -> float | None:
    value = None if text is None else float(text)
    return None if value is None or math.isnan(value) or math.isinf(value) else value


def _stat(line: str) -> dict[str, float]:
    """One Stat line → {"count", "first", "curr", "min", "max", "avg", "std", "p5", "median", "p95"} (µs)."""
    m = _STAT.search(line)
    out = {"count": float(m.group(1))} if m else {}
    for key, value in re.findall(r"(\w+)=([-+\w.]+)", m.group(2) if m else ""):
        if (number := _number(value)) is not None:
            out[key] = number
    if "(all same)" in line or (out.get("count") == 1 and "curr" in out):
        out.update({k: out["curr"] for k in ("first", "min", "max", "avg") if k not in out})
    return out


def _phases(text: str) -> list[dict[str, float]]:
    """The Stat line that follows each "Running benchmark ..." line: [warm-up, timed runs]. Op-profiling tables
    ("Timings (microseconds): count=...") come later and are skipped. A log without the "Running" lines (logcat
    filtered) gives the lines whose message is the Stat line."""
    phases, waiting = [], False
    for line in text.splitlines():
        if _RUNNING.search(line):
            waiting = True
        elif waiting and _STAT.search(line):
            phases.append(_stat(line))
            waiting = False
    if not _RUNNING.search(text):
        phases = [_stat(line) for line in text.splitlines() if _BARE_STAT.search(line)]
    return phases


def parse_benchmark_model(text: str) -> RunnerOutput:
    """Parse benchmark_model's stdout+stderr (or logcat `-s tflite`): load (Init), first warm-up run, mean, the
    timed phase's statistics in `summary` (ms), peak memory (KiB) and the ERROR/FATAL messages."""
    out = RunnerOutput(BENCHMARK_MODEL)
    phases = _phases(text)
    warm, timed = (phases + [{}, {}])[:2]
    for line in text.splitlines():
        if m := _TIMINGS.search(line) or _OLD_TIMINGS.search(line):
            d = m.groupdict()
            out.load_ms = (_number(d["init"]) or 0.0) / 1000.0
            first = _number(d.get("first"))
            out.first_iteration_ms = first / 1000.0 if first is not None and warm.get("count", 1) > 0 else None
            out.mean_ms = None if _number(d["avg"]) is None else _number(d["avg"]) / 1000.0
        elif (m := _SESSION.search(line)) and out.load_ms is None:
            out.load_ms = _number(m.group("ms"))
        elif m := _PEAK.search(line):
            out.peak_rss_kb = round(float(m.group("mb")) * 1024) if _number(m.group("mb")) else None
        elif m := _SIGNATURE.search(line):
            out.method = m.group(1)
        if m := _ERROR.search(line):
            out.errors.append(m.group(1))
    if timed:
        out.executions = int(timed["count"])
        out.summary = {("p50" if k == "median" else k): v / 1000.0 for k, v in timed.items()
                       if k in ("min", "max", "std", "p5", "median", "p95")}
    if warm.get("avg") is not None:
        out.summary["warmup_avg"] = warm["avg"] / 1000.0
    if out.mean_ms is not None and out.executions:
        out.total_ms = out.mean_ms * out.executions
    out.peak_rss_kb = parse_toybox_time(text) or out.peak_rss_kb
    return out


def signature_io(model_path: str | Path, signature: str | None = None) -> tuple[str | None, list[str], list[str]]:
    """(signature key, its input names, its output names), the names in the order of the signature subgraph's input
    and output tensors: the order benchmark_model binds --input_layer and writes --output_filepath. A model without
    signatures gives the tensor names of subgraph 0. KeyError names the keys when `signature` is absent or ambiguous."""
    from ai_edge_litert import schema_py_generated as schema  # flatbuffer reader only, no interpreter

    with open(model_path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        model = schema.Model.GetRootAs(buf, 0)
        sigs = {model.SignatureDefs(i).SignatureKey().decode(): model.SignatureDefs(i)
                for i in range(model.SignatureDefsLength())}
        if not sigs:
            graph = model.Subgraphs(0)
            names = [graph.Tensors(int(t)).Name().decode() for t in graph.InputsAsNumpy()]
            return None, names, [graph.Tensors(int(t)).Name().decode() for t in graph.OutputsAsNumpy()]
        key = signature or (next(iter(sigs)) if len(sigs) == 1 else None)
        if key not in sigs:
            raise KeyError(f"signature {signature!r} not in the model; its keys: {sorted(sigs)}")
        sig, graph = sigs[key], model.Subgraphs(sigs[key].SubgraphIndex())
        ins = {sig.Inputs(i).TensorIndex(): sig.Inputs(i).Name().decode() for i in range(sig.InputsLength())}
        outs = {sig.Outputs(i).TensorIndex(): sig.Outputs(i).Name().decode() for i in range(sig.OutputsLength())}
        return (key, [ins[int(t)] for t in graph.InputsAsNumpy() if int(t) in ins],
                [outs[int(t)] for t in graph.OutputsAsNumpy() if int(t) in outs])


def read_outputs(data: bytes, outputs: Sequence[tuple[str, Sequence[int], Any]]) -> dict[str, np.ndarray]:
    """Split a --output_filepath file: `outputs` = (name, shape, numpy dtype) in the subgraph's output order
    (`signature_io`). The file has no header, so the sizes must add up exactly (ValueError otherwise: a dynamic
    output shape or another order); a string tensor is written in TFLite's packed string layout, which this does
    not decode (NotImplementedError)."""
    dtypes = [np.dtype(d) for _, _, d in outputs]
    if any(d.kind in "OSUV" for d in dtypes):
        raise NotImplementedError("benchmark_model writes string outputs as TFLite's packed string buffer")
    sizes = [int(np.prod(shape, dtype=np.int64)) * d.itemsize for (_, shape, _), d in zip(outputs, dtypes)]
    if sum(sizes) != len(data):
        raise ValueError(f"benchmark_model wrote {len(data)} bytes of outputs; {[n for n, _, _ in outputs]} at "
                         f"their shapes take {sum(sizes)}")
    result, offset = {}, 0
    for (name, shape, _), dtype, size in zip(outputs, dtypes, sizes):
        result[name] = np.frombuffer(data, dtype=dtype, count=size // dtype.itemsize, offset=offset) \
            .reshape(tuple(int(s) for s in shape)).copy()
        offset += size
    return result
