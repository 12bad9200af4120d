"""MPTCP option codec: round trips, fixed vectors (hand-built and captured from Linux 6.18), malformed input."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mptcrypt.errors import DecodeError
from mptcrypt.wire.mptcp import (
    MPTCP_CAP_HMAC_SHA256,
    MPTCP_DSS_ACK64,
    MPTCP_DSS_DATA_FIN,
    MPTCP_DSS_DSN64,
    MPTCP_DSS_HAS_ACK,
    MPTCP_DSS_HAS_MAP,
    MPTCP_RST_TRANSIENT,
    MPTCPOPT_HMAC_LEN,
    MPTCPOPT_THMAC_LEN,
    Has,
    MptcpOption,
    RstReason,
    Subtype,
    add_addr_hmac,
    encode_mptcp,
    join_hmac,
    mptcp_idsn,
    mptcp_token,
    option_length,
    parse_mptcp,
)

u4 = st.integers(0, 0xF)
u8 = st.integers(0, 0xFF)
u12 = st.integers(0, 0xFFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)
key = st.binary(min_size=8, max_size=8)


# ------------------------------------------------------------------------------ strategies: one per subtype


@st.composite
def mp_capable(draw):
    layout = draw(st.sampled_from([0, Has.SNDR_KEY, Has.SNDR_KEY | Has.RCVR_KEY,
                                   Has.SNDR_KEY | Has.RCVR_KEY | Has.DATA_LEN,
                                   Has.SNDR_KEY | Has.RCVR_KEY | Has.DATA_LEN | Has.CSUM]))
    p = int(layout)
    return MptcpOption(Subtype.MP_CAPABLE, p, version=draw(u4), flags=draw(u8),
                       sndr_key=draw(key) if p & Has.SNDR_KEY else b"",
                       rcvr_key=draw(key) if p & Has.RCVR_KEY else b"",
                       data_len=draw(u16) if p & Has.DATA_LEN else 0,
                       csum=draw(u16) if p & Has.CSUM else 0)


@st.composite
def mp_join(draw):
    form = draw(st.sampled_from(["syn", "synack", "ack"]))
    if form == "syn":
        return MptcpOption(Subtype.MP_JOIN, int(Has.ADDR_ID | Has.TOKEN | Has.NONCE), flags=draw(u4),
                           addr_id=draw(u8), token=draw(u32), nonce=draw(u32))
    if form == "synack":
        return MptcpOption(Subtype.MP_JOIN, int(Has.ADDR_ID | Has.THMAC | Has.NONCE), flags=draw(u4),
                           addr_id=draw(u8), thmac=draw(st.binary(min_size=8, max_size=8)), nonce=draw(u32))
    return MptcpOption(Subtype.MP_JOIN, int(Has.HMAC), rsv=draw(u12), hmac=draw(st.binary(min_size=20, max_size=20)))


@st.composite
def dss(draw):
    has_ack, ack64, has_map, dsn64 = (draw(st.booleans()) for _ in range(4))
    csum = has_map and draw(st.booleans())
    p, flags = 0, draw(st.integers(0, 7)) << 5 | (MPTCP_DSS_DATA_FIN if draw(st.booleans()) else 0)
    if has_ack:
        p |= Has.DATA_ACK
        flags |= MPTCP_DSS_HAS_ACK
        if ack64:
            p |= Has.DATA_ACK64
            flags |= MPTCP_DSS_ACK64
    elif ack64:
        flags |= MPTCP_DSS_ACK64  # 'a' without 'A': no field, kept on the wire
    if has_map:
        p |= Has.MAP
        flags |= MPTCP_DSS_HAS_MAP
        if dsn64:
            p |= Has.DSN64
            flags |= MPTCP_DSS_DSN64
        if csum:
            p |= Has.CSUM
    elif dsn64:
        flags |= MPTCP_DSS_DSN64
    return MptcpOption(Subtype.DSS, int(p), flags=flags, rsv=draw(u4),
                       data_ack=draw(u64 if ack64 else u32) if has_ack else 0,
                       data_seq=draw(u64 if dsn64 else u32) if has_map else 0,
                       subflow_seq=draw(u32) if has_map else 0,
                       data_len=draw(u16) if has_map else 0,
                       csum=draw(u16) if csum else 0)


@st.composite
def add_addr(draw):
    addr = draw(st.sampled_from([4, 16]).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
    has_port, echo = draw(st.booleans()), draw(st.booleans())
    p = Has.ADDR_ID | Has.ADDR | (Has.PORT if has_port else 0) | (0 if echo else Has.AHMAC)
    return MptcpOption(Subtype.ADD_ADDR, int(p), flags=draw(st.integers(0, 7)) << 1 | int(echo),
                       addr_id=draw(u8), addr=addr, port=draw(u16) if has_port else 0,
                       ahmac=b"" if echo else draw(st.binary(min_size=8, max_size=8)))


@st.composite
def remove_addr(draw):
    return MptcpOption(Subtype.REMOVE_ADDR, int(Has.RM_IDS), rsv=draw(u4),
                       rm_ids=tuple(draw(st.lists(u8, min_size=1, max_size=37))))


@st.composite
def mp_prio(draw):
    with_id = draw(st.booleans())
    return MptcpOption(Subtype.MP_PRIO, int(Has.ADDR_ID) if with_id else 0, flags=draw(u4),
                       addr_id=draw(u8) if with_id else 0)


@st.composite
def mp_fail(draw):
    return MptcpOption(Subtype.MP_FAIL, int(Has.FAIL_SEQ), rsv=draw(u12), fail_seq=draw(u64))


@st.composite
def mp_fastclose(draw):
    return MptcpOption(Subtype.MP_FASTCLOSE, int(Has.RCVR_KEY), rsv=draw(u12), rcvr_key=draw(key))


@st.composite
def mp_tcprst(draw):
    return MptcpOption(Subtype.MP_TCPRST, int(Has.REASON), flags=draw(u4), reason=draw(u8))


@st.composite
def unknown(draw):
    return MptcpOption(draw(st.integers(9, 15)), int(Has.RAW), flags=draw(u4),
                       raw=draw(st.binary(max_size=37)))


SUBTYPES = {
    "MP_CAPABLE": mp_capable(), "MP_JOIN": mp_join(), "DSS": dss(), "ADD_ADDR": add_addr(),
    "REMOVE_ADDR": remove_addr(), "MP_PRIO": mp_prio(), "MP_FAIL": mp_fail(), "MP_FASTCLOSE": mp_fastclose(),
    "MP_TCPRST": mp_tcprst(), "unknown": unknown(),
}


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("name", list(SUBTYPES))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_roundtrip(name, data):
    o = data.draw(SUBTYPES[name])
    b = encode_mptcp(o)
    assert b[0] == 30 and b[1] == len(b) and b[2] >> 4 == o.subtype
    assert option_length(o) == len(b)
    back = parse_mptcp(b)
    assert back == o  # parse(encode(x)) == x
    assert encode_mptcp(back) == b  # encode(parse(b)) == b
    assert parse_mptcp(memoryview(bytearray(b))) == o


@settings(max_examples=3000, deadline=None)
@given(subtype=u4, nibble=u4, body=st.binary(max_size=37))
def test_any_framed_option_is_kept_byte_for_byte(subtype, nibble, body):
    """Whatever a peer (or an attacker) frames as an MPTCP option: lenient parsing never raises and always
    re-encodes to the same bytes; strict parsing either does the same or raises DecodeError."""
    b = bytes((30, 3 + len(body), subtype << 4 | nibble)) + body
    lenient = parse_mptcp(b, strict=False)
    assert encode_mptcp(lenient) == b
    try:
        strict = parse_mptcp(b)
    except DecodeError:
        assert lenient.present & Has.MALFORMED and lenient.present & Has.RAW
        assert lenient.subtype == subtype and lenient.raw == body
        return
    assert strict == lenient
    assert not strict.present & Has.MALFORMED
    assert encode_mptcp(strict) == b


# ------------------------------------------------------------------------------ fixed vectors (hand-built)


def test_mp_capable_forms():
    k1, k2 = bytes(range(1, 9)), bytes(range(0x11, 0x19))
    assert encode_mptcp(MptcpOption.mpc_syn()) == bytes.fromhex("1e040101")
    assert encode_mptcp(MptcpOption.mpc_synack(k1)) == bytes.fromhex("1e0c0101") + k1
    assert encode_mptcp(MptcpOption.mpc_ack(k1, k2)) == bytes.fromhex("1e140101") + k1 + k2
    b = bytes.fromhex("1e160181") + k1 + k2 + bytes.fromhex("05a0")
    o = parse_mptcp(b)
    assert o.present == Has.SNDR_KEY | Has.RCVR_KEY | Has.DATA_LEN
    assert (o.version, o.flags, o.sndr_key, o.rcvr_key, o.data_len) == (1, 0x81, k1, k2, 1440)
    b = bytes.fromhex("1e180181") + k1 + k2 + bytes.fromhex("05a0beef")
    o = parse_mptcp(b)
    assert o.present & Has.CSUM and o.csum == 0xBEEF
    assert encode_mptcp(MptcpOption.mpc_ack(k1, k2, 1440, 0xBEEF, flags=0x81)) == b


def test_mp_join_forms():
    o = parse_mptcp(bytes.fromhex("1e0c1103 01020304 a1a2a3a4".replace(" ", "")))
    assert (o.present, o.backup, o.addr_id, o.token, o.nonce) == \
        (Has.ADDR_ID | Has.TOKEN | Has.NONCE, True, 3, 0x01020304, 0xA1A2A3A4)
    o = parse_mptcp(bytes.fromhex("1e101007 0001020304050607 deadbeef".replace(" ", "")))
    assert (o.backup, o.addr_id, o.thmac, o.nonce) == (False, 7, bytes(range(8)), 0xDEADBEEF)
    o = parse_mptcp(bytes.fromhex("1e181000") + bytes(range(20)))
    assert (o.present, o.hmac) == (Has.HMAC, bytes(range(20)))


def test_dss_forms():
    # Linux data segment: A a M m, 64-bit ack and DSN, no checksum: 26 bytes (padded by two NOPs on the wire)
    b = bytes.fromhex("1e1a200f" "0000000100000002" "0000000300000004" "00000005" "05a8")
    o = parse_mptcp(b)
    assert o.present == Has.DATA_ACK | Has.DATA_ACK64 | Has.MAP | Has.DSN64
    assert (o.data_ack, o.data_seq, o.subflow_seq, o.data_len) == (0x100000002, 0x300000004, 5, 1448)
    assert encode_mptcp(MptcpOption.dss(0x100000002, 0x300000004, 5, 1448)) == b
    # with checksum: 28 bytes
    b = bytes.fromhex("1e1c200f" "0000000100000002" "0000000300000004" "00000005" "05a8" "1234")
    o = parse_mptcp(b)
    assert o.present & Has.CSUM and o.csum == 0x1234
    # 32-bit ack and DSN, DATA_FIN
    b = bytes.fromhex("1e1220" "15" "00000009" "0000000a" "0000000b" "0001")
    o = parse_mptcp(b)
    assert o.present == Has.DATA_ACK | Has.MAP and o.data_fin
    assert (o.data_ack, o.data_seq, o.subflow_seq, o.data_len) == (9, 10, 11, 1)
    assert encode_mptcp(MptcpOption.dss(9, 10, 11, 1, data_fin=True, ack64=False, dsn64=False)) == b
    # no fields at all (F alone is allowed by the framing)
    o = parse_mptcp(bytes.fromhex("1e042010"))
    assert o.present == 0 and o.data_fin


def test_add_addr_forms():
    hm = bytes(range(8))
    cases = [
        ("1e0830050a2c0202", 8, False, False),  # echo
        ("1e0a30050a2c02021f90", 10, True, False),  # echo + port
        ("1e1020050a2c0202" + hm.hex(), 16, False, True),
        ("1e1220050a2c02021f90" + hm.hex(), 18, True, True),
    ]
    for hexs, n, port, has_hmac in cases:
        b = bytes.fromhex(hexs)
        if not has_hmac:
            b = b[:2] + bytes((0x31,)) + b[3:]  # E=1
        else:
            b = b[:2] + bytes((0x30,)) + b[3:]
        o = parse_mptcp(b)
        assert len(b) == n and str(o.ip) == "10.44.2.2" and o.addr_id == 5
        assert bool(o.present & Has.PORT) == port and (o.port == 8080 if port else True)
        assert o.echo == (not has_hmac) and (o.ahmac == hm if has_hmac else o.ahmac == b"")
        assert encode_mptcp(o) == b
    six = bytes.fromhex("fd440002000000000000000000000003")
    assert len(encode_mptcp(MptcpOption.add_addr(8, six, 40445, hm))) == 30
    assert len(encode_mptcp(MptcpOption.add_addr(8, "fd44:2::3", None, hm))) == 28
    assert len(encode_mptcp(MptcpOption.add_addr(8, "fd44:2::3", 1))) == 22
    assert len(encode_mptcp(MptcpOption.add_addr(8, "fd44:2::3"))) == 20


def test_remove_addr_prio_fail_fastclose_rst():
    o = parse_mptcp(bytes.fromhex("1e0740010203ff"))
    assert o.rm_ids == (1, 2, 3, 255)
    assert encode_mptcp(MptcpOption.remove_addr([5])) == bytes.fromhex("1e044005")
    assert parse_mptcp(bytes.fromhex("1e0351")).backup
    o = parse_mptcp(bytes.fromhex("1e045109"))
    assert o.backup and o.present == Has.ADDR_ID and o.addr_id == 9
    assert encode_mptcp(MptcpOption.mp_prio(False, 9)) == bytes.fromhex("1e045009")
    o = parse_mptcp(bytes.fromhex("1e0c6000ffffffff00000001"))
    assert o.fail_seq == 0xFFFFFFFF00000001
    assert encode_mptcp(MptcpOption.mp_fail(0xFFFFFFFF00000001)) == bytes.fromhex("1e0c6000ffffffff00000001")
    assert encode_mptcp(MptcpOption.mp_fastclose(bytes(8))) == bytes.fromhex("1e0c7000") + bytes(8)
    o = parse_mptcp(bytes.fromhex("1e048103"))
    assert o.flags & MPTCP_RST_TRANSIENT and o.reason == RstReason.ADMIN_PROHIBITED


def test_reserved_bits_survive():
    for hexs in ("1e1a2f0f" + "00" * 22, "1e181abc" + "00" * 20, "1e0c6fff" + "00" * 8, "1e0c7123" + "00" * 8,
                 "1e044f01", "1e1a20ff" + "00" * 22):
        b = bytes.fromhex(hexs)
        assert encode_mptcp(parse_mptcp(b)) == b


# ------------------------------------------------------------------------------ vectors captured from Linux 6.18
# Two namespaces, kernel MPTCP, tcpdump (see tests/integration/test_mptcp_crosscheck.py, which re-derives all
# of this from a fresh capture when run as root). Client key KC, server key KS.

KC = bytes.fromhex("b27f620653610b4d")
KS = bytes.fromhex("99dfeb60b1b39dc1")
MPC_SYNACK = bytes.fromhex("1e0c010199dfeb60b1b39dc1")
MPC_ACK = bytes.fromhex("1e140101b27f620653610b4d99dfeb60b1b39dc1")
MPJ_SYN = bytes.fromhex("1e0c1002ad0611096da54fe5")  # client -> 10.44.2.3:40445
MPJ_SYNACK = bytes.fromhex("1e101006e262242c0bc6a14ee4c1d998")
MPJ_ACK = bytes.fromhex("1e18100057185ac6c29d84704c1f9d1881529db534218938")
ADD_ADDR_PORT = bytes.fromhex("1e1230060a2c02039dfd295214e3ec70cceb")  # server announces 10.44.2.3:40445
ADD_ADDR_PORT_ECHO = bytes.fromhex("1e0a31060a2c02039dfd")
ADD_ADDR = bytes.fromhex("1e1030050a2c02029e6883b3c59e1101")  # server announces 10.44.2.2
DSS_C_FIRST = bytes.fromhex("1e16200dc68c5c907981d537385cfca8000000017a60")  # client's first data: ack32 + map64
DSS_S_FIRST = bytes.fromhex("1e1a200f7981d5373860fca898092c0fc68c5c90000000017a08")  # server's first data
FASTCLOSE = bytes.fromhex("1e0c700099dfeb60b1b39dc1")  # client -> server: carries the server's key
# IPv6 run (timestamps off): server key KS6, client key KC6
KC6 = bytes.fromhex("78ef82e25500fa0d")
KS6 = bytes.fromhex("bd9000aabb701caa")
ADD_ADDR6_PORT = bytes.fromhex("1e1e3008fd4400020000000000000000000000039dfdffab193c1ffbe14f")
ADD_ADDR6 = bytes.fromhex("1e1c3007fd440002000000000000000000000002e54a460ed33f4245")


def test_linux_vectors_parse_and_reencode():
    for b in (MPC_SYNACK, MPC_ACK, MPJ_SYN, MPJ_SYNACK, MPJ_ACK, ADD_ADDR_PORT, ADD_ADDR_PORT_ECHO, ADD_ADDR,
              DSS_C_FIRST, DSS_S_FIRST, FASTCLOSE, ADD_ADDR6_PORT, ADD_ADDR6):
        o = parse_mptcp(b)
        assert not o.present & Has.RAW
        assert encode_mptcp(o) == b
    assert parse_mptcp(MPC_ACK).rcvr_key == parse_mptcp(MPC_SYNACK).sndr_key == KS
    assert parse_mptcp(MPC_ACK).flags == MPTCP_CAP_HMAC_SHA256


def test_token_and_idsn_match_linux():
    syn = parse_mptcp(MPJ_SYN)
    assert syn.token == mptcp_token(KS) == 0xAD061109
    assert mptcp_token(KS) == int.from_bytes(hashlib.sha256(KS).digest()[:4], "big")
    assert mptcp_token(int.from_bytes(KS, "big")) == mptcp_token(KS)
    # the first DSN of each direction is IDSN + 1; the client's first data ACK is the server's IDSN + 1 (32 bits)
    c, s = parse_mptcp(DSS_C_FIRST), parse_mptcp(DSS_S_FIRST)
    assert c.data_seq == mptcp_idsn(KC) + 1
    assert s.data_seq == mptcp_idsn(KS) + 1
    assert c.data_ack == (mptcp_idsn(KS) + 1) & 0xFFFFFFFF
    assert s.data_ack == mptcp_idsn(KC) + 1 + 256 * 1024  # the server answered after the client's 256 KiB


def test_join_hmacs_match_linux():
    syn, synack, ack = parse_mptcp(MPJ_SYN), parse_mptcp(MPJ_SYNACK), parse_mptcp(MPJ_ACK)
    # A = client (join initiator), B = server
    assert synack.thmac == join_hmac(KS, KC, synack.nonce, syn.nonce)[:MPTCPOPT_THMAC_LEN]
    assert ack.hmac == join_hmac(KC, KS, syn.nonce, synack.nonce)[:MPTCPOPT_HMAC_LEN]
    assert join_hmac(KC, KS, syn.nonce.to_bytes(4, "big"), synack.nonce) == \
        hmac.new(KC + KS, syn.nonce.to_bytes(4, "big") + synack.nonce.to_bytes(4, "big"), "sha256").digest()
    # a forged join built from sniffed keys is what the kernel would accept
    forged = MptcpOption.mpj_ack(join_hmac(KC, KS, syn.nonce, synack.nonce)[:MPTCPOPT_HMAC_LEN])
    assert encode_mptcp(forged) == MPJ_ACK


def test_add_addr_hmacs_match_linux():
    for b, ka, kb in ((ADD_ADDR_PORT, KS, KC), (ADD_ADDR, KS, KC), (ADD_ADDR6_PORT, KS6, KC6), (ADD_ADDR6, KS6, KC6)):
        o = parse_mptcp(b)
        assert o.ahmac == add_addr_hmac(ka, kb, o.addr_id, o.addr, o.port), b.hex()
        assert o.ahmac == add_addr_hmac(ka, kb, o.addr_id, str(o.ip), o.port if o.port else None)
        # forging from sniffed keys reproduces the kernel's option byte for byte
        forged = MptcpOption.add_addr(o.addr_id, o.ip, o.port if o.present & Has.PORT else None,
                                      add_addr_hmac(ka, kb, o.addr_id, o.ip, o.port))
        assert encode_mptcp(forged) == b
    # the truncation is the RIGHTMOST 64 bits, unlike MP_JOIN's leftmost
    full = hmac.new(KS + KC, bytes((5,)) + bytes((10, 44, 2, 2)) + bytes(2), "sha256").digest()
    assert parse_mptcp(ADD_ADDR).ahmac == full[-8:] != full[:8]


# ------------------------------------------------------------------------------ malformed input


@pytest.mark.parametrize("hexs, needle", [
    ("", "truncated"),
    ("1e", "truncated"),
    ("1e02", "truncated"),
    ("0203", "kind 2"),
    ("1e0500", "length byte 5"),
    ("1e040100ff", "length byte 4"),
    ("1e050100ff", "MP_CAPABLE option of length 5"),
    ("1e0d0101" + "00" * 9, "MP_CAPABLE"),
    ("1e0d1000" + "00" * 9, "MP_JOIN option of length 13"),
    ("1e0310", "MP_JOIN"),
    ("1e0320", "DSS option of length 3"),
    ("1e0520" + "0100", "flags 0x01 need 8 bytes"),
    ("1e0a2001" + "00" * 6, "flags 0x01 need 8 bytes"),  # checksum without a mapping
    ("1e18200f" + "00" * 20, "need 26 bytes, or 28"),
    ("1e1031000a000001" + "00" * 8, "ADD_ADDR echo"),  # an echo (E=1) has no HMAC: 16 bytes is wrong
    ("1e0931000a00000100", "ADD_ADDR echo"),
    ("1e1130000a000001" + "00" * 9, "ADD_ADDR with HMAC"),
    ("1e0340", "REMOVE_ADDR"),
    ("1e055000ff", "MP_PRIO"),
    ("1e0b6000" + "00" * 7, "MP_FAIL"),
    ("1e0d7000" + "00" * 9, "MP_FASTCLOSE"),
    ("1e0380", "MP_TCPRST"),
    ("1e058000ff", "MP_TCPRST"),
])
def test_malformed_raises_decode_error(hexs, needle):
    b = bytes.fromhex(hexs)
    with pytest.raises(DecodeError, match=needle):
        parse_mptcp(b)
    if len(b) >= 3 and b[0] == 30 and b[1] == len(b):
        kept = parse_mptcp(b, strict=False)  # framed: kept byte for byte
        assert kept.present == Has.RAW | Has.MALFORMED
        assert encode_mptcp(kept) == b


def test_unknown_subtypes_are_kept():
    for sub in range(9, 16):
        b = bytes((30, 8, sub << 4 | 0xA)) + b"\x01\x02\x03\x04\x05"
        o = parse_mptcp(b)
        assert o.subtype == sub and o.present == Has.RAW and o.raw == b"\x01\x02\x03\x04\x05" and o.flags == 0xA
        assert encode_mptcp(o) == b
    assert encode_mptcp(parse_mptcp(bytes.fromhex("1e03f0"))) == bytes.fromhex("1e03f0")


@pytest.mark.parametrize("o", [
    MptcpOption(Subtype.DSS, int(Has.DATA_ACK), flags=0),  # A flag missing
    MptcpOption(Subtype.DSS, int(Has.DATA_ACK), flags=MPTCP_DSS_HAS_ACK | MPTCP_DSS_ACK64),  # a set, 4-byte ack
    MptcpOption(Subtype.DSS, int(Has.CSUM)),  # checksum without mapping
    MptcpOption(Subtype.DSS, int(Has.DATA_ACK), flags=MPTCP_DSS_HAS_ACK, data_ack=1 << 32),  # too big for 32
    MptcpOption(Subtype.ADD_ADDR, int(Has.ADDR_ID | Has.ADDR | Has.AHMAC), flags=1, addr=bytes(4), ahmac=bytes(8)),
    MptcpOption(Subtype.ADD_ADDR, int(Has.ADDR_ID | Has.ADDR), flags=1, addr=bytes(5)),
    MptcpOption(Subtype.MP_CAPABLE, int(Has.RCVR_KEY), rcvr_key=bytes(8)),
    MptcpOption(Subtype.MP_CAPABLE, int(Has.SNDR_KEY), sndr_key=bytes(7)),
    MptcpOption(Subtype.MP_JOIN, int(Has.TOKEN)),
    MptcpOption(Subtype.REMOVE_ADDR, int(Has.RM_IDS)),
    MptcpOption(Subtype.MP_TCPRST, int(Has.REASON), reason=256),
    MptcpOption(9, 0),
])
def test_encode_rejects_inconsistent_options(o):
    with pytest.raises(ValueError):
        encode_mptcp(o)


def test_helpers_reject_bad_lengths():
    with pytest.raises(ValueError):
        mptcp_token(b"short")
    with pytest.raises(ValueError):
        join_hmac(KC, KS, b"\x00" * 3, 0)


def test_constructors_round_trip():
    for o in (MptcpOption.mpc_syn(), MptcpOption.mpc_synack(KS), MptcpOption.mpc_ack(KC, KS),
              MptcpOption.mpc_ack(KC, KS, 100), MptcpOption.mpc_ack(KC, KS, 100, 7),
              MptcpOption.mpj_syn(1, 2, 3, True), MptcpOption.mpj_synack(bytes(8), 2, 3), MptcpOption.mpj_ack(bytes(20)),
              MptcpOption.dss(data_ack=1, subflow_seq=5, data_len=9, csum=3), MptcpOption.dss(data_seq=1),
              MptcpOption.dss(1, 2, 3, 4, 5, True, False, False), MptcpOption.add_addr(1, "10.0.0.1", 80, bytes(8)),
              MptcpOption.add_addr(2, "::1"), MptcpOption.remove_addr([1, 2]), MptcpOption.mp_prio(True),
              MptcpOption.mp_prio(False, 4), MptcpOption.mp_fail(9), MptcpOption.mp_fastclose(KS),
              MptcpOption.mp_tcprst(RstReason.MIDDLEBOX_INTERFERENCE, MPTCP_RST_TRANSIENT)):
        assert parse_mptcp(encode_mptcp(o)) == o, o
