"""adb's device-side wire protocol for the simulated phone: one transport per adb server connection (CNXN / AUTH /
OPEN / OKAY / WRTE / CLSE packets, checksums for old clients, the `unauthorized` and `offline` states), and the
streams (the services a host OPENs) it multiplexes, each served on its own thread.

A connection asks its phone (simulator/phone.py `SimulatedPhone`) for its state, banner and service handlers; the
handlers are simulator/sync.py and simulator/shell.py.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import struct
import threading
import time
from typing import Any

log = logging.getLogger("mi2v.simulate")

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

HEADER = struct.Struct("<6I")

COMMAND_NAMES = {A_SYNC: "SYNC", A_CNXN: "CNXN", A_OPEN: "OPEN", A_OKAY: "OKAY", A_CLSE: "CLSE",
                  A_WRTE: "WRTE", A_AUTH: "AUTH", A_STLS: "STLS"}


class ConnectionClosed(Exception):
    pass


def pack_packet(command: int, arg0: int, arg1: int, data: bytes, checksum: bool) -> bytes:
    crc = (sum(data) & 0xFFFFFFFF) if checksum else 0
    return HEADER.pack(command, arg0, arg1, len(data), crc, command ^ 0xFFFFFFFF) + data


class Stream:
    """One adb socket (an OPENed service) on a connection: device-side end."""

    def __init__(self, conn: Connection, local_id: int, remote_id: int, service: str):
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
                raise ConnectionClosed()
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


class Connection:
    """One transport (the adb server's TCP connection to this phone)."""

    def __init__(self, phone: Any, sock: socket.socket, addr: Any):
        """phone: the SimulatedPhone this transport belongs to."""
        self.phone = phone
        self.sock = sock
        self.addr = addr
        self.version = A_VERSION_MIN
        self.max_payload = MAX_PAYLOAD_V1
        self._send_lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._streams_lock = threading.Lock()
        self._next_id = 1
        self.online = False
        self.thread = threading.Thread(target=self._run, name=f"adbd-conn-{addr}", daemon=True)

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        packet = pack_packet(command, arg0, arg1, data, self.version < A_VERSION_SKIP_CHECKSUM)
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
                    raise ConnectionClosed() from None
                continue
            except OSError:
                raise ConnectionClosed() from None
            if not chunk:
                raise ConnectionClosed()
            buf += chunk
        return bytes(buf)

    def _run(self) -> None:
        self.sock.settimeout(0.5)
        try:
            while not self.phone.stopping.is_set():
                command, arg0, arg1, length, _crc, magic = HEADER.unpack(self._recv_exact(HEADER.size))
                if magic != command ^ 0xFFFFFFFF:
                    log.warning("bad packet magic from %s; dropping the connection", self.addr)
                    break
                if length > 16 * 1024 * 1024:
                    log.warning("oversized packet (%d bytes) from %s; dropping the connection", length, self.addr)
                    break
                data = self._recv_exact(length) if length else b""
                self._handle(command, arg0, arg1, data)
        except ConnectionClosed:
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
        log.debug("<- %s %#x %#x %d bytes", COMMAND_NAMES.get(command, hex(command)), arg0, arg1, len(data))
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
            stream = Stream(self, local_id, remote_id, service)
            self._streams[local_id] = stream
        self.send(A_OKAY, local_id, remote_id)
        t = threading.Thread(target=self._serve, args=(handler, stream), name=f"adbd-svc-{service[:20]}", daemon=True)
        self.phone.track_thread(t)
        t.start()

    def _serve(self, handler: Any, stream: Stream) -> None:
        try:
            handler(stream)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("service %r failed", stream.service)
        finally:
            stream.close()
