"""Round trips of every codec the core owns (IP, TCP header and options, mptcrypt messages, INIT payloads)."""

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mptcrypt.constants import MAC_OPTION_LEN, Msg
from mptcrypt.errors import DecodeError
from mptcrypt.wire import messages as m
from mptcrypt.wire.checksum import tcp_checksum, verify_tcp_checksum
from mptcrypt.wire.ip import build_ip_header, parse_ip, rebuild_ip_header
from mptcrypt.wire.tcp import TCPHeader, TCPOption, encode_options, option_value, parse_options, parse_tcp

# --- TCP options -------------------------------------------------------------------------------------------

known = st.one_of(
    st.integers(0, 0xFFFF).map(lambda v: TCPOption(2, struct.pack("!H", v))),
    st.integers(0, 14).map(lambda v: TCPOption(3, bytes((v,)))),
    st.just(TCPOption(4)),
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), min_size=1, max_size=4)
    .map(lambda bl: TCPOption(5, b"".join(struct.pack("!II", *b) for b in bl))),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)).map(lambda t: TCPOption(8, struct.pack("!II", *t))),
    st.just(TCPOption(1)),
)
unknown = st.builds(TCPOption, st.integers(6, 254).filter(lambda k: k != 8), st.binary(max_size=12))
option_lists = st.lists(st.one_of(known, unknown), max_size=8)


@given(option_lists)
def test_option_list_round_trip(opts):
    raw = encode_options(opts)
    assert parse_options(raw) == opts
    assert encode_options(parse_options(raw)) == raw


@given(option_lists, st.binary(max_size=6))
def test_eol_padding_preserved_byte_for_byte(opts, tail):
    raw = encode_options(opts) + b"\x00" + tail
    assert encode_options(parse_options(raw)) == raw


@given(st.binary(max_size=40))
def test_arbitrary_bytes_parse_exactly_or_raise(raw):
    try:
        opts = parse_options(raw)
    except DecodeError:
        return
    assert encode_options(opts) == raw


def test_typed_values():
    raw = bytes.fromhex("020405b4 0402 080a 000003e8 00000000 01 030307")
    opts = parse_options(raw)
    assert [option_value(o) for o in opts] == [1460, True, (1000, 0), b"", 7]
    with pytest.raises(DecodeError):
        option_value(TCPOption(2, b"\x05"))
    with pytest.raises(DecodeError):
        parse_options(b"\x02\x09\x05")


# --- TCP header and IP ------------------------------------------------------------------------------------

headers = st.builds(
    TCPHeader, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
    st.integers(0, 0xFFF), st.integers(0, 0xFFFF), st.just(0), st.integers(0, 0xFFFF),
    option_lists.map(encode_options).filter(lambda r: len(r) <= 40).map(lambda r: r + b"\x01" * (-len(r) % 4))
    .filter(lambda r: len(r) <= 40))


@given(headers, st.binary(max_size=64), st.booleans())
def test_tcp_and_ip_round_trip(hdr, payload, v6):
    src = ipaddress.ip_address("2001:db8::1" if v6 else "10.0.1.2").packed
    dst = ipaddress.ip_address("2001:db8::2" if v6 else "10.0.1.1").packed
    seg = hdr.encode(payload, src, dst)
    assert verify_tcp_checksum(src, dst, seg)
    pkt = build_ip_header(src, dst, len(seg)) + seg
    ip = parse_ip(pkt)
    assert (ip.version, ip.src, ip.dst, ip.proto, ip.total_len) == (6 if v6 else 4, src, dst, 6, len(pkt))
    back, body = parse_tcp(pkt[ip.header_len:])
    back.checksum = 0
    assert back == hdr and body == payload
    assert rebuild_ip_header(ip.header, len(seg)) == ip.header


def test_checksum_matches_rfc1071_example():
    # RFC 1071 §3 example words 0001 f203 f4f5 f6f7 sum to ddf2; checksum is its complement
    from mptcrypt.wire.checksum import finish, ones_sum

    assert finish(ones_sum(bytes.fromhex("0001f203f4f5f6f7"))) == 0xFFFF - 0xDDF2
    assert tcp_checksum(b"\0" * 4, b"\0" * 4, b"") == 0xFFFF - 6


@pytest.mark.parametrize("bad", [b"", b"\x45" + b"\0" * 10, b"\x60\0\0\0\x00\x0a" + b"\0" * 34, b"\x30" * 20])
def test_ip_decode_errors(bad):
    with pytest.raises(DecodeError):
        parse_ip(bad)


# --- mptcrypt messages ------------------------------------------------------------------------------------

b8 = st.binary(min_size=8, max_size=8)
messages = st.one_of(
    st.builds(m.Hello, st.integers(0, 255)),
    st.lists(st.integers(1, 255), min_size=1, max_size=6).map(lambda c: m.PkConf(tuple(c))),
    st.sampled_from([Msg.INIT1, Msg.INIT2]).map(lambda x: m.Marker(int(x))),
    st.builds(m.NextK1Join, st.integers(0, 0xFFFF), b8),
    st.builds(m.NextK1Resume, b8, b8),
    st.builds(m.NextK2, b8),
    st.builds(m.Rekey, st.integers(0, 255)),
    st.builds(m.MacTag, b8),
)


@given(messages)
def test_message_round_trip(msg):
    raw = msg.encode()
    assert raw[0] == 253 and raw[1] == len(raw) and raw[2:4] == b"\x4d\x50"
    assert (len(raw) == MAC_OPTION_LEN) == isinstance(msg, m.MacTag)  # the MAC is told apart by its length
    back = m.parse_message(raw[2:])
    if isinstance(msg, m.Marker):
        assert back.msg == msg.msg
    else:
        assert back == msg
    assert parse_options(raw)[0].data == raw[2:]


inits = st.one_of(
    st.builds(m.Init1, st.integers(1, 3), st.lists(st.integers(1, 2), min_size=1, max_size=4).map(tuple),
              st.binary(min_size=32, max_size=32), st.binary(min_size=1, max_size=300)),
    st.builds(m.Init2, st.integers(1, 2), st.binary(max_size=300)),
)


@given(inits)
def test_init_round_trip(msg):
    assert m.parse_init(msg.encode()) == msg


@given(inits, st.integers(0, 400))
def test_truncated_init_raises(msg, cut):
    raw = msg.encode()
    if cut >= len(raw):
        return
    with pytest.raises(DecodeError):
        m.parse_init(raw[:cut])


def test_unknown_message_raises():
    with pytest.raises(DecodeError):
        m.parse_message(b"\x4d\x50\x09")
    with pytest.raises(DecodeError):
        m.parse_message(b"\x12\x34\x01\x01")


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4), st.integers(0, 1400),
       st.integers(0, 65000), st.integers(1, 255), st.integers(0, 0xFFFF))
def test_ipv4_length_rewrite_keeps_a_valid_header_checksum(src, dst, before, after, ttl, ident):
    from mptcrypt.wire.checksum import ones_sum

    header = rebuild_ip_header(build_ip_header(src, dst, before, ttl=ttl, ident=ident), after)
    assert parse_ip(header + b"\0" * after).total_len == 20 + after
    assert ones_sum(header) == 0  # a valid header sums to 0xFFFF, i.e. 0 modulo 0xFFFF
