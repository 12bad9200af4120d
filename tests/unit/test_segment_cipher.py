"""The segment-protection boundary (mptcrypt.crypto.segment): seal/open round trips over every IP header shape,
checksums of what it emits, the published segment vector (also recomputed from the spec's text with bare
primitives), refusal of every altered byte and of a shifted option/payload boundary, and NAT-rewritten ports.

Every test runs against the Python reference and, when it is built, the compiled extension;
tests/unit/test_segment_compiled.py holds the two to identical bytes."""

import hmac
import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings, strategies as st

from mptcrypt.constants import MAC_OPTION_LEN, SymCipher
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.crypto import segment
from mptcrypt.crypto.vectors import SEGMENT_EXT_ACK, SEGMENT_EXT_SEQ, compute, segment_kernel_packet
from mptcrypt.wire.checksum import ipv4_header_checksum, verify_tcp_checksum
from mptcrypt.wire.ip import build_ip_header

from pktkit import AtExt

try:
    from mptcrypt.crypto import _segment
except ImportError:
    _segment = None

SRC4, DST4 = bytes((10, 0, 1, 2)), bytes((10, 0, 1, 1))
SRC6, DST6 = bytes.fromhex("fd00000000000001" + "0000000000000002"), bytes.fromhex("fd00000000000001" + "0000000000000001")
SS = bytes(range(32))

IMPLS = [
    pytest.param(segment.PySegmentCipher, id="python"),
    pytest.param(getattr(_segment, "SegmentCipher", None), id="compiled",
                 marks=pytest.mark.skipif(_segment is None, reason="extension mptcrypt.crypto._segment not built")),
]


@pytest.fixture(params=IMPLS)
def impl(request):
    return request.param


def ciphers(impl, suite=SymCipher.AES128):
    """Sender and receiver; their header seq/ack follow the extended numbers each test passes (AtExt)."""
    a = ks.direction_secrets(SS, True)
    return AtExt(impl(suite, a)), AtExt(impl(suite, a))


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
def test_round_trip_and_checksums(impl, name, build, l4, payload):
    tx, rx = ciphers(impl)
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


def vector_secrets(v: dict) -> ks.DirectionSecrets:
    return ks.DirectionSecrets(bytes.fromhex(v["enc_a[0]"]), bytes.fromhex(v["mac_a[0]"]),
                               bytes.fromhex(v["salt_a[0]"]))


def test_published_segment_vector(impl):
    """docs/protocol.md §9: the whole on-wire packet, its ciphertext and MAC; and open gives the kernel's back."""
    v = compute()
    kernel = segment_kernel_packet()
    wire = impl(SymCipher.AES128, vector_secrets(v)).seal(kernel, 20, SEGMENT_EXT_SEQ, SEGMENT_EXT_ACK)
    assert wire.hex() == v["segment_wire"]
    assert wire[-28:].hex() == v["segment_ciphertext"]
    assert wire[20 + 20 + 28 + 4:20 + 20 + 40].hex() == v["segment_mac"]
    assert impl(SymCipher.AES128, vector_secrets(v)).open(wire, 20, SEGMENT_EXT_SEQ, SEGMENT_EXT_ACK) == kernel


# --- the segment vector recomputed from docs/protocol.md §4, §5 and §9 alone -----------------------------------
SPEC_SS0 = "7066158d9d554fbc58dfee69f334c638b8c15556839976bce2e86644672e9df8"  # §9 ss[0]
SPEC_WIRE = ("4500006c000040004006228a0a0002020a0002019c4013880000000100000002"  # §9 segment_wire
             "f01801f6052e00001e1a200f0000000100000011000000020000002200000001"
             "001c0101fd0c4d506a07fcfe0382ba9f98239751e65533a87ec505cd285c9aa5"
             "49d955f0d8e6a8a04fb88f82")


def poly1305(key: bytes, msg: bytes) -> bytes:
    """RFC 8439 §2.5.1, written out (independent of the library the code under test uses)."""
    r = int.from_bytes(key[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(key[16:], "little")
    p, acc = (1 << 130) - 5, 0
    for i in range(0, len(msg), 16):
        acc = (acc + int.from_bytes(msg[i:i + 16] + b"\x01", "little")) * r % p
    return ((acc + s) % (1 << 128)).to_bytes(16, "little")


def word_checksum(data: bytes) -> int:
    """RFC 1071 with a 16-bit word loop."""
    if len(data) & 1:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_poly1305_as_written_matches_rfc8439_vector():
    key = bytes.fromhex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")  # RFC 8439 §2.5.2
    assert poly1305(key, b"Cryptographic Forum Research Group").hex() == "a8061dc1305136c6c22b8baf0c0127a9"


def test_segment_vector_from_the_spec_text(impl):
    ss0 = bytes.fromhex(SPEC_SS0)
    enc = hmac.digest(ss0, b"mptcrypt enc a", "sha256")
    mac = hmac.digest(ss0, b"mptcrypt mac a", "sha256")
    salt = hmac.digest(ss0, b"mptcrypt nonce a", "sha256")[:12]
    ext_seq, ext_ack = 0x100000001, 0x200000002
    payload = b"mptcrypt test vector payload"
    options = bytes.fromhex("1e1a200f" "0000000100000011" "0000000200000022" "00000001" "001c" "0101")
    nonce = (int.from_bytes(salt, "big") ^ ext_seq).to_bytes(12, "big")
    keystream = Cipher(algorithms.AES(enc[:16]), modes.CTR(nonce + b"\0\0\0\2")).encryptor().update(bytes(28))
    ct = bytes(a ^ b for a, b in zip(payload, keystream))
    kernel_word = ((20 + len(options)) // 4) << 12 | 0x018
    mac_in = struct.pack("!QQHHH", ext_seq, ext_ack, kernel_word, 502, 0) + options + ct
    prf = Cipher(algorithms.AES(mac[16:]), modes.ECB()).encryptor()
    tag = prf.update(poly1305(mac[:16] + bytes(16), mac_in))[:8]
    src, dst = bytes((10, 0, 2, 2)), bytes((10, 0, 2, 1))
    tcp = bytearray(struct.pack("!HHIIHHHH", 40000, 5000, 1, 2, (60 // 4) << 12 | 0x018, 502, 0, 0)
                    + options + bytes.fromhex("fd0c4d50") + tag + ct)
    struct.pack_into("!H", tcp, 16, word_checksum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + bytes(tcp)))
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst))
    struct.pack_into("!H", ip, 10, word_checksum(bytes(ip)))
    assert (bytes(ip) + bytes(tcp)).hex() == SPEC_WIRE
    secrets = ks.DirectionSecrets(enc, mac, salt)
    assert impl(SymCipher.AES128, secrets).seal(segment_kernel_packet(), 20, ext_seq, ext_ack).hex() == SPEC_WIRE


# --- what the MAC binds (protocol version 2) ----------------------------------------------------------------
def shifted(wire: bytes, l4: int, words: int) -> bytes:
    """`wire` with the option/payload boundary moved by `words` 32-bit words: +1 makes the first 4 payload bytes the
    last kernel option bytes (before the MAC option), -1 the reverse. The byte string `options | payload` and the
    flags are unchanged, which is all a version-1 MAC covered; the data offset moves."""
    off = (wire[l4 + 12] >> 4) * 4
    mac_at = l4 + off - MAC_OPTION_LEN
    options, mac_opt, payload = wire[l4 + 20:mac_at], wire[mac_at:l4 + off], wire[l4 + off:]
    joined, cut = options + payload, len(options) + 4 * words
    head = bytearray(wire[:l4 + 20])
    head[l4 + 12] = (head[l4 + 12] & 0x0F) | ((off // 4 + words) << 4)
    return bytes(head) + joined[:cut] + mac_opt + joined[cut:]


@pytest.mark.parametrize("words", [1, -1, 2])
def test_boundary_shift_fails(impl, words):
    """issue 12 item 5: moving bytes across the MAC option no longer verifies (it did in version 1)."""
    tx, rx = ciphers(impl)
    wire = tx.seal(ipv4(tcp_bytes(options=bytes((1, 1, 4, 2, 1, 1, 1, 1)), payload=os.urandom(64))), 20, 7, 9)
    assert rx.open(wire, 20, 7, 9) is not None
    forged = shifted(wire, 20, words)
    assert forged != wire and len(forged) == len(wire)
    assert rx.open(forged, 20, 7, 9) is None


def test_boundary_shift_keeps_the_version_1_mac_input():
    """The forgery above is one: what version 1 covered (options | ciphertext, the flags) is unchanged by it."""
    wire = ciphers(segment.PySegmentCipher)[0].seal(ipv4(tcp_bytes(options=bytes(8), payload=bytes(64))), 20, 7, 9)
    forged = shifted(wire, 20, 1)

    def v1_input(p: bytes) -> bytes:
        off = (p[32] >> 4) * 4
        return p[20:24] + p[33:34] + p[34:38] + p[40:20 + off - MAC_OPTION_LEN] + p[20 + off:]
    assert v1_input(forged) == v1_input(wire)


def test_nat_rewritten_ports_and_addresses_still_verify(impl):
    """issue 13 item 1: ports and addresses are not in the MAC input (RFC 6978), so a NAT does not break it."""
    tx, rx = ciphers(impl)
    wire = bytearray(tx.seal(ipv4(tcp_bytes(payload=b"through carrier-grade NAT")), 20, 7, 9))
    wire[12:16] = bytes((100, 64, 0, 9))  # a NAT's source address and port
    struct.pack_into("!H", wire, 20, 61001)
    back = rx.open(bytes(wire), 20, 7, 9)
    assert back is not None and back.endswith(b"through carrier-grade NAT") and back[20:22] == b"\xee\x49"


def test_no_room_for_the_mac(impl):
    tx, _ = ciphers(impl)
    assert tx.seal(ipv4(tcp_bytes(options=bytes((99, 32)) + bytes(30))), 20, 1, 2) is None  # 32 bytes, one option
    # 32 bytes that are mostly alignment: their compact form (4 bytes) leaves the MAC its room
    wire = tx.seal(ipv4(tcp_bytes(options=bytes((1,)) * 28 + bytes((3, 3, 7, 1)))), 20, 1, 2)
    assert wire is not None and wire[20 + 20:20 + 24] == bytes((3, 3, 7, 1)) and wire[32] >> 4 == 9


def test_malformed_input_raises(impl):
    tx, _ = ciphers(impl)
    good = ipv4(tcp_bytes(payload=b"x"))
    with pytest.raises(ValueError):
        tx.seal(good[:30], 20, 1, 2)  # shorter than a TCP header
    with pytest.raises(ValueError):
        tx.seal(ipv4(tcp_bytes())[:20] + bytes(12) + b"\xf0" + bytes(7), 20, 1, 2)  # data offset beyond the end
    with pytest.raises(OverflowError):
        tx.seal(good, 20, 1 << 64, 2)
    with pytest.raises(OverflowError):
        tx.seal(good, 20, -1, 2)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=60, deadline=None)
@given(payload=st.binary(max_size=200), flip=st.integers(min_value=0), suite=st.sampled_from(list(SymCipher)))
def test_any_altered_byte_fails(impl, payload, flip, suite):
    tx, rx = ciphers(impl, suite)
    wire = bytearray(tx.seal(ipv4(tcp_bytes(payload=payload)), 20, 7, 9))
    # every TCP byte but the ports (rewritten by NATs, left out of the MAC by design), seq/ack (the caller extends
    # them into ext_seq/ext_ack) and the checksum (the kernel's)
    positions = [i for i in range(24, len(wire)) if not 24 <= i < 32 and i not in (36, 37)]
    i = positions[flip % len(positions)]
    wire[i] ^= 0x01
    assert rx.open(bytes(wire), 20, 7, 9) is None


@pytest.mark.parametrize("suite", list(SymCipher))
def test_keystream_is_position_keyed_and_mac_covers_everything(suite):
    keys = segment.SegmentKeys(suite, ks.direction_secrets(os.urandom(32), True))
    data = os.urandom(1448)
    ct = keys.crypt(1 << 40, data)
    assert ct != data and keys.crypt(1 << 40, ct) == data
    assert keys.crypt((1 << 40) + 1, data) != ct
    t = keys.tag(b"h" + ct)
    assert len(t) == 8 and t == keys.tag(b"h" + ct) and t != keys.tag(b"h" + ct[:-1]) and t != keys.tag(b"H" + ct)
