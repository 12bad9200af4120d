"""The segment-protection boundary (mptcrypt.crypto.segment): seal/open round trips over every IP header shape,
checksums of what it emits, the published segment vector, and refusal of every altered byte."""

import struct

import pytest
from hypothesis import given, settings, strategies as st

from mptcrypt.constants import MAC_OPTION_LEN, SymCipher
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.crypto.segment import SegmentCipher
from mptcrypt.wire.checksum import ipv4_header_checksum, verify_tcp_checksum
from mptcrypt.wire.ip import build_ip_header

SRC4, DST4 = bytes((10, 0, 1, 2)), bytes((10, 0, 1, 1))
SRC6, DST6 = bytes.fromhex("fd00000000000001" + "0000000000000002"), bytes.fromhex("fd00000000000001" + "0000000000000001")
SS = bytes(range(32))


def ciphers(suite=SymCipher.AES128):
    a = ks.direction_secrets(SS, True)
    return SegmentCipher(suite, a), SegmentCipher(suite, a)


def tcp_bytes(sport=40000, dport=5000, seq=1, ack=2, flags=0x18, window=502, urg=0, options=b"", payload=b""):
    hlen = 20 + len(options)
    return struct.pack("!HHIIHHHH", sport, dport, seq, ack, ((hlen >> 2) << 12) | flags, window, 0, urg) \
        + options + payload


def ipv4(tcp: bytes, ip_options: bytes = b"") -> bytes:
    base = bytearray(build_ip_header(SRC4, DST4, len(tcp)))
    if ip_options:
        base[0] = 0x40 | ((20 + len(ip_options)) >> 2)
        struct.pack_into("!H", base, 2, 20 + len(ip_options) + len(tcp))
        struct.pack_into("!H", base, 10, 0)
        head = bytes(base) + ip_options
        csum = ipv4_header_checksum(head)
        base = bytearray(head)
        struct.pack_into("!H", base, 10, csum)
    return bytes(base) + tcp


def ipv6(tcp: bytes, ext: bytes = b"") -> bytes:
    nxt = 0 if ext else 6
    head = struct.pack("!IHBB16s16s", 6 << 28, len(ext) + len(tcp), nxt, 64, SRC6, DST6)
    return head + ext + tcp


HOP_BY_HOP = bytes((6, 0)) + bytes(6)  # next header TCP, 8 bytes, PadN-free padding


def check_checksums(packet: bytes, l4: int) -> None:
    if packet[0] >> 4 == 4:
        assert struct.unpack_from("!H", packet, 2)[0] == len(packet)
        assert ipv4_header_checksum(packet[:10] + b"\0\0" + packet[12:l4]) == struct.unpack_from("!H", packet, 10)[0]
        assert verify_tcp_checksum(packet[12:16], packet[16:20], packet[l4:])
    else:
        assert struct.unpack_from("!H", packet, 4)[0] == len(packet) - 40
        assert verify_tcp_checksum(packet[8:24], packet[24:40], packet[l4:])


SHAPES = [
    ("ipv4", lambda t: ipv4(t), 20),
    ("ipv4+4 bytes of options", lambda t: ipv4(t, bytes((1, 1, 1, 0))), 24),
    ("ipv4+20 bytes of options", lambda t: ipv4(t, bytes((1,) * 19 + (0,))), 40),
    ("ipv6", lambda t: ipv6(t), 40),
    ("ipv6+hop-by-hop", lambda t: ipv6(t, HOP_BY_HOP), 48),
]


@pytest.mark.parametrize("name,build,l4", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("payload", [b"", b"x", b"mptcrypt test vector payload" * 50])
def test_round_trip_and_checksums(name, build, l4, payload):
    tx, rx = ciphers()
    kernel = build(tcp_bytes(options=bytes((1, 1, 4, 2)), payload=payload))
    wire = tx.seal(kernel, l4, 0x1_0000_0001, 0x2_0000_0002)
    check_checksums(wire, l4)
    assert len(wire) == len(kernel) + MAC_OPTION_LEN
    assert payload == b"" or payload not in wire
    back = rx.open(wire, l4, 0x1_0000_0001, 0x2_0000_0002)
    assert back is not None
    check_checksums(back, l4)
    assert without_checksums(back, l4) == without_checksums(kernel, l4)


def without_checksums(packet: bytes, l4: int) -> bytes:
    b = bytearray(packet)
    b[l4 + 16:l4 + 18] = b"\0\0"
    if b[0] >> 4 == 4:
        b[10:12] = b"\0\0"
    return bytes(b)


def test_published_segment_vector():
    """docs/protocol.md §9: the segment's ciphertext and MAC, computed from the chain of the vectors."""
    from mptcrypt.crypto.vectors import compute
    v = compute()
    secrets = ks.DirectionSecrets(bytes.fromhex(v["enc_a[0]"]), bytes.fromhex(v["mac_a[0]"]),
                                  bytes.fromhex(v["salt_a[0]"]))
    payload = b"mptcrypt test vector payload"
    kernel = ipv4(tcp_bytes(40000, 5000, 1, 2, 0x018, 502, 0, b"", payload))
    wire = SegmentCipher(SymCipher.AES128, secrets).seal(kernel, 20, 0x1_0000_0001, 0x2_0000_0002)
    assert wire[-len(payload):].hex() == v["segment_ciphertext"]
    assert wire[20 + 20 + 4:20 + 20 + MAC_OPTION_LEN].hex() == v["segment_mac"]


def test_no_room_for_the_mac():
    tx, _ = ciphers()
    assert tx.seal(ipv4(tcp_bytes(options=bytes((1,)) * 32)), 20, 1, 2) is None


@settings(max_examples=60, deadline=None)
@given(payload=st.binary(max_size=200), flip=st.integers(min_value=0), suite=st.sampled_from(list(SymCipher)))
def test_any_altered_byte_fails(payload, flip, suite):
    tx, rx = ciphers(suite)
    wire = bytearray(tx.seal(ipv4(tcp_bytes(payload=payload)), 20, 7, 9))
    # every TCP byte but seq/ack (the caller extends them into ext_seq/ext_ack) and the checksum (the kernel's)
    positions = [i for i in range(20, len(wire)) if not 24 <= i < 32 and i not in (36, 37)]
    i = positions[flip % len(positions)]
    wire[i] ^= 0x01
    assert rx.open(bytes(wire), 20, 7, 9) is None
