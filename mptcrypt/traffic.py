"""Traffic for demos, tests and benchmarks: a sink that hashes what it receives and a source that sends a
known stream, each reporting one JSON line (bytes, sha256, seconds, Mbit/s, and the mptcrypt session ID).

    ip netns exec mptc-server python -m mptcrypt.traffic sink --port 5000 --mptcp
    ip netns exec mptc-client python -m mptcrypt.traffic source --to 10.0.1.1:5000 --bytes 64M --mptcp

The stream is deterministic for a given --seed: every 64 KiB block starts with the plaintext marker (so a capture
can be searched for it) followed by pseudo-random bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import socket
import sys
import time

IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)
BLOCK = 64 * 1024
DEFAULT_MARKER = b"MPTCRYPT-PLAINTEXT-MARKER"


def parse_size(text: str) -> int:
    """'64M' -> 67108864; K, M, G are powers of 1024."""
    text = text.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    try:
        return int(float(text[:-1] if mult > 1 else text) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use bytes or a number with K, M or G") from None


def stream(total: int, seed: int = 1, marker: bytes = DEFAULT_MARKER):
    """Yield the deterministic stream of `total` bytes in blocks."""
    pool = random.Random(seed).randbytes(BLOCK * 4)
    sent, n = 0, 0
    while sent < total:
        start = (n * 7919) % (3 * BLOCK)
        block = marker + n.to_bytes(8, "big") + pool[start:start + BLOCK - len(marker) - 8]
        block = block[:total - sent]
        yield block
        sent += len(block)
        n += 1


def _sid(sock) -> str | None:
    try:
        from mptcrypt.api import session_id

        sid = session_id(sock, timeout=2.0)
        return sid.hex() if sid else None
    except Exception:  # no daemon here, or it does not know the connection: unprotected
        return None


def _report(**fields) -> None:
    print(json.dumps(fields), flush=True)


def run_sink(port: int, mptcp: bool, count: int, bind: str = "0.0.0.0", timeout: float = 120.0) -> None:
    srv = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET, socket.SOCK_STREAM,
                        IPPROTO_MPTCP if mptcp else 0)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((bind, port))
    srv.listen(64)
    _report(event="listening", port=port, mptcp=mptcp)
    for _ in range(count) if count > 0 else iter(int, 1):
        conn, peer = srv.accept()
        conn.settimeout(timeout)
        h, n, t0 = hashlib.sha256(), 0, time.monotonic()
        sid = _sid(conn)
        error = None
        try:
            while True:
                data = conn.recv(1 << 18)
                if not data:
                    break
                h.update(data)
                n += len(data)
            conn.sendall(b"ok")
        except OSError as exc:
            error = str(exc)
        secs = time.monotonic() - t0
        _report(event="received", peer=f"{peer[0]}:{peer[1]}", bytes=n, sha256=h.hexdigest(), seconds=round(secs, 4),
                mbps=round(n * 8 / secs / 1e6, 2) if secs else 0.0, sid=sid or _sid(conn), error=error)
        conn.close()


def run_source(host: str, port: int, total: int, mptcp: bool, seed: int, marker: bytes, bind: str | None,
               timeout: float = 120.0) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP if mptcp else 0)
    sock.settimeout(timeout)
    if bind:
        sock.bind((bind, 0))
    h = hashlib.sha256()
    t0 = time.monotonic()
    sock.connect((host, port))
    t_conn = time.monotonic() - t0
    sid = _sid(sock)
    for block in stream(total, seed, marker):
        h.update(block)
        sock.sendall(block)
    sock.shutdown(socket.SHUT_WR)
    reply = sock.recv(16)
    secs = time.monotonic() - t0
    _report(event="sent", bytes=total, sha256=h.hexdigest(), seconds=round(secs, 4), connect_ms=round(t_conn * 1e3, 3),
            mbps=round(total * 8 / secs / 1e6, 2), sid=sid, acked=reply == b"ok")
    sock.close()
    return 0 if reply == b"ok" else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mptcrypt.traffic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("sink", help="accept connections, hash what arrives, print one JSON line per connection")
    s.add_argument("--port", type=int, default=5000)
    s.add_argument("--bind", default="0.0.0.0")
    s.add_argument("--mptcp", action="store_true", help="listen with IPPROTO_MPTCP")
    s.add_argument("--count", type=int, default=1, help="connections to serve, 0 = forever (default 1)")
    c = sub.add_parser("source", help="connect, send the deterministic stream, print one JSON line")
    c.add_argument("--to", required=True, metavar="HOST:PORT")
    c.add_argument("--bytes", type=parse_size, default=parse_size("1M"), help="e.g. 64M (default 1M)")
    c.add_argument("--mptcp", action="store_true", help="connect with IPPROTO_MPTCP")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--marker", default=DEFAULT_MARKER.decode(), help="plaintext marker at the start of every block")
    c.add_argument("--bind", help="local source address")
    args = p.parse_args(argv)
    if args.role == "sink":
        run_sink(args.port, args.mptcp, args.count, args.bind)
        return 0
    host, _, port = args.to.rpartition(":")
    return run_source(host.strip("[]"), int(port), args.bytes, args.mptcp, args.seed, args.marker.encode(), args.bind)


if __name__ == "__main__":
    sys.exit(main())
