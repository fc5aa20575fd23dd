"""The adb driver of `mi2v bench`: device facts, runner checks, staging, pinned runs of the phone runners.

Command sequence (shared/spec/device-bench.md §8.1), every call through `AdbDevice` (argv lists, `-s SERIAL`,
timeouts, quoted remote arguments, exit-code marker on phones without shell_v2):

1. facts: `getprop`, the cpufreq loop, `/proc/meminfo`, `dumpsys thermalservice`, `dumpsys battery`, probes for
   `toybox time` and `taskset`;
2. the runner: `--runner`, else one in the artifacts folder, else one the device has on its PATH. A local one is
   checked on this machine (exists, ELF class/machine against the device ABI list, not a shared library, and its
   ELF interpreter or `#!` interpreter present on the device), then pushed into `/data/local/tmp/mi2v/<hash of the
   runner files>/` (files already there with the same sha256 are not pushed again, models included), `chmod 755`;
   then `test -x` and a `--help` probe that tells a runner that cannot start (missing library, wrong interpreter,
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
import os
import re
import shlex
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInputError, DeviceError
from ..safepath import is_within
from ..files import sha256_file
from .adb import Adb, AdbDevice, AdbTimeout, parse_getprop, quote
from .bench import BenchDevice, BenchOptions, DeviceFacts, Say, Selection, artifact_files, remote_name
from .elf import RunnerFile, inspect_runner, is_shared_library, runs_on
from .report import BenchReport, ComponentResult, RunResult
from .runners import (
    EXECUTOR_RUNNER,
    ORT_PERF_TEST,
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

RUNNER_FOR_RUNTIME = {"executorch": EXECUTOR_RUNNER, "onnxruntime": ORT_PERF_TEST}
# libraries a runner needs beside it (found next to the runner file on this machine and pushed with it)
COMPANION_LIBS = {
    ORT_PERF_TEST: ("libonnxruntime*.so*", "libQnn*.so", "libqnn*.so"),
    EXECUTOR_RUNNER: ("libQnn*.so", "libqnn_executorch_backend.so", "libvulkan_*.so"),
}
README_RUNNERS = "see the README section 'Android runners'"
QNN_LIBS_SOURCE = ("from the QAIRT SDK (lib/aarch64-android, lib/hexagon-vNN/unsigned) or the Maven package "
                   "com.qualcomm.qti:qnn-runtime; see the README section 'Qualcomm HTP'")
SIMULATED_PROP = "ro.mi2v.simulated"  # a device that answers 1 is a simulated phone (`mi2v devices simulate`)

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


# --------------------------------------------------------------------------------------------------------------------
# runners
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Runner:
    """A runner file on this machine, checked against the device, and where it lives on the device."""

    name: str  # executor_runner | onnxruntime_perf_test (its name on the device)
    local: Path | None  # None: the device already has it (on its PATH)
    sha256: str
    info: RunnerFile | None
    source: str  # --runner | artifacts folder | device PATH
    libs: list[Path] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)  # executor_runner flags seen in --help
    per_iteration: bool = True
    installed: str | None = None  # its path on the device when it was found there

    def describe(self) -> dict[str, Any]:
        return {"runner": self.name, "runner_path": str(self.local or self.installed), "runner_sha256": self.sha256,
                "runner_source": self.source, "runner_file": self.info.describe() if self.info else None,
                "runner_libs": [p.name for p in self.libs]}


def qnn_run_options(target_info: dict[str, Any]) -> dict[str, str]:
    """The QNN EP options (`-i "key|value ..."`) for an EPContext model: the HTP backend and the SoC facts it was
    compiled for (valid options of onnxruntime's QNN EP on a phone as well)."""
    options = {"backend_type": "htp"}
    if target_info.get("soc_model") is not None:
        options["soc_model"] = str(target_info["soc_model"])
    if target_info.get("htp_arch"):
        options["htp_arch"] = str(target_info["htp_arch"]).lower().lstrip("v")
    return options


def qnn_libraries(abi: str, target_info: dict[str, Any]) -> list[str]:
    """The QNN runtime libraries onnxruntime_perf_test loads for an EPContext model on the HTP: the backend and
    QnnSystem (it reads the context binary), and on an Android ABI the HTP stub and the DSP-side skeleton of the
    artifact's Hexagon generation (an x86_64 phone runs the HTP simulator, which has neither)."""
    libs = ["libQnnHtp.so", "libQnnSystem.so"]
    arch = str(target_info.get("htp_arch") or "").lower().lstrip("v")
    if abi.startswith("arm") and arch:
        libs += [f"libQnnHtpV{arch}Stub.so", f"libQnnHtpV{arch}Skel.so"]
    return libs


def check_qnn_libraries(runner: Runner, abi: str, target_info: dict[str, Any]) -> None:
    """One line naming the QNN libraries missing beside a local runner, and where a user gets them."""
    if runner.local is None:  # a runner the device has on its PATH: its libraries are the device's business
        return
    have = {lib.name for lib in runner.libs}
    missing = [lib for lib in qnn_libraries(abi, target_info) if lib not in have]
    if missing:
        raise DeviceError(f"the QNN EPContext model needs {', '.join(missing)} beside {runner.local} (pushed with "
                          f"it, LD_LIBRARY_PATH and ADSP_LIBRARY_PATH point there): get them {QNN_LIBS_SOURCE}")


def check_runner(path: Path, name: str, abilist: list[str], device_has: Callable[[str], bool]) -> RunnerFile:
    """Refuse a runner that cannot run on the device, with the cause and the fix in one line.

    `device_has(path)`: whether the device has that file; a `#!` script or an ELF binary runs there only when its
    interpreter does (a phone has bionic's linker and /system/bin/sh, not a desktop's loader)."""
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
        interpreter = (info.shebang or "").removeprefix("#!").split(maxsplit=1)[:1]
        if interpreter and device_has(interpreter[0]):
            return info
        raise DeviceError(f"runner {path} is a script, not a native binary, and the device has no "
                          f"{interpreter[0] if interpreter else 'interpreter'} to run it: a phone needs {name} "
                          f"cross-compiled for {abilist[0] if abilist else 'its ABI'} ({README_RUNNERS})")
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
    if not info.android_linked and not device_has(str(info.interpreter)):
        raise DeviceError(f"runner {path} is linked for desktop Linux (interpreter {info.interpreter}, which the "
                          f"device does not have), not Android: build it with the Android NDK toolchain "
                          f"({README_RUNNERS})")
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
        self.cpus = parse_cpu_loop(d.shell(_CPU_LOOP).out)
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
    if "Unable to load backend" in text:
        why = re.search(r"Unable to load backend, error:\s*(.*)", text)
        return (f"{runner} failed: the QNN EP could not load its backend ({why.group(1).strip() if why else 'dlopen'}"
                f"): put libQnnHtp.so, libQnnSystem.so and the HTP stub/skel libraries beside the runner, {QNN_LIBS_SOURCE}")
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


def local_runner(name: str, given: Sequence[Path], artifacts_dir: Path, abilist: Sequence[str]
                 ) -> tuple[Path, str] | None:
    """(path, source) of the runner on this machine: the --runner file of that name, else
    DIR/runners/<abi>/NAME or DIR/NAME built for one of the device's ABIs; None when there is none."""
    matching = [p for p in given if _runner_kind(p) == name]
    if matching:
        return Path(matching[0]), "--runner"
    for abi in abilist:
        for cand in (artifacts_dir / "runners" / abi / name, artifacts_dir / name):
            if cand.is_file() and not is_within(cand, artifacts_dir):  # a symlink planted in a downloaded folder
                raise BadInputError(f"{cand}: leads outside {artifacts_dir} (through a symlink); refused")
            if cand.is_file() and (cand.parent.name == abi or runs_on(inspect_runner(cand), [abi])):
                return cand, "artifacts folder"
    return None


def _runner_kind(path: Path) -> str:
    return ORT_PERF_TEST if "onnxruntime_perf_test" in path.name or "perf_test" in path.name else EXECUTOR_RUNNER


def runner_kind(path: Path) -> str:
    """Which runner a --runner file stands for, by its name (onnxruntime_perf_test, else executor_runner)."""
    return _runner_kind(path)


__all__ = ["AndroidSession", "AdbTimeout", "Runner", "RunnerFailure", "StagedFile", "big_core_mask",
           "check_runner", "device_facts", "diagnose_start", "local_runner", "parse_cpu_loop", "parse_mask",
           "runner_kind"]


# --------------------------------------------------------------------------------------------------------------------
# --device adb (native runners) in the bench loop
# --------------------------------------------------------------------------------------------------------------------


def pick_device(adb: Adb, serial: str | None) -> AdbDevice:
    """The device; a HOST:PORT serial that adb does not know yet is `adb connect`ed first."""
    if serial and re.fullmatch(r"[\w.-]+:\d+", serial) and serial not in {d.serial for d in adb.devices()}:
        adb.connect(serial)
    return adb.pick_device(serial)


class AdbPhone(BenchDevice):
    """A phone over adb as a bench device: connected at facts(), its thermals read between components, gone when
    adb no longer lists it as `device`. The native runners and the Android app both build on it."""

    transport = "adb"

    def __init__(self, opts: BenchOptions, manifest: Any, serial: str | None, say: Say):
        self.opts, self.manifest, self.serial, self.say = opts, manifest, serial, say
        self.session: AndroidSession | None = None

    def connect(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Pick the phone and read its facts: (the report's device block, its host block)."""
        import platform

        adb = Adb(self.opts.adb, server_port=self.opts.adb_port, server_host=self.opts.adb_host)
        host = {"os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
                "adb": {"path": adb.path, "version": adb.version(), "server_port": self.opts.adb_port,
                        "server_host": self.opts.adb_host}}
        self.session = AndroidSession(adb, pick_device(adb, self.serial), self.say)
        self.say(f"reading device facts of {self.session.dev.serial}")
        return self.session.fingerprint(), host

    def snapshot(self) -> dict[str, Any]:
        return self.session.snapshot() if self.session else {}

    def alive(self) -> bool:
        try:
            return self.session is not None and self.session.dev.get_state() == "device"
        except DeviceError:
            return False


class AdbRunnerDevice(AdbPhone):
    """A phone over adb timed with its native runners: executor_runner for .pte, onnxruntime_perf_test for .onnx."""

    def __init__(self, opts: BenchOptions, manifest: Any, serial: str | None, json_path: Path, say: Say):
        super().__init__(opts, manifest, serial, say)
        self.extras = json_path.with_name(json_path.stem + ".files")  # ETDumps, CSVs, failure logs
        self.json_dir = json_path.parent
        self.files: dict[str, list[StagedFile]] = {}
        self.found: dict[str, Runner | DeviceError] = {}  # per runtime: the runner, or why there is none
        self.prepared: dict[str, Runner | DeviceError] = {}  # per runtime: pushed and probed, or why not
        self.simulated_device = False
        self.simulated_qnn: list[str] = []  # QNN artifacts timed on a simulated phone's HTP simulator

    def facts(self) -> DeviceFacts:
        device, host = self.connect()
        self.simulated_device = bool(device.get("simulated_device"))
        s = self.session
        assert s is not None
        s.uncontrolled += ["CPU clocks are not locked (needs root); governors are recorded only",
                           "screen state, charging and background apps are not controlled (battery: see conditions)"]
        s.plan_pinning(self.opts.cpu_mask)
        protocol = {"threads": s.threads, "affinity_mask": f"{s.mask:x}" if s.mask else None,
                    "affinity_granted": s.granted, "affinity_rule": s.mask_rule,
                    "peak_rss_method": "toybox-time" if s.has_toybox_time else "vmhwm-poll"}
        return DeviceFacts(device, host, protocol, s.uncontrolled)

    def cool_down(self, pause_s: float, label: str) -> dict[str, Any]:
        assert self.session is not None
        return self.session.cool_down(pause_s, self.opts.thermal_wait, label)

    def prepare(self, sel: Selection) -> None:
        """The artifact's files to stage, under checked remote names (the loop has checked them against the
        manifest), and the runner of its runtime (found once per runtime)."""
        assert self.session is not None and sel.runtime is not None
        self.files[sel.component] = [StagedFile(p, n, sha256_file(p)) for p, n, _ in
                                     artifact_files(self.manifest, sel.entry)]
        if sel.runtime not in self.found:
            try:
                self.found[sel.runtime] = self.session.find_runner(RUNNER_FOR_RUNTIME[sel.runtime],
                                                                   self.opts.runners, Path(self.opts.artifacts))
            except DeviceError as exc:
                self.found[sel.runtime] = exc
        if isinstance(self.found[sel.runtime], DeviceError):
            raise self.found[sel.runtime]
        if sel.entry.delegate == "qnn" and sel.runtime == "onnxruntime":
            abi = self.session.abilist[0] if self.session.abilist else ""
            check_qnn_libraries(self.found[sel.runtime], abi, sel.entry.target_info)  # type: ignore[arg-type]

    def _runner(self, runtime: str) -> Runner:
        """The runner pushed and probed (the staging folder is named after every runner found, once)."""
        s = self.session
        assert s is not None
        if not s.remote_dir:
            s.set_remote_dir([StagedFile(r.local, r.name, r.sha256) for r in self.found.values()
                              if isinstance(r, Runner)])
        if runtime not in self.prepared:
            runner = self.found[runtime]
            assert isinstance(runner, Runner)
            try:
                self.say(f"checking {runner.name} ({runner.describe()['runner_path']}) on the device")
                s.prepare_runner(runner)
                self.prepared[runtime] = runner
            except DeviceError as exc:
                self.prepared[runtime] = exc
        if isinstance(self.prepared[runtime], DeviceError):
            raise self.prepared[runtime]
        return self.prepared[runtime]  # type: ignore[return-value]

    def run(self, sel: Selection, comp: ComponentResult) -> ComponentResult:
        s, opts = self.session, self.opts
        assert s is not None and sel.runtime is not None
        runner = self._runner(sel.runtime)
        comp.runtime.update(runner.describe(), threads=s.threads, affinity_mask=f"{s.mask:x}" if s.mask else None,
                            backend=(sel.entry.delegate or "portable") if sel.runtime == "executorch" else
                            "qnn-htp" if sel.entry.delegate == "qnn" else "cpu", log_channel="stdout+stderr")
        if sel.entry.delegate == "qnn" and sel.runtime == "onnxruntime" and self.simulated_device:
            comp.runtime.update(simulated=True, soc=sel.entry.target_info.get("soc"),
                                note="simulated phone: the QNN HTP simulator on this host's CPU, simulated timings, "
                                     "not a speed figure")
            self.simulated_qnn.append(sel.entry.file)
        try:
            s.stage(self.files[sel.component])
            for r in range(opts.runs):
                self.say(f"{sel.component}: {sel.entry.file} with {runner.name}, run {r + 1}/{opts.runs}: "
                         f"{opts.warmup} warm-up + {opts.iterations} timed iterations")
                comp.runs.append(self._run_once(sel, comp, runner, r))
            if opts.etdump and sel.runtime == "executorch":
                comp.runtime["etdump"] = self._profile(sel, runner)
        except AdbTimeout:
            raise DeviceError(f"timeout: {runner.name} did not finish the {sel.component} within {opts.timeout:g} s "
                              f"({opts.warmup}+{opts.iterations} iterations): raise --timeout or lower --iterations"
                              ) from None
        except RunnerFailure as exc:
            log = self.extras / f"{sel.component}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(exc.log)
            comp.runtime["failure_log"] = os.path.relpath(log, self.json_dir)
            raise
        comp.status, comp.error = "ok", None
        return comp

    @staticmethod
    def _remote_names(sel: Selection) -> tuple[str, str | None]:
        """The model's and its external data's names in the staging folder: checked parts only (bench.remote_name)."""
        data = next((f.file for f in sel.entry.extra_files if f.role == "external_data"), None)
        return remote_name(sel.entry.file), remote_name(data) if data else None

    def _run_once(self, sel: Selection, comp: ComponentResult, runner: Runner, r: int) -> RunResult:
        """One runner process (warm-up inside it); its ETDump or result CSV pulled next to the report."""
        s, opts = self.session, self.opts
        assert s is not None
        if sel.runtime == "executorch":
            model, data = self._remote_names(sel)
            run, text = s.run_executorch(runner, model, data, opts.warmup, opts.iterations, opts.timeout)
            run.backend = comp.runtime["backend"]
            if "--- logcat ---" in text:
                comp.runtime["log_channel"] = "logcat"
            dump = s.pull_if_exists("model.etdump", self.extras / f"{sel.component}.run{r}.etdump")
            if dump is not None:
                run.etdump = os.path.relpath(dump, self.json_dir)
                s.warnings.append(f"{runner.name} wrote an ETDump in the timed run (built with the event tracer): "
                                  "its timings include profiling overhead")
            return run
        csv = self.extras / f"{sel.component}.run{r}.csv"
        self.extras.mkdir(parents=True, exist_ok=True)
        qnn = qnn_run_options(sel.entry.target_info) if sel.entry.delegate == "qnn" else None
        run, _ = s.run_ort(runner, self._remote_names(sel)[0], opts.warmup, opts.iterations, opts.timeout,
                           f"runs_{sel.component}_{r}.csv", csv, qnn=qnn)
        run.backend = "qnn-htp" if qnn else "cpu"
        csv.unlink(missing_ok=True)
        return run

    def outputs(self, sel: Selection, sets: list[Any]) -> tuple[list[dict[str, Any]], str] | str:
        """executor_runner once per test-vector set: the inputs pushed as raw files (--inputs), the outputs written
        with --output_file and pulled back. onnxruntime_perf_test has no way to return outputs."""
        if sel.runtime != "executorch":
            return "onnxruntime_perf_test returns no outputs: check the .onnx with `mi2v verify` on the target"
        runner = self._runner(sel.runtime)
        if not {"inputs", "output_file"} <= runner.flags:
            return f"{runner.name} on the device has no --inputs / --output_file flags"
        local = self.extras / "vectors" / sel.component
        outputs = [self._outputs_of_set(sel, runner, local, n, vs) for n, vs in enumerate(sets)]
        return outputs, f"{runner.name}/{sel.entry.delegate or 'portable'}"

    def _outputs_of_set(self, sel: Selection, runner: Runner, local: Path, n: int, vs: Any) -> dict[str, Any]:
        from .output_check import raw_outputs

        s = self.session
        assert s is not None
        local.mkdir(parents=True, exist_ok=True)
        d, base = s.remote_dir, f"{sel.component}.set{n}.out"
        remote = []
        for k, array in enumerate(vs.inputs.values()):  # pushed beside the artifact, not part of its staging
            path = local / f"{sel.component}.set{n}.in{k}.bin"
            path.write_bytes(array.tobytes())
            remote.append(f"{d}/{path.name}")
            s.dev.push(path, remote[-1])
        model, data = self._remote_names(sel)
        args = [f"--model_path={d}/{model}", "--num_executions=1", "--inputs=" + ",".join(remote),
                f"--output_file={d}/{base}"]
        if data and "data_path" in runner.flags:
            args.append(f"--data_path={d}/{data}")
        if "print_output" in runner.flags:
            args.append("--print_output=none")
        rc, out, err, _, _ = s.run_runner(runner, args, self.opts.timeout)
        s.dev.shell(["rm", "-f", *remote])  # the inputs are not kept on the phone
        if rc != 0:
            raise RunnerFailure(runner_failure(runner.name, rc, out + err, [], []), out + err)
        files = [s.pull_if_exists(f"{base}-{k}.bin", local / f"{base}-{k}.bin") for k in range(len(sel.entry.outputs))]
        if any(f is None for f in files):
            raise DeviceError(f"{runner.name} wrote no {base}-<i>.bin output files for the {sel.component}")
        return raw_outputs(files, sel.entry)

    def _profile(self, sel: Selection, runner: Runner) -> str | None:
        """--etdump: a separate one-iteration run with --etdump_path; the pulled file, relative to the report."""
        s = self.session
        assert s is not None
        if "etdump_path" not in runner.flags:
            s.warnings.append(f"--etdump: {runner.name} has no --etdump_path (build it with "
                              "-DEXECUTORCH_ENABLE_EVENT_TRACER=ON)")
            return None
        self.say(f"{sel.component}: a separate profiling run for the ETDump")
        name = f"{sel.component}.etdump"
        s.run_executorch(runner, self._remote_names(sel)[0], None, 0, 1, self.opts.timeout, etdump=name)
        dump = s.pull_if_exists(name, self.extras / name)
        return os.path.relpath(dump, self.json_dir) if dump else None

    def finish(self, report: BenchReport) -> None:
        if self.session is None:
            return
        s = self.session
        if s.remote_dir:
            report.staging = {"remote_dir": s.remote_dir, "pushed": s.pushed, "already_there": s.already_there,
                              "kept": True}
        report.warnings.extend(s.warnings)
        if self.simulated_qnn:
            report.warnings.append(f"{', '.join(self.simulated_qnn)}: timed on the QNN HTP simulator of a simulated "
                                   "phone (x86_64), simulated timings that say nothing about a phone's speed")
