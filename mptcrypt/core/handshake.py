"""The first subflow's handshake: HELLO (SYN), PKCONF (SYN-ACK), INIT1 / INIT2 (daemon-made segments) and their
retransmission timers; the plain fallback and the `required` refusal (docs/protocol.md §3, §4).

Every function takes the table and returns a Result (or packets to send); joins and resumptions are in `join`.
"""

from __future__ import annotations

from mptcrypt.constants import NONCE_LEN, Msg, PubCipher, SymCipher
from mptcrypt.core import datapath, join, mptcp, state, stripped
from mptcrypt.core.config import Policy
from mptcrypt.core.events import ACCEPT, DROP, Result, Verdict
from mptcrypt.core.session import Connection, Session, Subflow, fmt_addr
from mptcrypt.core.state import Ev
from mptcrypt.core.synopts import clean_syn, rewritten
from mptcrypt.core.table import Table
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.crypto import pubkey
from mptcrypt.errors import HandshakeError
from mptcrypt.wire import messages as m
from mptcrypt.wire.mptcp import Subtype, mptcp_token
from mptcrypt.wire.rewrite import daemon_segment, rst_to_local, rst_to_peer
from mptcrypt.wire.segment import Segment
from mptcrypt.wire.tcp import ACK, FIN, PSH, RST, SYN


# --- SYN ---------------------------------------------------------------------------------------------------
def send_syn(t: Table, sf: Subflow | None, key, seg: Segment, policy: Policy, now: float) -> Result:
    if policy is Policy.OFF:
        return ACCEPT
    seq = seg.seq
    if sf is not None and sf.isn_local == seq and sf.state in state.SYN_SENT:
        sf.hs.syn_sent = None  # no RTT sample from a retransmitted SYN (Karn)
        return rewrite_syn(t, seg, sf)  # kernel SYN retransmission
    sf = t.new_flow(key, True, policy, now)
    if sf is None:  # table full: never a plain connection where protection is required
        return DROP if policy is Policy.REQUIRED else ACCEPT
    if join.offer_resume(t, sf, now) is None:
        state.advance(sf, Ev.SEND_SYN_HELLO)
    sf.isn_local = seq
    sf.out_ref = seq + 1
    sf.mptcp = bool(seg.mptcp())
    sf.hs.syn_sent = now
    return rewrite_syn(t, seg, sf)


def rewrite_syn(t: Table, seg: Segment, sf: Subflow) -> Result:
    if sf.state is state.State.SYN_SENT_HELLO:
        return rewritten(t, seg, add=m.Hello().encode())
    # resumption: NEXTK1 leaves room for timestamps only in a plain TCP SYN (docs/protocol.md §6)
    return rewritten(t, seg, add=join.resume_option(sf))


def recv_syn(t: Table, sf: Subflow | None, key, seg: Segment, policy: Policy, now: float) -> Result:
    """An inbound SYN of a new connection (the engine has judged it against an existing flow: state.py)."""
    seq = seg.seq
    if policy is Policy.OFF:
        return ACCEPT
    msg = seg.mptcrypt()
    if msg is None:
        if policy is Policy.REQUIRED:
            t.counters["refused_policy"] += 1
            t.event("refused", key, "peer did not offer mptcrypt and policy is required")
            return Result(Verdict.DROP, inject=[rst_to_peer(key, seq=0, ack=seq + 1)])
        sf = t.new_flow(key, False, policy, now)
        if sf is not None:
            state.advance(sf, Ev.RECV_SYN_PLAIN)
            sf.plain_reason = "peer without mptcrypt"
            t.counters["fallbacks_plain"] += 1
            t.event("plain", key, sf.plain_reason)  # for `mptcrypt monitor`
        return ACCEPT
    sf = t.new_flow(key, False, policy, now)
    if sf is None:
        return ACCEPT if policy is not Policy.REQUIRED else DROP
    sf.isn_remote = seq
    sf.in_ref = seq + 1
    sf.mptcp = bool(seg.mptcp())
    if isinstance(msg, m.NextK1Resume):
        res = join.accept_resume(t, sf, key, seg, msg, now)
        if res is not None:
            return res
    state.advance(sf, Ev.RECV_SYN_HELLO)
    return clean_syn(t, seg)


# --- segments of flows the table does not know -------------------------------------------------------------
def unknown_flow(t: Table, key, seg: Segment, outbound: bool) -> Result:
    """A segment (not a SYN) of a flow the table does not know: a connection older than the daemon, one the table
    forgot, or a forged one. Under `required`, or when the 4-tuple was protected (a tombstone) or the segment
    carries a MAC, it is dropped and the local kernel's connection reset: never continued in clear, never handed
    ciphertext as if it were data (PROTOCOL.md invariant 6)."""
    la, lp, ra, rp = key
    peer = fmt_addr(ra)
    cfg = t.config
    if key in t.tombstones:
        why = "a protected flow the table forgot"
    elif not outbound and seg.has_mac():
        why = "a protected segment of a flow we do not know (e.g. after a daemon restart)"
    elif Policy.REQUIRED in (cfg.policy_for(peer, rp), cfg.policy_for(peer, lp)):
        why = "an unknown flow on a port where protection is required"
    else:
        return ACCEPT
    t.count_rare("unknown_flow_dropped", "unknown-flow", key, why + "; dropped, local connection reset")
    if seg.flags & RST:
        return DROP
    end = seg.seq + seg.payload_len + bool(seg.flags & FIN) + bool(seg.flags & SYN)
    # the local kernel takes a RST whose seq is its rcv_nxt: the ack it sends, or the seq it receives
    rst = rst_to_local(key, seg.ack, end) if outbound else rst_to_local(key, seg.seq, seg.ack)
    return Result(Verdict.DROP, inject=[rst])


# --- SYN-ACK -----------------------------------------------------------------------------------------------
def send_syn_ack(t: Table, sf: Subflow, seg: Segment, now: float) -> Result:
    if sf.state is state.State.PLAIN or sf.initiator:
        return ACCEPT
    sf.hs.syn_sent = now if sf.isn_local is None else None  # a retransmitted SYN-ACK gives no sample (Karn)
    sf.isn_local = seg.seq
    sf.out_ref = max(sf.out_ref, seg.seq + 1)
    ev = state.synack_event(sf)
    if ev is Ev.SEND_SYNACK_PKCONF:
        state.advance(sf, ev)
        if seg.mptcp_option(Subtype.MP_CAPABLE) is not None:
            sf.mptcp = True
        sf.hs.pub_list = t.pub_list
        mptcp.remember_syn_key(sf, seg, local=True)
        return rewritten(t, seg, add=m.PkConf(tuple(t.pub_list)).encode())
    if ev is Ev.SEND_SYNACK_NEXTK2:
        return join.send_nextk2(t, sf, seg, now)
    return ACCEPT


def recv_syn_ack(t: Table, sf: Subflow, seg: Segment, now: float) -> Result:
    st = sf.state
    if not sf.initiator or st in state.SYNACK_IGNORED:
        return ACCEPT if st is state.State.PLAIN else DROP
    if sf.isn_local is not None and seg.ack != (sf.isn_local + 1) & 0xFFFFFFFF:
        return DROP  # not an answer to our SYN
    seq = seg.seq
    if st in state.AWAITING_SYNACK:
        if sf.isn_remote == seq:  # SYN-ACK retransmission: let the kernel answer it (that ACK is protected)
            return clean_syn(t, seg, restore_ts=join.restored_synack_ts(sf))
        return DROP
    sf.isn_remote = seq
    sf.in_ref = seq + 1
    msg = seg.mptcrypt()
    if isinstance(msg, m.NextK2) and state.allowed(st, Ev.RECV_SYNACK_NEXTK2):
        return join.recv_nextk2(t, sf, seg, msg, now)
    if sf.join:
        t.counters["unauthenticated_dropped"] += 1
        return DROP  # a join answer must prove ss[i]
    if isinstance(msg, m.PkConf):
        if sf.resumed:  # the peer lost our session: full handshake
            t.counters["resume_fallbacks"] += 1
            t.peer_cache.pop(sf.key[2], None)
            sf.conn, sf.index, sf.resumed = None, 0, False
        chosen = next((c for c in t.config.pub_ciphers if c in msg.ciphers), None)
        if chosen is None:
            return plain_or_refuse(t, sf, seg, "no common public-key cipher")
        state.advance(sf, Ev.RECV_SYNACK_PKCONF)
        hs = sf.hs
        hs.pub_list = bytes(msg.ciphers)
        hs.pub_cipher = PubCipher(chosen)
        mptcp.remember_syn_key(sf, seg, local=False)
        if "remote" in hs.mptcp_keys:
            t.pending_joins[mptcp_token(hs.mptcp_keys["remote"])] = sf
            if t.sync is not None:  # joins of this connection that a sibling worker sees wait for its keys
                t.sync.pending(mptcp_token(hs.mptcp_keys["remote"]))
        start_init1(t, sf, now)
        return Result(Verdict.ACCEPT, clean_syn(t, seg).packet, inject=[hs.init_segment])
    return plain_or_refuse(t, sf, seg, "peer did not answer with PKCONF")


def plain_or_refuse(t: Table, sf: Subflow, seg: Segment, why: str) -> Result:
    # A plain answer from a peer we hold a session for (it spoke mptcrypt before, and we may have offered
    # NEXTK1): a peer that lost its daemon, or an attacker stripping options (issue 12 item 10). Said loudly;
    # refused with `refuse_downgrade`.
    downgrade = sf.resumed or sf.key[2] in t.peer_cache
    if downgrade:
        why = f"downgrade: {why} although we hold a session for this peer"
        t.counters["downgrades_detected"] += 1
        t.event("downgrade", sf.key, why)
    if sf.policy is Policy.REQUIRED or downgrade and t.config.refuse_downgrade:
        state.advance(sf, Ev.REFUSE)
        t.counters["refused_policy"] += 1
        t.event("refused", sf.key, why + ("; policy is required" if sf.policy is Policy.REQUIRED
                                          else "; refuse_downgrade is set"))
        sf.plain_reason = why
        # our kernel gets the SYN-ACK turned into a RST (connection refused), the peer a RST too
        return Result(Verdict.ACCEPT, rst_to_local(sf.key, seg.seq + 1, seg.ack),
                      inject=[rst_to_peer(sf.key, seq=seg.ack, with_ack=False)])
    state.advance(sf, Ev.RECV_SYNACK_PLAIN)
    sf.conn, sf.resumed = None, False  # a resumption we offered and the peer ignored: nothing of the session applies
    sf.plain_reason = why
    t.counters["fallbacks_plain"] += 1
    t.event("plain", sf.key, why)  # for `mptcrypt monitor`
    return ACCEPT


# --- before keys: what arrives, INIT1 / INIT2 ------------------------------------------------------------
def recv_before_keys(t: Table, sf: Subflow, seg: Segment, now: float) -> Result:
    """Inbound, before keys: only the peer daemon's INIT segments are expected, and a refusal of our SYN."""
    flags = seg.flags
    if flags & RST and flags & ACK and sf.state in state.SYN_SENT and seg.ack == (sf.isn_local + 1) & 0xFFFFFFFF:
        state.advance(sf, Ev.REFUSE)
        sf.plain_reason = "refused by the peer (RST)"
        return ACCEPT  # "connection refused" for the application: an on-path attacker could drop the SYN anyway
    marker = seg.marker()
    if marker is not None and not init_in_sequence(t, sf, seg):
        return DROP
    if marker == Msg.INIT1 and state.allowed(sf.state, Ev.RECV_INIT1):
        return recv_init1(t, sf, seg, now)
    if marker == Msg.INIT2 and state.allowed(sf.state, Ev.RECV_INIT2):
        return recv_init2(t, sf, seg, now)
    t.counters["unauthenticated_dropped"] += 1
    return DROP


def recv_unauthenticated(t: Table, sf: Subflow, seg: Segment, now: float) -> Result:
    """An inbound segment without a MAC on a protected flow: a duplicate INIT, or an injection."""
    marker = seg.marker()
    if marker is not None and not init_in_sequence(t, sf, seg):
        return DROP
    if marker == Msg.INIT1 and not sf.initiator:
        return recv_init1(t, sf, seg, now)
    if marker == Msg.INIT2 and sf.initiator:
        return DROP  # duplicate INIT2: our keys are already in place
    t.counters["unauthenticated_dropped"] += 1
    return stripped.count(t, sf, seg, now) or DROP


def init_in_sequence(t: Table, sf: Subflow, seg: Segment) -> bool:
    """An INIT segment sits right after both SYNs (its seq is the sender's ISN + 1, its ack ours + 1): a blind
    attacker who knows only the 4-tuple cannot inject one to kill or hijack the handshake (issue 12 item 7)."""
    if sf.isn_remote is not None and sf.isn_local is not None and seg.flags & ACK \
            and seg.seq == (sf.isn_remote + 1) & 0xFFFFFFFF and seg.ack == (sf.isn_local + 1) & 0xFFFFFFFF:
        return True
    t.count_rare("init_out_of_sequence", "bad-init", sf.key, "INIT segment whose seq/ack do not follow the SYNs")
    return False


def _init_segment(sf: Subflow, marker: int, msg: bytes) -> bytes:
    la, lp, ra, rp = sf.key
    return daemon_segment(la, lp, ra, rp, sf.isn_local + 1, sf.isn_remote + 1, ACK | PSH, m.Marker(marker).encode(),
                          msg)


def start_init1(t: Table, sf: Subflow, now: float) -> None:
    hs = sf.hs
    key = t.keypair(hs.pub_cipher, now)
    hs.client_key = key
    hs.n_c = t.random(NONCE_LEN)
    hs.init_msg = m.Init1(hs.pub_cipher, tuple(t.sym_list), hs.n_c, key.public).encode()
    hs.init_segment = _init_segment(sf, Msg.INIT1, hs.init_msg)
    t.arm(sf, now)


def recv_init1(t: Table, sf: Subflow, seg: Segment, now: float) -> Result:
    hs = sf.hs
    if sf.tx is not None:  # duplicate INIT1: our INIT2 was lost
        state.advance(sf, Ev.RECV_INIT1)
        return Result(Verdict.DROP, inject=[hs.init_segment]) if hs.init_segment else DROP
    try:
        init1 = m.parse_init(seg.payload())
        if not isinstance(init1, m.Init1):
            raise HandshakeError("INIT2 where INIT1 was expected")
        pub = PubCipher(init1.pub_cipher) if init1.pub_cipher in hs.pub_list else None
        if pub is None:
            raise HandshakeError(f"INIT1 chose public-key cipher {init1.pub_cipher} that PKCONF did not offer")
        sym = next((s for s in t.config.sym_ciphers if s in init1.sym_ciphers), None)
        if sym is None:
            raise HandshakeError("no common symmetric cipher")
        server_key = t.keypair(pub, now) if pub != PubCipher.RSA2048_E3 else None
        server_part, n_s = pubkey.server_respond(pub, init1.k_c, server_key, t.random)
    except (HandshakeError, ValueError) as exc:
        t.counters["unauthenticated_dropped"] += 1
        t.event("bad-init1", sf.key, str(exc))
        return DROP
    t.counters["pk_ops"] += 1
    state.advance(sf, Ev.RECV_INIT1)
    tr = ks.transcript(pub, init1.k_c, init1.n_c, hs.pub_list, bytes(init1.sym_ciphers), sym)
    session = Session(ks.initial_ss(n_s, tr), False, pub, SymCipher(sym), sf.key[2])
    conn = Connection(session, 0, resumed=False)
    conn.pk_ops = 1
    hs.pub_cipher = pub
    sf.set_keys(conn, 0, SymCipher(sym))
    hs.init_msg = m.Init2(sym, server_part).encode()
    hs.init_segment = _init_segment(sf, Msg.INIT2, hs.init_msg)
    sf.confirmed = False
    t.arm(sf, now)
    t.keyed(sf, False, now)
    return Result(Verdict.DROP, inject=[hs.init_segment] + datapath.release(t, sf))


def recv_init2(t: Table, sf: Subflow, seg: Segment, now: float) -> Result:
    hs = sf.hs
    try:
        init2 = m.parse_init(seg.payload())
        if not isinstance(init2, m.Init2) or init2.sym_cipher not in t.sym_list:
            raise HandshakeError("INIT2 with a symmetric cipher we did not offer")
        n_s = pubkey.client_finish(hs.client_key, init2.server_part)
    except (HandshakeError, ValueError) as exc:
        t.counters["unauthenticated_dropped"] += 1
        t.event("bad-init2", sf.key, str(exc))
        return DROP
    t.counters["pk_ops"] += 1
    state.advance(sf, Ev.RECV_INIT2)
    sym = SymCipher(init2.sym_cipher)
    tr = ks.transcript(hs.pub_cipher, hs.client_key.public, hs.n_c, hs.pub_list, t.sym_list, sym)
    session = Session(ks.initial_ss(n_s, tr), True, hs.pub_cipher, sym, sf.key[2])
    conn = Connection(session, 0, resumed=False)
    conn.pk_ops = 1
    sf.set_keys(conn, 0, sym)
    hs.timer = None
    hs.client_key = None
    t.timed.discard(sf)
    t.keyed(sf, False, now)
    return Result(Verdict.DROP, inject=datapath.release(t, sf) + join.release_joins(t, sf, now))


# --- timers ----------------------------------------------------------------------------------------------------
def timers(t: Table, now: float) -> list[bytes]:
    """INIT1 / INIT2 retransmissions that are due; a handshake out of retries fails."""
    out: list[bytes] = []
    for sf in list(t.timed):
        hs = sf.hs
        if hs.timer is None:
            t.timed.discard(sf)
            continue
        if hs.timer > now:
            continue
        if hs.tries >= t.config.init_retries:
            why = "no answer to INIT" + ("1" if sf.initiator else "2")
            t.fail(sf, why)
            # the kernels' connection exists (its SYNs went through): a reset, not a connection that hangs
            sf.plain_reason = why + ": the peer's daemon stopped, or a middlebox strips mptcrypt options"
            out.append(rst_to_local(sf.key, sf.in_ref, sf.out_ref))
            continue
        hs.tries += 1
        hs.rto *= 2
        hs.timer = now + hs.rto
        t.counters["init_retransmits"] += 1
        out.append(hs.init_segment)
    return out
