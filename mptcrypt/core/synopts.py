"""What the daemons do to SYN and SYN-ACK options (docs/option-budget.md), as Results."""

from __future__ import annotations

from mptcrypt.constants import TCPOPT_EXP, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP
from mptcrypt.core.events import Result, Verdict
from mptcrypt.core.table import Table
from mptcrypt.wire import rewrite
from mptcrypt.wire.segment import Segment


def rewritten(t: Table, seg: Segment, add: bytes = b"", strip=(), clamp: bool = False) -> Result:
    """ACCEPT with `seg`'s options rewritten (`wire.rewrite.with_options`); an option that did not fit is counted."""
    packet, overflow = rewrite.with_options(seg, add=add, strip=strip, clamp=clamp)
    if overflow:
        t.counters["option_overflow"] += 1
    return Result(Verdict.ACCEPT, packet)


def clean_syn(t: Table, seg: Segment, keep_sack: bool = True) -> Result:
    """Inbound SYN or SYN-ACK for our kernel: no timestamps (their 12 bytes go to the MAC), no mptcrypt
    option, MSS clamped. SACK-permitted stays (loss recovery; the data path trims SACK blocks to fit the MAC)
    except on joins, whose SYN-ACK has no room for it beside MP_JOIN and NEXTK2 (docs/option-budget.md)."""
    strip = (TCPOPT_TIMESTAMP, TCPOPT_EXP) if keep_sack else (TCPOPT_TIMESTAMP, TCPOPT_EXP, TCPOPT_SACK_PERM)
    return rewritten(t, seg, strip=strip, clamp=True)
