"""The blocking-socket edge: runs the sans-IO exchanges over a connected socket (plain TCP or MPTCP).

Reads exactly the frames of the exchange and not one byte more, so the application's own protocol continues on the
same stream right after. Every call has a deadline (`timeout` seconds for the whole exchange, None: no deadline)
and restores the socket's own timeout afterwards.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence

from cryptography import x509

from mptcrypt.auth import sid as _sid
from mptcrypt.auth.batch import BatchProof
from mptcrypt.auth.errors import AuthenticationFailed, AuthTimeout, NotProtected
from mptcrypt.auth.exchange import Exchange
from mptcrypt.auth.password import (
    DEFAULT_KDF_POLICY,
    DEFAULT_REALM,
    DEFAULT_SCRYPT,
    KdfPolicy,
    PasswordClient,
    PasswordServer,
    ScryptParams,
    VerifierLookup,
)
from mptcrypt.auth.signature import PrivateKey, PublicKey, ServerIdentity, ServerTrust, SignatureClient, sign_sid
from mptcrypt.auth.wire import HEADER_LEN, FailReason, MsgType, Scheme, encode_failure

DEFAULT_TIMEOUT = 10.0


class _Deadline:
    def __init__(self, timeout: float | None) -> None:
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self, what: str) -> float | None:
        if self._end is None:
            return None
        left = self._end - time.monotonic()
        if left <= 0:
            raise AuthTimeout(f"timed out {what}")
        return left


def _recv_exact(sock: socket.socket, n: int, deadline: _Deadline, what: str) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        sock.settimeout(deadline.remaining(f"waiting for {what}"))
        try:
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            raise AuthTimeout(f"timed out waiting for {what} ({len(buf)} of {n} bytes received)") from None
        except ConnectionError as exc:
            raise AuthenticationFailed(f"connection lost waiting for {what}: {exc}") from exc
        if not chunk:
            raise AuthenticationFailed(f"the peer closed the connection while we waited for {what} "
                                       f"({len(buf)} of {n} bytes received)")
        buf += chunk
    return bytes(buf)


def _send(sock: socket.socket, data: bytes, deadline: _Deadline) -> None:
    if not data:
        return
    sock.settimeout(deadline.remaining("sending"))
    try:
        sock.sendall(data)
    except TimeoutError:
        raise AuthTimeout("timed out sending (the peer does not read)") from None
    except ConnectionError as exc:
        raise AuthenticationFailed(f"connection lost while sending: {exc}") from exc


def _send_best_effort(sock: socket.socket, data: bytes) -> None:
    """A FAILURE frame on the way out: never masks the exception being raised."""
    if not data:
        return
    try:
        sock.settimeout(1.0)
        sock.sendall(data)
    except OSError:
        pass


def _drive(sock: socket.socket, ex: Exchange, deadline: _Deadline) -> None:
    try:
        _send(sock, ex.data_to_send(), deadline)
        while not ex.done:
            waiting_for = " or ".join(sorted(t.name for t in ex.expected()))
            n = ex.receive_header(_recv_exact(sock, HEADER_LEN, deadline, waiting_for))
            ex.receive_body(_recv_exact(sock, n, deadline, waiting_for))
            _send(sock, ex.data_to_send(), deadline)
    except AuthenticationFailed:
        _send_best_effort(sock, ex.data_to_send())
        raise


class _SavedTimeout:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def __enter__(self) -> None:
        self._saved = self._sock.gettimeout()

    def __exit__(self, *exc: object) -> None:
        try:
            self._sock.settimeout(self._saved)
        except OSError:
            pass


def _sid_or_tell_peer(sock: socket.socket, sid: bytes | None, scheme: Scheme, peer_waits: bool) -> bytes:
    """Resolve the sid; if there is none and the peer waits for a frame from us, tell it before raising."""
    try:
        return _sid.resolve_sid(sock, sid)
    except NotProtected:
        if peer_waits:
            send_not_protected(sock, scheme)
        raise


# --- password ---------------------------------------------------------------------------------------


def client_password_auth(sock: socket.socket, user: str, password: str | bytes, *, sid: bytes | None = None,
                         expected_realm: str | None = None, policy: KdfPolicy = DEFAULT_KDF_POLICY,
                         timeout: float | None = DEFAULT_TIMEOUT) -> str:
    """Prove knowledge of `password` for `user` over this connection's sid and check the server's proof back.

    Returns the realm the server announced. Raises NotProtected (no sid: nothing sent but a FAILURE),
    ParametersRefused (the server's scrypt parameters or realm fail `policy` / `expected_realm`: no proof sent),
    AuthenticationFailed (wrong password, or a man in the middle: the sids differ).
    """
    sid = _sid_or_tell_peer(sock, sid, Scheme.PASSWORD, peer_waits=True)
    ex = PasswordClient(user, password, sid, policy=policy, expected_realm=expected_realm)
    with _SavedTimeout(sock):
        _drive(sock, ex, _Deadline(timeout))
    assert ex.realm is not None
    return ex.realm


def server_password_auth(sock: socket.socket, lookup_verifier: VerifierLookup, *, sid: bytes | None = None,
                         decoy_realm: str = DEFAULT_REALM, decoy_params: ScryptParams = DEFAULT_SCRYPT,
                         timeout: float | None = DEFAULT_TIMEOUT) -> str:
    """Authenticate a client by password over this connection's sid; returns the user name.

    `lookup_verifier(user)` returns that user's PasswordVerifier (or its string form), or None. Unknown users get
    decoy parameters (`decoy_realm`, `decoy_params`: set them like your verifiers') and fail like a wrong password.
    The server proves back only after the client's proof verified.
    """
    sid = _sid_or_tell_peer(sock, sid, Scheme.PASSWORD, peer_waits=True)
    ex = PasswordServer(lookup_verifier, sid, decoy_realm=decoy_realm, decoy_params=decoy_params)
    with _SavedTimeout(sock):
        _drive(sock, ex, _Deadline(timeout))
    assert ex.user is not None
    return ex.user


# --- signatures -------------------------------------------------------------------------------------


def server_sign_auth(sock: socket.socket, private_key: PrivateKey, *, sid: bytes | None = None,
                     certificate_chain: Sequence[x509.Certificate] | None = None,
                     timeout: float | None = DEFAULT_TIMEOUT) -> bytes:
    """Send SIGNATURE: `private_key`'s signature over this connection's sid (and the chain, leaf first, if given:
    needed by clients that trust a CA bundle). Returns the sid. One message; the server does not wait for an answer.
    """
    sid = _sid_or_tell_peer(sock, sid, Scheme.SIGNATURE, peer_waits=True)
    frame = sign_sid(private_key, sid, certificate_chain=certificate_chain).encode()
    with _SavedTimeout(sock):
        _send(sock, frame, _Deadline(timeout))
    return sid


def server_send_batch_proof(sock: socket.socket, proof: BatchProof, *,
                            timeout: float | None = DEFAULT_TIMEOUT) -> None:
    """Send one client its BATCH_SIGNATURE (from BatchSigner.flush()). The sid was taken when it was added."""
    with _SavedTimeout(sock):
        _send(sock, proof.encode(), _Deadline(timeout))


def send_not_protected(sock: socket.socket, scheme: Scheme) -> None:
    """Tell a peer that waits for our next frame that this connection has no sid, so it fails fast instead of
    timing out; e.g. after session_id_of() raised NotProtected in a server that resolves sids itself (batch)."""
    with _SavedTimeout(sock):
        _send_best_effort(sock, encode_failure(scheme, FailReason.NOT_PROTECTED))


PinnedKey = PublicKey | bytes | str | os.PathLike
CaBundle = Sequence[x509.Certificate] | bytes | str | os.PathLike


def _client_verify(sock: socket.socket, accept: frozenset[MsgType], pinned_key: PinnedKey | None,
                   ca_bundle: CaBundle | None, server_name: str | None, sid: bytes | None,
                   timeout: float | None) -> ServerIdentity:
    trust = ServerTrust(pinned_key=pinned_key, ca_bundle=ca_bundle, server_name=server_name)
    sid = _sid_or_tell_peer(sock, sid, Scheme.SIGNATURE, peer_waits=False)
    ex = SignatureClient(sid, trust, accept=accept)
    with _SavedTimeout(sock):
        _drive(sock, ex, _Deadline(timeout))
    assert ex.identity is not None
    return ex.identity


def client_verify_signature(sock: socket.socket, *, pinned_key: PinnedKey | None = None,
                            ca_bundle: CaBundle | None = None, server_name: str | None = None, sid: bytes | None = None,
                            timeout: float | None = DEFAULT_TIMEOUT, accept_batch: bool = True) -> ServerIdentity:
    """Receive the server's signature over this connection's sid (single, or a batch proof unless
    accept_batch=False) and verify it against `pinned_key`, or `ca_bundle` + `server_name` (exactly one).

    Raises NotProtected, or AuthenticationFailed (wrong key, untrusted chain, another sid: a man in the middle).
    """
    accept = {MsgType.SIGNATURE} | ({MsgType.BATCH_SIGNATURE} if accept_batch else set())
    return _client_verify(sock, frozenset(accept), pinned_key, ca_bundle, server_name, sid, timeout)


def client_verify_batch(sock: socket.socket, *, pinned_key: PinnedKey | None = None, ca_bundle: CaBundle | None = None,
                        server_name: str | None = None, sid: bytes | None = None,
                        timeout: float | None = DEFAULT_TIMEOUT) -> ServerIdentity:
    """Like client_verify_signature, accepting only a BATCH_SIGNATURE (root signature + inclusion proof)."""
    return _client_verify(sock, frozenset({MsgType.BATCH_SIGNATURE}), pinned_key, ca_bundle, server_name, sid,
                          timeout)
