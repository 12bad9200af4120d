"""In-memory connection setup cost: µs per packet of SYN, SYN-ACK, INIT1, INIT2, third ACK, first data, FIN
and an MPTCP join's SYN / SYN-ACK / ACK, through two engines, for fresh, resumed and MPTCP connections.

    .venv/bin/python bench/bench_setup.py [--conns 300] [--json out.json] [--profile fresh|resumed|mptcp]

Each connection is what the connections/s benchmark does through the daemons (connect, 1 KiB each way, close),
built as a Linux kernel would send it, handled by the client's engine (outbound) and the server's (inbound) and
back. Every `Engine.handle` call is timed and filed under the packet it handled and the side (`c out`: the
client's daemon on its kernel's packet, `s in`: the server's daemon on what arrived, ...). The table gives the
median µs per packet kind and side and the total engine µs per connection (both daemons). X25519 (the fresh
handshake's public-key operations, one per side) is timed alone beside it: what is left is setup overhead.
`--profile MODE` prints a cProfile of MODE's connections instead. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import pstats
import statistics
import struct
import sys
import time
import timeit
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mptcrypt.constants import Msg  # noqa: E402
from mptcrypt.core.config import Config  # noqa: E402
from mptcrypt.core.engine import Engine  # noqa: E402
from mptcrypt.core.events import Verdict  # noqa: E402
from mptcrypt.wire.ip import build_ip_header  # noqa: E402
from mptcrypt.wire.segment import parse_segment  # noqa: E402
from mptcrypt.wire.tcp import ACK, FIN, PSH, SYN, TCPHeader, TCPOption, encode_options, pad_options  # noqa: E402

C_ADDR, S_ADDR = bytes((10, 0, 1, 2)), bytes((10, 0, 1, 1))
C2_ADDR, S2_ADDR = bytes((10, 0, 2, 2)), bytes((10, 0, 2, 1))
PORT = 5100
MODES = ("fresh", "resumed", "mptcp")


def seg(src, sport, dst, dport, seq, ack, flags, opts=(), payload=b"") -> bytes:
    tcp = TCPHeader(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, 502,
                    options=pad_options(encode_options(list(opts))))
    body = tcp.encode(payload, src, dst)
    return build_ip_header(src, dst, len(body)) + body


def syn_opts(mptcp: TCPOption | None = None, ts: bool = True) -> list[TCPOption]:
    opts = [TCPOption(2, b"\x05\xb4")]
    if ts:
        opts += [TCPOption(4), TCPOption(8, struct.pack("!II", 1000, 0))]
    opts += [TCPOption(1), TCPOption(3, b"\x07")]
    return opts + ([mptcp] if mptcp is not None else [])


def mpc(key_a: bytes = b"", key_b: bytes = b"") -> TCPOption:  # MP_CAPABLE v1, RFC 8684 §3.1
    return TCPOption(30, bytes((0x01, 0x81)) + key_a + key_b)


def dss(data_ack: int, dsn: int, ssn: int, length: int) -> TCPOption:  # 64-bit data ack and mapping
    return TCPOption(30, struct.pack("!BBQQIH", 0x20, 0x0F, data_ack, dsn, ssn, length) + b"\x00\x00")


def kind_of(packet: bytes) -> str:
    """What a packet is, for the table: SYN, SYN-ACK, INIT1, INIT2, join SYN / SYN-ACK, data, FIN, ACK."""
    s = parse_segment(packet)
    join = s.mptcp_join() is not None
    if s.flags & SYN:
        return ("join " if join else "") + ("SYN-ACK" if s.flags & ACK else "SYN")
    marker = s.marker()
    if marker is not None:
        return {Msg.INIT1: "INIT1", Msg.INIT2: "INIT2"}.get(marker, f"marker {marker}")
    if s.flags & FIN:
        return "FIN"
    return "data" if s.payload_len else "ACK"


class TimedPair:
    """Two engines and a lossless wire; every handle() call is timed under (packet kind, side)."""

    def __init__(self, config: Config, timed: bool = True):
        self.eng = {"c": Engine(config), "s": Engine(config)}
        self.timed = timed  # False: no samples kept (bench_memory counts every byte the engines hold)
        self.samples: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.per_conn: list[float] = []
        self._conn_us = 0.0
        self.now = 1.0

    def send(self, side: str, packet: bytes, label: str | None = None) -> list[bytes]:
        """`side`'s kernel sends `packet`; returns what the peer kernel received. Injected packets travel too."""
        got = []
        queue = [(side, True, packet, label)]
        while queue:
            s, outbound, p, lab = queue.pop(0)
            lab = lab or kind_of(p)
            eng = self.eng[s]
            t0 = time.perf_counter()
            r = eng.handle(p, outbound, self.now)
            if self.timed:
                us = (time.perf_counter() - t0) * 1e6
                self.samples[(lab, f"{s} {'out' if outbound else 'in'}")].append(us)
                self._conn_us += us
            other = "s" if s == "c" else "c"
            if r.verdict is Verdict.ACCEPT:
                if outbound:
                    queue.append((other, False, r.packet or p, lab))
                else:
                    got.append(r.packet or p)
            for inj in r.inject:
                queue.append((other, False, inj, None))
        return got

    def connection(self, i: int, mptcp: bool, close: bool = True) -> None:
        """One connection as the connections/s benchmark makes it: connect, 1 KiB each way, close (and for MPTCP
        a join on the second path once the first subflow is established). Client address and port from `i`
        (40,000 ports per address), so any number of connections can be open at once with `close=False`."""
        self._conn_us = 0.0
        self.now += 0.001
        sport, c_isn, s_isn = 20000 + i % 40000, 1000 + i * 7919, 5000 + i * 104729
        ckey, skey = hashlib.sha256(b"c%d" % i).digest()[:8], hashlib.sha256(b"s%d" % i).digest()[:8]
        c, s = (C_ADDR[:2] + bytes((1 + i // 40000 // 250, 2 + i // 40000 % 250)), sport), (S_ADDR, PORT)
        tx = lambda a, b, *rest: seg(a[0], a[1], b[0], b[1], *rest)  # noqa: E731
        self.send("c", tx(c, s, c_isn, 0, SYN, syn_opts(mpc() if mptcp else None)))
        self.send("s", tx(s, c, s_isn, c_isn + 1, SYN | ACK, syn_opts(mpc(skey) if mptcp else None, ts=False)))
        self.send("c", tx(c, s, c_isn + 1, s_isn + 1, ACK, [mpc(ckey, skey)] if mptcp else []))
        data = b"x" * 1024
        d_out = [dss(1, 1, 1, len(data))] if mptcp else []
        assert self.send("c", tx(c, s, c_isn + 1, s_isn + 1, ACK | PSH, d_out, data)) != [], "first data lost"
        self.send("s", tx(s, c, s_isn + 1, c_isn + 1 + len(data), ACK | PSH, d_out, data))
        if mptcp:
            self.join(i, skey, c_isn, s_isn)
        if not close:
            return
        self.send("c", tx(c, s, c_isn + 1 + len(data), s_isn + 1 + len(data), FIN | ACK))
        self.send("s", tx(s, c, s_isn + 1 + len(data), c_isn + 2 + len(data), FIN | ACK))
        self.send("c", tx(c, s, c_isn + 2 + len(data), s_isn + 2 + len(data), ACK), label="last ACK")
        self.per_conn.append(self._conn_us)

    def join(self, i: int, skey: bytes, c_isn: int, s_isn: int) -> None:
        tok = hashlib.sha256(skey).digest()[:4]
        c, s = (C2_ADDR, 30000 + i % 30000), (S2_ADDR, PORT)
        j_c, j_s = c_isn + 55555, s_isn + 77777
        syn = seg(*c, *s, j_c, 0, SYN, syn_opts(TCPOption(30, bytes((0x10, 2)) + tok + b"NNNN")))
        assert self.send("c", syn), "join SYN refused"
        self.send("s", seg(*s, *c, j_s, j_c + 1, SYN | ACK,
                           syn_opts(TCPOption(30, bytes((0x10, 0)) + b"h" * 8 + b"RRRR"), ts=False)))
        self.send("c", seg(*c, *s, j_c + 1, j_s + 1, ACK, [TCPOption(30, bytes((0x10, 0)) + b"m" * 20)]),
                  label="join ACK")


def x25519_us(n: int = 2000) -> float:
    """One side's public-key work in a fresh handshake: X25519 key generation + exchange (the daemons reuse the
    key pair for key_lifetime, so per connection it is one exchange each; both numbers are printed)."""
    from cryptography.hazmat.primitives.asymmetric import x25519
    peer = x25519.X25519PrivateKey.generate().public_key()
    priv = x25519.X25519PrivateKey.generate()
    return min(timeit.repeat(lambda: priv.exchange(peer), number=n, repeat=5)) / n * 1e6


def run_mode(mode: str, conns: int) -> TimedPair:
    pair = TimedPair(Config(resume=mode == "resumed"))
    if mode == "resumed":  # one full handshake first, the rest resume
        pair.connection(10**6, False)
        pair.samples.clear()
        pair.per_conn.clear()
    for i in range(conns):
        pair.connection(i, mode == "mptcp")
    st_c, st_s = pair.eng["c"].stats(), pair.eng["s"].stats()
    expect_pk = 1 if mode == "resumed" else conns  # the resumed mode's one full handshake first
    if st_c["mac_failures"] or st_s["mac_failures"] or st_c["pk_handshakes"] != expect_pk:
        raise RuntimeError(f"{mode}: unexpected counters {st_c}")
    if mode == "mptcp" and st_s["joins_zero_pk"] != conns:
        raise RuntimeError(f"mptcp: {st_s['joins_zero_pk']} of {conns} joins keyed without public-key work")
    return pair


def measure(conns: int) -> dict:
    out: dict = {"x25519_exchange_us": round(x25519_us(), 2), "modes": {}}
    for mode in MODES:
        pair = run_mode(mode, conns)
        per_packet = {f"{kind} [{side}]": round(statistics.median(v), 2) for (kind, side), v in pair.samples.items()}
        out["modes"][mode] = {"per_connection_us": round(statistics.median(pair.per_conn), 1),
                              "per_packet_us": per_packet}
    return out


def table(result: dict) -> str:
    kinds = []
    for m in result["modes"].values():
        kinds += [k for k in m["per_packet_us"] if k not in kinds]
    lines = ["| packet [daemon] | " + " | ".join(f"{m} µs" for m in result["modes"]) + " |",
             "|---|" + "---|" * len(result["modes"])]
    for k in kinds:
        lines.append(f"| {k} | " + " | ".join(f"{m['per_packet_us'][k]:.1f}" if k in m["per_packet_us"] else ""
                                               for m in result["modes"].values()) + " |")
    lines.append("| **engine µs per connection, both daemons** | "
                 + " | ".join(f"**{m['per_connection_us']:.0f}**" for m in result["modes"].values()) + " |")
    lines.append(f"\nX25519 exchange alone: {result['x25519_exchange_us']:.1f} µs (a fresh handshake does one per "
                 "daemon; key generation is amortised over key_lifetime)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conns", type=int, default=300, help="connections per mode (default 300)")
    p.add_argument("--json", type=Path, help="also write the result here")
    p.add_argument("--profile", choices=MODES, help="print a cProfile of this mode's connections instead")
    args = p.parse_args(argv)
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run_mode(args.profile, args.conns)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(35)
        return 0
    result = measure(args.conns)
    result["_meta"] = {"conns": args.conns, "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    return emit(result, table(result), args.json)


def emit(result: dict, text: str, path: Path | None) -> int:
    """Print the table and the JSON object; also write the JSON to `path` when given."""
    print(text)
    print(json.dumps(result))
    if path:
        path.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
