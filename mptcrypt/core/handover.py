"""Graceful restart: the engine's live state as plain data for a successor daemon, and back (issue 12).

`export_state(table)` returns JSON-able data (bytes as hex) with every cached session (its ss chain, index
bookkeeping, resume ids), every connection and every subflow that is keyed or plain; `import_state(table, data)`
rebuilds them in a fresh table. The data holds secrets: the daemon passes it over its control socket (a Unix
socket of its own network namespace, root only), in memory, never to disk. Subflows still in their handshake are
not handed over (their kernels retransmit; a handshake that stalls fails as it would on loss). Times are the
daemons' monotonic clock, which both processes share.
"""

from __future__ import annotations

from mptcrypt.constants import PubCipher, SymCipher
from mptcrypt.core import state
from mptcrypt.core.config import Policy
from mptcrypt.core.session import Connection, Session, Subflow
from mptcrypt.core.state import State
from mptcrypt.core.table import Table
from mptcrypt.crypto.keyschedule import direction_secrets
from mptcrypt.crypto.segment import SegmentCipher

VERSION = 1
_SUBFLOW_FIELDS = ("initiator", "index", "isn_local", "isn_remote", "out_ref", "in_ref", "in_ack_max", "confirmed",
                   "mptcp", "join", "addr_id", "backup", "fin_out", "fin_in", "closed_at", "last_seen", "created",
                   "bytes_out", "bytes_in", "segments_out", "segments_in", "resumed", "plain_reason", "pk_ops",
                   "tx_rekey_bytes", "tx_rekey_time", "tx_gen_start")


def _key(key) -> list:
    la, lp, ra, rp = key
    return [la.hex(), lp, ra.hex(), rp]


def _unkey(raw) -> tuple:
    return (bytes.fromhex(raw[0]), raw[1], bytes.fromhex(raw[2]), raw[3])


def export_state(t: Table) -> dict:
    sessions: dict[int, dict] = {}
    conns: dict[int, dict] = {}

    def session_ref(s: Session) -> int:
        if id(s) not in sessions:
            sessions[id(s)] = {
                "chain": [ss.hex() for ss in s.chain._ss], "initiator": s.initiator, "pub": int(s.pub_cipher),
                "sym": int(s.sym_cipher), "next_own": s._next_own, "peer_top": s._peer_top,
                "used": [[i, _key(k) if k else None] for i, k in s.used.items()], "peer": s.peer_addr.hex(),
                "resume_ids": [[i, rid.hex()] for i, rid in s.resume_ids.items()], "created": s.created,
            }
        return id(s)

    def conn_ref(c: Connection) -> int:
        if id(c) not in conns:
            conns[id(c)] = {"session": session_ref(c.session), "index": c.index, "resumed": c.resumed,
                            "mptcp": c.mptcp, "keys": {k: v.hex() for k, v in c.keys.items()},
                            "tokens": list(c.tokens), "pk_ops": c.pk_ops}
        return id(c)

    flows = []
    for sf in t.flows.values():
        if sf.state is not State.PLAIN and sf.tx is None:
            continue  # still in its handshake
        flows.append({
            "key": _key(sf.key), "state": sf.state.name, "policy": sf.policy.value,
            "conn": conn_ref(sf.conn) if sf.conn is not None else None,
            "sym": int(sf.sym_cipher) if sf.sym_cipher is not None else None,
            "tx_secret": sf.tx_secret.hex(), "rx_secret": sf.rx_secret.hex(),
            **{f: getattr(sf, f) for f in _SUBFLOW_FIELDS},
        })
    return {
        "version": VERSION, "sessions": {str(k): v for k, v in sessions.items()},
        "connections": {str(k): v for k, v in conns.items()}, "flows": flows,
        "peer_cache": [[peer.hex(), session_ref(s)] for peer, s in t.peer_cache.items()],
        "tombstones": [_key(k) for k in t.tombstones], "counters": dict(t.counters),
    }


def import_state(t: Table, data: dict) -> int:
    """Rebuild the exported state in `t` (a fresh table). Returns the number of subflows taken over."""
    if data.get("version") != VERSION:
        raise ValueError(f"handover state version {data.get('version')!r}, this daemon reads {VERSION}")
    sessions: dict[str, Session] = {}
    for ref, d in data["sessions"].items():
        s = Session(bytes.fromhex(d["chain"][0]), d["initiator"], PubCipher(d["pub"]), SymCipher(d["sym"]),
                    bytes.fromhex(d["peer"]))
        s.chain._ss = [bytes.fromhex(x) for x in d["chain"]]
        s._next_own, s._peer_top, s.created = d["next_own"], d["peer_top"], d["created"]
        s.used = {i: _unkey(k) if k else None for i, k in d["used"]}
        s.resume_ids = {i: bytes.fromhex(rid) for i, rid in d["resume_ids"]}
        for i, rid in s.resume_ids.items():
            t.resume[rid] = (s, i)
        sessions[ref] = s
    conns: dict[str, Connection] = {}
    for ref, d in data["connections"].items():
        c = Connection(sessions[str(d["session"])], d["index"], d["resumed"])
        c.mptcp, c.pk_ops = d["mptcp"], d["pk_ops"]
        c.keys = {k: bytes.fromhex(v) for k, v in d["keys"].items()}
        for token in d["tokens"]:
            c.tokens.append(token)
            t.tokens[token] = c
        conns[ref] = c
    for d in data["flows"]:
        key = _unkey(d["key"])
        sf = Subflow(key, d["initiator"], Policy(d["policy"]), d["last_seen"])
        for f in _SUBFLOW_FIELDS:
            if f in d or f != "tx_gen_start":  # (a daemon before the REKEY rule of §4 did not export it)
                setattr(sf, f, d[f])
        state.restore(sf, State[d["state"]])
        if d["conn"] is not None:
            conn = conns[str(d["conn"])]
            sf.conn = conn
            conn.subflows.append(sf)
        if d["sym"] is not None:
            sym = SymCipher(d["sym"])
            sf.sym_cipher = sym
            sf.tx_secret, sf.rx_secret = bytes.fromhex(d["tx_secret"]), bytes.fromhex(d["rx_secret"])
            sf.tx = SegmentCipher(sym, direction_secrets(sf.tx_secret, sf.initiator))
            sf.rx = SegmentCipher(sym, direction_secrets(sf.rx_secret, not sf.initiator))
        t.flows[key] = sf
    for peer, ref in data["peer_cache"]:
        t.peer_cache[bytes.fromhex(peer)] = sessions[str(ref)]
    for k in data["tombstones"]:
        t.tombstones[_unkey(k)] = None
    for name, value in data.get("counters", {}).items():
        if name in t.counters:
            t.counters[name] = value
    return len(data["flows"])
