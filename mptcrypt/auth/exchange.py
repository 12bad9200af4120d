"""The sans-IO base of every exchange: frames in, frames out, an explicit state table, no sockets, no clocks.

An edge (mptcrypt.auth.sockets for blocking sockets, or an asyncio adapter) drives an exchange like this:

    out = ex.data_to_send()                       # frames the exchange wants sent now (may be empty)
    while not ex.done:
        n = ex.receive_header(read_exactly(4))    # checks type, scheme and length bounds: raises early
        ex.receive_body(read_exactly(n))          # may queue frames; raises AuthenticationFailed on failure
        send(ex.data_to_send())

On failure the exchange queues a FAILURE frame only if the peer is waiting for a frame from us (so that it fails
fast instead of timing out); the edge should send data_to_send() once more before raising, then the application
closes the connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

from mptcrypt.auth.errors import AuthenticationFailed, ParametersRefused, PeerRejected, ProtocolViolation
from mptcrypt.auth.wire import (
    FAIL_TEXT,
    HEADER_LEN,
    FailReason,
    Header,
    MsgType,
    Scheme,
    encode_failure,
    parse_failure,
    parse_header,
)


class Exchange:
    """Base of the per-role exchanges. Subclasses define State (with DONE and FAILED members), the tables
    EXPECT (state -> message types accepted) and PEER_WAITS (states in which the peer waits for our next frame),
    SCHEME, and _handle(msg_type, body)."""

    State: type[Enum]
    EXPECT: dict
    PEER_WAITS: frozenset
    SCHEME: Scheme

    def __init__(self, state: Enum) -> None:
        self.state = state
        self._out = bytearray()
        self._header: Header | None = None

    # --- what the edge calls ------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.state is self.State.DONE

    def expected(self) -> frozenset[MsgType]:
        return self.EXPECT.get(self.state, frozenset())

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_header(self, data: bytes) -> int:
        """Check the next 4-byte header; return how many body bytes to read next."""
        if self._header is not None:
            raise RuntimeError("receive_body() must follow receive_header()")
        with self._failing():
            if self.state is self.State.FAILED:
                raise ProtocolViolation("the exchange already failed")
            self._header = parse_header(data, self.expected())
        return self._header.length

    def receive_body(self, body: bytes) -> None:
        header, self._header = self._header, None
        if header is None:
            raise RuntimeError("receive_header() must come first")
        with self._failing():
            if len(body) != header.length:
                raise ProtocolViolation(f"{header.type.name} body of {len(body)} bytes, header said {header.length}")
            if header.type is MsgType.FAILURE:
                reason = parse_failure(body)
                text = FAIL_TEXT.get(reason, f"the peer failed with reason 0x{reason:02x}")
                raise PeerRejected(text, reason)
            self._handle(header.type, bytes(body))

    def receive_frame(self, frame: bytes) -> None:
        """One whole frame (header and body) at once: for tests and message-oriented transports."""
        n = self.receive_header(frame[:HEADER_LEN])
        if len(frame) - HEADER_LEN != n:
            self._header = None
            with self._failing():
                raise ProtocolViolation(f"frame of {len(frame)} bytes, header says body of {n}")
        self.receive_body(frame[HEADER_LEN:])

    # --- for subclasses ---------------------------------------------------------------------------
    def _handle(self, msg_type: MsgType, body: bytes) -> None:
        raise NotImplementedError

    def _send(self, frame: bytes) -> None:
        self._out += frame

    @contextmanager
    def _failing(self) -> Iterator[None]:
        try:
            yield
        except AuthenticationFailed as exc:
            if self.state in self.PEER_WAITS and not isinstance(exc, PeerRejected):
                self._send(encode_failure(self.SCHEME, _reason_for(exc)))
            self.state = self.State.FAILED
            raise


def _reason_for(exc: AuthenticationFailed) -> FailReason:
    if isinstance(exc, ProtocolViolation):
        return FailReason.PROTOCOL
    if isinstance(exc, ParametersRefused):
        return FailReason.POLICY
    return FailReason.AUTH_FAILED
