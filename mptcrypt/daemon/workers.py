"""`mptcrypt daemon --workers N`: N processes, each bound to one queue of `-j NFQUEUE --queue-balance Q:Q+N-1`.

The kernel picks the queue by hashing the address pair (both directions alike), so a subflow's packets always
reach the same worker, but the subflows of one MPTCP connection, and a resumption from a new address, can reach
different ones. Subflow state (keys, sequence references, held segments) lives only in the worker its packets hash
to. Session-level state is replicated to every sibling, in memory, over socketpairs (never on disk):

    conn     a keyed connection: its session (ss[0] and the index bookkeeping, peer, created), its index, MPTCP
             keys and tokens, and whether the sender has subflows of it; the receiver maps the tokens (so it can
             key a join) and caches the session (so it can resume it)
    claim    key index i of a session is used by flow F (the receiver refuses a second use of i)
    pending  an MPTCP token whose first subflow is still in its handshake here (the receiver holds outbound
             joins of it until the `conn` message arrives, as one worker holds them until INIT2)
    gone     the sender has no subflow of the connection any more (tokens are forgotten when no worker has one)

docs/protocol.md §Workers is the design and the consistency argument: a worker decides a join, a resumption or an
index claim on everything its siblings published before the SYN could exist (it drains their messages first), and
peer-chosen indices are claimed under one lock shared by all workers; own indices come from disjoint lanes.

The parent process owns the control socket and the iptables rules; it forks the workers after binding the control
socket, installs the rules once every worker listens on its queue, answers `status`/`sessions`/`stats`/`metrics`
by asking each worker and merging, finds a flow's worker for `sid`, and on SIGTERM runs the fail-closed shutdown
in order: every worker resets its protected connections, then the rules go, then the workers drain and exit.
SIGHUP reloads every worker. Workers ignore SIGTERM/SIGINT/SIGHUP themselves (systemd signals the whole cgroup):
the parent orders them. A worker that dies stops the daemon (its queue has no listener: fail-closed).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import struct
import time
import weakref
from collections import OrderedDict
from typing import Callable

from mptcrypt.constants import CONTROL_SOCKET, PubCipher, SymCipher
from mptcrypt.core.session import Connection, Session
from mptcrypt.daemon.config import DaemonConfig, format_ports
from mptcrypt.daemon.control import ControlServer, Deferred
from mptcrypt.daemon.metrics import exposition
from mptcrypt.errors import ConfigError, MptcryptError

log = logging.getLogger("mptcrypt.workers")

MAX_WORKERS = 16
PENDING_TTL = 3.0  # seconds a sibling's join SYN waits for a first subflow's keys before it is let go as plain
LOCK_TIMEOUT = 1.0  # a claim that cannot get the lock in this time is refused (fail-closed: the join is dropped)
REPLICA_BUFFER = 4 << 20  # socket buffers between workers: replication never waits on a busy sibling
MAX_REPLICA_SESSIONS = 65536  # sessions known by key for incoming messages (the cache and live connections hold more)
REQUEST_TIMEOUT = 5.0  # the parent waits this long for a worker's answer
READY_TIMEOUT = 15.0
EXIT_TIMEOUT = 10.0
_FRAME = struct.Struct("!I")
REPLICA_COUNTERS = ("repl_sent", "repl_received", "repl_unknown_session", "joins_held_for_sibling",
                    "joins_released", "claims_locked", "claims_lock_timeout")


# --- replication messages --------------------------------------------------------------------------------------
def _key(flow) -> list | None:
    return None if flow is None else [flow[0].hex(), flow[1], flow[2].hex(), flow[3]]


def _unkey(raw) -> tuple | None:
    return None if raw is None else (bytes.fromhex(raw[0]), raw[1], bytes.fromhex(raw[2]), raw[3])


def session_key(session: Session) -> str:
    """How workers name a session to each other: the first 16 bytes of sid[0], hex (not a secret)."""
    return session.chain.sid(0)[:16].hex()


def encode(msg: dict) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


def decode(data: bytes) -> dict:
    msg = json.loads(data)
    if not isinstance(msg, dict) or msg.get("t") not in ("conn", "claim", "pending", "gone"):
        raise ValueError(f"not a replication message: {data[:60]!r}")
    return msg


def conn_message(worker: int, conn: Connection, with_used: bool = True) -> dict:
    """`with_used`: the session's used indices too (the first time it is published; later claims go one by one:
    sending them all again would make each message of a long-lived session longer than the last)."""
    s = conn.session
    session = {"sk": session_key(s), "ss0": s.chain.ss(0).hex(), "initiator": s.initiator, "pub": int(s.pub_cipher),
               "sym": int(s.sym_cipher), "peer": s.peer_addr.hex(), "created": s.created}
    if with_used:
        session["used"] = [[i, _key(f)] for i, f in s.used.items() if i]
    return {
        "t": "conn", "from": worker, "session": session,
        "index": conn.index, "resumed": conn.resumed, "mptcp": conn.mptcp,
        "keys": {k: v.hex() for k, v in conn.keys.items()}, "tokens": list(conn.tokens), "holds": bool(conn.subflows),
    }


class Replica:
    """One worker's side of the replication: the hooks the core's Table calls (`table.sync`), the messages to
    and from the siblings, and outbound join SYNs held for a sibling's handshake.

    `peers`: one socket per sibling (SOCK_SEQPACKET, blocking sends); `lock`: shared by all workers, taken around
    the claim of a peer-chosen key index. `clock` is the daemon's monotonic clock."""

    def __init__(self, worker: int, workers: int, peers: list[socket.socket], lock=None,
                 clock: Callable[[], float] = time.monotonic):
        self.worker, self.workers = worker, workers
        self.peers = peers
        self.lock = lock
        self.clock = clock
        self.table = None
        self.sessions: OrderedDict[str, Session] = OrderedDict()  # the newest, held here (bounded)
        # every session still alive in this worker (its connections, caches or the bound above hold it): a
        # sibling's claim of a session pushed out of `sessions` must still reach the Session its joins check
        self.known: weakref.WeakValueDictionary[str, Session] = weakref.WeakValueDictionary()
        self.conns: dict[tuple[str, int], Connection] = {}
        self.holders: dict[tuple[str, int], set[int]] = {}  # which workers have subflows of a connection
        self.pending_tokens: dict[int, float] = {}  # token -> until when its joins are held
        self.held: dict[int, list[bytes]] = {}  # token -> outbound join SYNs held for it
        self.due: list[bytes] = []  # held join SYNs to run through the engine again (by the worker loop)
        self.counters = dict.fromkeys(REPLICA_COUNTERS, 0)
        self._applying = False

    def attach(self, engine) -> None:
        self.table = engine.replicate(self)
        self.table.lane = (self.worker, self.workers)

    # --- hooks called by the core (mptcrypt/core/table.py, join.py, handshake.py) ---------------------------
    def connection_changed(self, conn: Connection) -> None:
        """A connection was keyed here, or got a token: siblings map its tokens and cache its session."""
        if self._applying:
            return
        sk = session_key(conn.session)
        first = sk not in self.sessions
        if first:
            self._remember_session(sk, conn.session)
        elif not conn.tokens:
            return  # a TCP connection of a session the siblings know: its index claim went out already
        if conn.tokens:
            key = self._remember(conn)
            if conn.subflows:
                self.holders.setdefault(key, set()).add(self.worker)
        self._send(conn_message(self.worker, conn, with_used=first))

    def claim(self, session: Session, index: int, flow) -> bool:
        """Session.claim across workers. Own indices come from this worker's lane (Table.lane): no sibling can
        allocate them, so the claim is local. A peer-chosen index is claimed under the shared lock after reading
        every claim the siblings published: two workers never both accept it."""
        shared = not session.own_parity(index) and self.lock is not None
        if shared and not self.lock.acquire(timeout=LOCK_TIMEOUT):
            self.counters["claims_lock_timeout"] += 1
            return False
        try:
            if shared:
                self.counters["claims_locked"] += 1
                self.drain()
            ok = session.claim(index, flow)
            if ok:
                self._send({"t": "claim", "from": self.worker, "sk": session_key(session), "index": index,
                            "flow": _key(flow)})
            return ok
        finally:
            if shared:
                self.lock.release()

    def pending(self, token: int) -> None:
        self._send({"t": "pending", "from": self.worker, "token": token})

    def hold_join(self, packet: bytes, token: int, now: float) -> bool:
        """An outbound join SYN whose token this worker does not know. True: held (or queued to be handled again
        at once) because a sibling keys or has keyed the connection; False: it is no protected connection."""
        self.drain()
        if token in self.table.tokens:  # it arrived with the drain: handle the SYN again, now as a join we key
            self.due.append(bytes(packet))
            return True
        until = self.pending_tokens.get(token)
        if until is None or now >= until:
            return False
        self.held.setdefault(token, []).append(bytes(packet))
        self.counters["joins_held_for_sibling"] += 1
        return True

    def lookup_token(self, token: int) -> Connection | None:
        self.drain()
        return self.table.tokens.get(token)

    def lookup_resume(self, resume_id: bytes):
        self.drain()
        return self.table.resume.get(resume_id)

    def last_subflow_gone(self, conn: Connection) -> bool:
        """This worker dropped its last subflow of `conn`. True when no worker has one: forget its tokens."""
        if not conn.tokens:
            return True
        key = self._remember(conn)
        holders = self.holders.get(key, set())
        holders.discard(self.worker)
        self._send({"t": "gone", "from": self.worker, "sk": key[0], "index": key[1]})
        if holders:
            return False
        self._forget(key)
        return True

    # --- messages ---------------------------------------------------------------------------------------------
    def _send(self, msg: dict) -> None:
        data = encode(msg)
        for sock in self.peers:
            sock.sendall(data)
            self.counters["repl_sent"] += 1

    def drain(self) -> None:
        """Apply every message the siblings have sent so far (non-blocking)."""
        for sock in self.peers:
            while True:
                try:
                    data = sock.recv(1 << 20, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                if not data:
                    break  # a sibling is gone; the parent stops the daemon
                self.apply(decode(data))

    def apply(self, msg: dict) -> None:
        self.counters["repl_received"] += 1
        self._applying = True
        try:
            getattr(self, "_apply_" + msg["t"])(msg)
        finally:
            self._applying = False

    def _apply_conn(self, msg: dict) -> None:
        t = self.table
        rec = msg["session"]
        session = self.known.get(rec["sk"])
        fresh = session is None
        if fresh:
            session = Session(bytes.fromhex(rec["ss0"]), rec["initiator"], PubCipher(rec["pub"]), SymCipher(rec["sym"]),
                              bytes.fromhex(rec["peer"]))
            session.created = rec["created"]
            self._remember_session(rec["sk"], session)
        for index, flow in rec.get("used", ()):
            session.claim(index, _unkey(flow))
        if fresh and session.peer_addr and t.config.resume:
            t.cache_session(session, session.peer_addr)
            t.register_resume(session)
        if not msg["tokens"]:
            return  # a TCP connection: its session is all a sibling needs (to resume it)
        key = (rec["sk"], msg["index"])
        conn = self.conns.get(key)
        if conn is None:
            conn = Connection(session, msg["index"], msg["resumed"])
            self.conns[key] = conn
        conn.mptcp = conn.mptcp or msg["mptcp"]
        conn.keys.update({k: bytes.fromhex(v) for k, v in msg["keys"].items()})
        if msg["holds"]:
            self.holders.setdefault(key, set()).add(msg["from"])
        for token in msg["tokens"]:
            owner = t.tokens.get(token)
            if owner is None:
                t.tokens[token] = conn
            elif owner is not conn:
                t.count_rare("token_collisions_refused", "token-refused", None,
                             f"token {token:08x} of a sibling's connection already belongs to another one")
                continue
            if token not in conn.tokens:
                conn.tokens.append(token)
            self.pending_tokens.pop(token, None)
            released = self.held.pop(token, [])
            self.due.extend(released)
            self.counters["joins_released"] += len(released)

    def _apply_claim(self, msg: dict) -> None:
        session = self.known.get(msg["sk"])
        if session is None:
            self.counters["repl_unknown_session"] += 1  # a session this worker never saw: nothing to protect
            return
        session.claim(msg["index"], _unkey(msg["flow"]))
        if session.resume_ids:  # cached here: move its resumption window
            self.table.register_resume(session)

    def _apply_pending(self, msg: dict) -> None:
        self.pending_tokens[msg["token"]] = self.clock() + PENDING_TTL

    def _apply_gone(self, msg: dict) -> None:
        key = (msg["sk"], msg["index"])
        holders = self.holders.get(key)
        if holders is None:
            return
        holders.discard(msg["from"])
        conn = self.conns.get(key)
        if not holders and (conn is None or not conn.subflows):
            self._forget(key)

    # --- bookkeeping ------------------------------------------------------------------------------------------
    def _remember(self, conn: Connection) -> tuple[str, int]:
        sk = session_key(conn.session)
        if sk not in self.sessions:
            self._remember_session(sk, conn.session)
        key = (sk, conn.index)
        self.conns.setdefault(key, conn)
        return key

    def _remember_session(self, sk: str, session: Session) -> None:
        self.sessions[sk] = session
        self.known[sk] = session
        while len(self.sessions) > MAX_REPLICA_SESSIONS:
            self.sessions.popitem(last=False)

    def _forget(self, key: tuple[str, int]) -> None:
        self.holders.pop(key, None)
        conn = self.conns.pop(key, None)
        if conn is None:
            return
        for token in conn.tokens:
            if self.table.tokens.get(token) is conn:
                del self.table.tokens[token]

    def take_due(self, now: float) -> list[bytes]:
        """Held join SYNs to handle again now: released by a `conn` message, or whose wait ran out."""
        for token in [tk for tk, until in self.pending_tokens.items() if now >= until]:
            del self.pending_tokens[token]
            self.due.extend(self.held.pop(token, []))
        due, self.due = self.due, []
        return due


# --- framing between the parent and a worker (SOCK_STREAM: answers such as `sessions` can be large) ----------
def send_frame(sock: socket.socket, msg: dict) -> None:
    data = encode(msg)
    sock.sendall(_FRAME.pack(len(data)) + data)


def recv_frame(sock: socket.socket) -> dict | None:
    """One message, None at end of file."""
    head = _recv_exact(sock, _FRAME.size)
    if head is None:
        return None
    body = _recv_exact(sock, _FRAME.unpack(head)[0])
    if body is None:
        return None
    return json.loads(body)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


# --- merging the workers' answers -------------------------------------------------------------------------------
_MAX_COUNTERS = ("flows_tracked_max", "sessions_cached")  # per worker maxima / replicated: not summed


def merge_stats(parts: list[dict]) -> dict:
    """Counters of several workers as one: sums, except maxima and replicated gauges (their largest value)."""
    total: dict = {}
    for part in parts:
        for name, value in part.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if name in _MAX_COUNTERS:
                total[name] = max(total.get(name, 0), value)
            else:
                total[name] = total.get(name, 0) + value
    return total


def merge_sessions(parts: list[list[dict]]) -> list[dict]:
    """One row per connection: the rows of an MPTCP connection whose subflows live in several workers (same sid)
    become one, with every subflow; each subflow says which worker has it."""
    rows: list[dict] = []
    by_sid: dict[str, dict] = {}
    for worker, part in enumerate(parts):
        for row in part:
            subflows = [{**s, "worker": worker} for s in row.get("subflows", [])]
            sid = row.get("sid")
            first = by_sid.get(sid) if sid else None
            if first is None:
                row = {**row, "subflows": subflows}
                rows.append(row)
                if sid:
                    by_sid[sid] = row
            else:
                first["subflows"].extend(subflows)
                if row.get("kind") != "join" and any(s.get("kind") != "join" for s in subflows):
                    first.update({k: v for k, v in row.items() if k != "subflows"})
    return rows


# --- the worker process -------------------------------------------------------------------------------------------
class Worker:
    """One worker: an engine, its replica, a raw socket and queue `queue_num + index`; requests from the parent."""

    def __init__(self, index: int, count: int, config: DaemonConfig, parent: socket.socket,
                 peers: list[socket.socket], lock, options: dict):
        self.index, self.count = index, count
        self.config = config
        self.parent = parent
        self.peers = peers
        self.lock = lock
        self.options = options
        self.stop = False

    def run(self) -> int:
        from mptcrypt.daemon.icmp_edge import TooBigClamp
        from mptcrypt.daemon.iptables import syn_lane_queue
        from mptcrypt.daemon.keylog import KeyLog
        from mptcrypt.daemon.lanes import make_lanes
        from mptcrypt.daemon.main import Daemon, make_engine
        from mptcrypt.daemon.rawsock import RawSocket
        from mptcrypt.daemon.monitor import event_record
        from mptcrypt.wire.messages import PROTOCOL_VERSION

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # the parent orders stop and reload
        opts = self.options
        lans = tuple(opts.get("gateway_lans", ()))
        keylog = KeyLog(opts["keylog"], PROTOCOL_VERSION) if opts.get("keylog") else None
        engine = make_engine(self.config, key_log=keylog, gateway=bool(lans))
        replica = Replica(self.index, self.count, self.peers, self.lock)
        replica.attach(engine)
        raw = RawSocket()
        clamp = TooBigClamp(engine, resend=not lans)
        queue_num = self.config.queue_num + self.index
        syn_queue = syn_lane_queue(self.config.queue_num, self.count) + self.index  # the same hash picks both
        backend_name = opts.get("queue_backend", "netfilterqueue")
        try:
            qworker, backend = make_lanes(backend_name, clamp, queue_num, syn_queue, raw.send)
            qworker.bind()
        except MptcryptError as exc:
            send_frame(self.parent, {"ready": False, "error": str(exc)})
            return 1
        daemon = Daemon(self.config, engine=engine, loader=opts.get("loader"), gateway_lans=lans)
        daemon.worker, daemon.clamp = qworker, clamp
        self.replica, self.qworker, self.daemon = replica, qworker, daemon
        qworker.on_events = lambda events: send_frame(self.parent, {"events": [event_record(e) for e in events]})
        send_frame(self.parent, {"ready": True, "pid": os.getpid(), "queue": queue_num, "backend": backend})
        selector = selectors.DefaultSelector()
        qworker.attach(selector, lambda: qworker.read())
        selector.register(self.parent, selectors.EVENT_READ, self._on_parent)
        for sock in self.peers:
            selector.register(sock, selectors.EVENT_READ, replica.drain)
        orphaned = False
        try:
            while not self.stop:
                for key, _mask in selector.select(qworker.timeout(1.0) if not replica.due else 0.0):
                    if key.data() is False:
                        orphaned = True
                qworker.tick()
                due = replica.take_due(time.monotonic())
                if due:
                    self._handle_again(engine, qworker, due)
                if orphaned:
                    log.error("worker %d: the parent daemon is gone; resetting protected connections", self.index)
                    qworker.inject(engine.shutdown())
                    break
        finally:
            qworker.unbind()
            raw.close()
            if keylog is not None:
                keylog.close()
        return 0

    def _handle_again(self, engine, qworker, packets: list[bytes]) -> None:
        """Join SYNs held for a sibling's handshake: through the engine again, out by the raw socket."""
        from mptcrypt.core.events import Verdict

        now = time.monotonic()
        for packet in packets:
            try:
                res = engine.handle(packet, True, now)
            except Exception as exc:  # as on the queue's path: counted, logged, the packet dropped
                qworker.counters["nfq_engine_errors"] += 1
                log.error("engine error on a held join SYN (dropped): %s: %s", type(exc).__name__, exc)
                continue
            if res.verdict is Verdict.ACCEPT:
                qworker.inject([res.packet or packet])
            if res.inject:
                qworker.inject(res.inject)

    def _on_parent(self):
        try:
            request = recv_frame(self.parent)
        except OSError:
            request = None
        if request is None:
            return False
        send_frame(self.parent, {"reply": self.answer(request)})
        return True

    def answer(self, request: dict) -> dict:
        cmd = request.get("cmd")
        if cmd == "reset":  # first step of the shutdown: before the parent removes the rules
            resets = self.daemon.engine.shutdown()
            self.qworker.inject(resets)
            return {"ok": True, "resets": len(resets) // 2}
        if cmd == "exit":  # the rules are gone: verdicts for what is still queued, then stop
            self.qworker.read(0)
            self.qworker.tick()
            self.stop = True
            return {"ok": True}
        if cmd == "reload":
            return {"ok": self.daemon.reload()}
        try:
            response = self.daemon.handle_request(request)
        except Exception as exc:  # e.g. a bad sid request: the parent reports it
            return {"ok": False, "error": str(exc)}
        if isinstance(response, Deferred):
            response = response.expire()
        if cmd == "stats":
            response["edge"] = {**response.get("edge", {}), **self.replica.counters}
        return response


# --- the parent ---------------------------------------------------------------------------------------------------
class Coordinator:
    """The parent process of `--workers N`: control socket, rules, the workers' lifecycle."""

    def __init__(self, config: DaemonConfig, count: int, control_name: str = CONTROL_SOCKET,
                 loader: Callable[[], DaemonConfig] | None = None, queue_backend: str = "netfilterqueue",
                 gateway_lans: tuple[str, ...] = (), keylog: str | None = None,
                 metrics: tuple[str, int] | None = None):
        if not 2 <= count <= MAX_WORKERS:
            raise ConfigError(f"--workers must be between 1 and {MAX_WORKERS}, not {count}")
        self.config = config
        self.count = count
        self.control_name = control_name
        self.loader = loader
        self.gateway_lans = tuple(gateway_lans)
        self.options = {"loader": loader, "queue_backend": queue_backend, "gateway_lans": self.gateway_lans,
                        "keylog": keylog}
        self.pids: list[int] = []
        self.pipes: list[socket.socket] = []
        self.info: list[dict] = []
        self.stop_reason: str | None = None
        self.reload_pending = False
        self.started = time.monotonic()
        self.control: ControlServer | None = None
        self.metrics_address = metrics

    # --- requests -----------------------------------------------------------------------------------------------
    def ask(self, worker: int, request: dict) -> dict:
        pipe = self.pipes[worker]
        send_frame(pipe, request)
        while True:
            msg = recv_frame(pipe)
            if msg is None:
                raise MptcryptError(f"worker {worker} is gone")
            if "events" in msg:
                self._publish(msg["events"])
                continue
            return msg["reply"]

    def ask_all(self, request: dict) -> list[dict]:
        return [self.ask(k, request) for k in range(len(self.pipes))]

    def _publish(self, events: list[dict]) -> None:
        if self.control is not None:
            self.control.publish(events)

    def handle_request(self, request: dict):
        cmd = request["cmd"]
        if cmd == "status":
            answer = self.ask(0, request)
            q = self.config.queue_num
            answer.update(pid=os.getpid(), uptime=round(time.monotonic() - self.started, 3),
                          queue=f"{q}:{q + self.count - 1}", workers=self.info)
            return answer
        if cmd == "sessions":
            return {"ok": True, "sessions": merge_sessions([a["sessions"] for a in self.ask_all(request)])}
        if cmd == "stats":
            parts = self.ask_all(request)
            return {"ok": True, "stats": merge_stats([p["stats"] for p in parts]),
                    "edge": merge_stats([p["edge"] for p in parts]),
                    "workers": [{**self.info[k], "stats": p["stats"], "edge": p["edge"]} for k, p in enumerate(parts)]}
        if cmd == "metrics":
            stats = self.handle_request({"cmd": "stats"})
            sessions = self.handle_request({"cmd": "sessions"})["sessions"]
            return {"ok": True, "text": exposition(stats["stats"], stats["edge"], sessions, None)}
        if cmd == "monitor":
            return {"ok": True, "subscribe": True}
        if cmd == "sid":
            return self._sid(request)
        if cmd == "handover":
            return {"ok": False, "error": f"this daemon runs {self.count} workers: a graceful restart (--takeover) "
                    "needs --workers 1 on both daemons"}
        return {"ok": False, "error": f"unknown command {cmd!r} (status, sessions, stats, metrics, monitor, sid)"}

    def _sid(self, request: dict):
        """Ask every worker without waiting; the one whose flow is decided (or known at all) answers. While the
        flow's handshake runs, poll again until `wait` runs out."""
        wait = request.get("wait", 0)
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
            raise ConfigError('"wait" must be a number of seconds >= 0')

        def decided(final: bool = False):
            answers = self.ask_all({**request, "wait": 0})
            for a in answers:
                if not a.get("ok", True):
                    return a
            known = [a for a in answers if a.get("state") is not None]
            best = next((a for a in known if not a.get("pending")), known[0] if known else answers[0])
            if best.get("pending") and not final:
                return None
            return best

        first = decided(final=wait == 0)
        if first is not None:
            return first
        from mptcrypt.daemon.main import MAX_SID_WAIT

        return Deferred(poll=decided, expire=lambda: decided(final=True),
                        deadline=time.monotonic() + min(float(wait), MAX_SID_WAIT))

    # --- lifecycle ------------------------------------------------------------------------------------------------
    def run(self) -> int:
        from mptcrypt.daemon.iptables import Rules
        from mptcrypt.daemon.main import READY_MARKER, _drain
        from mptcrypt.core.config import Policy

        from mptcrypt.daemon.notify import Notifier

        config = self.config
        notifier = Notifier.from_env()
        control = ControlServer(self.handle_request, self.control_name)
        control.bind()  # a second daemon in this namespace stops here
        self.control = control
        rules = metrics = None
        selector = selectors.DefaultSelector()
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        try:
            from mptcrypt.crypto import segment

            log.info("segment path: %s (%s)", segment.SEGMENT_PATH, segment.SEGMENT_PATH_REASON)
            self._fork_workers(control)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, self._on_signal)
            signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
            self._wait_ready()
            required = config.policy is Policy.REQUIRED or any(r.policy is Policy.REQUIRED for r in config.rules)
            rules = Rules(config.queue_num, config.ports, config.fail_open, self.gateway_lans, require_ipv6=required,
                          workers=self.count)
            rules.install()  # last: every worker listens on its queue
            control.attach(selector)
            if self.metrics_address is not None:
                from mptcrypt.daemon.metrics import MetricsServer

                metrics = MetricsServer(lambda: self.handle_request({"cmd": "metrics"})["text"], self.metrics_address)
                metrics.bind()
                metrics.attach(selector)
            selector.register(wake_r, selectors.EVENT_READ, lambda _mask: _drain(wake_r))
            for k, pipe in enumerate(self.pipes):
                selector.register(pipe, selectors.EVENT_READ, lambda _mask, k=k: self._on_worker(k))
            q = config.queue_num
            notifier.ready(f"protecting ports {format_ports(config.ports)} with {self.count} workers")
            log.info("%s (queues %d:%d, %d workers, ports %s, policy %s, %s)", READY_MARKER, q, q + self.count - 1,
                     self.count, format_ports(config.ports), config.policy.value,
                     "fail-open" if config.fail_open else "fail-closed")
            while self.stop_reason is None:
                timeout = 1.0
                parked = control.next_deadline()
                if parked is not None:
                    timeout = max(0.0, min(timeout, parked - time.monotonic()))
                for key, mask in selector.select(timeout):
                    key.data(mask)
                if self.reload_pending:
                    self._reload()
                now = time.monotonic()
                control.poll_parked(now)
                control.tick(now)
            log.info("stopping (%s)", self.stop_reason)
            notifier.stopping()
        finally:
            if metrics is not None:
                metrics.close()
            self._shutdown(rules)
            control.close()
            selector.close()
            signal.set_wakeup_fd(-1)
            wake_r.close()
            wake_w.close()
        log.info("mptcrypt daemon stopped")
        return 0

    def _fork_workers(self, control: ControlServer) -> None:
        n = self.count
        mesh: dict[tuple[int, int], tuple[socket.socket, socket.socket]] = {}
        for i in range(n):
            for j in range(i + 1, n):
                pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                for sock in pair:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, REPLICA_BUFFER)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, REPLICA_BUFFER)
                mesh[(i, j)] = pair
        lock = multiprocessing.get_context("fork").Lock()
        for k in range(n):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            pid = os.fork()
            if pid == 0:  # the worker
                code = 1
                try:
                    ours.close()
                    control.sock.close()  # the parent's listening socket (closing a copy does not unbind it)
                    for p in self.pipes:
                        p.close()
                    peers = []
                    for (i, j), (a, b) in mesh.items():
                        if k in (i, j):
                            peers.append(a if k == i else b)
                            (b if k == i else a).close()
                        else:
                            a.close()
                            b.close()
                    code = Worker(k, n, self.config, theirs, peers, lock, self.options).run()
                except BaseException:
                    log.exception("worker %d failed", k)
                finally:
                    os._exit(code)
            theirs.close()
            self.pids.append(pid)
            self.pipes.append(ours)
        for a, b in mesh.values():
            a.close()
            b.close()

    def _wait_ready(self) -> None:
        for k, pipe in enumerate(self.pipes):
            pipe.settimeout(READY_TIMEOUT)
            msg = recv_frame(pipe)
            pipe.settimeout(REQUEST_TIMEOUT)
            if msg is None or not msg.get("ready"):
                raise MptcryptError(f"worker {k} did not start: {(msg or {}).get('error', 'it exited')}")
            self.info.append({"worker": k, "pid": msg["pid"], "queue": msg["queue"], "backend": msg["backend"]})
            log.info("worker %d (pid %d) on queue %d; queue backend: %s", k, msg["pid"], msg["queue"], msg["backend"])

    def _on_worker(self, k: int) -> None:
        """Between requests a worker only sends events; end of file means it died: stop, fail-closed."""
        try:
            msg = recv_frame(self.pipes[k])
        except OSError:
            msg = None
        if msg is None:
            self.stop_reason = f"worker {k} exited"
            log.error("worker %d (pid %d) exited; stopping the daemon", k, self.pids[k])
            return
        if "events" in msg:
            self._publish(msg["events"])

    def _on_signal(self, signum: int, _frame) -> None:
        if signum == signal.SIGHUP:
            self.reload_pending = True
        else:
            self.stop_reason = signal.Signals(signum).name

    def _reload(self) -> None:
        self.reload_pending = False
        ok = 0
        for k in range(len(self.pipes)):
            try:
                ok += bool(self.ask(k, {"cmd": "reload"}).get("ok"))
            except (OSError, MptcryptError) as exc:
                log.error("reload of worker %d failed: %s", k, exc)
        log.info("reload: %d of %d workers took the new configuration", ok, self.count)

    def _shutdown(self, rules) -> None:
        """Fail-closed, in order: resets while the rules still hold, then the rules go, then the queues drain."""
        alive = [k for k in range(len(self.pipes)) if self._alive(k)]
        if rules is not None and rules.installed:
            resets = 0
            for k in alive:
                try:
                    resets += self.ask(k, {"cmd": "reset"}).get("resets", 0)
                except (OSError, MptcryptError) as exc:
                    log.warning("worker %d: while resetting protected connections: %s", k, exc)
            if resets:
                log.info("reset %d protected connection(s) that cannot continue without the daemon", resets)
        if rules is not None:
            try:
                rules.remove()
            except Exception as exc:
                log.error("could not remove the iptables rules (%s); remove the MPTC- chains by hand", exc)
        for k in alive:
            try:
                self.ask(k, {"cmd": "exit"})
            except (OSError, MptcryptError):
                pass
        deadline = time.monotonic() + EXIT_TIMEOUT
        for pid in self.pids:
            while True:
                try:
                    done, _status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if done:
                    break
                if time.monotonic() > deadline:
                    log.error("worker pid %d did not exit; killing it", pid)
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.01)
        for pipe in self.pipes:
            pipe.close()

    def _alive(self, k: int) -> bool:
        try:
            return os.waitpid(self.pids[k], os.WNOHANG)[0] == 0
        except ChildProcessError:
            return False
