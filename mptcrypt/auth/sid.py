"""Where a session ID comes from: given by the caller, or asked of the local daemon through mptcrypt.api."""

from __future__ import annotations

import socket

from mptcrypt.auth.errors import NotProtected
from mptcrypt.auth.wire import SID_LEN
from mptcrypt.errors import DaemonNotRunning


def _peer(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername())
    except OSError:
        return "this socket"


def session_id_of(sock: socket.socket) -> bytes:
    """The socket's mptcrypt session ID, or NotProtected. mptcrypt.api is imported here, lazily, so this package
    imports (and runs with explicit sids) even where the API module or the daemon is absent."""
    try:
        from mptcrypt import api
    except ModuleNotFoundError as exc:
        if exc.name not in ("mptcrypt.api", "mptcrypt"):
            raise
        raise NotProtected("mptcrypt.api is not available, so no session ID can be read: nothing to authenticate "
                           "on") from exc
    try:
        sid = api.session_id(sock)
    except DaemonNotRunning as exc:
        raise NotProtected(f"no mptcrypt daemon answers on this host ({exc}): the connection to {_peer(sock)} is "
                           "not protected") from exc
    if sid is None:
        raise NotProtected(f"the connection to {_peer(sock)} is not protected by mptcrypt (no session ID): is the "
                           "daemon running on both hosts, and does the policy cover this port?")
    return check_sid(sid)


def check_sid(sid: bytes | bytearray | memoryview) -> bytes:
    if not isinstance(sid, bytes | bytearray | memoryview):
        raise TypeError(f"a session ID is bytes, not {type(sid).__name__}")
    sid = bytes(sid)
    if len(sid) != SID_LEN:
        raise ValueError(f"a session ID is {SID_LEN} bytes, got {len(sid)}")
    return sid


def resolve_sid(sock: socket.socket, sid: bytes | None) -> bytes:
    """`sid` if given (tests, or a caller that already asked the daemon), else the daemon's answer for `sock`."""
    return session_id_of(sock) if sid is None else check_sid(sid)
