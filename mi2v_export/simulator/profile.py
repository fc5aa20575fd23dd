"""What the simulated phone says about itself: its properties, cores, thermal zones and battery (`DeviceProfile`).

Defaults describe "a phone with this machine's CPU": the host's ABI, core count and memory, so host binaries pushed
to it run and CPU masks computed from its cpufreq files are valid here. `mi2v devices profile` prints the template;
`mi2v devices simulate --profile FILE` loads an edited one. Every profile answers `ro.mi2v.simulated=1`, the one
property the bench reads (devices/android_session.py `device_facts`).
"""

from __future__ import annotations

import dataclasses
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..devices.android_session import SIMULATED_PROP
from ..errors import BadInputError
from ..files import read_json, write_json_atomic

SIMULATOR_VERSION = "1"

_ABI_BY_MACHINE = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "arm64-v8a",
    "arm64": "arm64-v8a",
    "armv7l": "armeabi-v7a",
    "armv8l": "armeabi-v7a",
    "i386": "x86",
    "i686": "x86",
}


def host_abi() -> str:
    """The Android ABI name of this machine's CPU (x86_64 -> "x86_64", aarch64 -> "arm64-v8a")."""
    machine = platform.machine().lower()
    return _ABI_BY_MACHINE.get(machine, machine)


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _host_cpus() -> list[CpuCore]:
    count = os.cpu_count() or 1
    cores = []
    for i in range(count):
        base = f"/sys/devices/system/cpu/cpu{i}/cpufreq"
        max_khz = _read_int(f"{base}/cpuinfo_max_freq") or 2_000_000
        try:
            governor = Path(f"{base}/scaling_governor").read_text().strip() or "schedutil"
        except OSError:
            governor = "schedutil"
        cores.append(CpuCore(max_khz=max_khz, governor=governor))
    return cores


def _host_mem_total_kb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 8 * 1024 * 1024


@dataclass
class CpuCore:
    """One core's cpufreq facts (kHz, as in sysfs)."""

    max_khz: int
    governor: str = "schedutil"
    cur_khz: int | None = None  # None: same as max_khz
    min_khz: int = 300_000


@dataclass
class ThermalZone:
    """One temperature sensor, as the thermal HAL names it (type 0 CPU, 1 GPU, 2 battery, 3 skin, 9 NPU)."""

    name: str
    type: int
    temp_c: float
    status: int = 0


@dataclass
class Battery:
    level: int = 80
    temperature_c: float = 29.5
    plugged: str = "usb"  # usb | ac | wireless | none
    status: int = 2  # BatteryManager.BATTERY_STATUS_CHARGING
    health: int = 2  # BATTERY_HEALTH_GOOD
    voltage_mv: int = 4100


def _default_thermal() -> list[ThermalZone]:
    return [
        ThermalZone("AP", 0, 36.5),
        ThermalZone("GPU", 1, 35.0),
        ThermalZone("battery", 2, 29.5),
        ThermalZone("skin", 3, 31.0),
    ]


@dataclass
class DeviceProfile:
    """What the simulated phone says about itself. JSON-able: `to_dict()` / `from_dict()` / `load()` / `save()`.

    Defaults describe "a phone with this machine's CPU": the host's ABI, core count and memory, so that host
    binaries pushed to it run and CPU masks computed from its cpufreq files are valid here.
    """

    manufacturer: str = "mi2v"
    brand: str = "mi2v"
    model: str = "Simulated Phone"
    device: str = "mi2v_sim"
    name: str = "mi2v_sim"
    soc_manufacturer: str = "Simulated"
    soc_model: str = field(default_factory=lambda: f"host-{platform.machine() or 'cpu'}")
    board_platform: str = "mi2vsim"
    hardware: str = "mi2vsim"
    android_release: str = "15"
    sdk: int = 35
    build_id: str = "MI2V.SIM"
    build_type: str = "userdebug"
    abi: str = field(default_factory=host_abi)
    cpus: list[CpuCore] = field(default_factory=_host_cpus)
    mem_total_kb: int = field(default_factory=_host_mem_total_kb)
    thermal_status: int = 0
    thermal: list[ThermalZone] = field(default_factory=_default_thermal)
    battery: Battery = field(default_factory=Battery)
    extra_props: dict[str, str] = field(default_factory=dict)

    # ---- serialisation ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceProfile:
        if not isinstance(data, dict):
            raise BadInputError("device profile must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInputError(
                f"device profile has unknown keys {unknown}; allowed: {sorted(known)} "
                "(print a template with `mi2v devices profile`)"
            )
        kwargs = dict(data)
        try:
            if "cpus" in kwargs:
                kwargs["cpus"] = [CpuCore(**c) for c in kwargs["cpus"]]
            if "thermal" in kwargs:
                kwargs["thermal"] = [ThermalZone(**t) for t in kwargs["thermal"]]
            if "battery" in kwargs:
                kwargs["battery"] = Battery(**kwargs["battery"])
            if "extra_props" in kwargs:
                kwargs["extra_props"] = {str(k): str(v) for k, v in kwargs["extra_props"].items()}
            profile = cls(**kwargs)
        except TypeError as exc:
            raise BadInputError(f"device profile is malformed: {exc}") from None
        if not profile.cpus:
            raise BadInputError("device profile needs at least one entry in `cpus`")
        return profile

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DeviceProfile:
        return cls.from_dict(read_json(path, "device profile"))

    def save(self, path: str | os.PathLike[str]) -> None:
        write_json_atomic(path, self.to_dict())

    # ---- derived facts ---------------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return (f"{self.brand}/{self.name}/{self.device}:{self.android_release}/{self.build_id}/1:"
                f"{self.build_type}/test-keys")

    def abilist(self) -> list[str]:
        return {
            "arm64-v8a": ["arm64-v8a", "armeabi-v7a", "armeabi"],
            "x86_64": ["x86_64", "x86"],
        }.get(self.abi, [self.abi])

    def props(self, serial: str = "") -> dict[str, str]:
        """All system properties, as `getprop` prints them."""
        abis = self.abilist()
        props = {
            "ro.product.manufacturer": self.manufacturer,
            "ro.product.brand": self.brand,
            "ro.product.model": self.model,
            "ro.product.device": self.device,
            "ro.product.name": self.name,
            "ro.product.board": self.board_platform,
            "ro.soc.manufacturer": self.soc_manufacturer,
            "ro.soc.model": self.soc_model,
            "ro.board.platform": self.board_platform,
            "ro.hardware": self.hardware,
            "ro.build.version.release": self.android_release,
            "ro.build.version.sdk": str(self.sdk),
            "ro.build.id": self.build_id,
            "ro.build.type": self.build_type,
            "ro.build.tags": "test-keys",
            "ro.build.fingerprint": self.fingerprint,
            "ro.product.cpu.abi": self.abi,
            "ro.product.cpu.abilist": ",".join(abis),
            "ro.product.cpu.abilist64": ",".join(a for a in abis if a in ("arm64-v8a", "x86_64")),
            "ro.product.cpu.abilist32": ",".join(a for a in abis if a not in ("arm64-v8a", "x86_64")),
            "ro.debuggable": "1" if self.build_type != "user" else "0",
            "ro.serialno": serial,
            "sys.boot_completed": "1",
            "init.svc.adbd": "running",
            "service.adb.tcp.port": serial.rsplit(":", 1)[-1] if ":" in serial else "",
            SIMULATED_PROP: "1",
            "ro.mi2v.simulator.version": SIMULATOR_VERSION,
            "ro.mi2v.simulator.host": f"{platform.system()} {platform.machine()}",
        }
        props.update(self.extra_props)
        props[SIMULATED_PROP] = "1"  # a profile cannot hide that the phone is simulated
        return dict(sorted(props.items()))
