"""The compiled fast path (core/datapath.FastPath over crypto/_segment.c FlowTable) against the Python engine it
replaces for ordinary segments: the same packet sequence through two engine pairs, one with the fast path and one
without, gives the same bytes on the wire and to the kernels, the same verdicts, counters, per-subflow counts and
sequence references, on an MPTCP connection with a join, with MAC failures, REKEYs by bytes and by time, stale
signals, reordering, retransmissions and bit flips on the wire. And the switch: MPTCRYPT_FAST_PATH, and the
batched queue's C drain."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from cryptography.hazmat.primitives.asymmetric import x25519

from mptcrypt.constants import PubCipher
from mptcrypt.core.config import Config
from mptcrypt.crypto import pubkey, segment
from mptcrypt.wire.tcp import ACK, FIN, PSH, SYN, TCPOption

from enginepair import EnginePair
from pktkit import C2_ADDR, C_ADDR, S2_ADDR, S_ADDR, dss, mpc, mpj_syn, mpj_synack, segment as kseg, syn_options, \
    token

pytestmark = pytest.mark.skipif(segment.FlowTable is None, reason=f"fast path off: {segment.FAST_PATH_REASON}")

CISN, SISN = 1_000_000, 4_294_000_000  # the server's sequence space wraps past 2^32 during a run
CKEY, SKEY = b"ckey-mpt", b"skey-mpt"
# subflow 0 (MP_CAPABLE) and 1 (MP_JOIN): (client addr, client port, server addr, client ISN, server ISN)
SUBFLOWS = ((C_ADDR, 40000, S_ADDR, CISN, SISN), (C2_ADDR, 41000, S2_ADDR, 333, 444))
MP_PRIO = TCPOption(30, bytes((0x50, 0x01)))  # RFC 8684 §3.3.8, backup on: a signal the fast path leaves to Python
CONFIG = dict(rekey_bytes=6000, rekey_interval=7.0)
SUBFLOW_FIELDS = ("state", "out_ref", "in_ref", "in_ack_max", "bytes_out", "bytes_in", "segments_out",
                  "segments_in", "last_seen", "unmacked", "confirmed", "tx_rekey_bytes", "tx_rekey_time")


@pytest.fixture(autouse=True)
def fixed_keypairs(monkeypatch):
    """Both runs must derive the same keys: every public-key pair is one fixed X25519 key, not the OS's."""

    def generate(cipher):
        assert cipher == PubCipher.X25519
        priv = x25519.X25519PrivateKey.from_private_bytes(bytes(range(32)))
        return pubkey.KeyPair(cipher, priv, priv.public_key().public_bytes_raw())

    monkeypatch.setattr(pubkey, "generate", generate)


class Run:
    """One engine pair driven by a list of operations; `transcript` is everything observable."""

    def __init__(self, fast: bool):
        self.pair = EnginePair(Config(**CONFIG), Config(**CONFIG), fast_path=fast)
        self.fast_handled = 0
        for eng in self.pair.eng.values():
            if eng.fast is not None:
                eng.fast.packet = self._counting(eng.fast.packet)
        self.transcript: list = []
        self.held: list[bytes] = []  # wire packets kept back, delivered later (reordering) or again (replay)
        self.sent: list[bytes] = []  # every wire packet so far
        self.corrupt_next = False
        self.hold_next = False
        self.pair.tap = self._tap
        # kernel next seq per (side, subflow)
        self.next = {("c", i): sf[3] + 1 for i, sf in enumerate(SUBFLOWS)}
        self.next.update({("s", i): sf[4] + 1 for i, sf in enumerate(SUBFLOWS)})
        self._connect()

    def _counting(self, packet):
        def counted(*args):
            out = packet(*args)
            self.fast_handled += out is not None
            return out
        return counted

    def _tap(self, p: bytes) -> bytes | None:
        self.sent.append(p)
        if self.corrupt_next:
            self.corrupt_next = False
            p = p[:-1] + bytes([p[-1] ^ 1]) if len(p) > 60 else p[:40] + bytes([p[40] ^ 1]) + p[41:]
        if self.hold_next:
            self.hold_next = False
            self.held.append(p)
            return None
        return p

    def kernel(self, side: str, i: int, flags: int, opts=(), payload: bytes = b"", seq: int | None = None) -> bytes:
        ca, cp, sa, _, _ = SUBFLOWS[i]
        seq = self.next[(side, i)] if seq is None else seq
        ack = self.next[("s" if side == "c" else "c", i)]
        if side == "c":
            return kseg(ca, cp, sa, 5000, seq, ack, flags, opts, payload)
        return kseg(sa, 5000, ca, cp, seq, ack, flags, opts, payload)

    def _connect(self) -> None:
        p = self.pair
        p.send("c", kseg(C_ADDR, 40000, S_ADDR, 5000, CISN, 0, SYN, syn_options(mpc(4))))
        p.send("s", kseg(S_ADDR, 5000, C_ADDR, 40000, SISN, CISN + 1, SYN | ACK,
                         syn_options(mpc(12, SKEY), ts=False)))
        p.send("c", self.kernel("c", 0, ACK, [mpc(20, CKEY, SKEY)]))
        p.send("c", kseg(C2_ADDR, 41000, S2_ADDR, 5000, 333, 0, SYN, syn_options(mpj_syn(token(SKEY), b"NNNN"))))
        p.send("s", kseg(S2_ADDR, 5000, C2_ADDR, 41000, 444, 334, SYN | ACK,
                         syn_options(mpj_synack(b"h" * 8, b"RRRR"), ts=False)))
        p.send("c", self.kernel("c", 1, ACK, [dss(1, 2, 1, 0)]))

    # --- operations (each appends what it observed to the transcript) ---------------------------------------
    def do(self, op) -> None:
        kind, side, i, n = op
        p, before = self.pair, len(self.sent)
        if kind == "data":
            pkt = self.kernel(side, i, ACK | PSH, [dss(7, 9, 1, n)], bytes([n & 0xFF]) * n)
            self.next[(side, i)] += n
            got = p.send(side, pkt)
        elif kind == "ack":
            got = p.send(side, self.kernel(side, i, ACK, [dss(7, 9, 1, 0)]))
        elif kind == "retransmit":  # a range the kernel sent before, with other boundaries
            start = max(SUBFLOWS[i][3 if side == "c" else 4] + 1, self.next[(side, i)] - n - 700)
            got = p.send(side, self.kernel(side, i, ACK, [dss(7, 9, 1, n)], b"r" * n, seq=start))
        elif kind == "signal":
            got = p.send(side, self.kernel(side, i, ACK, [MP_PRIO]))
        elif kind == "corrupt":
            self.corrupt_next = True
            got = []
        elif kind == "hold":
            self.hold_next = True
            got = []
        elif kind == "release":  # reordering: the held packets arrive now, in reverse
            got = [(p.inject("s" if pkt[16:20] in (S_ADDR, S2_ADDR) else "c", pkt), pkt) for pkt in self.held[::-1]]
            self.held.clear()
        elif kind == "replay":  # an attacker (or the network) sends an old wire packet again
            old = self.sent[n % len(self.sent)] if self.sent else b""
            got = [p.inject("s" if old[16:20] in (S_ADDR, S2_ADDR) else "c", old)] if old else []
        elif kind == "mutate":  # an on-path attacker flips one bit of the newest wire packet and sends it on
            old = bytearray(self.sent[-1]) if self.sent else bytearray()
            if old:
                old[(n >> 3) % len(old)] ^= 1 << (n & 7)
            got = [p.inject("s" if old[16:20] in (S_ADDR, S2_ADDR) else "c", bytes(old))] if old else []
        elif kind == "tick":
            p.tick(n / 10)
            got = []
        elif kind == "fin":
            got = p.send(side, self.kernel(side, i, ACK | FIN, [dss(7, 9, 1, 0)]))
            self.next[(side, i)] += 1
        self.transcript.append((op, got, self.sent[before:]))

    def final(self) -> dict:
        out = {}
        for side, eng in self.pair.eng.items():
            out[side] = {"stats": eng.stats(), "sessions": eng.sessions(),
                         "flows": {k: tuple(getattr(sf, f) for f in SUBFLOW_FIELDS)
                                   for k, sf in eng._flows.items()}}
        out["rx"] = self.pair.rx
        return out


def both(ops) -> tuple[Run, Run]:
    runs = Run(fast=False), Run(fast=True)
    for run in runs:
        for op in ops:
            run.do(op)
    return runs


def assert_same(ops) -> Run:
    ref, fast = both(ops)
    for step, (a, b) in enumerate(zip(ref.transcript, fast.transcript)):
        assert a == b, f"step {step}: {a[0]}"
    assert ref.final() == fast.final()
    assert ref.fast_handled == 0
    return fast


SIDES, SUBS = st.sampled_from("cs"), st.sampled_from((0, 1))
OPS = st.one_of(
    st.tuples(st.just("data"), SIDES, SUBS, st.integers(1, 1448)),
    st.tuples(st.just("ack"), SIDES, SUBS, st.just(0)),
    st.tuples(st.just("retransmit"), SIDES, SUBS, st.integers(1, 1448)),
    st.tuples(st.sampled_from(("signal", "corrupt", "hold", "release", "fin")), SIDES, SUBS, st.just(0)),
    st.tuples(st.just("replay"), SIDES, SUBS, st.integers(0, 1000)),
    st.tuples(st.just("mutate"), SIDES, SUBS, st.integers(0, 8 * 1600)),
    st.tuples(st.just("tick"), SIDES, SUBS, st.integers(1, 40)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(OPS, max_size=60))
@example([("fin", "c", 1, 0), ("fin", "s", 1, 0)])  # Python changes a subflow after the table's last pull
def test_any_operation_sequence_gives_the_same_bytes_verdicts_and_counters(ops):
    assert_same(ops)


def test_scripted_stream_crosses_every_case_the_fast_path_leaves_to_python():
    """Bulk both ways on both subflows, with a MAC failure, REKEYs by bytes (6000) and by time (7 s), a stale
    signal (a replayed MP_PRIO), a fresh signal, reordering and a retransmission: all equal, and most segments
    went through the compiled path."""
    bulk = [("data", side, i, 1448) for _ in range(12) for side in "cs" for i in (0, 1)]
    acks = [("ack", side, i, 0) for side in "cs" for i in (0, 1)]
    before = bulk[:10] + [("signal", "c", 0, 0)] + bulk[10:20]
    # the corrupted segment is the first of the client's next generation on subflow 0, and a time REKEY (8 s)
    # follows: the client waits for an ack of that generation before it moves on again (§4), the subflow lives
    after = ([("corrupt", "c", 0, 0), ("data", "c", 0, 1000)]
             + [("hold", "c", 1, 0), ("data", "c", 1, 900), ("data", "c", 1, 900), ("release", "c", 1, 0)]
             + [("tick", "c", 0, 80)] + bulk[20:] + acks + [("retransmit", "s", 1, 1000)]
             + [("replay", "c", 0, 0)])
    first = assert_same(before)
    signal_wire = next(wire for op, _, wire in first.transcript if op[0] == "signal")
    # replayed once newer segments verified, still under the same generation: a stale signal, not a MAC failure
    fast = assert_same(before + [("replay", "c", 0, first.sent.index(signal_wire[0]))] + after)
    s, c = fast.final()["s"]["stats"], fast.final()["c"]["stats"]
    assert s["mac_failures"] == 1 and s["stale_signals_dropped"] == 1
    assert c["rekeys_sent"] >= 2 and s["rekeys_followed"] >= 2 and s["rekeys_sent"] >= 2
    assert fast.fast_handled > len(fast.transcript) // 2
    assert fast.fast_handled < s["packets"] + c["packets"]


def test_counts_are_right_whichever_path_handled_the_segment():
    """stats() and sessions() read what the table counted: bytes per subflow and the global counters."""
    fast = Run(fast=True)
    for k in range(5):
        fast.do(("data", "c", 0, 1000))
        fast.do(("ack", "s", 0, 0))
    assert fast.fast_handled >= 15
    c, s = fast.pair.eng["c"], fast.pair.eng["s"]
    (row,) = [r for r in c.sessions() if r["mptcp"]]
    assert row["subflows"][0]["bytes_out"] == 5000
    assert s.stats()["bytes_decrypted"] == 5000 and c.stats()["bytes_encrypted"] == 5000


def test_a_dropped_flow_leaves_the_table():
    fast = Run(fast=True)
    fast.do(("data", "c", 0, 100))
    fast.do(("data", "c", 0, 100))
    c = fast.pair.eng["c"]
    assert len(c.fast.table) == 2 and len(c.fast.installed) == 2
    for sf in list(c._flows.values()):
        c._t.drop_flow(sf)
    assert len(c.fast.table) == 0 and not c.fast.installed


def env_choice(value: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != segment.ENV_FAST_PATH}
    if value is not None:
        env[segment.ENV_FAST_PATH] = value
    code = ("from mptcrypt.crypto import segment as s; from mptcrypt.core.engine import Engine;"
            "print(s.FlowTable is not None, Engine().fast is not None, s.FAST_PATH_REASON)")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_the_switch_turns_the_fast_path_off_and_a_typo_is_an_error():
    assert env_choice(None).stdout.startswith("True True on")
    assert env_choice("OFF").stdout.startswith("False False off")
    assert env_choice("on").stdout.startswith("True True on")
    bad = env_choice("no")
    assert bad.returncode != 0 and segment.ENV_FAST_PATH in bad.stderr


# ------------------------------------------------------------------------------ the queue's C drain (_nfq.c)
def nfq_message(packet_id: int, hook: int, payload: bytes) -> bytes:
    """One NFQNL_MSG_PACKET as the kernel sends it: packet header attribute, then the payload attribute."""
    def attr(kind, data):
        n = 4 + len(data)
        return struct.pack("=HH", n, kind) + data + bytes(-n % 4)

    body = struct.pack("=BBH", 2, 0, 0) + attr(1, struct.pack("!IHB", packet_id, 0x0800, hook)) + attr(10, payload)
    return struct.pack("=IHHII", 16 + len(body), (3 << 8) | 0, 0, 0, 0) + body


def test_the_drain_seals_in_c_until_the_first_packet_it_leaves_to_python():
    """recv_batch_fast over a datagram socketpair: the first protected segment is opened in C (counted by the
    server's table, not returned); an unknown flow's segment is returned, and so is the protected one after it,
    in order, for the engine (which then opens it through its own fast path)."""
    nfq = pytest.importorskip("mptcrypt.daemon._nfq")
    run = Run(fast=True)
    run.hold_next = True
    run.do(("data", "c", 0, 500))
    run.hold_next = True
    run.do(("data", "c", 0, 600))
    first, second = run.held
    server = run.pair.eng["s"]
    unknown = kseg(bytes((10, 9, 9, 9)), 1234, S_ADDR, 5000, 1, 1, ACK, [], b"x")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        for i, pkt in enumerate((first, unknown, second), start=1):
            a.send(nfq_message(i, 1, pkt))  # hook 1: LOCAL_IN
        before = server.stats()["segments_verified"]
        got, inbound, outbound, verdict_errno = nfq.recv_batch_fast(b.fileno(), 64, 0, server.fast.table, 5.0)
    assert [(pid, hook, payload) for pid, hook, payload in got] == [(2, 1, unknown), (3, 1, second)]
    assert (inbound, outbound) == (1, 0)
    assert verdict_errno != 0  # a socketpair is no netlink socket: the one verdict was sent, and refused
    assert server.stats()["segments_verified"] == before + 1
    assert server.handle(second, False, 5.0).packet is not None
    assert server.stats()["segments_verified"] == before + 2


def test_the_icmp_clamp_hides_the_fast_path_while_a_lowered_mtu_needs_its_look():
    """TooBigClamp.handle resends outbound segments longer than a path MTU it lowered: the queue's C drain must
    not seal those past it."""
    from mptcrypt.core.engine import Engine
    from mptcrypt.daemon.icmp_edge import TooBigClamp

    engine = Engine(fast_path=True)
    clamp = TooBigClamp(engine)
    assert clamp.fast is engine.fast
    clamp._reported[bytes((10, 0, 1, 1))] = 1400
    assert clamp.fast is None
    assert TooBigClamp(engine, resend=False).fast is engine.fast
