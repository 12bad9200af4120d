"""The compact option form (wire/compact.py): what it keeps, that the compiled seal writes the same bytes, and what
the engine sends for Linux-shaped segments with timestamps (docs/protocol.md §5, docs/option-budget.md)."""

import struct

import pytest
from hypothesis import given, settings, strategies as st

from mptcrypt.constants import SymCipher, TCPOPT_TIMESTAMP
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.crypto import segment
from mptcrypt.wire.compact import compact_option_area, dss_short_form
from mptcrypt.wire.mptcp import Has, Subtype, parse_mptcp
from mptcrypt.wire.tcp import ACK, PSH, TCPOption, encode_options, option_value, parse_options, timestamp_option

from pktkit import C_ADDR, S_ADDR, decode, mpc, segment as tcp_segment

U32, U64 = st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 64) - 1)
NOP = TCPOption(1)


@st.composite
def dss_options(draw):
    """Any well-formed DSS: data ACK absent / 4 / 8 bytes, mapping absent / 4 / 8 bytes, checksum or not, F."""
    ack_len, dsn_len = draw(st.sampled_from([0, 4, 8])), draw(st.sampled_from([0, 4, 8]))
    csum = dsn_len and draw(st.booleans())
    flags = (0x10 if draw(st.booleans()) else 0) | {0: 0, 4: 0x01, 8: 0x03}[ack_len] | {0: 0, 4: 0x04, 8: 0x0C}[dsn_len]
    body = bytes((0x20 | draw(st.integers(0, 15)), flags))
    if ack_len:
        body += draw(U64 if ack_len == 8 else U32).to_bytes(ack_len, "big")
    if dsn_len:
        body += draw(U64 if dsn_len == 8 else U32).to_bytes(dsn_len, "big") + struct.pack("!IH", draw(U32), draw(
            st.integers(0, 0xFFFF)))
        if csum:
            body += draw(st.binary(min_size=2, max_size=2))
    return TCPOption(30, body).encode()


@settings(max_examples=400, deadline=None)
@given(opt=dss_options())
def test_the_short_form_keeps_every_field_in_its_low_32_bits(opt):
    short = dss_short_form(opt)
    full, got = parse_mptcp(opt), parse_mptcp(short)
    assert got.subtype == Subtype.DSS and got.rsv == full.rsv and got.data_fin == full.data_fin
    assert len(short) == len(opt) - 4 * ((full.has(Has.DATA_ACK64)) + full.has(Has.DSN64))
    assert not got.has(Has.DATA_ACK64) and not got.has(Has.DSN64)
    assert got.has(Has.DATA_ACK) == full.has(Has.DATA_ACK) and got.has(Has.MAP) == full.has(Has.MAP)
    if full.has(Has.DATA_ACK):
        assert got.data_ack == full.data_ack & 0xFFFFFFFF
    if full.has(Has.MAP):
        assert got.data_seq == full.data_seq & 0xFFFFFFFF
        assert (got.subflow_seq, got.data_len, got.csum) == (full.subflow_seq, full.data_len, full.csum)


options = st.lists(st.one_of(dss_options().map(lambda b: TCPOption(b[0], b[2:])), st.just(NOP),
                             st.builds(timestamp_option, U32, U32),
                             st.builds(lambda n: TCPOption(5, bytes(8 * n)), st.integers(1, 3))), max_size=5)


@settings(max_examples=300, deadline=None)
@given(opts=options)
def test_compact_area_drops_only_padding_and_is_idempotent(opts):
    raw = encode_options(opts)
    out = compact_option_area(raw)
    assert len(out) % 4 == 0 and len(out) <= len(raw) + 3 and compact_option_area(out) == out
    kept = [o for o in parse_options(out) if o.kind != 1]
    want = [o for o in opts if o.kind != 1]
    assert [o.kind for o in kept] == [o.kind for o in want]
    for k, w in zip(kept, want):
        assert k == w or (k.kind == 30 and k.encode() == dss_short_form(w.encode()))


@pytest.mark.parametrize("raw", [bytes((8, 10)) + bytes(7), bytes((30, 1)), bytes((5, 0, 1, 1)), bytes((1, 1, 30))])
def test_an_area_it_cannot_walk_stays_as_it_is(raw):
    assert compact_option_area(raw) == raw


# --- the compiled seal writes the same compact bytes -----------------------------------------------------------
try:
    from mptcrypt.crypto import _segment
except ImportError:
    _segment = None


def linux_dss(data_ack, dsn, ssn, length):
    """The DSS Linux writes on a data segment without checksums: 64-bit data ACK and DSN (26 bytes), 2 NOPs."""
    return [TCPOption(30, struct.pack("!BBQQIH", 0x20, 0x0F, data_ack, dsn, ssn, length)), NOP, NOP]


def linux_data_segment(tsval, tsecr, data_ack, dsn, ssn, payload):
    """A data segment as Linux sends it with timestamps on: NOP NOP TS, the DSS; 40 option bytes."""
    return tcp_segment(C_ADDR, 40000, S_ADDR, 5000, 1001, 2002, ACK | PSH,
                       [NOP, NOP, timestamp_option(tsval, tsecr), *linux_dss(data_ack, dsn, ssn, len(payload))],
                       payload)


@pytest.mark.skipif(_segment is None, reason="extension not built (scripts/setup.sh builds it)")
@settings(max_examples=200, deadline=None)
@given(suite=st.sampled_from(list(SymCipher)), secret=st.binary(min_size=32, max_size=32), ts=st.tuples(U32, U32),
       data_ack=U64, dsn=U64, ssn=U32, payload=st.binary(max_size=1400))
def test_compiled_seal_writes_the_reference_compact_bytes(suite, secret, ts, data_ack, dsn, ssn, payload):
    packet = linux_data_segment(*ts, data_ack, dsn, ssn, payload)
    keys = ks.direction_secrets(secret, True)
    py, c = segment.PySegmentCipher(suite, keys), _segment.SegmentCipher(suite, keys)
    wire = py.seal(packet, 20, 1001, 2002)
    assert wire is not None and c.seal(packet, 20, 1001, 2002) == wire
    kernel = py.open(wire, 20, 1001, 2002)
    assert kernel == c.open(wire, 20, 1001, 2002)
    _, h, body = decode(kernel)
    assert body == payload
    got = {o.kind: o for o in parse_options(h.options)}
    assert option_value(got[TCPOPT_TIMESTAMP]) == ts
    m = parse_mptcp(got[30].encode())
    assert (m.data_ack, m.data_seq, m.subflow_seq) == (data_ack & 0xFFFFFFFF, dsn & 0xFFFFFFFF, ssn)


# --- the engine: timestamps beside a DSS, and beside options that leave no room ---------------------------------
def test_a_linux_data_segment_keeps_its_timestamps_and_the_mac_fits():
    from test_engine_handshake import CISN, SISN, mptcp_pair

    pair = mptcp_pair()
    data = tcp_segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH,
                       [NOP, NOP, timestamp_option(7777, 8888), *linux_dss(1 << 40 | 5, 3 << 33 | 9, 1, 100)],
                       b"d" * 100)
    assert len(decode(data)[1].options) == 40
    (got,) = pair.send("c", data)
    wire = parse_options(decode(pair.wire[-1])[1].options)
    assert [o.kind for o in wire] == [TCPOPT_TIMESTAMP, 30, 253] and sum(o.size for o in wire) == 40
    _, h, body = decode(got)
    kernel = {o.kind: o for o in parse_options(h.options)}
    assert body == b"d" * 100 and option_value(kernel[TCPOPT_TIMESTAMP]) == (7777, 8888)
    m = parse_mptcp(kernel[30].encode())
    assert (m.data_ack, m.data_seq, m.data_len) == (5, 9, 100)
    assert pair.eng["c"].stats()["timestamps_removed"] == 0


def test_timestamps_give_way_beside_an_option_that_leaves_no_room():
    """MP_CAPABLE with data (22 bytes, RFC 8684 §3.1) + timestamps + MAC > 40: the segment leaves without
    timestamps rather than not at all."""
    from test_engine_handshake import CISN, CKEY, SISN, SKEY, mptcp_pair

    pair = mptcp_pair()
    first = tcp_segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH,
                        [NOP, NOP, timestamp_option(5, 6),
                         TCPOption(30, mpc(20, CKEY, SKEY).data + struct.pack("!H", 10))], b"0123456789")
    (got,) = pair.send("c", first)
    assert TCPOPT_TIMESTAMP not in [o.kind for o in parse_options(decode(got)[1].options)]
    assert decode(got)[2] == b"0123456789" and len(decode(pair.wire[-1])[1].options) <= 40
    assert pair.eng["c"].stats()["timestamps_removed"] == 1 and pair.eng["c"].stats()["option_overflow"] == 0
