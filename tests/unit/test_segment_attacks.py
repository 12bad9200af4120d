"""Protocol-v2 segment protection (docs/protocol.md §5) attacked by someone who read the spec and sits on the path:
each test is one attack, run against the Python reference and the compiled extension alike, and asserts the
forged segment does not verify (open returns None) while the genuine one does.

Covered: replay onto another subflow (another ss[i]), onto the reverse direction (reflection) and onto another
connection; options reordered, dropped, added, or moved across the MAC option; the MAC option duplicated,
stripped, mis-sized; payload truncated or extended; the data offset shifted in the wire view and in the kernel
view; a pure ACK's window / urgent pointer / flags / reserved bits altered; a segment replayed 2^32 bytes (4 GB)
later in the stream, with the engine's own sequence extension; and the segment-path selection in segment.py
(the daemon must never run a MAC other than the peer's)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import types

import pytest

from mptcrypt.constants import SymCipher
from types import SimpleNamespace

from mptcrypt.core.datapath import extended


def extend(seq32: int, ref: int) -> int:
    """The engine's own extension rule (core/datapath.extended) for a 32-bit seq against a reference."""
    return extended(SimpleNamespace(seq=seq32, ack=0, flags=0), ref, 0)[0]
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.crypto import segment
from mptcrypt.crypto.vectors import SEGMENT_EXT_ACK, SEGMENT_EXT_SEQ, SEGMENT_OPTIONS, compute, segment_kernel_packet
from mptcrypt.wire.ip import build_ip_header

from pktkit import AtExt

try:
    from mptcrypt.crypto import _segment
except ImportError:
    _segment = None

IMPLS = [
    pytest.param(segment.PySegmentCipher, id="python"),
    pytest.param(getattr(_segment, "SegmentCipher", None), id="compiled",
                 marks=pytest.mark.skipif(_segment is None, reason="extension mptcrypt.crypto._segment not built")),
]
SUITES = list(SymCipher)
SS0 = bytes(range(32))
MAC_PREFIX = b"\xfd\x0c\x4d\x50"
ACK, PSH, FIN, SYN, RST, URG, ECE, CWR = 0x10, 0x08, 0x01, 0x02, 0x04, 0x20, 0x40, 0x80
NOP = b"\x01"
TIMESTAMP_LIKE = NOP + NOP + b"\x08\x0a" + bytes(range(8))  # 12 bytes of kernel options in two parts
ADD_ADDR = bytes((30, 8, 0x30, 2, 10, 9, 9, 9))  # MPTCP ADD_ADDR (RFC 8684 §3.4.1), no HMAC: an injection


@pytest.fixture(params=IMPLS)
def impl(request):
    return request.param


@pytest.fixture(params=SUITES, ids=lambda s: s.name)
def suite(request):
    return request.param


def kernel(options: bytes = TIMESTAMP_LIKE, payload: bytes = b"attack at dawn, 1448 bytes or so" * 3, flags=ACK | PSH,
           window=502, urg=0, seq=5_000_000_000 & 0xFFFFFFFF, ack=7_000_000_000 & 0xFFFFFFFF) -> bytes:
    hlen = 20 + len(options)
    tcp = struct.pack("!HHIIHHHH", 40000, 5000, seq, ack, (hlen >> 2) << 12 | flags, window, 0, urg) + options + payload
    return segment.py_assemble(build_ip_header(bytes((10, 0, 1, 2)), bytes((10, 0, 1, 1)), len(tcp)) + tcp, 20,
                               options, payload)


def pair(impl, suite, ss=SS0, a_to_b=True):
    """Sender and receiver ciphers; their header seq/ack follow the extended numbers each test passes (AtExt)."""
    secrets = ks.direction_secrets(ss, a_to_b)
    return AtExt(impl(suite, secrets)), AtExt(impl(suite, secrets))


def split(wire: bytes, l4: int = 20):
    """(TCP fixed header, kernel options, MAC option, payload) of an on-wire packet."""
    off = (wire[l4 + 12] >> 4) * 4
    return wire[l4:l4 + 20], wire[l4 + 20:l4 + off - 12], wire[l4 + off - 12:l4 + off], wire[l4 + off:]


def rebuild(wire: bytes, options_area: bytes, payload: bytes, l4: int = 20) -> bytes:
    """`wire` with a new option area (data offset set from it) and payload, lengths and checksums fresh: what an
    on-path attacker sends (valid checksums, so only the MAC can refuse it)."""
    return segment.py_assemble(wire, l4, options_area, payload)


def verifies(rx, packet, ext_seq=5_000_000_000, ext_ack=7_000_000_000) -> bool:
    return rx.open(packet, 20, ext_seq, ext_ack) is not None


def sealed(tx, packet=None, ext_seq=5_000_000_000, ext_ack=7_000_000_000):
    return tx.seal(kernel() if packet is None else packet, 20, ext_seq, ext_ack)


# ---------------------------------------------------------------------------------------------- wrong keys
def test_replay_onto_another_subflow_of_the_same_session(impl, suite):
    """Ports are not in the MAC input; the binding is ss[i]: a segment of subflow i (ss[i]) replayed onto subflow
    i + 1 or i + 2 of the same MPTCP connection, same seq numbers, is verified under other keys."""
    chain = ks.KeyChain(SS0)
    tx, rx = pair(impl, suite, chain.ss(1))
    wire = sealed(tx)
    assert verifies(rx, wire)
    for j in (0, 2, 3):
        assert not verifies(pair(impl, suite, chain.ss(j))[1], wire), j


def test_reflection_onto_the_reverse_direction(impl, suite):
    """Direction A's segment sent back to its sender (direction B of the same subflow) does not verify, and the
    two directions never share a keystream (enc, mac and salt all differ)."""
    a, b = ks.direction_secrets(SS0, True), ks.direction_secrets(SS0, False)
    assert a.enc != b.enc and a.mac != b.mac and a.salt != b.salt
    wire = sealed(impl(suite, a))
    assert verifies(impl(suite, a), wire) and not verifies(impl(suite, b), wire)
    # same seq in both directions: ciphertexts differ, so XOR of the two reveals nothing about the plaintexts
    assert split(sealed(impl(suite, a)))[3] != split(sealed(impl(suite, b)))[3]


def test_replay_onto_another_connection(impl, suite):
    other = pair(impl, suite, bytes(reversed(range(32))))[1]
    assert not verifies(other, sealed(pair(impl, suite)[0]))


def test_the_suite_is_bound_by_the_key_schedule_not_the_mac(impl):
    """The MAC does not cover the suite: an AES-128 segment opened by a ChaCha20 cipher of the same secrets
    verifies and decrypts to garbage. What keeps both ends on one suite is ss[0]'s transcript, which holds the
    sym-cipher list and the chosen suite (§4): another choice gives other keys altogether."""
    secrets = ks.direction_secrets(SS0, True)
    wire = sealed(impl(SymCipher.AES128, secrets))
    opened = impl(SymCipher.CHACHA20, secrets).open(wire, 20, 5_000_000_000, 7_000_000_000)
    assert opened is not None and not opened.endswith(b"attack at dawn, 1448 bytes or so" * 3)
    transcripts = {ks.transcript(1, bytes(32), bytes(32), b"\x01", b"\x01\x02", sym) for sym in (1, 2)}
    assert len({ks.initial_ss(bytes(32), t) for t in transcripts}) == 2


# ---------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize("attack", [
    "swap kernel options", "mac option first", "nop before mac", "option after mac", "drop kernel option",
    "duplicate mac", "inject add_addr before mac", "replace kernel options", "strip mac", "mac length 11",
    "mac length 13", "wrong exid", "truncated tag"])
def test_options_cannot_be_reordered_moved_or_injected(impl, suite, attack):
    tx, rx = pair(impl, suite)
    wire = sealed(tx)
    _head, opts, mac, payload = split(wire)
    area = {
        "swap kernel options": opts[4:] + opts[:4] + mac,
        "mac option first": mac + opts,
        "nop before mac": opts + NOP * 4 + mac,
        "option after mac": opts + mac + NOP * 4,
        "drop kernel option": opts[4:] + mac,
        "duplicate mac": opts[:4] + mac + mac,
        "inject add_addr before mac": opts[:4] + ADD_ADDR + mac,
        "replace kernel options": ADD_ADDR + NOP * 4 + mac,
        "strip mac": opts,
        "mac length 11": opts + b"\xfd\x0b" + mac[2:11] + NOP,
        "mac length 13": opts + b"\xfd\x0d" + mac[2:],
        "wrong exid": opts + mac[:2] + b"\x4d\x51" + mac[4:],
        "truncated tag": opts + mac[:8] + NOP * 4,
    }[attack]
    forged = rebuild(wire, area, payload)
    assert forged != wire
    assert verifies(rx, wire) and not verifies(rx, forged)


def test_options_moved_across_the_mac_option_both_ways(impl, suite):
    """The v1 forgery (issue 12 item 5): the last option word becomes the first payload word (kernel view: data
    offset one word shorter), or the first payload word becomes an option (one word longer). The byte string
    options | payload is unchanged; the kernel data offset in the MAC input refuses it."""
    tx, rx = pair(impl, suite)
    wire = sealed(tx)
    _head, opts, mac, payload = split(wire)
    into_payload = rebuild(wire, opts[:-4] + mac, opts[-4:] + payload)
    into_options = rebuild(wire, opts + payload[:4] + mac, payload[4:])
    for forged in (into_payload, into_options):
        assert (split(forged)[1] + split(forged)[3]) == opts + payload
        assert not verifies(rx, forged)


def test_kernel_view_of_the_data_offset_round_trips(impl, suite):
    """seal binds the data offset the kernel set (options only), open checks wire offset - 3 and hands the kernel
    exactly its own header back; the reserved bits (and NS) ride in the same bound word."""
    tx, rx = pair(impl, suite)
    for options in (b"", NOP * 4, TIMESTAMP_LIKE, SEGMENT_OPTIONS):
        for low_nibble in (0, 1, 0xE, 0xF):  # reserved bits and NS (RFC 3540) are in byte 12's low nibble
            k = bytearray(kernel(options, seq=9, ack=10))
            k[32] = (k[32] & 0xF0) | low_nibble
            k = segment.py_assemble(bytes(k), 20, *_area_payload(bytes(k)))
            wire = tx.seal(k, 20, 9, 10)
            assert wire[32] >> 4 == (k[32] >> 4) + 3 and wire[32] & 0x0F == low_nibble
            assert rx.open(wire, 20, 9, 10) == k
            flipped = bytearray(wire)
            flipped[32] ^= 0x01  # NS (or a reserved bit): the kernel word is bound
            assert rx.open(segment.py_assemble(bytes(flipped), 20, *_area_payload(bytes(flipped))), 20, 9, 10) is None


def _area_payload(wire: bytes, l4: int = 20):
    off = (wire[l4 + 12] >> 4) * 4
    return wire[l4 + 20:l4 + off], wire[l4 + off:]


# ---------------------------------------------------------------------------------------------- payload
def test_truncated_or_extended_payload_does_not_verify(impl, suite):
    tx, rx = pair(impl, suite)
    wire = sealed(tx)
    _head, opts, mac, payload = split(wire)
    for cut in range(len(payload)):
        assert not verifies(rx, rebuild(wire, opts + mac, payload[:cut])), cut
    for extra in (b"\x00", b"\x01", payload[:16], os.urandom(33)):
        assert not verifies(rx, rebuild(wire, opts + mac, payload + extra))
    # the padding rule of Poly1305 (0x01 then zeros) keeps a payload ending in 0x01 00.. apart from a shorter one
    k = kernel(payload=b"x" * 15)
    w = tx.seal(k, 20, 1, 2)
    h, o, m, p = split(w)
    assert not verifies(rx, rebuild(w, o + m, p + b"\x01"), 1, 2)


def test_pure_ack_fields_are_bound(impl, suite):
    """A pure ACK (no payload): window, urgent pointer, every flag bit, and the ack itself (through ext_ack)."""
    tx, rx = pair(impl, suite)
    wire = tx.seal(kernel(payload=b"", options=b""), 20, 100, 200)
    assert rx.open(wire, 20, 100, 200) is not None
    tampered = []
    for offset, value in ((34, b"\xff\xff"), (34, b"\x00\x00"), (38, b"\x00\x01")):  # window, urgent
        w = bytearray(wire)
        w[offset:offset + 2] = value
        tampered.append(w)
    for bit in (FIN, SYN, RST, PSH, URG, ECE, CWR, ACK):
        w = bytearray(wire)
        w[33] ^= bit
        tampered.append(w)
    for w in tampered:
        assert rx.open(segment.py_assemble(bytes(w), 20, *_area_payload(bytes(w))), 20, 100, 200) is None
    assert rx.open(wire, 20, 100, 201) is None and rx.open(wire, 20, 101, 200) is None


def test_same_seq_different_acks_give_unrelated_tags(impl, suite):
    """No nonce in the MAC: pure ACKs at one seq with moving acks/windows (what TCP does all the time) are
    distinct MAC inputs, and a retransmission is bit-identical."""
    tx, _ = pair(impl, suite)
    tags = {split(tx.seal(kernel(payload=b"", window=w), 20, 100, a))[2] for a in range(200, 216) for w in (1, 2)}
    assert len(tags) == 32
    assert tx.seal(kernel(), 20, 3, 4) == tx.seal(kernel(), 20, 3, 4)


# ---------------------------------------------------------------------------------------------- replay in time
def test_replay_four_gigabytes_later(impl, suite):
    """The 64-bit extended seq replaces PAWS: a segment sealed at S does not verify at S + 2^32 (its 32-bit seq
    wrapped around), nor with its ack 2^32 later."""
    tx, rx = pair(impl, suite)
    seq0 = 0xFFFF_F000
    wire = sealed(tx, kernel(seq=seq0 & 0xFFFFFFFF), seq0, 2000)
    assert verifies(rx, wire, seq0, 2000)
    for ext_seq, ext_ack in ((seq0 + 2**32, 2000), (seq0, 2000 + 2**32), (seq0 + 2**33, 2000 + 2**32),
                             (seq0 ^ 2**63, 2000)):
        assert not verifies(rx, wire, ext_seq, ext_ack)


def test_replay_four_gigabytes_later_through_the_engines_extension(impl, suite):
    """What the receiver computes for the replay: extend() takes the 64-bit value nearest its reference, i.e.
    the current wrap, so the old MAC is checked against S + 2^32 and fails."""
    tx, rx = pair(impl, suite)
    isn = 0x7000_0000
    s = isn + 1 + 1000
    wire = sealed(tx, kernel(seq=s & 0xFFFFFFFF), s, 0)
    ref_now = s + 2**32 + 50_000  # 4 GB (and a bit) later
    replayed_ext = extend(struct.unpack_from("!I", wire, 24)[0], ref_now)
    assert replayed_ext == s + 2**32
    assert verifies(rx, wire, extend(s & 0xFFFFFFFF, s), 0) and not verifies(rx, wire, replayed_ext, 0)


def test_header_seq_is_bound_when_the_caller_extends_it(impl, suite):
    """seq and ack enter the MAC only as the caller's ext_seq / ext_ack: with the engine's rule (extend the
    header's 32-bit field), altering the header's seq or ack changes the MAC input and fails."""
    tx, rx = pair(impl, suite)
    ref = 5_000_000_000
    wire = sealed(tx, kernel(seq=ref & 0xFFFFFFFF), ref, 0)
    for delta in (1, -1, 1 << 20, 2**31):
        w = bytearray(wire)
        struct.pack_into("!I", w, 24, (ref + delta) & 0xFFFFFFFF)
        w = bytes(w)
        assert rx.open(w, 20, extend(struct.unpack_from("!I", w, 24)[0], ref), 0) is None


def test_open_and_seal_refuse_an_ext_seq_that_disagrees_with_the_header(impl, suite):
    """The MAC covers the caller's 64-bit numbers, the kernel acts on the header's: a caller extending from stale
    state must not verify a segment whose header seq was moved (nor seal one whose seq or ack it got wrong)."""
    secrets = ks.direction_secrets(SS0, True)
    tx, rx = impl(suite, secrets), impl(suite, secrets)
    ref = 5_000_000_000
    good = kernel(seq=ref & 0xFFFFFFFF, ack=7)
    wire = bytearray(tx.seal(good, 20, ref, 7))
    struct.pack_into("!I", wire, 24, (ref + 1000) & 0xFFFFFFFF)  # the attacker moves the data 1000 bytes on
    forged = segment.py_assemble(bytes(wire), 20, *_area_payload(bytes(wire)))
    with pytest.raises(ValueError, match="header's seq/ack"):
        rx.open(forged, 20, ref, 7)
    assert rx.open(forged, 20, ref + 1000, 7) is None  # the engine's extension: the MAC fails
    with pytest.raises(ValueError, match="header's seq/ack"):
        tx.seal(good, 20, ref + 2**32 + 1, 7)
    with pytest.raises(ValueError, match="header's seq/ack"):
        tx.seal(good, 20, ref, 8)  # ACK set: the ack is checked too
    assert tx.seal(good, 20, ref + 2**32, 7 + 2**32) is not None  # another wrap: the low bits agree


# ---------------------------------------------------------------------------------------------- path selection
def run_select(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != segment.ENV_SEGMENT_PATH}
    if env_value is not None:
        env[segment.ENV_SEGMENT_PATH] = env_value
    code = "from mptcrypt.crypto import segment as s; print(s.SEGMENT_PATH)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(_segment is None, reason="extension mptcrypt.crypto._segment not built")
def test_env_var_forces_the_reference_case_insensitively():
    assert run_select("python") == run_select("PYTHON") == "python"
    assert run_select(None) == run_select("") == "compiled"


@pytest.mark.skipif(_segment is None, reason="extension mptcrypt.crypto._segment not built")
def test_env_var_typo_is_not_silently_ignored():
    for typo in ("py", " python", "pure", "reference"):
        env = {**os.environ, segment.ENV_SEGMENT_PATH: typo}
        code = "from mptcrypt.crypto import segment as s; print(s.SEGMENT_PATH_REASON)"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.returncode != 0 or segment.ENV_SEGMENT_PATH in out.stdout, typo


def test_both_paths_agree_on_the_published_vector():
    """Whatever is selected produces §9's segment_wire (the peer may run the other path)."""
    a = ks.direction_secrets(bytes.fromhex(compute()["ss[0]"]), True)
    want = bytes.fromhex(compute()["segment_wire"])
    assert segment.SegmentCipher(SymCipher.AES128, a).seal(segment_kernel_packet(), 20, SEGMENT_EXT_SEQ,
                                                           SEGMENT_EXT_ACK) == want


def test_selection_refuses_a_compiled_path_that_fails_the_vector(monkeypatch):
    import mptcrypt.crypto as pkg

    class WrongMac:
        def __init__(self, suite, secrets):
            self._inner = segment.PySegmentCipher(suite, ks.direction_secrets(bytes(32), True))

        def seal(self, *args):
            return self._inner.seal(*args)

        def open(self, *args):
            return self._inner.open(*args)

    fake = types.ModuleType("mptcrypt.crypto._segment")
    fake.MAC_VERSION, fake.OPENSSL, fake.SegmentCipher, fake.assemble = 2, "stale build", WrongMac, segment.py_assemble
    monkeypatch.setitem(sys.modules, "mptcrypt.crypto._segment", fake)
    monkeypatch.setattr(pkg, "_segment", fake, raising=False)
    monkeypatch.delenv(segment.ENV_SEGMENT_PATH, raising=False)
    cipher, _assemble, path, reason = segment._select()
    assert path == "python" and cipher is segment.PySegmentCipher, reason


# ---------------------------------------------------------------------------------------------- replay in the window
def test_replayed_signal_on_a_pure_ack_is_dropped():
    """A client switches a subflow to backup (MP_PRIO B=1), receives data, switches back (B=0); the attacker
    replays the first pure ACK. Its seq is still rcv_nxt at the server, its ack old (Linux's tcp_ack accepts an
    old ack and tcp_data_queue runs mptcp_incoming_options first), so the server kernel would go back to backup."""
    from test_engine_handshake import CISN, SISN, mptcp_pair
    from mptcrypt.core.events import Verdict
    from mptcrypt.wire.tcp import TCPOption
    from pktkit import C_ADDR as C, S_ADDR as S, segment as tcp_segment

    pair = mptcp_pair()
    backup = tcp_segment(C, 40000, S, 5000, CISN + 1, SISN + 1, ACK, [TCPOption(30, bytes((0x51,)))])
    assert len(pair.send("c", backup)) == 1
    captured = pair.wire[-1]
    data = tcp_segment(S, 5000, C, 40000, SISN + 1, CISN + 1, ACK | PSH, [], b"d" * 100)
    assert pair.send("s", data) == [data]
    regular = tcp_segment(C, 40000, S, 5000, CISN + 1, SISN + 101, ACK, [TCPOption(30, bytes((0x50,)))])
    assert len(pair.send("c", regular)) == 1
    assert pair.inject("s", captured) is Verdict.DROP


def test_spoofed_seq_before_the_isn_is_a_counted_drop():
    from test_engine_stream import established
    from mptcrypt.core.events import Verdict
    from pktkit import segment as tcp_segment

    pair, c, s = established()  # client ISN 100: the server's reference is 101
    spoofed = tcp_segment(c, 40000, s, 5000, (101 + 2**31) & 0xFFFFFFFF, 901, ACK, [], b"x" * 10)
    spoofed = segment.py_assemble(spoofed, 20, MAC_PREFIX + bytes(8), b"x" * 10)  # a MAC option, any tag
    before = pair.eng["s"].stats()["malformed_dropped"]
    assert pair.inject("s", spoofed) is Verdict.DROP  # review finding 9: this raised OverflowError out of handle
    assert pair.eng["s"].stats()["malformed_dropped"] == before + 1  # a seq before the ISN: not even a MAC try


# ---------------------------------------------------------------------------------------------- IPv6 extension headers
EXT_HEADERS = {  # (next-header value, 8 bytes whose first is the next header: TCP)
    "hop-by-hop": (0, bytes((6, 0, 1, 4, 0, 0, 0, 0))),  # one PadN option
    "destination-options": (60, bytes((6, 0, 1, 4, 0, 0, 0, 0))),
    "routing-segments-left-0": (43, bytes((6, 0, 4, 0, 0, 0, 0, 0))),  # type 4 (SRH) with nothing left
    # RFC 6946 atomic fragment: offset 0, M = 0; Linux hands it to TCP at once, no reassembly wait
    "atomic-fragment": (44, bytes((6, 0, 0, 0, 0x12, 0x34, 0x56, 0x78))),
}


def with_extension_header(packet6: bytes, kind: str) -> bytes:
    """`packet6` (IPv6 + TCP) with one 8-byte extension header before TCP (RFC 8200 §4). The TCP checksum is
    unchanged (its pseudo-header has the addresses, the upper-layer length and 6). ip6tables' `-p tcp` walks
    these headers (ipv6_find_hdr), so such a packet is queued to the daemon like any other."""
    assert packet6[0] >> 4 == 6 and packet6[6] == 6
    nxt, header = EXT_HEADERS[kind]
    plen = struct.unpack_from("!H", packet6, 4)[0] + len(header)
    return packet6[:4] + struct.pack("!HB", plen, nxt) + packet6[7:40] + header + packet6[40:]


def assert_protected(pair, c, s):
    """The IPv6 connection is protected: a plain segment's payload is encrypted on the wire and arrives intact."""
    from pktkit import segment as tcp_segment
    plain = tcp_segment(s, 5000, c, 40000, 901, 101, ACK | PSH, [], b"server hello, protected")
    assert pair.send("s", plain) == [plain] and b"server hello" not in pair.wire[-1]
    assert pair.eng["c"].stats()["mac_failures"] == 0


EXT_KINDS = list(EXT_HEADERS)  # the atomic fragment was a bypass (review finding 1), walked since


@pytest.mark.parametrize("kind", EXT_KINDS)
@pytest.mark.parametrize("flags,payload", [(RST | ACK, b""), (ACK | PSH, b"injected plaintext")], ids=["rst", "data"])
def test_ipv6_extension_header_does_not_bypass_the_mac(flags, payload, kind):
    from test_engine_stream import established
    from mptcrypt.core.events import Verdict
    from pktkit import segment as tcp_segment

    pair, c, s = established(v6=True)
    assert_protected(pair, c, s)
    delivered = len(pair.rx["s"])
    forged = with_extension_header(tcp_segment(c, 40000, s, 5000, 101, 901, flags, [], payload), kind)
    assert pair.inject("s", forged) is Verdict.DROP and len(pair.rx["s"]) == delivered


@pytest.mark.parametrize("kind", [k for k in EXT_HEADERS if k != "atomic-fragment"])
def test_ipv6_extension_header_on_the_send_side_is_not_sent_in_plaintext(kind):
    """An application's IPV6_HOPOPTS / IPV6_DSTOPTS / IPV6_RTHDR on a protected connection: still sealed."""
    from test_engine_stream import established
    from pktkit import segment as tcp_segment

    pair, c, s = established(v6=True)
    assert_protected(pair, c, s)
    secret = b"credit card 4111 1111 1111 1111"
    sent = len(pair.wire)
    pair.send("c", with_extension_header(tcp_segment(c, 40000, s, 5000, 101, 901, ACK | PSH, [], secret), kind))
    assert not any(secret in p for p in pair.wire[sent:])
