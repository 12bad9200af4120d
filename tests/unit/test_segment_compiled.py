"""Differential test: the compiled segment path (mptcrypt.crypto._segment) and the Python reference
(mptcrypt.crypto.segment.PySegmentCipher / py_assemble) give identical bytes for random segments over every IP
header shape, open each other's output, and refuse the same tampering. The published vectors are checked for both
in test_segment_cipher.py."""

import os
import struct
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from mptcrypt.constants import SymCipher
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.crypto import segment
from mptcrypt.wire.compact import compact_option_area

from pktkit import AtExt, at_ext

try:
    from mptcrypt.crypto import _segment
except ImportError as exc:
    pytest.skip(f"extension mptcrypt.crypto._segment not built ({exc}); scripts/setup.sh builds it (needs libssl-dev)",
                allow_module_level=True)

U16, U32, U64 = (st.integers(min_value=0, max_value=(1 << n) - 1) for n in (16, 32, 64))
words = st.integers(min_value=0, max_value=10).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n))


@st.composite
def ip_packets(draw):
    """(packet, l4): IPv4 with 0-40 option bytes or IPv6 with 0-2 extension headers (random header bytes,
    checksums and flow labels included: both paths must carry them through identically), a TCP header with
    random fields and 0-40 option bytes, and a random payload."""
    options = draw(words)
    hlen = 20 + len(options)
    tcp = struct.pack("!HHIIHHHH", draw(U16), draw(U16), draw(U32), draw(U32),
                      (hlen >> 2) << 12 | draw(st.integers(min_value=0, max_value=0xFFF)), draw(U16), draw(U16),
                      draw(U16)) + options + draw(st.binary(max_size=1500))
    if draw(st.booleans()):
        ip_options = draw(st.integers(min_value=0, max_value=10).flatmap(lambda n: st.binary(min_size=4 * n,
                                                                                            max_size=4 * n)))
        l4 = 20 + len(ip_options)
        head = struct.pack("!BBHHHBBH4s4s", 0x40 | l4 >> 2, draw(st.integers(0, 255)), l4 + len(tcp), draw(U16),
                           draw(U16), draw(st.integers(0, 255)), 6, draw(U16), draw(st.binary(min_size=4, max_size=4)),
                           draw(st.binary(min_size=4, max_size=4)))
        return head + ip_options + tcp, l4
    ext = b"".join(bytes((6, n)) + draw(st.binary(min_size=6 + 8 * n, max_size=6 + 8 * n))
                   for n in draw(st.lists(st.integers(0, 1), max_size=2)))
    head = struct.pack("!IHBB16s16s", 6 << 28 | draw(st.integers(0, (1 << 28) - 1)), len(ext) + len(tcp),
                       0 if ext else 6, 64, draw(st.binary(min_size=16, max_size=16)),
                       draw(st.binary(min_size=16, max_size=16)))
    return head + ext + tcp, 40 + len(ext)


def pair(suite, ss):
    """Reference and compiled; their header seq/ack follow the extended numbers each test passes (AtExt)."""
    secrets = ks.direction_secrets(ss, True)
    return AtExt(segment.PySegmentCipher(suite, secrets)), AtExt(_segment.SegmentCipher(suite, secrets))


def opened(impl, packet, l4, ext_seq, ext_ack):
    try:
        return impl.open(packet, l4, ext_seq, ext_ack)
    except ValueError:
        return ValueError


KEYS = st.tuples(st.sampled_from(list(SymCipher)), st.binary(min_size=32, max_size=32))


@settings(max_examples=300, deadline=None)
@given(keys=KEYS, pkt=ip_packets(), ext_seq=U64, ext_ack=U64)
def test_identical_bytes_and_each_opens_the_other(keys, pkt, ext_seq, ext_ack):
    packet, l4 = pkt
    packet = at_ext(packet, l4, ext_seq, ext_ack)  # the header the engine's extension guarantees
    py, c = pair(*keys)
    wire = py.seal(packet, l4, ext_seq, ext_ack)
    assert c.seal(packet, l4, ext_seq, ext_ack) == wire
    hlen = (packet[l4 + 12] >> 4) * 4
    options = packet[l4 + 20:l4 + hlen]
    if len(options) + 12 > 40:  # the receiver's kernel gets the compact form the MAC covers
        options = compact_option_area(options)
    if wire is None:  # no room for the MAC option, even compact
        assert len(options) + 12 > 40
        return
    kernel = segment.py_assemble(packet, l4, options, packet[l4 + hlen:])
    assert py.open(wire, l4, ext_seq, ext_ack) == kernel
    assert c.open(wire, l4, ext_seq, ext_ack) == kernel


@settings(max_examples=200, deadline=None)
@given(keys=KEYS, pkt=ip_packets(), ext_seq=U64, ext_ack=U64, where=st.integers(min_value=0), bit=st.integers(0, 7))
def test_both_refuse_the_same_tampering(keys, pkt, ext_seq, ext_ack, where, bit):
    packet, l4 = pkt
    py, c = pair(*keys)
    wire = py.seal(packet, l4, ext_seq, ext_ack)
    if wire is None:
        return
    # any TCP byte the MAC covers: not the ports, seq/ack (extended by the caller) or the checksum
    covered = [i for i in range(l4 + 12, len(wire)) if i not in (l4 + 16, l4 + 17)]
    forged = bytearray(wire)
    forged[covered[where % len(covered)]] ^= 1 << bit
    # a data offset flipped past the end of the packet is a malformed call (ValueError), never a verified one
    assert opened(py, bytes(forged), l4, ext_seq, ext_ack) == opened(c, bytes(forged), l4, ext_seq, ext_ack) \
        in (None, ValueError)
    other = (ext_seq + 1) % (1 << 64)
    assert py.open(wire, l4, other, ext_ack) is None and c.open(wire, l4, other, ext_ack) is None


@settings(max_examples=200, deadline=None)
@given(pkt=ip_packets(), options=words, payload=st.binary(max_size=1500))
def test_assemble_identical(pkt, options, payload):
    packet, l4 = pkt
    assert _segment.assemble(packet, l4, options, payload) == segment.py_assemble(packet, l4, options, payload)


@pytest.mark.parametrize("call", [
    lambda impl: impl.seal(b"\x45" + bytes(30), 20, 1, 2),
    lambda impl: impl.open(b"\x60" + bytes(50), 40, 1, 2),
    lambda impl: impl.seal(b"\x45" + bytes(31) + b"\x50" + bytes(27), 20, 1 << 64, 2),
    lambda impl: impl.seal(b"\x75" + bytes(59), 20, 1, 2),
    lambda impl: impl.seal(b"\x60" + bytes(59), 20, 1, 2),
])
def test_both_raise_alike_on_malformed_calls(call):
    py, c = pair(SymCipher.AES128, bytes(32))
    with pytest.raises((ValueError, OverflowError)) as want:
        call(py)
    with pytest.raises(want.type):
        call(c)


@pytest.mark.skipif(os.environ.get(segment.ENV_SEGMENT_PATH) == "python", reason="Python path forced")
def test_selected_path_is_the_compiled_one():
    assert segment.SEGMENT_PATH == "compiled" and segment.SegmentCipher is _segment.SegmentCipher
    assert segment.assemble is _segment.assemble and "OpenSSL 3" in segment.SEGMENT_PATH_REASON


def test_environment_forces_the_python_path():
    code = "from mptcrypt.crypto import segment as s; print(s.SEGMENT_PATH, s.SEGMENT_PATH_REASON, s.SegmentCipher.__name__)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, segment.ENV_SEGMENT_PATH: "python"},
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["python", "forced", "by", f"{segment.ENV_SEGMENT_PATH}=python", "PySegmentCipher"]


# Poly1305 is written out in the extension (four blocks per step): held to the library's on structured inputs too,
# where the carries and the final reduction (h >= 2^130 - 5) are at their edges.
EDGE_BYTES = st.sampled_from([0x00, 0xFF, 0xFE, 0x01, 0xFB])
MESSAGES = st.one_of(st.binary(max_size=400), st.builds(lambda b, n: bytes([b]) * n, EDGE_BYTES, st.integers(0, 400)))
R_KEYS = st.one_of(st.binary(min_size=16, max_size=16), st.builds(lambda b: bytes([b]) * 16, EDGE_BYTES))


@settings(max_examples=500, deadline=None)
@given(r=R_KEYS, message=MESSAGES)
def test_poly1305_matches_the_library(r, message):
    from cryptography.hazmat.primitives.poly1305 import Poly1305
    assert _segment.poly1305_s0(r, message) == Poly1305.generate_tag(r + bytes(16), message)


def test_poly1305_rfc8439_vector_with_s_added():
    key = bytes.fromhex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")  # RFC 8439 §2.5.2
    h = int.from_bytes(_segment.poly1305_s0(key[:16], b"Cryptographic Forum Research Group"), "little")
    tag = (h + int.from_bytes(key[16:], "little")) % (1 << 128)
    assert tag.to_bytes(16, "little").hex() == "a8061dc1305136c6c22b8baf0c0127a9"


@settings(max_examples=200, deadline=None)
@given(keys=KEYS, ext_seq=U64, data=st.binary(max_size=1600))
def test_primitives_alone_match_the_reference(keys, ext_seq, data):
    """keystream/tag (the two primitives alone) against segment.SegmentKeys.crypt/tag."""
    suite, ss = keys
    secrets = ks.direction_secrets(ss, True)
    ref, c = segment.SegmentKeys(suite, secrets), _segment.SegmentCipher(suite, secrets)
    assert c.keystream(ext_seq, data) == ref.crypt(ext_seq, data)
    assert c.tag(data) == ref.tag(data)
