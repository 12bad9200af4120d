"""MPTCP bookkeeping: which MP_CAPABLE keys (hence tokens) belong to which protected connection.

Every read goes through `Segment.mptcp()` (`wire/mptcp.parse_mptcp`, Linux `options.c` length checks); tokens
are `wire/mptcp.mptcp_token` ints, the same as MP_JOIN carries them.
"""

from __future__ import annotations

from mptcrypt.core.session import Subflow
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


def learn_keys(t: Table, sf: Subflow, seg: Segment, outbound: bool) -> None:
    """The third ACK (and first data) carries both MP_CAPABLE keys: sender's then receiver's.

    A token maps only to the connection whose keys our own kernel sent or received on this subflow (issue 12
    item 2): inbound, the receiver's key must be the one our kernel put in its SYN-ACK, and a token already
    mapped to another connection is never re-pointed. Otherwise an attacker's own (verified) third ACK naming a
    victim's key would lead the victim's joins to the attacker's session."""
    try:
        mp = capable(seg)
    except DecodeError:  # an option area that does not parse carries no keys
        return
    if mp is None or not mp.present & Has.RCVR_KEY:
        return
    conn = sf.conn
    ours, theirs = (mp.sndr_key, mp.rcvr_key) if outbound else (mp.rcvr_key, mp.sndr_key)
    if outbound and sf.hs.mptcp_keys.get("remote") != theirs:
        # not what our kernel answers the SYN-ACK with (a segment a local raw socket wrote): nothing learned, so
        # the kernel's own third ACK or first data still teaches the keys
        t.count_rare("token_collisions_refused", "token-refused", sf.key,
                     "outbound MP_CAPABLE names a receiver key the SYN-ACK did not carry; no token registered")
        return
    conn.keys["local"], conn.keys["remote"] = ours, theirs  # (learned once, registered or not)
    conn.mptcp = True
    if not outbound and sf.hs.mptcp_keys.get("local") != ours:
        t.count_rare("token_collisions_refused", "token-refused", sf.key,
                     "third ACK names a receiver key our kernel did not send; no token registered")
        return
    for k in (ours, theirs):
        t.add_token(conn, mptcp_token(k), sf.key)
