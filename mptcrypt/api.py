"""Python API for applications: the session ID of a connection, and the daemon's tables.

    import socket, mptcrypt.api
    sock = socket.create_connection(("10.0.0.2", 443))
    sid = mptcrypt.api.session_id(sock)     # bytes (equal on both ends) or None if the connection is not protected

Each call asks the daemon of the network namespace the calling process runs in, over its control socket; it raises
mptcrypt.errors.DaemonNotRunning when no daemon answers there. Works for TCP and MPTCP sockets (an MPTCP socket's
addresses are those of its first subflow, which the daemon maps to the connection's session).
"""

from __future__ import annotations

import ipaddress
import socket

from mptcrypt.daemon.control import ControlClient

IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)  # Python < 3.10 lacks the name

__all__ = ["session_id", "session_id_for", "sessions", "stats"]


def _endpoint(addr) -> tuple[str, int]:
    """A getsockname()/getpeername() result -> (address, port); IPv4-mapped IPv6 written as IPv4, no scope."""
    host, port = addr[0], addr[1]
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(port)


def session_id(sock: socket.socket, *, timeout: float = 5.0, control: str | None = None) -> bytes | None:
    """The mptcrypt session ID of a connected TCP or MPTCP socket, None if the daemon does not protect it.

    Raises TypeError for anything but a TCP/MPTCP socket.socket (a UDP or Unix socket, a file descriptor), OSError
    (ENOTCONN) for an unconnected one, DaemonNotRunning when no daemon runs in this network namespace."""
    if not isinstance(sock, socket.socket):
        hint = "; wrap a file descriptor with socket.socket(fileno=fd)" if isinstance(sock, int) else ""
        raise TypeError(f"session_id() needs a connected TCP or MPTCP socket.socket, not {type(sock).__name__}{hint}")
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM \
            or sock.proto not in (0, socket.IPPROTO_TCP, IPPROTO_MPTCP):
        raise TypeError(
            f"session_id() needs a TCP or MPTCP socket (AF_INET/AF_INET6, SOCK_STREAM), not {sock.family.name}/"
            f"{sock.type.name} protocol {sock.proto}"
        )
    remote = sock.getpeername()  # raises OSError(ENOTCONN) first, the clearest error for an unconnected socket
    return session_id_for(_endpoint(sock.getsockname()), _endpoint(remote), timeout=timeout, control=control)


def session_id_for(
    local: tuple[str, int], remote: tuple[str, int], *, timeout: float = 5.0, control: str | None = None
) -> bytes | None:
    """The session ID of the connection between `local` and `remote` ((address, port) pairs, as seen here)."""
    return ControlClient(control, timeout).sid(_endpoint(local), _endpoint(remote))


def sessions(*, timeout: float = 5.0, control: str | None = None) -> list[dict]:
    """The rows of `mptcrypt sessions --json`."""
    return ControlClient(control, timeout).sessions()


def stats(*, timeout: float = 5.0, control: str | None = None) -> dict[str, int]:
    """The counters of `mptcrypt stats --json`: the engine's, and the packet path's (prefixed `nfq_`)."""
    return ControlClient(control, timeout).stats()
