"""Review of the timestamps change (commit 9baca28: TCP timestamps stay on, seal writes the compact option form,
joins get restored timestamps, resumed MPTCP connections none), from an attacker who has read docs/protocol.md §5-§7.

1. The compaction, differentially: any option area (any kind and length, malformed ones, DSS of every flag
   combination and of wrong lengths, EOL in the middle, 0-40 bytes) through the reference and the compiled seal
   gives the same bytes or None for both; opening the sealed packet gives the compacted kernel packet in both;
   nothing ever has more than 40 option bytes (the compact form is never longer than the area it came from).
2. Tampering: every bit of the timestamps option and of the short DSS on the wire is covered by the MAC.
3. Handshake state: a join SYN that already carries TS gets no second one, a resumed one none restored; the
   SYN-ACK restore only when our kernel offered TS; retransmitted join SYNs and SYN-ACKs get the same restored TS as the first copy; an
   attacker's join SYN-ACK with TS decides nothing.
4. Readers of the DSS outside the engine (the attack tools' View) expand the 4-byte forms.
5. `_no_room`: never more than 40 option bytes, never plaintext, and what is counted.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mptcrypt.constants import MAC_OPTION_LEN, TCP_MAX_OPTION_SPACE, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP, SymCipher
from mptcrypt.core.events import Verdict
from mptcrypt.core.state import State
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.crypto import segment
from mptcrypt.wire.compact import compact_option_area
from mptcrypt.wire.tcp import (ACK, PSH, SYN, TCPOption, encode_options, mss_option, option_value, parse_options,
                               timestamp_option, wscale_option)

from enginepair import EnginePair
from pktkit import (C2_ADDR, C_ADDR, S2_ADDR, S_ADDR, decode, mpc, mpj_syn, mpj_synack, segment as tcp_segment,
                    token)
from test_engine_handshake import CISN, CKEY, SISN, SKEY, mptcp_pair

try:
    from mptcrypt.crypto import _segment
except ImportError:
    _segment = None

needs_c = pytest.mark.skipif(_segment is None, reason="extension not built (scripts/setup.sh builds it)")
FUZZ = settings(max_examples=int(os.environ.get("MPTCRYPT_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
NOP = TCPOption(1)
U32, U64 = st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 64) - 1)
IP4_LEN = 20
OPT_AT = IP4_LEN + 20  # where a plain IPv4 packet's TCP options start


# --- 1. differential fuzz of the compaction --------------------------------------------------------------------
@st.composite
def any_dss(draw) -> bytes:
    """A DSS option with any flags byte (every A / a / M / m / F combination and the reserved bits) and a length
    that matches its flags, matches them plus a checksum, or is anything else (malformed)."""
    flags = draw(st.integers(0, 255))
    ack_len = (8 if flags & 0x02 else 4) if flags & 0x01 else 0
    dsn_len = (8 if flags & 0x08 else 4) if flags & 0x04 else 0
    expected = 4 + ack_len + (dsn_len + 6 if dsn_len else 0)
    size = draw(st.sampled_from([expected, expected + 2, expected - 1, expected + 1, expected + 4])
                | st.integers(2, 40))
    size = max(2, min(size, 40))
    body = bytes((0x20 | draw(st.integers(0, 15)), flags)) + draw(st.binary(min_size=size, max_size=size))
    return (bytes((30, size)) + body)[:size]


def any_option() -> st.SearchStrategy[bytes]:
    well_formed = st.builds(lambda kind, data: bytes((kind, 2 + len(data))) + data,
                            st.integers(2, 255), st.binary(max_size=38))
    return st.one_of(
        any_dss(),
        well_formed,
        st.builds(lambda tv, te: timestamp_option(tv, te).encode(), U32, U32),
        st.just(b"\x01"), st.just(b"\x00"),  # NOP, EOL (the rest of the area after it too)
        st.builds(lambda k, n: bytes((k, n)), st.integers(2, 255), st.integers(0, 1)),  # length below 2
        st.builds(lambda k: bytes((k, 60)), st.integers(2, 255)),  # runs past the end
        st.binary(min_size=1, max_size=6),  # garbage
    )


@st.composite
def option_areas(draw) -> bytes:
    """0-40 bytes, a multiple of 4 (what a data offset can say): pieces cut or padded to a chosen length."""
    size = 4 * draw(st.integers(0, 10))
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(min_size=size, max_size=size))
    raw = b"".join(draw(st.lists(any_option(), max_size=8)))
    fill = draw(st.sampled_from([b"\x01", b"\x00", b"\xff"]))
    return (raw + fill * size)[:size]


@st.composite
def linux_like_areas(draw) -> bytes:
    """Areas of the shape that needs the compact form (more than 28 bytes): NOP NOP TS beside DSS options of
    every well-formed layout, in any order, with NOPs sprinkled in."""
    parts = [b"\x01\x01" + timestamp_option(draw(U32), draw(U32)).encode()]
    flags = draw(st.integers(0, 0x1F))
    ack_len = (8 if flags & 0x02 else 4) if flags & 0x01 else 0
    dsn_len = (8 if flags & 0x08 else 4) if flags & 0x04 else 0
    body = bytes((0x20, flags)) + draw(st.binary(min_size=ack_len, max_size=ack_len))
    if dsn_len:
        body += draw(st.binary(min_size=dsn_len + 6 + 2 * draw(st.booleans()), max_size=dsn_len + 8))
    parts.append(bytes((30, 2 + len(body))) + body)
    if draw(st.booleans()):
        parts.append(bytes((4, 2)))  # SACK-permitted (out of place, but any kind may appear)
    order = draw(st.permutations(parts))
    raw = b"".join(p + b"\x01" * draw(st.integers(0, 2)) for p in order)
    size = min(40, -(-len(raw) // 4) * 4)
    return (raw + b"\x01" * 4)[:size]


def kernel_packet(area: bytes, payload: bytes, ext_seq: int, ext_ack: int, flags: int, window: int = 502,
                  urg: int = 0) -> bytes:
    """An IPv4 kernel segment with exactly `area` as its option area (no parsing, malformed areas included)."""
    tcp = struct.pack("!HHIIHHHH", 40000, 5000, ext_seq & 0xFFFFFFFF, ext_ack & 0xFFFFFFFF if flags & ACK else 0,
                      ((20 + len(area)) >> 2) << 12 | flags, window, 0, urg)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, IP4_LEN + len(tcp) + len(payload), 0, 0x4000, 64, 6, 0, C_ADDR,
                     S_ADDR)
    return segment.py_assemble(ip + tcp + area + payload, IP4_LEN, area, payload)


def expected_kernel_area(area: bytes) -> bytes:
    """What the receiver's kernel gets: the area itself when the MAC fits beside it, else its compact form."""
    return area if len(area) + MAC_OPTION_LEN <= TCP_MAX_OPTION_SPACE else compact_option_area(area)


def check_seal_open(area: bytes, payload: bytes, suite, secret: bytes, ext_seq: int, ext_ack: int, flags: int):
    keys = ks.direction_secrets(secret, True)
    ref, c = segment.PySegmentCipher(suite, keys), _segment.SegmentCipher(suite, keys)
    packet = kernel_packet(area, payload, ext_seq, ext_ack, flags)
    wire = ref.seal(packet, IP4_LEN, ext_seq, ext_ack)
    assert c.seal(packet, IP4_LEN, ext_seq, ext_ack) == wire
    want = expected_kernel_area(area)
    if wire is None:
        assert len(want) + MAC_OPTION_LEN > TCP_MAX_OPTION_SPACE
        return None
    hlen = (wire[IP4_LEN + 12] >> 4) * 4
    assert len(want) + MAC_OPTION_LEN <= TCP_MAX_OPTION_SPACE and hlen - 20 == len(want) + MAC_OPTION_LEN
    assert len(wire) == IP4_LEN + hlen + len(payload)
    assert wire[OPT_AT:OPT_AT + len(want)] == want and wire[OPT_AT + len(want):][:4] == bytes.fromhex("fd0c4d50")
    kernel = segment.py_assemble(packet, IP4_LEN, want, payload)
    assert ref.open(wire, IP4_LEN, ext_seq, ext_ack) == kernel
    assert c.open(wire, IP4_LEN, ext_seq, ext_ack) == kernel
    return wire


@needs_c
@FUZZ
@given(area=option_areas() | linux_like_areas(), payload=st.binary(max_size=64), suite=st.sampled_from(list(SymCipher)),
       secret=st.binary(min_size=32, max_size=32), ext_seq=U64, ext_ack=U64, with_ack=st.booleans())
def test_any_option_area_seals_to_the_same_bytes_in_python_and_c(area, payload, suite, secret, ext_seq, ext_ack,
                                                                 with_ack):
    check_seal_open(area, payload, suite, secret, ext_seq, ext_ack if with_ack else 0, (ACK if with_ack else 0) | PSH)


@FUZZ
@given(raw=st.binary(max_size=40) | option_areas() | linux_like_areas())
def test_the_compact_form_is_never_longer_than_the_area(raw):
    """Every option is copied or shortened, NOPs dropped, padding to 4 only: the compact form of an area of n
    bytes has at most n rounded up to 4 bytes, so a kernel area (at most 40) never gives more than 40. That is
    also the bound compact_options in _segment.c writes into its 40-byte buffer (dss_short_form writes no more
    than the option it reads; a walk stops at the area's end)."""
    out = compact_option_area(raw)
    assert len(out) <= -(-len(raw) // 4) * 4 <= TCP_MAX_OPTION_SPACE and len(out) % 4 == 0 or out == raw


@needs_c
@pytest.mark.parametrize("area", [
    b"\x01" * 40,                                           # all NOPs: compacts to nothing
    b"\x00" * 40,                                           # EOL first: nothing
    b"\x01\x01" + timestamp_option(1, 2).encode() + b"\x00" + bytes(range(1, 28)),  # EOL in the middle
    bytes((30, 40, 0x20, 0x0F)) + bytes(36),                # a DSS whose length does not match its flags
    bytes((30, 28, 0x20, 0x0F)) + bytes(24) + b"\x01" * 12,  # 64-bit ACK and DSN + checksum (28)
    bytes((30, 26, 0x20, 0x0F)) + bytes(22) + bytes((30, 12, 0x20, 0x03)) + bytes(8) + b"\x01\x01",  # two DSS
    bytes((30, 3, 0x20)) + b"\x01" * 33,                    # a DSS too short for its flags byte
    bytes((8, 10)) + bytes(8) + bytes((30, 2)) + b"\x01" * 28,  # an MPTCP option of length 2
    bytes((8, 10)) + bytes(8) + bytes((30, 1)) + b"\x01" * 28,  # length 1: the area stays, no room, None
    bytes((8, 10)) + bytes(8) + bytes((5, 30)) + b"\x01" * 20,  # runs past the end: None
])
def test_edge_areas_in_python_and_c(area):
    assert len(area) % 4 == 0 and len(area) <= 40
    check_seal_open(area, b"payload", SymCipher.AES128, bytes(range(32)), 1 << 40 | 7, 3 << 33 | 9, ACK | PSH)


# --- 2. tampering: the MAC covers the timestamps option and the short DSS on the wire ------------------------
def linux_dss(data_ack, dsn, ssn, length):
    return [TCPOption(30, struct.pack("!BBQQIH", 0x20, 0x0F, data_ack, dsn, ssn, length)), NOP, NOP]


def linux_data(tsval=7777, tsecr=8888, payload=b"d" * 100, seq=CISN + 1, ack=SISN + 1):
    return tcp_segment(C_ADDR, 40000, S_ADDR, 5000, seq, ack, ACK | PSH,
                       [NOP, NOP, timestamp_option(tsval, tsecr), *linux_dss(1 << 40 | 5, 3 << 33 | 9, 1,
                                                                             len(payload))], payload)


def test_every_bit_of_the_timestamps_and_the_short_dss_on_the_wire_is_covered_by_the_mac():
    pair = mptcp_pair()
    (got,) = pair.send("c", linux_data())
    wire = pair.wire[-1]
    opts = parse_options(decode(wire)[1].options)
    assert [(o.kind, o.size) for o in opts] == [(TCPOPT_TIMESTAMP, 10), (30, 18), (253, 12)]
    s = pair.eng["s"]
    before = dict(s.stats())
    received = len(pair.rx["s"])
    for byte in range(OPT_AT, OPT_AT + 28):  # TS (10) and the short DSS (18)
        for bit in range(8):
            forged = bytearray(wire)
            forged[byte] ^= 1 << bit
            assert pair.inject("s", bytes(forged)) is Verdict.DROP, (byte - OPT_AT, bit)
    after = s.stats()
    assert len(pair.rx["s"]) == received
    assert after["mac_failures"] + after["malformed_dropped"] - before["mac_failures"] - \
        before["malformed_dropped"] == 28 * 8
    assert after["segments_verified"] == before["segments_verified"]
    assert pair.inject("s", wire) is Verdict.ACCEPT  # the untouched segment still verifies (a retransmission)


@needs_c
@settings(max_examples=60, deadline=None)
@given(area=linux_like_areas(), data=st.data())
def test_a_flipped_bit_in_a_compacted_area_fails_both_opens(area, data):
    wire = check_seal_open(area, b"x" * 20, SymCipher.CHACHA20, bytes(32), 5, 6, ACK)
    if wire is None:
        return
    keys = ks.direction_secrets(bytes(32), True)
    hlen = (wire[IP4_LEN + 12] >> 4) * 4
    at = data.draw(st.integers(OPT_AT, IP4_LEN + hlen - MAC_OPTION_LEN - 1))
    forged = bytearray(wire)
    forged[at] ^= 1 << data.draw(st.integers(0, 7))
    for cipher in (segment.PySegmentCipher, _segment.SegmentCipher):
        assert cipher(SymCipher.CHACHA20, keys).open(bytes(forged), IP4_LEN, 5, 6) is None


def test_the_fast_path_and_python_put_the_same_compact_options_on_the_wire():
    """The compiled flow table seals a Linux data segment with timestamps as the Python path does (the keys of
    two pairs differ: the options on the wire and what the peer kernel gets are compared)."""
    if segment.FlowTable is None:
        pytest.skip("no compiled fast path")
    from test_engine_handshake import handshake
    runs = []
    for fast in (False, True):
        pair = EnginePair(fast_path=fast)
        handshake(pair, mptcp=True)
        for n in range(3):  # the first segment installs the flow, the next go through the table
            pair.send("c", linux_data(tsval=100 + n, seq=CISN + 1 + 100 * n))
        runs.append(([w[:OPT_AT + 28] for w in pair.wire[-3:]], pair.rx["s"][-3:]))
        st_ = pair.eng["c"].stats()
        assert st_["timestamps_removed"] == 0 and st_["segments_protected"] >= 3
    (py_wire, py_rx), (c_wire, c_rx) = runs
    strip_csum = [w[:IP4_LEN + 16] + w[IP4_LEN + 18:] for w in py_wire], [w[:IP4_LEN + 16] + w[IP4_LEN + 18:]
                                                                          for w in c_wire]
    assert strip_csum[0] == strip_csum[1] and py_rx == c_rx
    assert ts_of(py_rx[-1]) == [(102, 8888)]


# --- 3. handshake state: restored timestamps ---------------------------------------------------------------------
def linux_syn_options(mp=None, ts=(1000, 0)):
    """A Linux SYN / SYN-ACK: MSS, SACK-permitted + TS (or NOP NOP SACK-permitted), NOP + window scale, MPTCP."""
    opts = [mss_option(1460), TCPOption(TCPOPT_SACK_PERM)]
    opts += [timestamp_option(*ts)] if ts else [NOP, NOP]
    opts += [NOP, wscale_option(7)]
    return opts + ([mp] if mp is not None else [])


def ts_of(packet):
    """Every timestamps option of `packet`, as (tsval, tsecr)."""
    return [option_value(o) for o in parse_options(decode(packet)[1].options) if o.kind == TCPOPT_TIMESTAMP]


def kinds(packet):
    return [o.kind for o in parse_options(decode(packet)[1].options)]


def join_syn(ts=(2000, 0), isn=333, sport=41000):
    return tcp_segment(C2_ADDR, sport, S2_ADDR, 5000, isn, 0, SYN,
                       linux_syn_options(mpj_syn(token(SKEY), b"NNNN"), ts=ts))


def join_synack(ts=(6666, 0), isn=444, ack=334, sport=41000):
    return tcp_segment(S2_ADDR, 5000, C2_ADDR, sport, isn, ack, SYN | ACK,
                       linux_syn_options(mpj_synack(b"h" * 8, b"RRRR"), ts=ts))


def retimed(packet, ts, bad_proof=False):
    """`packet` (a SYN or SYN-ACK off the wire) as an attacker or an older daemon would send it: MSS and window
    scale dropped to make room, a timestamps option `ts` added; mptcrypt's proof untouched unless `bad_proof`
    (its last bit flipped)."""
    _, h, payload = decode(packet)
    keep = [o for o in parse_options(h.options) if o.kind in (30, 253)]
    if bad_proof:
        keep = [TCPOption(o.kind, o.data[:-1] + bytes((o.data[-1] ^ 1,))) if o.kind == 253 else o for o in keep]
    ip = decode(packet)[0]
    return tcp_segment(ip.src, h.sport, ip.dst, h.dport, h.seq, h.ack, h.flags, [*keep, timestamp_option(*ts)],
                       payload)


def test_a_join_syn_leaves_without_ts_and_the_responder_kernel_gets_tsval_0():
    pair = mptcp_pair()
    (got,) = pair.send("c", join_syn())
    assert TCPOPT_TIMESTAMP not in kinds(pair.wire[-1]) and len(decode(pair.wire[-1])[1].options) <= 40
    assert ts_of(got) == [(0, 0)]


def test_a_join_syn_that_already_carries_ts_on_the_wire_gets_no_second_one():
    """An older daemon, or an attacker who moved the options around (NEXTK1 binds MP_JOIN, not the rest): the
    responder's kernel gets that one timestamps option, never a restored one beside it."""
    pair = mptcp_pair()
    out = pair.eng["c"].handle(join_syn(), True, pair.now).packet  # NEXTK1 added, TS gone
    assert 253 in kinds(out) and TCPOPT_TIMESTAMP not in kinds(out)
    forged = retimed(out, (4242, 99))
    assert len(decode(forged)[1].options) <= 40
    assert pair.inject("s", forged) is Verdict.ACCEPT
    assert ts_of(pair.rx["s"][-1]) == [(4242, 99)]


def test_a_resumed_mptcp_syn_gets_no_restored_ts_and_keeps_one_on_the_wire():
    """A resumed MPTCP connection runs without timestamps (docs/protocol.md §6): nothing is restored; a SYN that
    carries one on the wire anyway (an older daemon, an attacker) reaches the kernel with that one only."""
    from test_engine_handshake import handshake
    for forge in (False, True):
        pair = EnginePair()
        handshake(pair, mptcp=True)
        syn = tcp_segment(C_ADDR, 40020, S_ADDR, 5000, 50, 0, SYN, linux_syn_options(mpc(4)))
        out = pair.eng["c"].handle(syn, True, pair.now).packet
        assert 253 in kinds(out) and TCPOPT_TIMESTAMP not in kinds(out)  # no room beside MP_CAPABLE + NEXTK1
        r = pair.eng["s"].handle(retimed(out, (31337, 5)) if forge else out, False, pair.now)
        assert r.verdict is Verdict.ACCEPT and pair.eng["s"].stats()["resume_fallbacks"] == 0
        assert pair.eng["s"].flow_state(("10.0.1.1", 5000), ("10.0.1.2", 40020)) is State.NEXTK1_RCVD
        assert ts_of(r.packet) == ([(31337, 5)] if forge else [])


def join_to_synack(pair, syn_ts=(2000, 0)):
    (got,) = pair.send("c", join_syn(ts=syn_ts))
    return got


def test_the_join_synack_restore_echoes_the_kernel_syn_tsval():
    pair = mptcp_pair()
    join_to_synack(pair)
    (got,) = pair.send("s", join_synack(ts=(6666, 0)))
    assert TCPOPT_TIMESTAMP not in kinds(pair.wire[-1]) and len(decode(pair.wire[-1])[1].options) <= 40
    assert ts_of(got) == [(0, 2000)]


def test_no_synack_restore_when_our_kernel_did_not_offer_ts():
    """The initiator kernel (tcp_timestamps=0) sent its join SYN without TS: the responder's kernel, given a
    restored TS, answers with one (no room on the wire: dropped there); the initiator's kernel gets none."""
    pair = mptcp_pair()
    got = join_to_synack(pair, syn_ts=None)
    assert ts_of(got) == [(0, 0)]  # the responder restores whatever the initiator's kernel did (docs §7)
    (got,) = pair.send("s", join_synack(ts=(6666, 0)))
    assert ts_of(got) == []


def test_a_retransmitted_join_synack_gets_the_same_restored_ts_as_the_first():
    """The initiator's kernel may still be in SYN-SENT when the retransmission arrives (it lost the first copy
    after our daemon saw it): without the restore it would turn timestamps off while the responder's kernel has
    them on. In ESTABLISHED either copy only draws an ACK."""
    pair = mptcp_pair()
    join_to_synack(pair)
    (first,) = pair.send("s", join_synack(ts=(6666, 0)))
    (again,) = pair.send("s", join_synack(ts=(6700, 0)))
    assert ts_of(first) == ts_of(again) == [(0, 2000)]


def test_a_retransmitted_join_syn_gets_the_same_restored_ts_as_the_first():
    """The responder's kernel may have dropped the first SYN (a full SYN or accept queue): the retransmission is
    the one it answers, and without the restore the subflow runs with timestamps on one side only."""
    pair = mptcp_pair()
    (first,) = pair.send("c", join_syn(ts=(2000, 0)))
    (again,) = pair.send("c", join_syn(ts=(2300, 0)))
    assert ts_of(first) == ts_of(again) == [(0, 0)]
    assert pair.eng["s"].stats()["joins_refused"] == 0


def test_a_resumption_that_falls_back_to_pkconf_gets_no_restored_ts_on_either_side():
    """A resumed MPTCP SYN crosses without TS; a server that lost the session answers PKCONF (full handshake).
    Neither daemon restores: both kernels run without timestamps (consistent), a retransmitted PKCONF SYN-ACK
    included."""
    from test_engine_handshake import handshake
    pair = EnginePair()
    handshake(pair, mptcp=True)
    pair.eng["s"]._t.resume.clear()  # the server forgot the session
    syn = tcp_segment(C_ADDR, 40030, S_ADDR, 5000, 50, 0, SYN, linux_syn_options(mpc(4)))
    (got,) = pair.send("c", syn)
    assert ts_of(got) == []
    synack = tcp_segment(S_ADDR, 5000, C_ADDR, 40030, 70, 51, SYN | ACK, linux_syn_options(mpc(12, SKEY), ts=None))
    got = pair.send("s", synack)
    assert ts_of(got[0]) == []
    assert pair.eng["c"].stats()["resume_fallbacks"] == 1
    again = pair.send("s", synack)
    assert all(ts_of(p) == [] for p in again)


def test_an_attackers_join_synack_with_ts_decides_nothing():
    """A forged NEXTK2 with any TS is dropped and leaves the subflow waiting for the real answer; the real answer
    with an attacker's TS (arbitrary tsecr) is keyed exactly as without it: the daemon reads no field of a
    peer's timestamps, it only passes them (the kernel's PAWS / tsecr checks are the kernel's; an on-path
    attacker who rewrites a SYN-ACK's TS can break the subflow, as it can by dropping it)."""
    results = []
    for tsecr in (0, 1, 0xDEADBEEF):
        pair = mptcp_pair()
        join_to_synack(pair)
        key = (("10.0.2.2", 41000), ("10.0.2.1", 5000))
        sent = []
        pair.tap = lambda p: (sent.append(p), None)[1]  # the attacker holds the real SYN-ACK
        pair.send("s", join_synack())
        pair.tap = None
        (real,) = sent
        assert pair.inject("c", retimed(real, (1, tsecr), bad_proof=True)) is Verdict.DROP
        assert pair.eng["c"].flow_state(*key) is State.SYN_SENT_NEXTK1
        assert pair.inject("c", retimed(real, (123456, tsecr))) is Verdict.ACCEPT
        assert pair.eng["c"].flow_state(*key) is State.ENCRYPTING
        assert ts_of(pair.rx["c"][-1]) == [(123456, tsecr)]
        data = tcp_segment(C2_ADDR, 41000, S2_ADDR, 5000, 334, 445, ACK | PSH,
                           [NOP, NOP, timestamp_option(3000, 123456), *linux_dss(1, 2, 1, 10)], b"0123456789")
        (delivered,) = pair.send("c", data)  # keyed: the responder verifies the subflow's first data
        assert b"0123456789" not in pair.wire[-1]
        results.append(delivered)
    assert results[0] == results[1] == results[2]  # the same outcome whatever tsecr said


# --- 4. readers of the DSS outside the engine -------------------------------------------------------------------
def test_the_attack_view_expands_the_short_dss_like_the_full_one():
    """attacks/common.View reads DSNs and data ACKs off the wire to forge segments: since the compact form, a
    protected data segment with timestamps carries the 4-byte forms, which it expands around the initial DSNs."""
    from mptcrypt.attacks.common import View, parse_frame
    from mptcrypt.wire.mptcp import mptcp_idsn

    idsn_c, idsn_s = mptcp_idsn(CKEY), mptcp_idsn(SKEY)
    views = []
    for short in (False, True):
        v = View("10.0.1.2", "10.0.1.1", 5000, "10.0.1.66")
        syn = tcp_segment(C_ADDR, 40000, S_ADDR, 5000, CISN, 0, SYN, linux_syn_options(mpc(4)))
        third = tcp_segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK, [mpc(20, CKEY, SKEY)])
        dsn, dack = idsn_c + 1 + 5000, idsn_s + 1 + 77
        if short:
            dss = TCPOption(30, struct.pack("!BBIIIH", 0x20, 0x05, dack & 0xFFFFFFFF, dsn & 0xFFFFFFFF, 1, 100))
        else:
            dss = TCPOption(30, struct.pack("!BBQQIH", 0x20, 0x0F, dack, dsn, 1, 100))
        data = tcp_segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH,
                           [timestamp_option(1, 2), dss], b"x" * 100)
        for p in (syn, third, data):
            v.learn(parse_frame(bytes(12) + b"\x08\x00" + p))
        views.append((v.c2s.map_end, v.c2s.data_ack))
    assert views[0] == views[1] == ((idsn_c + 1 + 5000 + 100), idsn_s + 1 + 77)


# --- 5. _no_room ------------------------------------------------------------------------------------------------
ADD_ADDR6_HMAC = TCPOption(30, bytes((0x30, 0x06)) + bytes(16) + bytes(8))  # ADD_ADDR v6 + HMAC (28)
ADD_ADDR6_PORT_HMAC = TCPOption(30, bytes((0x30, 0x06)) + bytes(16) + b"\x13\x88" + bytes(8))  # + port (30)
REMOVE_ADDR8 = TCPOption(30, bytes((0x40,)) + bytes(range(3, 11)))  # REMOVE_ADDR, 8 ids (11)
DATA_ACK64 = TCPOption(30, bytes((0x20, 0x03)) + (5).to_bytes(8, "big"))  # DSS, 64-bit data ACK only (12)


@pytest.mark.parametrize("opts, counter", [
    # Linux-shaped, 40 bytes or less with NOP NOP TS: the compact form is not enough, TS gives way
    ([NOP, NOP, timestamp_option(5, 6), ADD_ADDR6_HMAC], "timestamps_removed"),
    ([NOP, NOP, timestamp_option(5, 6), DATA_ACK64, REMOVE_ADDR8, NOP], "timestamps_removed"),
    # hand-made: TS without its NOPs beside the longest ADD_ADDR: nothing fits, dropped and counted
    ([timestamp_option(5, 6), ADD_ADDR6_PORT_HMAC], "option_overflow"),
])
def test_no_room_never_writes_past_40_bytes_nor_sends_plaintext(opts, counter):
    pair = mptcp_pair()
    area = encode_options(opts)
    assert len(area) <= 40 and len(compact_option_area(area)) + MAC_OPTION_LEN > TCP_MAX_OPTION_SPACE
    payload = b"SECRET-PAYLOAD" * 5
    before = len(pair.wire)
    got = pair.send("c", kernel_packet(area, payload, CISN + 1, SISN + 1, ACK | PSH))
    c = pair.eng["c"].stats()
    assert c[counter] == 1
    for w in pair.wire[before:]:
        assert len(decode(w)[1].options) <= 40 and b"SECRET" not in w
        assert decode(w)[1].options[-MAC_OPTION_LEN:][:4] == bytes.fromhex("fd0c4d50")
    if counter == "option_overflow":
        assert got == [] and pair.wire[before:] == []
    else:
        (k,) = got
        assert decode(k)[2] == payload and ts_of(k) == [] and c["option_overflow"] == 0


def test_an_option_that_fits_nowhere_leaves_the_kernels_timestamps_alone():
    """`add` that does not fit even without timestamps is left out (counted as option_overflow); the kernel's
    options, its timestamps included, go on unchanged rather than losing both."""
    from mptcrypt.wire import rewrite
    from mptcrypt.wire.segment import parse_segment

    syn = tcp_segment(C_ADDR, 40030, S_ADDR, 5000, 70, 0, SYN, linux_syn_options(mpc(4)))
    packet, overflow = rewrite.with_options(parse_segment(syn), add=bytes((253, 30)) + bytes(28))
    assert overflow and ts_of(packet) == ts_of(syn) and ts_of(syn)
