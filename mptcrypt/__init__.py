"""mptcrypt: opportunistic tcpcrypt-style encryption for TCP and MPTCP.

Applications: ``mptcrypt.session_id(sock)`` returns the session ID of a protected connection (equal at both ends
iff there is no man in the middle), or None; ``mptcrypt.auth`` builds authentication on it.
"""

__version__ = "0.1.0"
__all__ = ["session_id", "__version__"]


def session_id(sock, **kwargs):
    """The mptcrypt session ID (bytes) of a connected TCP/MPTCP socket, None if unprotected (see mptcrypt.api)."""
    from mptcrypt.api import session_id as _session_id

    return _session_id(sock, **kwargs)
