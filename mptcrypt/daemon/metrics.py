"""Prometheus metrics: the text exposition format (version 0.0.4) written by hand, and a tiny scrape endpoint.

No client library at run time: the daemon's counters are plain dicts already, and the format is a few lines per
metric (https://prometheus.io/docs/instrumenting/exposition_formats/). `exposition()` is pure (counters, rows
and a histogram in, text out); `MetricsServer` serves it from the daemon's one selector loop, non-blocking, so
a scrape never holds up the packet path. `mptcrypt stats --prometheus` prints the same text once.

    mptcrypt_<engine counter>_total           every engine counter (segments_protected, mac_failures, pk_ops, ...)
    mptcrypt_<nfq counter>_total              the packet path's counters (nfq_packets, nfq_injected, ...)
    mptcrypt_queue_drops_total{reason=...}    packets the queue path dropped: verdict, truncated, engine_error,
                                              queue_full and socket_overflow (the kernel's own drops)
    mptcrypt_connections{state=...}           tracked connections by the state of their first subflow
    mptcrypt_flows, mptcrypt_sessions_cached  gauges
    mptcrypt_packet_seconds                   histogram of the time the engine spent per queued packet
"""

from __future__ import annotations

import bisect
import ipaddress
import logging
import math
import selectors
import socket
from typing import Callable, Iterable

from mptcrypt.errors import ConfigError

log = logging.getLogger("mptcrypt.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "mptcrypt_"
# Engine per-packet cost is ~15-60 us here; the upper buckets catch handshakes (a public-key operation each).
LATENCY_BUCKETS = (5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3, 2e-2)
GAUGES = ("flows", "sessions_cached", "connections", "flows_tracked_max")
QUEUE_DROPS = {  # reason label -> edge counter
    "verdict": "nfq_dropped",
    "truncated": "nfq_truncated",
    "engine_error": "nfq_engine_errors",
    "queue_full": "nfq_queue_full",
    "socket_overflow": "nfq_socket_overflow",
}
MAX_REQUEST = 8192
MAX_CLIENTS = 8


class LatencyHistogram:
    """Counts per bucket (not cumulative), sum and count: `observe` is one bisect and three additions."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Iterable[float] = LATENCY_BUCKETS):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1


def _fmt(value: float) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "+Inf"
        return repr(value)
    return str(value)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(engine_stats: dict, edge_stats: dict, sessions: list[dict],
               latency: LatencyHistogram | None = None) -> str:
    """The text exposition of one daemon's state."""
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        full = PREFIX + name
        out.append(f"# HELP {full} {help_text}")
        out.append(f"# TYPE {full} {kind}")
        for suffix_labels, value in samples:
            out.append(f"{full}{suffix_labels} {_fmt(value)}")

    for name, value in engine_stats.items():
        if name in GAUGES:
            metric(name, "gauge", f"engine gauge {name}", [("", value)])
        else:
            metric(f"{name}_total", "counter", f"engine counter {name}", [("", value)])
    for name, value in edge_stats.items():
        metric(f"{name}_total", "counter", f"packet path counter {name}", [("", value)])
    metric("queue_drops_total", "counter", "packets the queue path dropped, by reason",
           [(f'{{reason="{reason}"}}', edge_stats.get(counter, 0)) for reason, counter in QUEUE_DROPS.items()])
    by_state: dict[str, int] = {}
    for row in sessions:
        state = str(row.get("state", "unknown"))
        by_state[state] = by_state.get(state, 0) + 1
    metric("connections_by_state", "gauge", "tracked connections by the state of their first subflow",
           [(f'{{state="{_label(s)}"}}', n) for s, n in sorted(by_state.items())])
    if latency is not None:
        name = PREFIX + "packet_seconds"
        out.append(f"# HELP {name} time the engine spent on one queued packet")
        out.append(f"# TYPE {name} histogram")
        cumulative = 0
        for bound, n in zip((*latency.bounds, math.inf), latency.counts):
            cumulative += n
            out.append(f'{name}_bucket{{le="{_fmt(float(bound))}"}} {cumulative}')
        out.append(f"{name}_sum {_fmt(latency.sum)}")
        out.append(f"{name}_count {latency.count}")
    return "\n".join(out) + "\n"


def parse_listen(spec: str) -> tuple[str, int]:
    """'127.0.0.1:9464' or '[::1]:9464' -> (host, port)."""
    host, sep, port = spec.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ConfigError(f"--metrics {spec!r}: give ADDRESS:PORT, e.g. 127.0.0.1:9464 or [::1]:9464") from None
    if not sep or not 0 < number < 65536:
        raise ConfigError(f"--metrics {spec!r}: port must be 1..65535")
    return host, number


class MetricsServer:
    """HTTP/1.0-style GET endpoint: any path answers the exposition, then the connection closes."""

    def __init__(self, render: Callable[[], str], address: tuple[str, int]):
        self.render = render
        self.address = address
        self.sock: socket.socket | None = None
        self.selector: selectors.BaseSelector | None = None
        self.clients: dict[socket.socket, bytearray] = {}

    def bind(self) -> None:
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(self.address)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"--metrics: cannot listen on {self.address[0]}:{self.address[1]}: {exc}") from None
        sock.listen(8)
        self.sock = sock

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def attach(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector
        selector.register(self.sock, selectors.EVENT_READ, self._on_accept)

    def close(self) -> None:
        for conn in list(self.clients):
            self._drop(conn)
        if self.sock is not None:
            self._drop(self.sock)  # unregisters and closes the listening socket too
            self.sock = None

    def _on_accept(self, _mask: int) -> None:
        try:
            conn, _addr = self.sock.accept()
        except (BlockingIOError, InterruptedError, OSError):
            return
        if len(self.clients) >= MAX_CLIENTS:
            conn.close()
            return
        conn.setblocking(False)
        self.clients[conn] = bytearray()
        self.selector.register(conn, selectors.EVENT_READ, lambda _m, c=conn: self._on_read(c))

    def _on_read(self, conn: socket.socket) -> None:
        buf = self.clients.get(conn)
        if buf is None:
            return
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        buf += data
        if data and b"\r\n\r\n" not in buf and b"\n\n" not in buf and len(buf) < MAX_REQUEST:
            return
        if buf.startswith(b"GET ") or buf.startswith(b"HEAD "):
            try:
                body = self.render().encode()
                head = f"HTTP/1.0 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {len(body)}\r\n\r\n"
            except Exception as exc:  # a bug in rendering must not take the daemon down
                log.exception("metrics: rendering failed")
                body = f"internal error: {type(exc).__name__}\n".encode()
                head = f"HTTP/1.0 500 Internal Server Error\r\nContent-Length: {len(body)}\r\n\r\n"
            try:
                # the answer (a few KB) fits the socket buffer; a client that cannot take it loses it
                conn.send(head.encode() + (b"" if buf.startswith(b"HEAD ") else body))
            except OSError:
                pass
        self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        self.clients.pop(conn, None)
        if self.selector is not None:
            try:
                self.selector.unregister(conn)
            except (KeyError, ValueError):
                pass
        conn.close()
