"""NEXTK1 / NEXTK2: MP_JOIN subflows and resumed connections, keyed from ss[i] without public-key operations.

A join's SYN carries NEXTK1(index, proof) and the answer NEXTK2(proof); a resumed connection's SYN carries
NEXTK1(resume id, proof). docs/protocol.md §6 and §7 are the specification. Every function takes the table and
returns a Result; nothing here calls back into the engine (held join SYNs are released by `release_joins`).
"""

from __future__ import annotations

import hmac

from mptcrypt.core import mptcp, state
from mptcrypt.core.config import Policy
from mptcrypt.core.events import ACCEPT, DROP, Result, Verdict
from mptcrypt.core.session import Connection, Session, Subflow
from mptcrypt.core.state import Ev
from mptcrypt.core.synopts import clean_syn, kernel_tsval, rewritten
from mptcrypt.core.table import Table
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.wire import messages as m
from mptcrypt.wire.mptcp import MptcpOption, encode_mptcp
from mptcrypt.wire.segment import Segment, parse_segment


# the timestamps option a responder's daemon gives its kernel in a join SYN that arrived without one:
# tsval 0 (Linux takes a zero ts_recent as "none yet", so the initiator's first real tsval passes PAWS), tsecr 0
RESTORED_SYN_TS = (0, 0)


def restored_syn_ts(sf: Subflow) -> tuple[int, int] | None:
    """The timestamps option the responder's daemon restores in a join's SYN, its kernel's retransmissions
    included (the kernel may have dropped the first copy: a full SYN or accept queue); None for any other SYN
    (a resumed connection's: docs/protocol.md §6; the others cross with their own timestamps)."""
    return RESTORED_SYN_TS if sf.join else None


def restored_synack_ts(sf: Subflow) -> tuple[int, int] | None:
    """(0, our kernel's latest SYN tsval) for a join's SYN-ACK, retransmissions included (the kernel may still be
    in SYN-SENT); None when our kernel offered no timestamps, or for any other SYN-ACK."""
    tsval = sf.hs.syn_tsval
    return (0, tsval) if sf.join and tsval is not None else None


# --- what the proofs bind (docs/protocol.md §6, §7; crypto/keyschedule.nextk*_context) ---------------------------
def mp_join_bytes(mpj: MptcpOption | None) -> bytes:
    """The whole MP_JOIN option as on the wire (what the proofs bind; b"" when the segment has none)."""
    return encode_mptcp(mpj) if mpj is not None else b""


# --- joins -------------------------------------------------------------------------------------------------
def send_join_syn(t: Table, sf: Subflow | None, key, seg: Segment, mpj: MptcpOption, now: float) -> Result:
    """Our kernel opens a join: NEXTK1 for the next index of our parity, if the token is a connection we protect."""
    conn = t.tokens.get(mpj.token)
    if conn is None:
        first = t.pending_joins.get(mpj.token)
        if first is not None and state.allowed(first.state, Ev.RECV_INIT2):
            # Linux may open the join before our INIT2 arrived: hold it, it leaves with NEXTK1 once the
            # session exists (sent now it would be refused by the peer daemon for lacking NEXTK1)
            return t.hold(first, seg.packet, join=True)
        if t.sync is not None and t.sync.hold_join(seg.packet, mpj.token, now):
            return Result(Verdict.HOLD)  # its first subflow is in a sibling worker's handshake
        return ACCEPT  # a join of a connection we do not protect
    seq = seg.seq
    if sf is None or sf.isn_local != seq:
        sf = t.new_flow(key, True, Policy.OPPORTUNISTIC, now)
        if sf is None:
            return DROP  # never let a join of a protected connection go out unkeyed
        try:
            index = t.allocate(conn.session)
        except ValueError:
            t.fail(sf, "key chain exhausted")
            return DROP
        state.advance(sf, Ev.SEND_SYN_NEXTK1)
        sf.isn_local = seq
        sf.out_ref = seq + 1
        _join_subflow(sf, conn, mpj, index)
        t.claim(conn.session, index, key)
    sf.hs.join_syn = mp_join_bytes(mpj)
    ss = conn.session.chain.ss(sf.index)
    proof = ks.join_proof(ss, False, ks.nextk1_join_context(seq, sf.index, sf.hs.join_syn))
    # no room for timestamps beside MP_JOIN and NEXTK1: rewritten drops them, the peer's daemon restores them
    sf.hs.syn_tsval = kernel_tsval(seg)
    return rewritten(t, seg, add=m.NextK1Join(sf.index, proof).encode())


def recv_join_syn(t: Table, sf: Subflow | None, key, seg: Segment, mpj: MptcpOption, now: float) -> Result:
    conn = t.tokens.get(mpj.token)
    if conn is None and t.sync is not None:
        conn = t.sync.lookup_token(mpj.token)  # a sibling worker may have keyed it a moment ago
    if conn is None:
        return ACCEPT  # a join of a connection we do not protect
    seq = seg.seq
    # RFC 8684 §3.2 lets anyone who read the keys compute MPTCP's join HMAC; NEXTK1 is what they cannot forge
    msg = seg.mptcrypt()
    if not isinstance(msg, m.NextK1Join):
        return refuse_join(t, key, "join SYN without a valid NEXTK1")
    if not conn.session.in_join_window(msg.index):  # before any key work
        return refuse_join(t, key, f"join SYN with key index {msg.index} outside the window")
    ss = conn.session.chain.ss(msg.index)
    join_syn = mp_join_bytes(mpj)
    expect = ks.join_proof(ss, False, ks.nextk1_join_context(seq, msg.index, join_syn))
    if not hmac.compare_digest(msg.proof, expect):
        return refuse_join(t, key, "join SYN whose NEXTK1 proof does not verify")
    if not t.claim(conn.session, msg.index, key):
        return refuse_join(t, key, f"join SYN reusing key index {msg.index}")
    sf = t.new_flow(key, False, Policy.OPPORTUNISTIC, now)
    if sf is None:
        return refuse_join(t, key, "flow table full")
    state.advance(sf, Ev.RECV_SYN_NEXTK1)
    sf.isn_remote = seq
    sf.in_ref = seq + 1
    _join_subflow(sf, conn, mpj, msg.index)
    sf.hs.join_syn = join_syn
    t.register_resume(conn.session)
    return clean_syn(t, seg, restore_ts=restored_syn_ts(sf))


def _join_subflow(sf: Subflow, conn, mpj: MptcpOption, index: int) -> None:
    """What a join subflow takes from its MP_JOIN SYN and its connection, on the sending and the receiving side."""
    sf.mptcp = sf.join = True
    sf.addr_id = mpj.addr_id
    sf.backup = mpj.backup
    sf.index = index
    sf.conn = conn


def refuse_join(t: Table, key, why: str) -> Result:
    t.count_rare("joins_refused", "join-refused", key, why)
    return DROP


def release_joins(t: Table, first: Subflow, now: float) -> list[bytes]:
    """Join SYNs held while the first subflow was keyed: now their token maps to the session."""
    out = []
    for token in [tk for tk, f in t.pending_joins.items() if f is first]:
        del t.pending_joins[token]
    held, first.hs.held_joins = first.hs.held_joins, []
    for pkt in held:
        seg = parse_segment(pkt)
        key = seg.flow_key(True)
        res = send_join_syn(t, t.flows.get(key), key, seg, seg.mptcp_join(), now)
        if res.verdict is Verdict.ACCEPT:
            out.append(res.packet or pkt)
    return out


# --- resumption --------------------------------------------------------------------------------------------
def offer_resume(t: Table, sf: Subflow, now: float) -> Session | None:
    """Client SYN: the cached session for the peer with a fresh index allocated, or None (full handshake)."""
    session = t.peer_cache.get(sf.key[2]) if t.config.resume else None
    if session is None or t.session_expired(session, now):
        return None
    try:
        index = t.allocate(session)
    except ValueError:
        return None
    state.advance(sf, Ev.SEND_SYN_NEXTK1)
    sf.index = index
    sf.resumed = True
    sf.conn = Connection(session, index, resumed=True)
    return session


def resume_option(sf: Subflow) -> bytes:
    """NEXTK1 of a resumed connection's SYN: which session (resume id of ss[i]) and a proof of ss[i]."""
    ss = sf.conn.session.chain.ss(sf.index)
    rid = ks.resume_id(ss)
    sf.hs.resume_id = rid
    return m.NextK1Resume(rid, ks.join_proof(ss, False, ks.nextk1_resume_context(sf.isn_local, rid))).encode()


def accept_resume(t: Table, sf: Subflow, key, seg: Segment, msg: m.NextK1Resume, now: float) -> Result | None:
    """Server: a SYN resuming a cached session. None when the id is unknown, the session expired or the proof
    fails (full handshake)."""
    found = t.resume.get(msg.resume_id)
    if found is None and t.sync is not None:
        found = t.sync.lookup_resume(msg.resume_id)  # a session a sibling worker made a moment ago
    if found is not None and not t.session_expired(found[0], now):
        session, index = found
        ss = session.chain.ss(index)
        expect = ks.join_proof(ss, False, ks.nextk1_resume_context(seg.seq, msg.resume_id))
        if hmac.compare_digest(msg.proof, expect) and t.claim(session, index, key):
            state.advance(sf, Ev.RECV_SYN_NEXTK1)
            sf.hs.resume_id = msg.resume_id
            sf.conn = Connection(session, index, resumed=True)
            sf.index, sf.resumed = index, True
            t.register_resume(session)
            # no timestamps restored here: a resumed MPTCP connection runs without them (docs/protocol.md §6)
            return clean_syn(t, seg)
    t.counters["resume_fallbacks"] += 1  # unknown or stale: run the full handshake instead
    return None


# --- NEXTK2 (SYN-ACK), both kinds ----------------------------------------------------------------------------
def nextk2_context(sf: Subflow, isn_i: int, isn_r: int, seg: Segment) -> bytes:
    if sf.join:
        return ks.nextk2_join_context(isn_i, isn_r, sf.index, sf.hs.join_syn, mp_join_bytes(seg.mptcp_join()))
    return ks.nextk2_resume_context(isn_i, isn_r, sf.hs.resume_id)


def send_nextk2(t: Table, sf: Subflow, seg: Segment, now: float) -> Result:
    """Server SYN-ACK of a join or resumption: NEXTK2 proves ss[i]; the subflow is keyed from here on."""
    ss = sf.conn.session.chain.ss(sf.index)
    proof = ks.join_proof(ss, True, nextk2_context(sf, sf.isn_remote, seg.seq, seg))
    first_time = sf.tx is None  # else a SYN-ACK retransmission
    state.advance(sf, Ev.SEND_SYNACK_NEXTK2)
    if not sf.join:
        mptcp.remember_syn_key(sf, seg, local=True)
    if first_time:
        sf.set_keys(sf.conn, sf.index, sf.conn.session.sym_cipher)
        t.keyed(sf, not sf.join, now)
    return rewritten(t, seg, add=m.NextK2(proof).encode())


def recv_nextk2(t: Table, sf: Subflow, seg: Segment, msg: m.NextK2, now: float) -> Result:
    index = sf.index
    ss = sf.conn.session.chain.ss(index)
    expect = ks.join_proof(ss, True, nextk2_context(sf, sf.isn_local, seg.seq, seg))
    if not hmac.compare_digest(msg.proof, expect):
        t.counters["unauthenticated_dropped"] += 1
        t.event("bad-nextk2", sf.key, "SYN-ACK with a NEXTK2 that does not verify")
        return DROP
    state.advance(sf, Ev.RECV_SYNACK_NEXTK2)
    sf.set_keys(sf.conn, index, sf.conn.session.sym_cipher)
    if not sf.join:
        t.claim(sf.conn.session, index, sf.key)
        mptcp.remember_syn_key(sf, seg, local=False)
    t.keyed(sf, not sf.join, now)
    return clean_syn(t, seg, restore_ts=restored_synack_ts(sf))
