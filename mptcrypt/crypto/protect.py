"""The per-segment primitives in the shape the engine called them before `SegmentCipher` (crypt, tag, own assembly).

Kept only until the engine calls `mptcrypt.crypto.segment.SegmentCipher.seal/open` alone; then this module folds
away. It computes the protocol-v2 MAC (docs/protocol.md §5) from the engine's v1-shaped header, so both paths put
the same bytes on the wire (tests/unit/test_segment_cipher.py checks that).
"""

from __future__ import annotations

import struct

from mptcrypt.crypto.segment import TCP_HEADER_LEN, SegmentKeys, mac_input

MAC_HEADER = struct.Struct("!HHQQHHH")  # sport, dport, ext seq, ext ack, flags, window, urgent (ports unused)


class DirectionCipher(SegmentKeys):
    """Keys of one direction of one subflow: `crypt` as SegmentKeys, `tag` over the engine's pieces."""

    __slots__ = ()

    def tag(self, header: bytes, options: bytes, ciphertext: bytes) -> bytes:  # type: ignore[override]
        """The v2 MAC of a kernel segment with MAC_HEADER-packed `header`, kernel `options` and `ciphertext`."""
        _sport, _dport, ext_seq, ext_ack, flags, window, urg = MAC_HEADER.unpack(header)
        off_flags = (((TCP_HEADER_LEN + len(options)) >> 2) << 12) | flags
        return super().tag(mac_input(ext_seq, ext_ack, off_flags, window, urg, options, ciphertext))
