"""Wire format of the mptcrypt.auth exchanges (docs/auth.md "Framing"): every constant, every codec.

A frame is a 4-byte header and a body:

    type   u8   MsgType
    scheme u8   Scheme (the exchange this frame belongs to; a new version of a scheme gets a new value)
    length u16  body length, big-endian
    body   `length` bytes

Integers are big-endian. Parsers consume exactly the body: a short, long or garbled body raises
ProtocolViolation, never IndexError or struct.error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from mptcrypt.auth.errors import ProtocolViolation

HEADER = struct.Struct("!BBH")
HEADER_LEN = HEADER.size  # 4
MAX_BODY_LEN = 0xFFFF

SID_LEN = 32  # sid[i] = HMAC-SHA256(ss[i], TAG_SESSION_ID)
HASH_LEN = 32  # SHA-256 / HMAC-SHA256 output: h, proofs, Merkle nodes

# Signed messages (domain separation: neither context is a prefix of the other).
SID_SIGNATURE_CONTEXT = b"mptcrypt sid signature v1"  # signed: context | sid
BATCH_SIGNATURE_CONTEXT = b"mptcrypt sid batch v1"  # signed: context | u32 tree_size | root

# scrypt input salt (password.py): SCRYPT_SALT_CONTEXT | u8 len(salt) | salt | u8 len(realm) | realm
SCRYPT_SALT_CONTEXT = b"mptcrypt password v1\x00"


class MsgType(IntEnum):
    PW_HELLO = 0x01  # C -> S  user name
    PW_PARAMS = 0x02  # S -> C  KDF, scrypt parameters, salt, realm
    PW_CLIENT_PROOF = 0x03  # C -> S  HMAC-SHA256(h, TAG_CLIENT | sid)
    PW_SERVER_PROOF = 0x04  # S -> C  HMAC-SHA256(h, TAG_SERVER | sid)
    SIGNATURE = 0x05  # S -> C  signature over SID_SIGNATURE_CONTEXT | sid (+ certificate chain)
    BATCH_SIGNATURE = 0x06  # S -> C  signature over a batch root + inclusion proof (+ certificate chain)
    FAILURE = 0x0F  # either way, to a peer that waits for our next frame: why we stop


class Scheme(IntEnum):
    PASSWORD = 0x01  # scrypt verifier + HMAC proofs, v1
    SIGNATURE = 0x02  # one signature per session ID, v1
    BATCH = 0x03  # Merkle batch of session IDs, one signature per batch, v1


class FailReason(IntEnum):
    AUTH_FAILED = 0x01  # the proof did not verify (wrong password, or a man in the middle)
    PROTOCOL = 0x02  # unexpected or garbled message
    NOT_PROTECTED = 0x03  # the sender's socket has no mptcrypt session
    POLICY = 0x04  # parameters refused (KDF too weak or too costly, unexpected realm)


FAIL_TEXT = {
    FailReason.AUTH_FAILED: "the peer rejected our proof: wrong password, or a man in the middle (different sids)",
    FailReason.PROTOCOL: "the peer rejected our message as unexpected or garbled",
    FailReason.NOT_PROTECTED: "the peer has no mptcrypt session on this connection (a man in the middle, or no daemon)",
    FailReason.POLICY: "the peer refused our parameters (KDF cost or realm)",
}


class KdfId(IntEnum):
    SCRYPT = 0x01


class SigAlg(IntEnum):
    """Signature algorithm of a SIGNATURE / BATCH_SIGNATURE body; must match the key's type."""

    ED25519 = 0x01
    ECDSA_P256_SHA256 = 0x02  # DER-encoded ECDSA signature
    ECDSA_P384_SHA384 = 0x03
    RSA_PSS_SHA256 = 0x04  # PSS, MGF1-SHA256, salt length 32


# Which scheme each message type belongs to (FAILURE belongs to the exchange it ends: any scheme).
TYPE_SCHEME = {
    MsgType.PW_HELLO: Scheme.PASSWORD,
    MsgType.PW_PARAMS: Scheme.PASSWORD,
    MsgType.PW_CLIENT_PROOF: Scheme.PASSWORD,
    MsgType.PW_SERVER_PROOF: Scheme.PASSWORD,
    MsgType.SIGNATURE: Scheme.SIGNATURE,
    MsgType.BATCH_SIGNATURE: Scheme.BATCH,
}

# Field limits.
MAX_USER_LEN = 255
MIN_SALT_LEN = 16
MAX_SALT_LEN = 64
MAX_REALM_LEN = 255
MAX_SIG_LEN = 1024  # RSA-8192
MAX_CHAIN_LEN = 8  # certificates in a chain, leaf first
MAX_CERT_LEN = 0xFFFF
MAX_PATH_LEN = 32  # Merkle path: trees of up to 2**32 leaves

PW_HELLO_MAX = 1 + MAX_USER_LEN
PW_PARAMS_MAX = 4 + 1 + MAX_SALT_LEN + 1 + MAX_REALM_LEN
# (min, max) body length per type: checked on the header, before a body is read.
BODY_BOUNDS = {
    MsgType.PW_HELLO: (2, PW_HELLO_MAX),
    MsgType.PW_PARAMS: (4 + 1 + MIN_SALT_LEN + 1, PW_PARAMS_MAX),
    MsgType.PW_CLIENT_PROOF: (HASH_LEN, HASH_LEN),
    MsgType.PW_SERVER_PROOF: (HASH_LEN, HASH_LEN),
    MsgType.SIGNATURE: (1 + 2 + 1 + 1, MAX_BODY_LEN),
    MsgType.BATCH_SIGNATURE: (1 + 2 + 1 + 4 + 4 + 1 + 1, MAX_BODY_LEN),
    MsgType.FAILURE: (1, 1),
}


@dataclass(frozen=True, slots=True)
class Header:
    type: MsgType
    scheme: Scheme
    length: int


def encode_frame(msg_type: MsgType, scheme: Scheme, body: bytes) -> bytes:
    if len(body) > MAX_BODY_LEN:
        raise ValueError(f"{msg_type.name} body of {len(body)} bytes exceeds {MAX_BODY_LEN}")
    return HEADER.pack(msg_type, scheme, len(body)) + body


def parse_header(data: bytes, expected: frozenset[MsgType]) -> Header:
    """Check a 4-byte header against what the exchange waits for now: type, scheme and body length bounds.

    A message type carries the scheme it belongs to (TYPE_SCHEME); FAILURE is always acceptable, with the scheme of
    one of the expected types. Raises ProtocolViolation before any body byte is read.
    """
    if len(data) != HEADER_LEN:
        raise ProtocolViolation(f"frame header is {len(data)} bytes, expected {HEADER_LEN}")
    raw_type, raw_scheme, length = HEADER.unpack(data)
    try:
        msg_type = MsgType(raw_type)
    except ValueError:
        raise ProtocolViolation(f"unknown message type 0x{raw_type:02x}: the peer does not speak mptcrypt.auth "
                                "or the stream is garbled") from None
    if msg_type is not MsgType.FAILURE and msg_type not in expected:
        want = " or ".join(sorted(t.name for t in expected)) or "nothing"
        raise ProtocolViolation(f"unexpected {msg_type.name} (waiting for {want})")
    schemes = {TYPE_SCHEME[t] for t in expected if t is not MsgType.FAILURE}
    if msg_type is not MsgType.FAILURE:
        schemes = {TYPE_SCHEME[msg_type]}
    if raw_scheme not in schemes:
        want = " or ".join(sorted(s.name for s in schemes)) or "nothing"
        raise ProtocolViolation(f"{msg_type.name} for scheme 0x{raw_scheme:02x}, expected {want}: "
                                "both ends must use the same scheme")
    low, high = BODY_BOUNDS[msg_type]
    if not low <= length <= high:
        raise ProtocolViolation(f"{msg_type.name} body of {length} bytes, allowed {low}..{high}")
    return Header(msg_type, Scheme(raw_scheme), length)


class _Reader:
    """Cursor over a body; every short read raises ProtocolViolation naming the message."""

    def __init__(self, body: bytes, what: str) -> None:
        self._body = memoryview(body)
        self._pos = 0
        self._what = what

    def take(self, n: int) -> bytes:
        if self._pos + n > len(self._body):
            raise ProtocolViolation(f"{self._what} truncated: needs {self._pos + n} bytes, has {len(self._body)}")
        out = bytes(self._body[self._pos : self._pos + n])
        self._pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def end(self) -> None:
        if self._pos != len(self._body):
            raise ProtocolViolation(f"{self._what} has {len(self._body) - self._pos} trailing bytes")


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation(f"{what} is not valid UTF-8") from None


# --- password messages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PwHello:
    user: str

    def encode(self) -> bytes:
        raw = self.user.encode("utf-8")
        if not 1 <= len(raw) <= MAX_USER_LEN:
            raise ValueError(f"user name must be 1..{MAX_USER_LEN} bytes of UTF-8, got {len(raw)}")
        return encode_frame(MsgType.PW_HELLO, Scheme.PASSWORD, bytes([len(raw)]) + raw)

    @classmethod
    def parse(cls, body: bytes) -> PwHello:
        r = _Reader(body, "PW_HELLO")
        n = r.u8()
        if n == 0:
            raise ProtocolViolation("PW_HELLO with an empty user name")
        user = _utf8(r.take(n), "PW_HELLO user name")
        r.end()
        return cls(user)


@dataclass(frozen=True, slots=True)
class PwParams:
    kdf: int
    log2_n: int
    r: int
    p: int
    salt: bytes
    realm: str

    def encode(self) -> bytes:
        realm = self.realm.encode("utf-8")
        if not MIN_SALT_LEN <= len(self.salt) <= MAX_SALT_LEN:
            raise ValueError(f"salt must be {MIN_SALT_LEN}..{MAX_SALT_LEN} bytes")
        if len(realm) > MAX_REALM_LEN:
            raise ValueError(f"realm must be at most {MAX_REALM_LEN} bytes of UTF-8")
        body = (bytes([self.kdf, self.log2_n, self.r, self.p, len(self.salt)]) + self.salt
                + bytes([len(realm)]) + realm)
        return encode_frame(MsgType.PW_PARAMS, Scheme.PASSWORD, body)

    @classmethod
    def parse(cls, body: bytes) -> PwParams:
        rd = _Reader(body, "PW_PARAMS")
        kdf, log2_n, r, p = rd.u8(), rd.u8(), rd.u8(), rd.u8()
        salt_len = rd.u8()
        if not MIN_SALT_LEN <= salt_len <= MAX_SALT_LEN:
            raise ProtocolViolation(f"PW_PARAMS salt of {salt_len} bytes, allowed {MIN_SALT_LEN}..{MAX_SALT_LEN}")
        salt = rd.take(salt_len)
        realm = _utf8(rd.take(rd.u8()), "PW_PARAMS realm")
        rd.end()
        return cls(kdf, log2_n, r, p, salt, realm)


def encode_proof(msg_type: MsgType, proof: bytes) -> bytes:
    if msg_type not in (MsgType.PW_CLIENT_PROOF, MsgType.PW_SERVER_PROOF) or len(proof) != HASH_LEN:
        raise ValueError("a proof is PW_CLIENT_PROOF or PW_SERVER_PROOF with 32 bytes")
    return encode_frame(msg_type, Scheme.PASSWORD, proof)


def parse_proof(body: bytes) -> bytes:
    if len(body) != HASH_LEN:  # the header bounds already say so; kept for direct callers
        raise ProtocolViolation(f"proof of {len(body)} bytes, expected {HASH_LEN}")
    return bytes(body)


# --- FAILURE --------------------------------------------------------------------------------------


def encode_failure(scheme: Scheme, reason: FailReason) -> bytes:
    return encode_frame(MsgType.FAILURE, scheme, bytes([reason]))


def parse_failure(body: bytes) -> int:
    """The reason byte (unknown values are kept: the peer may be newer)."""
    r = _Reader(body, "FAILURE")
    reason = r.u8()
    r.end()
    return reason


# --- signature messages ---------------------------------------------------------------------------


def _encode_sig(alg: SigAlg, signature: bytes) -> bytes:
    if not 1 <= len(signature) <= MAX_SIG_LEN:
        raise ValueError(f"signature of {len(signature)} bytes, allowed 1..{MAX_SIG_LEN}")
    return bytes([alg]) + len(signature).to_bytes(2, "big") + signature


def _parse_sig(r: _Reader, what: str) -> tuple[SigAlg, bytes]:
    raw_alg = r.u8()
    try:
        alg = SigAlg(raw_alg)
    except ValueError:
        raise ProtocolViolation(f"{what}: unknown signature algorithm 0x{raw_alg:02x}") from None
    n = r.u16()
    if not 1 <= n <= MAX_SIG_LEN:
        raise ProtocolViolation(f"{what}: signature of {n} bytes, allowed 1..{MAX_SIG_LEN}")
    return alg, r.take(n)


def _encode_chain(chain: tuple[bytes, ...]) -> bytes:
    if len(chain) > MAX_CHAIN_LEN:
        raise ValueError(f"certificate chain of {len(chain)} certificates, at most {MAX_CHAIN_LEN}")
    out = bytearray([len(chain)])
    for der in chain:
        if not 1 <= len(der) <= MAX_CERT_LEN:
            raise ValueError("certificate DER must be 1..65535 bytes")
        out += len(der).to_bytes(2, "big") + der
    return bytes(out)


def _parse_chain(r: _Reader, what: str) -> tuple[bytes, ...]:
    n = r.u8()
    if n > MAX_CHAIN_LEN:
        raise ProtocolViolation(f"{what}: chain of {n} certificates, at most {MAX_CHAIN_LEN}")
    chain = []
    for _ in range(n):
        size = r.u16()
        if size == 0:
            raise ProtocolViolation(f"{what}: empty certificate")
        chain.append(r.take(size))
    return tuple(chain)


@dataclass(frozen=True, slots=True)
class SignatureMsg:
    alg: SigAlg
    signature: bytes
    chain: tuple[bytes, ...] = ()  # DER certificates, leaf first; empty when the client pins the key

    def encode(self) -> bytes:
        body = _encode_sig(self.alg, self.signature) + _encode_chain(self.chain)
        return encode_frame(MsgType.SIGNATURE, Scheme.SIGNATURE, body)

    @classmethod
    def parse(cls, body: bytes) -> SignatureMsg:
        r = _Reader(body, "SIGNATURE")
        alg, sig = _parse_sig(r, "SIGNATURE")
        chain = _parse_chain(r, "SIGNATURE")
        r.end()
        return cls(alg, sig, chain)


@dataclass(frozen=True, slots=True)
class BatchSignatureMsg:
    alg: SigAlg
    signature: bytes  # over BATCH_SIGNATURE_CONTEXT | u32 tree_size | root
    tree_size: int
    leaf_index: int
    path: tuple[bytes, ...]  # sibling hashes, leaf to root (RFC 9162 inclusion path)
    chain: tuple[bytes, ...] = ()

    def encode(self) -> bytes:
        if len(self.path) > MAX_PATH_LEN or any(len(h) != HASH_LEN for h in self.path):
            raise ValueError(f"path must be at most {MAX_PATH_LEN} hashes of {HASH_LEN} bytes")
        body = (_encode_sig(self.alg, self.signature) + self.tree_size.to_bytes(4, "big")
                + self.leaf_index.to_bytes(4, "big") + bytes([len(self.path)]) + b"".join(self.path)
                + _encode_chain(self.chain))
        return encode_frame(MsgType.BATCH_SIGNATURE, Scheme.BATCH, body)

    @classmethod
    def parse(cls, body: bytes) -> BatchSignatureMsg:
        r = _Reader(body, "BATCH_SIGNATURE")
        alg, sig = _parse_sig(r, "BATCH_SIGNATURE")
        tree_size, leaf_index = r.u32(), r.u32()
        n = r.u8()
        if n > MAX_PATH_LEN:
            raise ProtocolViolation(f"BATCH_SIGNATURE: path of {n} hashes, at most {MAX_PATH_LEN}")
        path = tuple(r.take(HASH_LEN) for _ in range(n))
        chain = _parse_chain(r, "BATCH_SIGNATURE")
        r.end()
        return cls(alg, sig, tree_size, leaf_index, path, chain)
