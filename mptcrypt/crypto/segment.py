"""The segment-protection boundary: one `SegmentCipher` per direction of a subflow does the whole per-segment job.

`seal` turns a kernel segment into the on-wire one (payload encrypted, the 12-byte MAC option appended, lengths
and both checksums fresh); `open` does the reverse and returns None when the MAC does not verify. Nothing else in
the engine touches keystream, MAC, checksum or assembly of a protected segment, so this class is what a compiled
implementation replaces; this pure-Python one stays the reference (a differential test holds both to the same
bytes). docs/protocol.md §5 is the specification.

Both calls take a complete IP packet (IPv4 with or without options, or IPv6 with or without extension headers)
whose TCP header starts at offset `l4`, and whose IP length fields agree with `len(packet)`; the caller has
extended the 32-bit seq/ack to 64 bits (`ext_ack` is 0 when ACK is not set).
"""

from __future__ import annotations

import hmac
import struct

from mptcrypt.constants import MAC_OPTION_LEN, MAC_TAG_LEN, TCP_MAX_OPTION_SPACE, SymCipher
from mptcrypt.crypto.keyschedule import DirectionSecrets
from mptcrypt.crypto.protect import MAC_HEADER, DirectionCipher
from mptcrypt.wire.ip import rebuild_ip_header
from mptcrypt.wire.messages import EXP_PREFIX

TCP_HEADER_LEN = 20
_TCP = struct.Struct("!HHIIHHHH")
_CSUM = struct.Struct("!H")


class SegmentCipher:
    """Keys of one direction of one subflow and the per-segment transform (reference implementation)."""

    __slots__ = ("_dir",)

    def __init__(self, suite: SymCipher, secrets: DirectionSecrets):
        self._dir = DirectionCipher(suite, secrets)

    def seal(self, packet: bytes, l4: int, ext_seq: int, ext_ack: int) -> bytes | None:
        """The on-wire packet for kernel `packet`, or None when its options leave no room for the MAC option."""
        sport, dport, seq, ack, off_flags, window, _c, urg = _TCP.unpack_from(packet, l4)
        hlen = (off_flags >> 12) << 2
        options = packet[l4 + TCP_HEADER_LEN:l4 + hlen]
        if len(options) + MAC_OPTION_LEN > TCP_MAX_OPTION_SPACE:
            return None
        flags = off_flags & 0x0FFF
        payload = packet[l4 + hlen:]
        ct = self._dir.crypt(ext_seq, payload) if payload else b""
        tag = self._dir.tag(MAC_HEADER.pack(sport, dport, ext_seq, ext_ack, flags, window, urg), options, ct)
        return assemble(packet, l4, options + EXP_PREFIX + tag, ct)

    def open(self, packet: bytes, l4: int, ext_seq: int, ext_ack: int) -> bytes | None:
        """The kernel packet for on-wire `packet`; None unless its option area ends with a MAC option that verifies."""
        sport, dport, seq, ack, off_flags, window, _c, urg = _TCP.unpack_from(packet, l4)
        end = l4 + ((off_flags >> 12) << 2)
        if end - l4 - TCP_HEADER_LEN < MAC_OPTION_LEN or packet[end - MAC_OPTION_LEN:end - MAC_TAG_LEN] != EXP_PREFIX:
            return None
        options = packet[l4 + TCP_HEADER_LEN:end - MAC_OPTION_LEN]
        ct = packet[end:]
        expect = self._dir.tag(MAC_HEADER.pack(sport, dport, ext_seq, ext_ack, off_flags & 0x0FFF, window, urg),
                               options, ct)
        if not hmac.compare_digest(expect, packet[end - MAC_TAG_LEN:end]):
            return None
        return assemble(packet, l4, options, self._dir.crypt(ext_seq, ct) if ct else b"")


def assemble(packet: bytes, l4: int, options: bytes, payload: bytes) -> bytes:
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
