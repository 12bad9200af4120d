"""The segment-protection boundary: one `SegmentCipher` per direction of a subflow does the whole per-segment job.

`seal` turns a kernel segment into the on-wire one (payload encrypted, the 12-byte MAC option appended, lengths
and both checksums fresh); `open` does the reverse and returns None when the MAC does not verify. Nothing else in
the engine touches keystream, MAC, checksum or assembly of a protected segment, so this class is what the compiled
extension (`mptcrypt/crypto/_segment.c`) replaces; the pure-Python one here stays the reference, and a differential
test holds both to the same bytes. docs/protocol.md §5 is the specification (protocol version 2).

Both calls take a complete IP packet (IPv4 with or without options, or IPv6 with or without extension headers)
whose TCP header starts at offset `l4`, and whose IP length fields agree with `len(packet)`; the caller has
extended the 32-bit seq/ack to 64 bits (`ext_ack` is 0 when ACK is not set; both must fit 64 bits, else
OverflowError, and their low 32 bits must be the header's seq and, with ACK set, ack, else ValueError). A packet
too short for the TCP header it declares raises ValueError.

`SegmentCipher` is the compiled class when the extension is built and importable, the reference otherwise, or
when the environment sets MPTCRYPT_SEGMENT_PATH=python; `SEGMENT_PATH` and `SEGMENT_PATH_REASON` say which and
why (the daemon logs them at start). `FlowTable` is the compiled fast path's table (None when it is off:
MPTCRYPT_FAST_PATH=off, or no compiled path), `FAST_PATH_REASON` says which and why.
"""

from __future__ import annotations

import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.poly1305 import Poly1305

from mptcrypt.constants import MAC_OPTION_LEN, MAC_TAG_LEN, TCP_MAX_OPTION_SPACE, SymCipher
from mptcrypt.crypto.keyschedule import DirectionSecrets
from mptcrypt.wire.compact import compact_option_area
from mptcrypt.wire.ip import rebuild_ip_header
from mptcrypt.wire.messages import EXP_PREFIX
from mptcrypt.wire.tcp import ACK

TCP_HEADER_LEN = 20
AEAD_TAG_LEN = 16
POLY1305_S_ZERO = bytes(16)  # the Poly1305 "s" half: zero, the AES block after it is the PRF (§5)
MAC_VERSION = 2  # the protocol version that defined this MAC; the extension reports the one it implements
ENV_SEGMENT_PATH = "MPTCRYPT_SEGMENT_PATH"  # "python" forces the reference implementation
ENV_FAST_PATH = "MPTCRYPT_FAST_PATH"  # "off": no compiled fast path (core/datapath.FastPath)
_TCP = struct.Struct("!HHIIHHHH")
_MAC_FIELDS = struct.Struct("!QQHHH")  # ext seq, ext ack, data offset + flags word, window, urgent
_CSUM = struct.Struct("!H")
_MIN_IP_HEADER = {4: 20, 6: 40}


class SegmentKeys:
    """The keyed primitives of one direction: position-keyed keystream, and the v2 MAC (docs/protocol.md §5)."""

    __slots__ = ("_aead", "_salt", "_r", "_prf")

    def __init__(self, suite: SymCipher, secrets: DirectionSecrets):
        if suite == SymCipher.AES128:
            self._aead = AESGCM(secrets.enc[:16])
        elif suite == SymCipher.CHACHA20:
            self._aead = ChaCha20Poly1305(secrets.enc)
        else:
            raise ValueError(f"unknown symmetric suite {suite}")
        self._salt = int.from_bytes(secrets.salt, "big")
        self._r = secrets.mac[:16] + POLY1305_S_ZERO
        self._prf = Cipher(algorithms.AES(secrets.mac[16:32]), modes.ECB()).encryptor()

    def crypt(self, ext_seq: int, data: bytes) -> bytes:
        """Encrypt or decrypt (the same operation) `data` that starts at extended sequence number `ext_seq`:
        the AEAD's own keystream under nonce = salt XOR ext_seq (its tag is cut off and never used)."""
        nonce = (self._salt ^ ext_seq).to_bytes(12, "big")
        return self._aead.encrypt(nonce, data, None)[:-AEAD_TAG_LEN]

    def tag(self, mac_input: bytes) -> bytes:
        """AES-128(k2, Poly1305_{r=k1, s=0}(mac_input))[:8]: a universal hash under a secret key, then a PRF."""
        return self._prf.update(Poly1305.generate_tag(self._r, mac_input))[:MAC_TAG_LEN]


def mac_input(ext_seq: int, ext_ack: int, off_flags: int, window: int, urg: int, options: bytes, ct: bytes) -> bytes:
    """What the MAC covers: `off_flags` is the 16-bit data offset + flags word of the KERNEL segment (its data
    offset counts `options`, never the MAC option); no ports or addresses (a NAT rewrites them)."""
    try:
        return _MAC_FIELDS.pack(ext_seq, ext_ack, off_flags, window, urg) + options + ct
    except struct.error:
        raise OverflowError(f"extended seq/ack {ext_seq}/{ext_ack} do not fit 64 bits") from None


def _check_l4(packet: bytes, l4: int) -> None:
    version = packet[0] >> 4 if packet else 0
    if l4 < _MIN_IP_HEADER.get(version, 1 << 20) or len(packet) < l4 + TCP_HEADER_LEN:
        raise ValueError(f"no TCP header at offset {l4} of a {len(packet)}-byte IPv{version} packet")


def _tcp_header(packet: bytes, l4: int, ext_seq: int, ext_ack: int) -> tuple[int, int, int, int]:
    """(data offset + flags word, window, urgent, header length) of the TCP header at `l4`, checked to fit; the
    extended seq/ack checked to fit 64 bits first, as the compiled path does (never a silent None for them)."""
    if not (0 <= ext_seq < 1 << 64 and 0 <= ext_ack < 1 << 64):
        raise OverflowError(f"extended seq/ack {ext_seq}/{ext_ack} do not fit 64 bits")
    _check_l4(packet, l4)
    off_flags, window, _csum, urg = struct.unpack_from("!HHHH", packet, l4 + 12)
    hlen = (off_flags >> 12) << 2
    if hlen < TCP_HEADER_LEN or l4 + hlen > len(packet):
        raise ValueError(f"TCP header length {hlen} does not fit a {len(packet)}-byte packet at offset {l4}")
    # the MAC covers the caller's 64-bit numbers, the kernel acts on the header's: they must agree, or a caller
    # extending from stale state would verify (or seal) a segment whose header seq / ack was altered
    seq, ack = struct.unpack_from("!II", packet, l4 + 4)
    if ext_seq & 0xFFFFFFFF != seq or (off_flags & ACK and ext_ack & 0xFFFFFFFF != ack):
        raise ValueError(f"extended seq/ack {ext_seq}/{ext_ack} do not end in the header's seq/ack {seq}/{ack}")
    return off_flags, window, urg, hlen


class PySegmentCipher:
    """Keys of one direction of one subflow and the per-segment transform (reference implementation)."""

    __slots__ = ("_keys",)

    def __init__(self, suite: SymCipher, secrets: DirectionSecrets):
        self._keys = SegmentKeys(suite, secrets)

    def seal(self, packet: bytes, l4: int, ext_seq: int, ext_ack: int) -> bytes | None:
        """The on-wire packet for kernel `packet`, or None when its options leave no room for the MAC option even
        in their compact form (`wire.compact`: no NOPs, DSS data ACK and DSN in 4 bytes), which the MAC then covers."""
        off_flags, window, urg, hlen = _tcp_header(packet, l4, ext_seq, ext_ack)
        options = packet[l4 + TCP_HEADER_LEN:l4 + hlen]
        if len(options) + MAC_OPTION_LEN > TCP_MAX_OPTION_SPACE:
            # timestamps beside a DSS fill the area: the compact form makes room (wire/compact.py, §5)
            options = compact_option_area(options)
            if len(options) + MAC_OPTION_LEN > TCP_MAX_OPTION_SPACE:
                return None
            off_flags = (((TCP_HEADER_LEN + len(options)) >> 2) << 12) | (off_flags & 0x0FFF)
        payload = packet[l4 + hlen:]
        keys = self._keys
        ct = keys.crypt(ext_seq, payload) if payload else b""
        tag = keys.tag(mac_input(ext_seq, ext_ack, off_flags, window, urg, options, ct))
        return py_assemble(packet, l4, options + EXP_PREFIX + tag, ct)

    def open(self, packet: bytes, l4: int, ext_seq: int, ext_ack: int) -> bytes | None:
        """The kernel packet for on-wire `packet`; None unless its option area ends with a MAC option that verifies."""
        off_flags, window, urg, hlen = _tcp_header(packet, l4, ext_seq, ext_ack)
        end = l4 + hlen
        if hlen - TCP_HEADER_LEN < MAC_OPTION_LEN or packet[end - MAC_OPTION_LEN:end - MAC_TAG_LEN] != EXP_PREFIX:
            return None
        options = packet[l4 + TCP_HEADER_LEN:end - MAC_OPTION_LEN]
        ct = packet[end:]
        kernel_off_flags = off_flags - ((MAC_OPTION_LEN >> 2) << 12)  # the data offset without the MAC option
        keys = self._keys
        expect = keys.tag(mac_input(ext_seq, ext_ack, kernel_off_flags, window, urg, options, ct))
        if not hmac.compare_digest(expect, packet[end - MAC_TAG_LEN:end]):
            return None
        return py_assemble(packet, l4, options, keys.crypt(ext_seq, ct) if ct else b"")


def py_assemble(packet: bytes, l4: int, options: bytes, payload: bytes) -> bytes:
    """The IP header of `packet` and its TCP header with `options` and `payload`, lengths and checksums fresh.

    The IP version is read from the packet, never guessed from the header length. The TCP checksum is summed
    over the pieces (header and options are a multiple of 4 bytes, so the payload starts 16-bit aligned) and the
    packet is joined once."""
    _check_l4(packet, l4)
    if len(options) % 4 or len(options) > TCP_MAX_OPTION_SPACE:
        raise ValueError(f"an option area of {len(options)} bytes is not a multiple of 4 up to 40")
    sport, dport, seq, ack, off_flags, window, _c, urg = _TCP.unpack_from(packet, l4)
    hlen = TCP_HEADER_LEN + len(options)
    tcp_len = hlen + len(payload)
    head = _TCP.pack(sport, dport, seq, ack, ((hlen >> 2) << 12) | (off_flags & 0x0FFF), window, 0, urg) + options
    if packet[0] >> 4 == 4:
        total = int.from_bytes(packet[12:20], "big")
    else:
        total = int.from_bytes(packet[8:40], "big")
    total += 6 + tcp_len + int.from_bytes(head, "big")
    if payload:
        n = int.from_bytes(payload, "big")
        total += n << 8 if len(payload) & 1 else n
    csum = 0xFFFF - total % 0xFFFF
    try:
        ip = rebuild_ip_header(packet[:l4], tcp_len)
    except struct.error:
        raise ValueError(f"{tcp_len} bytes of TCP do not fit the IP length field") from None
    return b"".join((ip, head[:16], _CSUM.pack(csum), head[18:], payload))


def _known_answer(compiled) -> str | None:
    """Why the compiled class does not give the reference's bytes (None when it does): a build that reports
    MAC_VERSION 2 but is stale or miscompiled would otherwise put a MAC on the wire that no peer verifies."""
    secrets = DirectionSecrets(bytes(range(32)), bytes(range(32, 64)), bytes(range(64, 76)))
    tcp = _TCP.pack(40000, 5000, 1, 2, (8 << 12) | 0x18, 502, 0, 0) + bytes((1, 1, 8, 10)) + bytes(range(45))
    packet = bytes((0x45, 0, 0, 20 + len(tcp), 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2)) + tcp
    seq, ack = 0x1_0000_0001, 0x2_0000_0002
    for suite in SymCipher:
        ref = PySegmentCipher(suite, secrets)
        wire = ref.seal(packet, 20, seq, ack)
        try:
            c = compiled(suite, secrets)
            same = c.seal(packet, 20, seq, ack) == wire and c.open(wire, 20, seq, ack) == ref.open(wire, 20, seq, ack)
        except Exception as exc:  # any failure of the build is a reason to run the reference
            return f"extension failed its known-answer check for {suite.name}: {exc!r}"
        if not same:
            return f"extension fails the known-answer check for {suite.name} (stale build? `pip install -e .`)"
    return None


def _select():
    """(SegmentCipher, assemble, path name, reason): the compiled pair unless it is not importable, fails its
    known-answer check, or is forced off. MPTCRYPT_SEGMENT_PATH: unset/"" (either), "python", "compiled"
    (refuse to start without it); any other value is an error, never silently the default."""
    forced = os.environ.get(ENV_SEGMENT_PATH, "").strip().lower()
    if forced not in ("", "python", "compiled"):
        raise ValueError(f"{ENV_SEGMENT_PATH}={os.environ[ENV_SEGMENT_PATH]!r}: use 'python', 'compiled' or unset it")
    if forced == "python":
        return PySegmentCipher, py_assemble, "python", f"forced by {ENV_SEGMENT_PATH}=python"
    try:
        from mptcrypt.crypto import _segment
        why = None if _segment.MAC_VERSION == MAC_VERSION else f"extension built for protocol v{_segment.MAC_VERSION}"
        why = why or _known_answer(_segment.SegmentCipher)
    except ImportError as exc:
        why = f"extension not importable: {exc}"
    if why is None:
        return _segment.SegmentCipher, _segment.assemble, "compiled", f"mptcrypt.crypto._segment, {_segment.OPENSSL}"
    if forced == "compiled":
        raise ImportError(f"{ENV_SEGMENT_PATH}=compiled but {why}")
    return PySegmentCipher, py_assemble, "python", why


SegmentCipher, assemble, SEGMENT_PATH, SEGMENT_PATH_REASON = _select()


def _select_fast_path():
    """(FlowTable class or None, reason): the compiled fast path (core/datapath.FastPath) runs on the compiled
    segment path unless MPTCRYPT_FAST_PATH=off; "on" refuses to start without it; any other value is an error."""
    forced = os.environ.get(ENV_FAST_PATH, "").strip().lower()
    if forced not in ("", "on", "off"):
        raise ValueError(f"{ENV_FAST_PATH}={os.environ[ENV_FAST_PATH]!r}: use 'on', 'off' or unset it")
    if forced == "off":
        return None, f"off (forced by {ENV_FAST_PATH}=off): every segment goes through the Python engine"
    if SEGMENT_PATH != "compiled":
        if forced == "on":
            raise ImportError(f"{ENV_FAST_PATH}=on but the segment path is {SEGMENT_PATH} ({SEGMENT_PATH_REASON})")
        return None, f"off: it needs the compiled segment path ({SEGMENT_PATH_REASON})"
    from mptcrypt.crypto import _segment
    return _segment.FlowTable, "on: protected flows' data segments and ACKs are sealed and opened in C"


FlowTable, FAST_PATH_REASON = _select_fast_path()
