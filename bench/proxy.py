"""A TCP proxy on loopback that counts the bytes the object server sends and can inject faults (tests, B9)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Faults:
    """What the proxy does to the next responses: drop a connection after some bytes, stall, or go down."""

    drop_after: int | None = None  # bytes of one response before its connection is cut (once)
    stall_after: int | None = None  # bytes of one response before it stalls (once)
    stall_seconds: float = 15.0
    down_after: int | None = None  # bytes of one response before the server goes away (cut, then refused)


@dataclass
class CountingProxy:
    """Forwards 127.0.0.1:<port> to the upstream port, counting bytes upstream -> client."""

    upstream: int
    faults: Faults = field(default_factory=Faults)
    received: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self.port = 0
        self.listen_again()

    def listen_again(self) -> None:
        """Accept connections (again, after `close`) on the proxy's port: a server back after an outage."""
        self._server = socket.create_server(("127.0.0.1", self.port))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self.received = 0

    def close(self) -> None:
        """Refuse connections from now on. The listener is shut down before it is closed: a thread blocked in
        `accept` keeps a merely closed socket listening (Linux), and would take one more connection."""
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:  # the server is down: the client sees its connection closed
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if counted:
                    sent += len(data)
                    if self._fault("drop_after", sent):
                        break
                    if self._fault("down_after", sent):
                        self.close()
                        break
                    if self._fault("stall_after", sent):
                        time.sleep(self.faults.stall_seconds)
                    with self._lock:
                        self.received += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def _fault(self, name: str, sent: int) -> bool:
        """True once when a response passes the fault's byte count (the fault is then cleared)."""
        with self._lock:
            limit = getattr(self.faults, name)
            if limit is not None and sent >= limit:
                setattr(self.faults, name, None)
                return True
        return False
