"""A middlebox that strips mptcrypt's option (kind 253) from a protected connection's segments (issue 13 item 2).

Once keys exist, the kernels have agreed on things plain TCP cannot undo (the MSS lowered for the MAC option, the
compact option form) and the payload on the wire is ciphertext: falling back to plain is impossible, and dropping every
segment that lost its MAC hangs the connection until the application gives up. So, like MPTCP's MP_FAIL turning
into a reset when a subflow cannot fall back (RFC 8684 §3.7), the flow is reset, with a reason in `sessions`:

- STRIP_LIMIT consecutive inbound segments without a MAC option, each in sequence (its seq within WINDOW of what
  we verified last, its ack not beyond what we sent: a blind attacker must guess both), move the flow to FAILED.
  Any verified segment starts the count again (`datapath.unprotect`).
- Our kernel gets a RST at its rcv_nxt; the peer gets a protected RST (it arrives whole when only the other
  direction is stripped).
- A flow failed this way answers each further segment of the peer with a protected RST: when both directions are
  stripped, those arrive MAC-less and the peer's daemon counts them and resets its side too.
"""

from __future__ import annotations

from mptcrypt.core import datapath, state
from mptcrypt.core.events import DROP, Result, Verdict
from mptcrypt.core.session import Subflow
from mptcrypt.core.state import Ev
from mptcrypt.core.table import Table
from mptcrypt.wire.rewrite import rst_to_local, rst_to_peer
from mptcrypt.errors import DecodeError
from mptcrypt.wire.segment import Segment, parse_segment
from mptcrypt.wire.tcp import ACK, RST

STRIP_LIMIT = 4  # consecutive in-sequence MAC-less segments that prove a stripping middlebox
WINDOW = 1 << 24  # how far from the last verified byte a MAC-less segment may start and still count
REASON = "middlebox strips mptcrypt options"


def count(t: Table, sf: Subflow, seg: Segment, now: float) -> Result | None:
    """An inbound segment without a MAC on an encrypting flow (not an INIT): None to drop it as usual, or the
    reset once STRIP_LIMIT in a row arrived."""
    if not _in_sequence(sf, seg):  # RSTs count too: the peer's reset, stripped, is how both sides end
        return None
    sf.unmacked += 1
    if sf.unmacked < STRIP_LIMIT or not state.allowed(sf.state, Ev.STRIPPED):
        return None
    state.advance(sf, Ev.STRIPPED)
    sf.plain_reason = REASON
    t.counters["stripped_resets"] += 1
    t.event("stripped", sf.key, f"{sf.unmacked} segments in a row without a MAC: connection reset")
    return Result(Verdict.DROP, inject=[rst_to_local(sf.key, sf.in_ref, seg.ack), _protected_rst(t, sf, now)])


def answer(t: Table, sf: Subflow, seg: Segment, now: float) -> Result:
    """A segment of the peer on a flow reset by `count`: dropped, answered with a protected RST."""
    if seg.flags & RST:
        return DROP
    return Result(Verdict.DROP, inject=[_protected_rst(t, sf, now)])


def stripped(sf: Subflow) -> bool:
    return sf.plain_reason == REASON


def _in_sequence(sf: Subflow, seg: Segment) -> bool:
    if not seg.flags & ACK:
        return False
    try:
        ext_seq, ext_ack = datapath.extended(seg, sf.in_ref, sf.out_ref)
    except DecodeError:  # before the ISN: not the peer's
        return False
    return ext_ack <= sf.out_ref and abs(ext_seq - sf.in_ref) <= WINDOW


def _protected_rst(t: Table, sf: Subflow, now: float) -> bytes:
    rst = parse_segment(rst_to_peer(sf.key, sf.out_ref, sf.in_ref))
    return datapath.protect(t, sf, rst, now).packet
