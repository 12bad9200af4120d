"""MPTCP bookkeeping: which MP_CAPABLE keys (hence tokens) belong to which protected connection.

Every read goes through `Segment.mptcp()` (`wire/mptcp.parse_mptcp`, Linux `options.c` length checks); tokens
are `wire/mptcp.mptcp_token` ints, the same as MP_JOIN carries them.
"""

from __future__ import annotations

from mptcrypt.core.session import Connection, Subflow
from mptcrypt.core.table import Table
from mptcrypt.errors import DecodeError
from mptcrypt.wire.mptcp import Has, Subtype, mptcp_token
from mptcrypt.wire.segment import Segment


def capable(seg: Segment):
    return seg.mptcp_option(Subtype.MP_CAPABLE)


def remember_syn_key(sf: Subflow, seg: Segment, local: bool) -> None:
    """The SYN-ACK's MP_CAPABLE carries the responder's key (RFC 8684 §3.1)."""
    mp = capable(seg)
    if mp is None or mp.present & (Has.SNDR_KEY | Has.RCVR_KEY) != Has.SNDR_KEY:
        return
    sf.mptcp = True
    sf.hs.mptcp_keys["local" if local else "remote"] = mp.sndr_key


def learn_keys(t: Table, conn: Connection, seg: Segment, outbound: bool) -> None:
    """The third ACK (and first data) carries both MP_CAPABLE keys: sender's then receiver's."""
    try:
        mp = capable(seg)
    except DecodeError:  # an option area that does not parse carries no keys
        return
    if mp is None or not mp.present & Has.RCVR_KEY:
        return
    conn.keys["local" if outbound else "remote"] = mp.sndr_key
    conn.keys["remote" if outbound else "local"] = mp.rcvr_key
    conn.mptcp = True
    for k in (mp.sndr_key, mp.rcvr_key):
        t.add_token(conn, mptcp_token(k))
