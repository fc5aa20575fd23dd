"""Host stand-in for LiteRT's `benchmark_model` on the simulated phone: a test double that runs on THIS host.

It takes the real tool's "--flag=value" flags (other forms are left over with a WARN, as the tool does), loads the
.tflite through mi2v_export.runtimes' `litert` runtime (ai-edge-litert's Interpreter, its default XNNPACK delegate
whatever --use_xnnpack says), runs the signature `warmup_runs` then `num_runs` times under the tool's
min_secs/max_secs loop and prints the real tool's lines (their wording and number format: INFO/WARN on stdout,
ERROR/FATAL on stderr; docs/guides/litert.md#sources), so devices/benchmark_model.py's parser is tested on that
format. Timings and memory are this host's, never a phone's. --output_filepath is written as the tool writes it.
Differences, on purpose: inputs without value files are ones (the real tool draws random ones), --input_layer_shape
must equal the model's (no resize), --use_gpu=true fails as on a phone without the GPU delegate, and op profiling
prints no tables.
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from .. import runtimes
from ..devices.benchmark_model import signature_io
from ..runtimes import dtypes, memory

# name: (type, default, LogParams description); --graph and --signature_to_run_for are always logged
_FLAGS: dict[str, tuple[str, str, str]] = {
    "num_runs": ("int32", "50", "Min num runs"), "min_secs": ("float", "1", "Min runs duration (seconds)"),
    "max_secs": ("float", "150", "Max runs duration (seconds)"), "num_threads": ("int32", "-1", "Num threads"),
    "run_delay": ("float", "-1", "Inter-run delay (seconds)"), "warmup_runs": ("int32", "1", "Min warmup runs"),
    "warmup_min_secs": ("float", "0.5", "Min warmup runs duration (seconds)"),
    "report_peak_memory_footprint": ("bool", "false", "Report the peak memory footprint"),
    "memory_footprint_check_interval_ms": ("int32", "50", "Memory footprint check interval (ms)"),
    "graph": ("string", "", "Graph"), "signature_to_run_for": ("string", "", "Signature to run"),
    "input_layer": ("string", "", "Input layers"), "input_layer_shape": ("string", "", "Input shapes"),
    "input_layer_value_range": ("string", "", "Input value ranges"),
    "input_layer_value_files": ("string", "", "Input value files"),
    "print_preinvoke_state": ("bool", "false", "Print pre-invoke interpreter state"),
    "print_postinvoke_state": ("bool", "false", "Print post-invoke interpreter state"),
    "output_filepath": ("string", "", "File path to export outputs layer to"),
    "enable_op_profiling": ("bool", "false", "Enable op profiling"), "use_gpu": ("bool", "false", "Use gpu"),
    "use_xnnpack": ("bool", "false", "Use xnnpack"),
}


class _Fail(Exception):
    """A failure the real tool reports: its ERROR (or FATAL: abort) lines."""
    def __init__(self, *lines: str, fatal: bool = False):
        super().__init__(lines[0])
        self.lines, self.fatal = lines, fatal


def _log(level: str, msg: str) -> None:
    print(f"{level}: {msg}", file=sys.stdout if level in ("INFO", "WARN") else sys.stderr, flush=True)


def _value(kind: str, text: str):
    if kind == "bool" and text not in ("true", "false", "1", "0"):
        raise ValueError(text)
    return text in ("true", "1") if kind == "bool" else {"int32": int, "float": float}.get(kind, str)(text)


def _parse(argv: list[str]) -> tuple[dict, set[str]]:
    """Each flag takes the first unconsumed "--name=value"; what is left is only warned about."""
    params, given, left = {k: _value(v[0], v[1]) for k, v in _FLAGS.items()}, set(), list(argv)
    if argv[:1] == ["--help"]:
        raise _Fail("usage: benchmark_model <flags>\n" + "".join(f"\t--{k}={v[1]}\t{v[0]}\n" for k, v in
                                                                 _FLAGS.items()))
    for name, (kind, _, _) in _FLAGS.items():
        for arg in [a for a in left if a.startswith(f"--{name}=")][:1]:
            left.remove(arg)
            try:
                params[name] = _value(kind, arg.split("=", 1)[1])
            except ValueError:
                raise _Fail(f"Failed to parse flag '{name}' against argv '{arg}'") from None
            given.add(name)
    if left:
        _log("WARN", f"Unconsumed cmdline flags: {' '.join(left)}")
    return params, given


def _layer_info(p: dict) -> list[dict]:
    """PopulateInputLayerInfo: --input_layer names, --input_layer_shape shapes, --input_layer_value_files files."""
    names = p["input_layer"].split(",") if p["input_layer"] else []
    shapes = p["input_layer_shape"].split(":") if p["input_layer_shape"] else []
    if len(names) != len(shapes):
        raise _Fail(f"The number of items in --input_layer_shape ({p['input_layer_shape']}, with {len(shapes)} "
                    f"items) must match the number of items in --input_layer ({p['input_layer']}, with "
                    f"{len(names)} items). For example --input_layer=input1,input2 "
                    "--input_layer_shape=1,224,224,4:1,20")
    info = [{"name": n, "shape": tuple(int(d) for d in s.split(",") if d), "file": ""} for n, s in zip(names, shapes)]
    for item in p["input_layer_value_files"].split(",") if p["input_layer_value_files"] else []:
        parts = item.replace("::", "\0").split(":")  # one ':' splits name from path, '::' is a literal ':'
        if len(parts) != 2:
            why = "contains more than one" if len(parts) > 2 else "doesn't contain any"
            raise _Fail(f"{item} {why} delimiter.", f"Wrong input value file item specified: {item}")
        name, path = (part.replace("\0", ":") for part in parts)
        match = [i for i in info if i["name"] == name]
        if not match:
            raise _Fail(f"Cannot find the corresponding input_layer name({name}) in --input_layer as "
                        f"{p['input_layer']}", fatal=True)
        match[0]["file"] = path
    return info


def _load(p: dict):
    """LoadModel + InitInterpreter with the real tool's error lines for a missing or corrupt file."""
    path = p["graph"]
    if not os.path.isfile(path):
        raise _Fail(f"Could not open '{path}'.", "The model allocation is null/empty", f"Failed to load model {path}")
    if Path(path).read_bytes()[4:8] != b"TFL3":
        raise _Fail("The model is not a valid Flatbuffer buffer", f"Failed to load model {path}")
    try:
        key, ins, outs = signature_io(path, p["signature_to_run_for"] or None)
    except KeyError as exc:
        raise _Fail('Signature not specified or incorrect. Pass one of the following to the flag '
                    '"--signature_to_run_for"', f" #> {exc.args[0]}") from None
    try:
        session = runtimes.get("litert").load(path, threads=p["num_threads"] if p["num_threads"] > 0 else None)
    except Exception as exc:  # the interpreter refused the graph (an op it lacks, a bad tensor)
        raise _Fail(str(exc).splitlines()[0], "Failed to initialize the interpreter") from None
    _log("INFO", f"Loaded model {path}")
    print("INFO: Initialized TensorFlow Lite runtime.", file=sys.stderr, flush=True)  # the runtime's own line
    if p["use_gpu"]:
        raise _Fail("Failed to apply GPU delegate.")
    if key:
        _log("INFO", f"Using signature: {key}")
    return session, ins, outs


def _feeds(session, ins: list[str], info: list[dict]) -> dict:
    """Inputs in the subgraph's order, bound BY POSITION to --input_layer (names only warned about)."""
    specs, tensor = {t.name: t for t in session.inputs}, session.runner.get_input_details()
    if info and len(info) != len(ins):
        raise _Fail(f"Inputs mismatch: Model inputs #:{len(info)} expected: {len(ins)}", fatal=True)
    feeds = {}
    for i, name in enumerate(ins):
        spec, layer = specs[name], (info[i] if info else None)
        if layer and layer["name"] != tensor[name]["name"]:
            _log("WARN", f"Tensor # {tensor[name]['index']} is named {tensor[name]['name']} but flags call it "
                         f"{layer['name']}")
        if layer and layer["shape"] != spec.static_shape():
            raise _Fail(f"host stand-in: --input_layer_shape {layer['shape']} is not {name}'s {spec.static_shape()}")
        feeds[name] = _read_value_file(layer["file"], spec) if layer and layer["file"] else spec.ones()
    return session.prepare(feeds)


def _read_value_file(path: str, spec) -> np.ndarray:
    dtype = np.dtype(dtypes.numpy_dtype(spec.dtype))
    want = int(np.prod(spec.static_shape(), dtype=np.int64)) * dtype.itemsize
    if not os.path.isfile(path):
        raise _Fail(f"Failed to read the input_layer_value_file:{path}", fatal=True)
    if os.path.getsize(path) != want:
        raise _Fail(f"The size of {path} is {os.path.getsize(path)} bytes. It should be {want} bytes.", fatal=True)
    return np.fromfile(path, dtype=dtype).reshape(spec.static_shape())


def _stat_line(us: list[int]) -> str:
    """tensorflow::StatWithPercentiles::OutputToStream of int64 microseconds."""
    n, ordered = len(us), sorted(us)
    pct = " ".join(f"{k}={ordered[min(n - 1, n * q // 100)] if n else 0}" for k, q in
                   (("p5", 5), ("median", 50), ("p95", 95)))
    if not n:
        return f"count=0 {pct}"
    if ordered[0] == ordered[-1]:
        return f"count={n} curr={us[-1]}{'(all same)' if n > 1 else ''} {pct}"
    avg = sum(us) / n
    std = int(math.sqrt(int(sum(v * v for v in us) / n - avg * avg)))
    return f"count={n} first={us[0]} curr={us[-1]} min={ordered[0]} max={ordered[-1]} avg={avg:g} std={std} {pct}"


def _run(session, feeds, runs: int, min_secs: float, p: dict) -> tuple[list[int], object]:
    """BenchmarkModel::Run: at least `runs` runs and `min_secs` seconds, none started after max_secs."""
    _log("INFO", f"Running benchmark for at least {runs} iterations and at least {min_secs:g} seconds but terminate "
                 f"if exceeding {p['max_secs']:g} seconds.")
    start = now = time.perf_counter()
    us, raw = [], None
    while (len(us) < runs or now < start + min_secs) and now <= start + p["max_secs"]:
        t0 = time.perf_counter()
        raw = session.execute(feeds)
        us.append(int((time.perf_counter() - t0) * 1e6))
        if p["run_delay"] > 0:
            time.sleep(p["run_delay"])
        now = time.perf_counter()
    _log("INFO", _stat_line(us) + "\n")
    return us, raw


def _maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _report(init_us: int, warm: list[int], timed: list[int], mem: tuple[int, int, int], peak: bool) -> None:
    """BenchmarkLoggingListener::OnBenchmarkEnd."""
    warm_avg, timed_avg = (sum(v) / len(v) if v else math.nan for v in (warm, timed))
    _log("INFO", f"Inference timings in us: Init: {init_us}, First inference: {warm[0] if warm else 0}, "
                 f"Warmup (avg): {warm_avg:g}, Inference (avg): {timed_avg:g}")
    _log("INFO", "Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE "
                 "to the actual memory footprint of the model at runtime. Take the information at your discretion.")
    _log("INFO", f"Memory footprint delta from the start of the tool (MB): init={(mem[1] - mem[0]) / 1024.0:g} "
                 f"overall={(mem[2] - mem[0]) / 1024.0:g}")
    if peak and (peak_bytes := memory.peak_rss_bytes()):
        _log("INFO", f"Overall peak memory footprint (MB) via periodic monitoring: {peak_bytes / 1024 / 1024:g}")
        mb = [int(v) * os.sysconf("SC_PAGE_SIZE") >> 20 for v in Path("/proc/self/statm").read_text().split()[:3]]
        print(f"INFO: Memory status at the end of exeution:\nINFO: - VmRSS              : {mb[1]} MB\n"
              f"INFO: + RssAnnon           : {mb[1] - mb[2]} MB\nINFO: + RssFile + RssShmem : {mb[2]} MB", flush=True)


def _benchmark(p: dict, given: set[str]) -> None:
    if not p["graph"]:
        raise _Fail("Please specify the name of your TF Lite input file with --graph")
    info = _layer_info(p)
    _log("INFO", "Log parameter values verbosely: [0]")
    for name, (_, _, desc) in _FLAGS.items():
        if name in given or name in ("graph", "signature_to_run_for"):
            v = p[name]
            _log("INFO", f"{desc}: [{int(v) if isinstance(v, bool) else f'{v:g}' if isinstance(v, float) else v}]")
    mem0, t0 = _maxrss_kb(), time.perf_counter()
    session, ins, outs = _load(p)
    init_us, mem1 = int((time.perf_counter() - t0) * 1e6), _maxrss_kb()
    feeds = _feeds(session, ins, info)  # PrepareInputData, after Init's timing
    _log("INFO", f"The input model file size (MB): {os.path.getsize(p['graph']) / 1e6:g}")
    _log("INFO", f"Initialized session in {init_us / 1e3:g}ms.")
    warm, raw = _run(session, feeds, p["warmup_runs"], p["warmup_min_secs"], p)
    timed, raw_timed = _run(session, feeds, p["num_runs"], p["min_secs"], p)
    raw = raw_timed if raw_timed is not None else raw
    if p["output_filepath"] and raw is not None:  # OutputSaver: raw tensors in the subgraph's output order
        got = session.collect(raw)
        Path(p["output_filepath"]).write_bytes(b"".join(np.ascontiguousarray(got[n]).tobytes() for n in outs))
    _report(init_us, warm, timed, (mem0, mem1, _maxrss_kb()), p["report_peak_memory_footprint"])


def benchmark_model(argv: list[str]) -> int:
    """benchmark_model's main(): "STARTING!", the benchmark, "Benchmarking failed." and EXIT_FAILURE on an error;
    a FATAL line aborts (SIGABRT: the shell's status 134)."""
    _log("INFO", "STARTING!")
    try:
        _benchmark(*_parse(argv))
    except _Fail as fail:
        for line in fail.lines:
            _log("FATAL" if fail.fatal else "ERROR", line)
        if fail.fatal:
            return 128 + 6
        _log("ERROR", "Benchmarking failed.")
        return 1
    return 0
