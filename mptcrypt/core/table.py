"""The engine's state tables and the bookkeeping every phase shares.

`Table` holds the flows, the MPTCP token map, join SYNs waiting for their connection's keys, the resumption
cache (peer -> session) and resumption ids (id -> (session, index)), the public-key pairs, the set of flows with
a handshake timer, the pending events and the counters. The phase modules (`handshake`, `join`, `mptcp`,
`datapath`) take the table and return `Result`s; none of them calls back into the engine.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from mptcrypt.constants import PubCipher
from mptcrypt.core import state
from mptcrypt.core.config import Config
from mptcrypt.core.events import DROP, Event, Result, SubflowKeys, Verdict
from mptcrypt.core.session import Connection, Session, Subflow, fmt_flow
from mptcrypt.core.state import Ev
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.crypto import pubkey
from mptcrypt.wire.mptcp import mptcp_token
from mptcrypt.wire.tcp import RST

RESUME_WINDOW = 4  # resumption ids registered ahead per cached session
MAX_TOMBSTONES = 65536  # 4-tuples of protected flows the table forgot (each ~100 bytes)
HALF_OPEN_TIMEOUT = 75.0  # a flow still before keys is reclaimed after this long (Linux SYN-RECV: ~63 s)
SWEEP_INTERVAL = 1.0
# First INIT1/INIT2 retransmission timeout from one RTT sample, RFC 6298 §2.2: SRTT + 4 x RTTVAR = 3 x R
INIT_RTO_RTT_FACTOR = 3.0
INIT_RTO_NO_SAMPLE = 1.0  # RFC 6298 §2.1, when Karn's rule leaves no sample (our SYN or SYN-ACK was retransmitted)
INIT_RTO_MAX = 3.0  # an RTT sample inflated by a stalled daemon must not leave a lost INIT waiting longer
MAX_EVENTS = 1024

COUNTERS = (
    "packets", "segments_protected", "segments_verified", "bytes_encrypted", "bytes_decrypted",
    "mac_failures", "unauthenticated_dropped", "stripped_resets", "unknown_flow_dropped", "malformed_dropped",
    "pk_keygen", "pk_ops", "pk_handshakes", "handshakes_completed", "resumptions", "resume_fallbacks",
    "joins_protected", "joins_refused", "joins_zero_pk", "held", "held_overflow", "released",
    "init_retransmits", "handshake_failures", "fallbacks_plain", "refused_policy", "option_overflow",
    "signals_split", "sack_trimmed", "timestamps_removed", "syn_on_live_flow_dropped", "connections_reclaimed",
    "flows_tracked_max",
    "token_collisions_refused", "idle_kept_alive", "init_out_of_sequence", "half_open_evicted",
    "syn_data_removed", "stale_signals_dropped", "downgrades_detected", "sessions_expired",
    "rekeys_sent", "rekeys_followed",
)


def init_rto(floor: float, rtt: float | None) -> float:
    """The first INIT retransmission timeout for an RTT sample (None: no valid sample)."""
    if rtt is None:
        return max(floor, INIT_RTO_NO_SAMPLE)
    return min(max(floor, INIT_RTO_RTT_FACTOR * rtt), max(floor, INIT_RTO_MAX))


class Table:
    def __init__(self, config: Config, random, socket_alive=None):
        self.config = config
        self.random = random
        # socket_alive(keys) -> the subset of flow keys whose socket the local kernel still has (the daemon asks
        # sock_diag); None: no kernel to ask (tests), idle flows are reclaimed on the idle timeout alone
        self.socket_alive = socket_alive
        # protected flows the table forgot while they were open: their 4-tuples never continue in clear
        self.tombstones: OrderedDict[tuple, None] = OrderedDict()
        self.half_open: OrderedDict[tuple, Subflow] = OrderedDict()  # creation order, pruned lazily
        self.flows: dict[tuple, Subflow] = {}
        self.tokens: dict[int, Connection] = {}  # MPTCP token (RFC 8684 §3.2, 32-bit int) -> connection
        self.pending_joins: dict[int, Subflow] = {}  # token -> first subflow still waiting for INIT2
        self.peer_cache: OrderedDict[bytes, Session] = OrderedDict()
        self.resume: dict[bytes, tuple[Session, int]] = {}
        self.keypairs: dict[PubCipher, tuple[pubkey.KeyPair, float]] = {}
        self.timed: set[Subflow] = set()
        self.events: list[Event] = []
        self.keyed_now: list[Subflow] = []  # subflows keyed while handling the current packet
        self.next_sweep = 0.0
        self.full_sweep_at = 0.0
        self.pub_list = bytes(config.pub_ciphers)
        self.sym_list = bytes(config.sym_ciphers)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.key_log: Callable[[SubflowKeys], None] | None = None  # key log hook (Engine(key_log=...)); off: None
        self.on_drop: Callable[[Subflow], None] | None = None  # the compiled fast path forgets it (datapath.FastPath)
        # `--workers N`: the sibling workers' replica of session-level state (daemon/workers.py Replica); None: one
        # process. Called where sessions, tokens and key indices change; docs/protocol.md §Workers
        self.sync = None
        self.lane = (0, 1)  # (this worker, workers): which of the session's own indices this process allocates

    # --- events and counters ----------------------------------------------------------------------------
    def event(self, kind: str, key, detail: str = "") -> None:
        if len(self.events) < MAX_EVENTS:
            self.events.append(Event(kind, fmt_flow(key) if key is not None else "-", detail))

    def count_rare(self, counter: str, kind: str, key, detail: str) -> None:
        """Count, and log the 1st, 2nd, 4th, 8th... occurrence (a flood must not flood the log)."""
        c = self.counters
        c[counter] += 1
        if c[counter] & (c[counter] - 1) == 0:
            self.event(kind, key, detail)

    # --- flows --------------------------------------------------------------------------------------------
    def new_flow(self, key, initiator: bool, policy, now: float) -> Subflow | None:
        old = self.flows.get(key)
        if old is not None:
            self.drop_flow(old)
        if len(self.flows) >= self.config.max_connections and now >= self.full_sweep_at:
            # at most once a second: under a SYN flood the table stays full, and a sweep walks all of it
            self.full_sweep_at = now + SWEEP_INTERVAL
            self.sweep(now)
        if len(self.flows) >= self.config.max_connections and not self.evict_half_open():
            self.event("table-full", key, "flow table full; connection left untouched")
            return None
        sf = Subflow(key, initiator, policy, now)
        self.flows[key] = sf
        self.half_open[key] = sf
        self.tombstones.pop(key, None)  # a new connection (SYN) on the 4-tuple
        if len(self.flows) > self.counters["flows_tracked_max"]:
            self.counters["flows_tracked_max"] = len(self.flows)
        return sf

    def drop_flow(self, sf: Subflow) -> None:
        self.flows.pop(sf.key, None)
        if self.on_drop is not None:
            self.on_drop(sf)
        if sf.tx is not None and sf.closed_at is None:  # forgotten while protected and open
            self.tombstones[sf.key] = None
            self.tombstones.move_to_end(sf.key)
            while len(self.tombstones) > MAX_TOMBSTONES:
                self.tombstones.popitem(last=False)
        for token in [t for t, first in self.pending_joins.items() if first is sf]:
            del self.pending_joins[token]
        self.timed.discard(sf)
        conn = sf.conn
        if conn is not None and sf in conn.subflows:
            conn.subflows.remove(sf)
            if not conn.subflows and (self.sync is None or self.sync.last_subflow_gone(conn)):
                for t in conn.tokens:
                    if self.tokens.get(t) is conn:
                        del self.tokens[t]

    def sweep(self, now: float) -> None:
        cfg = self.config
        self.expire_sessions(now)
        idle = []
        for sf in list(self.flows.values()):
            if (sf.closed_at is not None and now - sf.closed_at > cfg.closed_linger) or \
                    (sf.state in state.DEAD and now - sf.last_seen > cfg.closed_linger) or \
                    (sf.state in state.KEYING and now - sf.created > HALF_OPEN_TIMEOUT):
                self.reclaim(sf)
            elif now - sf.last_seen > cfg.idle_timeout:
                idle.append(sf)
        self.half_open = OrderedDict((k, sf) for k, sf in self.half_open.items()
                                     if self.flows.get(k) is sf and sf.tx is None and sf.state in state.KEYING)
        if not idle:
            return
        # an idle protected connection is never reclaimed while the kernel still has its socket (ssh sessions and
        # connection pools idle far longer than idle_timeout); forgetting it would leave it nothing but a reset
        alive = self.socket_alive([sf.key for sf in idle]) if self.socket_alive is not None else ()
        for sf in idle:
            if sf.key in alive:
                sf.last_seen = now
                self.counters["idle_kept_alive"] += 1
            else:
                self.reclaim(sf)

    def evict_half_open(self) -> bool:
        """Make room in a full table by forgetting the oldest flow still before keys (a flood of spoofed SYNs
        fills the table with those; a real connection is keyed within a round trip). False if there is none.
        `half_open` lists flows in creation order; entries that were keyed or dropped since are skipped."""
        while self.half_open:
            key, sf = self.half_open.popitem(last=False)
            if self.flows.get(key) is sf and sf.tx is None and sf.state in state.KEYING:
                self.counters["half_open_evicted"] += 1
                self.drop_flow(sf)
                return True
        return False

    def reclaim(self, sf: Subflow) -> None:
        self.drop_flow(sf)
        self.counters["connections_reclaimed"] += 1

    def note_close(self, sf: Subflow, flags: int, outbound: bool, now: float) -> None:
        if flags & RST:
            sf.fin_out = sf.fin_in = True
        elif outbound:
            sf.fin_out = True
        else:
            sf.fin_in = True
        if sf.fin_out and sf.fin_in and sf.closed_at is None:
            sf.closed_at = now
            if sf.state in state.CLOSABLE:
                state.advance(sf, Ev.CLOSE)

    # --- handshake timers and held segments ----------------------------------------------------------------
    def hold(self, sf: Subflow, packet: bytes, join: bool = False) -> Result:
        hs = sf.hs
        if len(hs.held) + len(hs.held_joins) >= self.config.max_held_per_connection:
            self.counters["held_overflow"] += 1
            return DROP  # the kernel retransmits it; nothing leaks
        (hs.held_joins if join else hs.held).append(bytes(packet))
        self.counters["held"] += 1
        return Result(Verdict.HOLD)

    def arm(self, sf: Subflow, now: float) -> None:
        """Start the INIT1 (client) or INIT2 (server) retransmission timer. The RTT sample is the time since our
        SYN (client: the SYN-ACK came back) or SYN-ACK (server: INIT1 came back) left, so the timer never fires
        on a long path before the answer can be back, and fires early on a short one."""
        hs = sf.hs
        hs.rtt = None if hs.syn_sent is None else now - hs.syn_sent
        hs.rto = init_rto(self.config.init_rto, hs.rtt)
        hs.tries = 0
        hs.timer = now + hs.rto
        self.timed.add(sf)

    def confirm(self, sf: Subflow) -> None:
        sf.confirmed = True
        sf.hs.timer = None
        self.timed.discard(sf)

    def fail(self, sf: Subflow, why: str) -> None:
        state.advance(sf, Ev.GIVE_UP)
        hs = sf.hs
        hs.timer = None
        hs.held.clear()
        hs.held_joins.clear()
        self.timed.discard(sf)
        self.counters["handshake_failures"] += 1
        self.event("handshake-failed", sf.key, why)

    def keypair(self, cipher: PubCipher, now: float) -> pubkey.KeyPair:
        entry = self.keypairs.get(cipher)
        if entry is None or now - entry[1] > self.config.key_lifetime:
            entry = (pubkey.generate(cipher), now)
            self.keypairs[cipher] = entry
            self.counters["pk_keygen"] += 1
        return entry[0]

    # --- connections, tokens, sessions -------------------------------------------------------------------
    def add_token(self, conn: Connection, token: int, key) -> bool:
        """Map `token` to `conn`; a token another connection holds is refused and counted, never re-pointed."""
        owner = self.tokens.get(token)
        if owner is not None and owner is not conn:
            self.count_rare("token_collisions_refused", "token-refused", key,
                            f"token {token:08x} already belongs to another connection")
            return False
        if token not in conn.tokens:
            conn.tokens.append(token)
            self.tokens[token] = conn
            if self.sync is not None:
                self.sync.connection_changed(conn)
        return True

    def allocate(self, session: Session) -> int:
        """The next own key index of `session` this worker may use (Session.allocate in its lane)."""
        return session.allocate(*self.lane)

    def claim(self, session: Session, index: int, flow) -> bool:
        """Mark key index `index` of `session` used by `flow` (Session.claim), across all workers when several."""
        if self.sync is not None:
            return self.sync.claim(session, index, flow)
        return session.claim(index, flow)

    def keyed(self, sf: Subflow, resumed: bool, now: float) -> None:
        """A subflow got its keys: register the session for resumption (counted once the packet is handled)."""
        conn = sf.conn
        self.keyed_now.append(sf)
        sf.tx_rekey_bytes = sf.bytes_out + self.config.rekey_bytes
        sf.tx_rekey_time = now + self.config.rekey_interval
        if sf.mptcp and not sf.join:  # the first subflow's MP_CAPABLE keys: their tokens lead joins here
            conn.mptcp = True
            conn.keys.update(sf.hs.mptcp_keys)
            for k in conn.keys.values():
                self.add_token(conn, mptcp_token(k), sf.key)
        if not sf.join:
            if conn.session.created is None:
                conn.session.created = now
            self.cache_session(conn.session, sf.key[2])
            self.register_resume(conn.session)
        self.event("protected", sf.key, f"{'join' if sf.join else 'resumed' if resumed else 'new'} "
                   f"index {sf.index} sid {conn.sid.hex()[:16]}")
        if self.sync is not None:
            self.sync.connection_changed(conn)
        if self.key_log is not None:  # --- key log hook: this subflow's traffic keys, for `mptcrypt decrypt` ---
            self.key_log(subflow_keys(sf))

    def count_keyed(self, pk_ops_delta: int) -> None:
        """After a packet: attribute its public-key operations to the subflows it keyed, and count them.
        joins_zero_pk and pk_handshakes are measured from the pk_ops counter, not assumed."""
        c = self.counters
        for sf in self.keyed_now:
            sf.pk_ops += pk_ops_delta
            if sf.join:
                c["joins_protected"] += 1
                if sf.pk_ops == 0:
                    c["joins_zero_pk"] += 1
                continue
            c["handshakes_completed"] += 1
            if sf.pk_ops:
                c["pk_handshakes"] += 1
            if sf.resumed:
                c["resumptions"] += 1
        self.keyed_now.clear()

    def cache_session(self, session: Session, peer: bytes) -> None:
        cache = self.peer_cache
        old = cache.get(peer)
        if old is not None and old is not session:  # replaced: its resume ids must not outlive it
            self.forget_resume(old)
        cache[peer] = session
        cache.move_to_end(peer)
        while len(cache) > self.config.max_sessions_cached:
            self.forget_resume(cache.popitem(last=False)[1])

    def session_expired(self, session: Session, now: float) -> bool:
        """A cached session older than `session_lifetime` is never resumed again (forward secrecy: its ss chain
        leaves the caches, and with the last connection that uses it, memory)."""
        return session.created is not None and now - session.created > self.config.session_lifetime

    def expire_sessions(self, now: float) -> None:
        for peer, session in [(p, s) for p, s in self.peer_cache.items() if self.session_expired(s, now)]:
            del self.peer_cache[peer]
            self.forget_resume(session)
            self.counters["sessions_expired"] += 1

    def forget_resume(self, session: Session) -> None:
        for rid in session.resume_ids.values():
            self.resume.pop(rid, None)
        session.resume_ids.clear()

    def register_resume(self, session: Session) -> None:
        """Resumption ids for the peer's next unused indices: how a SYN from any address finds the session.
        Only ids of indices entering the window are computed (one HMAC each)."""
        wanted = session.peer_next_indices(RESUME_WINDOW)
        for i in [i for i in session.resume_ids if i not in wanted]:
            self.resume.pop(session.resume_ids.pop(i), None)
        for i in wanted:
            if i not in session.resume_ids:
                rid = ks.resume_id(session.chain.ss(i))
                self.resume[rid] = (session, i)
                session.resume_ids[i] = rid


def subflow_keys(sf: Subflow) -> SubflowKeys:
    """The key log's view of a keyed subflow: both directions' secrets of ss[index], in initiator order."""
    la, lp, ra, rp = sf.key
    ss = sf.conn.session.chain.ss(sf.index)
    ends = ((la, lp), (ra, rp)) if sf.initiator else ((ra, rp), (la, lp))
    isns = (sf.isn_local, sf.isn_remote) if sf.initiator else (sf.isn_remote, sf.isn_local)
    return SubflowKeys(ends[0], ends[1], isns[0], isns[1], sf.index, sf.conn.session.sym_cipher,
                       ks.direction_secrets(ss, True), ks.direction_secrets(ss, False))
