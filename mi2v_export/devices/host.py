"""Host driver: time exported artifacts in this process.

`.onnx` runs on onnxruntime (CPU execution provider), `.pte` on the ExecuTorch Python runtime (portable kernels plus
the delegates this machine can execute); which runtime loads an artifact, and whether it can run here, is
mi2v_export.runtimes' decision. The timed region is one `InferenceSession.run` /
`Method.execute` call; inputs (filled with ones, like the phone runners) are prepared outside it. Warm-up iterations
run in the same process and are discarded, as on the phone.

Peak memory: the process high-water mark (VmHWM) is reset before each component (`/proc/self/clear_refs`, Linux) and
read after it, so each component gets its own peak. Where the reset is not allowed the value is the process peak so
far, and `peak_rss_scope` says so.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import qnn, runtimes
from ..contract import cpu_model
from ..qnn import RUNTIME as QNN_RUNTIME
from ..runtimes import Runtime, Session, memory
from ..runtimes.base import package_version
from ..runtimes.sessions import TiledSession, is_tiled, open_session
from ..errors import BadInputError, DeviceError, MissingDependencyError, first_line
from ..pipeline.stages import artifact_stage
from .base import BenchDevice, BenchOptions, DeviceFacts, Say, Selection
from .cpus import cpu_list, parse_mask
from .output_check import host_outputs
from .profile import PROFILE_RUNS, host_profile
from .remote_stage import RemoteStage
from .registry import DeviceKind, register
from .report import BenchReport, ComponentResult, RunResult
from .runners import backends_in_pte, pte_runtime
from .selection import FAMILIES


def runtime_for(path: str | os.PathLike[str], runtime: str = "auto") -> str:
    """The runtime family that executes this artifact: auto → the one whose runtimes load its suffix
    (mi2v_export.runtimes: .onnx → onnxruntime, .pte → executorch)."""
    suffix = Path(path).suffix.lower()
    families = {r.family for r in runtimes.for_path(path)}
    wanted = next((f for f in FAMILIES if f in families), None)
    if wanted is None:
        suffixes = sorted({r.suffix for r in runtimes.all() if r.family in FAMILIES and r.suffix})
        raise BadInputError(f"cannot benchmark {Path(path).name} on the host: only {', '.join(suffixes)} artifacts "
                            "run here (.mlpackage needs a Mac)")
    if runtime not in ("auto", *FAMILIES):
        raise BadInputError(f"unknown runtime {runtime!r}; use auto or one of {', '.join(FAMILIES)}")
    if runtime != "auto" and runtime != wanted:
        raise BadInputError(f"{Path(path).name} is a {suffix} artifact, which runs on {wanted}, not {runtime}")
    return wanted


def bench_artifact(
    path: str | os.PathLike[str],
    runtime: str = "auto",
    warmup: int = 3,
    iterations: int = 20,
    threads: int | None = None,
    qnn_soc: str | None = None,
    qnn_fp16: bool = True,
    entry: Any = None,
) -> RunResult:
    """Load the artifact, run `warmup` discarded iterations then `iterations` timed ones, in this process.
    `qnn_soc`: an EPContext model compiled for that SoC's HTP, run on the HTP simulator (simulated timings).
    `entry`: its manifest entry; a tiled one runs every tile of every stage per iteration (runtimes/sessions.py),
    and the result lists the tiles and their times."""
    if iterations < 1 or warmup < 0:
        raise BadInputError("iterations must be ≥ 1 and warm-up ≥ 0")
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"artifact {path} does not exist")
    which = runtime_for(path, runtime)
    scoped = memory.reset_peak() == memory.RESET
    if which == "onnxruntime":
        result = _bench_onnx(path, warmup, iterations, threads, qnn_soc, qnn_fp16, entry)
    elif which == "executorch":
        result = _bench_pte(path, warmup, iterations, threads, entry)
    else:  # every other family: the runtime the layer picks for the entry (or the suffix), as it loads it
        result = _bench_session(_family_runtime(path, which, entry), path, entry, {"threads": threads}, warmup,
                                iterations, f"{which} failed to run")
    result.peak_rss_kb = memory.peak_rss_kb()
    result.peak_rss_scope = "component" if scoped else "process"
    return result


def _timed(session: Session, path: Path, warmup: int, iterations: int, failed: str) -> tuple[list, list]:
    """(warm-up ms, timed ms): each iteration times the runtime's one call (`Session.execute`) on inputs of ones
    prepared outside the timed region."""
    warm: list[float] = []
    samples: list[float] = []
    for k in range(warmup + iterations):
        prepared = session.prepare(session.ones())
        t0 = time.perf_counter()
        try:
            session.execute(prepared)
        except Exception as exc:
            raise BadInputError(f"{failed} {path.name}: {first_line(exc)}") from None
        (warm if k < warmup else samples).append((time.perf_counter() - t0) * 1000)
    return warm, samples


def _bench_onnx(path: Path, warmup: int, iterations: int, threads: int | None, qnn_soc: str | None = None,
                qnn_fp16: bool = True, entry: Any = None) -> RunResult:
    """onnxruntime's CPU EP, or the QNN EP's HTP simulator for a QNN EPContext model (`qnn_soc`)."""
    if qnn_soc:
        runtime, options = runtimes.get(QNN_RUNTIME), {"soc": qnn_soc, "fp16": qnn_fp16}
    else:
        runtime, options = runtimes.get("onnxruntime"), {"threads": threads}
    return _bench_session(runtime, path, entry, options, warmup, iterations, "onnxruntime failed to run")


def _bench_session(runtime: Runtime, path: Path, entry: Any, options: dict, warmup: int, iterations: int,
                   failed: str) -> RunResult:
    t0 = time.perf_counter()
    with open_session(runtime, path, entry, **options) as session:
        load_ms = (time.perf_counter() - t0) * 1000
        warm, samples = _timed(session, path, warmup, iterations, failed)
        tiles = session.tile_summary() if isinstance(session, TiledSession) else None
    return RunResult(load_ms=load_ms, samples_ms=samples, warmup_ms=warm, exit_code=0,
                     backend=session.backend, threads=options.get("threads") or session.threads, tiles=tiles)


def _family_runtime(path: Path, family: str, entry: Any) -> Runtime:
    """The runtime of `family` that runs this artifact here; one line saying why not when none can."""
    candidates = [r for r in (runtimes.for_entry(entry) if entry is not None else runtimes.for_path(path))
                  if r.family == family]
    for runtime in candidates:
        if runtime.available() is None:
            return runtime
    why = candidates[0].available() if candidates else f"no {family} runtime is registered"
    raise MissingDependencyError(f"{path.name}: {why}")


def _pte_runtime(path: Path, data: bytes) -> Runtime:
    """The ExecuTorch runtime for a .pte given without its manifest entry, by the delegates its bytes name; one
    line naming them when they cannot run here."""
    portable = runtimes.for_target("executorch")[0]
    if portable.available():
        raise MissingDependencyError(f"{portable.available()}, next to torch")
    runtime, blocked = pte_runtime(backends_in_pte(data))
    if blocked:
        raise MissingDependencyError(
            f"{path.name} is delegated to {', '.join(blocked)}, which cannot run on this machine: "
            "benchmark it on a phone (--device adb:SERIAL)"
        )
    return runtime


def _bench_pte(path: Path, warmup: int, iterations: int, threads: int | None, entry: Any = None) -> RunResult:
    data = path.read_bytes()
    runtime = _pte_runtime(path, data)
    options = {"threads": threads} if is_tiled(entry) else {"threads": threads, "data": data}
    return _bench_session(runtime, path, entry, options, warmup, iterations,
                          "the ExecuTorch runtime failed to execute")


def host_facts() -> dict[str, object]:
    """What the host report says about this machine (the "device" when --device host)."""
    cpu = cpu_model()
    mem_kb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except (OSError, ValueError):
        pass
    versions: dict[str, str] = {}  # each benchmarked runtime family's package, and torch
    for family in (*FAMILIES, "torch"):
        package = next((r.package for r in runtimes.all() if r.family == family and r.package), family)
        found = package_version(package)
        if found:
            versions[family] = found
    return {
        "transport": "host",
        "simulated_device": False,
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_total_kb": mem_kb,
        "python": platform.python_version(),
        "runtimes": versions,
    }


# --------------------------------------------------------------------------------------------------------------------
# --device host in the bench loop
# --------------------------------------------------------------------------------------------------------------------


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def host_snapshot() -> dict[str, Any]:
    """Thermal zones, current CPU frequencies and the load average of this machine (each best effort)."""
    temps: dict[str, float] = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        kind, temp = _read(zone / "type"), _read(zone / "temp")
        if kind and temp and temp.lstrip("-").isdigit():
            temps[f"{kind}#{zone.name[12:]}"] = int(temp) / 1000.0
    cur = {}
    for i in range(os.cpu_count() or 1):
        v = _read(f"/sys/devices/system/cpu/cpu{i}/cpufreq/scaling_cur_freq")
        if v and v.isdigit():
            cur[str(i)] = int(v)
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "thermal_status": None,
            "temps_c": temps, "cur_khz": cur, "load_avg": load}


class HostDevice(BenchDevice):
    """This machine: each component runs in this process (`bench_artifact`), optionally pinned with --cpu-mask."""

    transport = "host"

    def __init__(self, opts: BenchOptions, manifest: Any, say: Say, json_path: Path | None = None):
        self.opts, self.manifest, self.say = opts, manifest, say
        json_path = Path(json_path or "mi2v-bench/report.json")
        self.extras, self.json_dir = json_path.with_name(json_path.stem + ".files"), json_path.parent
        self.threads = opts.threads
        self.mask: str | None = None
        self.old_affinity: set[int] | None = None
        self.versions: dict[str, str] = {}
        self.simulated: list[str] = []  # QNN artifacts timed on the HTP simulator

    def facts(self) -> DeviceFacts:
        facts = host_facts()
        cores = range(os.cpu_count() or 1)
        governors = sorted({g for i in cores if (g := _read(f"/sys/devices/system/cpu/cpu{i}/cpufreq/scaling_governor"))})
        maxes = sorted({int(v) for i in cores
                        if (v := _read(f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq")) and v.isdigit()})
        facts.update(governors=governors, max_khz=maxes, abi=platform.machine())
        self.versions = dict(facts["runtimes"])  # type: ignore[arg-type]
        uncontrolled = ["CPU clocks are not locked (governor " + (", ".join(governors) or "not exposed")
                        + "); turbo and frequency scaling vary",
                        "other processes share this machine (see load_avg in the snapshots)"]
        uncontrolled += self._pin()
        if not host_snapshot()["temps_c"]:
            uncontrolled.append("thermal state: no readable thermal zones on this machine")
        return DeviceFacts(facts, {"os": f"{platform.system()} {platform.release()}",
                                   "python": platform.python_version()},
                           {"threads": self.threads, "affinity_mask": self.mask}, uncontrolled)

    def _pin(self) -> list[str]:
        """Pin this process to --cpu-mask (restored in finish); what could not be controlled otherwise."""
        if not self.opts.cpu_mask:
            return ["not pinned (no --cpu-mask): the OS scheduler places the threads"]
        cores = cpu_list(parse_mask(self.opts.cpu_mask))
        allowed = os.sched_getaffinity(0)
        if not set(cores) <= allowed:
            raise BadInputError(f"--cpu-mask {self.opts.cpu_mask} names cores {sorted(set(cores) - allowed)} this "
                                f"process may not use (allowed: {sorted(allowed)})")
        self.old_affinity = allowed
        os.sched_setaffinity(0, cores)
        self.mask = f"{parse_mask(self.opts.cpu_mask):x}"
        self.threads = self.threads or len(cores)
        return []

    def snapshot(self) -> dict[str, Any]:
        return host_snapshot()

    def cool_down(self, pause_s: float, label: str) -> dict[str, Any]:
        if pause_s > 0:
            self.say(f"cooling down {pause_s:g} s before the {label}")
        return super().cool_down(pause_s, label)

    def run(self, sel: Selection, comp: ComponentResult) -> ComponentResult:
        opts, iterations, warmup = self.opts, self.opts.iterations, self.opts.warmup
        comp.runtime.update(version=self.versions.get(sel.runtime),
                            runner="in-process", threads=self.threads, affinity_mask=self.mask)
        path = self.manifest.path_of(sel.entry)
        qnn_target = self._qnn_target(sel.entry, comp)
        for r in range(opts.runs):
            self.say(f"{sel.component}: {sel.entry.file} on {sel.runtime}, run {r + 1}/{opts.runs}: "
                     f"{warmup} warm-up + {iterations} timed iterations")
            run = bench_artifact(path, sel.runtime, warmup, iterations, self.threads, entry=sel.entry,
                                 **qnn_target)
            run.peak_rss_method = "in-process-vmhwm"
            comp.runs.append(run)
        comp.runtime["backend"] = comp.runs[-1].backend
        if opts.profile:
            self.say(f"{sel.component}: profiling {PROFILE_RUNS} runs with {sel.runtime}'s profiler")
            comp.profile = (host_profile(self.manifest.folder, sel.entry, sel.runtime, self.extras, self.json_dir,
                                         self.threads) if not qnn_target else
                            {"reason": "the QNN HTP simulator's timings say nothing of a phone: profile on one"})
        comp.status, comp.error = "ok", None
        return comp

    def _qnn_target(self, entry, comp: ComponentResult) -> dict:
        """A QNN EPContext model runs on the wheel's HTP simulator: its timings are simulated, not a speed figure."""
        if QNN_RUNTIME not in {r.name for r in runtimes.for_entry(entry)}:
            return {}
        comp.runtime.update(version=qnn.versions()["onnxruntime_qnn"], simulated=True,
                            qnn_sdk_version=qnn.versions()["qnn_sdk_version"], soc=entry.target_info.get("soc"),
                            note="QNN HTP simulator on this CPU: simulated timings, not a speed figure")
        self.simulated.append(entry.file)
        return {"qnn_soc": entry.target_info.get("soc"), "qnn_fp16": entry.precision == "fp16"}

    def outputs(self, sel: Selection, sets: list[Any]) -> tuple[list[dict[str, Any]], str] | str:
        """The test-vector inputs run in this process on the runtime that was timed."""
        return host_outputs(self.manifest.path_of(sel.entry), sel.entry, sel.runtime, sets)

    def pipeline_stage(self, sel: Selection) -> Any:
        """In this process, as `mi2v generate` runs it (loaded before its turn, released after it); with
        `--stage-processes` a fresh process per call (devices/stage_child.py), whose own load and run times are
        the device's and the rest (process start, tensors through files) the transfers."""
        if not self.opts.stage_processes:
            return artifact_stage(sel.component, self.manifest.path_of(sel.entry), sel.entry, self.threads)
        work = self.extras / "stages"
        work.mkdir(parents=True, exist_ok=True)
        calls = itertools.count()

        def call(feeds: dict[str, Any]) -> tuple[dict[str, Any], dict]:
            n = next(calls)
            inputs, outputs = work / f"{sel.component}.{n}.in.npz", work / f"{sel.component}.{n}.out.npz"
            np.savez(inputs, **feeds)
            cmd = [sys.executable, "-m", "mi2v_export.devices.stage_child", str(self.manifest.folder), sel.component,
                   sel.entry.file, str(inputs), str(outputs), *([str(self.threads)] if self.threads else [])]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.opts.timeout)
            except subprocess.TimeoutExpired:
                raise DeviceError(f"the {sel.component}'s stage process did not finish within {self.opts.timeout:g} s "
                                  "(--timeout)") from None
            finally:
                inputs.unlink(missing_ok=True)
            if proc.returncode != 0:
                raise DeviceError(f"the {sel.component}'s stage process failed ({proc.returncode}): "
                                  f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
            told = json.loads(proc.stdout.strip().splitlines()[-1])
            with np.load(outputs) as data:
                result = {name: data[name] for name in data.files}
            outputs.unlink(missing_ok=True)
            return result, told
        return RemoteStage(sel, call, f"stage process/{sel.runtime}")

    def finish(self, report: BenchReport) -> None:
        if self.simulated:
            report.warnings.append(f"{', '.join(self.simulated)}: timed on the QNN HTP simulator (x86_64), simulated "
                                   "timings that say nothing about a phone's speed")
        if self.opts.runners:
            report.warnings.append("--runner is for phones: on the host the artifacts run in this process")
        if self.opts.etdump:
            report.warnings.append("--etdump is for phone runners: not collected on the host")
        if self.old_affinity is not None:
            os.sched_setaffinity(0, self.old_affinity)
            self.old_affinity = None


# --------------------------------------------------------------------------------------------------------------------
# the host device kind
# --------------------------------------------------------------------------------------------------------------------


def _host_refuses(entry: Any, runtime: str) -> str | None:
    """An artifact that no runtime of this machine executes (mi2v_export.runtimes `why_not`: a delegate this
    executorch build lacks, a QNN program). A runtime that is not installed at all is no refusal: the run then says
    what to install (MissingDependencyError, its own exit code)."""
    why = runtimes.why_not(entry)
    if why is None or not all(r.version() for r in runtimes.for_entry(entry)):
        return None
    return (f"{entry.file} is delegated to {entry.delegate}, which this machine cannot execute ({why}; "
            "benchmark it on a phone with --device adb:SERIAL)")


def _describe_host(device: dict[str, Any], protocol: dict[str, Any]) -> str:
    return f"this machine: {device.get('cpu', '?')}, {device.get('cores', '?')} cores"


def _open_host(opts: BenchOptions, manifest: Any, serial: str | None, json_path: Path, say: Say,
               system: str | None) -> list[BenchDevice]:
    return [HostDevice(opts, manifest, say, json_path)]


register(DeviceKind("host", open=_open_host, serial="none", spellings=("host",), refuses=_host_refuses,
                    describe=_describe_host))
