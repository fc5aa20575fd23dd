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
and run; it answers `ro.mi2v.simulated=1`, which the bench report records (`devices.android_session.device_facts`).
When it reports this machine's ABI, the host stand-ins of `executor_runner` and `onnxruntime_perf_test`
(`host_runners`) are on its PATH (`/system/bin`), as runners installed on a phone would be.

Filesystem: the phone's `/` is a folder (`root`); `/data/local/tmp` (and `/sdcard`) are writable folders under it,
the fake `/sys/devices/system/cpu`, `/sys/class/thermal`, `/proc/meminfo`, `/proc/cpuinfo` and the device tools in
`/system/bin` (`getprop`, `dumpsys`, `logcat`, `toybox`) are generated read-only from the profile. Sync transfers
are confined to those folders (normalised paths, symlinks resolved, anything else is "Permission denied" /
"does not exist"). Shell commands run as the current host user with `/bin/sh` in the root folder, with the device
paths above rewritten to their folders and the folders written back as device paths in the output. The shell is a
stand-in, not a security boundary: it listens on 127.0.0.1 only and runs what a local user could run anyway.

The parts: simulator/profile.py (what the phone says about itself), wire.py (adb's transport and streams),
sync.py and shell.py (the services), device_files.py (the folders and the generated files); this module is the
phone that ties them together (listening, lifecycle, services, device paths).
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..errors import BadInputError, DeviceError
from .device_files import MOUNTS, DeviceFiles
from .profile import SIMULATOR_VERSION, Battery, CpuCore, DeviceProfile, ThermalZone, host_abi
from .shell import ShellSession, kill_group
from .sync import SyncSession
from .wire import Connection

log = logging.getLogger("mi2v.simulate")

STATES = ("device", "unauthorized", "offline")
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
        self._connections: list[Connection] = []
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
        DeviceFiles(self).build()
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
            kill_group(p)
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
            conn = Connection(self, sock, addr)
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
            return SyncSession(self).serve
        if name == "exec":
            return lambda s: ShellSession(self).serve(s, rest, v2=False, merge_stderr=False)
        if name.split(",")[0] == "shell":
            args = name.split(",")[1:]
            return lambda s: ShellSession(self).serve(s, rest, v2="v2" in args, merge_stderr=True)
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
        for prefix, sub, writable, _exec in MOUNTS:
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
        return norm == "/" or any(prefix.startswith(norm.rstrip("/") + "/") for prefix, *_ in MOUNTS)

    # ---- device paths in shell commands ----------------------------------------------------------------------
    def _path_maps(self) -> tuple[re.Pattern[str], dict[str, str]]:
        root = self.root
        assert root is not None
        forward = {prefix: str(root / sub) for prefix, sub, _, _ in MOUNTS}
        alternatives = "|".join(re.escape(p) for p in sorted(forward, key=len, reverse=True))
        pattern = re.compile(rf"(?<![{_PATH_CHARS}/])({alternatives})(?![{_PATH_CHARS}])")
        return pattern, forward

    def to_host_command(self, command: str) -> str:
        """Rewrite the device paths in a shell command to their folders under root."""
        pattern, forward = self._path_maps()
        return pattern.sub(lambda m: forward[m.group(1)], command)


# the profile's names, imported from here by simulator/cli.py and the tests
__all__ = ["SIMULATOR_VERSION", "STATES", "Battery", "CpuCore", "DeviceProfile", "SimulatedPhone", "ThermalZone",
           "host_abi"]
