"""The simulated phone's file system: which device paths are folders under its root (`MOUNTS`, writable and
executable or not), and the read-only files generated from its profile: cpufreq, thermal zones, `/proc/meminfo`,
`/proc/cpuinfo`, the properties, and the device tools in `/system/bin` (`getprop`, `dumpsys`, `logcat`, `toybox`;
with this machine's ABI also the host stand-ins of the phone runners, simulator/host_runners.py)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from ..devices.benchmark_model import BENCHMARK_MODEL
from ..devices.runners import EXECUTOR_RUNNER, ORT_PERF_TEST
from .host_runners import write_host_runner
from .profile import Battery, DeviceProfile, host_abi

# device path prefix -> (folder under root, writable, exec allowed)
MOUNTS: list[tuple[str, str, bool, bool]] = [
    ("/data/local/tmp", "data/local/tmp", True, True),
    ("/storage/emulated/0", "sdcard", True, False),
    ("/sdcard", "sdcard", True, False),
    ("/sys/devices/system/cpu", "sys/devices/system/cpu", False, False),
    ("/sys/class/thermal", "sys/class/thermal", False, False),
    ("/proc/meminfo", "proc/meminfo", False, False),
    ("/proc/cpuinfo", "proc/cpuinfo", False, False),
    ("/system/bin", "system/bin", False, True),
]


class DeviceFiles:
    """The phone's generated, read-only files: cpufreq, thermal zones, /proc, properties and the device tools."""

    def __init__(self, phone: Any):
        self.phone = phone  # the SimulatedPhone

    def build(self) -> None:
        root = self.phone.root
        assert root is not None
        p = self.phone.profile
        for _, sub, _, _ in MOUNTS:
            if not sub.startswith("proc/"):
                (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "proc").mkdir(exist_ok=True)
        meta = root / ".mi2v"
        meta.mkdir(exist_ok=True)
        self._write_cpufreq(root / "sys/devices/system/cpu")
        # thermal zones
        th_root = root / "sys/class/thermal"
        for i, zone in enumerate(p.thermal):
            d = th_root / f"thermal_zone{i}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "type").write_text(zone.name + "\n")
            (d / "temp").write_text(f"{round(zone.temp_c * 1000)}\n")
        # /proc
        mem = p.mem_total_kb
        (root / "proc/meminfo").write_text(
            f"MemTotal:       {mem:>8} kB\nMemFree:        {mem // 4:>8} kB\nMemAvailable:   {mem // 2:>8} kB\n"
            f"Buffers:        {0:>8} kB\nCached:         {mem // 8:>8} kB\n"
        )
        cpuinfo = "".join(f"processor\t: {i}\nBogoMIPS\t: 38.40\n\n" for i in range(len(p.cpus)))
        (root / "proc/cpuinfo").write_text(cpuinfo + f"Hardware\t: {p.hardware}\n")
        # properties
        props = self.phone.props()
        pdir = meta / "props"
        pdir.mkdir(exist_ok=True)
        for k, v in props.items():
            if "/" in k or k.startswith("."):
                continue
            (pdir / k).write_text(v + "\n")
        (meta / "getprop.txt").write_text("".join(f"[{k}]: [{v}]\n" for k, v in props.items()))
        (meta / "battery.txt").write_text(dumpsys_battery(p.battery))
        (meta / "thermalservice.txt").write_text(dumpsys_thermal(p))
        (meta / "logcat.txt").touch()
        self._write_tools()

    def _write_cpufreq(self, cpu_root: Path) -> None:
        """/sys/devices/system/cpu: online/possible/present and each core's cpufreq files, from the profile."""
        p = self.phone.profile
        n = len(p.cpus)
        span = "0" if n == 1 else f"0-{n - 1}"
        for fname in ("online", "possible", "present"):
            (cpu_root / fname).write_text(span + "\n")
        for i, core in enumerate(p.cpus):
            d = cpu_root / f"cpu{i}" / "cpufreq"
            d.mkdir(parents=True, exist_ok=True)
            cur = core.cur_khz if core.cur_khz is not None else core.max_khz
            (d / "cpuinfo_max_freq").write_text(f"{core.max_khz}\n")
            (d / "cpuinfo_min_freq").write_text(f"{core.min_khz}\n")
            (d / "scaling_max_freq").write_text(f"{core.max_khz}\n")
            (d / "scaling_cur_freq").write_text(f"{cur}\n")
            (d / "scaling_governor").write_text(f"{core.governor}\n")
            stats = d / "stats"
            stats.mkdir(exist_ok=True)
            (stats / "time_in_state").write_text(f"{core.min_khz} 0\n{core.max_khz} 0\n")

    def _write_tools(self) -> None:
        root = self.phone.root
        assert root is not None
        meta = shlex.quote(str(root / ".mi2v"))
        timer = f"{shlex.quote(sys.executable)} {shlex.quote(str(root / '.mi2v' / 'toybox_time.py'))}"
        bin_dir = root / "system/bin"
        tools = {
            "getprop": f"""#!/bin/sh
# simulated getprop: values from the device profile
M={meta}
if [ $# -eq 0 ]; then exec cat "$M/getprop.txt"; fi
case "$1" in */*|.*|'') echo "${{2:-}}"; exit 0;; esac
if [ -f "$M/props/$1" ]; then cat "$M/props/$1"; else echo "${{2:-}}"; fi
""",
            "setprop": """#!/bin/sh
echo "setprop: properties are read-only on the simulated phone" >&2
exit 1
""",
            "dumpsys": f"""#!/bin/sh
# simulated dumpsys: battery and thermalservice from the device profile
M={meta}
case "$1" in
  battery) exec cat "$M/battery.txt";;
  thermalservice) exec cat "$M/thermalservice.txt";;
  -l) printf 'Currently running services:\\n  battery\\n  thermalservice\\n';;
  *) echo "Can't find service: $1";;
esac
""",
            "logcat": f"""#!/bin/sh
# simulated logcat: a plain text buffer (runners may append to $M/logcat.txt); -c clears it
M={meta}
for a in "$@"; do case "$a" in -c) : > "$M/logcat.txt"; exit 0;; esac; done
echo '--------- beginning of main'
exec cat "$M/logcat.txt"
""",
            "toybox": f"""#!/bin/sh
# simulated toybox: `toybox time [-v] CMD...` is measured like toybox's time.c; other applets run the host tool
if [ $# -eq 0 ]; then echo "toybox (simulated): time, and the host's tools"; exit 0; fi
if [ "$1" = time ]; then shift; exec {timer} "$@"; fi
exec "$@"
""",
        }
        for name, text in tools.items():
            path = bin_dir / name
            path.write_text(text)
            path.chmod(0o755)
        if self.phone.profile.abi == host_abi():  # the phone runs this machine's code: the runners are "installed"
            for runner in (EXECUTOR_RUNNER, ORT_PERF_TEST, BENCHMARK_MODEL):
                write_host_runner(runner, bin_dir)
        (root / ".mi2v" / "toybox_time.py").write_text(TOYBOX_TIME)


def dumpsys_battery(b: Battery) -> str:
    plugged = b.plugged.lower()
    return (
        "Current Battery Service state:\n"
        f"  AC powered: {str(plugged == 'ac').lower()}\n"
        f"  USB powered: {str(plugged == 'usb').lower()}\n"
        f"  Wireless powered: {str(plugged == 'wireless').lower()}\n"
        "  Max charging current: 500000\n"
        "  Max charging voltage: 5000000\n"
        "  Charge counter: 3000000\n"
        f"  status: {b.status}\n"
        f"  health: {b.health}\n"
        "  present: true\n"
        f"  level: {b.level}\n"
        "  scale: 100\n"
        f"  voltage: {b.voltage_mv}\n"
        f"  temperature: {round(b.temperature_c * 10)}\n"
        "  technology: Li-ion\n"
    )


def dumpsys_thermal(p: DeviceProfile) -> str:
    temps = "".join(
        f"\tTemperature{{mValue={z.temp_c}, mType={z.type}, mName={z.name}, mStatus={z.status}}}\n" for z in p.thermal
    )
    return (
        "IsStatusOverride: false\n"
        "ThermalEventListeners:\n\tcallbacks: 1\n\tkilled: false\n\tbroadcasts count: -1\n"
        "ThermalStatusListeners:\n\tcallbacks: 1\n\tkilled: false\n\tbroadcasts count: -1\n"
        f"Thermal Status: {p.thermal_status}\n"
        f"Cached temperatures:\n{temps}"
        "HAL Ready: true\n"
        "HAL connection:\n\tThermalHAL 2.0 connected: yes\n"
        f"Current temperatures from HAL:\n{temps}"
        "Current cooling devices from HAL:\n"
        "\tCoolingDevice{mValue=0, mType=0, mName=thermal-cpufreq-0}\n"
    )


TOYBOX_TIME = r'''"""toybox `time [-pv] CMD...` for the simulated phone: same output as toys/posix/time.c."""
import os, resource, subprocess, sys, time

args = sys.argv[1:]
verbose = portable = False
while args and args[0].startswith("-") and len(args[0]) > 1:
    flag = args.pop(0)
    if flag == "--":
        break
    verbose |= "v" in flag
    portable |= "p" in flag
if not args:
    sys.stderr.write("usage: time [-pv] COMMAND...\n")
    sys.exit(1)
t0 = time.monotonic()
try:
    proc = subprocess.Popen(args)
except OSError as exc:
    sys.stderr.write(f"time: exec {args[0]}: {exc.strerror}\n")
    sys.exit(127 if isinstance(exc, FileNotFoundError) else 126)
_, status, ru = os.wait4(proc.pid, 0)
real = time.monotonic() - t0
if verbose:
    sys.stderr.write(
        f"Real time (s): {real:.6f}\nUser time (s): {ru.ru_utime:.6f}\nSystem time (s): {ru.ru_stime:.6f}\n"
        f"Max RSS (KiB): {ru.ru_maxrss}\nMajor faults: {ru.ru_majflt}\nMinor faults: {ru.ru_minflt}\n"
        f"File system inputs: {ru.ru_inblock}\nFile system outputs: {ru.ru_oublock}\n"
        f"Voluntary context switches: {ru.ru_nvcsw}\nInvoluntary context switches: {ru.ru_nivcsw}\n"
    )
else:
    label, sep = (("real", "user", "sys"), " ") if portable else (("real", "user", "sys"), "\t")
    for name, val in zip(label, (real, ru.ru_utime, ru.ru_stime)):
        sys.stderr.write(f"{name}{sep}{val:.6f}\n" if portable else f"{name}{sep}{val:.3f}\n")
sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else os.WTERMSIG(status))
'''
