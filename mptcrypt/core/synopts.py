"""What the daemons do to SYN and SYN-ACK options (docs/option-budget.md), as Results."""

from __future__ import annotations

from mptcrypt.constants import TCPOPT_EXP, TCPOPT_TIMESTAMP
from mptcrypt.core.events import Result, Verdict
from mptcrypt.core.table import Table
from mptcrypt.wire import rewrite
from mptcrypt.wire.segment import Segment
from mptcrypt.wire.tcp import TCPOLEN_TIMESTAMP, find_option, option_value, timestamp_option


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


def clean_syn(t: Table, seg: Segment, restore_ts: tuple[int, int] | None = None) -> Result:
    """Inbound SYN or SYN-ACK for our kernel: no mptcrypt option, MSS clamped, timestamps kept (with them the
    compact option form leaves the MAC its room, docs/option-budget.md). SACK-permitted stays, on joins too.

    `restore_ts` (tsval, tsecr) gives the kernel a timestamps option when the segment has none: a join's SYN and
    SYN-ACK have no room for one beside NEXTK1 / NEXTK2, so the sender's daemon removed it, and the receiving
    daemon puts one back for its kernel (docs/protocol.md §7). Its tsval is 0,
    which RFC 7323 implementations take as "no timestamp yet" (Linux `tcp_paws_check`): the peer kernel's first
    real tsval then passes PAWS whatever its value."""
    add = b""
    if restore_ts is not None and kernel_tsval(seg) is None:
        add = timestamp_option(*restore_ts).encode()
    return rewritten(t, seg, add=add, strip=(TCPOPT_EXP,), clamp=True)


def kernel_tsval(seg: Segment) -> int | None:
    """The tsval of the segment's timestamps option, None without one."""
    opt = find_option(seg.tcp_options(), TCPOPT_TIMESTAMP)
    return option_value(opt)[0] if opt is not None and opt.size == TCPOLEN_TIMESTAMP else None
