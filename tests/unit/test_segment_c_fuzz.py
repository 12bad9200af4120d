"""Malformed and adversarial input to the compiled segment path (mptcrypt.crypto._segment), which parses packets
inside a root daemon: every call either returns what the Python reference returns or raises the same documented
exception (ValueError for a packet that does not hold the TCP header it declares, OverflowError for seq/ack beyond
64 bits, TypeError for a wrong argument type), never another exception type, a crash, a leaked reference or
growing memory. Calls that crash the interpreter run in a child process.

Also here: the hand-written Poly1305 against cryptography's on edge inputs (all-0xFF blocks, every length around
the 16- and 64-byte steps, r with every clamped bit set, accumulators that land on and around 2^130 - 5), and the
keystream at block and 32/64-bit sequence boundaries through one long-lived object (state carried between calls).

The same fuzz under AddressSanitizer + UBSan, for a few minutes: bench/fuzz_segment_asan.py (not run by CI)."""

from __future__ import annotations

import gc
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc

import pytest
from cryptography.hazmat.primitives.poly1305 import Poly1305
from hypothesis import HealthCheck, given, settings, strategies as st

from mptcrypt.constants import SymCipher
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.crypto import segment

from pktkit import AtExt

try:
    from mptcrypt.crypto import _segment
except ImportError as exc:
    pytest.skip(f"extension mptcrypt.crypto._segment not built ({exc}); scripts/setup.sh builds it (needs libssl-dev)",
                allow_module_level=True)

DOCUMENTED = (ValueError, OverflowError, TypeError)
SECRETS = ks.direction_secrets(bytes(range(32)), True)
# bench/fuzz_segment_asan.py raises the count under the sanitizers; a unit run stays at a few seconds
FAST = settings(max_examples=int(os.environ.get("MPTCRYPT_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def outcome(fn, *args):
    """The result, or the exception type; an undocumented exception type is a finding."""
    try:
        return fn(*args)
    except DOCUMENTED as exc:
        return type(exc)


def both(suite=SymCipher.AES128, secrets=SECRETS):
    """Reference and compiled; their header seq/ack follow the extended numbers each test passes (AtExt)."""
    return AtExt(segment.PySegmentCipher(suite, secrets)), AtExt(_segment.SegmentCipher(suite, secrets))


def ip_header(version: int, ihl_words: int, total: int) -> bytes:
    if version == 4:
        return struct.pack("!BBHHHBBH4s4s", 0x40 | (ihl_words & 0xF), 0, total & 0xFFFF, 0, 0x4000, 64, 6, 0,
                           bytes((10, 0, 0, 1)), bytes((10, 0, 0, 2))) + bytes(max(0, 4 * ihl_words - 20))
    return struct.pack("!IHBB16s16s", 6 << 28, total & 0xFFFF, 6, 64, bytes(16), bytes(15) + b"\x01")


@st.composite
def malformed(draw):
    """(packet, l4): an IP header whose IHL / total length / payload length may lie, an `l4` that may disagree
    with it (before it, inside it, past the end), a TCP header whose data offset may be < 5 or run past the
    buffer, a truncated buffer, options that may end with a MAC option or a fragment of one, odd payloads."""
    version = draw(st.sampled_from([4, 6, 4, 6, 0, 5, 15]))
    ihl = draw(st.integers(0, 15))
    ip = ip_header(6 if version == 6 else 4, ihl if version == 4 else 5, draw(st.integers(0, 0xFFFF)))
    if version not in (4, 6):
        ip = bytes((version << 4 | (ip[0] & 0xF),)) + ip[1:]
    opt_words = draw(st.integers(0, 10))
    tail = draw(st.sampled_from([b"", b"\xfd\x0c\x4d\x50" + bytes(8), b"\xfd\x0c\x4d", b"\xfd\x0c\x4d\x50"]))
    options = (draw(st.binary(min_size=4 * opt_words, max_size=4 * opt_words)) + tail)[-40:]
    off = draw(st.one_of(st.just((20 + len(options)) // 4), st.integers(0, 15)))
    tcp = struct.pack("!HHIIBBHHH", 1, 2, draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)),
                      off << 4 | draw(st.integers(0, 15)), draw(st.integers(0, 255)), draw(st.integers(0, 0xFFFF)),
                      0, draw(st.integers(0, 0xFFFF))) + options
    payload = draw(st.one_of(st.binary(max_size=300), st.integers(0, 300).map(lambda n: b"\xff" * n)))
    packet = ip + tcp + payload
    packet = packet[:draw(st.integers(0, len(packet)))] if draw(st.integers(0, 4)) == 0 else packet
    l4 = draw(st.one_of(st.just(len(ip)), st.integers(-3, len(packet) + 3), st.sampled_from([0, 19, 20, 39, 40])))
    return packet, l4


SEQS = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 2**32 - 1, 2**32, 2**64 - 1, 2**64, -1]))


@FAST
@given(pkt=malformed(), ext_seq=SEQS, ext_ack=SEQS, suite=st.sampled_from(list(SymCipher)))
def test_malformed_seal_and_open_match_the_reference(pkt, ext_seq, ext_ack, suite):
    packet, l4 = pkt
    py, c = both(suite)
    in_range = 0 <= ext_seq < 2**64 and 0 <= ext_ack < 2**64
    for name in ("seal", "open"):
        got = outcome(getattr(c, name), packet, l4, ext_seq, ext_ack)
        if in_range:
            assert got == outcome(getattr(py, name), packet, l4, ext_seq, ext_ack), name
        else:  # the compiled path checks the arguments first; the reference only when it reaches the MAC
            assert got is OverflowError, name


@FAST
@given(pkt=malformed(), options=st.binary(max_size=44), payload=st.binary(max_size=64))
def test_malformed_assemble_matches_the_reference(pkt, options, payload):
    packet, l4 = pkt
    assert outcome(_segment.assemble, packet, l4, options, payload) == \
        outcome(segment.py_assemble, packet, l4, options, payload)


def forge_with_key(keys: segment.SegmentKeys, packet: bytes, l4: int, ext_seq: int, ext_ack: int) -> bytes:
    """`packet` with a MAC option that verifies (computed with the receiver's own keys), whatever else is wrong
    with it: drives the code after the MAC check, which an attacker without the keys never reaches."""
    off = (packet[l4 + 12] >> 4) * 4
    end = l4 + off
    options, ct = packet[l4 + 20:end - 12], packet[end:]
    word = struct.unpack_from("!H", packet, l4 + 12)[0] - (3 << 12)
    window, urg = struct.unpack_from("!H", packet, l4 + 14)[0], struct.unpack_from("!H", packet, l4 + 18)[0]
    tag = keys.tag(segment.mac_input(ext_seq, ext_ack, word, window, urg, options, ct))
    return packet[:end - 8] + tag + packet[end:]


@FAST
@given(pkt=malformed(), ext_seq=st.integers(0, 2**64 - 1), suite=st.sampled_from(list(SymCipher)))
def test_open_after_a_verified_mac_matches_the_reference(pkt, ext_seq, suite):
    packet, l4 = pkt
    py, c = both(suite)
    try:
        off = (packet[l4 + 12] >> 4) * 4
        ok = l4 >= 20 and off >= 32 and l4 + off <= len(packet) and packet[l4 + off - 12:l4 + off - 8] == \
            b"\xfd\x0c\x4d\x50" and packet[0] >> 4 in (4, 6) and (packet[0] >> 4 == 4 or l4 >= 40)
    except IndexError:
        ok = False
    if not ok:
        return
    forged = forge_with_key(segment.SegmentKeys(suite, SECRETS), packet, l4, ext_seq, 5)
    want = outcome(py.open, forged, l4, ext_seq, 5)
    assert want is not None
    assert outcome(c.open, forged, l4, ext_seq, 5) == want


@pytest.mark.parametrize("args", [(b"", 20), (b"\x45", 20), (b"\x45" + bytes(38), 20), (b"\x60" + bytes(59), 40),
                                  (b"\x45" + bytes(59), -1), (b"\x45" + bytes(59), 61), (b"\x45" + bytes(59), 2**40)])
@pytest.mark.parametrize("name", ["seal", "open"])
def test_short_buffers_and_bad_l4_raise_value_error(name, args):
    py, c = both()
    for impl in (py, c):
        with pytest.raises(ValueError):
            getattr(impl, name)(*args, 1, 2)


def test_data_offset_below_five_or_past_the_buffer_raises_value_error():
    py, c = both()
    for off in list(range(5)) + [15]:
        packet = ip_header(4, 5, 60) + struct.pack("!HHIIBBHHH", 1, 2, 3, 4, off << 4, 0x18, 9, 0, 0) + bytes(20)
        for impl in (py, c):
            for name in ("seal", "open"):
                with pytest.raises(ValueError):
                    getattr(impl, name)(packet, 20, 1, 2)


@pytest.mark.parametrize("arg,value", [(1, "20"), (1, 20.0), (2, 1.5), (3, None), (0, "packet"), (0, 12345)])
def test_wrong_argument_types_raise_type_error(arg, value):
    _py, c = both()
    args = [ip_header(4, 5, 40) + struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 0x50, 0x18, 9, 0, 0), 20, 1, 2]
    args[arg] = value
    for name in ("seal", "open"):
        with pytest.raises(TypeError):
            getattr(c, name)(*args)
    with pytest.raises(TypeError):
        c.seal(args[0], 20, 1)


def test_any_buffer_type_is_read_not_kept():
    """bytearray / memoryview input gives the same bytes, and the buffer is released (resizable afterwards)."""
    py, c = both()
    packet = ip_header(4, 5, 45) + struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 0x50, 0x18, 9, 0, 0) + b"hello"
    wire = py.seal(packet, 20, 7, 8)
    for kind in (bytearray, memoryview):
        assert c.seal(kind(packet), 20, 7, 8) == wire
        assert c.open(kind(wire), 20, 7, 8) == py.open(wire, 20, 7, 8)
    mutable = bytearray(wire)
    c.open(mutable, 20, 7, 8)
    mutable.extend(b"resizable: no buffer export left behind")


def run_child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)


CHILD_PRELUDE = """
    import sys
    from mptcrypt.crypto import _segment, keyschedule as ks
    c = _segment.SegmentCipher(1, ks.direction_secrets(bytes(32), True))
    packet = b"\\x45" + bytes(59)
"""


@pytest.mark.parametrize("call", ["c.seal(packet, sys.maxsize - 15, 0, 0)", "c.open(packet, sys.maxsize - 15, 0, 0)",
                                  "_segment.assemble(packet, sys.maxsize - 15, b'', b'')"])
def test_huge_l4_raises_value_error_not_a_crash(call):
    child = run_child(CHILD_PRELUDE + f"""
    try:
        {call}
    except ValueError:
        print("ValueError")
    """)
    assert (child.returncode, child.stdout.strip()) == (0, "ValueError"), child.stderr[-500:]


def test_uninitialised_object_raises_not_a_crash():
    child = run_child(CHILD_PRELUDE + """
    u = _segment.SegmentCipher.__new__(_segment.SegmentCipher)
    segment = packet[:32] + b"\\x50" + bytes(7) + b"payload"
    for name, args in (("seal", (segment, 20, 0, 0)), ("open", (segment, 20, 0, 0)), ("keystream", (0, b"x")),
                       ("tag", (b"mac input",))):
        try:
            getattr(u, name)(*args)
        except (ValueError, TypeError, RuntimeError):
            print("raised")
    """)
    assert (child.returncode, child.stdout.split()) == (0, ["raised"] * 4), child.stderr[-500:]


def _kernel_packet(payload_len: int, version: int = 4) -> tuple[bytes, int]:
    tcp = struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 0x50, 0x18, 9, 0, 0) + bytes(payload_len)
    l4 = 20 if version == 4 else 40
    return ip_header(version, 5, (l4 if version == 4 else 0) + len(tcp)) + tcp, l4


def test_open_of_an_oversized_verified_packet_raises_like_the_reference():
    py, c = both()
    keys = segment.SegmentKeys(SymCipher.AES128, SECRETS)
    packet, l4 = _kernel_packet(65535 - 40 + 8)  # kernel packet 65,543 bytes: beyond the IPv4 total length
    wire = packet[:32] + b"\x80" + packet[33:40] + b"\xfd\x0c\x4d\x50" + bytes(8) + packet[40:]
    forged = forge_with_key(keys, wire, l4, 9, 5)
    assert outcome(py.open, forged, l4, 9, 5) is ValueError
    assert outcome(c.open, forged, l4, 9, 5) is ValueError


@pytest.mark.parametrize("version", [4, 6])
def test_largest_packets(version):
    """The largest kernel packet that still fits with its MAC option seals in both; one byte more raises."""
    py, c = both()
    room = 65535 - (20 if version == 4 else 0) - 20 - 12
    for extra, want_error in ((0, False), (1, True)):
        packet, l4 = _kernel_packet(room + extra, version)
        got = [outcome(impl.seal, packet, l4, 2**32 - 1, 1) for impl in (py, c)]
        assert got[0] == got[1]
        assert (got[0] is ValueError) == want_error
        if not want_error:
            assert c.open(got[0], l4, 2**32 - 1, 1) == py.open(got[0], l4, 2**32 - 1, 1) is not None


def test_no_reference_leaks_or_memory_growth():
    """Refcounts of the arguments and of None stay put, and memory does not grow, over every return path."""
    py, c = both()
    good, l4 = _kernel_packet(100)
    wire = py.seal(good, l4, 1, 2)
    calls = [(c.seal, good, l4, 1, 2), (c.open, wire, l4, 1, 2), (c.open, wire, l4, 3, 2), (c.open, good, l4, 1, 2),
             (c.seal, good[:30], 20, 1, 2), (c.seal, good, 20, -1, 2), (c.open, wire, 20, 1, 2**64),
             (c.seal, good[:20] + good[20:32] + b"\xb0" + good[33:], 20, 1, 2),
             (_segment.assemble, good, 20, b"abcd", b"xyz"), (_segment.assemble, good, 20, b"abc", b""),
             (_segment.poly1305_s0, bytes(16), wire)]
    watched = [good, wire, SECRETS.enc]

    def run(n):
        for _ in range(n):
            for fn, *args in calls:
                outcome(fn, *args)
    run(200)
    gc.collect()
    before, nones = [sys.getrefcount(o) for o in watched], sys.getrefcount(None)
    run(2000)
    gc.collect()
    assert [sys.getrefcount(o) for o in watched] == before
    # None is not immortal before 3.12: one reference lost or kept per call would move it by thousands
    assert abs(sys.getrefcount(None) - nones) < 100
    tracemalloc.start()
    first = tracemalloc.take_snapshot()
    run(2000)
    gc.collect()
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(first, "filename"))
    tracemalloc.stop()
    assert grown < 64 * 1024, grown
    for _ in range(1000):  # construction/destruction: the type's own reference too
        _segment.SegmentCipher(SymCipher.CHACHA20, SECRETS)
    assert sys.getrefcount(_segment.SegmentCipher) < 100


# ------------------------------------------------------------------------------------------------ Poly1305 edges
RMAX = bytes.fromhex("ffffff0ffcffff0ffcffff0ffcffff0f")  # every bit the clamp keeps (RFC 8439 §2.5)
R_EDGES = [RMAX, b"\xff" * 16, bytes(16), (1).to_bytes(16, "little"), (5).to_bytes(16, "little"),
           bytes.fromhex("fcffff0ffcffff0ffcffff0ffcffff0f")]


def library_hash(r: bytes, message: bytes) -> bytes:
    return Poly1305.generate_tag(r + bytes(16), message)


@pytest.mark.parametrize("r", R_EDGES, ids=lambda r: r.hex()[:8])
def test_poly1305_every_length_and_all_ones_blocks(r):
    for fill in (b"\xff", b"\x00", b"\xfb"):
        for n in list(range(0, 81)) + [16383, 16384, 16385, 16400, 65535, 65536, 65537, 65600]:
            assert _segment.poly1305_s0(r, fill * n) == library_hash(r, fill * n), (fill, n)


def test_poly1305_accumulator_on_and_around_the_modulus():
    """With r = 1, h = sum(m_i + 2^128): pick blocks so that h lands on 2^130 - 5 + d before the final reduction,
    in the single-block loop and in the four-blocks-per-step one."""
    le = lambda v: v.to_bytes(16, "little")
    top = (1 << 128) - 1
    r = le(1)
    for d in range(-6, 4):
        for lead in range(0, 9):  # lead blocks of 2^128 - 1 put earlier carries at their edges
            m = le(top) * lead + le(top) + le((1 << 128) - 4 + d)
            assert _segment.poly1305_s0(r, m) == library_hash(r, m), (d, lead)
    for n in range(1, 70):
        m = b"\xff" * n
        for rr in R_EDGES:
            assert _segment.poly1305_s0(rr, m) == library_hash(rr, m)


@settings(max_examples=200, deadline=None)
@given(r=st.one_of(st.sampled_from(R_EDGES), st.binary(min_size=16, max_size=16)),
       message=st.one_of(st.binary(min_size=0, max_size=2000),
                         st.lists(st.sampled_from([b"\xff" * 16, bytes(16), b"\xfb" + b"\xff" * 15]), max_size=40)
                         .map(b"".join)))
def test_poly1305_matches_on_random_and_structured_blocks(r, message):
    assert _segment.poly1305_s0(r, message) == library_hash(r, message)


def test_poly1305_rejects_bad_keys():
    with pytest.raises(ValueError):
        _segment.poly1305_s0(bytes(15), b"")
    with pytest.raises(TypeError):
        _segment.poly1305_s0("r" * 16, b"")


# ------------------------------------------------------------------------------------------------ keystream edges
SEQ_EDGES = [0, 1, 2**31 - 1, 2**32 - 2, 2**32 - 1, 2**32, 2**32 + 1, 2**63, 2**64 - 2, 2**64 - 1]
LEN_EDGES = [1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1447, 1448, 1449, 4095, 4096, 4097]


@pytest.mark.parametrize("suite", list(SymCipher))
def test_keystream_at_block_and_sequence_boundaries_one_object(suite):
    """One long-lived object per side (as the engine keeps one per direction): odd lengths must not leave a
    partial keystream block for the next call; the counter block is nonce | 2 (AES) or 1 | nonce (ChaCha20) for
    every segment, so a low-32-bit seq near 2^32 never wraps a counter inside a segment; the reference agrees."""
    secrets = ks.direction_secrets(os.urandom(32), True)
    py, c = both(suite, secrets)
    rx = _segment.SegmentCipher(suite, secrets)
    keys = segment.SegmentKeys(suite, secrets)
    for seq in SEQ_EDGES:
        for n in LEN_EDGES:
            packet, l4 = _kernel_packet(0)
            payload = os.urandom(n)
            packet = packet[:2] + struct.pack("!H", 40 + n) + packet[4:] + payload
            wire = c.seal(packet, l4, seq, 1)
            assert wire == py.seal(packet, l4, seq, 1), (seq, n)
            assert wire[-n:] == keys.crypt(seq, payload)
            assert rx.open(wire, l4, seq, 1)[-n:] == payload
    # a keystream that spans the low-32-bit wrap equals the reference's single AEAD call
    packet, l4 = _kernel_packet(65000)
    assert c.seal(packet, l4, 2**32 - 1, 0) == py.seal(packet, l4, 2**32 - 1, 0)


def test_keys_are_wiped_when_the_object_is_freed():
    """The hash key (r and its powers) and the salt are cleansed in dealloc (the EVP contexts' key schedules are
    OpenSSL's to clear): read the freed block in a child process, its pool kept alive by same-size neighbours."""
    child = run_child("""
    import ctypes
    from mptcrypt.crypto import _segment, keyschedule as ks
    size = _segment.SegmentCipher.__basicsize__
    secrets = ks.direction_secrets(bytes(range(32)), True)
    before = [bytes(size - 33) for _ in range(64)]
    c = _segment.SegmentCipher(1, secrets)
    after = [bytes(size - 33) for _ in range(64)]
    addr = id(c)
    live = ctypes.string_at(addr, size)
    del c
    freed = ctypes.string_at(addr, size)
    # layout: PyObject_HEAD (16), suite + padding (8), two EVP context pointers (16), then PolyKey and salt
    print(secrets.salt in live, secrets.salt in freed, live[40:] != bytes(size - 40), freed[40:] == bytes(size - 40))
    """)
    assert child.stdout.split() == ["True", "False", "True", "True"], child.stderr[-500:]
