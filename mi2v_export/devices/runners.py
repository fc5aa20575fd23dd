"""Output parsers of the phone benchmark runners and of the device tools.

Formats from the upstream sources:
  * ExecuTorch `executor_runner` (v1.3+ per-iteration lines; older builds give only the total → mean only),
  * `onnxruntime_perf_test` (stdout summary, `-s` latency percentiles, and the per-run CSV result file),
  * `toybox time -v`, `dumpsys thermalservice`, `dumpsys battery`, `/proc/meminfo`.
All regexes search messages anywhere in a line, so the posix PAL prefix
(`I 00:00:01.234567 executorch:executor_runner.cpp:781] `) and logcat prefixes are ignored.

Also the delegates a `.pte` names (`backends_in_pte`) and which ExecuTorch runtime of this machine runs it
(`pte_runtime`: mi2v_export.runtimes decides, for the host bench and the simulated phone's executor_runner).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .. import runtimes
from ..runtimes import Runtime
from ..runtimes.executorch import BACKENDS

EXECUTOR_RUNNER = "executor_runner"
ORT_PERF_TEST = "onnxruntime_perf_test"

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


def pte_runtime(backend_ids: list[str]) -> tuple[Runtime, list[str]]:
    """The ExecuTorch runtime (mi2v_export.runtimes) of a program delegated to `backend_ids` (`backends_in_pte`):
    its first delegate's, or the portable kernels' without one; and the ids no runtime here executes (no registered
    runtime loads that backend, or the runtimes layer says it is not available on this machine)."""
    delegate_of = {backend: delegate for delegate, backend in BACKENDS.items() if backend}
    known = [delegate_of[b] for b in backend_ids if b in delegate_of]
    runtime = runtimes.for_target("executorch", known[0] if known else None)[0]
    blocked = [b for b in backend_ids
               if b not in delegate_of or runtimes.for_target("executorch", delegate_of[b])[0].available()]
    return runtime, blocked
