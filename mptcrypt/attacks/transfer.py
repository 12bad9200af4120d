"""The victim application: a long-lived MPTCP transfer client -> server (and a smaller one back), with known
plaintext, measured at both ends.

The client uploads numbered 512-byte records (`MPTC-UP-00000042: secret plaintext ...`), a few per tick, for
`duration` seconds; the server streams `MPTC-DN-...` records back meanwhile. Writes are paced (small writes, idle
gaps): that is a realistic interactive/streaming load, keeps both daemons and the sniffer far below their limits,
and gives an in-window attacker quiet moments in which the receiver's next sequence numbers are exactly known.

Each end hashes what it reads (sha256) and reports byte counts, how the stream ended (clean EOF, reset, timeout)
and how many attacker-inserted markers it contains. Sockets are IPPROTO_MPTCP sockets created in the hosts'
namespaces (`Node.socket`), run by threads of the calling process.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from dataclasses import dataclass, field

from mptcrypt.attacks.common import INJECT_MARK

RECORD = 512
FILLER = b" secret plaintext that only the two endpoints should read;" * 12


def record(kind: bytes, i: int) -> bytes:
    head = b"MPTC-%s-%08d:" % (kind, i)
    return (head + FILLER)[:RECORD - 1] + b"\n"


def stream(kind: bytes, n: int) -> bytes:
    return b"".join(record(kind, i) for i in range(n))


@dataclass
class Side:
    """What one end of one direction saw."""

    sent: int = 0
    received: int = 0
    sha256: str = ""
    error: str | None = None
    eof: bool = False
    done_t: float | None = None  # writer: when it finished (or failed)
    data: bytearray = field(default_factory=bytearray)


class Transfer:
    """Start with `start()`, collect with `result()` (waits for both ends)."""

    def __init__(
        self,
        net,
        port: int,
        server_addr: str = "10.0.1.1",
        duration: float = 4.0,
        tick: float = 0.02,
        up_per_tick: int = 2,
        down_per_tick: int = 2,
        idle_timeout: float = 4.0,
        client: str = "client",
        server: str = "server",
    ) -> None:
        self.net = net
        self.port = port
        self.server_addr = server_addr
        self.family = socket.AF_INET6 if ":" in server_addr else socket.AF_INET
        self.ticks = max(1, int(duration / tick))
        self.tick = tick
        self.up_per_tick = up_per_tick
        self.down_per_tick = down_per_tick
        self.idle_timeout = idle_timeout
        self.client_node = net[client]
        self.server_node = net[server]
        self.up_total = self.ticks * up_per_tick
        self.down_total = self.ticks * down_per_tick
        self.expected_up = stream(b"UP", self.up_total)
        self.expected_down = stream(b"DN", self.down_total)
        self.up_w, self.up_r = Side(), Side()  # client writer, server reader
        self.down_w, self.down_r = Side(), Side()  # server writer, client reader
        self.connect_error: str | None = None
        self.accept_error: str | None = None
        self.connected_at: float | None = None
        self.local_port: int | None = None
        self.threads: list[threading.Thread] = []
        self.listener: socket.socket | None = None
        self.csock: socket.socket | None = None
        self.ssock: socket.socket | None = None
        self._accepted = threading.Event()

    # --- running ------------------------------------------------------------------------------------
    def listen(self) -> None:
        self.listener = mptcp_listener(self.server_node, self.port, self.idle_timeout + 4, self.family)

    def start(self) -> None:
        if self.listener is None:
            self.listen()
        self._spawn(self._server)
        self._spawn(self._client)

    def _spawn(self, target) -> None:
        t = threading.Thread(target=target, daemon=True, name=f"mptc-attack-{target.__name__}")
        t.start()
        self.threads.append(t)

    def _server(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError as exc:
            self.accept_error = _err(exc)
            self._accepted.set()
            return
        self.ssock = conn
        conn.settimeout(self.idle_timeout)
        self._accepted.set()
        writer = threading.Thread(target=self._pace, args=(conn, self.expected_down, self.down_per_tick, self.down_w),
                                  daemon=True, name="mptc-attack-server-writer")
        writer.start()
        self._read(conn, self.up_r)
        writer.join(self.ticks * self.tick + self.idle_timeout + 5)

    def _client(self) -> None:
        sock = self.client_node.socket(self.family, socket.SOCK_STREAM, socket.IPPROTO_MPTCP)
        self.csock = sock
        sock.settimeout(self.idle_timeout)
        try:
            sock.connect((self.server_addr, self.port))
        except OSError as exc:
            self.connect_error = _err(exc)
            return
        self.connected_at = time.time()
        self.local_port = sock.getsockname()[1]
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        reader = threading.Thread(target=self._read, args=(sock, self.down_r), daemon=True,
                                  name="mptc-attack-client-reader")
        reader.start()
        self._pace(sock, self.expected_up, self.up_per_tick, self.up_w)
        reader.join(self.ticks * self.tick + self.idle_timeout + 5)

    def _pace(self, sock: socket.socket, data: bytes, per_tick: int, side: Side) -> None:
        chunk = RECORD * per_tick
        start = time.monotonic()
        try:
            for i in range(self.ticks):
                delay = start + i * self.tick - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                piece = data[i * chunk:(i + 1) * chunk]
                sock.sendall(piece)
                side.sent += len(piece)
            side.done_t = time.time()
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            side.error = _err(exc)
            side.done_t = time.time()

    def _read(self, sock: socket.socket, side: Side) -> None:
        h = hashlib.sha256()
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    side.eof = True
                    break
                h.update(data)
                side.data += data
                side.received += len(data)
        except OSError as exc:
            side.error = _err(exc)
        side.sha256 = h.hexdigest()

    def result(self, timeout: float | None = None) -> dict:
        limit = timeout if timeout is not None else self.ticks * self.tick + 2 * self.idle_timeout + 8
        deadline = time.monotonic() + limit
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        hung = [t.name for t in self.threads if t.is_alive()]
        self.close()
        for t in self.threads:
            t.join(2)
        up = _direction(self.expected_up, self.up_w, self.up_r)
        down = _direction(self.expected_down, self.down_w, self.down_r)
        died = bool(self.connect_error or self.accept_error or up["reader_error"] or down["reader_error"]
                    or up["writer_error"] or down["writer_error"] or not up["complete"] or not down["complete"])
        return {
            "port": self.port,
            "client_port": self.local_port,
            "connected": self.connect_error is None and self.connected_at is not None,
            "connect_error": self.connect_error,
            "accept_error": self.accept_error,
            "upload": up,
            "download": down,
            "intact": up["intact"] and down["intact"],
            "connection_died": died,
            "hung_threads": hung,
        }

    def close(self) -> None:
        for s in (self.csock, self.ssock, self.listener):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass


def mptcp_listener(node, port: int, timeout: float, family: int = socket.AF_INET) -> socket.socket:
    """An MPTCP listening socket on `port` in `node`'s namespace (`family`: AF_INET or AF_INET6)."""
    ls = node.socket(family, socket.SOCK_STREAM, socket.IPPROTO_MPTCP)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    ls.listen(4)
    ls.settimeout(timeout)
    return ls


def _direction(expected: bytes, writer: Side, reader: Side) -> dict:
    data = bytes(reader.data)
    want = hashlib.sha256(expected).hexdigest()
    return {
        "bytes_expected": len(expected),
        "bytes_sent": writer.sent,
        "bytes_received": reader.received,
        "sha256_expected": want,
        "sha256_received": reader.sha256 or hashlib.sha256(data).hexdigest(),
        "intact": data == expected,
        "complete": reader.eof and reader.received == len(expected),
        "prefix_intact": expected.startswith(data),
        "injected_markers": data.count(INJECT_MARK),
        "writer_error": writer.error,
        "writer_done_t": writer.done_t,
        "reader_error": reader.error,
        "eof": reader.eof,
    }


def _err(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timeout"
    name = type(exc).__name__
    return f"{name}: {exc.strerror}" if getattr(exc, "strerror", None) else f"{name}: {exc}"
