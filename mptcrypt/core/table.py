"""The engine's state tables and the bookkeeping every phase shares.

`Table` holds the flows, the MPTCP token map, join SYNs waiting for their connection's keys, the resumption
cache (peer -> session) and resumption ids (id -> (session, index)), the public-key pairs, the set of flows with
a handshake timer, the pending events and the counters. The phase modules (`handshake`, `join`, `mptcp`,
`datapath`) take the table and return `Result`s; none of them calls back into the engine.
"""

from __future__ import annotations

from collections import OrderedDict

from mptcrypt.constants import PubCipher
from mptcrypt.core import state
from mptcrypt.core.config import Config
from mptcrypt.core.events import DROP, Event, Result, Verdict
from mptcrypt.core.session import Connection, Session, Subflow, fmt_flow
from mptcrypt.core.state import Ev
from mptcrypt.crypto import keyschedule as ks
from mptcrypt.crypto import pubkey
from mptcrypt.wire.mptcp import mptcp_token
from mptcrypt.wire.tcp import RST

RESUME_WINDOW = 4  # resumption ids registered ahead per cached session
SWEEP_INTERVAL = 1.0
MAX_EVENTS = 1024

COUNTERS = (
    "packets", "segments_protected", "segments_verified", "bytes_encrypted", "bytes_decrypted",
    "mac_failures", "unauthenticated_dropped", "stripped_resets", "unknown_flow_dropped", "malformed_dropped",
    "pk_keygen", "pk_ops", "pk_handshakes", "handshakes_completed", "resumptions", "resume_fallbacks",
    "joins_protected", "joins_refused", "joins_zero_pk", "held", "held_overflow", "released",
    "init_retransmits", "handshake_failures", "fallbacks_plain", "refused_policy", "option_overflow",
    "signals_split", "sack_trimmed", "syn_on_live_flow_dropped", "connections_reclaimed", "flows_tracked_max",
)


class Table:
    def __init__(self, config: Config, random):
        self.config = config
        self.random = random
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
        self.pub_list = bytes(config.pub_ciphers)
        self.sym_list = bytes(config.sym_ciphers)
        self.counters = dict.fromkeys(COUNTERS, 0)

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
        if len(self.flows) >= self.config.max_connections:
            self.sweep(now)
            if len(self.flows) >= self.config.max_connections:
                self.event("table-full", key, "flow table full; connection left untouched")
                return None
        sf = Subflow(key, initiator, policy, now)
        self.flows[key] = sf
        if len(self.flows) > self.counters["flows_tracked_max"]:
            self.counters["flows_tracked_max"] = len(self.flows)
        return sf

    def drop_flow(self, sf: Subflow) -> None:
        self.flows.pop(sf.key, None)
        for token in [t for t, first in self.pending_joins.items() if first is sf]:
            del self.pending_joins[token]
        self.timed.discard(sf)
        conn = sf.conn
        if conn is not None and sf in conn.subflows:
            conn.subflows.remove(sf)
            if not conn.subflows:
                for t in conn.tokens:
                    if self.tokens.get(t) is conn:
                        del self.tokens[t]

    def sweep(self, now: float) -> None:
        cfg = self.config
        for sf in list(self.flows.values()):
            if (sf.closed_at is not None and now - sf.closed_at > cfg.closed_linger) or \
                    now - sf.last_seen > cfg.idle_timeout or \
                    (sf.state in state.DEAD and now - sf.last_seen > cfg.closed_linger):
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
        hs = sf.hs
        hs.rto = self.config.init_rto
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
    def add_token(self, conn: Connection, token: int) -> None:
        if token not in conn.tokens:
            conn.tokens.append(token)
            self.tokens[token] = conn

    def keyed(self, sf: Subflow, resumed: bool) -> None:
        """A subflow got its keys: register the session for resumption (counted once the packet is handled)."""
        conn = sf.conn
        self.keyed_now.append(sf)
        if sf.mptcp and not sf.join:  # the first subflow's MP_CAPABLE keys: their tokens lead joins here
            conn.mptcp = True
            conn.keys.update(sf.hs.mptcp_keys)
            for k in conn.keys.values():
                self.add_token(conn, mptcp_token(k))
        if not sf.join:
            self.cache_session(conn.session, sf.key[2])
            self.register_resume(conn.session)
        self.event("protected", sf.key, f"{'join' if sf.join else 'resumed' if resumed else 'new'} "
                   f"index {sf.index} sid {conn.sid.hex()[:16]}")

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
        cache[peer] = session
        cache.move_to_end(peer)
        while len(cache) > self.config.max_sessions_cached:
            _, old = cache.popitem(last=False)
            for rid in old.resume_ids.values():
                self.resume.pop(rid, None)
            old.resume_ids.clear()

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
