"""Server signatures over session IDs, one per connection or one per batch (docs/auth.md "Signature", "Batch").

Signed messages (wire.py):
    single  SID_SIGNATURE_CONTEXT | sid
    batch   BATCH_SIGNATURE_CONTEXT | u32 tree_size | root      (root of the Merkle tree over the batch's sids)

Keys: Ed25519 (default), ECDSA P-256 / P-384 (SHA-256 / SHA-384), RSA >= 2048 bits with PSS (MGF1-SHA256, salt 32).
The client trusts either a pinned public key, or a CA bundle plus the server name it meant to reach; in the CA case
the chain is checked with cryptography's x509 verification API (PolicyBuilder: the CA/Browser Forum web PKI profile,
the leaf must name `server_name` in its subjectAltName and allow serverAuth if it has an extended key usage).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, auto
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store, VerificationError

from mptcrypt.auth.errors import AuthenticationFailed, ProtocolViolation
from mptcrypt.auth.exchange import Exchange
from mptcrypt.auth.merkle import leaf_hash, root_from_path
from mptcrypt.auth.wire import (
    BATCH_SIGNATURE_CONTEXT,
    SID_LEN,
    SID_SIGNATURE_CONTEXT,
    BatchSignatureMsg,
    MsgType,
    Scheme,
    SignatureMsg,
    SigAlg,
)

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

MIN_RSA_BITS = 2048
RSA_PSS_SALT_LEN = 32
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=RSA_PSS_SALT_LEN)
_ECDSA_CURVES = {"secp256r1": (SigAlg.ECDSA_P256_SHA256, hashes.SHA256),
                 "secp384r1": (SigAlg.ECDSA_P384_SHA384, hashes.SHA384)}


def sig_alg_for(key: PrivateKey | PublicKey) -> SigAlg:
    """The one signature algorithm a key may use. Raises TypeError for keys mptcrypt.auth does not accept."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return SigAlg.ED25519
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.name not in _ECDSA_CURVES:
            raise TypeError(f"ECDSA curve {key.curve.name} is not supported (use P-256 or P-384)")
        return _ECDSA_CURVES[key.curve.name][0]
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise TypeError(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS}")
        return SigAlg.RSA_PSS_SHA256
    raise TypeError(f"unsupported key type {type(key).__name__} (Ed25519, ECDSA P-256/P-384 or RSA >= 2048)")


def sign(private_key: PrivateKey, message: bytes) -> tuple[SigAlg, bytes]:
    alg = sig_alg_for(private_key)
    if alg is SigAlg.ED25519:
        return alg, private_key.sign(message)
    if alg is SigAlg.RSA_PSS_SHA256:
        return alg, private_key.sign(message, _PSS, hashes.SHA256())
    return alg, private_key.sign(message, ec.ECDSA(_ECDSA_CURVES[private_key.curve.name][1]()))


def verify(public_key: PublicKey, alg: SigAlg, signature: bytes, message: bytes) -> None:
    """Raises AuthenticationFailed unless `signature` is `public_key`'s signature of `message` with `alg`."""
    try:
        expected = sig_alg_for(public_key)
    except TypeError as exc:
        raise AuthenticationFailed(f"the server's key is not acceptable: {exc}") from None
    if alg is not expected:
        raise AuthenticationFailed(f"signature algorithm {alg.name} does not match the server's key ({expected.name})")
    try:
        if alg is SigAlg.ED25519:
            public_key.verify(signature, message)
        elif alg is SigAlg.RSA_PSS_SHA256:
            public_key.verify(signature, message, _PSS, hashes.SHA256())
        else:
            public_key.verify(signature, message, ec.ECDSA(_ECDSA_CURVES[public_key.curve.name][1]()))
    except (InvalidSignature, ValueError):
        raise AuthenticationFailed(
            "the server's signature does not verify: another key signed it, or it signed another session ID "
            "(a man in the middle); do not trust this connection") from None


def sid_message(sid: bytes) -> bytes:
    if len(sid) != SID_LEN:
        raise ValueError(f"a session ID is {SID_LEN} bytes, got {len(sid)}")
    return SID_SIGNATURE_CONTEXT + bytes(sid)


def batch_message(tree_size: int, root: bytes) -> bytes:
    return BATCH_SIGNATURE_CONTEXT + tree_size.to_bytes(4, "big") + root


def chain_der(private_key: PrivateKey, certificate_chain: Sequence[x509.Certificate] | None) -> tuple[bytes, ...]:
    """DER of a chain (leaf first), after checking that the leaf certifies `private_key`."""
    if not certificate_chain:
        return ()
    leaf = certificate_chain[0]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if (leaf.public_key().public_bytes(serialization.Encoding.DER, pub)
            != private_key.public_key().public_bytes(serialization.Encoding.DER, pub)):
        raise ValueError("the first certificate of the chain does not certify this private key")
    return tuple(c.public_bytes(serialization.Encoding.DER) for c in certificate_chain)


def sign_sid(private_key: PrivateKey, sid: bytes, *,
             certificate_chain: Sequence[x509.Certificate] | None = None) -> SignatureMsg:
    chain = chain_der(private_key, certificate_chain)
    alg, sig = sign(private_key, sid_message(sid))
    return SignatureMsg(alg, sig, chain)


# --- what a client trusts -------------------------------------------------------------------------


def load_public_key(data: PublicKey | bytes | str | os.PathLike) -> PublicKey:
    """A public key from an object, PEM or DER SubjectPublicKeyInfo, a raw 32-byte Ed25519 key, or a file of those."""
    if isinstance(data, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        key = data
    else:
        if isinstance(data, str | os.PathLike):
            data = Path(data).read_bytes()
        data = bytes(data)
        try:
            if len(data) == 32:
                key = ed25519.Ed25519PublicKey.from_public_bytes(data)
            elif data.lstrip().startswith(b"-----BEGIN"):
                key = serialization.load_pem_public_key(data)
            else:
                key = serialization.load_der_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"not a public key: {exc}") from None
    sig_alg_for(key)  # TypeError for unsupported key types
    return key


def load_certificates(data: Sequence[x509.Certificate] | bytes | str | os.PathLike) -> list[x509.Certificate]:
    """Certificates from objects, a PEM bundle, or a PEM file."""
    if isinstance(data, str | os.PathLike):
        data = Path(data).read_bytes()
    if isinstance(data, bytes | bytearray):
        return x509.load_pem_x509_certificates(bytes(data))
    return list(data)


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """What client_verify_signature established."""

    sid: bytes
    public_key: PublicKey
    certificate: x509.Certificate | None  # the verified leaf (CA mode), None with a pinned key
    chain: tuple[x509.Certificate, ...]  # the verified chain, leaf to trust anchor (CA mode)
    batch: tuple[int, int] | None  # (tree_size, leaf_index) when the server signed a batch


class ServerTrust:
    """Who may sign: one pinned public key, or any key certified for `server_name` by a CA in the bundle."""

    def __init__(self, *, pinned_key: PublicKey | bytes | str | os.PathLike | None = None,
                 ca_bundle: Sequence[x509.Certificate] | bytes | str | os.PathLike | None = None,
                 server_name: str | None = None) -> None:
        if (pinned_key is None) == (ca_bundle is None):
            raise ValueError("give exactly one of pinned_key and ca_bundle")
        self._pinned = load_public_key(pinned_key) if pinned_key is not None else None
        self._verifier = None
        if ca_bundle is not None:
            if not server_name:
                raise ValueError("a CA bundle needs server_name: the DNS name or IP address the client meant to "
                                 "reach (any certificate from the CA would do otherwise)")
            anchors = load_certificates(ca_bundle)
            if not anchors:
                raise ValueError("the CA bundle holds no certificate")
            try:
                subject = IPAddress(ipaddress.ip_address(server_name))
            except ValueError:
                subject = DNSName(server_name)
            self._verifier = PolicyBuilder().store(Store(anchors)).build_server_verifier(subject)

    def authenticate(self, chain_der_: Sequence[bytes]) -> tuple[PublicKey, x509.Certificate | None,
                                                                 tuple[x509.Certificate, ...]]:
        """The key the signature must verify with, from the pinned key or from a chain that verifies."""
        if self._pinned is not None:
            return self._pinned, None, ()
        if not chain_der_:
            raise AuthenticationFailed("the server sent no certificate, and this client trusts a CA bundle only")
        try:
            certs = [x509.load_der_x509_certificate(der) for der in chain_der_]
        except ValueError as exc:
            raise ProtocolViolation(f"the server's certificate does not parse: {exc}") from None
        try:
            verified = self._verifier.verify(certs[0], certs[1:])
        except VerificationError as exc:
            raise AuthenticationFailed(f"the server's certificate chain does not verify: {exc}") from None
        try:
            key = certs[0].public_key()
            sig_alg_for(key)
        except (TypeError, UnsupportedAlgorithm) as exc:
            raise AuthenticationFailed(f"the server certificate's key is not acceptable: {exc}") from None
        return key, certs[0], tuple(verified)


def verify_sid_signature(msg: SignatureMsg, sid: bytes, trust: ServerTrust) -> ServerIdentity:
    key, leaf, chain = trust.authenticate(msg.chain)
    verify(key, msg.alg, msg.signature, sid_message(sid))
    return ServerIdentity(bytes(sid), key, leaf, chain, None)


def verify_batch_proof(msg: BatchSignatureMsg, sid: bytes, trust: ServerTrust) -> ServerIdentity:
    """Check that `sid` is in the batch at msg.leaf_index and that the server signed the batch's root."""
    if len(sid) != SID_LEN:
        raise ValueError(f"a session ID is {SID_LEN} bytes, got {len(sid)}")
    root = root_from_path(leaf_hash(sid), msg.leaf_index, msg.tree_size, msg.path)
    if root is None:
        raise AuthenticationFailed(
            f"the inclusion proof (leaf {msg.leaf_index} of {msg.tree_size}, {len(msg.path)} hashes) is malformed: "
            "truncated, padded or out of range")
    key, leaf, chain = trust.authenticate(msg.chain)
    verify(key, msg.alg, msg.signature, batch_message(msg.tree_size, root))
    return ServerIdentity(bytes(sid), key, leaf, chain, (msg.tree_size, msg.leaf_index))


class SignatureClient(Exchange):
    """Client side of both signature schemes: waits for one SIGNATURE or BATCH_SIGNATURE and checks it."""

    class State(Enum):
        WAIT_SIGNATURE = auto()
        DONE = auto()
        FAILED = auto()

    PEER_WAITS = frozenset()  # the server sent its one message and is done: we never answer
    SCHEME = Scheme.SIGNATURE

    def __init__(self, sid: bytes, trust: ServerTrust, *, accept: frozenset[MsgType] = frozenset(
            {MsgType.SIGNATURE, MsgType.BATCH_SIGNATURE})) -> None:
        super().__init__(self.State.WAIT_SIGNATURE)
        if not accept or not accept <= {MsgType.SIGNATURE, MsgType.BATCH_SIGNATURE}:
            raise ValueError("accept SIGNATURE and/or BATCH_SIGNATURE")
        if len(sid) != SID_LEN:
            raise ValueError(f"a session ID is {SID_LEN} bytes, got {len(sid)}")
        self.EXPECT = {self.State.WAIT_SIGNATURE: frozenset(accept)}
        self._sid = bytes(sid)
        self._trust = trust
        self.identity: ServerIdentity | None = None

    def _handle(self, msg_type: MsgType, body: bytes) -> None:
        if msg_type is MsgType.SIGNATURE:
            self.identity = verify_sid_signature(SignatureMsg.parse(body), self._sid, self._trust)
        else:
            self.identity = verify_batch_proof(BatchSignatureMsg.parse(body), self._sid, self._trust)
        self.state = self.State.DONE
