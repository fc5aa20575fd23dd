"""`shell:` and `exec:` on the simulated phone: /bin/sh on this machine in the phone's root folder, device paths
mapped to their folders in the command and back in the output (`Unmapper`), and shell protocol v2 (separate stderr,
exit code) when the host asked for it. A stand-in, not a security boundary: it runs what a local user could."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import threading
from typing import Any

from .device_files import MOUNTS
from .wire import Stream

# shell protocol v2 packet ids
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN, SHELL_WINDOW = 0, 1, 2, 3, 4, 5


class ShellSession:
    """One `shell:` / `exec:` stream: /bin/sh on this machine in the phone's root, device paths mapped both ways,
    shell v2 packets (separate stderr, exit code) when the host asked for them."""

    def __init__(self, phone: Any):
        self.phone = phone  # the SimulatedPhone

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

    def serve(self, s: Stream, command: str, v2: bool, merge_stderr: bool) -> None:
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
            s.write(shell_packet(SHELL_STDERR, msg) + shell_packet(SHELL_EXIT, b"\x7f") if v2 else msg)
            return
        with self.phone._lock:
            self.phone._procs.add(proc)
        unmap = Unmapper(self.phone)
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
                        kill_group(proc)
            for t in readers:
                t.join(timeout=10 if not s.closed.is_set() else 1)
            if v2 and not s.closed.is_set():
                code = rc if rc >= 0 else 128 - rc
                s.write(shell_packet(SHELL_EXIT, bytes([code & 0xFF])))
        finally:
            kill_group(proc)
            with self.phone._lock:
                self.phone._procs.discard(proc)

    @staticmethod
    def _pump_out(s: Stream, pipe: Any, ident: int, v2: bool, unmap: Unmapper) -> None:
        limit = max(1024, s.conn.max_payload - 5)
        try:
            while True:
                chunk = os.read(pipe.fileno(), limit)
                data = unmap.feed(chunk) if chunk else unmap.flush()
                if data and not s.write(shell_packet(ident, data) if v2 else data):
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
    def _pump_in(s: Stream, proc: subprocess.Popen, v2: bool) -> None:
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


class Unmapper:
    """Rewrites host folders back to device paths in streamed output, holding back partial matches."""

    def __init__(self, phone: Any):
        root = str(phone.root)
        self._pairs = sorted(
            [(str(phone.root / sub).encode(), prefix.encode()) for prefix, sub, _, _ in MOUNTS]
            + [((root + "/").encode(), b"/"), (root.encode(), b"/")],
            key=lambda p: len(p[0]),
            reverse=True,
        )
        self._carry = b""

    def fork(self) -> Unmapper:
        new = object.__new__(Unmapper)
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


def shell_packet(ident: int, data: bytes) -> bytes:
    return bytes([ident]) + struct.pack("<I", len(data)) + data


def kill_group(proc: subprocess.Popen) -> None:
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
