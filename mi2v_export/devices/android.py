"""The adb driver of `mi2v bench`: device facts, runner checks, staging, pinned runs of the phone runners.

Command sequence (shared/spec/device-bench.md §8.1), every call through `AdbDevice` (argv lists, `-s SERIAL`,
timeouts, quoted remote arguments, exit-code marker on phones without shell_v2):

1. facts: `getprop`, the cpufreq loop, `/proc/meminfo`, `dumpsys thermalservice`, `dumpsys battery`, probes for
   `toybox time` and `taskset`;
2. runner checks on this machine (exists, ELF class/machine against the device ABI list, Android linker, not a
   shared library; a `#!` script only on a simulated phone), then push into `/data/local/tmp/mi2v/<hash of the
   runner files>/` (files already there with the same sha256 are not pushed again, models included), `chmod 755`, `test -x`, and a `--help` probe
   that tells a runner that cannot start (missing library, wrong interpreter, crash) from one that can, and which
   flags it has (`print_output` and per-iteration lines: ExecuTorch ≥ 1.3);
3. per component: cool-down and thermal gate, one runner process per run with warm-up inside it
   (`--num_executions=W+N` / `-r W+N`, the first W samples dropped), pinned with `taskset MASK` and measured with
   `toybox time -v` (peak RSS; without toybox, VmHWM is polled), the runner's own exit status kept by a marker;
   the ORT result CSV and any ETDump are pulled.

Against a simulated phone (ro.mi2v.simulated=1, host ABI) no runner is needed: the project's host runners, which
execute the model on this machine and print the real runners' formats, are pushed instead.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DeviceError
from ..files import sha256_file
from .adb import Adb, AdbDevice, AdbTimeout, parse_getprop, quote
from .elf import RunnerFile, inspect_runner, is_shared_library, runs_on
from .report import RunResult
from .runners import (
    EXECUTOR_RUNNER,
    ORT_PERF_TEST,
    is_host_runner,
    parse_battery,
    parse_executor_runner,
    parse_meminfo,
    parse_ort_perf_test,
    parse_thermalservice,
    write_host_runner,
)
from .simulate import host_abi, is_simulated_props

REMOTE_ROOT = "/data/local/tmp/mi2v"
RUNNER_RC = "__MI2V_RUNNER_RC="
VMHWM = "__MI2V_VMHWM="
T0 = "__MI2V_T0="
HOT_BATTERY_C = 40.0  # the thermal gate waits while the battery is at least this warm

RUNNER_FOR_RUNTIME = {"executorch": EXECUTOR_RUNNER, "onnxruntime": ORT_PERF_TEST}
# libraries a runner needs beside it (found next to the runner file on this machine and pushed with it)
COMPANION_LIBS = {
    ORT_PERF_TEST: ("libonnxruntime*.so*", "libQnn*.so", "libqnn*.so"),
    EXECUTOR_RUNNER: ("libQnn*.so", "libqnn_executorch_backend.so", "libvulkan_*.so"),
}
README_RUNNERS = "see the README section 'Android runners'"

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# --------------------------------------------------------------------------------------------------------------------
# device facts
# --------------------------------------------------------------------------------------------------------------------

_CPU_LOOP = ('for c in /sys/devices/system/cpu/cpu[0-9]*; do f=$c/cpufreq; echo "${c##*/} '
             '$(cat $f/cpuinfo_max_freq 2>/dev/null || echo -) $(cat $f/scaling_governor 2>/dev/null || echo -) '
             '$(cat $f/scaling_cur_freq 2>/dev/null || echo -)"; done')


def parse_cpu_loop(text: str) -> list[dict[str, Any]]:
    cpus = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 4 or not re.fullmatch(r"cpu\d+", parts[0]):
            continue
        cpus.append({
            "id": int(parts[0][3:]),
            "max_khz": int(parts[1]) if parts[1].isdigit() else None,
            "governor": parts[2] if parts[2] != "-" else None,
            "cur_khz": int(parts[3]) if parts[3].isdigit() else None,
        })
    return sorted(cpus, key=lambda c: c["id"])


def big_core_mask(cpus: Sequence[dict[str, Any]]) -> tuple[int | None, str]:
    """The cores worth pinning to, from their max frequencies, and the rule used.

    One frequency cluster: no pinning (every core is alike). Two: the faster one. Three or more (little / big /
    prime): every core but the slowest cluster, so a single prime core does not become the whole budget."""
    freqs = {c["id"]: c["max_khz"] for c in cpus if c.get("max_khz")}
    if not freqs:
        return None, "cpuinfo_max_freq unreadable: not pinned"
    clusters = sorted(set(freqs.values()))
    if len(clusters) == 1:
        return None, "all cores have the same max frequency: not pinned"
    floor = clusters[0]
    keep = [i for i, f in freqs.items() if f > floor]
    mask = 0
    for i in keep:
        mask |= 1 << i
    rule = "fastest cluster" if len(clusters) == 2 else "all but the slowest cluster"
    return mask, f"{rule} by cpuinfo_max_freq ({len(keep)} of {len(freqs)} cores)"


def parse_mask(text: str) -> int:
    """A taskset-style hex mask ("f0", "0xF0")."""
    t = text.strip().lower()
    t = t[2:] if t.startswith("0x") else t
    if not re.fullmatch(r"[0-9a-f]{1,32}", t) or int(t, 16) == 0:
        raise ValueError(f"--cpu-mask {text!r} is not a non-zero hex mask such as f0")
    return int(t, 16)


def cpu_list(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def format_list(ids: Sequence[int]) -> str:
    """[0,1,2,5] → "0-2,5" (the /proc Cpus_allowed_list form)."""
    out, ids = [], sorted(ids)
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(out)


def parse_list(text: str) -> list[int]:
    ids: list[int] = []
    for part in text.strip().split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            ids += range(int(a), int(b) + 1)
        elif part.strip():
            ids.append(int(part))
    return ids


# --------------------------------------------------------------------------------------------------------------------
# runners
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Runner:
    """A runner file on this machine, checked against the device, and where it lives on the device."""

    name: str  # executor_runner | onnxruntime_perf_test (its name on the device)
    local: Path
    sha256: str
    info: RunnerFile
    source: str  # --runner | artifacts folder | host runner (simulated phone)
    libs: list[Path] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)  # executor_runner flags seen in --help
    per_iteration: bool = True

    def describe(self) -> dict[str, Any]:
        return {"runner": self.name, "runner_path": str(self.local), "runner_sha256": self.sha256,
                "runner_source": self.source, "runner_file": self.info.describe(),
                "runner_libs": [p.name for p in self.libs]}


def check_runner(path: Path, name: str, abilist: list[str], simulated: bool) -> RunnerFile:
    """Refuse a runner that cannot run on the device, with the cause and the fix in one line.

    `simulated`: the device is a simulated phone with this machine's ABI, which runs on this machine — there a
    `#!` script (the project's host runner) and a host-linked binary are fine."""
    if not path.exists():
        raise DeviceError(f"runner {path} does not exist: build {name} for the phone ({README_RUNNERS}) and pass "
                          "--runner PATH")
    if not path.is_file():
        raise DeviceError(f"runner {path} is not a file: pass the {name} binary itself with --runner")
    try:
        info = inspect_runner(path)
    except OSError as exc:
        raise DeviceError(f"cannot read runner {path} ({exc.strerror}): check its permissions") from None
    abis = ", ".join(abilist) or "unknown"
    if info.kind == "script":
        if simulated:
            return info
        raise DeviceError(f"runner {path} is a script, not a native binary: a phone needs {name} cross-compiled "
                          f"for {abilist[0] if abilist else 'its ABI'} ({README_RUNNERS})")
    if info.kind != "elf":
        raise DeviceError(f"runner {path} is not executable (neither an ELF binary nor a #! script): pass the "
                          f"{name} binary from the build folder with --runner")
    if info.elf_type in ("relocatable", "core", "none") or is_shared_library(path, info):
        what = "a shared library" if info.elf_type == "shared" else f"an ELF {info.elf_type} file"
        raise DeviceError(f"runner {path} is {what}, not an executable: pass the {name} program with --runner "
                          "(its .so libraries are pushed from the same folder)")
    if not runs_on(info, abilist):
        raise DeviceError(f"runner {path} has the wrong architecture: it is {info.elf_class}-bit {info.machine}"
                          f"{f' ({info.abi})' if info.abi else ''} but the device runs {abis}; rebuild it for "
                          f"{abilist[0] if abilist else 'the device ABI'} ({README_RUNNERS})")
    if not simulated and not info.android_linked:
        raise DeviceError(f"runner {path} is linked for desktop Linux (interpreter {info.interpreter}), not Android: "
                          f"build it with the Android NDK toolchain ({README_RUNNERS})")
    return info


def diagnose_start(rc: int, text: str, runner: str) -> str | None:
    """Why a runner process could not start or died, from the shell's exit status and output; None if it ran."""
    m = re.search(r'CANNOT LINK EXECUTABLE[^\n]*library "([^"]+)" not found', text)
    if m:
        return (f"{runner} cannot start: library {m.group(1)} is missing on the device; put it next to the runner "
                "on this machine (it is pushed with it) or link the runner statically")
    if "CANNOT LINK EXECUTABLE" in text:
        line = next(ln for ln in text.splitlines() if "CANNOT LINK EXECUTABLE" in ln)
        return f"{runner} cannot start: {line.strip()}; rebuild it against this Android version"
    if rc == 126 and ("not executable" in text or "Exec format error" in text):
        return (f"{runner} cannot run on this device (exec format error: wrong architecture); rebuild it for the "
                f"device ABI ({README_RUNNERS})")
    if rc == 126:
        return (f"{runner} is not executable on the device (permission denied after chmod 755): /data/local/tmp "
                "may be mounted noexec on this phone, or the file is not a program")
    if rc == 127:
        return (f"{runner} cannot start on the device (exit 127, 'not found'): its ELF interpreter or a library is "
                f"missing — was it built with the Android NDK? ({README_RUNNERS})")
    if 128 < rc < 128 + 65:  # the shell's 128 + signal number (255 is exit(-1), not a signal)
        return f"{runner} crashed with {signal_name(rc - 128)} (exit {rc})"
    return None


# --------------------------------------------------------------------------------------------------------------------
# the session
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class StagedFile:
    local: Path
    remote_name: str
    sha256: str


class AndroidSession:
    """One device, its facts, and the runs on it."""

    def __init__(self, adb: Adb, dev: AdbDevice, say: Say = _quiet):
        self.adb = adb
        self.dev = dev
        self.say = say
        self.props: dict[str, str] = {}
        self.cpus: list[dict[str, Any]] = []
        self.simulated = False
        self.has_toybox_time = False
        self.has_taskset = False
        self.remote_dir = ""
        self.pushed: list[str] = []
        self.already_there: list[str] = []
        self.uncontrolled: list[str] = []
        self.warnings: list[str] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.mask: int | None = None
        self.mask_rule = ""
        self.granted: str | None = None
        self.threads: int | None = None

    # ---- facts -----------------------------------------------------------------------------------------------
    @property
    def abilist(self) -> list[str]:
        text = self.props.get("ro.product.cpu.abilist") or self.props.get("ro.product.cpu.abi", "")
        return [a for a in text.split(",") if a]

    @property
    def host_like(self) -> bool:
        """A simulated phone that reports this machine's ABI: it can run the project's host runners."""
        return self.simulated and host_abi() in self.abilist

    def fingerprint(self) -> dict[str, Any]:
        """Identity, CPUs, memory, and the first thermal/battery snapshot; probes toybox time and taskset."""
        d = self.dev
        self.props = parse_getprop(d.check_output(["getprop"]))
        self.simulated = is_simulated_props(self.props)
        self.cpus = parse_cpu_loop(d.shell(_CPU_LOOP).out)
        mem = parse_meminfo(d.shell(["cat", "/proc/meminfo"]).out)
        rc, _, err = d.shell("toybox time -v true")
        self.has_toybox_time = rc == 0 and "Max RSS" in err
        self.has_taskset = d.shell("taskset -p $$ >/dev/null 2>&1").rc == 0
        p = self.props
        sdk = p.get("ro.build.version.sdk", "")
        return {
            "transport": "adb",
            "serial": d.serial,
            "simulated_device": self.simulated,
            "manufacturer": p.get("ro.product.manufacturer"),
            "brand": p.get("ro.product.brand"),
            "model": p.get("ro.product.model"),
            "device": p.get("ro.product.device"),
            "soc_manufacturer": p.get("ro.soc.manufacturer"),
            "soc_model": p.get("ro.soc.model") or p.get("ro.board.platform") or p.get("ro.hardware"),
            "board_platform": p.get("ro.board.platform"),
            "hardware": p.get("ro.hardware"),
            "os": "android",
            "os_version": p.get("ro.build.version.release"),
            "sdk_int": int(sdk) if sdk.isdigit() else None,
            "build_fingerprint": p.get("ro.build.fingerprint"),
            "build_type": p.get("ro.build.type"),
            "abi": p.get("ro.product.cpu.abi") or (self.abilist[0] if self.abilist else None),
            "abilist": self.abilist,
            "mem_total_kb": mem.get("MemTotal"),
            "mem_available_kb": mem.get("MemAvailable"),
            "cpus": self.cpus,
            "max_khz": sorted({c["max_khz"] for c in self.cpus if c.get("max_khz")}),
            "governors": sorted({c["governor"] for c in self.cpus if c.get("governor")}),
            "shell_v2": d.shell_v2,
            "toybox_time": self.has_toybox_time,
            "simulator": ({"version": p.get("ro.mi2v.simulator.version"), "host": p.get("ro.mi2v.simulator.host")}
                          if self.simulated else None),
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
        cpus = parse_cpu_loop(d.shell(_CPU_LOOP).out)
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
        """--runner, else DIR/runners/<abi>/NAME or DIR/NAME, else (simulated phone) the project's host runner."""
        path: Path | None = None
        source = ""
        matching = [p for p in given if _runner_kind(p) == name]
        if matching:
            path, source = matching[0], "--runner"
        else:
            for abi in self.abilist:
                for cand in (artifacts_dir / "runners" / abi / name, artifacts_dir / name):
                    if cand.is_file() and (cand.parent.name == abi or runs_on(inspect_runner(cand), [abi])):
                        path, source = cand, "artifacts folder"
                        break
                if path:
                    break
        if path is None:
            if not self.host_like:
                abi = self.abilist[0] if self.abilist else "the device ABI"
                raise DeviceError(f"no {name} for {abi}: build it ({README_RUNNERS}) and pass --runner PATH, or put "
                                  f"it in {artifacts_dir}/runners/{abi}/")
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="mi2v-runners-")
            path, source = write_host_runner(name, self._tmp.name), "host runner (simulated phone)"
        path = Path(path)
        info = check_runner(path, name, self.abilist, self.host_like)
        libs = sorted({q for pattern in COMPANION_LIBS.get(name, ()) for q in path.parent.glob(pattern)
                       if q.is_file() and q != path})
        return Runner(name, path, sha256_file(path), info, source, libs)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

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
        """Push the runner (and its libraries), make it executable, and probe that it starts."""
        self.stage([StagedFile(runner.local, runner.name, runner.sha256),
                    *[StagedFile(lib, lib.name, sha256_file(lib)) for lib in runner.libs]])
        rpath = f"{self.remote_dir}/{runner.name}"
        self.dev.shell(["chmod", "755", rpath], check=True)
        if self.dev.shell(["test", "-x", rpath]).rc != 0:
            raise DeviceError(f"{runner.name} is not executable on the device after chmod 755 ({rpath}): "
                              "/data/local/tmp should allow it; check the device's storage mounts")
        help_flag = "--help" if runner.name == EXECUTOR_RUNNER else "-h"
        cmd = f"cd {shlex.quote(self.remote_dir)} && LD_LIBRARY_PATH=. ./{runner.name} {help_flag}"
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

    # ---- runs ------------------------------------------------------------------------------------------------
    def _wrap(self, runner: str, args: list[str]) -> str:
        d = shlex.quote(self.remote_dir)
        pin = f"taskset {self.mask:x} " if self.mask is not None else ""
        inner = f"{pin}./{runner} {quote(args)}"
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
        rc, out, err = self.dev.shell(self._wrap(runner.name, args), timeout=timeout)
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
                csv_name: str, local_csv: Path) -> tuple[RunResult, str]:
        d = self.remote_dir
        self.dev.shell(["rm", "-f", f"{d}/{csv_name}"])
        args = ["-e", "cpu", "-m", "times", "-r", str(warmup + iterations), "-I", "-s"]
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
        toybox_rss = re.search(r"Max RSS \(KiB\): (\d+)", text)
        if toybox_rss:
            run.peak_rss_kb, run.peak_rss_method = int(toybox_rss.group(1)), "toybox-time"
        elif parsed.peak_rss_kb:
            run.peak_rss_kb, run.peak_rss_method = parsed.peak_rss_kb, "runner"
        elif hwm:
            run.peak_rss_kb, run.peak_rss_method = hwm, "vmhwm-poll"
        return run, text

    def pull_if_exists(self, remote_name: str, local: Path) -> Path | None:
        rpath = f"{self.remote_dir}/{remote_name}"
        if not self.dev.exists(rpath):
            return None
        local.parent.mkdir(parents=True, exist_ok=True)
        self.dev.pull(rpath, local)
        self.dev.shell(["rm", "-f", rpath])
        return local


class RunnerFailure(DeviceError):
    """The runner ran and failed (non-zero exit, crash, no timings); `log` is its output."""

    def __init__(self, message: str, log: str):
        super().__init__(message)
        self.log = log


def runner_failure(runner: str, rc: int, text: str, missing_backends: list[str], errors: list[str]) -> str:
    """One line: what went wrong in a runner run and what to do."""
    start = diagnose_start(rc, text, runner)
    if missing_backends:
        b = missing_backends[0]
        flag = {"VulkanBackend": "VULKAN", "QnnBackend": "QNN", "XnnpackBackend": "XNNPACK"}.get(b)
        fix = (f"rebuild {runner} with -DEXECUTORCH_BUILD_{flag}=ON" if flag else f"use a runner that has {b}")
        head = start or f"{runner} failed (exit {rc})"
        return f"{head}: the model is delegated to {b}, which this runner was built without; {fix}"
    detail = _last_meaningful(text, errors)
    if start and 128 < rc < 128 + 65:
        return f"{start}{': ' + detail if detail else ''}; run it by hand on the device to see the full log"
    if start:
        return start
    if "is not supported in this build" in text:
        return f"{runner} failed: {detail}; build onnxruntime with that execution provider or use -e cpu"
    return f"{runner} failed (exit {rc}){': ' + detail if detail else ''}"


def _last_meaningful(text: str, errors: list[str]) -> str:
    if errors:
        return errors[-1]
    skip = ("Real time", "User time", "System time", "Max RSS", "Major faults", "Minor faults", "File system",
            "Voluntary context", "Involuntary context", "real\t", "user\t", "sys\t")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(skip)]
    return lines[-1][:200] if lines else ""


def _runner_kind(path: Path) -> str:
    return ORT_PERF_TEST if "onnxruntime_perf_test" in path.name or "perf_test" in path.name else EXECUTOR_RUNNER


def runner_kind(path: Path) -> str:
    """Which runner a --runner file stands for, by its name (onnxruntime_perf_test, else executor_runner)."""
    return _runner_kind(path)


__all__ = ["AndroidSession", "AdbTimeout", "Runner", "RunnerFailure", "StagedFile", "big_core_mask",
           "check_runner", "diagnose_start", "is_host_runner", "parse_cpu_loop", "parse_mask", "runner_kind"]
