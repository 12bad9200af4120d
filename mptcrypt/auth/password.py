"""Password mutual authentication on the session ID (the seed's scheme; docs/auth.md "Password").

    h = scrypt(password, SCRYPT_SALT_CONTEXT | u8 len(salt) | salt | u8 len(realm) | realm, n, r, p, 32 bytes)

    C -> S  PW_HELLO         user
    S -> C  PW_PARAMS        scrypt, log2(n), r, p, salt, realm       (from the stored verifier)
    C -> S  PW_CLIENT_PROOF  HMAC-SHA256(h, TAG_CLIENT | sid)          (after checking the parameters)
    S -> C  PW_SERVER_PROOF  HMAC-SHA256(h, TAG_SERVER | sid)          (only after the client's proof verified)

The server stores a PasswordVerifier (realm, salt, scrypt parameters, h), never the password, and runs no scrypt
during authentication: only HMACs. Both ends compare proofs in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto
from urllib.parse import quote, unquote

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from mptcrypt.auth.errors import AuthenticationFailed, ParametersRefused, ProtocolViolation
from mptcrypt.auth.exchange import Exchange
from mptcrypt.auth.wire import (
    HASH_LEN,
    MAX_REALM_LEN,
    MAX_SALT_LEN,
    MIN_SALT_LEN,
    SCRYPT_SALT_CONTEXT,
    SID_LEN,
    KdfId,
    MsgType,
    PwHello,
    PwParams,
    Scheme,
    encode_proof,
    parse_proof,
)
from mptcrypt.constants import TAG_CLIENT, TAG_SERVER

SALT_LEN = 16  # what PasswordVerifier.create draws; the wire accepts MIN_SALT_LEN..MAX_SALT_LEN
DEFAULT_REALM = "mptcrypt"
VERIFIER_PREFIX = "$mptcrypt-scrypt$v=1$"


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost: n = 2**log2_n, block size r, parallelism p. Memory is 128 * r * n bytes."""

    log2_n: int = 15
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.log2_n <= 63 and 1 <= self.r <= 255 and 1 <= self.p <= 255):
            raise ValueError(f"scrypt parameters out of range: log2_n 1..63, r and p 1..255, got {self}")

    @property
    def n(self) -> int:
        return 1 << self.log2_n

    @property
    def memory(self) -> int:
        return 128 * self.r * self.n

    @property
    def work(self) -> int:
        return self.n * self.r * self.p


DEFAULT_SCRYPT = ScryptParams(15, 8, 1)  # 32 MiB, about 0.1 s on one core of a 2020s CPU
TEST_SCRYPT = ScryptParams(10, 8, 1)  # 1 MiB, a few ms: unit tests only


@dataclass(frozen=True, slots=True)
class KdfPolicy:
    """What a client accepts from a server's PW_PARAMS before it derives h and proves anything.

    The floor stops a man in the middle from announcing cheap parameters (and its own salt) so that the proof it
    collects is cheap to attack offline; the ceilings stop a server from making the client burn memory or time.
    """

    min_work: int = 1 << 17  # n * r * p: 2**14 * 8
    max_memory: int = 256 << 20  # 128 * r * n bytes
    max_work: int = 1 << 24  # n * r * p

    def check(self, params: ScryptParams) -> None:
        if params.work < self.min_work:
            raise ParametersRefused(
                f"the server asks for scrypt n=2**{params.log2_n}, r={params.r}, p={params.p} (work {params.work}), "
                f"below this client's floor of {self.min_work}: a man in the middle may want a proof that is cheap "
                "to attack offline; nothing was sent")
        if params.memory > self.max_memory or params.work > self.max_work:
            raise ParametersRefused(
                f"the server asks for scrypt n=2**{params.log2_n}, r={params.r}, p={params.p} "
                f"({params.memory >> 20} MiB, work {params.work}), above this client's limits "
                f"({self.max_memory >> 20} MiB, work {self.max_work})")


DEFAULT_KDF_POLICY = KdfPolicy()
TEST_KDF_POLICY = KdfPolicy(min_work=1)


def _text(value: str | bytes, what: str) -> bytes:
    """Passwords and realms: str is NFC-normalised and UTF-8 encoded; bytes are used as they are."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value).encode("utf-8")
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def scrypt_salt(salt: bytes, realm: str) -> bytes:
    """The salt input of scrypt: binds the random salt and the realm, unambiguously."""
    raw_realm = _text(realm, "realm")
    if not MIN_SALT_LEN <= len(salt) <= MAX_SALT_LEN:
        raise ValueError(f"salt must be {MIN_SALT_LEN}..{MAX_SALT_LEN} bytes")
    if len(raw_realm) > MAX_REALM_LEN:
        raise ValueError(f"realm must be at most {MAX_REALM_LEN} bytes of UTF-8")
    return SCRYPT_SALT_CONTEXT + bytes([len(salt)]) + salt + bytes([len(raw_realm)]) + raw_realm


def derive_h(password: str | bytes, salt: bytes, realm: str, params: ScryptParams) -> bytes:
    """h = H(salt, realm, password): the 32-byte password verifier key."""
    kdf = Scrypt(salt=scrypt_salt(salt, realm), length=HASH_LEN, n=params.n, r=params.r, p=params.p)
    return kdf.derive(_text(password, "password"))


def _check_sid(sid: bytes) -> bytes:
    if len(sid) != SID_LEN:
        raise ValueError(f"a session ID is {SID_LEN} bytes, got {len(sid)}")
    return bytes(sid)


def client_proof(h: bytes, sid: bytes) -> bytes:
    return hmac.new(h, TAG_CLIENT + _check_sid(sid), hashlib.sha256).digest()


def server_proof(h: bytes, sid: bytes) -> bytes:
    return hmac.new(h, TAG_SERVER + _check_sid(sid), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in text):
        raise ValueError("not unpadded url-safe base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class PasswordVerifier:
    """What a server stores per user instead of the password: realm, salt, scrypt parameters and h.

    h is not the password, but it is what the proofs are made with: whoever steals a verifier can authenticate as
    that user to this server (and as this server to that user) without guessing. Store verifiers like a password
    file: readable by the server only. repr() does not show h.
    """

    realm: str
    salt: bytes
    params: ScryptParams
    h: bytes

    def __post_init__(self) -> None:
        scrypt_salt(self.salt, self.realm)  # validates salt and realm lengths
        if len(self.h) != HASH_LEN:
            raise ValueError(f"h must be {HASH_LEN} bytes")

    def __repr__(self) -> str:
        return f"PasswordVerifier(realm={self.realm!r}, params={self.params}, salt={self.salt.hex()}, h=<hidden>)"

    @classmethod
    def create(cls, password: str | bytes, *, realm: str = DEFAULT_REALM, params: ScryptParams = DEFAULT_SCRYPT,
               salt: bytes | None = None) -> PasswordVerifier:
        """Make a verifier from a password (salt: 16 random bytes unless given, e.g. for test vectors)."""
        salt = os.urandom(SALT_LEN) if salt is None else bytes(salt)
        return cls(realm, salt, params, derive_h(password, salt, realm, params))

    def check_password(self, password: str | bytes) -> bool:
        """Local check (e.g. an admin tool), constant time in the comparison."""
        return hmac.compare_digest(derive_h(password, self.salt, self.realm, self.params), self.h)

    def to_string(self) -> str:
        """`$mptcrypt-scrypt$v=1$ln=15,r=8,p=1$<realm, percent-encoded>$<salt>$<h>` (base64url, no padding)."""
        p = self.params
        return (f"{VERIFIER_PREFIX}ln={p.log2_n},r={p.r},p={p.p}${quote(self.realm, safe='')}"
                f"${_b64(self.salt)}${_b64(self.h)}")

    def to_bytes(self) -> bytes:
        return self.to_string().encode("ascii")

    @classmethod
    def from_string(cls, text: str | bytes) -> PasswordVerifier:
        if isinstance(text, bytes | bytearray):
            try:
                text = bytes(text).decode("ascii")
            except UnicodeDecodeError:
                raise ValueError("a password verifier is ASCII text") from None
        text = text.strip()
        if not text.startswith(VERIFIER_PREFIX):
            raise ValueError(f"not an mptcrypt password verifier (expected it to start with {VERIFIER_PREFIX!r})")
        fields = text[len(VERIFIER_PREFIX):].split("$")
        if len(fields) != 4:
            raise ValueError("a password verifier has 4 fields after the prefix: params, realm, salt, h")
        raw_params, raw_realm, raw_salt, raw_h = fields
        try:
            kv = dict(item.split("=", 1) for item in raw_params.split(","))
            if sorted(kv) != ["ln", "p", "r"] or not all(v.isdigit() for v in kv.values()):
                raise ValueError
            params = ScryptParams(int(kv["ln"]), int(kv["r"]), int(kv["p"]))
        except ValueError:
            raise ValueError(f"bad scrypt parameters {raw_params!r} (expected ln=..,r=..,p=..)") from None
        return cls(unquote(raw_realm, errors="strict"), _unb64(raw_salt), params, _unb64(raw_h))

    from_bytes = from_string


_DECOY_KEY = os.urandom(32)  # per process: salts for unknown users are stable for the life of the server


def decoy_verifier(user: str, realm: str, params: ScryptParams) -> PasswordVerifier:
    """A verifier for a user the server does not know: a stable-looking salt, a random h that no proof matches.

    So an unknown user gets PW_PARAMS like a known one and fails at the proof, like a wrong password.
    """
    salt = hmac.new(_DECOY_KEY, _text(realm, "realm") + b"\x00" + user.encode("utf-8"), hashlib.sha256).digest()
    return PasswordVerifier(realm, salt[:SALT_LEN], params, os.urandom(HASH_LEN))


# --- sans-IO exchanges ----------------------------------------------------------------------------


class PasswordClient(Exchange):
    """Client side: sends PW_HELLO at once, proves after checking PW_PARAMS, then checks the server's proof."""

    class State(Enum):
        WAIT_PARAMS = auto()
        WAIT_SERVER_PROOF = auto()
        DONE = auto()
        FAILED = auto()

    EXPECT = {
        State.WAIT_PARAMS: frozenset({MsgType.PW_PARAMS}),
        State.WAIT_SERVER_PROOF: frozenset({MsgType.PW_SERVER_PROOF}),
    }
    PEER_WAITS = frozenset({State.WAIT_PARAMS})  # the server waits for our proof; afterwards it is done
    SCHEME = Scheme.PASSWORD

    def __init__(self, user: str, password: str | bytes, sid: bytes, *, policy: KdfPolicy = DEFAULT_KDF_POLICY,
                 expected_realm: str | None = None) -> None:
        super().__init__(self.State.WAIT_PARAMS)
        self._password: str | bytes | None = password
        self._sid = _check_sid(sid)
        self._policy = policy
        self._expected_realm = expected_realm
        self._h: bytes | None = None
        self.realm: str | None = None
        self._send(PwHello(user).encode())

    def _handle(self, msg_type: MsgType, body: bytes) -> None:
        if self.state is self.State.WAIT_PARAMS:
            params = PwParams.parse(body)
            if params.kdf != KdfId.SCRYPT:
                raise ParametersRefused(f"the server asks for KDF 0x{params.kdf:02x}; this client knows scrypt only")
            try:
                scrypt = ScryptParams(params.log2_n, params.r, params.p)
            except ValueError as exc:
                raise ProtocolViolation(f"PW_PARAMS: {exc}") from None
            self._policy.check(scrypt)
            if self._expected_realm is not None and params.realm != self._expected_realm:
                raise ParametersRefused(f"the server announces realm {params.realm!r}, expected "
                                        f"{self._expected_realm!r}; nothing was sent")
            self.realm = params.realm
            self._h = derive_h(self._password, params.salt, params.realm, scrypt)
            self._password = None  # h is all the rest of the exchange needs
            self._send(encode_proof(MsgType.PW_CLIENT_PROOF, client_proof(self._h, self._sid)))
            self.state = self.State.WAIT_SERVER_PROOF
        else:
            proof = parse_proof(body)
            assert self._h is not None
            ok = hmac.compare_digest(proof, server_proof(self._h, self._sid))
            self._h = None
            if not ok:
                raise AuthenticationFailed(
                    "the server's proof does not match: it does not know the password verifier, or it computed the "
                    "proof over another session ID (a man in the middle); do not trust this connection")
            self.state = self.State.DONE


VerifierLookup = Callable[[str], "PasswordVerifier | str | bytes | None"]


class PasswordServer(Exchange):
    """Server side: answers PW_HELLO with the user's parameters, checks the client's proof, then proves back."""

    class State(Enum):
        WAIT_HELLO = auto()
        WAIT_CLIENT_PROOF = auto()
        DONE = auto()
        FAILED = auto()

    EXPECT = {
        State.WAIT_HELLO: frozenset({MsgType.PW_HELLO}),
        State.WAIT_CLIENT_PROOF: frozenset({MsgType.PW_CLIENT_PROOF}),
    }
    PEER_WAITS = frozenset({State.WAIT_HELLO, State.WAIT_CLIENT_PROOF})
    SCHEME = Scheme.PASSWORD

    def __init__(self, lookup_verifier: VerifierLookup, sid: bytes, *, decoy_realm: str = DEFAULT_REALM,
                 decoy_params: ScryptParams = DEFAULT_SCRYPT) -> None:
        super().__init__(self.State.WAIT_HELLO)
        self._lookup = lookup_verifier
        self._sid = _check_sid(sid)
        self._decoy_realm = decoy_realm
        self._decoy_params = decoy_params
        self._verifier: PasswordVerifier | None = None
        self.user: str | None = None
        self.known_user = False

    def _handle(self, msg_type: MsgType, body: bytes) -> None:
        if self.state is self.State.WAIT_HELLO:
            self.user = PwHello.parse(body).user
            found = self._lookup(self.user)
            if isinstance(found, str | bytes):
                found = PasswordVerifier.from_string(found)
            self.known_user = found is not None
            v = found if found is not None else decoy_verifier(self.user, self._decoy_realm, self._decoy_params)
            self._verifier = v
            self._send(PwParams(KdfId.SCRYPT, v.params.log2_n, v.params.r, v.params.p, v.salt, v.realm).encode())
            self.state = self.State.WAIT_CLIENT_PROOF
        else:
            proof = parse_proof(body)
            assert self._verifier is not None
            h, self._verifier = self._verifier.h, None
            if not hmac.compare_digest(proof, client_proof(h, self._sid)):
                raise AuthenticationFailed(
                    f"user {self.user!r}: the client's proof does not match (wrong password, unknown user, or a "
                    "man in the middle: the proof was made over another session ID)")
            self._send(encode_proof(MsgType.PW_SERVER_PROOF, server_proof(h, self._sid)))
            self.state = self.State.DONE
