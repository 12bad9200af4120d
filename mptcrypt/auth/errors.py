"""Exceptions of mptcrypt.auth. Each message says what failed and what it may mean (often: a man in the middle)."""

from __future__ import annotations

from mptcrypt.errors import MptcryptError


class AuthenticationFailed(MptcryptError):
    """The peer did not prove what it had to: wrong password, bad signature, different session IDs (a man in the
    middle), a garbled or unexpected message, a timeout. The application must not trust the connection: close it."""


class ProtocolViolation(AuthenticationFailed):
    """The peer's bytes are not the message this exchange expects: unknown type, wrong scheme, bad length,
    truncated or trailing bytes. Either the peer does not speak mptcrypt.auth or something rewrote the stream."""


class PeerRejected(AuthenticationFailed):
    """The peer sent a FAILURE message: it rejected our proof, our parameters, or has no mptcrypt session."""

    def __init__(self, message: str, reason: int) -> None:
        super().__init__(message)
        self.reason = reason


class ParametersRefused(AuthenticationFailed):
    """The server proposed password parameters the client's policy refuses: a KDF too cheap or too costly, or an
    unexpected realm. Raised before the client proves anything; a man in the middle may be trying to make offline
    guessing cheap."""


class AuthTimeout(AuthenticationFailed):
    """The peer did not send the next message before the deadline."""


class NotProtected(MptcryptError):
    """This socket's connection has no mptcrypt session (no session ID), so nothing can be authenticated on it.

    Raised instead of ever "succeeding" on an unprotected connection. Check that the mptcrypt daemon runs on this
    host and on the peer, and that the policy covers this port (`mptcrypt sessions` lists protected connections).
    """
