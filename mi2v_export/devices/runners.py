"""Benchmark runners: parsers for their output, and host stand-ins that print the same output.

Parsers (formats from upstream source, see shared/spec/device-bench.md §1.1, §2, §4, §8.2):
  * ExecuTorch `executor_runner` (v1.3+ per-iteration lines; older builds give only the total → mean only),
  * `onnxruntime_perf_test` (stdout summary, `-s` latency percentiles, and the per-run CSV result file),
  * `toybox time -v`, `dumpsys thermalservice`, `dumpsys battery`, `/proc/meminfo`.
All regexes search messages anywhere in a line, so the posix PAL prefix
(`I 00:00:01.234567 executorch:executor_runner.cpp:781] `) and logcat prefixes are ignored.

Host runners: `write_host_runner("executor_runner" | "onnxruntime_perf_test", folder)` writes an executable that
accepts the real runner's flags, **really executes the model** on this machine (ExecuTorch Python runtime for .pte,
onnxruntime for .onnx) and prints the real runner's output format. A simulated phone (which reports the host ABI)
runs it in place of the aarch64 binaries, so the whole adb flow — push, chmod, run, parse, pull — is exercised with
real model execution; only the timings are the host's.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

EXECUTOR_RUNNER = "executor_runner"
ORT_PERF_TEST = "onnxruntime_perf_test"
HOST_RUNNER_MARKER = "mi2v host runner"

# Delegates a host runner can execute: XNNPACK (and the portable kernels). Vulkan, QNN and Core ML need the phone.
HOST_RUNNABLE_BACKENDS = ("XnnpackBackend",)
KNOWN_BACKENDS = ("XnnpackBackend", "VulkanBackend", "QnnBackend", "CoreMLBackend", "MPSBackend", "NeuronBackend")

# --------------------------------------------------------------------------------------------------------------------
# parsed results
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class RunnerOutput:
    """What one runner process reported. Times in milliseconds."""

    runner: str
    samples_ms: list[float] = field(default_factory=list)  # one per timed iteration, in order
    load_ms: float | None = None
    total_ms: float | None = None  # executor_runner: sum of execute() times
    executions: int | None = None
    first_iteration_ms: float | None = None  # ORT's single built-in warm-up
    mean_ms: float | None = None
    peak_rss_kb: int | None = None
    method: str | None = None
    missing_backends: list[str] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)  # runner-computed stats (ORT -s), ms
    errors: list[str] = field(default_factory=list)

    @property
    def per_iteration(self) -> bool:
        return bool(self.samples_ms)


_ET_LOADED = re.compile(r"Model loaded in (?P<ms>[\d.]+) ms\.")
_ET_ITER = re.compile(r"Iteration (?P<i>\d+) of (?P<n>\d+): (?P<ms>[\d.]+) ms")
_ET_DONE = re.compile(r"Model executed successfully (?P<n>\d+) time\(s\)(?: in (?P<ms>[\d.]+) ms)?\.")
_ET_METHOD = re.compile(r"Using method (?P<m>\S+)")
_ET_NOBACKEND = re.compile(r"Backend (?P<b>\w+) is not registered\.")
_ET_FAIL = re.compile(r"(Loading of method \S+ failed with status 0x[0-9a-fA-F]+|Execution of method \S+ failed "
                      r"with status 0x[0-9a-fA-F]+|Failed to parse model file \S+|Extra commandline args:.*|"
                      r"ERROR: unknown command line flag '[^']*')")
_TOYBOX_RSS = re.compile(r"Max RSS \(KiB\): (\d+)")


def parse_executor_runner(text: str) -> RunnerOutput:
    """Parse executor_runner's log (stdout+stderr, or logcat `-s ExecuTorch:I`)."""
    out = RunnerOutput(EXECUTOR_RUNNER)
    iterations: dict[int, float] = {}
    for line in text.splitlines():
        if m := _ET_ITER.search(line):
            iterations[int(m.group("i"))] = float(m.group("ms"))
        elif m := _ET_LOADED.search(line):
            out.load_ms = float(m.group("ms"))
        elif m := _ET_DONE.search(line):
            out.executions = int(m.group("n"))
            if m.group("ms") is not None:
                out.total_ms = float(m.group("ms"))
        elif m := _ET_METHOD.search(line):
            out.method = m.group("m")
        elif m := _ET_NOBACKEND.search(line):
            if m.group("b") not in out.missing_backends:
                out.missing_backends.append(m.group("b"))
        if m := _ET_FAIL.search(line):
            out.errors.append(m.group(1))
    out.samples_ms = [iterations[i] for i in sorted(iterations)]
    if out.total_ms is not None and out.executions:
        out.mean_ms = out.total_ms / out.executions
    elif out.samples_ms:
        out.mean_ms = sum(out.samples_ms) / len(out.samples_ms)
    out.peak_rss_kb = parse_toybox_time(text)
    return out


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_ORT_SESSION = re.compile(rf"Session creation time cost: ?(?P<s>{_NUM}) ?s")
_ORT_FIRST = re.compile(rf"First inference time cost: ?(?P<ms>{_NUM}) ?ms")
_ORT_AVG = re.compile(rf"Average inference time cost(?: total)?: ?(?P<ms>{_NUM}) ?ms")
_ORT_REQUESTS = re.compile(r"Total inference requests: ?(?P<n>\d+)")
_ORT_PEAK = re.compile(r"Peak working set size: ?(?P<b>\d+)")
_ORT_LAT = re.compile(rf"(?P<q>Min|Max|P50|P90|P95|P99|P999) Latency(?::| is) ?(?P<s>{_NUM}) ?s")


def parse_ort_csv(text: str) -> list[float]:
    """Per-run latencies (ms) from onnxruntime_perf_test's result file: `model,seconds,peak,cpu,idx` lines."""
    rows: list[tuple[int, float]] = []
    for n, line in enumerate(text.splitlines()):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2:
            continue
        try:
            seconds = float(parts[1])
        except ValueError:
            continue  # a header or a foreign line
        idx = int(parts[4]) if len(parts) > 4 and parts[4].lstrip("-").isdigit() else n
        rows.append((idx, seconds * 1000.0))
    return [ms for _, ms in sorted(rows, key=lambda r: r[0])]


def parse_ort_perf_test(text: str, csv_text: str | None = None) -> RunnerOutput:
    """Parse onnxruntime_perf_test stdout; per-iteration samples come from the CSV result file when given."""
    out = RunnerOutput(ORT_PERF_TEST)
    for line in text.splitlines():
        if m := _ORT_SESSION.search(line):
            out.load_ms = float(m.group("s")) * 1000.0
        elif m := _ORT_FIRST.search(line):
            out.first_iteration_ms = float(m.group("ms"))
        elif m := _ORT_AVG.search(line):
            out.mean_ms = float(m.group("ms"))
        elif m := _ORT_REQUESTS.search(line):
            out.executions = int(m.group("n"))
        elif m := _ORT_PEAK.search(line):
            out.peak_rss_kb = int(m.group("b")) // 1024
        elif m := _ORT_LAT.search(line):
            out.summary[m.group("q").lower()] = float(m.group("s")) * 1000.0
        elif "is not supported in this build" in line or line.startswith(("Error", "Exception", "Load model")):
            out.errors.append(line.strip())
    if csv_text:
        out.samples_ms = parse_ort_csv(csv_text)
    if out.mean_ms is not None and out.executions:
        out.total_ms = out.mean_ms * out.executions
    rss = parse_toybox_time(text)
    if rss is not None:
        out.peak_rss_kb = rss
    return out


def parse_toybox_time(text: str) -> int | None:
    m = _TOYBOX_RSS.search(text)
    return int(m.group(1)) if m else None


@dataclass
class ThermalSnapshot:
    status: int | None
    temps_c: dict[str, float]


_THERMAL_STATUS = re.compile(r"Thermal Status: (\d)")
_THERMAL_TEMP = re.compile(r"Temperature\{mValue=([-\d.]+), mType=(\d+), mName=([^,]+), mStatus=(\d)\}")


def parse_thermalservice(text: str) -> ThermalSnapshot:
    """`dumpsys thermalservice`: the status and the temperatures under "Current temperatures from HAL"."""
    status = _THERMAL_STATUS.search(text)
    block = text.split("Current temperatures from HAL:", 1)
    temps_text = block[1].split("Current cooling devices", 1)[0] if len(block) == 2 else text
    temps = {m.group(3): float(m.group(1)) for m in _THERMAL_TEMP.finditer(temps_text)}
    return ThermalSnapshot(int(status.group(1)) if status else None, temps)


def parse_battery(text: str) -> dict[str, object]:
    """`dumpsys battery`: level (%), temperature (°C), plugged (ac/usb/wireless/none)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    out: dict[str, object] = {}
    if fields.get("level", "").isdigit():
        out["level"] = int(fields["level"])
    if re.fullmatch(r"-?\d+", fields.get("temperature", "")):
        out["temp_c"] = int(fields["temperature"]) / 10.0
    plugged = [k for k in ("AC", "USB", "Wireless") if fields.get(f"{k} powered") == "true"]
    out["plugged"] = plugged[0].lower() if plugged else "none"
    return out


def parse_meminfo(text: str) -> dict[str, int]:
    """`/proc/meminfo` → {"MemTotal": kB, …}."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"(\w+):\s+(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def backends_in_pte(data: bytes) -> list[str]:
    """Delegate ids named in a .pte (a byte scan, enough to tell XNNPACK from Vulkan/QNN/Core ML)."""
    return [b for b in KNOWN_BACKENDS if b.encode() in data]


# --------------------------------------------------------------------------------------------------------------------
# host runners
# --------------------------------------------------------------------------------------------------------------------


def pte_input_specs(meta) -> list[tuple[tuple[int, ...], object]]:
    """(shape, torch dtype) of each input of an ExecuTorch method, from its metadata (ScalarType codes)."""
    import torch

    dtypes = {0: torch.uint8, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.int64, 5: torch.float16,
              6: torch.float32, 7: torch.float64, 11: torch.bool, 15: torch.bfloat16}
    specs = []
    for i in range(meta.num_inputs()):
        tmeta = meta.input_tensor_meta(i)
        specs.append((tuple(tmeta.sizes()), dtypes.get(int(tmeta.dtype()), torch.float32)))
    return specs


def _raw_tensor(path: str, shape: tuple[int, ...], dtype):
    """An --inputs file: the tensor's raw bytes in the method's dtype (what executor_runner reads)."""
    import torch

    data = bytearray(Path(path).read_bytes())
    return torch.frombuffer(data, dtype=dtype).reshape(shape).clone()


def write_host_runner(name: str, folder: str | os.PathLike[str], python: str | None = None) -> Path:
    """Write an executable `folder/<name>` that stands in for the real runner on this machine's ABI."""
    if name not in _HOST_RUNNERS:
        raise ValueError(f"no host runner named {name!r}; choose one of {sorted(_HOST_RUNNERS)}")
    package_parent = Path(__file__).resolve().parents[2]
    python = python or sys.executable
    # A sh/python polyglot: sh execs python on this file (any interpreter path, no shebang length limit);
    # python sees the first lines as a string.
    text = f"""#!/bin/sh
''':'
exec {shlex.quote(python)} "$0" "$@"
'''
# {HOST_RUNNER_MARKER}: stands in for {name} on a simulated phone (host ABI). It executes the model for real on
# this machine and prints {name}'s output format. Generated by mi2v_export.devices.runners.write_host_runner.
import sys
sys.path.insert(0, {str(package_parent)!r})
from mi2v_export.devices.runners import host_runner_main
sys.exit(host_runner_main({name!r}, sys.argv[1:]))
"""
    path = Path(folder) / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def is_host_runner(data: bytes) -> bool:
    return HOST_RUNNER_MARKER.encode() in data[:1024]


def host_runner_main(name: str, argv: list[str]) -> int:
    return _HOST_RUNNERS[name](argv)


class _EtLog:
    """ExecuTorch's posix PAL log lines on stderr: `I 00:00:00.012345 executorch:executor_runner.cpp:LINE] msg`."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, msg: str, level: str = "I", line: int = 0) -> None:
        t = time.monotonic() - self.t0
        h, rem = divmod(t, 3600)
        m, s = divmod(rem, 60)
        us = int((s - int(s)) * 1e6)
        sys.stderr.write(f"{level} {int(h):02d}:{int(m):02d}:{int(s):02d}.{us:06d} "
                         f"executorch:executor_runner.cpp:{line}] {msg}\n")
        sys.stderr.flush()


_ET_FLAGS: dict[str, tuple[str, str, str]] = {
    # name: (type, default, help) — the portable executor_runner's gflags (v1.3+), built with the event tracer
    "model_path": ("string", "model.pte", "Model serialized in flatbuffer format."),
    "data_path": ("string", "", "Path to data file (.ptd)."),
    "inputs": ("string", "", "Comma-separated list of input files"),
    "output_file": ("string", "", "Base name of output file. If not empty output will be written to the file(s)."),
    "print_output": ("string", "summary", "Output printing mode: 'none' to suppress, 'summary' for first/last 100 "
                     "elements, 'all' for everything."),
    "num_executions": ("uint32", "1", "Number of times to run the model."),
    "method_name": ("string", "", "Name of the method to run. If empty, uses the first method in the program."),
    "etdump_path": ("string", "model.etdump", "Write ETDump data to this path."),
    "cpu_threads": ("int32", "-1", "Number of CPU threads for inference. Defaults to -1, which implies we'll use a "
                    "heuristic to derive the # of performant cores for a specific device."),
}


def _parse_gflags(argv: list[str], spec: dict[str, tuple[str, str, str]]) -> tuple[dict[str, str], list[str], str]:
    """gflags-style parsing: --flag=v, --flag v, -flag=v, bools --flag/--noflag. Returns (flags, rest, error)."""
    flags = {k: v[1] for k, v in spec.items()}
    given: set[str] = set()
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            rest += argv[i:]
            break
        if not arg.startswith("-") or arg == "-":
            rest.append(arg)
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        if name in ("help", "helpfull"):
            return flags, rest, "help"
        if name not in spec:
            return flags, rest, f"ERROR: unknown command line flag '{name}'"
        kind = spec[name][0]
        if not eq:
            if kind == "bool":
                value = "true"
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                return flags, rest, f"ERROR: flag '{arg}' is missing its argument"
        if kind in ("int32", "uint32"):
            try:
                number = int(value)
            except ValueError:
                return flags, rest, f"ERROR: illegal value '{value}' specified for {kind} flag '{name}'"
            if kind == "uint32" and number < 0:
                return flags, rest, f"ERROR: illegal value '{value}' specified for {kind} flag '{name}'"
        flags[name] = value
        given.add(name)
    flags["__given__"] = ",".join(sorted(given))
    return flags, rest, ""


def _executor_runner_help() -> str:
    lines = ["executor_runner: Warning: SetUsageMessage() never called", "",
             "  Flags from examples/portable/executor_runner/executor_runner.cpp:"]
    for name, (kind, default, text) in _ET_FLAGS.items():
        lines.append(f"    -{name} ({text}) type: {kind} default: {default!r}".replace("'", '"'))
    return "\n".join(lines) + "\n"


def _light_executorch_import() -> None:
    """Import the ExecuTorch runtime without `executorch.exir` (the exporter stack: ~13 s of imports, here ~2 s).

    `executorch.extension.pybindings.portable_lib` imports `executorch.exir._warnings` only for a decorator, which
    drags in the whole `executorch.exir` package. In a runner process nothing else needs exir, so the small module
    is loaded on its own under a bare package entry. Only for the host runner's own process."""
    import importlib.util
    import types

    if "executorch.exir" in sys.modules:
        return
    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        return
    exir_dir = Path(next(iter(spec.submodule_search_locations))) / "exir"
    warnings_py = exir_dir / "_warnings.py"
    if not warnings_py.is_file():
        return
    pkg = types.ModuleType("executorch.exir")
    pkg.__path__ = [str(exir_dir)]
    wspec = importlib.util.spec_from_file_location("executorch.exir._warnings", warnings_py)
    if wspec is None or wspec.loader is None:
        return
    module = importlib.util.module_from_spec(wspec)
    sys.modules["executorch.exir"] = pkg
    sys.modules["executorch.exir._warnings"] = module
    try:
        wspec.loader.exec_module(module)
    except Exception:
        del sys.modules["executorch.exir"], sys.modules["executorch.exir._warnings"]


def _executor_runner(argv: list[str]) -> int:
    flags, rest, err = _parse_gflags(argv, _ET_FLAGS)
    if err == "help":
        sys.stdout.write(_executor_runner_help())
        return 1  # gflags exits 1 after --help
    if err:
        sys.stderr.write(err + "\n")
        return 1
    log = _EtLog()
    if rest:
        log("Extra commandline args: " + " ".join(rest), "E", 210)
        return 1
    if flags["print_output"] not in ("none", "summary", "all"):
        log(f"Unknown --print_output mode '{flags['print_output']}'. Expected 'none', 'summary', or 'all'.", "E", 224)
        return 1
    model_path = flags["model_path"]
    n = int(flags["num_executions"])
    threads = int(flags["cpu_threads"])
    try:
        _light_executorch_import()
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime, Verification
    except ImportError as exc:
        log(f"host runner: the ExecuTorch Python runtime is not installed ({exc})", "E", 0)
        return 1
    log.t0 = time.monotonic()  # the real runner's clock starts at runtime_init(), after process start
    performant = threads if threads > 0 else max(1, (os.cpu_count() or 2) // 2)
    log(f"Resetting threadpool with num threads = {performant}", line=238)
    portable_lib._unsafe_reset_threadpool(performant)
    try:
        data = Path(model_path).read_bytes()
    except OSError:
        log(f"FileDataLoader::from() failed: 0x{0x22:x}", "F", 367)
        os.abort()
    runtime = Runtime.get()
    before_load = time.perf_counter_ns()
    try:
        program = runtime.load_program(model_path, verification=Verification.Minimal,
                                       enable_etdump="etdump_path" in flags["__given__"].split(","))
    except Exception:
        log(f"Failed to parse model file {model_path}", "E", 380)
        return 1
    log(f"Model file {model_path} is loaded.", line=383)
    method_name = flags["method_name"] or sorted(program.method_names)[0]
    log(f"Using method {method_name}", line=393)
    missing = [b for b in backends_in_pte(data)
               if b not in HOST_RUNNABLE_BACKENDS or not runtime.backend_registry.is_available(b)]
    if missing:
        for b in missing:
            log(f"Backend {b} is not registered.", "E", 0)
        log(f"Loading of method {method_name} failed with status 0x{0x14:x}", "F", 523)
        os.abort()  # ET_CHECK_MSG aborts: the shell sees 134
    try:
        method = program.load_method(method_name)
        meta = method.metadata
    except Exception:
        log(f"Loading of method {method_name} failed with status 0x{0x1:x}", "F", 523)
        os.abort()
    after_load = time.perf_counter_ns()
    log(f"Model loaded in {(after_load - before_load) / 1e6:f} ms.", line=530)

    specs = pte_input_specs(meta)
    files = [f for f in flags["inputs"].split(",") if f]
    if files and len(files) != len(specs):
        log(f"Expected {len(specs)} input files, got {len(files)}", "E", 0)
        return 1
    spent = 0
    outputs = []
    for i in range(n):
        # prepared outside the timed region: the --inputs files' raw bytes, or ones
        inputs = [_raw_tensor(f, shape, dt) for f, (shape, dt) in zip(files, specs)] if files else \
            [torch.ones(shape, dtype=dt) for shape, dt in specs]
        t0 = time.perf_counter_ns()
        try:
            outputs = method.execute(inputs)
        except Exception:
            log(f"Execution of method {method_name} failed with status 0x{0x1:x}", "F", 680)
            os.abort()
        elapsed = time.perf_counter_ns() - t0
        spent += elapsed
        log(f"Iteration {i + 1} of {n}: {elapsed / 1e6:f} ms", line=690)
    log(f"Model executed successfully {n} time(s) in {spent / 1e6:f} ms.", line=698)
    log(f"{len(outputs)} outputs: ", line=705)
    if flags["print_output"] != "none":
        for i, value in enumerate(outputs):
            flat = value.flatten().tolist() if hasattr(value, "flatten") else [value]
            if flags["print_output"] == "summary" and len(flat) > 200:
                flat = flat[:100] + ["..."] + flat[-100:]
            shape = list(value.shape) if hasattr(value, "shape") else []
            sys.stdout.write(f"Output {i}: tensor(sizes={shape}, {flat})\n")
    if flags["output_file"]:  # upstream: each tensor output's raw bytes in <output_file>-<i>.bin
        for i, value in enumerate(outputs):
            name = f"{flags['output_file']}-{i}.bin"
            log(f"Writing output to file: {name}", line=735)
            Path(name).write_bytes(value.detach().contiguous().numpy().tobytes())
    if "etdump_path" in flags["__given__"].split(","):
        try:
            program.write_etdump_result_to_file(flags["etdump_path"], "")
            log(f"ETDump written to file '{flags['etdump_path']}'.", line=760)
        except Exception as exc:
            log(f"Failed to save ETDump file ({exc}).", "E", 760)
    return 0


_ORT_EPS = {
    "cpu": "CPUExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}


def _nearest_index(n: int, q: float) -> int:
    return min(n - 1, max(0, int(math.floor(n * q))))


def _ort_perf_test(argv: list[str]) -> int:
    import getopt

    usage = ("usage: onnxruntime_perf_test [options...] model_path [result_file]\n"
             "  -e [cpu|xnnpack|nnapi|qnn]: execution provider. -m [times|duration]. -r repeated times. "
             "-t seconds. -I: generate inputs. -x/-y threads. -s: statistics. -Z: no spinning. -p profile file.\n")
    try:
        opts, args = getopt.getopt(argv, "e:m:r:t:Ix:y:sZp:o:vi:P", [])
    except getopt.GetoptError as exc:
        sys.stderr.write(f"{exc}\n{usage}")
        return 1
    o = dict(opts)
    if len(args) not in (1, 2):
        sys.stderr.write(usage)
        return 1
    ep = o.get("-e", "cpu")
    if ep not in _ORT_EPS:
        sys.stderr.write(f"{usage}")
        return 1
    import numpy as np
    import onnxruntime as ort

    provider = _ORT_EPS[ep]
    if provider not in ort.get_available_providers():
        sys.stderr.write(f"{ep.upper() if ep != 'xnnpack' else 'XNNPACK'} is not supported in this build.\n")
        return 1
    model_path = args[0]
    result_file = args[1] if len(args) == 2 else None
    mode = o.get("-m", "duration")
    repeats = int(o.get("-r", "1000"))
    duration = float(o.get("-t", "10"))
    model_dir = Path(model_path).resolve().parent
    model_name = model_dir.name[5:] if model_dir.name.startswith("test_") else model_dir.name
    if "-I" not in o and not any(model_dir.glob("test_data_set_*")):
        sys.stdout.write(f"there is no test data for model {model_name}\n")
        return 1
    so = ort.SessionOptions()
    if "-x" in o:
        so.intra_op_num_threads = int(o["-x"])
    if "-y" in o:
        so.inter_op_num_threads = int(o["-y"])
    if "-Z" in o:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if "-p" in o:
        so.enable_profiling = True
        so.profile_file_prefix = o["-p"]
    t0 = time.perf_counter()
    try:
        sess = ort.InferenceSession(model_path, so, providers=[provider])
    except Exception as exc:
        sys.stdout.write(f"Load model from {model_path} failed:{exc}\n")
        return 1
    session_s = time.perf_counter() - t0
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
             "tensor(bool)": np.bool_}
    feeds = {i.name: np.ones([d if isinstance(d, int) else 1 for d in i.shape], dtype=types.get(i.type, np.float32))
             for i in sess.get_inputs()}
    t0 = time.perf_counter()
    sess.run(None, feeds)  # ORT's single built-in warm-up
    first_ms = int((time.perf_counter() - t0) * 1000)
    cpu0 = os.times()
    wall0 = time.perf_counter()
    costs: list[float] = []
    while True:
        if mode == "times" and len(costs) >= repeats:
            break
        if mode != "times" and time.perf_counter() - wall0 >= duration:
            break
        t0 = time.perf_counter()
        sess.run(None, feeds)
        costs.append(time.perf_counter() - t0)
    wall = time.perf_counter() - wall0
    cpu1 = os.times()
    cpu_pct = int(100 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / max(wall, 1e-9)
                  / (os.cpu_count() or 1))
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    total = sum(costs)
    n = len(costs)
    print(f"Session creation time cost: {session_s:g} s")
    print(f"First inference time cost: {first_ms} ms")
    print(f"Total inference time cost: {total:g} s")
    print(f"Total inference requests: {n}")
    print(f"Average inference time cost: {total / max(n, 1) * 1000:g} ms")
    print(f"Total inference run time: {wall:g} s")
    print(f"Number of inferences per second: {n / max(wall, 1e-9):g}")
    print(f"Avg CPU usage: {cpu_pct} %")
    print(f"Peak working set size: {peak} bytes")
    if "-s" in o and n:
        ordered = sorted(costs)
        print(f"Min Latency: {ordered[0]:g} s")
        print(f"Max Latency: {ordered[-1]:g} s")
        for label, q in (("P50", 0.5), ("P90", 0.9), ("P95", 0.95), ("P99", 0.99), ("P999", 0.999)):
            print(f"{label} Latency: {ordered[_nearest_index(n, q)]:g} s")
    if result_file:
        with open(result_file, "a") as fh:
            for idx, c in enumerate(costs):
                fh.write(f"{model_name},{c:.9f},{peak},{cpu_pct},{idx}\n")
    if "-p" in o:
        sess.end_profiling()
    sys.stdout.flush()
    return 0


_HOST_RUNNERS = {EXECUTOR_RUNNER: _executor_runner, ORT_PERF_TEST: _ort_perf_test}
