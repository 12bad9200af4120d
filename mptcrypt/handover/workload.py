"""The applications of a handover run: one process in the server's namespace, one in the mobile's.

    ip netns exec mptc-server python -m mptcrypt.handover.workload server --direction down --result S.json
    ip netns exec mptc-mobile python -m mptcrypt.handover.workload mobile --connect 10.0.1.1 --direction down \
        --result M.json

Two MPTCP connections from the mobile to the server:

- **bulk** (port 5201): a long transfer in `--direction` (`down`: server -> mobile, `up`: mobile -> server), as
  fast as the links let it go. The sender hashes every byte it hands the kernel, the receiver every byte it reads
  (sha256), and the receiver keeps the time of every read: goodput over time and the longest gap (the stall).
- **rr** (port 5202): the mobile sends a 1 KiB request every 20 ms (sequence number and send time inside), the
  server echoes it; the mobile takes the latency of each answer.

Each process takes commands on stdin, one per line, and reports on stdout, one line per step:
server: prints `ready` once listening; `stop` ends its bulk sending (direction down).
mobile: prints `bulk LOCAL REMOTE` once the bulk connection is up; `rr` opens the request connection (prints
`rr LOCAL REMOTE`); `stop` ends its sending (rr, and bulk for direction up).
Both write their result as JSON to `--result` and print `done` when they finish. (`control`: a relay to the
namespace's daemon for the runner, one `stats`/`sessions` request per line; `resume-server` and
`resume-client --src ADDR`: one new plain TCP connection on port 5203, echoed.) Times are `time.monotonic()`
values: the clock is shared by every namespace, so the runner aligns them with its own events.

Separate processes rather than threads of the runner: the sampler and the applications do not share one GIL,
so a busy receiver does not delay the 100 ms samples or the request timestamps.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import socket
import struct
import sys
import threading
import time
from typing import Any

BULK_PORT = 5201
RR_PORT = 5202
RESUME_PORT = 5203
RR_SIZE = 1024
RR_INTERVAL = 0.020
CHUNK = 64 * 1024
PATTERN_SIZE = 1 << 20
BIN = 0.1  # seconds per goodput bin
GAP_REPORT = 0.05  # gaps longer than this are listed
MAX_GAPS = 50
SEND_TIMEOUT = 0.2
DRAIN_TIMEOUT = 20.0  # after `stop`, how long a receiver waits for the rest of the data
RR_GRACE = 5.0  # after `stop`, how long the mobile waits for outstanding answers
_RR_HEAD = struct.Struct("!Qd")


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


CC: str | None = None  # --cc: TCP congestion control of every socket made here (the subflows inherit it)


def _mptcp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_MPTCP)
    if CC:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, CC.encode())
    return sock


def _addr(pair: tuple) -> str:
    return f"{pair[0]}:{pair[1]}"


class Sender:
    """Sends a repeating random pattern until stopped; hashes exactly what the kernel accepted."""

    def __init__(self, sock: socket.socket, stop: threading.Event) -> None:
        self.sock = sock
        self.stop = stop
        self.sha = hashlib.sha256()
        self.bytes = 0
        self.error: str | None = None
        self.started = self.ended = None

    def run(self) -> None:
        pattern = os.urandom(PATTERN_SIZE)
        view = memoryview(pattern + pattern[:CHUNK])
        off = 0
        self.sock.settimeout(SEND_TIMEOUT)
        self.started = time.monotonic()
        try:
            while not self.stop.is_set():
                try:
                    n = self.sock.send(view[off:off + CHUNK])
                except socket.timeout:
                    continue
                self.sha.update(view[off:off + n])
                self.bytes += n
                off = (off + n) % PATTERN_SIZE
            self.sock.settimeout(DRAIN_TIMEOUT)
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        self.ended = time.monotonic()

    def result(self) -> dict[str, Any]:
        return {"role": "sender", "bytes": self.bytes, "sha256": self.sha.hexdigest(), "error": self.error,
                "started": self.started, "ended": self.ended}


class Receiver:
    """Reads until EOF; hashes the data and keeps when each read returned (goodput bins, gaps)."""

    def __init__(self, sock: socket.socket, stopped: threading.Event) -> None:
        self.sock = sock
        self.stopped = stopped  # set when the sender was told to stop: from then on wait at most DRAIN_TIMEOUT
        self.sha = hashlib.sha256()
        self.bytes = 0
        self.times: list[float] = []
        self.sizes: list[int] = []
        self.eof = False
        self.error: str | None = None

    def run(self) -> None:
        buf = bytearray(CHUNK)
        self.sock.settimeout(0.5)
        deadline = None
        try:
            while True:
                try:
                    n = self.sock.recv_into(buf)
                except socket.timeout:
                    if self.stopped.is_set():
                        deadline = deadline or time.monotonic() + DRAIN_TIMEOUT
                        if time.monotonic() > deadline:
                            self.error = f"no EOF within {DRAIN_TIMEOUT:g} s after stop"
                            return
                    continue
                if not n:
                    self.eof = True
                    return
                now = time.monotonic()
                self.sha.update(memoryview(buf)[:n])
                self.bytes += n
                self.times.append(now)
                self.sizes.append(n)
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def result(self) -> dict[str, Any]:
        times, sizes = self.times, self.sizes
        gaps: list[tuple[float, float]] = []
        for a, b in zip(times, times[1:]):
            if b - a > GAP_REPORT:
                gaps.append((b - a, a))
        gaps.sort(reverse=True)
        bins: dict[int, int] = {}
        for t, n in zip(times, sizes):
            k = int(t / BIN)
            bins[k] = bins.get(k, 0) + n
        return {
            "role": "receiver", "bytes": self.bytes, "sha256": self.sha.hexdigest(), "eof": self.eof,
            "error": self.error, "first": times[0] if times else None, "last": times[-1] if times else None,
            "reads": len(times),
            "max_gap": gaps[0][0] if gaps else (max((b - a for a, b in zip(times, times[1:])), default=None)),
            "max_gap_at": gaps[0][1] if gaps else None,
            "gaps": [{"start": s, "length": g} for g, s in gaps[:MAX_GAPS]],
            "bin": BIN, "bins": sorted(bins.items()),
        }


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


# --- server ----------------------------------------------------------------------------------------------------


def _echo(conn: socket.socket, state: dict[str, Any]) -> None:
    try:
        while True:
            msg = _recv_exact(conn, RR_SIZE)
            if msg is None:
                break
            conn.sendall(msg)
            state["echoed"] += 1
    except OSError as exc:
        state["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def run_server(args: argparse.Namespace) -> dict[str, Any]:
    bulk_l, rr_l = _mptcp_socket(), _mptcp_socket()
    for sock, port in ((bulk_l, args.bulk_port), (rr_l, args.rr_port)):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(4)
    stop = threading.Event()
    result: dict[str, Any] = {"host": "server", "direction": args.direction}
    rr_state: dict[str, Any] = {"echoed": 0, "error": None}
    threads: list[threading.Thread] = []
    worker: Sender | Receiver | None = None

    def accept_bulk() -> None:
        nonlocal worker
        conn, peer = bulk_l.accept()
        result["bulk"] = {"local": _addr(conn.getsockname()), "remote": _addr(peer)}
        worker = Sender(conn, stop) if args.direction == "down" else Receiver(conn, stop)
        worker.run()
        if isinstance(worker, Sender):  # wait for the mobile to finish reading and close
            conn.settimeout(DRAIN_TIMEOUT)
            try:
                while conn.recv(CHUNK):
                    pass
            except OSError:
                pass
        conn.close()

    def accept_rr() -> None:
        conn, peer = rr_l.accept()
        result["rr"] = {"local": _addr(conn.getsockname()), "remote": _addr(peer)}
        _echo(conn, rr_state)

    for target in (accept_bulk, accept_rr):
        t = threading.Thread(target=target, daemon=True)
        t.start()
        threads.append(t)
    _out("ready")
    for line in sys.stdin:
        if line.strip() == "stop":
            stop.set()
            break
    stop.set()
    threads[0].join(DRAIN_TIMEOUT + 5)
    threads[1].join(RR_GRACE + 2)
    result["bulk_result"] = worker.result() if worker is not None else None
    result["rr_result"] = rr_state
    bulk_l.close()
    rr_l.close()
    return result


# --- mobile ----------------------------------------------------------------------------------------------------


class RequestClient:
    """1 KiB requests every RR_INTERVAL on one connection; the latency of each echoed answer."""

    def __init__(self, sock: socket.socket, stop: threading.Event) -> None:
        self.sock = sock
        self.stop = stop
        self.sent: dict[int, float] = {}
        self.answers: list[tuple[int, float, float]] = []  # (seq, sent at, answered at)
        self.error: str | None = None
        self.done = threading.Event()

    def send_loop(self) -> None:
        pad = b"\0" * (RR_SIZE - _RR_HEAD.size)
        start = time.monotonic()
        seq = 0
        try:
            while not self.stop.is_set():
                due = start + seq * RR_INTERVAL
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                now = time.monotonic()
                self.sent[seq] = now
                self.sock.sendall(_RR_HEAD.pack(seq, now) + pad)
                seq += 1
        except OSError as exc:
            self.error = f"send: {type(exc).__name__}: {exc}"

    def recv_loop(self) -> None:
        # the socket stays blocking (the send loop blocks in sendall while the path is out): wait with select
        deadline = None
        buf = bytearray()
        try:
            while True:
                if self.stop.is_set():
                    deadline = deadline or time.monotonic() + RR_GRACE
                    if len(self.answers) >= len(self.sent) or time.monotonic() > deadline:
                        break
                if not select.select([self.sock], [], [], 0.2)[0]:
                    continue
                chunk = self.sock.recv(RR_SIZE * 16)
                if not chunk:
                    break
                now = time.monotonic()
                buf += chunk
                while len(buf) >= RR_SIZE:
                    seq, sent = _RR_HEAD.unpack_from(buf)
                    del buf[:RR_SIZE]
                    self.answers.append((seq, sent, now))
        except OSError as exc:
            self.error = f"recv: {type(exc).__name__}: {exc}"
        finally:
            self.done.set()

    def result(self) -> dict[str, Any]:
        return {"sent": len(self.sent), "answered": len(self.answers), "error": self.error,
                "answers": [[s, a, b] for s, a, b in self.answers],
                "unanswered": [[s, self.sent[s]] for s in sorted(set(self.sent) - {a[0] for a in self.answers})][:1000]}


def run_mobile(args: argparse.Namespace) -> dict[str, Any]:
    stop = threading.Event()
    result: dict[str, Any] = {"host": "mobile", "direction": args.direction}
    bulk = _mptcp_socket()
    bulk.settimeout(10)
    bulk.connect((args.connect, args.bulk_port))
    result["bulk"] = {"local": _addr(bulk.getsockname()), "remote": _addr(bulk.getpeername()),
                      "connected": time.monotonic()}
    _out(f"bulk {result['bulk']['local']} {result['bulk']['remote']}")
    worker: Sender | Receiver = Sender(bulk, stop) if args.direction == "up" else Receiver(bulk, stop)
    bulk_thread = threading.Thread(target=worker.run, daemon=True)
    bulk_thread.start()
    rr: RequestClient | None = None
    rr_threads: list[threading.Thread] = []
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "rr" and rr is None:
            sock = _mptcp_socket()
            sock.settimeout(10)
            sock.connect((args.connect, args.rr_port))
            result["rr"] = {"local": _addr(sock.getsockname()), "remote": _addr(sock.getpeername()),
                            "connected": time.monotonic()}
            sock.settimeout(None)
            rr = RequestClient(sock, stop)
            rr_threads = [threading.Thread(target=rr.send_loop, daemon=True),
                          threading.Thread(target=rr.recv_loop, daemon=True)]
            for t in rr_threads:
                t.start()
            _out(f"rr {result['rr']['local']} {result['rr']['remote']}")
        elif cmd == "stop":
            break
    stop.set()
    result["stopped"] = time.monotonic()
    for t in rr_threads:
        t.join(RR_GRACE + 2)
    if rr is not None:
        try:
            rr.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        rr.sock.close()
    bulk_thread.join(DRAIN_TIMEOUT + 5)
    if isinstance(worker, Sender):  # wait for the server to read everything and close
        bulk.settimeout(DRAIN_TIMEOUT)
        try:
            while bulk.recv(CHUNK):
                pass
        except OSError:
            pass
    bulk.close()
    result["bulk_result"] = worker.result()
    result["rr_result"] = rr.result() if rr is not None else None
    return result


def run_resume_server(port: int) -> int:
    """One plain TCP connection on `port`: read a line, echo it, close. Prints `ready` once listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lst:
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("0.0.0.0", port))
        lst.listen(1)
        lst.settimeout(20)
        _out("ready")
        conn, _ = lst.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            conn.sendall(data)
    return 0


def run_resume_client(src: str, dst: str, port: int) -> int:
    """A new plain TCP (not MPTCP) connection from address `src`; prints one JSON line: local, echo_ok, ms."""
    out: dict[str, Any] = {"src": src, "dst": f"{dst}:{port}"}
    payload = b"resume from a new address " + os.urandom(16).hex().encode() + b"\n"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
            sock.settimeout(10)
            sock.bind((src, 0))
            t = time.monotonic()
            sock.connect((dst, port))
            out["connect_ms"] = (time.monotonic() - t) * 1000
            out["local"] = _addr(sock.getsockname())
            sock.sendall(payload)
            back = b""
            while len(back) < len(payload):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                back += chunk
            out["echo_ok"] = back == payload
            out["at"] = time.monotonic()
    except OSError as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    _out(json.dumps(out))
    return 0


def run_control() -> int:
    """Relay for the runner: one daemon request per stdin line ('stats' or 'sessions'), one JSON line back.
    Runs inside a host's namespace, where the daemon's abstract control socket lives."""
    from mptcrypt.daemon.control import ControlClient
    from mptcrypt.errors import MptcryptError

    client = ControlClient()
    for line in sys.stdin:
        cmd = line.strip()
        try:
            if cmd == "stats":
                reply = {"ok": True, "stats": client.stats()}
            elif cmd == "sessions":
                reply = {"ok": True, "sessions": client.sessions()}
            else:
                reply = {"ok": False, "error": f"unknown command {cmd!r}"}
        except MptcryptError as exc:
            reply = {"ok": False, "error": str(exc)}
        _out(json.dumps(reply, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mptcrypt.handover.workload", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("role", choices=["server", "mobile", "control", "resume-server", "resume-client"])
    p.add_argument("--src", help="resume-client: source address")
    p.add_argument("--cc", help="TCP congestion control for the bulk and request sockets (default: the system's)")
    p.add_argument("--connect", default="10.0.1.1", help="server address (mobile)")
    p.add_argument("--direction", choices=["up", "down"], default="down")
    p.add_argument("--bulk-port", type=int, default=BULK_PORT)
    p.add_argument("--rr-port", type=int, default=RR_PORT)
    p.add_argument("--result", help="write the result here (JSON); required for server and mobile")
    args = p.parse_args(argv)
    global CC
    CC = args.cc
    if args.role == "control":
        return run_control()
    if args.role == "resume-server":
        return run_resume_server(RESUME_PORT)
    if args.role == "resume-client":
        return run_resume_client(args.src, args.connect, RESUME_PORT)
    if not args.result:
        p.error("--result is required")
    try:
        result = run_server(args) if args.role == "server" else run_mobile(args)
    except Exception as exc:  # reported to the runner in the result file, never a silent exit
        result = {"host": args.role, "fatal": f"{type(exc).__name__}: {exc}"}
    tmp = args.result + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh)
    os.replace(tmp, args.result)
    _out("done")
    return 0 if "fatal" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
