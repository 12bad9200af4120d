"""REKEY under loss (docs/protocol.md §4): a sender moves to a new key generation only once the peer's verified
ack covers the first sequence number it sent under its current one, so a receiver that looks one generation ahead
never falls two behind. Before that rule, losing the first segment of a generation and then a time-based REKEY
killed the subflow: every later segment failed its MAC. Both tests run with the fast path off and on."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mptcrypt.core.config import Config
from mptcrypt.crypto import segment as seg_cipher
from mptcrypt.wire.tcp import ACK, PSH

from enginepair import EnginePair
from pktkit import C_ADDR, S_ADDR, decode, segment
from test_engine_handshake import CISN, SISN, handshake

FAST = [False] + ([True] if seg_cipher.FlowTable is not None else [])
ENDS = {"c": (C_ADDR, 40000, S_ADDR, 5000, CISN), "s": (S_ADDR, 5000, C_ADDR, 40000, SISN)}


def kernel_segment(side: str, seq_off: int, ack_off: int, payload: bytes = b"") -> bytes:
    """`side`'s kernel segment at offsets from both ISNs + 1 (data with PSH, or a pure ACK)."""
    src, sport, dst, dport, isn = ENDS[side]
    peer_isn = ENDS[EnginePair.other(side)][4]
    return segment(src, sport, dst, dport, isn + 1 + seq_off, peer_isn + 1 + ack_off, ACK | (PSH if payload else 0),
                   [], payload)


@pytest.mark.parametrize("fast", FAST)
def test_losing_a_generations_first_segment_then_a_time_rekey_keeps_the_stream(fast):
    pair = EnginePair(client=Config(rekey_interval=10.0), server=Config(rekey_interval=10.0), fast_path=fast)
    handshake(pair)
    data = [bytes([k]) * 1000 for k in range(5)]

    def send(k):
        return pair.send("c", kernel_segment("c", 1000 * k, 0, data[k]))

    def ack(upto):
        pair.send("s", kernel_segment("s", 0, 1000 * upto))

    assert len(send(0)) == 1
    ack(1)
    pair.now = 11.0
    pair.drop_next_wire = 1
    assert send(1) == []  # the first segment of generation 1 is lost
    pair.now = 22.0
    # due again, but nothing of generation 1 is acked: the client stays there and the server follows it
    assert len(send(2)) == 1
    ack(1)  # (a duplicate ack: segment 1 is missing)
    assert len(send(1)) == 1  # the retransmission verifies too
    ack(3)
    pair.now = 33.0
    got = send(3) + send(4)  # generation 2 now: the peer has acked bytes of generation 1
    c, s = pair.eng["c"].stats(), pair.eng["s"].stats()
    assert [decode(p)[2] for p in got] == data[3:5]
    assert c["rekeys_sent"] == 2 and s["rekeys_followed"] == 2
    assert s["mac_failures"] == 0 and c["mac_failures"] == 0


class Peer:
    """One side's kernel, enough TCP for the test: fixed 500-byte segments, cumulative acks, go-back-N
    retransmission from the peer's ack; the payload of segment k is bytes([k % 256]) * 500."""

    SIZE = 500

    def __init__(self):
        self.next = 0  # bytes sent so far (offset from ISN + 1)
        self.una = 0  # acked by the peer
        self.rcv = 0  # received in order from the peer
        self.ooo: dict[int, bytes] = {}  # out-of-order segments from the peer by offset
        self.stream = bytearray()  # what arrived in order

    def payload(self, off: int) -> bytes:
        return bytes([off // self.SIZE % 256]) * self.SIZE

    def receive(self, packet: bytes, peer_isn: int, own_isn: int) -> None:
        _, h, payload = decode(packet)
        self.una = max(self.una, (h.ack - own_isn - 1) & 0xFFFFFFFF)
        off = (h.seq - peer_isn - 1) & 0xFFFFFFFF
        if payload and off >= self.rcv:
            self.ooo[off] = payload
        while self.rcv in self.ooo:
            chunk = self.ooo.pop(self.rcv)
            self.stream += chunk
            self.rcv += len(chunk)


@pytest.mark.parametrize("fast", FAST)
@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from("cs"), st.sampled_from(("new", "retransmit", "ack")),
                                st.booleans(), st.sampled_from((0.0, 0.0, 4.0))), min_size=10, max_size=60))
def test_random_losses_across_several_rekeys_never_kill_the_stream(fast, steps):
    """Both directions send data, retransmit and ack; any packet may be lost; REKEYs run by bytes (3000) and by
    time (10 s). After a loss-free catch-up and more data, each side has the other's whole stream, both directions
    still move to new generations, and no MAC ever failed."""
    cfg = dict(rekey_bytes=3000, rekey_interval=10.0)
    pair = EnginePair(client=Config(**cfg), server=Config(**cfg), fast_path=fast)
    handshake(pair)
    peers = {"c": Peer(), "s": Peer()}

    def deliver(side, packet, lose):
        pair.drop_next_wire = int(lose)
        other = EnginePair.other(side)
        for p in pair.send(side, packet):
            peers[other].receive(p, ENDS[side][4], ENDS[other][4])

    def step(side, what, lose):
        me = peers[side]
        if what == "retransmit" and me.una < me.next:
            deliver(side, kernel_segment(side, me.una, me.rcv, me.payload(me.una)), lose)
        elif what == "ack":
            deliver(side, kernel_segment(side, me.next, me.rcv), lose)
        else:
            off = me.next
            me.next += Peer.SIZE
            deliver(side, kernel_segment(side, off, me.rcv, me.payload(off)), lose)

    for side, what, lose, dt in steps:
        pair.now += dt
        step(side, what, lose)
    for _ in range(200):  # catch up without loss: retransmit what is unacked, then ack
        if all(p.una == p.next for p in peers.values()):
            break
        pair.now += 1.0
        for side in "cs":
            step(side, "retransmit" if peers[side].una < peers[side].next else "ack", False)
    rekeys = {side: pair.eng[side].stats()["rekeys_sent"] for side in "cs"}
    for _ in range(8):  # the subflow lives on: 4000 more bytes each way, both directions move on again
        pair.now += 4.0
        for side in "cs":
            step(side, "new", False)
        for side in "cs":
            step(side, "ack", False)
    for side in "cs":
        me, other = peers[side], peers[EnginePair.other(side)]
        assert pair.eng[side].stats()["rekeys_sent"] > rekeys[side]
        assert me.una == me.next, f"{side}'s data never got through"
        assert bytes(other.stream) == b"".join(me.payload(o) for o in range(0, me.next, Peer.SIZE))
        assert pair.eng[side].stats()["mac_failures"] == 0
