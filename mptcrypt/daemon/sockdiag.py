"""Ask the kernel which TCP sockets it still has (sock_diag, through pyroute2's DiagSocket), so that the engine
never reclaims an idle protected connection whose socket is alive (issue 12 item 3)."""

from __future__ import annotations

import logging
import socket

log = logging.getLogger("mptcrypt.daemon")

TCP_LISTEN = 10  # include/net/tcp_states.h


def sockets_alive(keys) -> set:
    """The subset of flow keys (local addr bytes, local port, remote addr bytes, remote port) that name a TCP
    socket of this network namespace. On an error nothing is reclaimed: every key counts as alive."""
    keys = list(keys)
    try:
        from pyroute2 import DiagSocket

        have = set()
        with DiagSocket() as diag:
            diag.bind()
            for family in (socket.AF_INET, socket.AF_INET6):
                for msg in diag.get_sock_stats(family=family):
                    if msg.get("idiag_state") == TCP_LISTEN:
                        continue
                    have.add((socket.inet_pton(family, msg["idiag_src"]), msg["idiag_sport"],
                              socket.inet_pton(family, msg["idiag_dst"]), msg["idiag_dport"]))
    except Exception as exc:  # never reclaim on a failed query: an idle flow costs memory, a reset costs a session
        log.warning("sock_diag query failed (%s); idle connections kept", exc)
        return set(keys)
    return {k for k in keys if k in have}
