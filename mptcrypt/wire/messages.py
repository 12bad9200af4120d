"""mptcrypt messages: the RFC 6994 experimental option bodies and the INIT1/INIT2 payloads.

Option form (docs/protocol.md §Messages): kind 253, length, ExID 0x4D50, then
    MAC     8-byte tag                          (length 12, no type byte: recognised by its length)
    HELLO   type=1, version                     (length 6)
    PKCONF  type=2, pub-cipher ids...           (length 5 + n, n in 1..6, never 12)
    INIT1   type=3                              (length 5; marks a daemon-made segment, payload = INIT1)
    INIT2   type=4                              (length 5; payload = INIT2)
    NEXTK1  type=5, index u16, proof 8          (length 15: join of an MPTCP connection)
    NEXTK1  type=5, resume-id 8, proof 8        (length 21: resumption of a cached session)
    NEXTK2  type=6, proof 8                     (length 13)
    REKEY   type=7, generation u8               (length 6)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from mptcrypt.constants import (
    EXP_HEADER_LEN,
    INIT_MAGIC,
    JOIN_PROOF_LEN,
    MAC_OPTION_LEN,
    MPTCRYPT_EXID,
    NONCE_LEN,
    RESUME_ID_LEN,
    TCPOPT_EXP,
    Msg,
)
from mptcrypt.errors import DecodeError

PROTOCOL_VERSION = 2
MAX_PKCONF_CIPHERS = 6
OPTLEN_HELLO = EXP_HEADER_LEN + 2
OPTLEN_MARKER = EXP_HEADER_LEN + 1
OPTLEN_NEXTK1_JOIN = EXP_HEADER_LEN + 1 + 2 + JOIN_PROOF_LEN
OPTLEN_NEXTK1_RESUME = EXP_HEADER_LEN + 1 + RESUME_ID_LEN + JOIN_PROOF_LEN
OPTLEN_NEXTK2 = EXP_HEADER_LEN + 1 + JOIN_PROOF_LEN
OPTLEN_REKEY = EXP_HEADER_LEN + 2

EXP_PREFIX = struct.pack("!BBH", TCPOPT_EXP, MAC_OPTION_LEN, MPTCRYPT_EXID)  # the MAC option's first 4 bytes
_EXID = struct.pack("!H", MPTCRYPT_EXID)


def _opt(body: bytes) -> bytes:
    return bytes((TCPOPT_EXP, EXP_HEADER_LEN + len(body))) + _EXID + body


def mac_option(tag: bytes) -> bytes:
    return EXP_PREFIX + tag


@dataclass(frozen=True, slots=True)
class Hello:
    version: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        return _opt(bytes((Msg.HELLO, self.version)))


@dataclass(frozen=True, slots=True)
class PkConf:
    ciphers: tuple[int, ...]

    def encode(self) -> bytes:
        if not 1 <= len(self.ciphers) <= MAX_PKCONF_CIPHERS:
            raise ValueError(f"PKCONF lists 1 to {MAX_PKCONF_CIPHERS} ciphers, not {len(self.ciphers)}")
        return _opt(bytes((Msg.PKCONF, *self.ciphers)))


@dataclass(frozen=True, slots=True)
class Marker:
    """INIT1 or INIT2 marker of a daemon-made segment."""

    msg: int

    def encode(self) -> bytes:
        return _opt(bytes((self.msg,)))


@dataclass(frozen=True, slots=True)
class NextK1Join:
    index: int
    proof: bytes

    def encode(self) -> bytes:
        return _opt(struct.pack("!BH", Msg.NEXTK1, self.index) + self.proof)


@dataclass(frozen=True, slots=True)
class NextK1Resume:
    resume_id: bytes
    proof: bytes

    def encode(self) -> bytes:
        return _opt(bytes((Msg.NEXTK1,)) + self.resume_id + self.proof)


@dataclass(frozen=True, slots=True)
class NextK2:
    proof: bytes

    def encode(self) -> bytes:
        return _opt(bytes((Msg.NEXTK2,)) + self.proof)


@dataclass(frozen=True, slots=True)
class Rekey:
    generation: int

    def encode(self) -> bytes:
        return _opt(bytes((Msg.REKEY, self.generation)))


@dataclass(frozen=True, slots=True)
class MacTag:
    tag: bytes

    def encode(self) -> bytes:
        return mac_option(self.tag)


Message = Hello | PkConf | Marker | NextK1Join | NextK1Resume | NextK2 | Rekey | MacTag


def is_mptcrypt_option(kind: int, data: bytes) -> bool:
    """True for a kind-253 option (data = bytes after kind and length) carrying mptcrypt's ExID."""
    return kind == TCPOPT_EXP and data[:2] == _EXID


def parse_message(data: bytes) -> Message:
    """Decode the data (after kind and length) of a kind-253 option with mptcrypt's ExID."""
    if data[:2] != _EXID:
        raise DecodeError("experimental option with a foreign ExID")
    total = len(data) + 2
    body = data[2:]
    if total == MAC_OPTION_LEN:
        return MacTag(bytes(body))
    if not body:
        raise DecodeError("mptcrypt option without a message type")
    msg, rest = body[0], body[1:]
    if msg == Msg.HELLO and total == OPTLEN_HELLO:
        return Hello(rest[0])
    if msg == Msg.PKCONF and 1 <= len(rest) <= MAX_PKCONF_CIPHERS:
        return PkConf(tuple(rest))
    if msg in (Msg.INIT1, Msg.INIT2) and total == OPTLEN_MARKER:
        return Marker(msg)
    if msg == Msg.NEXTK1 and total == OPTLEN_NEXTK1_JOIN:
        return NextK1Join(struct.unpack_from("!H", rest)[0], bytes(rest[2:]))
    if msg == Msg.NEXTK1 and total == OPTLEN_NEXTK1_RESUME:
        return NextK1Resume(bytes(rest[:RESUME_ID_LEN]), bytes(rest[RESUME_ID_LEN:]))
    if msg == Msg.NEXTK2 and total == OPTLEN_NEXTK2:
        return NextK2(bytes(rest))
    if msg == Msg.REKEY and total == OPTLEN_REKEY:
        return Rekey(rest[0])
    raise DecodeError(f"mptcrypt message type {msg} with option length {total} is not defined")


# --- INIT1 / INIT2 payloads ------------------------------------------------------------------------------
#   magic "MPTC" | version u8 | type u8 | length u16 (whole message) | body
#   INIT1 body: pub-cipher u8 | n-sym u8 | sym ids | N_C (32) | len u16 | K_C
#   INIT2 body: sym-cipher u8 | len u16 | server part (DH: K_S (public key) then n_s (32); RSA: ENCRYPT(K_C, N_S))

_INIT_HDR = struct.Struct("!4sBBH")


@dataclass(frozen=True, slots=True)
class Init1:
    pub_cipher: int
    sym_ciphers: tuple[int, ...]
    n_c: bytes
    k_c: bytes

    def encode(self) -> bytes:
        body = (bytes((self.pub_cipher, len(self.sym_ciphers), *self.sym_ciphers)) + self.n_c
                + struct.pack("!H", len(self.k_c)) + self.k_c)
        return _INIT_HDR.pack(INIT_MAGIC, PROTOCOL_VERSION, Msg.INIT1, _INIT_HDR.size + len(body)) + body


@dataclass(frozen=True, slots=True)
class Init2:
    sym_cipher: int
    server_part: bytes

    def encode(self) -> bytes:
        body = bytes((self.sym_cipher,)) + struct.pack("!H", len(self.server_part)) + self.server_part
        return _INIT_HDR.pack(INIT_MAGIC, PROTOCOL_VERSION, Msg.INIT2, _INIT_HDR.size + len(body)) + body


def parse_init(payload: bytes) -> Init1 | Init2:
    if len(payload) < _INIT_HDR.size:
        raise DecodeError(f"INIT payload of {len(payload)} bytes is shorter than its header")
    magic, version, msg, length = _INIT_HDR.unpack_from(payload)
    if magic != INIT_MAGIC or version != PROTOCOL_VERSION:
        raise DecodeError("INIT payload with a wrong magic or version")
    if length != len(payload):
        raise DecodeError(f"INIT length field {length} does not match the {len(payload)}-byte payload")
    body = payload[_INIT_HDR.size:]
    try:
        if msg == Msg.INIT1:
            pub, nsym = body[0], body[1]
            syms = tuple(body[2:2 + nsym])
            off = 2 + nsym
            n_c = bytes(body[off:off + NONCE_LEN])
            (klen,) = struct.unpack_from("!H", body, off + NONCE_LEN)
            k_c = bytes(body[off + NONCE_LEN + 2:])
            if len(syms) != nsym or len(n_c) != NONCE_LEN or len(k_c) != klen or not nsym:
                raise DecodeError("INIT1 fields do not fit its length")
            return Init1(pub, syms, n_c, k_c)
        if msg == Msg.INIT2:
            sym = body[0]
            (slen,) = struct.unpack_from("!H", body, 1)
            part = bytes(body[3:])
            if len(part) != slen:
                raise DecodeError("INIT2 fields do not fit its length")
            return Init2(sym, part)
    except (IndexError, struct.error):
        raise DecodeError("truncated INIT message") from None
    raise DecodeError(f"INIT payload of unknown type {msg}")


def cipher_list_bytes(ciphers) -> bytes:
    """The canonical encoding of a cipher list as it enters the key schedule transcript."""
    return bytes(ciphers)

