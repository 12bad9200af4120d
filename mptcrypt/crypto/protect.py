"""The per-segment primitives in the shape the engine called them before `SegmentCipher` (crypt, tag, own assembly).

Kept only until the engine calls `mptcrypt.crypto.segment.SegmentCipher.seal/open` alone; then this module folds
away. It computes the protocol-v2 MAC (docs/protocol.md §5) from the engine's v1-shaped header, so both paths put
the same bytes on the wire (tests/unit/test_segment_cipher.py checks that), with the compiled primitives when the
extension is selected (segment.SEGMENT_PATH).
"""

from __future__ import annotations

import struct

from mptcrypt.constants import SymCipher
from mptcrypt.crypto import segment
from mptcrypt.crypto.keyschedule import DirectionSecrets
from mptcrypt.crypto.segment import TCP_HEADER_LEN, SegmentKeys, mac_input

MAC_HEADER = struct.Struct("!HHQQHHH")  # sport, dport, ext seq, ext ack, flags, window, urgent (ports unused)


class DirectionCipher:
    """Keys of one direction of one subflow: `crypt` (keystream) and `tag` over the engine's pieces."""

    __slots__ = ("crypt", "_tag")

    def __init__(self, suite: SymCipher, secrets: DirectionSecrets):
        if segment.SEGMENT_PATH == "compiled":
            keys = segment.SegmentCipher(suite, secrets)
            self.crypt, self._tag = keys.keystream, keys.tag
        else:
            keys = SegmentKeys(suite, secrets)
            self.crypt, self._tag = keys.crypt, keys.tag

    def tag(self, header: bytes, options: bytes, ciphertext: bytes) -> bytes:
        """The v2 MAC of a kernel segment with MAC_HEADER-packed `header`, kernel `options` and `ciphertext`."""
        _sport, _dport, ext_seq, ext_ack, flags, window, urg = MAC_HEADER.unpack(header)
        off_flags = (((TCP_HEADER_LEN + len(options)) >> 2) << 12) | flags
        return self._tag(mac_input(ext_seq, ext_ack, off_flags, window, urg, options, ciphertext))
