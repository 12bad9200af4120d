"""A bulk MPTCP upload whose throughput is measured (the SYN-flood row): the client writes as fast as the
connection takes it for `seconds`, the server reads, both hash; the server records its progress over time, so the
rate during any window (the flood) can be read off.

The data are the victim application's numbered records (`transfer.stream`), so a passive reader on path 1 would
count them as plaintext. Same result shape as `transfer.Transfer.result()` (upload/download dicts, connected,
intact, connection_died), plus `mbit_s` and `progress`.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time

from mptcrypt.attacks.transfer import mptcp_listener, stream

BLOCK = stream(b"UP", 128)  # 64 KiB of records per write
PROGRESS_EVERY = 0.05  # seconds between two progress points


class BulkTransfer:
    def __init__(self, net, port: int, seconds: float = 4.0, server_addr: str = "10.0.1.1",
                 idle_timeout: float = 4.0, client: str = "client", server: str = "server") -> None:
        self.net, self.port, self.seconds, self.server_addr = net, port, seconds, server_addr
        self.idle_timeout = idle_timeout
        self.client_node, self.server_node = net[client], net[server]
        self.listener: socket.socket | None = None
        self.threads: list[threading.Thread] = []
        self.connected_at: float | None = None
        self.connect_error = self.accept_error = self.writer_error = self.reader_error = None
        self.sent = self.received = 0
        self.sent_hash, self.received_hash = hashlib.sha256(), hashlib.sha256()
        self.writer_done_t = self.reader_done_t = None
        self.eof = False
        self.progress: list[tuple[float, int]] = []  # (epoch, bytes the server had read)
        self._socks: list[socket.socket] = []

    def listen(self) -> None:
        self.listener = mptcp_listener(self.server_node, self.port, self.idle_timeout + 4)
        self._socks.append(self.listener)

    def start(self) -> None:
        if self.listener is None:
            self.listen()
        for target in (self._server, self._client):
            t = threading.Thread(target=target, daemon=True, name=f"mptc-bulk-{target.__name__}")
            t.start()
            self.threads.append(t)

    def run(self) -> dict:
        """listen, start, wait: the result."""
        self.start()
        return self.result()

    def _server(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError as exc:
            self.accept_error = str(exc)
            return
        self._socks.append(conn)
        conn.settimeout(self.idle_timeout)
        next_point = 0.0
        try:
            while True:
                data = conn.recv(1 << 18)
                if not data:
                    self.eof = True
                    break
                self.received_hash.update(data)
                self.received += len(data)
                now = time.time()
                if now >= next_point:
                    self.progress.append((now, self.received))
                    next_point = now + PROGRESS_EVERY
        except OSError as exc:
            self.reader_error = f"{type(exc).__name__}: {exc}"
        self.reader_done_t = time.time()
        self.progress.append((self.reader_done_t, self.received))
        conn.close()  # the client waits for this after its last byte

    def _client(self) -> None:
        sock = self.client_node.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_MPTCP)
        self._socks.append(sock)
        sock.settimeout(self.idle_timeout)
        try:
            sock.connect((self.server_addr, self.port))
        except OSError as exc:
            self.connect_error = f"{type(exc).__name__}: {exc}"
            return
        self.connected_at = time.time()
        end = time.monotonic() + self.seconds
        try:
            while time.monotonic() < end:
                sock.sendall(BLOCK)
                self.sent_hash.update(BLOCK)
                self.sent += len(BLOCK)
            self.writer_done_t = time.time()
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)  # the server closes after EOF
        except OSError as exc:
            self.writer_error = f"{type(exc).__name__}: {exc}"
            self.writer_done_t = self.writer_done_t or time.time()

    def rate_mbit(self, t0: float, t1: float) -> float | None:
        """Upload rate the server saw between t0 and t1 (epoch), from its progress points."""
        pts = [p for p in self.progress if t0 <= p[0] <= t1]
        if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
            return None
        return round((pts[-1][1] - pts[0][1]) * 8 / (pts[-1][0] - pts[0][0]) / 1e6, 1)

    def result(self, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout if timeout is not None else self.seconds + 2 * self.idle_timeout + 8)
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass
        intact = self.eof and self.received == self.sent and \
            self.received_hash.hexdigest() == self.sent_hash.hexdigest()
        up = {"bytes_expected": self.sent, "bytes_sent": self.sent, "bytes_received": self.received,
              "sha256_expected": self.sent_hash.hexdigest(), "sha256_received": self.received_hash.hexdigest(),
              "intact": intact, "complete": intact, "injected_markers": 0, "writer_error": self.writer_error,
              "writer_done_t": self.writer_done_t, "reader_error": self.reader_error, "eof": self.eof}
        empty = hashlib.sha256(b"").hexdigest()
        down = {"bytes_expected": 0, "bytes_sent": 0, "bytes_received": 0, "sha256_expected": empty,
                "sha256_received": empty, "intact": True, "complete": True, "injected_markers": 0,
                "writer_error": None, "writer_done_t": None, "reader_error": None, "eof": True}
        whole = self.rate_mbit(self.connected_at or 0, self.reader_done_t or 0) if self.connected_at else None
        return {"port": self.port, "connected": self.connected_at is not None, "connect_error": self.connect_error,
                "accept_error": self.accept_error, "upload": up, "download": down, "intact": intact,
                "connection_died": bool(self.connect_error or self.accept_error or self.reader_error
                                        or self.writer_error or not intact),
                "hung_threads": [t.name for t in self.threads if t.is_alive()], "mbit_s": whole,
                "progress": self.progress}
