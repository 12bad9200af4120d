"""The segment-protection boundary: one `SegmentCipher` per direction of a subflow does the whole per-segment job.

`seal` turns a kernel segment into the on-wire one (payload encrypted, the 12-byte MAC option appended, lengths
and both checksums fresh); `open` does the reverse and returns None when the MAC does not verify. Nothing else in
the engine touches keystream, MAC, checksum or assembly of a protected segment, so this class is what the compiled
extension (`mptcrypt/crypto/_segment.c`) replaces; the pure-Python one here stays the reference, and a differential
test holds both to the same bytes. docs/protocol.md §5 is the specification (protocol version 2).

Both calls take a complete IP packet (IPv4 with or without options, or IPv6 with or without extension headers)
whose TCP header starts at offset `l4`, and whose IP length fields agree with `len(packet)`; the caller has
extended the 32-bit seq/ack to 64 bits (`ext_ack` is 0 when ACK is not set; both must fit 64 bits, else
OverflowError). A packet too short for the TCP header it declares raises ValueError.

`SegmentCipher` is the compiled class when the extension is built and importable, the reference otherwise, or
when the environment sets MPTCRYPT_SEGMENT_PATH=python; `SEGMENT_PATH` and `SEGMENT_PATH_REASON` say which and
why (the daemon logs them at start).
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
from mptcrypt.wire.ip import rebuild_ip_header
from mptcrypt.wire.messages import EXP_PREFIX

TCP_HEADER_LEN = 20
AEAD_TAG_LEN = 16
POLY1305_S_ZERO = bytes(16)  # the Poly1305 "s" half: zero, the AES block after it is the PRF (§5)
ENV_SEGMENT_PATH = "MPTCRYPT_SEGMENT_PATH"  # "python" forces the reference implementation
_TCP = struct.Struct("!HHIIHHHH")
_MAC_FIELDS = struct.Struct("!QQHHH")  # ext seq, ext ack, data offset + flags word, window, urgent
_CSUM = struct.Struct("!H")


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


def _tcp_header(packet: bytes, l4: int) -> tuple[int, int, int, int]:
    """(data offset + flags word, window, urgent, header length) of the TCP header at `l4`, checked to fit."""
    if l4 < 0 or len(packet) < l4 + TCP_HEADER_LEN:
        raise ValueError(f"no TCP header at offset {l4} of a {len(packet)}-byte packet")
    off_flags, window, _csum, urg = struct.unpack_from("!HHHH", packet, l4 + 12)
    hlen = (off_flags >> 12) << 2
    if hlen < TCP_HEADER_LEN or l4 + hlen > len(packet):
        raise ValueError(f"TCP header length {hlen} does not fit a {len(packet)}-byte packet at offset {l4}")
    return off_flags, window, urg, hlen


class PySegmentCipher:
    """Keys of one direction of one subflow and the per-segment transform (reference implementation)."""

    __slots__ = ("_keys",)

    def __init__(self, suite: SymCipher, secrets: DirectionSecrets):
        self._keys = SegmentKeys(suite, secrets)

    def seal(self, packet: bytes, l4: int, ext_seq: int, ext_ack: int) -> bytes | None:
        """The on-wire packet for kernel `packet`, or None when its options leave no room for the MAC option."""
        off_flags, window, urg, hlen = _tcp_header(packet, l4)
        options = packet[l4 + TCP_HEADER_LEN:l4 + hlen]
        if len(options) + MAC_OPTION_LEN > TCP_MAX_OPTION_SPACE:
            return None
        payload = packet[l4 + hlen:]
        keys = self._keys
        ct = keys.crypt(ext_seq, payload) if payload else b""
        tag = keys.tag(mac_input(ext_seq, ext_ack, off_flags, window, urg, options, ct))
        return py_assemble(packet, l4, options + EXP_PREFIX + tag, ct)

    def open(self, packet: bytes, l4: int, ext_seq: int, ext_ack: int) -> bytes | None:
        """The kernel packet for on-wire `packet`; None unless its option area ends with a MAC option that verifies."""
        off_flags, window, urg, hlen = _tcp_header(packet, l4)
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
    return b"".join((rebuild_ip_header(packet[:l4], tcp_len), head[:16], _CSUM.pack(csum), head[18:], payload))


def _select():
    """(SegmentCipher, assemble, path name, reason): the compiled pair unless it is not importable or forced off."""
    if os.environ.get(ENV_SEGMENT_PATH, "").lower() == "python":
        return PySegmentCipher, py_assemble, "python", f"forced by {ENV_SEGMENT_PATH}=python"
    try:
        from mptcrypt.crypto import _segment
    except ImportError as exc:
        return PySegmentCipher, py_assemble, "python", f"extension not importable: {exc}"
    return _segment.SegmentCipher, _segment.assemble, "compiled", f"mptcrypt.crypto._segment, {_segment.OPENSSL}"


SegmentCipher, assemble, SEGMENT_PATH, SEGMENT_PATH_REASON = _select()
