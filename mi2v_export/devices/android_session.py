"""One Android phone over adb during a bench run: its facts, thermal gate, CPU pinning, runner staging and runs.

Command sequence, every call through `AdbDevice` (argv lists, `-s SERIAL`, timeouts, quoted remote arguments,
exit-code marker on phones without shell_v2):

1. facts: `getprop`, the cpufreq loop, `/proc/meminfo`, `dumpsys thermalservice`, `dumpsys battery`, probes for
   `toybox time` and `taskset`;
2. the runner: `--runner`, else one in the artifacts folder, else one the device has on its PATH. A local one is
   checked on this machine (devices/runner_checks.py), then pushed into `/data/local/tmp/mi2v/<hash of the runner
   files>/` (files already there with the same sha256 are not pushed again, models included), `chmod 755`; then
   `test -x` and a `--help` probe that tells a runner that cannot start (missing library, wrong interpreter,
   crash) from one that can, and which flags it has (`print_output` and per-iteration lines: ExecuTorch ≥ 1.3);
3. per component: cool-down and thermal gate, one runner process per run with warm-up inside it
   (`--num_executions=W+N` / `-r W+N`, the first W samples dropped), pinned with `taskset MASK` and measured with
   `toybox time -v` (peak RSS; without toybox, VmHWM is polled), the runner's own exit status kept by a marker;
   the ORT result CSV and any ETDump are pulled.

Every device is driven the same way; whether it is simulated is read from its properties in one place
(`device_facts`), for the report only.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DeviceError
from ..files import sha256_file
from .adb import Adb, AdbDevice, parse_getprop, quote
from .base import Say, quiet
from .cpus import CPU_LOOP, big_core_mask, cpu_list, format_list, parse_cpu_loop, parse_list, parse_mask
from .report import RunResult
from .runner_checks import (
    COMPANION_LIBS,
    README_RUNNERS,
    Runner,
    RunnerFailure,
    check_runner,
    diagnose_start,
    local_runner,
    runner_failure,
)
from .benchmark_model import parse_benchmark_model, runner_args
from .runners import (
    EXECUTOR_RUNNER,
    parse_battery,
    parse_executor_runner,
    parse_meminfo,
    parse_ort_perf_test,
    parse_thermalservice,
)

REMOTE_ROOT = "/data/local/tmp/mi2v"
RUNNER_RC = "__MI2V_RUNNER_RC="
VMHWM = "__MI2V_VMHWM="
T0 = "__MI2V_T0="
HOT_BATTERY_C = 40.0  # the thermal gate waits while the battery is at least this warm
SIMULATED_PROP = "ro.mi2v.simulated"  # a device that answers 1 is a simulated phone (`mi2v devices simulate`)


def device_facts(props: dict[str, str], serial: str) -> dict[str, Any]:
    """The report's device identity from `getprop`. The one place that reads whether the device says it is
    simulated (`ro.mi2v.simulated=1`); nothing else treats a simulated phone differently."""
    p = props
    sdk = p.get("ro.build.version.sdk", "")
    text = p.get("ro.product.cpu.abilist") or p.get("ro.product.cpu.abi", "")
    abilist = [a for a in text.split(",") if a]
    simulated = p.get(SIMULATED_PROP, "") == "1"
    return {
        "transport": "adb", "serial": serial, "simulated_device": simulated,
        "manufacturer": p.get("ro.product.manufacturer"), "brand": p.get("ro.product.brand"),
        "model": p.get("ro.product.model"), "device": p.get("ro.product.device"),
        "soc_manufacturer": p.get("ro.soc.manufacturer"),
        "soc_model": p.get("ro.soc.model") or p.get("ro.board.platform") or p.get("ro.hardware"),
        "board_platform": p.get("ro.board.platform"), "hardware": p.get("ro.hardware"), "os": "android",
        "os_version": p.get("ro.build.version.release"), "sdk_int": int(sdk) if sdk.isdigit() else None,
        "build_fingerprint": p.get("ro.build.fingerprint"), "build_type": p.get("ro.build.type"),
        "abi": p.get("ro.product.cpu.abi") or (abilist[0] if abilist else None), "abilist": abilist,
        "simulator": ({"version": p.get("ro.mi2v.simulator.version"), "host": p.get("ro.mi2v.simulator.host")}
                      if simulated else None),
    }


@dataclass
class StagedFile:
    local: Path
    remote_name: str
    sha256: str


class AndroidSession:
    """One device, its facts, and the runs on it."""

    def __init__(self, adb: Adb, dev: AdbDevice, say: Say = quiet):
        self.adb = adb
        self.dev = dev
        self.say = say
        self.props: dict[str, str] = {}
        self.cpus: list[dict[str, Any]] = []
        self.has_toybox_time = False
        self.has_taskset = False
        self.remote_dir = ""
        self.pushed: list[str] = []
        self.already_there: list[str] = []
        self.uncontrolled: list[str] = []
        self.warnings: list[str] = []
        self.mask: int | None = None
        self.mask_rule = ""
        self.granted: str | None = None
        self.threads: int | None = None

    # ---- facts -----------------------------------------------------------------------------------------------
    @property
    def abilist(self) -> list[str]:
        text = self.props.get("ro.product.cpu.abilist") or self.props.get("ro.product.cpu.abi", "")
        return [a for a in text.split(",") if a]

    def fingerprint(self) -> dict[str, Any]:
        """Identity, CPUs, memory, and the first thermal/battery snapshot; probes toybox time and taskset."""
        d = self.dev
        self.props = parse_getprop(d.check_output(["getprop"]))
        self.cpus = parse_cpu_loop(d.shell(CPU_LOOP).out)
        mem = parse_meminfo(d.shell(["cat", "/proc/meminfo"]).out)
        rc, _, err = d.shell("toybox time -v true")
        self.has_toybox_time = rc == 0 and "Max RSS" in err
        self.has_taskset = d.shell("taskset -p $$ >/dev/null 2>&1").rc == 0
        return {
            **device_facts(self.props, d.serial),
            "mem_total_kb": mem.get("MemTotal"),
            "mem_available_kb": mem.get("MemAvailable"),
            "cpus": self.cpus,
            "max_khz": sorted({c["max_khz"] for c in self.cpus if c.get("max_khz")}),
            "governors": sorted({c["governor"] for c in self.cpus if c.get("governor")}),
            "shell_v2": d.shell_v2,
            "toybox_time": self.has_toybox_time,
        }

    def snapshot(self) -> dict[str, Any]:
        """Thermal status and temperatures, battery, current CPU frequencies (each best effort)."""
        d = self.dev
        out: dict[str, Any] = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        rc, text, _ = d.shell(["dumpsys", "thermalservice"])
        if rc == 0 and "Thermal Status" in text:
            th = parse_thermalservice(text)
            out["thermal_status"], out["temps_c"] = th.status, th.temps_c
        else:
            out["thermal_status"], out["temps_c"] = None, {}
        rc, text, _ = d.shell(["dumpsys", "battery"])
        out["battery"] = parse_battery(text) if rc == 0 and "level" in text else {}
        cpus = parse_cpu_loop(d.shell(CPU_LOOP).out)
        out["cur_khz"] = {str(c["id"]): c["cur_khz"] for c in cpus if c.get("cur_khz")}
        return out

    @staticmethod
    def is_hot(snap: dict[str, Any]) -> bool:
        status = snap.get("thermal_status")
        temp = (snap.get("battery") or {}).get("temp_c")
        return bool(status) or (temp is not None and temp >= HOT_BATTERY_C)

    def cool_down(self, pause_s: float, max_wait_s: float, label: str) -> dict[str, Any]:
        """Pause, then wait (polling every 5 s, at most max_wait_s) until thermal status 0 and a cool battery."""
        if pause_s > 0:
            self.say(f"cooling down {pause_s:g} s before the {label}")
            time.sleep(pause_s)
        snap = self.snapshot()
        deadline = time.monotonic() + max_wait_s
        while self.is_hot(snap) and time.monotonic() < deadline:
            self.say(f"device is warm (thermal status {snap.get('thermal_status')}, battery "
                     f"{(snap.get('battery') or {}).get('temp_c')} °C): waiting before the {label}")
            time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
            snap = self.snapshot()
        if self.is_hot(snap):
            self.uncontrolled.append(f"the {label} started warm: thermal status {snap.get('thermal_status')}, "
                                     f"battery {(snap.get('battery') or {}).get('temp_c')} °C after waiting "
                                     f"{max_wait_s:g} s")
        return snap

    # ---- pinning ---------------------------------------------------------------------------------------------
    def plan_pinning(self, cpu_mask: str | None) -> None:
        if cpu_mask:
            self.mask, self.mask_rule = parse_mask(cpu_mask), "--cpu-mask"
        else:
            self.mask, self.mask_rule = big_core_mask(self.cpus)
        if self.mask is None:
            self.uncontrolled.append(f"CPU affinity: {self.mask_rule}")
            return
        if not self.has_taskset:
            self.uncontrolled.append("CPU affinity: the device has no taskset, runs are not pinned")
            self.mask = None
            return
        hexmask = f"{self.mask:x}"
        rc, out, err = self.dev.shell(f"taskset {hexmask} grep Cpus_allowed_list /proc/self/status")
        m = re.search(r"Cpus_allowed_list:\s*(\S+)", out)
        if rc != 0 or not m:
            why = ((err or out).strip().splitlines()[-1:] or ["no output"])[0]
            if self.mask_rule == "--cpu-mask":
                cores = format_list([c["id"] for c in self.cpus]) or "unknown"
                raise DeviceError(f"the device refused --cpu-mask {hexmask} ({why}): choose cores among {cores} "
                                  "(hex mask, e.g. f0 for cores 4-7)")
            self.uncontrolled.append(f"CPU affinity: taskset {hexmask} was refused ({why}), runs are not pinned")
            self.mask = None
            return
        self.granted = m.group(1)
        wanted = format_list(cpu_list(self.mask))
        if parse_list(self.granted) != cpu_list(self.mask):
            self.uncontrolled.append(f"CPU affinity: asked for cores {wanted}, the shell's cpuset granted "
                                     f"{self.granted}")
        self.threads = len(parse_list(self.granted))

    # ---- runners ---------------------------------------------------------------------------------------------
    def find_runner(self, name: str, given: Sequence[Path], artifacts_dir: Path) -> Runner:
        """--runner, else DIR/runners/<abi>/NAME or DIR/NAME (checked here, pushed later), else the runner the
        device already has on its PATH (used where it is)."""
        found = local_runner(name, given, artifacts_dir, self.abilist)
        if found is not None:
            path, source = found
            info = check_runner(path, name, self.abilist, self.dev.exists)
            libs = sorted({q for pattern in COMPANION_LIBS.get(name, ()) for q in path.parent.glob(pattern)
                           if q.is_file() and q != path})
            return Runner(name, path, sha256_file(path), info, source, libs)
        rc, out, _ = self.dev.shell(f"command -v {name}")
        installed = out.strip().splitlines()[-1] if rc == 0 and out.strip() else ""
        if installed.startswith("/"):
            sha = self.dev.sha256_many([installed]).get(installed, "")
            return Runner(name, None, sha, None, "device PATH", installed=installed)
        abi = self.abilist[0] if self.abilist else "the device ABI"
        raise DeviceError(f"no {name} for {abi}: build it ({README_RUNNERS}) and pass --runner PATH, or put it in "
                          f"{artifacts_dir}/runners/{abi}/")

    # ---- staging ---------------------------------------------------------------------------------------------
    def set_remote_dir(self, runners: Sequence[StagedFile]) -> str:
        """`/data/local/tmp/mi2v/<hash of the runner files>`: one folder per runner build, so a re-run (or a run of
        a subset of the components) finds its runner and models there and pushes only files whose sha256 differs;
        models of another export with the same names replace the old ones instead of piling up."""
        h = hashlib.sha256()
        for f in sorted(runners, key=lambda f: f.remote_name):
            h.update(f"{f.remote_name}\0{f.sha256}\n".encode())
        self.remote_dir = f"{REMOTE_ROOT}/{h.hexdigest()[:16]}"
        self.dev.mkdirs(self.remote_dir)
        return self.remote_dir

    def stage(self, files: Sequence[StagedFile]) -> None:
        """Push what is not already on the device with the same sha256."""
        remote = {f"{self.remote_dir}/{f.remote_name}": f for f in files}
        present = self.dev.sha256_many(list(remote))
        for rpath, f in remote.items():
            if present.get(rpath) == f.sha256:
                self.already_there.append(f.remote_name)
                continue
            self.say(f"pushing {f.local.name} ({f.local.stat().st_size / 1e6:.1f} MB) to {rpath}")
            self.dev.push(f.local, rpath)
            self.pushed.append(f.remote_name)

    def prepare_runner(self, runner: Runner) -> None:
        """Push a local runner (and its libraries) and make it executable; probe that the runner starts."""
        rpath = self.runner_path(runner)
        if runner.local is not None:
            self.stage([StagedFile(runner.local, runner.name, runner.sha256),
                        *[StagedFile(lib, lib.name, sha256_file(lib)) for lib in runner.libs]])
            self.dev.shell(["chmod", "755", rpath], check=True)
        if self.dev.shell(["test", "-x", rpath]).rc != 0:
            raise DeviceError(f"{runner.name} is not executable on the device after chmod 755 ({rpath}): "
                              "/data/local/tmp should allow it; check the device's storage mounts")
        help_flag = "--help" if runner.name == EXECUTOR_RUNNER else "-h"
        cmd = f"cd {shlex.quote(self.remote_dir)} && LD_LIBRARY_PATH=. {shlex.quote(rpath)} {help_flag}"
        rc, out, err = self.dev.shell(cmd, timeout=60)
        problem = diagnose_start(rc, out + err, runner.name)
        if problem:
            raise DeviceError(problem + f" (probe: `{runner.name} {help_flag}`)")
        if runner.name == EXECUTOR_RUNNER:
            runner.flags = set(re.findall(r"-{1,2}(\w+) \(", out + err))
            if not runner.flags:
                runner.flags = {"model_path", "num_executions"}
                self.warnings.append(f"{runner.name} --help listed no flags; assuming --model_path and "
                                     "--num_executions only")
            runner.per_iteration = "print_output" in runner.flags or "method_name" in runner.flags
            if not runner.per_iteration:
                self.warnings.append(f"{runner.name} predates ExecuTorch 1.3 (no --print_output): it prints only a "
                                     "total, so the report has the mean per component, no distribution")

    def runner_path(self, runner: Runner) -> str:
        """Where the runner is on the device: in the staging folder, or where the device had it."""
        return runner.installed or f"{self.remote_dir}/{runner.name}"

    # ---- runs ------------------------------------------------------------------------------------------------
    def _wrap(self, runner: Runner, args: list[str]) -> str:
        d = shlex.quote(self.remote_dir)
        pin = f"taskset {self.mask:x} " if self.mask is not None else ""
        inner = f"{pin}{shlex.quote(self.runner_path(runner))} {quote(args)}"
        if self.has_toybox_time:
            body = f"toybox time -v sh -c {shlex.quote(f'{inner}; echo {RUNNER_RC}$? >&2')}"
        else:
            body = (f"{inner} & p=$!; h=0; while kill -0 $p 2>/dev/null; do "
                    f"v=$(sed -n 's/^VmHWM:[^0-9]*\\([0-9]*\\).*/\\1/p' /proc/$p/status 2>/dev/null); "
                    f"[ -n \"$v\" ] && h=$v; sleep 0.2; done; wait $p; echo {RUNNER_RC}$? >&2; echo {VMHWM}$h >&2")
        return (f"cd {d} && export LD_LIBRARY_PATH={d} ADSP_LIBRARY_PATH={d}; echo {T0}$(date +%s); {body}")

    def run_runner(self, runner: Runner, args: list[str], timeout: float) -> tuple[int, str, str, float, int | None]:
        """(runner exit status, stdout, stderr, wall s, VmHWM KiB when polled), markers removed."""
        t0 = time.monotonic()
        rc, out, err = self.dev.shell(self._wrap(runner, args), timeout=timeout)
        wall = time.monotonic() - t0
        both = out + "\n" + err  # phones without shell_v2 merge stderr into stdout
        m = re.search(re.escape(RUNNER_RC) + r"(\d+)", both)
        runner_rc = int(m.group(1)) if m else rc
        hwm = re.search(re.escape(VMHWM) + r"(\d+)", both)
        strip = re.compile(rf"^({re.escape(RUNNER_RC)}|{re.escape(VMHWM)}|{re.escape(T0)}).*\n?", re.M)
        self._last_t0 = (re.search(re.escape(T0) + r"(\d+)", out) or [None, None])[1]
        return runner_rc, strip.sub("", out), strip.sub("", err), wall, (int(hwm.group(1)) or None) if hwm else None

    def logcat_fallback(self) -> str:
        """ExecuTorch lines from logcat (android PAL builds log there instead of stderr), for this run's window."""
        since = getattr(self, "_last_t0", None)
        args = ["logcat", "-d", "-v", "raw", *(["-T", f"{since}.000"] if since else []), "-s", "ExecuTorch:I"]
        rc, out, _ = self.dev.shell(args, timeout=60)
        return out if rc == 0 else ""

    def run_executorch(self, runner: Runner, model: str, data: str | None, warmup: int, iterations: int,
                       timeout: float, etdump: str | None = None) -> tuple[RunResult, str]:
        d = self.remote_dir
        args = [f"--model_path={d}/{model}", f"--num_executions={warmup + iterations}"]
        if data and "data_path" in runner.flags:
            args.append(f"--data_path={d}/{data}")
        if "print_output" in runner.flags:
            args.append("--print_output=none")
        if self.threads and "cpu_threads" in runner.flags:
            args.append(f"--cpu_threads={self.threads}")
        if etdump and "etdump_path" in runner.flags:
            args.append(f"--etdump_path={d}/{etdump}")
        rc, out, err, wall, hwm = self.run_runner(runner, args, timeout)
        text = out + err
        parsed = parse_executor_runner(text)
        if rc == 0 and not parsed.samples_ms and parsed.mean_ms is None:
            extra = self.logcat_fallback()
            if extra:
                parsed = parse_executor_runner(extra + "\n" + text)
                text += "\n--- logcat ---\n" + extra
        run = RunResult(load_ms=parsed.load_ms, exit_code=rc, backend=None, threads=self.threads, wall_s=wall)
        run.peak_rss_kb = parsed.peak_rss_kb or hwm
        run.peak_rss_method = "toybox-time" if parsed.peak_rss_kb else ("vmhwm-poll" if hwm else None)
        if rc != 0:
            raise RunnerFailure(runner_failure(runner.name, rc, text, parsed.missing_backends, parsed.errors), text)
        if parsed.samples_ms:
            if len(parsed.samples_ms) < warmup + iterations:
                self.warnings.append(f"{runner.name} printed {len(parsed.samples_ms)} iteration lines, expected "
                                     f"{warmup + iterations}")
            run.warmup_ms = parsed.samples_ms[:warmup]
            run.samples_ms = parsed.samples_ms[warmup:]
        elif parsed.mean_ms is not None:
            run.mean_only_ms = parsed.mean_ms
        else:
            raise RunnerFailure(f"{runner.name} exited 0 but printed no timings (no 'Iteration i of n' or "
                                "'Model executed successfully' line on stdout, stderr or logcat): build it with "
                                "-DEXECUTORCH_ENABLE_LOGGING=ON", text)
        return run, text

    def run_ort(self, runner: Runner, model: str, warmup: int, iterations: int, timeout: float,
                csv_name: str, local_csv: Path, qnn: dict[str, str] | None = None) -> tuple[RunResult, str]:
        """onnxruntime_perf_test on the CPU EP, or (`qnn`: the QNN EP options of a QNN EPContext model) on the HTP
        through the QNN EP (the QNN runtime libraries pushed beside the runner)."""
        d = self.remote_dir
        self.dev.shell(["rm", "-f", f"{d}/{csv_name}"])
        ep = ["-e", "qnn", "-i", " ".join(f"{k}|{v}" for k, v in qnn.items())] if qnn else ["-e", "cpu"]
        args = ep + ["-m", "times", "-r", str(warmup + iterations), "-I", "-s"]
        if self.threads:
            args += ["-x", str(self.threads)]
        args += [model, f"{d}/{csv_name}"]
        rc, out, err, wall, hwm = self.run_runner(runner, args, timeout)
        text = out + err
        if rc != 0:
            parsed = parse_ort_perf_test(text)
            raise RunnerFailure(runner_failure(runner.name, rc, text, [], parsed.errors), text)
        csv_text = None
        if self.dev.exists(f"{d}/{csv_name}"):
            csv_text = self.dev.pull(f"{d}/{csv_name}", local_csv).read_text()
            self.dev.shell(["rm", "-f", f"{d}/{csv_name}"])
        parsed = parse_ort_perf_test(text, csv_text)
        run = RunResult(load_ms=parsed.load_ms, exit_code=rc, threads=self.threads, wall_s=wall,
                        first_iteration_ms=parsed.first_iteration_ms)
        if parsed.samples_ms:
            run.warmup_ms = parsed.samples_ms[:warmup]
            run.samples_ms = parsed.samples_ms[warmup:]
        elif parsed.mean_ms is not None:
            run.mean_only_ms = parsed.mean_ms
            self.warnings.append(f"{runner.name} wrote no result CSV: only its mean is reported")
        else:
            raise RunnerFailure(f"{runner.name} exited 0 but printed no timings: check that it is "
                                "onnxruntime_perf_test", text)
        _set_peak(run, text, parsed.peak_rss_kb, hwm)
        return run, text

    def run_litert(self, runner: Runner, model: str, warmup: int, iterations: int,
                   timeout: float) -> tuple[RunResult, str]:
        """LiteRT's benchmark_model on the CPU (XNNPACK): exactly warmup + iterations runs. It prints no per-run
        times, only its statistics: the run reports their mean (`mean_only_ms`) and the tool's own statistics
        (`runner_stats`, whose p50 is the component's median)."""
        args = runner_args(f"{self.remote_dir}/{model}", warmup, iterations, self.threads)
        rc, out, err, wall, hwm = self.run_runner(runner, args, timeout)
        text = out + err
        parsed = parse_benchmark_model(text)
        if rc != 0:
            raise RunnerFailure(runner_failure(runner.name, rc, text, [], parsed.errors), text)
        if parsed.mean_ms is None:
            raise RunnerFailure(f"{runner.name} exited 0 but printed no 'Inference timings in us' line: check that "
                                "it is LiteRT's benchmark_model", text)
        run = RunResult(load_ms=parsed.load_ms, exit_code=rc, threads=self.threads, wall_s=wall,
                        first_iteration_ms=parsed.first_iteration_ms, mean_only_ms=parsed.mean_ms,
                        runner_stats={k: v for k, v in parsed.summary.items() if v is not None} or None)
        _set_peak(run, text, parsed.peak_rss_kb, hwm)
        return run, text

    def pull_if_exists(self, remote_name: str, local: Path) -> Path | None:
        rpath = f"{self.remote_dir}/{remote_name}"
        if not self.dev.exists(rpath):
            return None
        local.parent.mkdir(parents=True, exist_ok=True)
        self.dev.pull(rpath, local)
        self.dev.shell(["rm", "-f", rpath])
        return local


def _set_peak(run: RunResult, text: str, runner_kb: int | None, hwm: int | None) -> None:
    """A runner process's peak, best source first: toybox time's Max RSS, the runner's own figure, the polled
    VmHWM."""
    toybox_rss = re.search(r"Max RSS \(KiB\): (\d+)", text)
    if toybox_rss:
        run.peak_rss_kb, run.peak_rss_method = int(toybox_rss.group(1)), "toybox-time"
    elif runner_kb:
        run.peak_rss_kb, run.peak_rss_method = runner_kb, "runner"
    elif hwm:
        run.peak_rss_kb, run.peak_rss_method = hwm, "vmhwm-poll"
