"""A small wrapper around the real `adb` binary.

Every call is an argv list (never a host shell), carries a timeout, names the device with `-s SERIAL`, and can
target a private adb server with `-P PORT`. Remote commands are one string whose tokens are `shlex.quote`d, because
adb joins its arguments with spaces and the device shell splits them again. When the device lacks the `shell_v2`
feature (old phones), adb loses the exit status, so the command is wrapped with an exit-code marker.

Failures become `DeviceError` with one line naming the cause and the fix.

    adb = Adb()                               # $MI2V_ADB, $ADB, PATH, then the adbutils wheel's bundled adb
    dev = adb.pick_device(None)               # the only attached device, or a clear error
    rc, out, err = dev.shell(["ls", "-l", "/data/local/tmp"])
    dev.push("model.pte", "/data/local/tmp/mi2v/model.pte")
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..errors import DeviceError

DEFAULT_TIMEOUT = 30.0
TRANSFER_TIMEOUT = 600.0
RC_MARKER = "__MI2V_RC="
_RC_RE = re.compile(re.escape(RC_MARKER) + r"(\d+)\r?\n?$")

ADB_INSTALL_HINT = (
    "install Android platform-tools (or the `adb` package), set $ADB to the adb binary, "
    "or `pip install adbutils==2.12.0`, whose wheel bundles adb"
)


# --------------------------------------------------------------------------------------------------------------------
# finding the binary
# --------------------------------------------------------------------------------------------------------------------


def bundled_adb() -> str | None:
    """The adb binary shipped inside the adbutils wheel, if adbutils is installed (without importing it)."""
    try:
        spec = importlib.util.find_spec("adbutils")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    exe = Path(spec.origin).parent / "binaries" / ("adb.exe" if os.name == "nt" else "adb")
    return str(exe) if exe.is_file() and os.access(exe, os.X_OK) else None


def find_adb(explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> str:
    """Resolve the adb binary: explicit path, then $MI2V_ADB / $ADB, then `adb` on PATH, then adbutils' bundled adb."""
    env = os.environ if env is None else env
    if explicit:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise DeviceError(f"adb binary {explicit} does not exist or is not executable: point --adb at adb")
        return str(path)
    for var in ("MI2V_ADB", "ADB"):
        value = env.get(var)
        if value:
            path = Path(value).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise DeviceError(f"${var}={value} is not an executable adb binary: fix or unset ${var}")
            return str(path)
    on_path = shutil.which("adb", path=env.get("PATH"))
    if on_path:
        return on_path
    bundled = bundled_adb()
    if bundled:
        return bundled
    raise DeviceError(f"adb was not found: {ADB_INSTALL_HINT}")


def quote(args: str | Sequence[str]) -> str:
    """One remote command string: a string is passed as is (it is already device shell), a list is quoted."""
    if isinstance(args, str):
        return args
    return " ".join(shlex.quote(str(a)) for a in args)


# --------------------------------------------------------------------------------------------------------------------
# results and error mapping
# --------------------------------------------------------------------------------------------------------------------


class AdbTimeout(DeviceError):
    """An adb call that did not finish within its timeout (the adb client was killed)."""

    def __init__(self, message: str, limit: float):
        super().__init__(message)
        self.limit = limit


class ShellResult(NamedTuple):
    rc: int
    out: str
    err: str


@dataclass(frozen=True)
class DeviceInfo:
    """One line of `adb devices -l`."""

    serial: str
    state: str
    details: dict[str, str] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.details.get("model", "")

    @property
    def ready(self) -> bool:
        return self.state == "device"


def parse_devices(text: str) -> list[DeviceInfo]:
    """Parse `adb devices [-l]` (states may contain spaces: "no permissions (...)")."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*", "adb server", "adb: ")):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        serial, rest = parts[0], parts[1:]
        details: dict[str, str] = {}
        while rest and re.fullmatch(r"(usb|product|model|device|transport_id|features):\S*", rest[-1]):
            key, _, value = rest.pop().partition(":")
            details[key] = value
        out.append(DeviceInfo(serial, " ".join(rest), dict(reversed(list(details.items())))))
    return out


def _clean_stderr(err: str) -> str:
    return "\n".join(ln for ln in err.splitlines() if ln.strip() and not ln.startswith("* "))


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def state_error(serial: str, state: str) -> DeviceError:
    """The error for a device adb lists in a state other than `device`."""
    if state == "unauthorized":
        return DeviceError(
            f"device {serial} is unauthorized: unlock the phone and accept the 'Allow USB debugging?' dialog "
            "(if none appears, revoke USB debugging authorisations on the phone, then `adb kill-server` and reconnect)"
        )
    if state == "offline":
        return DeviceError(
            f"device {serial} is offline: reconnect the cable or run `adb reconnect` "
            f"(for a network device: `adb disconnect {serial}` then `adb connect {serial}`)"
        )
    if state.startswith("no permissions"):
        return DeviceError(
            f"no permission to open USB device {serial}: add a udev rule for the phone (and join the plugdev group), "
            "then unplug and replug it"
        )
    if state in ("authorizing", "connecting"):
        return DeviceError(
            f"device {serial} is still {state}: wait a few seconds (answer the dialog on the phone) and retry"
        )
    return DeviceError(f"device {serial} is in state '{state}', not 'device': boot it into Android and retry")


def no_device_error() -> DeviceError:
    return DeviceError(
        "no Android device is connected: plug in a phone with USB debugging on (or `adb connect HOST:PORT`; "
        "`mi2v devices simulate` starts a simulated one), then check `mi2v devices list`"
    )


def map_adb_error(err: str, serial: str | None, available: Sequence[str] = ()) -> DeviceError | None:
    """Turn adb's own error text (not the remote command's) into a DeviceError, or None if it is not one."""
    text = _clean_stderr(err)
    low = text.lower()
    who = serial or "the device"
    if "no devices/emulators found" in low:
        return no_device_error()
    if "more than one device" in low:
        names = f" ({', '.join(available)})" if available else ""
        return DeviceError(f"several devices are connected{names}: choose one with --device adb:SERIAL")
    m = re.search(r"device '([^']*)' not found", text)
    if m:
        return DeviceError(
            f"device {m.group(1)} is not known to adb: check the serial with `mi2v devices list` "
            f"(for a network device run `adb connect {m.group(1)}` first)"
        )
    if re.search(r"(^|\s|:)device unauthorized", low):
        return state_error(who, "unauthorized")
    if re.search(r"(^|\s|:)device offline", low):
        return state_error(who, "offline")
    if "no permissions" in low and "udev" in low:
        return state_error(who, "no permissions")
    if "cannot connect to daemon" in low or "failed to start daemon" in low or "cannot bind" in low:
        return DeviceError(
            f"the adb server could not be started or reached ({_last_line(text)}): another adb version may own the "
            "port; run `adb kill-server` with the same adb and retry"
        )
    if re.search(r"^(adb: )?error: closed$", low, re.M) or "protocol fault" in low:
        return DeviceError(
            f"{who} closed the adb connection ({_last_line(text)}): adbd restarted or the service is unavailable; "
            "reconnect the device and retry"
        )
    return None


# --------------------------------------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------------------------------------


class Adb:
    """The adb binary plus how to reach its server. `server_port` adds `-P PORT` (a private server),
    `server_host` adds `-H HOST` (an adb server on another machine, started there with `adb -a … server`)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        server_port: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
        server_host: str | None = None,
    ):
        self.env = dict(os.environ if env is None else env)
        self.path = find_adb(path, self.env)
        self.server_port = server_port
        self.server_host = server_host
        self.timeout = timeout

    def argv(self, args: Sequence[str], serial: str | None = None) -> list[str]:
        argv = [self.path]
        if self.server_host is not None:
            argv += ["-H", self.server_host]
        if self.server_port is not None:
            argv += ["-P", str(self.server_port)]
        if serial is not None:
            argv += ["-s", serial]
        return argv + [str(a) for a in args]

    def run(
        self,
        args: Sequence[str],
        serial: str | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run `adb [-P port] [-s serial] ARGS`; with check, a non-zero exit becomes a DeviceError."""
        argv = self.argv(args, serial)
        limit = self.timeout if timeout is None else timeout
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                env=self.env,
                timeout=limit,
            )
        except subprocess.TimeoutExpired:
            what = " ".join(args[:2]) + (" …" if len(args) > 2 else "")
            where = f" on {serial}" if serial else ""
            raise AdbTimeout(
                f"`adb {what}`{where} did not finish within {limit:.0f}s: the device may be hung or the command is "
                "slower than its timeout; check the phone (`mi2v devices list`) or raise the timeout",
                limit,
            ) from None
        except OSError as exc:
            raise DeviceError(f"cannot run adb at {self.path} ({exc.strerror}): {ADB_INSTALL_HINT}") from None
        if check and proc.returncode != 0:
            raise self.error_for(proc, serial, args)
        return proc

    def error_for(self, proc: subprocess.CompletedProcess[str], serial: str | None, args: Sequence[str]) -> DeviceError:
        mapped = map_adb_error(proc.stderr + "\n" + proc.stdout, serial)
        if mapped is not None:
            return mapped
        detail = _last_line(_clean_stderr(proc.stderr)) or _last_line(proc.stdout) or "no output"
        return DeviceError(f"`adb {' '.join(args[:2])}` failed (exit {proc.returncode}): {detail}")

    # ---- server-level commands -------------------------------------------------------------------------------
    def version(self) -> str:
        """e.g. "1.0.41 / 36.0.0-13206524"."""
        out = self.run(["version"]).stdout
        proto = re.search(r"Android Debug Bridge version (\S+)", out)
        ver = re.search(r"^Version (\S+)", out, re.M)
        return " / ".join(x.group(1) for x in (proto, ver) if x) or _last_line(out)

    def start_server(self) -> None:
        self.run(["start-server"])

    def kill_server(self) -> None:
        self.run(["kill-server"], check=False)

    def devices(self) -> list[DeviceInfo]:
        """Every device the server knows, with its state (device, unauthorized, offline, no permissions, …)."""
        return parse_devices(self.run(["devices", "-l"]).stdout)

    def connect(self, address: str, timeout: float = 15.0) -> DeviceInfo:
        """`adb connect HOST:PORT` (exits 0 even on failure, so its text and the device list are checked)."""
        try:
            out = self.run(["connect", address], timeout=timeout, check=False)
            text = (out.stdout + out.stderr).strip()
        except DeviceError:
            text = "timed out waiting for the handshake"
        known = {d.serial: d for d in self.devices()}
        if address in known:
            return known[address]
        raise DeviceError(
            f"adb could not connect to {address} ({_last_line(text) or 'no answer'}): check that the device (or "
            "`mi2v devices simulate`) listens there and that wireless debugging is on"
        )

    def disconnect(self, address: str) -> None:
        self.run(["disconnect", address], check=False)

    def device(self, serial: str) -> AdbDevice:
        """A handle on SERIAL without checking its state (see pick_device)."""
        return AdbDevice(self, serial)

    def pick_device(self, serial: str | None = None) -> AdbDevice:
        """The device to use: SERIAL (or $ANDROID_SERIAL), else the only one attached; clear errors otherwise."""
        serial = serial or self.env.get("ANDROID_SERIAL") or None
        devices = self.devices()
        if serial is not None:
            match = [d for d in devices if d.serial == serial]
            if not match:
                known = ", ".join(f"{d.serial} ({d.state})" for d in devices) or "none"
                hint = f"`adb connect {serial}` first, or " if ":" in serial else ""
                raise DeviceError(
                    f"device {serial} is not attached (adb sees: {known}): {hint}check the serial with "
                    "`mi2v devices list`"
                )
            info = match[0]
        else:
            if not devices:
                raise no_device_error()
            if len(devices) > 1:
                listing = ", ".join(f"{d.serial} ({d.state})" for d in devices)
                raise DeviceError(f"several devices are connected ({listing}): choose one with --device adb:SERIAL")
            info = devices[0]
        if info.state != "device":
            raise state_error(info.serial, info.state)
        return AdbDevice(self, info.serial, info)


class AdbDevice:
    """One device, addressed with `-s SERIAL` on every call."""

    def __init__(self, adb: Adb, serial: str, info: DeviceInfo | None = None):
        self.adb = adb
        self.serial = serial
        self.info = info
        self._features: frozenset[str] | None = None

    def __repr__(self) -> str:
        return f"AdbDevice({self.serial!r})"

    def run(
        self, args: Sequence[str], timeout: float | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.adb.run(args, serial=self.serial, timeout=timeout, check=check)

    # ---- capabilities ----------------------------------------------------------------------------------------
    def features(self) -> frozenset[str]:
        if self._features is None:
            out = self.run(["features"]).stdout
            self._features = frozenset(f.strip() for f in re.split(r"[\s,]+", out) if f.strip())
        return self._features

    @property
    def shell_v2(self) -> bool:
        return "shell_v2" in self.features()

    def get_state(self) -> str:
        proc = self.run(["get-state"], check=False)
        if proc.returncode == 0:
            return proc.stdout.strip()
        err = map_adb_error(proc.stderr, self.serial)
        raise err if err is not None else self.adb.error_for(proc, self.serial, ["get-state"])

    # ---- shell -----------------------------------------------------------------------------------------------
    def shell(
        self, command: str | Sequence[str], timeout: float | None = None, check: bool = False
    ) -> ShellResult:
        """Run a remote command; returns (rc, stdout, stderr). A list is quoted token by token; a string is sent
        as device shell text. Without shell_v2 the exit code comes from a marker and stderr is merged into stdout.
        adb's own failures (device gone, unauthorized, …) raise DeviceError; with check, so does rc != 0."""
        remote = quote(command)
        if not remote.strip():
            raise ValueError("empty remote command (adb would open an interactive shell)")
        v2 = self.shell_v2
        if not v2:
            # A subshell, so that `exit N` in the command still reaches the marker; "( " avoids "((" arithmetic.
            remote = f"( {remote}\n); echo {RC_MARKER}$?"
        proc = self.run(["shell", remote], timeout=timeout, check=False)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
        if v2:
            if rc != 0:
                mapped = _adb_level_failure(err, self.serial)
                if mapped is not None:
                    raise mapped
        else:
            m = _RC_RE.search(out)
            if m is None:
                mapped = map_adb_error(err + "\n" + out, self.serial)
                if mapped is not None:
                    raise mapped
                if rc == 0:
                    raise DeviceError(
                        f"the shell on {self.serial} ended before reporting an exit code (killed or disconnected): "
                        "check the device and retry"
                    )
            else:
                rc, out = int(m.group(1)), out[: m.start()]
        result = ShellResult(rc, out, err)
        if check and rc != 0:
            shown = remote if len(remote) <= 80 else remote[:77] + "..."
            detail = _last_line(err) or _last_line(out) or "no output"
            raise DeviceError(f"`{shown}` failed on {self.serial} with exit code {rc}: {detail}")
        return result

    def check_output(self, command: str | Sequence[str], timeout: float | None = None) -> str:
        return self.shell(command, timeout=timeout, check=True).out

    # ---- files -----------------------------------------------------------------------------------------------
    def push(self, local: str | os.PathLike[str], remote: str, timeout: float | None = TRANSFER_TIMEOUT,
             sync: bool = False) -> None:
        """`adb push LOCAL REMOTE` (with `--sync`, skip when the device copy is at least as new)."""
        local_path = Path(local)
        if not local_path.exists():
            raise DeviceError(f"cannot push {local}: the file does not exist on this machine")
        args = ["push", *(["--sync"] if sync else []), str(local_path), remote]
        proc = self.run(args, timeout=timeout, check=False)
        if proc.returncode == 0:
            return
        text = _clean_stderr(proc.stderr) + "\n" + proc.stdout
        mapped = map_adb_error(text, self.serial)
        if mapped is not None:
            raise mapped
        low = text.lower()
        if "no space left" in low:
            raise DeviceError(
                f"device {self.serial} ran out of storage while pushing {local_path.name} to {remote}: free space "
                f"(e.g. `adb -s {self.serial} shell rm -rf /data/local/tmp/mi2v`) and retry"
            )
        if "read-only file system" in low or "permission denied" in low:
            why = "read-only file system" if "read-only" in low else "permission denied"
            raise DeviceError(f"cannot write {remote} on {self.serial} ({why}): push under /data/local/tmp instead")
        raise DeviceError(
            f"adb push of {local_path.name} to {remote} on {self.serial} failed: {_last_line(text) or 'no output'}; "
            "check the cable/connection and free space, then retry"
        )

    def pull(self, remote: str, local: str | os.PathLike[str], timeout: float | None = TRANSFER_TIMEOUT) -> Path:
        """`adb pull REMOTE LOCAL`; returns the local path."""
        local_path = Path(local)
        proc = self.run(["pull", remote, str(local_path)], timeout=timeout, check=False)
        if proc.returncode == 0:
            return local_path
        text = _clean_stderr(proc.stderr) + "\n" + proc.stdout
        mapped = map_adb_error(text, self.serial)
        if mapped is not None:
            raise mapped
        if "does not exist" in text or "No such file" in text:
            raise DeviceError(
                f"{remote} does not exist on {self.serial}: the runner did not write it (see its log) "
                "or the path is wrong"
            )
        if "Permission denied" in text:
            raise DeviceError(
                f"cannot read {remote} on {self.serial} (permission denied): copy it under /data/local/tmp"
            )
        raise DeviceError(
            f"adb pull of {remote} from {self.serial} failed: {_last_line(text) or 'no output'}; "
            f"check the path and free space in {local_path.parent}"
        )

    def exists(self, remote: str) -> bool:
        return self.shell(["test", "-e", remote]).rc == 0

    def sha256(self, remote: str) -> str | None:
        """sha256 of a device file, or None when it does not exist."""
        rc, out, _ = self.shell(["sha256sum", remote])
        if rc != 0:
            return None
        token = out.split()[0] if out.split() else ""
        return token if re.fullmatch(r"[0-9a-f]{64}", token) else None

    def sha256_many(self, remotes: Sequence[str]) -> dict[str, str]:
        """sha256 of several device files in one round trip; missing files are left out."""
        if not remotes:
            return {}
        rc, out, _ = self.shell(quote(["sha256sum", *remotes]) + " 2>/dev/null")
        found = {}
        for line in out.splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2 and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
                found[parts[1].strip()] = parts[0]
        return found

    def mkdirs(self, remote: str) -> None:
        self.shell(["mkdir", "-p", remote], check=True)

    def remove(self, remote: str) -> None:
        self.shell(["rm", "-rf", remote], check=True)

    # ---- properties ------------------------------------------------------------------------------------------
    def getprop(self, key: str | None = None) -> str | dict[str, str]:
        """One property value ("" when unset), or all properties as a dict when key is None."""
        if key is not None:
            return self.shell(["getprop", key], check=True).out.strip()
        return parse_getprop(self.shell(["getprop"], check=True).out)


def parse_getprop(text: str) -> dict[str, str]:
    """Parse `getprop` output (`[key]: [value]`, values may span lines)."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^\[([^\]]*)\]: \[(.*?)\]\s*$", text, re.M | re.S)}


def _adb_level_failure(err: str, serial: str) -> DeviceError | None:
    """With shell_v2, rc != 0 is normally the remote command's; adb's own failures print `adb: …`/`error: …`."""
    first = _clean_stderr(err).strip().splitlines()[:1]
    pattern = r"^(adb: )?(error: )?(device|no devices|more than one|closed|protocol fault)"
    if not first or not re.match(pattern, first[0]):
        return None
    return map_adb_error(err, serial)
