"""The sans-IO engine: IP packets in, verdicts, rewritten packets and packets to inject out.

`Engine.handle(packet, outbound, now)` is called once per TCP packet by the NFQUEUE edge; `outbound` is True
for packets the local kernel sends, False for packets arriving for it. Nothing in here reads a clock, a socket
or netlink: time comes in as `now`, packets to send go out in `Result.inject` / `handle_timer`.

This module only demultiplexes: one `wire.segment.Segment` per packet, the flow it belongs to, the fast path for
protected flows (`datapath`), and the phase that handles everything else: `handshake` (HELLO/PKCONF/INIT1/INIT2),
`join` (NEXTK1/NEXTK2, resumption). The phases share `table.Table` and never call back into the engine;
`state` is the only module that changes a subflow's state.

Invariant (PROTOCOL.md §1): the kernels' sequence and acknowledgement numbers are never shifted. Handshake
payloads (INIT1, INIT2) ride in daemon-made segments that the peer daemon absorbs; kernel segments keep their
payload length, only the 12-byte MAC option is added on the wire and removed before the peer kernel sees it.
"""

from __future__ import annotations

import ipaddress
import os

from mptcrypt.core import datapath, handover, handshake, join, state, stripped
from mptcrypt.core.config import Config
from mptcrypt.core.events import ACCEPT, DROP, Event, Result, Verdict
from mptcrypt.core.session import fmt_addr
from mptcrypt.core.state import Ev, State, SynVerdict
from mptcrypt.core.synopts import clean_syn
from mptcrypt.core.table import SWEEP_INTERVAL, Table
from mptcrypt.crypto.segment import FAST_PATH_REASON, FlowTable
from mptcrypt.errors import ProtocolError
from mptcrypt.wire import messages as m
from mptcrypt.wire.mptcp import Has
from mptcrypt.wire.rewrite import rst_to_local, rst_to_peer
from mptcrypt.wire.segment import Segment, parse_segment
from mptcrypt.wire.tcp import ACK, FIN, RST, SYN

_ENCRYPTING = State.ENCRYPTING
_protect, _unprotect = datapath.protect, datapath.unprotect


class Engine:
    def __init__(self, config: Config | None = None, *, random=os.urandom, socket_alive=None, key_log=None,
                 fast_path: bool | None = None):
        """`socket_alive(keys)`: the flow keys (local addr bytes, local port, remote addr bytes, remote port) whose
        socket the local kernel still has; asked before an idle protected flow is reclaimed (the daemon answers
        with sock_diag). None: idle flows are reclaimed on the idle timeout alone.
        `key_log(SubflowKeys)`, when given, is called as each subflow gets its keys (`--keylog`).
        `fast_path`: protected flows' ordinary segments handled by the compiled flow table (datapath.FastPath);
        None: when crypto/segment.py selected it (MPTCRYPT_FAST_PATH). Same bytes, verdicts and counters either way."""
        self.config = config or Config()
        self._t = Table(self.config, random, socket_alive)
        self._t.key_log = key_log
        self._flows = self._t.flows
        self.counters = self._t.counters
        if fast_path is None:
            fast_path = FlowTable is not None
        elif fast_path and FlowTable is None:
            raise ValueError(f"no compiled fast path: {FAST_PATH_REASON}")
        self.fast = datapath.FastPath(self._t) if fast_path else None

    def reconfigure(self, config: Config) -> None:
        """Policy, rules, ciphers and limits for what comes next (the daemon's SIGHUP); live flows keep their keys."""
        self.config = self._t.config = config
        self._t.pub_list = bytes(config.pub_ciphers)
        self._t.sym_list = bytes(config.sym_ciphers)

    # ------------------------------------------------------------------ public surface
    def handle(self, packet: bytes, outbound: bool, now: float) -> Result:
        fast = self.fast
        if fast is not None:
            out = fast.packet(packet, outbound, now)
            if out is not None:
                return Result(Verdict.ACCEPT, out)
        c = self.counters
        c["packets"] += 1
        try:
            seg = parse_segment(packet)
            if seg is None:
                return ACCEPT
            key = (seg.src, seg.sport, seg.dst, seg.dport) if outbound else (seg.dst, seg.dport, seg.src, seg.sport)
            sf = self._flows.get(key)
            if fast is None:
                return self._flow(sf, key, seg, outbound, now)
            fast.pull(sf)  # what the table counted for this flow, before Python reads it
            try:
                return self._flow(sf, key, seg, outbound, now)
            finally:
                fast.sync(self._flows.get(key))
        except ProtocolError as exc:
            c["malformed_dropped"] += 1
            self._t.event("malformed", None, str(exc))
            return DROP

    def _flow(self, sf, key, seg: Segment, outbound: bool, now: float) -> Result:
        if sf is not None and sf.state is _ENCRYPTING and not seg.flags & SYN:
            sf.last_seen = now
            if outbound:
                return _protect(self._t, sf, seg, now)
            res = _unprotect(self._t, sf, seg, now)
            return res if res is not None else handshake.recv_unauthenticated(self._t, sf, seg, now)
        return self._slow_path(sf, key, seg, outbound, now)

    def handle_timer(self, now: float) -> list[bytes]:
        t = self._t
        fast = self.fast
        timed = list(t.timed) if fast is not None else ()
        for sf in timed:
            fast.pull(sf)
        out = handshake.timers(t, now)
        if now >= t.next_sweep:
            if fast is not None:
                fast.pull_all()  # last_seen decides what is idle
            t.sweep(now)
            t.next_sweep = now + SWEEP_INTERVAL
        for sf in timed:
            fast.sync(sf)
        return out

    def next_timer(self) -> float | None:
        deadlines = [sf.hs.timer for sf in self._t.timed if sf.hs.timer is not None]
        deadlines.append(self._t.next_sweep)
        return min(deadlines)

    def events(self) -> list[Event]:
        t = self._t
        ev, t.events = t.events, []
        return ev

    def stats(self) -> dict[str, int]:
        if self.fast is not None:
            self.fast.pull_counters()
        s = dict(self.counters)
        s["flows"] = len(self._flows)
        s["sessions_cached"] = len(self._t.peer_cache)
        s["connections"] = len({id(sf.conn) for sf in self._flows.values() if sf.conn is not None})
        return s

    def sessions(self) -> list[dict]:
        if self.fast is not None:
            self.fast.pull_all()
        rows, seen = [], set()
        for sf in self._flows.values():
            conn = sf.conn
            if conn is None:
                rows.append({**_conn_row(sf, None), "subflows": [sf.row()]})
                continue
            if id(conn) in seen:
                continue
            seen.add(id(conn))
            first = conn.subflows[0] if conn.subflows else sf
            rows.append({**_conn_row(first, conn), "subflows": [s.row() for s in conn.subflows]})
        return rows

    def flow_state(self, local: tuple[str, int], remote: tuple[str, int]) -> State | None:
        sf = self._flows.get(_flow_key(local, remote))
        return sf.state if sf is not None else None

    def session_id(self, local: tuple[str, int], remote: tuple[str, int]) -> bytes | None:
        sf = self._flows.get(_flow_key(local, remote))
        if sf is None or sf.conn is None or sf.tx is None:
            return None
        return sf.conn.sid

    def shutdown(self) -> list[bytes]:
        """Packets to send before the daemon stops without a successor: each open protected connection is reset,
        for the local kernel and (protected, so the peer daemon lets it through) for the peer. After the rules
        are gone the kernels would otherwise continue it in clear (PROTOCOL.md invariant 6)."""
        t = self._t
        out = []
        if self.fast is not None:
            self.fast.pull_all()
        for sf in list(self._flows.values()):
            if sf.tx is None or sf.closed_at is not None:
                continue
            seq, ack = sf.out_ref & 0xFFFFFFFF, sf.in_ref & 0xFFFFFFFF
            out.append(rst_to_local(sf.key, ack, seq))
            res = datapath.protect(t, sf, parse_segment(rst_to_peer(sf.key, seq, ack)), 0.0)
            if res.packet is not None:
                out.append(res.packet)
            if self.fast is not None:
                self.fast.sync(sf)
        return out

    def replicate(self, sync) -> Table:
        """`mptcrypt daemon --workers N`: session-level changes also go to `sync` (daemon/workers.py Replica),
        which applies the sibling workers' changes to the returned table."""
        self._t.sync = sync
        return self._t

    def export_state(self) -> dict:
        """The live sessions and flows for a successor daemon (graceful restart; core/handover.py). Secret."""
        if self.fast is not None:
            self.fast.pull_all()
        return handover.export_state(self._t)

    def import_state(self, data: dict) -> int:
        """Take over a predecessor's `export_state()`; returns the number of subflows taken over."""
        return handover.import_state(self._t, data)

    # ------------------------------------------------------------------ dispatch
    def _protected(self, sf, seg: Segment, outbound: bool, now: float) -> Result:
        t = self._t
        if outbound:
            return datapath.protect(t, sf, seg, now)
        res = datapath.unprotect(t, sf, seg, now)
        return res if res is not None else handshake.recv_unauthenticated(t, sf, seg, now)

    def _slow_path(self, sf, key, seg: Segment, outbound: bool, now: float) -> Result:
        """Everything but a protected flow's segment; public-key operations are attributed to the subflows the
        packet keyed (the pk_ops counter measured around the handling, for joins_zero_pk / pk_handshakes)."""
        t = self._t
        pk_before = self.counters["pk_ops"]
        try:
            return self._dispatch(sf, key, seg, outbound, now)
        finally:
            delta = self.counters["pk_ops"] - pk_before
            if delta and not t.keyed_now:
                touched = self._flows.get(key)
                if touched is not None:
                    touched.pk_ops += delta
            if t.keyed_now:
                t.count_keyed(delta)

    def _dispatch(self, sf, key, seg: Segment, outbound: bool, now: float) -> Result:
        t = self._t
        flags = seg.flags
        if flags & SYN:
            if flags & ACK:
                if sf is None:
                    return handshake.unknown_flow(t, key, seg, outbound)
                if outbound:
                    return handshake.send_syn_ack(t, sf, seg, now)
                return handshake.recv_syn_ack(t, sf, seg, now)
            if not outbound and sf is not None:
                verdict = state.judge_inbound_syn(sf, seg.seq, _offer(seg))
                if verdict is SynVerdict.DROP:
                    t.counters["syn_on_live_flow_dropped"] += 1
                    t.event("syn-on-live-flow", key, "SYN replayed or forged on a protected flow dropped")
                    return DROP
                if verdict is SynVerdict.RETRANSMISSION:
                    state.advance(sf, _offer(seg))
                    return clean_syn(t, seg, restore_ts=join.restored_syn_ts(sf))
                sf = None  # a new connection: the phase replaces the old flow
            mpj = seg.mptcp_join()
            if mpj is not None and mpj.present & Has.TOKEN:
                if outbound:
                    return join.send_join_syn(t, sf, key, seg, mpj, now)
                return join.recv_join_syn(t, sf, key, seg, mpj, now)
            policy = self.config.policy_for(fmt_addr(key[2]), key[3] if outbound else key[1])
            if outbound:
                return handshake.send_syn(t, sf, key, seg, policy, now)
            return handshake.recv_syn(t, sf, key, seg, policy, now)
        if sf is None:
            return handshake.unknown_flow(t, key, seg, outbound)
        sf.last_seen = now
        st = sf.state
        if st is State.PLAIN or st is State.CLOSED and sf.tx is None:
            if flags & (FIN | RST):
                t.note_close(sf, flags, outbound, now)
            return ACCEPT
        if st is State.CLOSED:  # keys kept for late segments (retransmitted FIN, last ACK)
            return self._protected(sf, seg, outbound, now)
        if st in state.DEAD:
            return stripped.answer(self._t, sf, seg, now) if not outbound and stripped.stripped(sf) else DROP
        if outbound:
            return t.hold(sf, seg.packet) if st in state.KEYING else ACCEPT
        return handshake.recv_before_keys(t, sf, seg, now)


# ---------------------------------------------------------------------- module helpers

def _offer(seg: Segment):
    """What an inbound SYN's mptcrypt option announces, as the state machine's event (None: no offer)."""
    msg = seg.mptcrypt()
    if isinstance(msg, m.Hello):
        return Ev.RECV_SYN_HELLO
    if isinstance(msg, (m.NextK1Join, m.NextK1Resume)):
        return Ev.RECV_SYN_NEXTK1
    return None


def _flow_key(local: tuple[str, int], remote: tuple[str, int]) -> tuple:
    return (ipaddress.ip_address(local[0]).packed, local[1], ipaddress.ip_address(remote[0]).packed, remote[1])


def _conn_row(sf, conn) -> dict:
    la, lp, ra, rp = sf.key
    row = {
        "local": f"{fmt_addr(la)}:{lp}", "remote": f"{fmt_addr(ra)}:{rp}",
        "state": sf.state.value if sf.state else "new",
        "protected": conn is not None and sf.tx is not None,
        "pub_cipher": conn.session.pub_cipher.name if conn else None,
        "sym_cipher": conn.session.sym_cipher.name if conn else None,
        "sid": conn.sid.hex() if conn else None,
        "resumed": conn.resumed if conn else False,
        "mptcp": conn.mptcp if conn else sf.mptcp,
        "tokens": [f"{token:08x}" for token in conn.tokens] if conn else [],  # MPTCP tokens leading joins here
        "pk_ops": conn.pk_ops if conn else 0,
        "index": conn.index if conn else None,
    }
    if sf.plain_reason:
        row["reason"] = sf.plain_reason
    return row
