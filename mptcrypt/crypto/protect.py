"""Per-segment protection: a position-keyed keystream and a 64-bit MAC (docs/protocol.md §Segment protection).

Encryption. The payload of a segment starting at 64-bit extended sequence number S is XORed with the keystream
of the suite's AEAD under nonce = salt XOR S (12 bytes): AES-128-GCM's or ChaCha20-Poly1305's own CTR keystream,
taken from one precomputed AEAD object per direction (`encrypt(nonce, payload)` minus its 16-byte tag is exactly
payload XOR keystream). The same bytes at the same sequence number always give the same ciphertext, so kernel
retransmissions need no state; and because TCP never puts different bytes at one sequence number, no keystream
byte ever covers two plaintexts.

Authentication. The AEAD tag is NOT used: GHASH and Poly1305 are one-time MACs and TCP repeats a sequence number
with different authenticated data all the time (pure ACKs, window updates, an MPTCP DATA_ACK that moves while
the subflow's seq and ack stand still), which would reveal the GHASH/Poly1305 key to an observer. Instead every
segment carries BLAKE2b-MAC-64 (RFC 7693 keyed mode, a PRF, safe under any repetition) over the header fields,
the options and the ciphertext.
"""

from __future__ import annotations

import hashlib
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from mptcrypt.constants import MAC_TAG_LEN, SymCipher
from mptcrypt.crypto.keyschedule import DirectionSecrets

AEAD_TAG_LEN = 16
MAC_HEADER = struct.Struct("!HHQQHHH")  # sport, dport, ext seq, ext ack, flags, window, urgent
_SEQ_MASK = (1 << 96) - 1


class DirectionCipher:
    """Keys of one direction of one subflow, with the AEAD object and the keyed MAC prepared once."""

    __slots__ = ("_aead", "_salt", "_mac")

    def __init__(self, suite: SymCipher, secrets: DirectionSecrets):
        if suite == SymCipher.AES128:
            self._aead = AESGCM(secrets.enc[:16])
        elif suite == SymCipher.CHACHA20:
            self._aead = ChaCha20Poly1305(secrets.enc)
        else:
            raise ValueError(f"unknown symmetric suite {suite}")
        self._salt = int.from_bytes(secrets.salt, "big")
        self._mac = hashlib.blake2b(key=secrets.mac, digest_size=MAC_TAG_LEN)

    def crypt(self, ext_seq: int, data: bytes) -> bytes:
        """Encrypt or decrypt (the same operation) `data` that starts at extended sequence number `ext_seq`."""
        nonce = ((self._salt ^ ext_seq) & _SEQ_MASK).to_bytes(12, "big")
        return self._aead.encrypt(nonce, data, None)[:-AEAD_TAG_LEN]

    def tag(self, header: bytes, options: bytes, ciphertext: bytes) -> bytes:
        """64-bit MAC over MAC_HEADER-packed fields, the options without the MAC option, and the ciphertext."""
        m = self._mac.copy()
        m.update(header)
        m.update(options)
        m.update(ciphertext)
        return m.digest()
