"""A simulated Android phone: a loopback device daemon that speaks adb's device-side wire protocol.

The real `adb` client and server talk to it exactly as they talk to a phone over `adb connect`:

    with SimulatedPhone() as phone:          # binds 127.0.0.1:<free port>
        subprocess.run(["adb", "connect", phone.serial])   # "127.0.0.1:<port>"

What is real: the adb binary, the adb server, the transport (CNXN / OPEN / OKAY / WRTE / CLSE), shell v1 and
shell v2 (exit codes, separate stderr), the sync protocol (STAT / LIST / SEND / RECV / DONE / QUIT), file bytes,
the device states (`device`, `unauthorized` via an AUTH challenge nobody can answer, `offline` via a daemon that
never answers CNXN), and the execution of whatever is pushed and run (on this machine's CPU).

What is simulated: the phone. Its properties, CPU frequencies, thermal zones and battery come from a
`DeviceProfile`; the device advertises the *host's* ABI (e.g. x86_64) so host binaries and scripts can be pushed
and run; it answers `ro.mi2v.simulated=1`, which the bench report records (`devices.android.device_facts`).
When it reports this machine's ABI, the host stand-ins of `executor_runner` and `onnxruntime_perf_test`
(`host_runners`) are on its PATH (`/system/bin`), as runners installed on a phone would be.

Filesystem: the phone's `/` is a folder (`root`); `/data/local/tmp` (and `/sdcard`) are writable folders under it,
the fake `/sys/devices/system/cpu`, `/sys/class/thermal`, `/proc/meminfo`, `/proc/cpuinfo` and the device tools in
`/system/bin` (`getprop`, `dumpsys`, `logcat`, `toybox`) are generated read-only from the profile. Sync transfers
are confined to those folders (normalised paths, symlinks resolved, anything else is "Permission denied" /
"does not exist"). Shell commands run as the current host user with `/bin/sh` in the root folder, with the device
paths above rewritten to their folders and the folders written back as device paths in the output. The shell is a
stand-in, not a security boundary: it listens on 127.0.0.1 only and runs what a local user could run anyway.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import posixpath
import queue
import re
import shlex
import shutil
import signal
import socket
import stat as stat_mod
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..devices.android import SIMULATED_PROP
from ..devices.runners import EXECUTOR_RUNNER, ORT_PERF_TEST
from ..errors import BadInputError, DeviceError
from ..files import read_json, write_json_atomic
from .host_runners import write_host_runner

log = logging.getLogger("mi2v.simulate")

SIMULATOR_VERSION = "1"
STATES = ("device", "unauthorized", "offline")

# --------------------------------------------------------------------------------------------------------------------
# Device profile
# --------------------------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------------------------
# adb wire protocol
# --------------------------------------------------------------------------------------------------------------------

A_SYNC = 0x434E5953
A_CNXN = 0x4E584E43
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_AUTH = 0x48545541
A_STLS = 0x534C5453

A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001
MAX_PAYLOAD = 256 * 1024
MAX_PAYLOAD_V1 = 4 * 1024

AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3

_HEADER = struct.Struct("<6I")

# shell protocol v2 packet ids
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN, SHELL_WINDOW = 0, 1, 2, 3, 4, 5

SYNC_DATA_MAX = 64 * 1024

_COMMAND_NAMES = {A_SYNC: "SYNC", A_CNXN: "CNXN", A_OPEN: "OPEN", A_OKAY: "OKAY", A_CLSE: "CLSE",
                  A_WRTE: "WRTE", A_AUTH: "AUTH", A_STLS: "STLS"}


class _ConnectionClosed(Exception):
    pass


def _pack(command: int, arg0: int, arg1: int, data: bytes, checksum: bool) -> bytes:
    crc = (sum(data) & 0xFFFFFFFF) if checksum else 0
    return _HEADER.pack(command, arg0, arg1, len(data), crc, command ^ 0xFFFFFFFF) + data


class _Stream:
    """One adb socket (an OPENed service) on a connection: device-side end."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int, service: str):
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.service = service
        self._inbox: queue.Queue[bytes | None] = queue.Queue()
        self._can_send = threading.Event()
        self._can_send.set()
        self._write_lock = threading.Lock()
        self.closed = threading.Event()
        self._buffer = b""

    # called by the connection thread ------------------------------------------------------------------------------
    def on_write(self, data: bytes) -> None:
        self._inbox.put(data)

    def on_okay(self) -> None:
        self._can_send.set()

    def on_close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self._inbox.put(None)
            self._can_send.set()

    # called by the service thread ---------------------------------------------------------------------------------
    def read(self) -> bytes | None:
        """Next chunk the host wrote, or None once the host closed the stream (or the phone stops)."""
        while True:
            if self.closed.is_set() and self._inbox.empty():
                return None
            try:
                data = self._inbox.get(timeout=0.5)
            except queue.Empty:
                if self.conn.phone.stopping.is_set():
                    return None
                continue
            if data is None:
                return None
            if not self.closed.is_set():
                self.conn.send(A_OKAY, self.local_id, self.remote_id)  # ready for the next WRTE
            return data

    def read_exact(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.read()
            if chunk is None:
                raise _ConnectionClosed()
            self._buffer += chunk
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def write(self, data: bytes) -> bool:
        """Send data to the host in WRTE packets, each one waiting for the host's OKAY. False once closed."""
        step = self.conn.max_payload
        with self._write_lock:
            for i in range(0, len(data), step):
                deadline = time.monotonic() + 120.0
                while not self._can_send.wait(0.5):
                    if self.closed.is_set() or self.conn.phone.stopping.is_set() or time.monotonic() > deadline:
                        return False
                if self.closed.is_set():
                    return False
                self._can_send.clear()
                try:
                    self.conn.send(A_WRTE, self.local_id, self.remote_id, data[i:i + step])
                except OSError:
                    self.on_close()
                    return False
        return True

    def close(self) -> None:
        """Device-side close: tell the host (once)."""
        if not self.closed.is_set():
            self.closed.set()
            self._inbox.put(None)
            try:
                self.conn.send(A_CLSE, self.local_id, self.remote_id)
            except OSError:
                pass
        self.conn.forget(self.local_id)


class _Connection:
    """One transport (the adb server's TCP connection to this phone)."""

    def __init__(self, phone: SimulatedPhone, sock: socket.socket, addr: Any):
        self.phone = phone
        self.sock = sock
        self.addr = addr
        self.version = A_VERSION_MIN
        self.max_payload = MAX_PAYLOAD_V1
        self._send_lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._streams_lock = threading.Lock()
        self._next_id = 1
        self.online = False
        self.thread = threading.Thread(target=self._run, name=f"adbd-conn-{addr}", daemon=True)

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        packet = _pack(command, arg0, arg1, data, self.version < A_VERSION_SKIP_CHECKSUM)
        with self._send_lock:
            self.sock.sendall(packet)

    def forget(self, local_id: int) -> None:
        with self._streams_lock:
            self._streams.pop(local_id, None)

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except TimeoutError:
                if self.phone.stopping.is_set():
                    raise _ConnectionClosed() from None
                continue
            except OSError:
                raise _ConnectionClosed() from None
            if not chunk:
                raise _ConnectionClosed()
            buf += chunk
        return bytes(buf)

    def _run(self) -> None:
        self.sock.settimeout(0.5)
        try:
            while not self.phone.stopping.is_set():
                command, arg0, arg1, length, _crc, magic = _HEADER.unpack(self._recv_exact(_HEADER.size))
                if magic != command ^ 0xFFFFFFFF:
                    log.warning("bad packet magic from %s; dropping the connection", self.addr)
                    break
                if length > 16 * 1024 * 1024:
                    log.warning("oversized packet (%d bytes) from %s; dropping the connection", length, self.addr)
                    break
                data = self._recv_exact(length) if length else b""
                self._handle(command, arg0, arg1, data)
        except _ConnectionClosed:
            pass
        except Exception:  # a bug here must not kill the whole phone
            log.exception("simulated adbd connection %s failed", self.addr)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        with self._streams_lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for s in streams:
            s.on_close()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- packet handling -----------------------------------------------------------------------------------------
    def _handle(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        state = self.phone.state
        log.debug("<- %s %#x %#x %d bytes", _COMMAND_NAMES.get(command, hex(command)), arg0, arg1, len(data))
        if state == "offline":
            return  # a phone whose adbd never completes the handshake: the host shows it as offline
        if command == A_CNXN:
            self.version = min(arg0, A_VERSION_SKIP_CHECKSUM) if arg0 >= A_VERSION_MIN else A_VERSION_MIN
            self.max_payload = max(MAX_PAYLOAD_V1, min(arg1 or MAX_PAYLOAD_V1, MAX_PAYLOAD))
            if state == "unauthorized":
                self.send(A_AUTH, AUTH_TOKEN, 0, os.urandom(20))
                return
            self.online = True
            self.send(A_CNXN, self.version, MAX_PAYLOAD, self.phone.banner().encode())
            return
        if command == A_AUTH:
            if state == "unauthorized" and arg0 == AUTH_SIGNATURE:
                self.send(A_AUTH, AUTH_TOKEN, 0, os.urandom(20))  # no key is ever accepted
            # AUTH_RSAPUBLICKEY: the phone "shows the dialog" and nobody answers it.
            return
        if not self.online:
            return
        if command == A_OPEN:
            self._open(arg0, data)
        elif command == A_WRTE:
            stream = self._streams.get(arg1)
            if stream is None:
                self.send(A_CLSE, 0, arg0)
            else:
                stream.on_write(data)
        elif command == A_OKAY:
            stream = self._streams.get(arg1)
            if stream is not None:
                if stream.remote_id == 0:
                    stream.remote_id = arg0
                stream.on_okay()
        elif command == A_CLSE:
            with self._streams_lock:
                stream = self._streams.pop(arg1, None)
            if stream is not None:
                stream.on_close()
        # SYNC / STLS and unknown packets are ignored, as old adbd does.

    def _open(self, remote_id: int, data: bytes) -> None:
        service = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        handler = self.phone.service_handler(service)
        if handler is None:
            log.info("refusing unsupported service %r", service)
            self.send(A_CLSE, 0, remote_id)
            return
        with self._streams_lock:
            local_id = self._next_id
            self._next_id += 1
            stream = _Stream(self, local_id, remote_id, service)
            self._streams[local_id] = stream
        self.send(A_OKAY, local_id, remote_id)
        t = threading.Thread(target=self._serve, args=(handler, stream), name=f"adbd-svc-{service[:20]}", daemon=True)
        self.phone.track_thread(t)
        t.start()

    def _serve(self, handler: Any, stream: _Stream) -> None:
        try:
            handler(stream)
        except _ConnectionClosed:
            pass
        except Exception:
            log.exception("service %r failed", stream.service)
        finally:
            stream.close()


# --------------------------------------------------------------------------------------------------------------------
# The phone
# --------------------------------------------------------------------------------------------------------------------

# device path prefix -> (folder under root, writable, exec allowed)
_MOUNTS: list[tuple[str, str, bool, bool]] = [
    ("/data/local/tmp", "data/local/tmp", True, True),
    ("/storage/emulated/0", "sdcard", True, False),
    ("/sdcard", "sdcard", True, False),
    ("/sys/devices/system/cpu", "sys/devices/system/cpu", False, False),
    ("/sys/class/thermal", "sys/class/thermal", False, False),
    ("/proc/meminfo", "proc/meminfo", False, False),
    ("/proc/cpuinfo", "proc/cpuinfo", False, False),
    ("/system/bin", "system/bin", False, True),
]
_PATH_CHARS = r"\w.\-"


class SimulatedPhone:
    """A loopback adb device. Use as a context manager, or call `start()` / `stop()`.

    port: 0 picks a free port (read `.port` / `.serial` after start). state: "device", "unauthorized" (answers
    CNXN with an AUTH challenge that no key satisfies) or "offline" (accepts TCP, never answers). root: the folder
    standing in for the phone's `/` (a temporary folder, removed on stop, when not given). shell_v2: advertise the
    `shell_v2` feature (without it adb loses exit codes and merges stderr, as on old phones).
    storage_free_bytes: free space of /data, so pushes past it fail with "No space left on device".
    """

    def __init__(
        self,
        port: int = 0,
        profile: DeviceProfile | None = None,
        state: str = "device",
        root: str | os.PathLike[str] | None = None,
        shell_v2: bool = True,
        storage_free_bytes: int | None = None,
        host: str = "127.0.0.1",
    ):
        if state not in STATES:
            raise BadInputError(f"unknown device state {state!r}; use one of {', '.join(STATES)}")
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise BadInputError("the simulated phone listens on loopback only (127.0.0.1)")
        if not 0 <= int(port) <= 65535:
            raise BadInputError(f"port {port} is out of range 0..65535")
        self.requested_port = int(port)
        self.profile = profile or DeviceProfile()
        self.state = state
        self.shell_v2 = shell_v2
        self.storage_free_bytes = storage_free_bytes
        self.host = "127.0.0.1" if host == "localhost" else host
        self._own_root = root is None
        self._root_arg = Path(root) if root is not None else None
        self.root: Path | None = None
        self.port: int = 0
        self.stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._connections: list[_Connection] = []
        self._threads: list[threading.Thread] = []
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._used_at_start = 0
        self._started = False

    # ---- lifecycle -------------------------------------------------------------------------------------------
    @property
    def serial(self) -> str:
        """The serial adb gives this phone after `adb connect` (host:port)."""
        return f"{self.host}:{self.port}"

    @property
    def sandbox(self) -> Path:
        """The folder standing in for /data/local/tmp."""
        assert self.root is not None, "start() the phone first"
        return self.root / "data" / "local" / "tmp"

    def start(self) -> SimulatedPhone:
        if self._started:
            return self
        if self._own_root:
            self.root = Path(tempfile.mkdtemp(prefix="mi2v-phone-"))
        else:
            assert self._root_arg is not None
            self._root_arg.mkdir(parents=True, exist_ok=True)
            self.root = self._root_arg
        self.root = self.root.resolve()
        if shlex.quote(str(self.root)) != str(self.root):
            self._cleanup_root()
            raise BadInputError(
                f"the simulated phone's root folder {self.root} contains spaces or shell characters: "
                "choose a plain path for --root"
            )
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.requested_port))
        except OSError as exc:
            sock.close()
            self._cleanup_root()
            raise DeviceError(
                f"cannot listen on {self.host}:{self.requested_port} for the simulated phone ({exc.strerror}); "
                "pick another --port or 0 for a free one"
            ) from None
        sock.listen(8)
        sock.settimeout(0.5)
        self._listener = sock
        self.port = sock.getsockname()[1]
        _FileSystem(self).build()
        self._used_at_start = self._usage()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="adbd-accept", daemon=True)
        self._accept_thread.start()
        self._started = True
        log.info("simulated phone %s (%s) listening, root %s", self.serial, self.state, self.root)
        return self

    def stop(self) -> None:
        """Stop listening, drop the adb server's connections, kill what the shell still runs, remove a temp root."""
        if not self._started:
            return
        self.stopping.set()
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
        with self._lock:
            conns = list(self._connections)
            procs = list(self._procs)
        for c in conns:
            c.shutdown()
        for p in procs:
            _kill_group(p)
        for t in [self._accept_thread, *[c.thread for c in conns], *self._threads]:
            if t is not None and t.is_alive() and t is not threading.current_thread():
                t.join(timeout=5)
        self._cleanup_root()
        self._started = False

    def _cleanup_root(self) -> None:
        if self._own_root and self.root is not None and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SimulatedPhone:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Block until stop() (from another thread or a signal handler)."""
        while not self.stopping.wait(0.5):
            pass

    def track_thread(self, t: threading.Thread) -> None:
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self.stopping.is_set():
            try:
                sock, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock, addr)
            with self._lock:
                self._connections = [c for c in self._connections if c.thread.is_alive()]
                self._connections.append(conn)
            conn.thread.start()

    # ---- identity --------------------------------------------------------------------------------------------
    def features(self) -> list[str]:
        feats = ["fixed_push_mkdir"]
        if self.shell_v2:
            feats.insert(0, "shell_v2")
        return feats

    def banner(self) -> str:
        p = self.profile
        return (
            f"device::ro.product.name={p.name};ro.product.model={p.model};ro.product.device={p.device};"
            f"features={','.join(self.features())}"
        )

    def props(self) -> dict[str, str]:
        return self.profile.props(self.serial)

    # ---- services --------------------------------------------------------------------------------------------
    def service_handler(self, service: str) -> Any:
        name, _, rest = service.partition(":")
        if name == "sync" and rest == "":
            return _SyncSession(self).serve
        if name == "exec":
            return lambda s: _ShellSession(self).serve(s, rest, v2=False, merge_stderr=False)
        if name.split(",")[0] == "shell":
            args = name.split(",")[1:]
            return lambda s: _ShellSession(self).serve(s, rest, v2="v2" in args, merge_stderr=True)
        return None

    # ---- filesystem ------------------------------------------------------------------------------------------
    def _usage(self) -> int:
        total = 0
        for sub in ("data", "sdcard"):
            base = self.root / sub if self.root else None
            if base is None or not base.exists():
                continue
            for dirpath, _dirs, files in os.walk(base):
                for f in files:
                    try:
                        total += os.lstat(os.path.join(dirpath, f)).st_size
                    except OSError:
                        pass
        return total

    def free_bytes(self) -> int | None:
        if self.storage_free_bytes is None:
            return None
        return self.storage_free_bytes - max(0, self._usage() - self._used_at_start)

    def resolve(self, remote: str, write: bool = False) -> tuple[Path | None, str]:
        """Map a device path to a host path. Returns (path, "") or (None, errno-style reason)."""
        root = self.root
        assert root is not None
        if not remote.startswith("/"):
            remote = "/" + remote  # adbd's sync paths are absolute; relative ones are relative to /
        norm = posixpath.normpath(remote)
        if norm.startswith("//"):
            norm = "/" + norm.lstrip("/")
        for prefix, sub, writable, _exec in _MOUNTS:
            if norm == prefix or norm.startswith(prefix + "/"):
                if write and not writable:
                    return None, "Read-only file system"
                base = (root / sub).resolve()
                host = root / sub / norm[len(prefix):].lstrip("/") if norm != prefix else root / sub
                # refuse symlink escapes: the existing part of the path must stay inside the mount
                probe = host if host.exists() or not write else host.parent
                try:
                    real = probe.resolve()
                except OSError:
                    return None, "No such file or directory"
                if real != base and base not in real.parents:
                    return None, "Permission denied"
                return host, ""
        if write and norm.split("/")[1] in ("system", "vendor", "product", "odm", "apex"):
            return None, "Read-only file system"
        return None, ("Permission denied" if write else "No such file or directory")

    def _virtual_dir(self, remote: str) -> bool:
        norm = posixpath.normpath("/" + remote.lstrip("/"))
        return norm == "/" or any(prefix.startswith(norm.rstrip("/") + "/") for prefix, *_ in _MOUNTS)

    # ---- device paths in shell commands ----------------------------------------------------------------------
    def _path_maps(self) -> tuple[re.Pattern[str], dict[str, str]]:
        root = self.root
        assert root is not None
        forward = {prefix: str(root / sub) for prefix, sub, _, _ in _MOUNTS}
        alternatives = "|".join(re.escape(p) for p in sorted(forward, key=len, reverse=True))
        pattern = re.compile(rf"(?<![{_PATH_CHARS}/])({alternatives})(?![{_PATH_CHARS}])")
        return pattern, forward

    def to_host_command(self, command: str) -> str:
        """Rewrite the device paths in a shell command to their folders under root."""
        pattern, forward = self._path_maps()
        return pattern.sub(lambda m: forward[m.group(1)], command)


class _SyncSession:
    """adb's sync protocol on one stream (STAT, LIST, SEND, RECV, QUIT), confined to the phone's folders."""

    def __init__(self, phone: SimulatedPhone):
        self.phone = phone

    def serve(self, s: _Stream) -> None:
        while True:
            header = s.read_exact(8)
            ident, length = header[:4], struct.unpack("<I", header[4:])[0]
            if ident == b"QUIT":
                return
            if ident in (b"STAT", b"LIST", b"SEND", b"RECV"):
                if length > 1024:
                    self._sync_fail(s, "path too long")
                    return
                arg = s.read_exact(length).decode("utf-8", "surrogateescape")
                if ident == b"STAT":
                    s.write(self._sync_stat(arg))
                elif ident == b"LIST":
                    self._sync_list(s, arg)
                elif ident == b"SEND":
                    if not self._sync_send(s, arg):
                        return
                else:
                    if not self._sync_recv(s, arg):
                        return
            else:
                self._sync_fail(s, f"unknown sync command {ident!r}")
                return

    @staticmethod
    def _sync_fail(s: _Stream, message: str) -> None:
        data = message.encode()
        s.write(b"FAIL" + struct.pack("<I", len(data)) + data)

    def _stat_tuple(self, remote: str) -> tuple[int, int, int]:
        host, _ = self.phone.resolve(remote)
        if host is not None:
            try:
                st = os.stat(host)
                return st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime)
            except OSError:
                return 0, 0, 0
        if self.phone._virtual_dir(remote):
            return stat_mod.S_IFDIR | 0o771, 4096, int(time.time())
        return 0, 0, 0

    def _sync_stat(self, remote: str) -> bytes:
        mode, size, mtime = self._stat_tuple(remote)
        return b"STAT" + struct.pack("<III", mode, size, mtime)

    def _sync_list(self, s: _Stream, remote: str) -> None:
        host, _ = self.phone.resolve(remote)
        entries: list[tuple[str, int, int, int]] = []
        if host is not None and host.is_dir():
            for name in sorted(os.listdir(host)):
                try:
                    st = os.lstat(host / name)
                except OSError:
                    continue
                entries.append((name, st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime)))
        elif host is None and self.phone._virtual_dir(remote):
            norm = posixpath.normpath("/" + remote.lstrip("/")).rstrip("/") + "/"
            names = sorted({p[len(norm):].split("/")[0] for p, *_ in _MOUNTS if p.startswith(norm)})
            entries = [(n, stat_mod.S_IFDIR | 0o771, 4096, int(time.time())) for n in names]
        out = bytearray()
        for name, mode, size, mtime in entries:
            raw = name.encode("utf-8", "surrogateescape")
            out += b"DENT" + struct.pack("<IIII", mode, size, mtime, len(raw)) + raw
        out += b"DONE" + struct.pack("<IIII", 0, 0, 0, 0)
        s.write(bytes(out))

    def _send_target(self, spec: str) -> tuple[Path | None, str, int]:
        """SEND's "path,mode": (the file to write or None, why not, the permissions it gets)."""
        remote, _, mode_text = spec.rpartition(",")
        if not remote:
            remote, mode_text = spec, "33188"
        try:
            mode = int(mode_text)
        except ValueError:
            mode = 0o100644
        host, reason = self.phone.resolve(remote, write=True)
        if host is not None and stat_mod.S_ISLNK(mode):
            host, reason = None, "Operation not permitted"  # symlinks could point out of the sandbox
        if host is not None and host.is_dir():
            host, reason = None, "Is a directory"
        allow_exec = any(
            posixpath.normpath("/" + remote.lstrip("/")).startswith(p) for p, _, _, ex in _MOUNTS if ex
        )
        perm = (mode & 0o777) or 0o644
        return host, reason, perm if allow_exec else perm & 0o666

    def _sync_send(self, s: _Stream, spec: str) -> bool:
        host, reason, perm = self._send_target(spec)
        failure = "" if host is not None else f"couldn't create file: {reason}"
        fh = None
        if host is not None:
            try:
                host.parent.mkdir(parents=True, exist_ok=True)
                fh = open(host, "wb")  # noqa: SIM115 - closed below on every path
            except OSError as exc:
                failure = f"couldn't create file: {exc.strerror}"
        try:
            failure, mtime = self._receive_data(s, fh, failure)
        finally:
            if fh is not None:
                fh.close()
        if mtime is None:
            return False
        if failure:
            if fh is not None and host is not None:
                try:
                    host.unlink()
                except OSError:
                    pass
            self._sync_fail(s, failure)
            return False  # adbd ends the sync session after a failed SEND
        assert host is not None
        try:
            os.chmod(host, perm)
            os.utime(host, (mtime, mtime))
        except OSError:
            pass
        s.write(b"OKAY" + struct.pack("<I", 0))
        return True

    def _receive_data(self, s: _Stream, fh: Any, failure: str) -> tuple[str, int | None]:
        """Consume DATA chunks until DONE (even after a failure, so the client reads a clean FAIL), writing them to
        fh while nothing failed. Returns (failure, DONE's mtime); mtime None: a protocol error was already sent."""
        free = self.phone.free_bytes()
        received = 0
        while True:
            header = s.read_exact(8)
            ident, length = header[:4], struct.unpack("<I", header[4:])[0]
            if ident == b"DONE":
                return failure, length
            if ident != b"DATA" or length > SYNC_DATA_MAX:
                self._sync_fail(s, failure or ("data chunk too large" if ident == b"DATA"
                                               else f"invalid data message {ident!r}"))
                return failure, None
            chunk = s.read_exact(length)
            received += length
            if fh is None or failure:
                continue
            if free is not None and received > free:
                failure = "write failed: No space left on device"
                continue
            try:
                fh.write(chunk)
            except OSError as exc:
                failure = f"write failed: {exc.strerror}"

    def _sync_recv(self, s: _Stream, remote: str) -> bool:
        host, reason = self.phone.resolve(remote)
        if host is None:
            self._sync_fail(s, f"open failed: {reason}")
            return False
        if not host.exists():
            self._sync_fail(s, "open failed: No such file or directory")
            return False
        if host.is_dir():
            self._sync_fail(s, "read failed: Is a directory")
            return False
        # Several DATA messages per WRTE: the host acknowledges each WRTE, so fewer packets is faster.
        batch = max(1, s.conn.max_payload // (SYNC_DATA_MAX + 8))
        try:
            with open(host, "rb") as fh:
                while True:
                    out = bytearray()
                    for _ in range(batch):
                        chunk = fh.read(SYNC_DATA_MAX)
                        if not chunk:
                            break
                        out += b"DATA" + struct.pack("<I", len(chunk)) + chunk
                    if not out:
                        break
                    if not s.write(bytes(out)):
                        return False
        except OSError as exc:
            self._sync_fail(s, f"read failed: {exc.strerror}")
            return False
        s.write(b"DONE" + struct.pack("<I", 0))
        return True


class _ShellSession:
    """One `shell:` / `exec:` stream: /bin/sh on this machine in the phone's root, device paths mapped both ways,
    shell v2 packets (separate stderr, exit code) when the host asked for them."""

    def __init__(self, phone: SimulatedPhone):
        self.phone = phone

    def _shell_env(self) -> dict[str, str]:
        root = self.phone.root
        assert root is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANDROID_", "ADB_"))}
        env.update(
            PATH=f"{root / 'system/bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            HOME=str(root),
            TMPDIR=str(self.phone.sandbox),
            ANDROID_DATA="/data",
            ANDROID_ROOT="/system",
            MI2V_SIMULATED_DEVICE="1",
            MI2V_DEVICE_ROOT=str(root),
            MI2V_DEVICE_SERIAL=self.phone.serial,
        )
        return env

    def serve(self, s: _Stream, command: str, v2: bool, merge_stderr: bool) -> None:
        root = self.phone.root
        assert root is not None
        argv = ["/bin/sh", "-c", self.phone.to_host_command(command)] if command.strip() else ["/bin/sh"]
        try:
            proc = subprocess.Popen(
                argv,
                cwd=root,
                env=self._shell_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if (merge_stderr and not v2) else subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            msg = f"/system/bin/sh: {exc.strerror}\n".encode()
            s.write(_shell_packet(SHELL_STDERR, msg) + _shell_packet(SHELL_EXIT, b"\x7f") if v2 else msg)
            return
        with self.phone._lock:
            self.phone._procs.add(proc)
        unmap = _Unmapper(self.phone)
        try:
            readers = []
            for pipe, ident in ((proc.stdout, SHELL_STDOUT), (proc.stderr, SHELL_STDERR)):
                if pipe is None:
                    continue
                t = threading.Thread(target=self._pump_out, args=(s, pipe, ident, v2, unmap.fork()), daemon=True)
                t.start()
                readers.append(t)
            stdin_thread = threading.Thread(target=self._pump_in, args=(s, proc, v2), daemon=True)
            stdin_thread.start()
            while True:
                try:
                    rc = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if s.closed.is_set() or self.phone.stopping.is_set():  # the host hung up: like SIGHUP on a phone
                        _kill_group(proc)
            for t in readers:
                t.join(timeout=10 if not s.closed.is_set() else 1)
            if v2 and not s.closed.is_set():
                code = rc if rc >= 0 else 128 - rc
                s.write(_shell_packet(SHELL_EXIT, bytes([code & 0xFF])))
        finally:
            _kill_group(proc)
            with self.phone._lock:
                self.phone._procs.discard(proc)

    @staticmethod
    def _pump_out(s: _Stream, pipe: Any, ident: int, v2: bool, unmap: _Unmapper) -> None:
        limit = max(1024, s.conn.max_payload - 5)
        try:
            while True:
                chunk = os.read(pipe.fileno(), limit)
                data = unmap.feed(chunk) if chunk else unmap.flush()
                if data and not s.write(_shell_packet(ident, data) if v2 else data):
                    break
                if not chunk:
                    break
        except OSError:
            pass
        finally:
            try:
                pipe.close()
            except OSError:
                pass

    @staticmethod
    def _pump_in(s: _Stream, proc: subprocess.Popen, v2: bool) -> None:
        stdin = proc.stdin
        assert stdin is not None
        buf = b""
        try:
            while proc.poll() is None:
                chunk = s.read()
                if chunk is None:
                    break
                if not v2:
                    stdin.write(chunk)
                    stdin.flush()
                    continue
                buf += chunk
                while len(buf) >= 5:
                    ident, length = buf[0], struct.unpack("<I", buf[1:5])[0]
                    if len(buf) < 5 + length:
                        break
                    payload, buf = buf[5:5 + length], buf[5 + length:]
                    if ident == SHELL_STDIN:
                        stdin.write(payload)
                        stdin.flush()
                    elif ident == SHELL_CLOSE_STDIN:
                        stdin.close()
                        return
        except (OSError, ValueError):
            pass
        finally:
            try:
                stdin.close()
            except OSError:
                pass


class _FileSystem:
    """The phone's generated, read-only files: cpufreq, thermal zones, /proc, properties and the device tools."""

    def __init__(self, phone: SimulatedPhone):
        self.phone = phone

    def build(self) -> None:
        root = self.phone.root
        assert root is not None
        p = self.phone.profile
        for _, sub, _, _ in _MOUNTS:
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
        (meta / "battery.txt").write_text(_dumpsys_battery(p.battery))
        (meta / "thermalservice.txt").write_text(_dumpsys_thermal(p))
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
            for runner in (EXECUTOR_RUNNER, ORT_PERF_TEST):
                write_host_runner(runner, bin_dir)
        (root / ".mi2v" / "toybox_time.py").write_text(_TOYBOX_TIME)


class _Unmapper:
    """Rewrites host folders back to device paths in streamed output, holding back partial matches."""

    def __init__(self, phone: SimulatedPhone):
        root = str(phone.root)
        self._pairs = sorted(
            [(str(phone.root / sub).encode(), prefix.encode()) for prefix, sub, _, _ in _MOUNTS]
            + [((root + "/").encode(), b"/"), (root.encode(), b"/")],
            key=lambda p: len(p[0]),
            reverse=True,
        )
        self._carry = b""

    def fork(self) -> _Unmapper:
        new = object.__new__(_Unmapper)
        new._pairs = self._pairs
        new._carry = b""
        return new

    def _replace(self, data: bytes) -> bytes:
        for host, dev in self._pairs:
            if host in data:
                data = data.replace(host, dev)
        return data

    def feed(self, chunk: bytes) -> bytes:
        data = self._carry + chunk
        hold = 0
        longest = max(len(h) for h, _ in self._pairs)
        for k in range(min(len(data), longest - 1), 0, -1):
            tail = data[-k:]
            if any(h.startswith(tail) for h, _ in self._pairs):
                hold = k
                break
        self._carry = data[len(data) - hold:] if hold else b""
        return self._replace(data[: len(data) - hold])

    def flush(self) -> bytes:
        data, self._carry = self._carry, b""
        return self._replace(data)


def _shell_packet(ident: int, data: bytes) -> bytes:
    return bytes([ident]) + struct.pack("<I", len(data)) + data


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _dumpsys_battery(b: Battery) -> str:
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


def _dumpsys_thermal(p: DeviceProfile) -> str:
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


_TOYBOX_TIME = r'''"""toybox `time [-pv] CMD...` for the simulated phone: same output as toys/posix/time.c."""
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
