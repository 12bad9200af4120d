"""The per-subflow state machine: one explicit transition table (h11 style).

A subflow is one TCP connection as the kernel sees it: a plain TCP connection, the first subflow of an MPTCP
connection, or an MP_JOIN subflow. `transition` raises IllegalTransition for anything not in the table.

    initiator (sent the SYN)                       responder (received the SYN)
    SYN_SENT_HELLO --PKCONF in SYN-ACK--> INIT1_SENT   HELLO_RCVD --SYN-ACK out--> PKCONF_SENT
    INIT1_SENT --INIT2--> ENCRYPTING                   PKCONF_SENT --INIT1--> ENCRYPTING (INIT2 unconfirmed)
    SYN_SENT_NEXTK1 --NEXTK2--> ENCRYPTING             NEXTK1_RCVD --SYN-ACK out (NEXTK2)--> ENCRYPTING
    SYN_SENT_* --plain SYN-ACK--> PLAIN (or REFUSED under policy `required`)
    any live state --FIN both ways / RST--> CLOSED (keys kept for `closed_linger` so late segments verify)

Everything that decides whether an event is legal lives here (h11's rule): the engine's phase modules ask
`allowed` / the predicates below, and `advance(sf, event)` validates the event and enters the next state BEFORE
the phase performs the updates the event triggers. `advance` is the only code that assigns `Subflow.state`.
"""

from __future__ import annotations

from enum import Enum

from mptcrypt.errors import ProtocolError


class State(Enum):
    SYN_SENT_HELLO = "syn-sent(hello)"
    SYN_SENT_NEXTK1 = "syn-sent(nextk1)"
    INIT1_SENT = "init1-sent"
    HELLO_RCVD = "hello-rcvd"
    PKCONF_SENT = "pkconf-sent"
    NEXTK1_RCVD = "nextk1-rcvd"
    ENCRYPTING = "encrypting"
    PLAIN = "plain"
    REFUSED = "refused"
    FAILED = "failed"
    CLOSED = "closed"


class Ev(Enum):
    SEND_SYN_HELLO = "send SYN+HELLO"
    SEND_SYN_NEXTK1 = "send SYN+NEXTK1"
    RECV_SYN_HELLO = "recv SYN+HELLO"
    RECV_SYN_NEXTK1 = "recv SYN+NEXTK1"
    RECV_SYN_PLAIN = "recv SYN without HELLO (opportunistic)"
    RECV_SYNACK_PKCONF = "recv SYN-ACK+PKCONF"
    RECV_SYNACK_NEXTK2 = "recv SYN-ACK+NEXTK2"
    RECV_SYNACK_PLAIN = "recv plain SYN-ACK"
    SEND_SYNACK_PKCONF = "send SYN-ACK+PKCONF"
    SEND_SYNACK_NEXTK2 = "send SYN-ACK+NEXTK2"
    RECV_INIT1 = "recv INIT1"
    RECV_INIT2 = "recv INIT2"
    REFUSE = "refuse (policy required)"
    GIVE_UP = "handshake retries exhausted"
    CLOSE = "FIN both ways or RST"
    STRIPPED = "segments keep arriving without their MAC (a middlebox strips the option)"


class IllegalTransition(ProtocolError):
    pass


S, E = State, Ev
TRANSITIONS: dict[tuple[State | None, Ev], State] = {
    (None, E.SEND_SYN_HELLO): S.SYN_SENT_HELLO,
    (None, E.SEND_SYN_NEXTK1): S.SYN_SENT_NEXTK1,
    (None, E.RECV_SYN_HELLO): S.HELLO_RCVD,
    (None, E.RECV_SYN_NEXTK1): S.NEXTK1_RCVD,
    (None, E.RECV_SYN_PLAIN): S.PLAIN,
    (None, E.REFUSE): S.REFUSED,
    (None, E.GIVE_UP): S.FAILED,  # a join whose key chain is exhausted
    (S.SYN_SENT_HELLO, E.SEND_SYN_HELLO): S.SYN_SENT_HELLO,  # kernel SYN retransmission
    (S.SYN_SENT_NEXTK1, E.SEND_SYN_NEXTK1): S.SYN_SENT_NEXTK1,
    (S.SYN_SENT_HELLO, E.RECV_SYNACK_PKCONF): S.INIT1_SENT,
    (S.SYN_SENT_NEXTK1, E.RECV_SYNACK_PKCONF): S.INIT1_SENT,  # the peer lost our session: full handshake
    (S.SYN_SENT_NEXTK1, E.RECV_SYNACK_NEXTK2): S.ENCRYPTING,
    (S.SYN_SENT_HELLO, E.RECV_SYNACK_PLAIN): S.PLAIN,
    (S.SYN_SENT_NEXTK1, E.RECV_SYNACK_PLAIN): S.PLAIN,
    (S.SYN_SENT_HELLO, E.REFUSE): S.REFUSED,
    (S.SYN_SENT_NEXTK1, E.REFUSE): S.REFUSED,
    (S.INIT1_SENT, E.RECV_SYNACK_PKCONF): S.INIT1_SENT,  # SYN-ACK retransmission
    (S.INIT1_SENT, E.RECV_INIT2): S.ENCRYPTING,
    (S.INIT1_SENT, E.GIVE_UP): S.FAILED,
    (S.HELLO_RCVD, E.RECV_SYN_HELLO): S.HELLO_RCVD,
    (S.HELLO_RCVD, E.SEND_SYNACK_PKCONF): S.PKCONF_SENT,
    (S.PKCONF_SENT, E.RECV_SYN_HELLO): S.PKCONF_SENT,
    (S.PKCONF_SENT, E.SEND_SYNACK_PKCONF): S.PKCONF_SENT,
    (S.PKCONF_SENT, E.RECV_INIT1): S.ENCRYPTING,
    (S.NEXTK1_RCVD, E.RECV_SYN_NEXTK1): S.NEXTK1_RCVD,
    (S.NEXTK1_RCVD, E.SEND_SYNACK_NEXTK2): S.ENCRYPTING,
    (S.ENCRYPTING, E.SEND_SYNACK_NEXTK2): S.ENCRYPTING,  # SYN-ACK retransmission
    (S.ENCRYPTING, E.SEND_SYNACK_PKCONF): S.ENCRYPTING,
    (S.ENCRYPTING, E.RECV_INIT1): S.ENCRYPTING,  # duplicate INIT1: INIT2 is sent again
    (S.ENCRYPTING, E.CLOSE): S.CLOSED,
    (S.ENCRYPTING, E.GIVE_UP): S.FAILED,  # responder: INIT2 never confirmed by a MAC'd segment
    (S.ENCRYPTING, E.STRIPPED): S.FAILED,  # core/stripped.py: reset, protection cannot continue nor fall back
    (S.PLAIN, E.CLOSE): S.CLOSED,
    (S.CLOSED, E.CLOSE): S.CLOSED,
}
LIVE = (S.SYN_SENT_HELLO, S.SYN_SENT_NEXTK1, S.INIT1_SENT, S.HELLO_RCVD, S.PKCONF_SENT, S.NEXTK1_RCVD)
for _s in LIVE:
    TRANSITIONS[(_s, E.CLOSE)] = S.CLOSED
    TRANSITIONS[(_s, E.GIVE_UP)] = S.FAILED


# --- legality predicates (the engine never tests state membership itself) ---------------------------------
# flows a SYN with a new ISN must not replace: everything but closed, failed, refused and plain flows
LIVE_STATES = frozenset(LIVE + (S.ENCRYPTING,))
# before keys exist: the local kernel's segments are held, not sent
KEYING = frozenset((S.INIT1_SENT, S.PKCONF_SENT, S.HELLO_RCVD, S.NEXTK1_RCVD, S.SYN_SENT_HELLO, S.SYN_SENT_NEXTK1))
SYN_SENT = frozenset((S.SYN_SENT_HELLO, S.SYN_SENT_NEXTK1))
DEAD = frozenset((S.REFUSED, S.FAILED))  # every segment dropped until the flow is reclaimed
# states whose keys protect segments (CLOSED keeps them for late segments)
SYNACK_IGNORED = frozenset((S.PLAIN, S.REFUSED, S.FAILED, S.CLOSED))
AWAITING_SYNACK = frozenset((S.ENCRYPTING, S.INIT1_SENT))  # a second SYN-ACK is a retransmission or forged
CLOSABLE = frozenset((S.ENCRYPTING, S.PLAIN))  # FIN both ways / RST moves these to CLOSED


class SynVerdict(Enum):
    NEW = "a new connection on this 4-tuple"
    RETRANSMISSION = "the peer kernel's SYN again"
    DROP = "a replayed or forged SYN on a live or keyed flow"


# a responder state, and the offer its SYN carried: only that offer with that ISN is a retransmission
_SYN_RETRANSMIT = {S.HELLO_RCVD: E.RECV_SYN_HELLO, S.PKCONF_SENT: E.RECV_SYN_HELLO, S.NEXTK1_RCVD: E.RECV_SYN_NEXTK1}


def judge_inbound_syn(sf, seq: int, offer: Ev | None) -> SynVerdict:
    """A SYN arrives for the 4-tuple of an existing flow. `offer` is what its mptcrypt option announces
    (RECV_SYN_HELLO, RECV_SYN_NEXTK1, or None without one).

    Once protected, protected or dead (PROTOCOL.md invariant 6): a flow that is keying or keyed is never replaced.
    A new ISN on it is an attacker's (no peer opens a second connection on a live 4-tuple); the same ISN is a
    replay (issue 12 item 1: the original SYN with HELLO removed used to replace the keyed flow with a plain one)
    unless the flow is a responder still before keys and the SYN makes the same offer. A keyed flow that closed
    may be replaced by a new ISN (port reuse), never by its own SYN again."""
    keyed = sf.tx is not None
    if sf.state not in LIVE_STATES and not keyed:
        return SynVerdict.NEW  # plain, refused, failed, or closed without keys
    if seq != sf.isn_remote:
        return SynVerdict.NEW if sf.state is S.CLOSED else SynVerdict.DROP
    if not sf.initiator and offer is not None and _SYN_RETRANSMIT.get(sf.state) is offer:
        return SynVerdict.RETRANSMISSION
    return SynVerdict.DROP


def allowed(state: State | None, event: Ev) -> bool:
    return (state, event) in TRANSITIONS


def advance(sf, event: Ev) -> State:
    """Validate `event` in `sf`'s state and enter the next state (IllegalTransition otherwise)."""
    sf.state = transition(sf.state, event)
    return sf.state


def restore(sf, st: State) -> None:
    """A subflow handed over by a predecessor daemon (core/handover.py) resumes in the state it had there."""
    sf.state = st


def synack_event(sf) -> Ev | None:
    """What the responder's SYN-ACK announces in `sf`'s state: PKCONF (full handshake, or its retransmission),
    NEXTK2 (join or resumption, or its retransmission), or None (leave it alone)."""
    st = sf.state
    if st in (S.HELLO_RCVD, S.PKCONF_SENT) or (st is S.ENCRYPTING and not sf.resumed and not sf.join):
        return E.SEND_SYNACK_PKCONF
    if st in (S.NEXTK1_RCVD, S.ENCRYPTING):
        return E.SEND_SYNACK_NEXTK2
    return None


def transition(state: State | None, event: Ev) -> State:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"{event.value} is not allowed in state {state.value if state else 'new'}") from None
