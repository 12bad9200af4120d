"""No input makes Engine.handle raise (issue 12 item 12): random bytes, and real segments of every handshake
phase truncated, extended and with bytes overwritten, fed to engines in every state, in both directions."""

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mptcrypt.core.config import Config, Policy
from mptcrypt.core.events import Result

from enginepair import EnginePair
from pktkit import C_ADDR, S_ADDR, segment, syn_options
from test_engine_handshake import CISN, SISN, handshake, join_syn, mptcp_pair
from mptcrypt.wire.tcp import ACK, PSH


def corpus() -> list[bytes]:
    """Every packet that crossed the wire in a TCP handshake, an MPTCP handshake with a join, and data."""
    pair = EnginePair()
    handshake(pair)
    pair.send("c", segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [], b"data" * 10))
    mp = mptcp_pair()
    mp.send("c", join_syn())
    return pair.wire + mp.wire + [segment(C_ADDR, 40000, S_ADDR, 5000, 5, 0, 0x002, syn_options())]


CORPUS = corpus()


def engines():
    """A fresh engine, one after a handshake (client and server side), one under `required`."""
    pair = EnginePair()
    handshake(pair)
    req = EnginePair(server=Config(policy=Policy.REQUIRED))
    return [pair.eng["c"], pair.eng["s"], req.eng["s"], EnginePair().eng["c"]]


mutation = st.tuples(st.integers(0, 200), st.binary(min_size=1, max_size=4))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(CORPUS))), st.lists(mutation, max_size=4), st.integers(0, 1500),
       st.booleans(), st.sampled_from(range(4)))
def test_mutated_real_segments_never_raise(which, muts, cut, outbound, engine_index):
    pkt = bytearray(CORPUS[which])
    for pos, data in muts:
        pkt[pos % len(pkt):pos % len(pkt) + len(data)] = data
    pkt = bytes(pkt[:cut]) if cut < len(pkt) else bytes(pkt)
    eng = engines()[engine_index]
    assert isinstance(eng.handle(pkt, outbound, 1.0), Result)
    eng.handle_timer(1000.0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.booleans())
def test_random_bytes_never_raise(pkt, outbound):
    for eng in engines()[:2]:
        assert isinstance(eng.handle(pkt, outbound, 1.0), Result)


def test_sequence_numbers_far_behind_a_low_isn_do_not_overflow_the_extended_space():
    """An ISN below 2^31 and a segment 'before' it: the 64-bit extended sequence number would be negative."""
    pair = EnginePair()
    handshake(pair, cisn=5, sisn=7)
    for seq in (0xFFFF0000, 0x80000010):
        back = segment(C_ADDR, 40000, S_ADDR, 5000, seq, 8, ACK | PSH, [], b"x")
        assert isinstance(pair.eng["c"].handle(back, True, 1.0), Result)
        wire = segment(C_ADDR, 40000, S_ADDR, 5000, seq, 8, ACK | PSH, [], b"x")
        assert isinstance(pair.eng["s"].handle(wire, False, 1.0), Result)


def test_ipv4_header_length_zero_and_truncated_headers_are_dropped_not_raised():
    good = segment(C_ADDR, 40000, S_ADDR, 5000, 1, 0, ACK)
    for pkt in (bytes([0x40]) + good[1:], good[:10], good[:30], bytes([0x60]) + bytes(10), b"\x45"):
        for eng in engines()[:2]:
            assert isinstance(eng.handle(pkt, True, 1.0), Result)
    assert struct.calcsize("!H") == 2
