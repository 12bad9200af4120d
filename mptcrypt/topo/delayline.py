"""A delay line in user space, for kernels without netem: link delay, jitter, reordering, duplication.

A link with a delay line is not one veth pair but two, with a small namespace between them (`mptc-link-...`):

    node1:intf1 ==veth== [a | delay line | b] ==veth== node2:intf2

This process runs in that namespace and forwards every Ethernet frame from `a` to `b` and back, each frame held
until its release time. Why here and not an NFQUEUE on the receiving host (measured, see README "Topologies"):
  - frames reach the receiver only when they are due, so a capture or a kernel receive timestamp on the
    receiving host (tcpdump, SO_TIMESTAMP, which `ping` uses) sees the delayed arrival, as on a real link;
    an NFQUEUE in PREROUTING holds packets after the capture point and after the rx timestamp;
  - it holds no socket's memory: a sender-side queue (POSTROUTING) would stay charged to the TCP socket and
    TCP small queues would throttle the flow to a few milliseconds of data in flight;
  - it is L2: ARP, IPv6 and every protocol are delayed alike, and it never sees another namespace's traffic.
AF_PACKET with PACKET_VNET_HDR keeps GSO: a 64 KB TCP super-frame is forwarded as one frame.

Semantics (netem's names): `delay` is the mean one-way delay, `jitter` a uniform spread of +-jitter around it,
`reorder` the percentage of frames sent at once (ahead of the held ones), `duplicate` the percentage of frames
sent twice. Unlike netem, jitter alone never reorders: a frame is never released before the frame ahead of it
(a link is a FIFO), so with jitter the delay distribution is cut at the previous frame's release time.

The schedule (`DelaySchedule`) is sans-IO and unit-tested; `run()` is the thin I/O loop. Control protocol: one JSON
object per line on stdin, one answer per line on stdout:
    {"dir": "ab", "delay_us": 20000, "jitter_us": 0, "reorder": 0, "duplicate": 0, "limit": 10000}  -> {"ok": true}
    {"cmd": "stats"}  -> {"ok": true, "ab": {"forwarded": .., "dropped": .., ...}, "ba": {...}}
The first line it prints is {"ready": true, "pid": PID} once both sockets are bound. End of stdin (the `Net` that
started it went away, e.g. `mptcrypt topo up` detached) leaves it running with its last settings; it stops on
SIGTERM (default action), or with its namespace.
"""

from __future__ import annotations

import collections
import json
import os
import random
import select
import socket
import sys
import time
from dataclasses import dataclass, field, fields

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15  # linux/if_packet.h: frames carry a virtio_net_hdr (GSO type and size, checksum offsets)
PACKET_IGNORE_OUTGOING = 23  # do not read back the frames this socket sends
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # asm-generic/socket.h (root may exceed rmem_max); not in Python's socket
RCVBUF = 16 << 20  # bytes of socket buffer per side: ~2.5 s at 50 Mbit/s if the process is descheduled
FRAME_BUF = 256 * 1024  # > the largest GSO frame a veth passes (64 KB) plus the vnet header
RECV_BURST = 256  # frames read from one side before looking at the other side and the clock
DEFAULT_LIMIT = 10_000  # frames held per direction (netem's `limit`; a GSO frame counts as one)
DEFAULT_LIMIT_BYTES = 32 << 20  # and bytes held per direction
INTF_A, INTF_B = "mptc-a", "mptc-b"  # the delay line's ends in its namespace (towards node1, node2)


@dataclass
class LineParams:
    """What one direction of a link does to its frames (netem's parameters, times in microseconds)."""

    delay_us: int = 0
    jitter_us: int = 0
    reorder: float = 0.0  # percent of frames sent at once
    duplicate: float = 0.0  # percent of frames sent twice
    limit: int = DEFAULT_LIMIT  # frames held at most; more are dropped (as netem's tail drop)

    @classmethod
    def from_dict(cls, d: dict) -> "LineParams":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names - {"dir"}
        if unknown:
            raise ValueError(f"unknown delay-line parameter(s) {', '.join(sorted(unknown))}")
        p = cls(**{k: v for k, v in d.items() if k in names})
        if p.delay_us < 0 or p.jitter_us < 0 or not 0 <= p.reorder <= 100 or not 0 <= p.duplicate <= 100 or p.limit < 1:
            raise ValueError(f"bad delay-line parameters {d!r}")
        return p


@dataclass
class DelaySchedule:
    """Release times for the frames of one direction. Pure: time comes in, times go out.

    `admit(now, size)` -> release times for this frame (empty: dropped over the limit; two: duplicated).
    A frame picked for `reorder` is released at `now`, ahead of the held ones; every other release time is at
    least the previous one, so held frames leave in arrival order. `release(size)` when a held copy is sent."""

    params: LineParams = field(default_factory=LineParams)
    rng: random.Random = field(default_factory=random.Random)
    last: float = 0.0  # latest release time handed out (FIFO order)
    held: int = 0
    held_bytes: int = 0
    counters: collections.Counter = field(default_factory=collections.Counter)

    def admit(self, now: float, size: int) -> list[float]:
        p = self.params
        c = self.counters
        copies = 2 if p.duplicate and self.rng.random() * 100 < p.duplicate else 1
        if self.held + copies > p.limit or self.held_bytes + copies * size > DEFAULT_LIMIT_BYTES:
            c["dropped"] += 1
            return []
        times = []
        for _ in range(copies):
            if p.reorder and self.rng.random() * 100 < p.reorder:
                c["reordered"] += 1
                times.append(now)  # sent at once: the held frames come after it
                continue
            delay = p.delay_us
            if p.jitter_us:
                delay += self.rng.uniform(-p.jitter_us, p.jitter_us)
            at = max(now + max(0.0, delay) / 1e6, self.last)
            self.last = at
            times.append(at)
        if copies == 2:
            c["duplicated"] += 1
        held = sum(1 for t in times if t > now)
        self.held += held
        self.held_bytes += held * size
        return times

    def release(self, size: int) -> None:
        self.held -= 1
        self.held_bytes -= size


def _packet_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, RCVBUF)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.bind((ifname, ETH_P_ALL))
    return sock


class _Side:
    """One direction: frames read from `src`, held in FIFO `queue` (release time, frame), written to `dst`."""

    def __init__(self, name: str, src: socket.socket, dst: socket.socket, seed: int | None):
        self.name = name
        self.src, self.dst = src, dst
        self.schedule = DelaySchedule(rng=random.Random(seed))
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()

    def read(self, buf: bytearray, view: memoryview) -> None:
        c = self.schedule.counters
        for _ in range(RECV_BURST):
            try:
                n = self.src.recv_into(buf, 0, socket.MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the interface went down under us: frames on a down link are lost
                c["errors"] += 1
                return
            if n > len(buf):
                c["truncated"] += 1
                continue
            now = time.monotonic()
            frame = bytes(view[:n])
            for at in self.schedule.admit(now, n):
                if at <= now:
                    self.send(frame, held=False)
                else:
                    self.queue.append((at, frame))

    def send(self, frame: bytes, held: bool) -> None:
        try:
            self.dst.send(frame)
            self.schedule.counters["forwarded"] += 1
        except (BlockingIOError, InterruptedError, OSError):
            self.schedule.counters["send_failed"] += 1  # a full or down peer: the frame is lost, as on a wire
        if held:
            self.schedule.release(len(frame))

    def flush(self, now: float) -> float | None:
        """Send what is due; return the next release time, None if nothing is held."""
        q = self.queue
        while q and q[0][0] <= now:
            self.send(q.popleft()[1], held=True)
        return q[0][0] if q else None


def run(intf_a: str = INTF_A, intf_b: str = INTF_B, seed: int | None = None, initial: LineParams | None = None) -> int:
    a, b = _packet_socket(intf_a), _packet_socket(intf_b)
    sides = {"ab": _Side("ab", a, b, seed), "ba": _Side("ba", b, a, None if seed is None else seed + 1)}
    for side in sides.values():
        side.schedule.params = LineParams(**vars(initial or LineParams()))
    by_fd = {a.fileno(): sides["ab"], b.fileno(): sides["ba"]}
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    inbuf = b""
    buf = bytearray(FRAME_BUF)
    view = memoryview(buf)
    watch = [a.fileno(), b.fileno(), stdin]
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    while True:  # until SIGTERM (its default action: nothing to clean up, the sockets go with the process)
        now = time.monotonic()
        due = [t for t in (s.flush(now) for s in sides.values()) if t is not None]
        timeout = max(0.0, min(due) - time.monotonic()) if due else 1.0
        try:
            readable, _, _ = select.select(watch, [], [], timeout)  # select: microsecond timeouts (epoll: ms)
        except InterruptedError:
            continue
        for fd in readable:
            if fd == stdin:
                try:
                    data = os.read(stdin, 65536)
                except BlockingIOError:
                    continue
                if not data:
                    watch.remove(stdin)  # the Net went away: keep forwarding with the last settings
                    continue
                inbuf += data
                while b"\n" in inbuf:
                    line, inbuf = inbuf.split(b"\n", 1)
                    print(json.dumps(_command(line, sides)), flush=True)
            else:
                by_fd[fd].read(buf, view)


def _command(line: bytes, sides: dict[str, _Side]) -> dict:
    try:
        req = json.loads(line)
        if req.get("cmd") == "stats":
            return {"ok": True, **{name: {"held": len(s.queue), **s.schedule.counters} for name, s in sides.items()}}
        side = sides[req["dir"]]
        side.schedule.params = LineParams.from_dict(req)
        return {"ok": True}
    except (ValueError, KeyError, TypeError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


# --- the parent's side: what `Net` uses to start and steer one line ------------------------------------------------


class DelayLine:
    """One delay-line process, started in namespace `ns` (`Net` kills it by PID, or it goes with its namespace)."""

    READY_TIMEOUT = 15.0
    ANSWER_TIMEOUT = 5.0

    def __init__(self, ns: str, argv_prefix: list[str]):
        import subprocess

        self.ns = ns
        self.proc = subprocess.Popen(
            [*argv_prefix, sys.executable, "-m", "mptcrypt.topo.delayline"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
        )
        self._out = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _line(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._out:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"the delay line in {self.ns} did not answer within {timeout:g} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace").strip()
                raise OSError(f"the delay line in {self.ns} exited ({self.proc.wait()}): {err[-2000:]}")
            self._out += chunk
        line, self._out = self._out.split(b"\n", 1)
        return json.loads(line)

    def wait_ready(self) -> None:
        answer = self._line(self.READY_TIMEOUT)
        if not answer.get("ready"):
            raise OSError(f"the delay line in {self.ns} said {answer!r} instead of ready")

    def request(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req).encode() + b"\n")
        answer = self._line(self.ANSWER_TIMEOUT)
        if not answer.get("ok"):
            raise ValueError(f"the delay line in {self.ns} refused {req!r}: {answer.get('error')}")
        return answer

    def set(self, direction: str, params: LineParams) -> None:
        self.request({"dir": direction, **vars(params)})

    def stats(self) -> dict:
        return self.request({"cmd": "stats"})


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m mptcrypt.topo.delayline", description=__doc__.split("\n")[0])
    ap.add_argument("--a", default=INTF_A, help="interface towards node1")
    ap.add_argument("--b", default=INTF_B, help="interface towards node2")
    ap.add_argument("--delay-us", type=int, default=0, help="initial delay of both directions")
    ap.add_argument("--jitter-us", type=int, default=0)
    ap.add_argument("--seed", type=int, default=None, help="random seed (jitter, reorder, duplicate)")
    args = ap.parse_args(argv)
    return run(args.a, args.b, args.seed, LineParams(delay_us=args.delay_us, jitter_us=args.jitter_us))


if __name__ == "__main__":
    sys.exit(main())
