"""What the daemons do to SYN and SYN-ACK options (docs/option-budget.md), as Results."""

from __future__ import annotations

from mptcrypt.constants import TCPOPT_EXP, TCPOPT_TIMESTAMP
from mptcrypt.core.events import Result, Verdict
from mptcrypt.core.table import Table
from mptcrypt.wire import rewrite
from mptcrypt.wire.segment import Segment


def rewritten(t: Table, seg: Segment, add: bytes = b"", strip=(), clamp: bool = False) -> Result:
    """ACCEPT with the options of `seg`, a SYN or SYN-ACK of a connection we protect, rewritten
    (`wire.rewrite.with_options`); an option that did not fit is counted.

    SYN data (TCP Fast Open, RFC 7413) is removed: before keys exist it could only travel in clear, even under
    `required` (issue 12 item 8). The sender's kernel sees its data unacknowledged by the SYN-ACK and sends it
    again after the handshake, protected (RFC 7413 §4.2)."""
    keep = seg.payload_len == 0
    if not keep:
        t.counters["syn_data_removed"] += 1
    packet, overflow = rewrite.with_options(seg, add=add, strip=strip, clamp=clamp, keep_payload=keep)
    if overflow:
        t.counters["option_overflow"] += 1
    return Result(Verdict.ACCEPT, packet)


def clean_syn(t: Table, seg: Segment) -> Result:
    """Inbound SYN or SYN-ACK for our kernel: no timestamps (their 12 bytes go to the MAC), no mptcrypt
    option, MSS clamped. SACK-permitted stays, on joins too (loss recovery after a handover; the data path trims
    SACK blocks to fit the MAC, docs/option-budget.md)."""
    return rewritten(t, seg, strip=(TCPOPT_TIMESTAMP, TCPOPT_EXP), clamp=True)
