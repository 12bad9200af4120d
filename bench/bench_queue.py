#!/usr/bin/env python3
"""What the NFQUEUE edge costs per packet, per backend (issue 14 direction 2: measure before batching).

In a private network namespace (`unshare -n`, nothing named, gone when the run ends) a sender floods 1400-byte UDP
datagrams over loopback (MTU 1500) into an NFQUEUE rule; a worker process reads them through a backend with an
engine that only accepts (the queue I/O alone), either unchanged or with the payload handed back as a new packet
(what the daemon does for every protected segment). Reported per backend and case: packets/s the worker handled
and its CPU µs per packet (user + system, so the kernel's side of the recv and the verdict is in it).

Two more cases put a real engine behind the queue: a sender writes one protected flow's 1448-byte data segment
(127.0.0.1:40000 -> :5000, the same segment again and again, as a retransmission) through a raw socket, the
worker's engine (keyed in memory, bench_engine.keyed_pair) seals each one: `protect` with the compiled fast path
(with the batched backend the segment never enters Python: _nfq.recv_batch_fast), `protect-python` without it
(MPTCRYPT_FAST_PATH=off, the Python engine per segment). The sealed segments are dropped in raw PREROUTING.

    sudo python bench/bench_queue.py [--json out.json] [--seconds 2] [--backends netfilterqueue,batched]
        [--cases accept,modify,protect,protect-python]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time

QUEUE = 9
PORT = 9999
TCP_PORT = 5000
CASES = ("accept", "modify", "protect", "protect-python")


class AcceptEngine:
    """Accepts everything; with `modify` hands each packet back as a new payload (a copy)."""

    def __init__(self, modify: bool):
        from mptcrypt.core.events import Result, Verdict
        self._same = Result(Verdict.ACCEPT)
        self._result, self._verdict, self.modify, self.packets = Result, Verdict.ACCEPT, modify, 0

    def handle(self, packet: bytes, outbound: bool, now: float):
        self.packets += 1
        return self._result(self._verdict, bytes(packet)) if self.modify else self._same

    def next_timer(self):
        return None

    def handle_timer(self, now):
        return []

    def events(self):
        return []


def worker(backend: str, case: str, seconds: float) -> dict:
    from mptcrypt.daemon.queue_batched import make_queue_worker
    segment = b""
    if case.startswith("protect"):
        from bench_engine import keyed_pair
        loopback = bytes((127, 0, 0, 1))
        engine, _peer, segment, _wire, _ack, _wire_ack = keyed_pair(loopback, loopback,
                                                                     fast_path=case == "protect")
    else:
        engine = AcceptEngine(case == "modify")
    w, _why = make_queue_worker(backend, engine, QUEUE, lambda p: None)
    w.bind()
    sel = selectors.DefaultSelector()
    sel.register(w.fileno(), selectors.EVENT_READ)
    print("ready", segment.hex(), flush=True)  # the sender writes this segment (protect cases)
    sys.stdin.readline()  # the sender has started
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    while time.monotonic() - t0 < seconds:
        if sel.select(0.1):
            w.read()
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    w.unbind()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    packets = w.stats()["nfq_packets"]
    out = {"backend": backend, "case": case, "packets": packets, "seconds": t1 - t0,
           "packets_per_s": packets / (t1 - t0), "cpu_us_per_packet": cpu / max(packets, 1) * 1e6}
    if segment:
        stats = engine.stats()
        out["fast_path"] = w.stats().get("nfq_fast_path", 0)
        assert stats["segments_protected"] >= packets, stats  # every queued segment was sealed
    return out


def sender(seconds: float, segment_hex: str) -> None:
    if segment_hex:  # a TCP segment, IP header included
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        data, to = bytes.fromhex(segment_hex), ("127.0.0.1", 0)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        data, to = bytes(1400), ("127.0.0.1", PORT)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(256):
            try:
                s.sendto(data, to)
            except OSError:
                pass


def in_namespace(args) -> int:
    """Runs inside the private namespace: loopback, the rule, then each (backend, case) with a fresh sender."""
    subprocess.run(["ip", "link", "set", "lo", "up", "mtu", "1500"], check=True)
    for proto, port in (("udp", PORT), ("tcp", TCP_PORT)):
        subprocess.run(["iptables", "-I", "OUTPUT", "-o", "lo", "-p", proto, "--dport", str(port), "-j", "NFQUEUE",
                        "--queue-num", str(QUEUE)], check=True)
    # the sealed segments stop here: no socket answers them with a reset
    subprocess.run(["iptables", "-t", "raw", "-I", "PREROUTING", "-i", "lo", "-p", "tcp", "--dport", str(TCP_PORT),
                    "-j", "DROP"], check=True)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", PORT))  # never read: the kernel drops what does not fit, cheaply
    rows = []
    for backend in args.backends.split(","):
        for case in args.cases.split(","):
            w = subprocess.Popen([sys.executable, __file__, "--worker", backend, case, str(args.seconds)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            ready, _, segment_hex = w.stdout.readline().strip().partition(" ")
            assert ready == "ready"
            s = subprocess.Popen([sys.executable, __file__, "--sender", str(args.seconds + 1), segment_hex])
            time.sleep(0.2)
            w.stdin.write("go\n")
            w.stdin.flush()
            rows.append(json.loads(w.stdout.readline()))
            w.wait()
            s.wait()
    print(json.dumps(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--backends", default="netfilterqueue,batched")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--sender", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], float(args.worker[2]))), flush=True)
        return 0
    if args.sender:
        sender(float(args.sender[0]), args.sender[1] if len(args.sender) > 1 else "")
        return 0
    if args.in_namespace:
        return in_namespace(args)
    if os.geteuid() != 0:
        print("bench_queue needs root (a private network namespace and an NFQUEUE rule)", file=sys.stderr)
        return 77
    out = subprocess.run(["unshare", "-n", sys.executable, __file__, "--in-namespace", "--seconds", str(args.seconds),
                          "--backends", args.backends, "--cases", args.cases], check=True, capture_output=True,
                         text=True).stdout
    rows = json.loads(out.strip().splitlines()[-1])
    result = {"bench": "queue", "datagram_bytes": 1400, "seconds": args.seconds, "rows": rows}
    print("| backend | case | packets/s | CPU µs/packet | in C (fast path) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['case']} | {r['packets_per_s']:,.0f} | {r['cpu_us_per_packet']:.2f} | "
              f"{r.get('fast_path', '-')} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
