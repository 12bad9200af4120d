"""The compact form of a kernel segment's option area, so that the MAC option fits beside TCP timestamps.

With timestamps negotiated, Linux fills a data segment's 40 option bytes: NOP NOP TS(10) and a 28-byte DSS
(8-byte data ACK, 8-byte DSN, subflow seq, length, 2 NOPs). The same information fits in 28 bytes: options need no
alignment (RFC 9293 §3.1) and RFC 8684 §3.3 lets a sender write the data ACK and the DSN in 4 bytes, the receiver
expanding them against its own 64-bit state (Linux: `mptcp_expand_seq` around the connection's ack_seq / snd_una,
nearest value, so any mapping within 2^31 of the data-level window expands right). That leaves 12 bytes: the MAC.

`compact_option_area` is what `crypto/segment` seal does before giving up for lack of room (the compiled path's
`compact_options` in _segment.c does the same bytes; docs/protocol.md §5). Nothing else is changed: an option
this cannot walk leaves the area as it was.
"""

from __future__ import annotations

from mptcrypt.constants import TCPOPT_EOL, TCPOPT_MPTCP, TCPOPT_NOP
from mptcrypt.wire.mptcp import (MPTCP_DSS_ACK64, MPTCP_DSS_DSN64, MPTCP_DSS_HAS_ACK, MPTCP_DSS_HAS_MAP,
                                 TCPOLEN_MPTCP_DSS_BASE, Subtype)

_MAP_REST = 6  # subflow seq 4 + data-level length 2, after the DSN
_CSUM_LEN = 2


def dss_short_form(opt: bytes) -> bytes:
    """A DSS option (kind, length and body) with an 8-byte data ACK and an 8-byte DSN written in 4 bytes (their
    low 32 bits, flags `a` / `m` cleared); any other DSS, or one whose length does not match its flags, as given."""
    flags = opt[3]
    ack_len = (8 if flags & MPTCP_DSS_ACK64 else 4) if flags & MPTCP_DSS_HAS_ACK else 0
    dsn_len = (8 if flags & MPTCP_DSS_DSN64 else 4) if flags & MPTCP_DSS_HAS_MAP else 0
    expected = TCPOLEN_MPTCP_DSS_BASE + ack_len + (dsn_len + _MAP_REST if dsn_len else 0)
    if 8 not in (ack_len, dsn_len) or not (len(opt) == expected or (dsn_len and len(opt) == expected + _CSUM_LEN)):
        return opt
    out = bytearray(opt[:TCPOLEN_MPTCP_DSS_BASE])
    i = TCPOLEN_MPTCP_DSS_BASE
    if ack_len:
        out += opt[i + ack_len - 4:i + ack_len]
        i += ack_len
    if dsn_len:
        out += opt[i + dsn_len - 4:i + dsn_len]
        i += dsn_len
    out += opt[i:]
    out[1] = len(out)
    out[3] = flags & ~((MPTCP_DSS_ACK64 if ack_len else 0) | (MPTCP_DSS_DSN64 if dsn_len else 0))
    return bytes(out)


def compact_option_area(raw: bytes) -> bytes:
    """`raw` without NOPs (and without an EOL and what follows it), every DSS in its short form, NOPs appended up
    to a multiple of 4 bytes; `raw` itself when an option's length is below 2 or runs past the end."""
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        kind = raw[i]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if i + 2 > n or raw[i + 1] < 2 or i + raw[i + 1] > n:
            return raw
        size = raw[i + 1]
        opt = raw[i:i + size]
        if kind == TCPOPT_MPTCP and size >= TCPOLEN_MPTCP_DSS_BASE and opt[2] >> 4 == Subtype.DSS:
            opt = dss_short_form(opt)
        out += opt
        i += size
    out += bytes((TCPOPT_NOP,)) * (-len(out) % 4)
    return bytes(out)
