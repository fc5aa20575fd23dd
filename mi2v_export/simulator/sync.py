"""adb's sync protocol on the simulated phone (STAT, LIST, SEND, RECV, QUIT), confined to the phone's folders
(`DEVICEMOUNTS`, simulator/device_files.py): pushes past its free space fail like a full phone's, symlinks and
writes outside the writable folders are refused."""

from __future__ import annotations

import os
import posixpath
import stat as stat_mod
import struct
import time
from pathlib import Path
from typing import Any

from .device_files import MOUNTS
from .wire import Stream

SYNC_DATA_MAX = 64 * 1024


class SyncSession:
    """adb's sync protocol on one stream (STAT, LIST, SEND, RECV, QUIT), confined to the phone's folders."""

    def __init__(self, phone: Any):
        self.phone = phone  # the SimulatedPhone

    def serve(self, s: Stream) -> None:
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
    def _sync_fail(s: Stream, message: str) -> None:
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

    def _sync_list(self, s: Stream, remote: str) -> None:
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
            names = sorted({p[len(norm):].split("/")[0] for p, *_ in MOUNTS if p.startswith(norm)})
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
            posixpath.normpath("/" + remote.lstrip("/")).startswith(p) for p, _, _, ex in MOUNTS if ex
        )
        perm = (mode & 0o777) or 0o644
        return host, reason, perm if allow_exec else perm & 0o666

    def _sync_send(self, s: Stream, spec: str) -> bool:
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

    def _receive_data(self, s: Stream, fh: Any, failure: str) -> tuple[str, int | None]:
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

    def _sync_recv(self, s: Stream, remote: str) -> bool:
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
