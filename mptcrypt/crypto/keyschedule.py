"""The key schedule (docs/protocol.md §Key schedule). HMAC-SHA256 throughout; labels in mptcrypt.constants.

    ss[0]  = HMAC(N_S, pub | K_C | N_C | pub-cipher-list | sym-cipher-list | sym-cipher)
    ss[i]  = HMAC(ss[i-1], TAG_NEXT_KEY)
    sid[i] = HMAC(ss[i], TAG_SESSION_ID)
    key_x  = HMAC(ss[i], TAG_x)   for x in enc/mac/nonce of direction A (subflow initiator -> responder) and B
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from mptcrypt.constants import (
    JOIN_PROOF_LEN,
    RESUME_ID_LEN,
    TAG_DH_NS,
    TAG_ENC_A,
    TAG_ENC_B,
    TAG_JOIN_SYN,
    TAG_JOIN_SYNACK,
    TAG_MAC_A,
    TAG_MAC_B,
    TAG_NEXT_KEY,
    TAG_NONCE_A,
    TAG_NONCE_B,
    TAG_REKEY,
    TAG_RESUME_ID,
    TAG_SESSION_ID,
)


def hmac256(key: bytes, msg: bytes) -> bytes:
    return hmac.digest(key, msg, "sha256")


def transcript(pub_cipher: int, k_c: bytes, n_c: bytes, pub_list: bytes, sym_list: bytes, sym_cipher: int) -> bytes:
    """The bytes ss[0] is computed over: every negotiated value, so a downgrade of any list changes ss[0]."""
    return (bytes((pub_cipher,)) + struct.pack("!H", len(k_c)) + k_c + n_c + bytes((len(pub_list),)) + pub_list
            + bytes((len(sym_list),)) + sym_list + bytes((sym_cipher,)))


def initial_ss(n_s: bytes, transcript_bytes: bytes) -> bytes:
    return hmac256(n_s, transcript_bytes)


def dh_n_s(shared: bytes, k_c: bytes, k_s: bytes, n_s_server: bytes) -> bytes:
    """N_S for the Diffie-Hellman ciphers: both public keys and the server's nonce under the shared secret."""
    return hmac256(shared, TAG_DH_NS + k_c + k_s + n_s_server)


def next_ss(ss: bytes) -> bytes:
    return hmac256(ss, TAG_NEXT_KEY)


def session_id(ss: bytes) -> bytes:
    return hmac256(ss, TAG_SESSION_ID)


def resume_id(ss: bytes) -> bytes:
    return hmac256(ss, TAG_RESUME_ID)[:RESUME_ID_LEN]


# What NEXTK1 / NEXTK2 proofs bind (protocol version 2, docs/protocol.md §6, §7): only what survives a NAT. No
# address or port: a NAT rewrites them (and carrier-grade NAT rewrites ports on every connection). The ISNs, the
# key index or resume id, and the whole MP_JOIN option(s) as on the wire (token, nonce, address id, backup bit).
_CTX_ISN_INDEX = struct.Struct("!IH")
_CTX_ISNS_INDEX = struct.Struct("!IIH")
_CTX_ISN = struct.Struct("!I")
_CTX_ISNS = struct.Struct("!II")


def nextk1_join_context(isn_i: int, index: int, mp_join_syn: bytes) -> bytes:
    return _CTX_ISN_INDEX.pack(isn_i, index) + mp_join_syn


def nextk2_join_context(isn_i: int, isn_r: int, index: int, mp_join_syn: bytes, mp_join_synack: bytes) -> bytes:
    return _CTX_ISNS_INDEX.pack(isn_i, isn_r, index) + mp_join_syn + mp_join_synack


def nextk1_resume_context(isn_i: int, resume_id: bytes) -> bytes:
    return _CTX_ISN.pack(isn_i) + resume_id


def nextk2_resume_context(isn_i: int, isn_r: int, resume_id: bytes) -> bytes:
    return _CTX_ISNS.pack(isn_i, isn_r) + resume_id


def rekey_secret(secret: bytes, initiator_to_responder: bool) -> bytes:
    """The next generation of one direction's secret (generation 0 is ss[i]): REKEY moves a direction to
    `direction_secrets(rekey_secret(g), ...)`; the previous generation cannot be computed from the next."""
    return hmac256(secret, TAG_REKEY + (b" a" if initiator_to_responder else b" b"))


def join_proof(ss: bytes, synack: bool, context: bytes) -> bytes:
    """NEXTK1 (SYN) or NEXTK2 (SYN-ACK) proof of knowing ss[i], bound to the subflow (`context`)."""
    return hmac256(ss, (TAG_JOIN_SYNACK if synack else TAG_JOIN_SYN) + context)[:JOIN_PROOF_LEN]


@dataclass(frozen=True, slots=True)
class DirectionSecrets:
    enc: bytes  # 32 bytes; AES-128 uses the first 16
    mac: bytes  # 32 bytes
    salt: bytes  # 12 bytes, XORed into the per-segment nonce


def direction_secrets(ss: bytes, initiator_to_responder: bool) -> DirectionSecrets:
    if initiator_to_responder:
        return DirectionSecrets(hmac256(ss, TAG_ENC_A), hmac256(ss, TAG_MAC_A), hmac256(ss, TAG_NONCE_A)[:12])
    return DirectionSecrets(hmac256(ss, TAG_ENC_B), hmac256(ss, TAG_MAC_B), hmac256(ss, TAG_NONCE_B)[:12])


class KeyChain:
    """ss[0], ss[1], ... computed forward on demand. Each index keys one subflow or resumed connection."""

    __slots__ = ("_ss",)

    MAX_INDEX = 0xFFFF  # NEXTK1 carries a 16-bit index

    def __init__(self, ss0: bytes):
        self._ss = [ss0]

    def ss(self, i: int) -> bytes:
        if not 0 <= i <= self.MAX_INDEX:
            raise ValueError(f"key index {i} out of range")
        while len(self._ss) <= i:
            self._ss.append(next_ss(self._ss[-1]))
        return self._ss[i]

    def sid(self, i: int) -> bytes:
        return session_id(self.ss(i))
